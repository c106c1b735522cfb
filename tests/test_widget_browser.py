# ruff: noqa: F811 -- pytest fixtures imported from widget_support are redefined as test parameters
"""The widget in Debian's headless Chromium (driven by Playwright), against the real blueprint over HTTP: voting by
mouse and keyboard, ratings, reasons and comments, copies and pastes, auto-attach, theming and host CSS, languages
and an axe-core accessibility check. Every page loads the served (minified) script."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, Page, expect

from widget_support import I18N, Site, browser, context, page, seen, serving, shadow, site  # noqa: F401

AXE = Path(__import__("axe_playwright_python").__file__).with_name("axe.min.js")


def answers(site: Site, count: int, variant: str = "") -> tuple[str, list[str]]:
    tokens = [site.token(f"m-{n}") for n in range(count)]
    body = "".join(f'<p class="answer">Answer number {n}.</p><feedback-widget token="{t}" {variant}></feedback-widget>'
                   for n, t in enumerate(tokens))
    return body, tokens


def test_clicking_thumbs_records_the_vote_and_clicking_again_retracts_it(site: Site, page: Page):
    body, tokens = answers(site, 2)
    page.goto(site.page(body))
    up = page.get_by_role("button", name="Thumbs up").first
    up.click()
    seen(page, "delivered")
    expect(up).to_have_attribute("aria-pressed", "true")
    assert site.state(tokens[0])["vote"] == "up" and site.state(tokens[1])["vote"] is None
    expect(page.get_by_role("status").first).to_have_text("Thanks for your feedback")
    expect(page.get_by_role("group", name="Tell us more")).to_be_visible()  # the panel opened, positive reasons
    expect(page.get_by_role("button", name="Helpful")).to_be_visible()
    expect(page.get_by_role("button", name="Not complete")).to_have_count(0)
    up.click()
    seen(page, "delivered", 2)
    expect(up).to_have_attribute("aria-pressed", "false")
    assert site.state(tokens[0])["vote"] is None
    expect(page.get_by_role("group", name="Tell us more")).to_have_count(0)
    assert page.evaluate("window.seen") == [["submit", "thumbs_up", None], ["delivered", "thumbs_up", "accepted"],
                                            ["submit", "retract", None], ["delivered", "retract", "accepted"]]


def test_keyboard_alone_votes_adds_a_reason_and_a_comment(site: Site, page: Page):
    body, tokens = answers(site, 2)
    page.goto(site.page(body))
    page.wait_for_function("!!customElements.get('feedback-widget')")
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")  # thumbs up, then thumbs down of the first answer
    page.keyboard.press("Enter")
    seen(page, "delivered")
    assert site.state(tokens[0])["vote"] == "down"
    focused = "document.activeElement.shadowRoot.activeElement"
    page.keyboard.press("Tab")  # the copy button, then the panel's first reason
    page.keyboard.press("Tab")
    assert page.evaluate(f"{focused}.dataset.r") == "NOT_FACTUALLY_CORRECT"
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    page.keyboard.press("Space")  # NOT_HELPFUL
    for _ in range(5):
        page.keyboard.press("Tab")
    assert page.evaluate(f"{focused}.localName") == "textarea"
    page.keyboard.type("Step 3 is missing")
    expect(page.locator("feedback-widget").first.locator("[part=counter]")).to_have_text("17/1000")
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")  # Send
    seen(page, "delivered", 2)
    state = site.state(tokens[0])
    assert state == {"vote": "down", "rating": None, "reason": "NOT_HELPFUL", "comment": "Step 3 is missing",
                     "copied": False}
    assert page.evaluate(f"{focused}.dataset.v") == "down"  # focus went back to the vote


def test_focus_is_visible(site: Site, page: Page):
    body, _ = answers(site, 1)
    page.goto(site.page(body))
    page.wait_for_function("!!customElements.get('feedback-widget')")
    page.keyboard.press("Tab")
    outline = page.evaluate(f"getComputedStyle({shadow(page, '[data-v=up]')}).outlineStyle")
    assert outline == "solid"


def test_dismissing_the_panel_keeps_the_vote(site: Site, page: Page):
    body, tokens = answers(site, 1)
    page.goto(site.page(body))
    page.get_by_role("button", name="Thumbs down").click()
    page.get_by_role("button", name="Dismiss").click()
    seen(page, "delivered")
    expect(page.get_by_role("group")).to_have_count(0)
    page.get_by_role("button", name="Thumbs down").click()  # retract...
    page.get_by_role("button", name="Thumbs down").click()  # ...and vote again; Escape closes the panel
    page.keyboard.press("Escape")
    expect(page.get_by_role("group")).to_have_count(0)
    seen(page, "delivered", 3)
    assert site.state(tokens[0])["vote"] == "down"
    assert [e["type"] for e in site.events()] == ["thumbs_down", "retract", "thumbs_down"]


def test_rating_is_a_radio_group_driven_by_arrow_keys(site: Site, page: Page):
    body, tokens = answers(site, 1, 'variant="both"')
    page.goto(site.page(body))
    group = page.get_by_role("radiogroup", name="Rating")
    expect(group).to_be_visible()
    stars = group.get_by_role("radio")
    expect(stars).to_have_count(5)
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")  # up, down, then the group's one tab stop: the first star
    page.keyboard.press("ArrowRight")
    seen(page, "delivered")
    assert site.state(tokens[0])["rating"] == 2
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("ArrowLeft")  # wraps around from 1 to 5
    seen(page, "delivered", 3)
    assert site.state(tokens[0])["rating"] == 5
    expect(stars.nth(4)).to_be_checked()
    assert [s.is_checked() for s in stars.all()] == [False, False, False, False, True]
    page.keyboard.press("Space")  # Space on the chosen star keeps it (a radio), clicking it retracts
    expect(stars.nth(4)).to_be_checked()
    page.keyboard.press("Shift+Tab")  # the group is one tab stop: back to thumbs down
    assert page.evaluate("document.activeElement.shadowRoot.activeElement.dataset.v") == "down"
    stars.nth(1).click()
    page.get_by_role("button", name="Not concise").click()
    page.get_by_role("button", name="Send").click()  # the amendment of a rating repeats its value
    seen(page, "delivered", 5)
    assert site.state(tokens[0]) == {"vote": None, "rating": 2, "reason": "NOT_CONCISE", "comment": None,
                                     "copied": False}
    assert site.events()[-1]["value"] == 2 and site.events()[-1]["amends"] == site.events()[-2]["id"]
    stars.nth(1).click()
    seen(page, "delivered", 6)
    assert site.state(tokens[0])["rating"] is None
    expect(page.get_by_role("button", name="Thumbs up")).to_be_visible()


def test_rating_variant_hides_the_thumbs(site: Site, page: Page):
    body, _ = answers(site, 1, 'variant="rating"')
    page.goto(site.page(body))
    expect(page.get_by_role("radiogroup")).to_be_visible()
    expect(page.get_by_role("button", name="Thumbs up")).to_be_hidden()


def test_a_reload_shows_the_previous_choice(site: Site, context: BrowserContext, page: Page):
    body, _ = answers(site, 2)
    url = site.page(body)
    page.goto(url)
    page.get_by_role("button", name="Thumbs down").nth(1).click()
    seen(page, "delivered")
    page.reload()
    expect(page.get_by_role("button", name="Thumbs down").nth(1)).to_have_attribute("aria-pressed", "true")
    expect(page.get_by_role("button", name="Thumbs down").first).to_have_attribute("aria-pressed", "false")
    # Another browser (no local state) gets it from GET /state.
    other = context.browser.new_context().new_page()
    other.goto(url)
    expect(other.get_by_role("button", name="Thumbs down").nth(1)).to_have_attribute("aria-pressed", "true")
    other.context.close()


def test_copy_button_copies_the_answer_and_records_it(site: Site, context: BrowserContext, page: Page):
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    body, tokens = answers(site, 2)
    page.goto(site.page(body))
    page.get_by_role("button", name="Copy answer").nth(1).click()
    seen(page, "delivered")
    assert page.evaluate("navigator.clipboard.readText()") == "Answer number 1."
    assert site.events()[0] | {"id": None, "occurred_at": None} == {
        "type": "copy_output", "text": "Answer number 1.", "token": tokens[1], "id": None, "occurred_at": None}
    assert site.state(tokens[1])["copied"] is True
    expect(page.get_by_role("status").nth(1)).to_have_text("Copied")


CHAT = """<div id="log">
<div class="user-message">How do I reset my password?</div>
<div class="assistant-message" data-feedback-token="{t0}"><p>Open Settings, then Security.</p></div>
<div class="user-message">And my PIN?</div>
<div class="assistant-message" data-feedback-token="{t1}"><p>Call the help desk.</p></div>
<div class="assistant-message"><p>No token yet.</p></div>
</div><textarea id="chat-input"></textarea>"""
ATTACH = ('data-attach=".assistant-message" data-token-attribute="data-feedback-token" '
          'data-prompt=".user-message" data-input="#chat-input"')


def chat(site: Site, page: Page, **kwargs) -> list[str]:
    tokens = [site.token(f"m-{n}") for n in range(3)]
    page.goto(site.page(CHAT.format(t0=tokens[0], t1=tokens[1]), script=ATTACH, **kwargs))
    page.wait_for_function("document.querySelectorAll('.assistant-message feedback-widget').length == 2")
    return tokens


def test_auto_attach_waits_for_tokens_and_streamed_messages_get_a_widget_in_their_frame(site: Site, page: Page):
    tokens = chat(site, page)
    assert page.evaluate("[...document.querySelectorAll('.assistant-message')].map(m => "
                         "m.lastElementChild.localName)") == ["feedback-widget", "feedback-widget", "p"]
    # A token arriving later attaches the widget.
    page.evaluate(f"document.querySelectorAll('.assistant-message')[2].setAttribute('data-feedback-token', "
                  f"{tokens[2]!r})")
    page.wait_for_function("document.querySelectorAll('.assistant-message feedback-widget').length == 3")
    # A streamed message: its widget is there before the next frame is rendered.
    streamed = site.token("m-streamed")
    in_frame = page.evaluate("""(token) => new Promise((done) => {
        const m = document.createElement('div');
        m.className = 'assistant-message';
        m.setAttribute('data-feedback-token', token);
        m.textContent = 'Streamed answer';
        document.getElementById('log').append(m);
        requestAnimationFrame(() => done(!!m.querySelector('feedback-widget')));
    })""", streamed)
    assert in_frame
    page.locator(".assistant-message").nth(3).get_by_role("button", name="Thumbs up").click()
    seen(page, "delivered")
    assert site.state(streamed)["vote"] == "up"
    nodes = page.evaluate("[...document.querySelectorAll('feedback-widget')].map(w => {"
                          "const it = document.createNodeIterator(w.shadowRoot); let n = -1;"
                          "while (it.nextNode()) n++; return n; })")
    assert len(nodes) == 4 and max(nodes[:3]) <= 20, nodes  # idle widgets: at most 20 DOM nodes


def test_a_selector_matching_nothing_breaks_nothing(site: Site, page: Page):
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(site.page("<p>Nothing here</p>", script='data-attach=".nope" data-prompt=".nope" data-input="#nope"'))
    page.wait_for_function("window.feedbackBridge")
    page.evaluate("document.body.append(document.createElement('div'))")
    page.evaluate("navigator.clipboard")  # settle a task
    assert errors == [] and page.locator("feedback-widget").count() == 0


def select_and_copy(page: Page, selector: str) -> None:
    page.evaluate("""(selector) => {
        const range = document.createRange();
        range.selectNodeContents(document.querySelector(selector));
        getSelection().removeAllRanges();
        getSelection().addRange(range);
    }""", selector)
    page.keyboard.press("Control+C")


def test_the_users_own_copies_and_pastes_are_recorded(site: Site, context: BrowserContext, page: Page):
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    tokens = chat(site, page)
    select_and_copy(page, ".assistant-message:nth-of-type(2) p")  # the first answer's text
    seen(page, "delivered")
    select_and_copy(page, ".user-message:nth-of-type(3)")  # the second prompt: counts for the second answer
    seen(page, "delivered", 2)
    page.locator("#chat-input").focus()
    page.keyboard.press("Control+V")  # pastes the prompt into the chat input: counts for the latest answer
    seen(page, "delivered", 3)
    got = [(e["type"], e["text"], e["token"]) for e in site.events()]
    assert got == [("copy_output", "Open Settings, then Security.", tokens[0]),
                   ("copy_input", "And my PIN?", tokens[1]),
                   ("paste", "And my PIN?", tokens[1])]
    assert site.state(tokens[0])["copied"] is True


HOSTILE = """<style>button { display: none !important; } * { color: red !important; font-size: 40px !important; }
feedback-widget::part(status) { text-decoration: underline; }</style>"""


def test_host_css_cannot_break_it_and_theming_variables_on_an_ancestor_apply(site: Site, page: Page):
    body, _ = answers(site, 1)
    page.goto(site.page(f'<section style="--feedback-accent: rgb(1, 2, 3); --feedback-bg: rgb(250, 240, 230)">'
                        f"{body}</section>", head=HOSTILE))
    up = page.get_by_role("button", name="Thumbs up")
    expect(up).to_be_visible()
    style = up.evaluate("b => [getComputedStyle(b).color, getComputedStyle(b).backgroundColor, "
                        "getComputedStyle(b).fontSize]")
    assert style[0] != "rgb(255, 0, 0)" and style[1] == "rgb(250, 240, 230)" and style[2] != "40px"
    up.click()
    assert up.evaluate("b => getComputedStyle(b).color") == "rgb(1, 2, 3)"  # pressed: the accent
    status = page.get_by_role("status")
    assert status.evaluate("s => getComputedStyle(s).textDecorationLine") == "underline"  # ::part applies


def test_light_and_dark_themes(site: Site, browser):
    token = site.token("m-0")
    url = site.page(f'<feedback-widget token="{token}"></feedback-widget>'
                    f'<feedback-widget token="{token}" theme="light"></feedback-widget>')
    context = browser.new_context(color_scheme="dark")
    page = context.new_page()
    page.goto(url)
    page.wait_for_function("document.querySelectorAll('feedback-widget')[1].shadowRoot?.firstChild")
    colours = page.evaluate("[...document.querySelectorAll('feedback-widget')].map(w => "
                            "getComputedStyle(w.shadowRoot.querySelector('button')).backgroundColor)")
    # The system's own page colour (Canvas) of each scheme, as this browser paints it.
    canvas = page.evaluate("['dark', 'light'].map(scheme => { const probe = document.createElement('div'); "
                           "probe.style = 'color-scheme:' + scheme + ';background:Canvas'; "
                           "document.body.append(probe); return getComputedStyle(probe).backgroundColor; })")
    context.close()
    assert colours == canvas and canvas[0] != canvas[1] and canvas[1] == "rgb(255, 255, 255)"


@pytest.mark.parametrize("lang", ["de", "fr", "es", "ja"])
def test_labels_follow_the_pages_language(site: Site, page: Page, lang: str):
    labels = json.loads((I18N / f"{lang}.json").read_text(encoding="utf-8"))
    body, _ = answers(site, 1, 'variant="both"')
    page.goto(site.page(body, lang=lang))
    expect(page.get_by_role("button", name=labels["Thumbs up"], exact=True)).to_be_visible()
    expect(page.get_by_role("radio", name=labels["{n} out of 5"].replace("{n}", "3"))).to_have_count(1)
    page.get_by_role("button", name=labels["Thumbs down"], exact=True).click()
    expect(page.get_by_role("status")).to_have_text(labels["Thanks for your feedback"])
    expect(page.get_by_role("button", name=labels["NOT_COMPLETE"])).to_be_visible()
    expect(page.get_by_role("textbox", name=labels["Comment (optional)"])).to_be_visible()


def test_a_language_the_bridge_does_not_have_falls_back_to_english(site: Site, page: Page):
    body, tokens = answers(site, 1)
    asked: list[int] = []
    page.on("response", lambda r: "/widget/i18n/" in r.url and asked.append(r.status))
    page.goto(site.page(body, lang="it"))
    page.get_by_role("button", name="Thumbs down", exact=True).click()
    expect(page.get_by_role("button", name="Not complete")).to_be_visible()
    seen(page, "delivered")
    assert asked == [404] and site.state(tokens[0])["vote"] == "down"


def test_any_label_can_be_overridden(site: Site, page: Page):
    body, _ = answers(site, 1)
    page.goto(site.page(body))
    page.wait_for_function("window.feedbackBridge")
    page.evaluate("feedbackBridge.configure({labels: {'Thumbs up': 'Like', NOT_COMPLETE: 'Missing steps'}})")
    expect(page.get_by_role("button", name="Like")).to_be_visible()
    page.get_by_role("button", name="Thumbs down").click()
    expect(page.get_by_role("button", name="Missing steps")).to_be_visible()


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_axe_finds_no_accessibility_violations(site: Site, browser, scheme: str):
    body, _ = answers(site, 2, 'variant="both"')
    context = browser.new_context(color_scheme=scheme)
    page = context.new_page()
    page.goto(site.page(f"<main><h1>Chat</h1>{body}</main>", head=f"<style>:root{{color-scheme:{scheme}}}</style>"))
    page.get_by_role("button", name="Thumbs down").first.click()  # the panel too
    page.get_by_role("button", name="Not complete").click()
    page.add_script_tag(path=str(AXE))
    result = page.evaluate("axe.run(document, {resultTypes: ['violations']})")
    context.close()
    violations = [(v["id"], [n["target"] for n in v["nodes"]]) for v in result["violations"]]
    assert violations == []
    assert result["passes"], "axe ran no checks"


def test_the_module_form_imports_in_chromium(site: Site, page: Page):
    token = site.token("m-0")
    url = site.page(f'<feedback-widget token="{token}"></feedback-widget><script type="module">'
                    'import {FeedbackWidgetElement, feedbackBridge} from "/feedback/widget.mjs";'
                    'FeedbackWidgetElement.define(); FeedbackWidgetElement.define();'
                    'window.imported = [typeof feedbackBridge.flush, customElements.get("feedback-widget") === '
                    'FeedbackWidgetElement, FeedbackWidgetElement.define("other-widget") !== undefined];</script>')
    page.goto(url)
    page.wait_for_function("window.imported")
    assert page.evaluate("window.imported") == ["function", True, True]


def test_the_module_form_posts_next_to_its_own_url(make_app, page: Page):
    """Under another URL prefix the module form, which has no document.currentScript, finds its endpoint from
    import.meta.url, as the classic script does from its src."""
    with serving(make_app(FEEDBACK_URL_PREFIX="/api/fb"), prefix="/api/fb") as other:
        token = other.token("m-0")
        other.pages["p"] = (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>chat</title>'
                            '<script type="module">import {feedbackBridge} from "/api/fb/widget.mjs";'
                            'window.configured = feedbackBridge.configure({});</script></head><body><p>Answer</p>'
                            f'<feedback-widget token="{token}"></feedback-widget></body></html>')
        page.goto(other.url + "p")
        page.wait_for_function("window.configured")
        assert page.evaluate("configured.endpoint") == other.url + "api/fb/events"
        page.get_by_role("button", name="Thumbs up").click()
        page.wait_for_function("(t) => { fetch('/api/fb/state?token=' + encodeURIComponent(t)).then((r) => r.json())"
                               ".then((s) => { window.vote = s.vote; }); return window.vote == 'up'; }",
                               arg=token, polling=100)
        assert [e["type"] for e in other.events()] == ["thumbs_up"]


def many(site: Site, count: int, between: str = "") -> tuple[str, list[str]]:
    """`count` explicit widgets (more than render at once: the rest render when they near the viewport)."""
    tokens = [site.token(f"m-{n}") for n in range(count)]
    return "".join(f'<p class="answer">Answer {n}.</p>{between}<feedback-widget token="{t}"></feedback-widget>'
                   for n, t in enumerate(tokens)), tokens


RENDERED = "(w => !!w.shadowRoot?.firstChild)(document.querySelectorAll('feedback-widget')[{index}])"


def test_a_widget_far_below_renders_when_scrolled_into_view_without_shifting(site: Site, page: Page):
    body, tokens = many(site, 300)
    page.goto(site.page(body))
    page.wait_for_function(RENDERED.format(index=0))
    last = page.locator("feedback-widget").last
    assert not page.evaluate(RENDERED.format(index=299)), "a widget far below the fold was rendered at once"
    idle = last.evaluate("w => w.getBoundingClientRect().height")
    assert idle == page.locator("feedback-widget").first.evaluate("w => w.getBoundingClientRect().height") > 0
    last.evaluate("w => w.scrollIntoView()")
    page.wait_for_function(RENDERED.format(index=299))
    assert last.evaluate("w => w.getBoundingClientRect().height") == idle  # the idle host had the rendered size
    last.get_by_role("button", name="Thumbs up").click()
    seen(page, "delivered")
    assert site.state(tokens[299])["vote"] == "up"


def test_the_keyboard_reaches_an_idle_widget_both_ways(site: Site, page: Page):
    spacer = '<div style="height: 4000px"></div>'
    body, tokens = many(site, 11)  # enough to make the next ones lazy
    far = [f'<feedback-widget token="{t}"></feedback-widget>' for t in tokens[:2]]
    page.goto(site.page(f"{body}<button id=a>a</button>{spacer}{far[0]}{spacer}{far[1]}{spacer}<button id=c>c"
                        "</button>"))
    page.wait_for_function(RENDERED.format(index=0))
    focused = "document.activeElement.shadowRoot?.activeElement"
    # Forwards, from a button 4,000 px above an idle widget: Tab lands on its first button.
    page.locator("#a").focus()
    assert not page.evaluate(RENDERED.format(index=11))
    page.keyboard.press("Tab")
    page.wait_for_function(f"{focused}?.dataset.v == 'up' && document.activeElement === "
                           "document.querySelectorAll('feedback-widget')[11]")
    # Backwards, from a button 4,000 px below another: Shift+Tab lands on its last button.
    page.locator("#c").focus()
    assert not page.evaluate(RENDERED.format(index=12))
    page.keyboard.press("Shift+Tab")
    page.wait_for_function(f"{focused}?.dataset.c == '1' && document.activeElement === "
                           "document.querySelectorAll('feedback-widget')[12]")
    assert page.evaluate("document.querySelectorAll('feedback-widget')[12].hasAttribute('tabindex')") is False


def test_the_copy_button_falls_back_to_exec_command(site: Site, page: Page):
    page.add_init_script("""Object.defineProperty(Navigator.prototype, 'clipboard', {get: () => undefined});
        window.copies = []; document.addEventListener('copy', (e) => window.copies.push(e.composedPath()[0].value));""")
    body, tokens = answers(site, 2)
    page.goto(site.page(body))
    page.get_by_role("button", name="Copy answer").nth(1).click()
    seen(page, "delivered")
    assert page.evaluate("window.copies") == ["Answer number 1."]  # execCommand copied the answer's text
    assert [(e["type"], e["text"], e["token"]) for e in site.events()] == [
        ("copy_output", "Answer number 1.", tokens[1])]  # once: the fallback's copy is not taken for the user's
    assert page.evaluate(f"{shadow(page, '[data-c]', 1)} === document.activeElement.shadowRoot.activeElement")
