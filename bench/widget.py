"""Benchmark of the widget as served: its size (gzip -9), and in headless Chromium the script time to auto-attach
1,000 existing messages, the time and the whole script time until the first screenful of widgets is rendered,
the script time per streamed message, and the DOM nodes of a rendered idle widget.

Widgets attached in bulk render lazily, when they near the viewport: the attach itself creates 1,000 empty hosts
of the rendered size, and the rendering of the visible ones follows in an IntersectionObserver callback. So the
numbers are (1) the attach call alone, (2) from the attach call until a frame starts with every widget in the
viewport rendered, with the main thread's whole script time over that span from the DevTools protocol
(Performance.getMetrics: the observers' callbacks, the rendering and this script's own polling included), and
(3) the script time of scrolling one screen further down the transcript (the widgets rendered on the way).

    python bench/widget.py [--messages 1000] [--runs 5]

A benchmark, not a test: the numbers go in CHANGES.md with this command. Needs Debian's chromium (or
FEEDBACK_CHROMIUM) and the [test] extra (Playwright).
"""

from __future__ import annotations

import argparse
import gzip
import logging
import os
import statistics
import tempfile
import threading

from flask import Flask
from playwright.sync_api import sync_playwright
from werkzeug.serving import make_server

from feedback_bridge import FeedbackBridge

CHROMIUM = os.environ.get("FEEDBACK_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]

PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>bench</title>
<script src="/feedback/widget.js"></script></head><body><div id="log">{messages}</div></body></html>"""

ATTACH = """async () => {
  // Once the page load's own work (parsing, the script's start, garbage collection) is over: it is not the attach's.
  for (let i = 0; i < 2; i++) await new Promise((idle) => requestIdleCallback(idle));
  const t0 = performance.now();
  feedbackBridge.configure({attach: '.assistant-message', tokenAttribute: 'data-feedback-token'});
  const script = performance.now() - t0, widgets = document.querySelectorAll('feedback-widget');
  // Every widget in the viewport rendered at the start of a frame (widgets are in document order, top to bottom).
  const screenful = () => {
    for (const w of widgets) {
      const r = w.getBoundingClientRect();
      if (r.top >= innerHeight) return true;
      if (r.bottom > 0 && !w.shadowRoot?.firstChild) return false;
    }
    return true;
  };
  return new Promise((done) => requestAnimationFrame(function frame() {
    if (!screenful()) return requestAnimationFrame(frame);
    done({script, screenful: performance.now() - t0, widgets: widgets.length});
  }));
}"""

SCROLL = """async () => {
  for (let i = 0; i < 2; i++) await new Promise((idle) => requestIdleCallback(idle));  // the first screen's /state
  const rendered = () => [...document.querySelectorAll('feedback-widget')]
    .filter((w) => w.shadowRoot?.firstChild).length;
  const before = rendered();
  scrollBy(0, innerHeight);
  // The scroll is rendered in the next frame, the IntersectionObserver's callback runs after it.
  await new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(() => setTimeout(done))));
  return rendered() - before;
}"""

STREAM = """async (count) => {
  const log = document.getElementById('log'), times = [];
  for (let i = 0; i < count; i++) {
    const m = document.createElement('div');
    m.className = 'assistant-message';
    m.setAttribute('data-feedback-token', 'streamed-' + i);
    m.textContent = 'A streamed answer';
    const t0 = performance.now();
    log.append(m);
    await null;  // the MutationObserver callback (a microtask) runs before this continues
    times.push(performance.now() - t0);
    if (!m.querySelector('feedback-widget')?.shadowRoot?.firstChild) throw new Error('no widget in the same task');
  }
  return times;
}"""

NODES = """() => { const it = document.createNodeIterator(document.querySelector('feedback-widget').shadowRoot);
  let n = -1; while (it.nextNode()) n++; return n; }"""


def script_ms(cdp) -> float:
    """The main thread's script time so far (ms), from the DevTools protocol."""
    metrics = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
    return metrics["ScriptDuration"] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    options = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)

    with tempfile.TemporaryDirectory() as folder:
        app = Flask("bench", instance_path=folder)
        app.config.update(SECRET_KEY="bench", FEEDBACK_WORKER=False, FEEDBACK_DATABASE_URL=f"sqlite:///{folder}/b.db")
        FeedbackBridge(app)
        messages = "".join(f'<div class="assistant-message" data-feedback-token="token-{n}"><p>Answer {n}</p></div>'
                           for n in range(options.messages))
        app.add_url_rule("/", "page", lambda: PAGE.format(messages=messages))
        served = app.test_client().get("/feedback/widget.js").data
        print(f"widget.js as served: {len(served)} B minified, {len(gzip.compress(served, 9))} B gzip -9")

        server = make_server("127.0.0.1", 0, app, threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_port}/"
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
            attach, screenful, whole, scroll, rendered, streamed = [], [], [], [], [], []
            for _ in range(options.runs):
                page = browser.new_page()
                page.goto(url)
                cdp = page.context.new_cdp_session(page)
                cdp.send("Performance.enable")
                before = script_ms(cdp)
                result = page.evaluate(ATTACH)
                whole.append(script_ms(cdp) - before)
                assert result["widgets"] == options.messages, result
                attach.append(result["script"])
                screenful.append(result["screenful"])
                before = script_ms(cdp)
                rendered.append(page.evaluate(SCROLL))
                scroll.append(script_ms(cdp) - before)
                streamed.extend(page.evaluate(STREAM, 50))
                nodes = page.evaluate(NODES)
                page.close()
            browser.close()
        server.shutdown()

    def stats(values: list[float]) -> str:
        return f"median {statistics.median(values):.1f} ms (min {min(values):.1f}, max {max(values):.1f})"

    print(f"auto-attach {options.messages} existing messages, script time of the attach call: {stats(attach)}")
    print(f"  ... until a frame starts with the first screenful rendered: {stats(screenful)}")
    print(f"  ... the whole script time over that span (DevTools protocol): {stats(whole)}")
    print(f"scrolling one screen down, script time (DevTools protocol): {stats(scroll)}, "
          f"{statistics.median(rendered):.0f} widgets rendered on the way")
    print(f"one streamed message, append + attach script time: {stats(streamed)}")
    print(f"DOM nodes in a rendered idle widget's shadow root: {nodes}")


if __name__ == "__main__":
    main()
