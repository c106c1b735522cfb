"""Who gets the dashboard, and the headers and escaping every dashboard page carries."""

from __future__ import annotations

import base64
import re

import pytest

from conftest import register
from feedback_bridge.exceptions import ConfigurationError
from support import event, post_events

BASE = "/feedback/dashboard"


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_off_by_default(make_app):
    app = make_app()

    assert app.test_client().get(f"{BASE}/").status_code == 404
    assert app.test_client().get(f"{BASE}/feedback").status_code == 404


def test_basic_auth(make_app):
    app = make_app(FEEDBACK_DASHBOARD_USERS={"admin": "correct horse"})
    c = app.test_client()

    missing = c.get(f"{BASE}/")
    wrong = c.get(f"{BASE}/", headers=basic("admin", "battery staple"))
    unknown = c.get(f"{BASE}/", headers=basic("root", "correct horse"))
    right = c.get(f"{BASE}/", headers=basic("admin", "correct horse"))

    for response in (missing, wrong, unknown):
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"].startswith('Basic realm="feedback-bridge"')
    assert right.status_code == 200 and "Overview" in right.get_data(as_text=True)


def test_callable_check_gets_the_request(make_app):
    seen = []

    def only_with_header(request) -> bool:
        seen.append(request.path)
        return request.headers.get("X-Admin") == "yes"

    app = make_app(FEEDBACK_DASHBOARD_CHECK=only_with_header)
    c = app.test_client()

    assert c.get(f"{BASE}/feedback").status_code == 403
    assert c.get(f"{BASE}/feedback", headers={"X-Admin": "yes"}).status_code == 200
    assert seen == [f"{BASE}/feedback"] * 2


def test_users_and_check_together_need_both(make_app):
    app = make_app(FEEDBACK_DASHBOARD_USERS={"admin": "pw"}, FEEDBACK_DASHBOARD_CHECK=lambda request: False)

    assert app.test_client().get(f"{BASE}/").status_code == 401
    assert app.test_client().get(f"{BASE}/", headers=basic("admin", "pw")).status_code == 403


def test_import_path_check_localhost_only(make_app):
    app = make_app(FEEDBACK_DASHBOARD_CHECK="feedback_bridge.dashboard.access:localhost_only")
    c = app.test_client()

    assert c.get(f"{BASE}/").status_code == 200  # the test client comes from 127.0.0.1
    assert c.get(f"{BASE}/", environ_base={"REMOTE_ADDR": "::1"}).status_code == 200
    assert c.get(f"{BASE}/", environ_base={"REMOTE_ADDR": "127.8.9.10"}).status_code == 200
    for outsider in ("10.0.0.7", "192.168.1.2", "2001:db8::1", ""):
        assert c.get(f"{BASE}/", environ_base={"REMOTE_ADDR": outsider}).status_code == 403


@pytest.mark.parametrize("bad", ["feedback_bridge.nowhere:check", "feedback_bridge.dashboard.access:REALM", 42])
def test_a_bad_check_fails_at_init(make_app, bad):
    with pytest.raises(ConfigurationError, match="FEEDBACK_DASHBOARD_CHECK"):
        make_app(FEEDBACK_DASHBOARD_CHECK=bad)


@pytest.mark.parametrize("path", ["/", "/feedback", "/feedback?rating=9", "/export?format=csv"])
@pytest.mark.parametrize("authorised", [True, False])
def test_every_dashboard_response_carries_the_security_headers(make_app, path, authorised):
    app = make_app(FEEDBACK_DASHBOARD_USERS={"admin": "pw"})

    response = app.test_client().get(BASE + path, headers=basic("admin", "pw") if authorised else {})

    assert response.status_code == (401 if not authorised else 400 if "rating=9" in path else 200)
    assert response.headers["Content-Security-Policy"] == (
        "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; "
        "base-uri 'none'")
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["Cache-Control"] == "no-store"


def test_pages_hold_no_inline_script_or_style(make_app):
    app = make_app(FEEDBACK_DASHBOARD_USERS={"admin": "pw"})
    token = register(app)
    post_events(app, event("thumbs_up", token))
    for path in ("/", "/feedback"):
        page = app.test_client().get(BASE + path, headers=basic("admin", "pw")).get_data(as_text=True).lower()
        assert "<script" not in page and "style=" not in page and "<style" not in page
        assert not re.search(r"\son[a-z]+\s*=", page)  # no event handler attributes


def test_user_written_text_is_escaped(make_app):
    app = make_app(FEEDBACK_DASHBOARD_USERS={"admin": "pw"})
    token = register(app, user_id='<img src=x onerror="alert(2)">',
                     output="Answer with <b>markup</b> & <script>alert(3)</script>")
    post_events(app, event("thumbs_down", token, reason="OTHER", comment="<script>alert(1)</script>"))

    page = app.test_client().get(f"{BASE}/feedback", headers=basic("admin", "pw")).get_data(as_text=True)

    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;script&gt;alert(3)&lt;/script&gt;" in page and "&lt;b&gt;markup&lt;/b&gt; &amp;" in page
    assert "&lt;img src=x onerror=&#34;alert(2)&#34;&gt;" in page
    assert "<script" not in page and "<img" not in page and "<b>" not in page
