# ruff: noqa: F811 -- pytest fixtures imported from widget_support are redefined as test parameters
"""The dashboard in headless Chromium over real HTTP: it renders a seeded store under its strict CSP, shows a
``<script>`` comment as text without running it, and retries a dead letter by its button."""

from __future__ import annotations

import os
import shutil
import struct
from datetime import datetime, timezone
from pathlib import Path

from playwright.sync_api import Browser, Page, expect
from sqlalchemy import select, update

from conftest import register, runtime
from feedback_bridge import db
from feedback_bridge.schema import outbox
from feedback_bridge.seed import seed_store
from support import event, post_events
from widget_support import browser, context, page, serving  # noqa: F401

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)


def test_dashboard_renders_and_runs_nothing_users_wrote(make_app, page: Page):
    app = make_app(FEEDBACK_DASHBOARD_CHECK="feedback_bridge.dashboard.access:localhost_only",
                   FEEDBACK_PROVIDERS={"log": {}})
    runtime(app).now = lambda: NOW
    seed_store(runtime(app).engine, 300, now=NOW, seed=11)
    dialogs: list[str] = []
    violations: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.on("console", lambda message: violations.append(message.text)
            if "Content Security Policy" in message.text else None)

    with serving(app) as site:  # set up the app's routes before its first request
        token = register(app, message_id="m-xss", user_id="mallory")
        post_events(app, event("thumbs_down", token, reason="OTHER",
                               comment='<script>alert(1)</script><img src=x onerror="alert(2)">'))
        page.goto(site.url + "feedback/dashboard/")
        expect(page.get_by_role("heading", name="Overview")).to_be_visible()
        assert page.locator("svg[role=img]").count() >= 4 + 4  # four charts, a bar per provider
        expect(page.locator("#stat-total")).not_to_have_text("0")
        # Styled by the stylesheet (allowed by the CSP): the stat cards are laid out as a grid.
        assert page.locator(".stats").evaluate("e => getComputedStyle(e).display") == "grid"

        page.get_by_role("link", name="Feedback").click()
        page.get_by_label("User").fill("mallory")
        page.get_by_role("button", name="Filter").click()
        comment = page.locator(".comment")
        expect(comment).to_have_count(1)
        expect(comment).to_have_text('<script>alert(1)</script><img src=x onerror="alert(2)">')
        assert page.locator(".events script, .events img").count() == 0

        # A dead letter, retried by its button: the POST carries the page's CSRF token.
        with db.write(runtime(app).engine) as conn:
            pk = conn.execute(select(outbox.c.id).where(outbox.c.user_id == "mallory")).scalar_one()
            conn.execute(update(outbox).where(outbox.c.id == pk).values(status="failed", last_error="HTTP 500"))
        page.reload()
        page.locator("details summary").first.click()
        page.get_by_role("button", name="Retry").click()
        expect(page.get_by_role("status")).to_have_text("Moved 1 dead letter back to pending.")
        with db.read(runtime(app).engine) as conn:
            assert conn.execute(select(outbox.c.status).where(outbox.c.id == pk)).scalar_one() == "pending"

    assert dialogs == [] and violations == []


def test_dashboard_denied_to_other_addresses_in_the_browser(make_app, page: Page):
    app = make_app(FEEDBACK_DASHBOARD_CHECK=lambda request: False)

    with serving(app) as site:
        response = page.goto(site.url + "feedback/dashboard/")

    assert response is not None and response.status == 403
    expect(page.get_by_role("heading", name="403")).to_be_visible()


SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "screenshots" / "dashboard.png"


def test_the_dashboard_screenshot(make_app, browser: Browser, tmp_path):
    """A picture of the overview for the README (docs/screenshots/dashboard.png when FEEDBACK_UPDATE_SCREENSHOTS=1),
    from a store seeded with a few weeks of feedback."""
    app = make_app(FEEDBACK_DASHBOARD_CHECK="feedback_bridge.dashboard.access:localhost_only")
    now = datetime.now(timezone.utc)
    seed_store(runtime(app).engine, 3000, now=now, seed=5)
    context = browser.new_context(viewport={"width": 1200, "height": 1240}, color_scheme="light")
    try:
        with serving(app) as site:
            page = context.new_page()
            page.goto(site.url + "feedback/dashboard/?days=30")
            expect(page.get_by_role("heading", name="Delivery health")).to_be_visible()
            assert int(page.locator("#stat-total").inner_text().replace(",", "")) > 1000
            shot = tmp_path / "dashboard.png"
            page.screenshot(path=shot)
    finally:
        context.close()
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", data[16:24]) == (1200, 1240)
    assert 30_000 < len(data) < 3_000_000, len(data)
    if os.environ.get("FEEDBACK_UPDATE_SCREENSHOTS") == "1":
        shutil.copyfile(shot, SCREENSHOT)


def test_the_committed_dashboard_screenshot_is_a_png() -> None:
    data = SCREENSHOT.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", data[16:24]) == (1200, 1240)
