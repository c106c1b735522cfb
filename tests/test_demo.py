"""The bundled demo app and its command line."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone

import pytest
from flask import Flask

from feedback_bridge.__main__ import main
from feedback_bridge.demo import LOCAL_PROVIDERS, TRANSCRIPT, create_app, shutdown

TOKEN = re.compile(r'<feedback-widget token="([^"]+)"></feedback-widget>')


@pytest.fixture
def demo_app(tmp_path) -> Iterator[Flask]:
    app = create_app({"TESTING": True, "FEEDBACK_WORKER": False}, data_dir=tmp_path / "data")
    yield app
    shutdown(app)


def test_demo_page_has_a_working_widget_under_each_answer(demo_app: Flask, tmp_path) -> None:
    client = demo_app.test_client()
    page = client.get("/")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    tokens = TOKEN.findall(html)
    assert len(tokens) == len(TRANSCRIPT) == 3
    assert 'src="/feedback/widget.js"' in html
    assert 'href="/feedback/static/feedback_bridge/demo.css"' in html
    assert "&#34;offline&#34;" in html  # the canned text is escaped by Jinja, not marked safe
    assert (tmp_path / "data" / "feedback.sqlite3").is_file()

    for token in tokens:
        assert client.get("/feedback/state", query_string={"token": token}).get_json()["vote"] is None
    event = {"id": str(uuid.uuid4()), "type": "thumbs_up", "token": tokens[0],
             "occurred_at": datetime.now(timezone.utc).isoformat()}
    posted = client.post("/feedback/events", json={"events": [event]})
    assert posted.status_code == 200
    assert posted.get_json()["results"][0]["status"] == "accepted"
    assert client.get("/feedback/state", query_string={"token": tokens[0]}).get_json()["vote"] == "up"


def test_demo_page_reuses_its_messages_on_reload(demo_app: Flask) -> None:
    client = demo_app.test_client()
    first = TOKEN.findall(client.get("/").get_data(as_text=True))
    event = {"id": str(uuid.uuid4()), "type": "thumbs_down", "token": first[1]}
    assert client.post("/feedback/events", data=json.dumps({"events": [event]}),
                       content_type="text/plain").status_code == 200
    second = TOKEN.findall(client.get("/").get_data(as_text=True))
    assert client.get("/feedback/state", query_string={"token": second[1]}).get_json()["vote"] == "down"


def test_demo_defaults_can_be_overridden(tmp_path) -> None:
    app = create_app({"FEEDBACK_WORKER": False, "FEEDBACK_PROVIDERS": {}, "SECRET_KEY": "fixed"},
                     data_dir=tmp_path)
    try:
        runtime = app.extensions["feedback_bridge"]
        assert runtime.adapters == {}
        assert runtime.settings.settle_seconds == 2
        assert app.config["SECRET_KEY"] == "fixed"
    finally:
        shutdown(app)
    generated = create_app({"FEEDBACK_WORKER": False}, data_dir=tmp_path)
    try:
        assert len(generated.config["SECRET_KEY"]) >= 32
        assert sorted(generated.extensions["feedback_bridge"].adapters) == ["moveworks", "nebuly", "qbusiness",
                                                                              "qconnect"]
    finally:
        shutdown(generated)
    restarted = create_app({"FEEDBACK_WORKER": False}, data_dir=tmp_path, providers="log")
    try:
        assert restarted.config["SECRET_KEY"] == generated.config["SECRET_KEY"], "tokens survive a restart"
        assert sorted(restarted.extensions["feedback_bridge"].adapters) == ["log"]
        assert restarted.extensions[LOCAL_PROVIDERS] is None
    finally:
        shutdown(restarted)


def test_demo_delivers_to_all_four_emulators_without_cloud_credentials(tmp_path, monkeypatch) -> None:
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    for key in ("AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.setenv(key, str(tmp_path / "nonexistent"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    app = create_app({"FEEDBACK_WORKER": False, "FEEDBACK_SETTLE_SECONDS": 0}, data_dir=tmp_path / "data")
    try:
        client = app.test_client()
        tokens = TOKEN.findall(client.get("/").get_data(as_text=True))
        now = datetime.now(timezone.utc).isoformat()
        vote = {"id": str(uuid.uuid4()), "type": "thumbs_down", "token": tokens[0], "occurred_at": now,
                "reason": "NOT_COMPLETE", "comment": "Which extension?"}
        copy = {"id": str(uuid.uuid4()), "type": "copy_output", "token": tokens[1], "occurred_at": now,
                "text": "Open Northwind Connect"}
        assert client.post("/feedback/events", json={"events": [vote, copy]}).get_json()["accepted"] == 2
        app.extensions["feedback_bridge"].worker.drain()

        local = app.extensions[LOCAL_PROVIDERS]
        voted, copied = sorted(local.qbusiness.received, key=lambda c: "messageCopiedAt" in c.json())
        assert voted.json()["messageUsefulness"]["usefulness"] == "NOT_USEFUL"
        assert list(copied.json()) == ["messageCopiedAt"] and copied.query["userId"] == "demo-user"
        [qconnect] = local.qconnect.received  # the copy is not expressible in Q Connect
        assert qconnect.json()["contentFeedback"]["generativeContentFeedbackData"]["relevance"] == "NOT_HELPFUL"
        [moveworks] = local.moveworks.received
        assert moveworks.json()["additional_feedback"] == "Not complete — Which extension?"
        assert sorted(c.json()["feedback"]["slug"] for c in local.nebuly.received) == ["copy_output", "thumbs_down"]
        assert all(c.headers["authorization"].startswith(("AWS4-HMAC-SHA256", "Bearer"))
                   for e in local.emulators.values() for c in e.received)
    finally:
        shutdown(app)
    assert all(e._server is None for e in local.emulators.values()), "shutdown stops every emulator"


def test_demo_stylesheet_and_widget_are_served(demo_app: Flask) -> None:
    client = demo_app.test_client()
    css = client.get("/feedback/static/feedback_bridge/demo.css")
    assert css.status_code == 200
    assert css.mimetype == "text/css"
    widget = client.get("/feedback/widget.js")
    assert widget.status_code == 200
    assert b"class FeedbackWidgetElement extends HTMLElement" in widget.data


def test_main_help_exits_cleanly(capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["demo", "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert "--data-dir" in out and "--port" in out and "--host" in out and "--providers" in out


def test_main_needs_a_command(capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        main([])
    assert exited.value.code == 2

