# ruff: noqa: F811 -- pytest fixtures imported from widget_support are redefined as test parameters
"""The widget's delivery in Chromium against the real blueprint: offline then online, a reload with events queued,
two tabs, throttling and server errors then recovery, rejected events, and the beacon on leaving. What reached the
event API is recorded server-side (tests/widget_support.py), so "never twice" is checked where it matters."""

from __future__ import annotations

from collections import Counter

from playwright.sync_api import BrowserContext, Page, expect

from widget_support import Site, browser, context, page, queued, seen, site  # noqa: F401

FAST = ("<script>addEventListener('DOMContentLoaded', () => "
        "feedbackBridge.configure({retry: 50, retryMax: 200}))</script>")


def widgets(site: Site, count: int) -> tuple[str, list[str]]:
    tokens = [site.token(f"m-{n}") for n in range(count)]
    return "".join(f"<p>Answer {n}</p><feedback-widget token='{t}'></feedback-widget>"
                   for n, t in enumerate(tokens)), tokens


def no_id_twice(site: Site) -> None:
    twice = [i for i, n in Counter(site.ids()).items() if n > 1]
    assert twice == [], f"event ids that reached the server more than once: {twice}"


def test_offline_events_wait_in_the_queue_and_leave_when_back_online(site: Site, context: BrowserContext, page: Page):
    body, tokens = widgets(site, 2)
    page.goto(site.page(body))
    page.wait_for_function("window.feedbackBridge")
    context.set_offline(True)
    page.get_by_role("button", name="Thumbs up").first.click()
    page.get_by_role("button", name="Thumbs down").nth(1).click()
    page.wait_for_function("JSON.parse(localStorage['feedback-bridge:queue:v1'] || '[]').length == 2")
    assert [e["type"] for e in queued(page)] == ["thumbs_up", "thumbs_down"] and site.received == []
    expect(page.get_by_role("status").first).to_have_text("Thanks for your feedback")  # no error shown offline
    context.set_offline(False)
    seen(page, "delivered", 2)
    assert site.state(tokens[0])["vote"] == "up" and site.state(tokens[1])["vote"] == "down"
    assert len(site.received) == 1, "both events went in one batch"
    assert queued(page) == []
    no_id_twice(site)


def test_a_reload_sends_what_the_last_page_left_queued(site: Site, page: Page):
    body, tokens = widgets(site, 1)
    url = site.page(body)
    page.add_init_script("navigator.sendBeacon = () => false")  # leaving sends nothing: the next page must
    site.fail_always = (503, {})
    page.goto(url)
    # No retry before the reload: a request still out when the page goes (keepalive) may be delivered, and the
    # next page, which cannot know, sends the event again (the server's de-duplication by id is there for that).
    page.evaluate("feedbackBridge.configure({retry: 60000, retryMax: 60000})")
    page.get_by_role("button", name="Thumbs up").click()
    page.wait_for_function("window.seen.length == 1")
    page.wait_for_function("(q => q.length == 1 && !q[0].f)(JSON.parse(localStorage['feedback-bridge:queue:v1'] "
                           "|| '[]'))")  # the first attempt failed, the event waits in the queue
    queued_id = queued(page)[0]["id"]
    assert site.attempts and site.received == []
    site.fail_always = None
    page.reload()
    page.wait_for_function("JSON.parse(localStorage['feedback-bridge:queue:v1'] || '[]').length == 0")
    assert site.ids() == [queued_id]
    assert site.state(tokens[0])["vote"] == "up"
    expect(page.get_by_role("button", name="Thumbs up")).to_have_attribute("aria-pressed", "true")


def test_leaving_sends_the_rest_with_a_beacon_once(site: Site, page: Page):
    body, tokens = widgets(site, 1)
    site.fail_always = (503, {})
    page.goto(site.page(body))
    page.get_by_role("button", name="Thumbs down").click()
    page.wait_for_function("JSON.parse(localStorage['feedback-bridge:queue:v1'] || '[]').length == 1 && "
                           "!JSON.parse(localStorage['feedback-bridge:queue:v1'])[0].f")  # the attempt failed
    site.fail_always = None
    page.goto(site.page("<p>elsewhere</p>"))  # pagehide: the beacon
    page.wait_for_function("window.feedbackBridge")
    assert queued(page) == []
    # A beacon's answer reaches no page: wait for the vote to be stored, not for the request to arrive (a state read
    # as soon as it arrived raced its transaction, and once in CI lost).
    deadline = page.evaluate("Date.now()") + 5000
    while site.state(tokens[0])["vote"] is None and page.evaluate("Date.now()") < deadline:
        page.wait_for_timeout(50)
    assert site.state(tokens[0])["vote"] == "down"
    no_id_twice(site)


def test_two_tabs_never_send_an_event_twice(site: Site, context: BrowserContext):
    body, tokens = widgets(site, 4)
    url = site.page(body)
    tabs = [context.new_page(), context.new_page()]
    for tab in tabs:
        tab.goto(url)
        tab.wait_for_function("window.feedbackBridge")
    context.set_offline(True)  # both tabs queue into the one shared queue...
    for n, tab in enumerate(tabs):
        tab.get_by_role("button", name="Thumbs up").nth(n).click()
        tab.get_by_role("button", name="Thumbs down").nth(n + 2).click()
    tabs[0].wait_for_function("JSON.parse(localStorage['feedback-bridge:queue:v1'] || '[]').length == 4")
    context.set_offline(False)  # ...and both wake up at once
    for tab in tabs:
        seen(tab, "delivered", 2)  # each tab hears about its own events, whichever tab sent them
    assert len(site.ids()) == 4
    no_id_twice(site)
    assert [site.state(t)["vote"] for t in tokens] == ["up", "up", "down", "down"]
    for tab in tabs:  # and more, online, from both at once
        tab.get_by_role("button", name="Copy answer").first.click()
    for tab in tabs:
        seen(tab, "delivered", 3)
    no_id_twice(site)
    assert [(e["type"], e.get("text")) for e in site.events()][4:] == [("copy_output", "Answer 0")] * 2


def test_throttling_and_server_errors_are_retried_honouring_retry_after(site: Site, page: Page):
    body, tokens = widgets(site, 1)
    site.failures = [(429, {"Retry-After": "1"}), (500, {}), (502, {})]
    page.goto(site.page(body, head=FAST))
    page.get_by_role("button", name="Thumbs up").click()
    seen(page, "delivered")
    assert len(site.attempts) == 4
    first, second, third, fourth = site.attempts
    assert second - first >= 0.95, "Retry-After: 1 was not honoured"
    assert third - second < 0.9 and fourth - third < 0.9  # then the (test-shortened) backoff
    assert site.state(tokens[0])["vote"] == "up"
    assert [s[0] for s in page.evaluate("window.seen")] == ["submit", "delivered"]  # no error for retries
    no_id_twice(site)


def test_rejected_events_are_dropped_with_an_error_event(site: Site, page: Page):
    body, tokens = widgets(site, 2)
    page.goto(site.page(body))
    page.wait_for_function("!!customElements.get('feedback-widget')")
    page.evaluate("document.querySelector('feedback-widget').token = 'forged.token.value'")
    up = page.get_by_role("button", name="Thumbs up").first
    up.click()
    page.get_by_role("button", name="Thumbs up").nth(1).click()  # a good one in the same batch survives
    page.wait_for_function("window.seen.some(([n]) => n == 'error')")
    seen(page, "delivered")
    errors = [s for s in page.evaluate("window.seen") if s[0] == "error"]
    assert errors == [["error", "thumbs_up", "token_invalid"]]
    expect(up).to_have_attribute("aria-pressed", "false")  # a refused vote is shown as not given
    expect(page.get_by_role("status").first).to_have_text("Feedback not sent")
    assert queued(page) == []  # dropped, not retried
    assert site.state(tokens[1])["vote"] == "up"


def test_a_batch_refused_whole_is_dropped_too(site: Site, page: Page):
    body, _ = widgets(site, 1)
    site.failures = [(413, {})]
    page.goto(site.page(body))
    page.get_by_role("button", name="Thumbs up").click()
    page.wait_for_function("window.seen.some(([n]) => n == 'error')")
    assert [s for s in page.evaluate("window.seen") if s[0] == "error"] == [["error", "thumbs_up", "http_413"]]
    assert queued(page) == [] and len(site.attempts) == 1


def test_without_local_storage_the_queue_lives_in_memory(site: Site, context: BrowserContext, page: Page):
    page.add_init_script("Object.defineProperty(window, 'localStorage', {get() { "
                         "throw new DOMException('storage is disabled', 'SecurityError'); }})")
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    body, tokens = widgets(site, 2)
    page.goto(site.page(body))
    page.wait_for_function("window.feedbackBridge")
    context.set_offline(True)
    page.get_by_role("button", name="Thumbs up").first.click()
    page.get_by_role("button", name="Thumbs down").nth(1).click()
    seen(page, "submit", 2)
    assert site.received == []
    context.set_offline(False)
    seen(page, "delivered", 2)
    assert site.state(tokens[0])["vote"] == "up" and site.state(tokens[1])["vote"] == "down"
    assert errors == [] and len(site.ids()) == 2
    no_id_twice(site)


def test_without_web_locks_events_are_still_delivered_once(site: Site, context: BrowserContext):
    context.add_init_script("delete Navigator.prototype.locks")
    body, tokens = widgets(site, 2)
    url = site.page(body)
    tabs = [context.new_page(), context.new_page()]
    for n, tab in enumerate(tabs):
        tab.goto(url)
        assert tab.evaluate("navigator.locks") is None
        tab.get_by_role("button", name="Thumbs up").nth(n).click()
    for tab in tabs:
        seen(tab, "delivered")
    assert [site.state(t)["vote"] for t in tokens] == ["up", "up"]
    assert len(site.ids()) == 2
    no_id_twice(site)


def test_hiding_the_page_sends_the_rest_with_a_beacon(site: Site, page: Page):
    page.add_init_script("""{ const send = navigator.sendBeacon.bind(navigator); window.beacons = [];
        navigator.sendBeacon = (url, body) => (window.beacons.push(JSON.parse(body)), send(url, body)); }""")
    body, tokens = widgets(site, 1)
    site.fail_always = (503, {})
    page.goto(site.page(body))
    page.evaluate("feedbackBridge.configure({retry: 60000, retryMax: 60000})")  # no retry before the beacon
    page.get_by_role("button", name="Thumbs down").click()
    page.wait_for_function("(q => q.length == 1 && !q[0].f)(JSON.parse(localStorage['feedback-bridge:queue:v1'] "
                           "|| '[]'))")  # the attempt failed
    site.fail_always = None
    page.evaluate("""Object.defineProperty(document, 'hidden', {value: true, configurable: true});
        document.dispatchEvent(new Event('visibilitychange', {bubbles: true}))""")
    assert page.evaluate("window.beacons.map((b) => b.events.map((e) => e.type))") == [["thumbs_down"]]
    assert queued(page) == []
    # Wait for the server to have it: ask /state until the vote shows.
    page.wait_for_function("""(token) => { fetch('/feedback/state?token=' + encodeURIComponent(token))
        .then((r) => r.json()).then((s) => { window.vote = s.vote; }); return window.vote == 'down'; }""",
                           arg=tokens[0], polling=100)
    assert len(site.ids()) == 1
