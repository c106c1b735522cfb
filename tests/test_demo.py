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
from feedback_bridge.demo import TRANSCRIPT, create_app

TOKEN = re.compile(r'<feedback-widget token="([^"]+)"></feedback-widget>')


@pytest.fixture
def demo_app(tmp_path) -> Iterator[Flask]:
    app = create_app({"TESTING": True, "FEEDBACK_WORKER": False}, data_dir=tmp_path / "data")
    yield app
    app.extensions["feedback_bridge"].close()


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
        app.extensions["feedback_bridge"].close()
    generated = create_app({"FEEDBACK_WORKER": False}, data_dir=tmp_path)
    try:
        assert len(generated.config["SECRET_KEY"]) >= 32
        assert sorted(generated.extensions["feedback_bridge"].adapters) == ["log"]
    finally:
        generated.extensions["feedback_bridge"].close()
    restarted = create_app({"FEEDBACK_WORKER": False}, data_dir=tmp_path)
    try:
        assert restarted.config["SECRET_KEY"] == generated.config["SECRET_KEY"], "tokens survive a restart"
    finally:
        restarted.extensions["feedback_bridge"].close()


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
    assert "--data-dir" in out and "--port" in out and "--host" in out


def test_main_needs_a_command(capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        main([])
    assert exited.value.code == 2

