"""The widget in Debian's headless Chromium (driven by Playwright), against the real blueprint over HTTP."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask, render_template_string
from playwright.sync_api import Browser, Page, sync_playwright
from werkzeug.serving import make_server

from conftest import register

CHROMIUM = os.environ.get("FEEDBACK_CHROMIUM", "/usr/bin/chromium")
# As root in a container, with no network beyond this machine: no sandbox, no background requests.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                 "--disable-background-networking", "--disable-component-update"]

PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>chat</title>
<style>button { display: none !important; } * { color: red !important; }</style>
<script src="{{ url_for('feedback_bridge.widget') }}" defer></script></head><body>
{% for token in tokens %}<p class="answer">Answer {{ loop.index }}</p>
<feedback-widget token="{{ token }}"></feedback-widget>{% endfor %}
<script>
  window.seen = [];
  for (const name of ["submit", "delivered", "error"]) {
    document.addEventListener("feedback-widget:" + name, (e) => window.seen.push([name, e.detail.event?.type]));
  }
</script></body></html>"""


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium is not at {CHROMIUM}: install Debian's chromium package (see README)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def site(make_app) -> Iterator[tuple[Flask, str, list[str]]]:
    """The blueprint and a chat page with two answers, served on 127.0.0.1 by a real HTTP server."""
    app = make_app()
    tokens = [register(app, message_id=f"m-{n}") for n in range(2)]

    @app.get("/")
    def chat() -> str:
        return render_template_string(PAGE, tokens=tokens)

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield app, f"http://127.0.0.1:{server.server_port}/", tokens
    server.shutdown()
    thread.join(10)


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()


def state(app: Flask, token: str) -> dict:
    return app.test_client().get("/feedback/state", query_string={"token": token}).json


def delivered(page: Page, count: int) -> None:
    page.wait_for_function(f"window.seen.filter(([n]) => n === 'delivered').length >= {count}")


def test_clicking_thumbs_records_the_vote_and_clicking_again_retracts_it(site, page: Page):
    app, url, tokens = site
    page.goto(url)
    up = page.get_by_role("button", name="Thumbs up").first
    up.click()
    delivered(page, 1)
    assert up.get_attribute("aria-pressed") == "true"
    assert state(app, tokens[0])["vote"] == "up" and state(app, tokens[1])["vote"] is None
    assert page.get_by_role("status").first.text_content() == "Thanks for your feedback"
    up.click()
    delivered(page, 2)
    assert up.get_attribute("aria-pressed") == "false"
    assert state(app, tokens[0])["vote"] is None
    assert page.evaluate("window.seen") == [["submit", "thumbs_up"], ["delivered", "thumbs_up"],
                                            ["submit", "retract"], ["delivered", "retract"]]


def test_keyboard_alone_can_vote(site, page: Page):
    app, url, tokens = site
    page.goto(url)
    page.wait_for_function("customElements.get('feedback-widget') !== undefined")
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")  # thumbs up, then thumbs down of the first answer
    page.keyboard.press("Enter")
    delivered(page, 1)
    assert state(app, tokens[0])["vote"] == "down"


def test_a_reload_shows_the_vote_stored_on_the_server(site, page: Page):
    app, url, tokens = site
    page.goto(url)
    page.get_by_role("button", name="Thumbs down").nth(1).click()
    delivered(page, 1)
    assert state(app, tokens[1])["vote"] == "down"
    page.reload()
    down = page.get_by_role("button", name="Thumbs down").nth(1)
    page.wait_for_function(
        "document.querySelectorAll('feedback-widget')[1].shadowRoot"
        ".querySelector('[data-vote=down]').getAttribute('aria-pressed') === 'true'"
    )
    assert down.get_attribute("aria-pressed") == "true"
    assert page.get_by_role("button", name="Thumbs down").first.get_attribute("aria-pressed") == "false"


def test_host_page_css_cannot_hide_or_restyle_the_buttons(site, page: Page):
    _, url, _ = site
    page.goto(url)
    up = page.get_by_role("button", name="Thumbs up").first
    assert up.is_visible(), "the page's `button { display: none !important }` must not reach the shadow DOM"
    colour = up.evaluate("b => getComputedStyle(b).borderColor")
    assert colour != "rgb(255, 0, 0)"


def test_a_rejected_vote_is_undone_and_reported(site, page: Page):
    app, url, tokens = site
    page.goto(url)
    page.wait_for_function("customElements.get('feedback-widget') !== undefined")
    page.evaluate("document.querySelector('feedback-widget').setAttribute('token', 'forged.token.value')")
    up = page.get_by_role("button", name="Thumbs up").first
    up.click()
    page.wait_for_function("window.seen.some(([n, t]) => n === 'error' && t === 'thumbs_up')")
    assert up.get_attribute("aria-pressed") == "false"
    assert page.get_by_role("status").first.text_content() == "Sorry, your feedback could not be sent"
    assert state(app, tokens[0])["vote"] is None
