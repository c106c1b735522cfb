# ruff: noqa: F811 -- pytest fixtures imported from widget_support are redefined as test parameters
"""The demo chat as a newcomer uses it, in Debian's headless Chromium against the demo app on a real server, with
its four provider emulators: ask, watch the answer stream in, vote, give a reason and a comment, copy, reload.
The page runs under the demo's strict CSP throughout, and any violation of it fails the test."""

from __future__ import annotations

import os
import shutil
import struct
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

import pytest
from flask import Flask
from playwright.sync_api import Browser, BrowserContext, Page, expect

from feedback_bridge.demo import LOCAL_PROVIDERS, create_app, shutdown
from feedback_bridge.demo_answers import pick_answer
from feedback_bridge.testing.local import LocalProviders
from widget_support import ROOT, Site, browser, context, page, serving  # noqa: F401

SCREENSHOT = ROOT / "docs" / "screenshots" / "chat.png"
AXE = Path(__import__("axe_playwright_python").__file__).with_name("axe.min.js")
# Before any page script: what the widget reports, CSP violations, and each text the newest answer showed before
# it got its token (so a test can tell an answer that streamed in from one that arrived whole).
RECORDER = """
window.seen = []; window.violations = []; window.pieces = [];
for (const name of ["submit", "delivered", "error"]) {
  document.addEventListener("feedback-widget:" + name, (e) => window.seen.push([name, e.detail.event.type]));
}
document.addEventListener("securitypolicyviolation", (e) => window.violations.push(e.violatedDirective));
new MutationObserver(() => {
  const answer = [...document.querySelectorAll(".assistant-message")].pop();
  const text = answer && answer.querySelector(".message-text").textContent;
  if (text && !answer.hasAttribute("data-feedback-token") && window.pieces.at(-1) !== text) window.pieces.push(text);
}).observe(document, {childList: true, subtree: true, characterData: true});
"""


@pytest.fixture
def demo(tmp_path) -> Iterator[Site]:
    """The demo app (emulators, no settle window, worker off: the test drains it) on a real server."""
    app = create_app({"FEEDBACK_WORKER": False, "FEEDBACK_SETTLE_SECONDS": 0}, data_dir=tmp_path / "data")
    try:
        with serving(app) as site:
            yield site
    finally:
        shutdown(app)


def local(app: Flask) -> LocalProviders:
    return app.extensions[LOCAL_PROVIDERS]


def open_chat(context: BrowserContext, site: Site) -> Page:
    context.add_init_script(RECORDER)
    page = context.new_page()
    page.goto(site.url)
    return page


def seen(page: Page, name: str, count: int) -> None:
    # A function, not a string: the page's CSP forbids the eval a string predicate needs.
    page.wait_for_function("([name, count]) => window.seen.filter(([n]) => n === name).length >= count",
                           arg=[name, count])


def ask(page: Page, question: str) -> None:
    """Type the question and press Enter; return once the answer is complete and has its widget."""
    answered = page.locator(".assistant-message feedback-widget").count()
    page.locator("#chat-input").press_sequentially(question)
    page.keyboard.press("Enter")
    expect(page.locator(".assistant-message feedback-widget")).to_have_count(answered + 1)


def no_violations(page: Page) -> None:
    assert page.evaluate("window.violations") == [], "the page broke its own Content-Security-Policy"


def test_a_newcomer_asks_votes_explains_and_copies_and_all_four_providers_hear_of_it(
        demo: Site, context: BrowserContext) -> None:
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    page = open_chat(context, demo)
    expect(page.get_by_role("link", name="Dashboard")).to_have_attribute("href", "/feedback/dashboard")
    expect(page.get_by_role("heading", name="How can we help today?")).to_be_visible()
    question = "How do I connect to the VPN from home?"
    answer = pick_answer(question)
    ask(page, question)

    # It streamed in: several growing texts before the token, the last one the whole answer.
    pieces = page.evaluate("window.pieces")
    assert len(pieces) > 3, pieces
    assert all(b.startswith(a) and len(b) > len(a) for a, b in pairwise(pieces)) and pieces[-1] == answer
    message = page.locator(".assistant-message")
    expect(message.locator(".message-text")).to_have_text(answer)
    expect(page.locator(".user-message")).to_have_text(question)
    expect(page.get_by_role("heading", name="How can we help today?")).to_be_hidden()
    expect(page.locator("#chat-input")).to_be_focused()
    expect(page.locator("#chat-input")).to_have_value("")

    message.get_by_role("button", name="Thumbs down").click()
    message.get_by_role("button", name="Not complete").click()
    comment = "Which gateway is closest to Lisbon?"
    message.get_by_role("textbox", name="Comment (optional)").fill(comment)
    message.get_by_role("button", name="Send").click()
    expect(message.get_by_role("status")).to_have_text("Thanks for your feedback")
    page.evaluate("""() => {
        const range = document.createRange();
        range.selectNodeContents(document.querySelector('.assistant-message .message-text'));
        getSelection().removeAllRanges();
        getSelection().addRange(range);
    }""")
    page.keyboard.press("Control+C")
    seen(page, "delivered", 3)
    assert page.evaluate("navigator.clipboard.readText()") == answer
    assert page.evaluate("window.seen.filter(([n]) => n !== 'submit')") == [
        ["delivered", "thumbs_down"], ["delivered", "thumbs_down"], ["delivered", "copy_output"]]
    no_violations(page)

    demo.app.extensions["feedback_bridge"].worker.drain()
    emulators = local(demo.app)
    qbusiness = emulators.qbusiness.wait_for(1)[-1].json()  # the whole state, in one delivery or its last
    assert qbusiness["messageUsefulness"] | {"submittedAt": None} == {
        "usefulness": "NOT_USEFUL", "reason": "NOT_COMPLETE", "comment": comment, "submittedAt": None}
    assert "messageCopiedAt" in qbusiness
    relevance = [c.json()["contentFeedback"]["generativeContentFeedbackData"]["relevance"]
                 for c in emulators.qconnect.wait_for(1)]
    assert set(relevance) == {"NOT_HELPFUL"}
    [moveworks_message] = emulators.moveworks.messages.values()
    moveworks = emulators.moveworks.wait_for(1)[-1].json()
    assert moveworks == {"callback_id": moveworks_message.unhelpful_callback_id,
                         "additional_feedback": f"Not complete — {comment}"}
    nebuly = {c.json()["feedback"]["slug"]: c.json() for c in emulators.nebuly.wait_for(2)}
    assert sorted(nebuly) == ["copy_output", "thumbs_down"]
    assert nebuly["thumbs_down"]["feedback"]["text"] == f"Not complete — {comment}"
    assert nebuly["copy_output"]["feedback"]["text"] == answer
    assert nebuly["thumbs_down"]["metadata"]["input"] == question
    assert nebuly["thumbs_down"]["metadata"]["output"] == answer

    # Then the dashboard (the demo admits loopback) shows what they said and what each provider received.
    page.get_by_role("link", name="Dashboard").click()
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    expect(page.locator("#stat-total")).to_have_text("3")  # the vote, its amendment (reason and comment), the copy
    health = page.locator("#health")
    for provider in ("qbusiness", "qconnect", "moveworks", "nebuly"):
        row = health.get_by_role("row").filter(has=page.get_by_role("rowheader", name=provider, exact=True))
        expect(row.locator("[data-status=failed]")).to_have_text("0")
        expect(row.locator("[data-status=pending]")).to_have_text("0")
        assert int(row.locator("[data-status=delivered]").inner_text()) >= 1
    page.get_by_role("navigation", name="Dashboard").get_by_role("link", name="Feedback").click()
    vote = page.locator("li.event").filter(has=page.locator(".kind-thumbs_down")).filter(has_text="(amendment)")
    expect(vote.locator(".comment")).to_have_text(comment)
    vote.get_by_text("Prompt, answer and deliveries").click()
    expect(vote.locator("dd").nth(0)).to_have_text(question)
    expect(vote.locator("dd").nth(1)).to_have_text(answer)
    copied = page.locator("li.event").filter(has=page.locator(".kind-copy_output"))
    copied.get_by_text("Prompt, answer and deliveries").click()
    deliveries = copied.locator("section.delivery")
    expect(deliveries.locator("h3")).to_have_count(4)
    assert {text.split()[0] for text in deliveries.locator("h3").all_inner_texts()} == {
        "qbusiness", "qconnect", "moveworks", "nebuly"}
    # The exact request Nebuly got for the copy, as sent.
    nebuly_copy = deliveries.filter(has=page.get_by_role("heading", name="nebuly"))
    expect(nebuly_copy.locator("pre").first).to_contain_text('"slug": "copy_output"')
    # What a provider cannot express is recorded as skipped, with why (Q Connect has no copy signal).
    qconnect_copy = deliveries.filter(has=page.get_by_role("heading", name="qconnect"))
    expect(qconnect_copy.locator("h3 .state")).to_have_text("skipped")
    expect(qconnect_copy.locator(".why-skipped")).not_to_be_empty()
    no_violations(page)


def test_a_reload_keeps_the_conversation_and_the_vote_and_a_new_conversation_starts_empty(
        tmp_path, browser: Browser) -> None:
    # The in-app worker delivers here, as when a newcomer runs the demo.
    app = create_app({"FEEDBACK_SETTLE_SECONDS": 0}, data_dir=tmp_path / "data")
    try:
        with serving(app) as site:
            context = browser.new_context()
            page = open_chat(context, site)
            page.get_by_role("button", name="The printer on the 3rd floor says offline.").click()  # a suggestion
            expect(page.locator(".assistant-message feedback-widget")).to_have_count(1)
            ask(page, "Outlook isn't syncing my email.")
            page.locator(".assistant-message").nth(1).get_by_role("button", name="Thumbs up").click()
            seen(page, "delivered", 1)
            [delivered] = local(app).qconnect.wait_for(1)
            assert delivered.json()["contentFeedback"]["generativeContentFeedbackData"]["relevance"] == "HELPFUL"

            questions = ["The printer on the 3rd floor says offline.", "Outlook isn't syncing my email."]
            expected = [pick_answer(question) for question in questions]
            for reloaded in (page, context.browser.new_context().new_page()):
                if reloaded is page:
                    page.reload()
                else:  # another browser with this one's cookie: the vote comes from the server, not localStorage
                    reloaded.context.add_cookies(context.cookies())
                    reloaded.goto(site.url)
                expect(reloaded.locator(".user-message")).to_have_text(questions)
                expect(reloaded.locator(".message-text")).to_have_text(expected)
                thumbs = reloaded.get_by_role("button", name="Thumbs up")
                expect(thumbs.nth(1)).to_have_attribute("aria-pressed", "true")
                expect(thumbs.nth(0)).to_have_attribute("aria-pressed", "false")
                expect(reloaded.get_by_role("heading", name="How can we help today?")).to_be_hidden()
            reloaded.context.close()

            page.get_by_role("button", name="New conversation").click()
            expect(page.get_by_role("heading", name="How can we help today?")).to_be_visible()
            expect(page.locator(".assistant-message")).to_have_count(0)
            ask(page, "Hi!")
            page.reload()
            expect(page.locator(".user-message")).to_have_text(["Hi!"])
            no_violations(page)
            context.close()
    finally:
        shutdown(app)


def test_a_question_with_markup_is_shown_as_text_and_runs_nothing(demo: Site, context: BrowserContext) -> None:
    page = open_chat(context, demo)
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    question = '<script>window.pwned = 1; alert(1)</script><img src=x onerror="window.pwned = 2">Printer?'
    ask(page, question)
    for _ in range(2):  # as typed, then as the server renders it on reload
        expect(page.locator(".user-message")).to_have_text(question)
        assert page.locator("#chat-log script, #chat-log img").count() == 0
        assert page.evaluate("window.pwned") is None and dialogs == []
        page.reload()
        expect(page.locator(".assistant-message feedback-widget")).to_have_count(1)
    assert page.evaluate("window.violations") == [], "nothing was even attempted"


def test_the_chat_screenshot(demo: Site, browser: Browser, tmp_path) -> None:
    """A picture of the chat for the README (docs/screenshots/chat.png when FEEDBACK_UPDATE_SCREENSHOTS=1)."""
    context = browser.new_context(viewport={"width": 1000, "height": 1240}, color_scheme="light")
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    try:
        page = open_chat(context, demo)
        ask(page, "I forgot my password and I'm locked out.")
        ask(page, "How do I connect to the VPN from home?")
        ask(page, "Nobody can hear me in Teams meetings.")
        messages = page.locator(".assistant-message")
        messages.nth(0).get_by_role("button", name="Thumbs up").click()
        messages.nth(0).get_by_role("button", name="Dismiss").click()
        messages.nth(2).get_by_role("button", name="Copy answer").click()
        messages.nth(2).get_by_role("button", name="Thumbs down").click()
        messages.nth(2).get_by_role("button", name="Not helpful").click()
        messages.nth(2).get_by_role("textbox", name="Comment (optional)").fill("My headset has no mute switch.")
        seen(page, "delivered", 3)
        expect(messages.nth(2).get_by_role("button", name="Not helpful")).to_have_attribute("aria-pressed", "true")
        page.locator("#chat-input").blur()
        page.evaluate("() => window.scrollTo(0, document.documentElement.scrollHeight)")
        no_violations(page)
        shot = tmp_path / "chat.png"
        page.screenshot(path=shot)
    finally:
        context.close()
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    assert struct.unpack(">II", data[16:24]) == (1000, 1240)
    assert 30_000 < len(data) < 2_000_000, len(data)
    if os.environ.get("FEEDBACK_UPDATE_SCREENSHOTS") == "1":
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, SCREENSHOT)


def test_the_committed_screenshot_is_a_png() -> None:
    data = SCREENSHOT.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", data[16:24]) == (1000, 1240)


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_axe_finds_no_accessibility_violations_in_the_chat(demo: Site, browser: Browser, scheme: str) -> None:
    # bypass_csp: axe is injected as an inline script, which the page's own policy rightly refuses.
    context = browser.new_context(color_scheme=scheme, bypass_csp=True)
    try:
        page = open_chat(context, demo)
        page.add_script_tag(path=str(AXE))
        empty = page.evaluate("axe.run(document, {resultTypes: ['violations']})")
        ask(page, "My second monitor stays black when I dock.")
        page.get_by_role("button", name="Thumbs down").click()  # the panel too
        page.get_by_role("button", name="Not complete").click()
        chat = page.evaluate("axe.run(document, {resultTypes: ['violations']})")
    finally:
        context.close()
    for result in (empty, chat):
        assert [(v["id"], [n["target"] for n in v["nodes"]]) for v in result["violations"]] == []
        assert result["passes"], "axe ran no checks"
