"""Fixtures and helpers for the widget's browser tests: Debian's Chromium driven by Playwright, and the real
blueprint served by a real werkzeug server on 127.0.0.1, with a record of what reached the event API and a way
to make it fail first (429, 500...) the way a proxy or an overloaded server would."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, Response, request
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright
from werkzeug.serving import make_server

from conftest import register

CHROMIUM = os.environ.get("FEEDBACK_CHROMIUM", "/usr/bin/chromium")
# As root in a container, with no network beyond this machine: no sandbox, no background requests.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                 "--disable-background-networking", "--disable-component-update"]
ROOT = Path(__file__).resolve().parent.parent
I18N = ROOT / "widget" / "i18n"

# Collects the widget's DOM events, in order, as [name, event type, result status or code].
RECORDER = """<script>
  window.seen = [];
  for (const name of ["submit", "delivered", "error"]) {
    document.addEventListener("feedback-widget:" + name, (e) => window.seen.push(
      [name, e.detail.event.type, e.detail.result ? (e.detail.result.code || e.detail.result.status) : null]));
  }
</script>"""


@dataclass
class Site:
    """The test app on a real HTTP server: pages to serve, what reached the event API, failures to inject."""

    app: Flask
    url: str = ""
    pages: dict[str, str] = field(default_factory=dict)
    # Each POST /events that reached the real handler: (monotonic time, [event dicts]).
    received: list[tuple[float, list[dict[str, Any]]]] = field(default_factory=list)
    # Each POST /events at all, failed or not: monotonic times.
    attempts: list[float] = field(default_factory=list)
    # Answers given instead of the real handler's, first come first served: (status, headers).
    failures: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    fail_always: tuple[int, dict[str, str]] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def token(self, message_id: str, **kwargs: Any) -> str:
        return register(self.app, message_id=message_id, **kwargs)

    def page(self, body: str, *, lang: str = "en", head: str = "", script: str = "",
             src: str = "/feedback/widget.js") -> str:
        """Serve an HTML page (the widget script tag with `script` as its extra attributes); return its URL."""
        name = f"p{len(self.pages)}"
        self.pages[name] = (
            f'<!doctype html><html lang="{lang}"><head><meta charset="utf-8"><title>chat</title>{head}'
            f'<script src="{src}" defer {script}></script>{RECORDER}</head><body>{body}</body></html>'
        )
        return f"{self.url}{name}"

    def state(self, token: str) -> dict[str, Any]:
        return self.app.test_client().get("/feedback/state", query_string={"token": token}).json

    def events(self) -> list[dict[str, Any]]:
        with self.lock:
            return [event for _, batch in self.received for event in batch]

    def ids(self) -> list[str]:
        return [event["id"] for event in self.events()]


_shared: dict[str, Any] = {}  # one Playwright and one Chromium for every test module importing this fixture


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium is not at {CHROMIUM}: install Debian's chromium package (see README)")
    if not _shared:
        playwright = sync_playwright().start()
        _shared.update(playwright=playwright, users=0, browser=playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True))
    _shared["users"] += 1
    yield _shared["browser"]
    _shared["users"] -= 1
    if not _shared["users"]:
        _shared["browser"].close()
        _shared["playwright"].stop()
        _shared.clear()


@contextmanager
def serving(app: Flask, prefix: str = "/feedback") -> Iterator[Site]:
    """Serve `app` (the bridge under `prefix`) as a Site on a real werkzeug server."""
    site = Site(app)

    @app.get("/<name>")
    def serve(name: str) -> Response | tuple[str, int]:
        page = site.pages.get(name)
        return Response(page, mimetype="text/html") if page else ("no such page", 404)

    @app.before_request
    def record_or_fail() -> Response | None:
        if request.path != f"{prefix}/events" or request.method != "POST":
            return None
        with site.lock:
            site.attempts.append(time.monotonic())
            failure = site.failures.pop(0) if site.failures else site.fail_always
            if failure is None:
                body = json.loads(request.get_data(cache=True))
                site.received.append((time.monotonic(), body["events"]))
        if failure is not None:
            status, headers = failure
            return Response('{"errors": {"_schema": ["injected failure"]}}', status, headers,
                            mimetype="application/json")
        return None

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    site.url = f"http://127.0.0.1:{server.server_port}/"
    try:
        yield site
    finally:
        server.shutdown()
        thread.join(10)


@pytest.fixture
def site(make_app) -> Iterator[Site]:
    with serving(make_app()) as site:
        yield site


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    context = browser.new_context()
    context.set_default_timeout(15_000)
    yield context
    context.close()


@pytest.fixture
def page(context: BrowserContext) -> Page:
    return context.new_page()


def seen(page: Page, name: str, count: int = 1) -> None:
    """Wait until the page has seen `count` widget events named `name` (submit, delivered or error)."""
    page.wait_for_function(f"window.seen.filter(([n]) => n === {name!r}).length >= {count}")


def shadow(page: Page, selector: str, index: int = 0) -> str:
    """A JS expression for the element matching `selector` in the shadow root of the index-th widget."""
    return f"document.querySelectorAll('feedback-widget')[{index}].shadowRoot.querySelector({selector!r})"


def queued(page: Page) -> list[dict[str, Any]]:
    """The events in the page's persisted queue."""
    return [item["e"] for item in page.evaluate("JSON.parse(localStorage['feedback-bridge:queue:v1'] || '[]')")]
