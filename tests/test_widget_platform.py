# ruff: noqa: F811 -- pytest fixtures imported from widget_support are redefined as test parameters
"""The widget where the platform around it changes: Windows-style forced colours, a page on another origin than
the bridge (CORS), and the back/forward cache. Debian's headless Chromium against the real blueprint over HTTP."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect

from widget_support import CHROMIUM, CHROMIUM_ARGS, Site, browser, serving, site  # noqa: F401

COLOURS = """([w, scheme]) => {
  const s = w.shadowRoot, css = (n, pseudo) => getComputedStyle(n, pseudo);
  const [up, down] = s.querySelectorAll('[data-v]'), stars = s.querySelectorAll('input');
  return {
    upIcon: css(up, '::before').backgroundColor, upFace: css(up).backgroundColor,
    pressed: css(up).color, unpressed: css(down).color,
    checked: css(stars[3]).color, unchecked: css(stars[4]).color,
  };
}"""


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_forced_colours_keep_the_icons_and_the_choice_visible(site: Site, browser: Browser, scheme: str):
    """In forced colours (Windows high contrast) the browser repaints every colour with the user's palette: the
    thumbs (a shape painted in the text colour) must not vanish into their face, and the chosen thumb and stars must
    still differ from the others."""
    token = site.token("m-0")
    context = browser.new_context(forced_colors="active", color_scheme=scheme)
    page = context.new_page()
    page.goto(site.page(f'<p>Answer.</p><feedback-widget token="{token}" variant="both"></feedback-widget>'))
    page.get_by_role("button", name="Thumbs up").click()
    page.get_by_role("radio", name="4 out of 5").click()
    expect(page.get_by_role("radio", name="4 out of 5")).to_be_checked()
    colours = page.locator("feedback-widget").evaluate(f"w => ({COLOURS})([w])")
    context.close()
    assert colours["upIcon"] != colours["upFace"], colours
    assert colours["pressed"] != colours["unpressed"], colours
    assert colours["checked"] != colours["unchecked"], colours


@pytest.fixture
def cross_origin_site(make_app) -> Iterator[Site]:
    """The bridge allowing pages of http://localhost:<any port>, and pages served from that other origin."""
    with serving(make_app(FEEDBACK_ALLOWED_ORIGINS=[r"http://localhost:\d+"])) as site:
        yield site


def test_a_page_on_another_origin_votes_reads_its_state_and_loads_its_language(cross_origin_site: Site,
                                                                               browser: Browser):
    site = cross_origin_site
    bridge = site.url.rstrip("/")  # http://127.0.0.1:<port>
    other = bridge.replace("127.0.0.1", "localhost")  # another origin, same server
    token = site.token("m-0")
    url = site.page(f'<p>Antwort.</p><feedback-widget token="{token}"></feedback-widget>', lang="de",
                    src=f"{bridge}/feedback/widget.js").replace(bridge, other)
    first = browser.new_context()
    page = first.new_page()
    page.goto(url)
    assert page.evaluate("location.origin") == other
    page.get_by_role("button", name="Daumen hoch").click()  # German labels: fetched across origins
    page.wait_for_function("window.seen.some(([n]) => n === 'delivered')")  # the response was readable
    first.close()
    assert site.state(token)["vote"] == "up" and len(site.events()) == 1
    # A browser with nothing stored asks the bridge's /state across origins and shows the vote.
    second = browser.new_context()
    page = second.new_page()
    page.goto(url)
    expect(page.get_by_role("button", name="Daumen hoch")).to_have_attribute("aria-pressed", "true")
    second.close()


@pytest.fixture
def bfcache_browser(browser: Browser) -> Iterator[Browser]:
    """A second Chromium, with the back/forward cache on (Playwright turns it off by default)."""
    other = browser.browser_type.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True,
                                        ignore_default_args=["--disable-back-forward-cache"])
    yield other
    other.close()


def test_a_page_with_the_widget_is_restored_from_the_back_forward_cache_and_still_delivers(
        site: Site, bfcache_browser: Browser):
    """The Web Lock each page holds for its life must not cost it the back/forward cache, and a restored page's
    sender must still work."""
    token = site.token("m-0")
    page: Page = bfcache_browser.new_page()
    cdp = page.context.new_cdp_session(page)
    cdp.send("Page.enable")
    reasons: list = []
    cdp.on("Page.backForwardCacheNotUsed", lambda event: reasons.append(event))
    page.goto(site.page(f'<p>Answer.</p><feedback-widget token="{token}"></feedback-widget>'
                        '<script>addEventListener("pageshow", (e) => window.restored = e.persisted)</script>'))
    page.get_by_role("button", name="Thumbs up").click()
    page.wait_for_function("window.seen.some(([n]) => n === 'delivered')")
    page.evaluate("window.restored = 'left'")
    page.goto(site.page("<p>Another page with the widget.</p>"))
    page.wait_for_function("window.feedbackBridge")
    page.go_back(wait_until="commit")
    page.wait_for_function("window.restored !== 'left'")
    assert page.evaluate("window.restored") is True, reasons
    page.get_by_role("button", name="Thumbs down").click()
    page.wait_for_function("window.seen.filter(([n]) => n === 'delivered').length == 2")
    page.close()
    assert site.state(token)["vote"] == "down"
    assert [e["type"] for e in site.events()] == ["thumbs_up", "thumbs_down"]
