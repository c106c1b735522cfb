"""The bundled demo app and its command line (the chat in a browser: test_demo_browser.py)."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from feedback_bridge import db
from feedback_bridge.__main__ import build_parser, main
from feedback_bridge.demo import CSP, DASHBOARD_CHECK, LOCAL_PROVIDERS, create_app, seed, shutdown
from feedback_bridge.demo_answers import FALLBACKS, TOPICS, pick_answer, words
from feedback_bridge.exceptions import ConfigurationError
from feedback_bridge.schema import messages
from feedback_bridge.testing.local import LocalProviders
from support import event, outbox_rows, post_events, statements_run

TOKEN = re.compile(r'class="assistant-message" data-message-id="([^"]+)" data-feedback-token="([^"]+)"')
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
BASE62 = "[0-9A-Za-z]{21}"


@pytest.fixture
def demo_app(tmp_path) -> Iterator[Flask]:
    app = create_app({"TESTING": True, "FEEDBACK_WORKER": False, "FEEDBACK_SETTLE_SECONDS": 0,
                      "DEMO_WORD_DELAY": 0}, data_dir=tmp_path / "data")
    yield app
    shutdown(app)


def ask(client: FlaskClient, question: str) -> list[dict[str, Any]]:
    """POST /ask and return the streamed lines, parsed."""
    response = client.post("/ask", json={"question": question})
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "application/x-ndjson" and response.is_streamed
    return [json.loads(line) for line in response.get_data(as_text=True).splitlines()]


def turns(client: FlaskClient) -> list[tuple[str, str]]:
    """(message id, token) of each answer on the chat page."""
    return TOKEN.findall(client.get("/").get_data(as_text=True))


def test_the_chat_page_loads_the_widget_with_auto_attach_under_a_strict_csp(demo_app: Flask, tmp_path) -> None:
    page = demo_app.test_client().get("/")
    assert page.status_code == 200
    assert page.headers["Content-Security-Policy"] == CSP and "script-src 'self';" in CSP
    assert "unsafe-inline" not in CSP and page.headers["X-Content-Type-Options"] == "nosniff"
    html = page.get_data(as_text=True)
    scripts = re.findall(r"<script\b([^>]*)>", html)
    assert len(scripts) == 2 and all('src="/feedback/' in attrs for attrs in scripts), "no inline script"
    assert re.search(r'<script src="/feedback/widget\.js\?v=\w+" defer data-attach="\.assistant-message"\s+'
                     r'data-token-attribute="data-feedback-token" data-prompt="\.user-message" '
                     r'data-input="#chat-input"></script>', html)
    assert 'src="/feedback/static/feedback_bridge/demo.js" defer' in html
    assert 'href="/feedback/dashboard"' in html and ">New conversation<" in html and 'id="chat-input"' in html
    assert " style=" not in html, "no inline style either"
    assert html.count('class="suggestion"') == 4 and "How can we help today?" in html  # a new conversation
    assert demo_app.config["FEEDBACK_DASHBOARD_CHECK"] == DASHBOARD_CHECK
    assert (tmp_path / "data" / "feedback.sqlite3").is_file()
    # The blueprint's own responses are not the demo's to change.
    assert "Content-Security-Policy" not in demo_app.test_client().get("/feedback/health").headers


def test_an_answer_streams_word_by_word_and_is_registered_with_each_providers_ids(demo_app: Flask) -> None:
    client = demo_app.test_client()
    question = "How do I connect to the VPN from home?"
    response = client.post("/ask", json={"question": question})
    pieces = list(response.response)  # what the server yields, one write each: the words, then the token
    assert len(pieces) == len(words(pick_answer(question))) + 1 > 20
    *texts, last = [json.loads(piece) for piece in pieces]
    assert "".join(t["text"] for t in texts) == pick_answer(question) == TOPICS[1].answer
    assert set(last) == {"token", "message_id"} and UUID.fullmatch(last["message_id"])

    runtime = demo_app.extensions["feedback_bridge"]
    [(message_id, token)] = turns(client)
    assert message_id == last["message_id"]
    message, user_id = runtime.resolve_token(token)
    assert (message.input, message.output) == (question, TOPICS[1].answer) and user_id.startswith("demo-")
    refs = message.refs
    assert all(UUID.fullmatch(refs["qbusiness"][key]) for key in ("conversation_id", "message_id"))
    assert UUID.fullmatch(refs["qconnect"]["target_id"]) and refs["qconnect"]["target_type"] == "MESSAGE"
    moveworks = refs["moveworks"]
    for key, prefix in (("conversation_id", "conv"), ("response_id", "resp"), ("message_id", "msg")):
        assert re.fullmatch(f"{prefix}_{BASE62}", moveworks[key]), moveworks
    local = demo_app.extensions[LOCAL_PROVIDERS]
    known = local.moveworks.messages[(moveworks["conversation_id"], moveworks["response_id"],
                                      moveworks["message_id"])]
    assert (known.helpful_callback_id, known.unhelpful_callback_id) == (moveworks["helpful_callback_id"],
                                                                        moveworks["unhelpful_callback_id"])
    assert refs["nebuly"] == {} and (user_id, question, TOPICS[1].answer) in local.nebuly.interactions


def test_bad_questions_get_clear_errors(demo_app: Flask) -> None:
    client = demo_app.test_client()
    form = client.post("/ask", data={"question": "VPN?"})
    assert form.status_code == 415 and form.get_json() == {"errors": {"_schema": [
        "Send the question as application/json."]}}
    for body, field_error in (({}, "Missing data for required field."),
                              ({"question": ""}, "Length must be between 1 and 2000."),
                              ({"question": "x" * 2001}, "Length must be between 1 and 2000."),
                              ({"question": 42}, "Not a valid string."),
                              ({"question": " \n "}, "Ask a question."),
                              ({"question": "VPN?", "extra": 1}, None)):
        response = client.post("/ask", json=body)
        assert response.status_code == 400, body
        errors = response.get_json()["errors"]
        assert errors == ({"question": [field_error]} if field_error else {"extra": ["Unknown field."]})
    huge = client.post("/ask", data=json.dumps({"question": "x" * 70_000}), content_type="application/json")
    assert huge.status_code == 413
    assert huge.get_json() == {"errors": {"_schema": ["The request is larger than 64 KiB."]}}
    assert turns(client) == []


def test_the_conversation_persists_per_browser_until_a_new_one_is_started(demo_app: Flask) -> None:
    client = demo_app.test_client()
    ask(client, "I forgot my password and I'm locked out.")
    ask(client, "<script>alert(1)</script> my printer is offline")
    html = client.get("/").get_data(as_text=True)
    assert len(TOKEN.findall(html)) == 2 and 'id="chat-empty" class="chat-empty" hidden>' in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; my printer is offline" in html and "<script>alert" not in html
    assert html.index("locked out") < html.index("printer is offline"), "in the order asked"
    assert turns(demo_app.test_client()) == [], "another browser has its own conversation"

    first = turns(client)
    post_events(demo_app, event("thumbs_up", first[0][1]))
    assert turns(client) == first  # the same messages and tokens on reload...
    assert client.get("/feedback/state", query_string={"token": first[0][1]}).get_json()["vote"] == "up"

    started = client.post("/conversations")
    assert started.status_code == 303 and started.headers["Location"] == "/"
    assert turns(client) == []
    ask(client, "Thanks, that worked!")
    [(_, token)] = turns(client)
    runtime = demo_app.extensions["feedback_bridge"]
    new_message, user = runtime.resolve_token(token)
    old_message, same_user = runtime.resolve_token(first[0][1])
    assert user == same_user and new_message.conversation_id != old_message.conversation_id


def test_a_reload_signs_the_past_answers_tokens_without_writing(demo_app: Flask) -> None:
    client = demo_app.test_client()
    ask(client, "How do I connect to the VPN from home?")
    ask(client, "The printer says offline.")
    with statements_run(demo_app.extensions["feedback_bridge"].engine) as run:
        shown = turns(client)
    writes = [sql for sql, _ in run if not sql.lstrip().upper().startswith(
        ("SELECT", "BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE", "SET"))]
    assert len(shown) == 2 and writes == []
    runtime = demo_app.extensions["feedback_bridge"]
    assert [runtime.resolve_token(token)[0].input for _, token in shown] == [
        "How do I connect to the VPN from home?", "The printer says offline."]


def test_answers_from_an_earlier_run_get_ids_the_new_emulators_know(tmp_path) -> None:
    config = {"TESTING": True, "FEEDBACK_WORKER": False, "FEEDBACK_SETTLE_SECONDS": 0, "DEMO_WORD_DELAY": 0}
    first = create_app(config, data_dir=tmp_path)
    try:
        client = first.test_client()
        ask(client, "My mailbox is full.")
        cookie = client.get_cookie("feedback_demo")
        assert cookie is not None and cookie.http_only and cookie.same_site == "Lax"
    finally:
        shutdown(first)
    second = create_app(config, data_dir=tmp_path)
    try:
        client = second.test_client()
        client.set_cookie("feedback_demo", cookie.value)
        [(_, token)] = turns(client)
        post_events(second, event("thumbs_down", token, reason="NOT_HELPFUL"))
        second.extensions["feedback_bridge"].worker.drain()
        local = second.extensions[LOCAL_PROVIDERS]
        for emulator in local.emulators.values():
            emulator.wait_for(1)
        [moveworks] = local.moveworks.received
        [message] = local.moveworks.messages.values()
        assert moveworks.json()["callback_id"] == message.unhelpful_callback_id
    finally:
        shutdown(second)


def test_the_demo_delivers_to_all_four_emulators_without_cloud_credentials(tmp_path, monkeypatch) -> None:
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    for key in ("AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.setenv(key, str(tmp_path / "nonexistent"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    app = create_app({"FEEDBACK_WORKER": False, "FEEDBACK_SETTLE_SECONDS": 0, "DEMO_WORD_DELAY": 0},
                     data_dir=tmp_path / "data")
    try:
        client = app.test_client()
        ask(client, "Nobody can hear me in Teams meetings.")
        ask(client, "How do I get on the office Wi-Fi?")
        [(_, first), (_, second)] = turns(client)
        post_events(app, event("thumbs_down", first, reason="NOT_COMPLETE", comment="Which headset?"),
                    event("copy_output", second, text="Northwind-Guest"))
        app.extensions["feedback_bridge"].worker.drain()

        local = app.extensions[LOCAL_PROVIDERS]
        user_id = app.extensions["feedback_bridge"].resolve_token(first)[1]
        voted, copied = sorted(local.qbusiness.received, key=lambda c: "messageCopiedAt" in c.json())
        assert voted.json()["messageUsefulness"]["usefulness"] == "NOT_USEFUL"
        assert list(copied.json()) == ["messageCopiedAt"] and copied.query["userId"] == user_id
        [qconnect] = local.qconnect.received  # the copy is not expressible in Q Connect
        assert qconnect.json()["contentFeedback"]["generativeContentFeedbackData"]["relevance"] == "NOT_HELPFUL"
        [moveworks] = local.moveworks.received
        assert moveworks.json()["additional_feedback"] == "Not complete — Which headset?"
        assert sorted(c.json()["feedback"]["slug"] for c in local.nebuly.received) == ["copy_output", "thumbs_down"]
        assert all(c.headers["authorization"].startswith(("AWS4-HMAC-SHA256", "Bearer"))
                   for e in local.emulators.values() for c in e.received)
    finally:
        shutdown(app)
    assert all(e._server is None for e in local.emulators.values()), "shutdown stops every emulator"


def test_seeded_deliveries_left_pending_are_delivered_to_the_emulators(tmp_path) -> None:
    app = create_app({"FEEDBACK_WORKER": False}, data_dir=tmp_path / "data")
    try:
        assert seed(app, 5000) == 5000  # the seed leaves its last hour of activity pending
        rows = outbox_rows(app)
        pending = {r["id"]: r["provider"] for r in rows if r["status"] == "pending"}
        failed = {r["id"] for r in rows if r["status"] == "failed"}
        assert pending and failed

        app.extensions["feedback_bridge"].worker.drain(datetime.now(timezone.utc) + timedelta(days=1))

        after = {r["id"]: r for r in outbox_rows(app)}
        assert {pk: after[pk]["status"] for pk in pending} == dict.fromkeys(pending, "delivered"), [
            after[pk]["last_error"] for pk in pending if after[pk]["status"] != "delivered"]
        assert {pk for pk, r in after.items() if r["status"] == "failed"} == failed  # only the seed's own
        local = app.extensions[LOCAL_PROVIDERS]
        for name, emulator in local.emulators.items():
            assert len(emulator.received) == sum(p == name for p in pending.values())
        # Every seeded message has ids the emulators know, whichever of its deliveries was left pending.
        with db.read(app.extensions["feedback_bridge"].engine) as conn:
            refs = [r["moveworks"] for r in conn.execute(select(messages.c.refs)).scalars()]
        known = {m.refs()["helpful_callback_id"] for m in local.moveworks.messages.values()}
        assert len(refs) > 1000 and {r["helpful_callback_id"] for r in refs} <= known
    finally:
        shutdown(app)


def test_real_providers_come_from_the_environment_with_the_refs_given_or_none(tmp_path, monkeypatch) -> None:
    with LocalProviders() as real:  # stand-ins for real accounts, configured only through the environment
        config = real.providers_config()
        monkeypatch.setenv("FEEDBACK_PROVIDERS", json.dumps(config))
        given = real.new_message_refs("anyone", "q", "a")  # one "real" message's ids...
        monkeypatch.setenv("FEEDBACK_DEMO_REFS", json.dumps({"qbusiness": given["qbusiness"],
                                                             "moveworks": given["moveworks"]}))  # ...not Q Connect's
        app = create_app({"FEEDBACK_WORKER": False, "FEEDBACK_SETTLE_SECONDS": 0, "DEMO_WORD_DELAY": 0},
                         data_dir=tmp_path, providers="real")
        try:
            assert app.extensions[LOCAL_PROVIDERS] is None, "no emulators of its own"
            assert sorted(app.extensions["feedback_bridge"].adapters) == sorted(config)
            client = app.test_client()
            ask(client, "How do I get access to Salesforce?")
            [(_, token)] = turns(client)
            assert "delivered to moveworks, nebuly, qbusiness, qconnect." in client.get("/").get_data(as_text=True)
            post_events(app, event("thumbs_up", token))
            app.extensions["feedback_bridge"].worker.drain()
            [qbusiness] = real.qbusiness.wait_for(1)
            assert qbusiness.path.endswith(f"/conversations/{given['qbusiness']['conversation_id']}/messages/"
                                           f"{given['qbusiness']['message_id']}/feedback")
            [moveworks] = real.moveworks.wait_for(1)
            assert moveworks.json()["callback_id"] == given["moveworks"]["helpful_callback_id"]
            [nebuly] = real.nebuly.wait_for(1)  # Nebuly needs no ids: it finds the interaction by its texts
            assert nebuly.json()["metadata"]["output"] == pick_answer("Salesforce")
            assert real.qconnect.calls == []
            [skipped] = outbox_rows(app, "qconnect")
            assert skipped["status"] == "skipped" and "without" in skipped["last_error"], skipped
        finally:
            shutdown(app)


def test_real_providers_need_settings_and_refs_that_make_sense(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("FEEDBACK_PROVIDERS", raising=False)
    with pytest.raises(ConfigurationError, match="--providers real needs FEEDBACK_PROVIDERS"):
        create_app({"FEEDBACK_WORKER": False}, data_dir=tmp_path, providers="real")
    monkeypatch.setenv("FEEDBACK_PROVIDERS", '{"log": {}}')
    for refs, message in (('{"qbusiness": "abc"}', "maps provider names"), ("{not json", "is not JSON")):
        monkeypatch.setenv("FEEDBACK_DEMO_REFS", refs)
        with pytest.raises(ConfigurationError, match=message):
            create_app({"FEEDBACK_WORKER": False}, data_dir=tmp_path, providers="real")
    with pytest.raises(ValueError, match="providers must be one of"):
        create_app(data_dir=tmp_path, providers="cloud")


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
    def admins_only(request) -> bool:
        return False

    restarted = create_app({"FEEDBACK_WORKER": False, "FEEDBACK_DASHBOARD_CHECK": admins_only},
                           data_dir=tmp_path, providers="log")
    try:
        assert restarted.config["SECRET_KEY"] == generated.config["SECRET_KEY"], "tokens survive a restart"
        assert sorted(restarted.extensions["feedback_bridge"].adapters) == ["log"]
        assert restarted.extensions[LOCAL_PROVIDERS] is None
        assert restarted.extensions["feedback_bridge"].settings.dashboard_check is admins_only
        assert restarted.test_client().get("/feedback/dashboard/").status_code == 403
    finally:
        shutdown(restarted)


def test_canned_answers_are_varied_and_picked_by_keyword() -> None:
    assert 15 <= len(TOPICS) <= 25 and len({topic.answer for topic in TOPICS}) == len(TOPICS)
    for topic in TOPICS:
        assert pick_answer(topic.example) == topic.answer, topic.example
    assert pick_answer("my PRINTER jammed") == TOPICS[2].answer  # any case, a word's start
    assert pick_answer("I got a strange email, is it phishing?") == TOPICS[8].answer  # most keywords win
    unknown = pick_answer("What is the meaning of life?")
    assert unknown in FALLBACKS and pick_answer("What is the meaning of life?") == unknown
    assert len({pick_answer(f"Question number {n} about nothing") for n in range(20)}) > 1, "fallbacks vary"
    assert words("Restart it.\nThen sign in.") == ["Restart ", "it.\n", "Then ", "sign ", "in."]


def test_main_help_documents_the_options(capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["demo", "--help"])
    assert exited.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    for text in ("--data-dir", "--port", "--host", "--providers {emulators,real,log}", "--seed N",
                 "FEEDBACK_PROVIDERS", "FEEDBACK_DEMO_REFS"):
        assert text in out


def test_seed_takes_a_positive_count(capsys) -> None:
    parser = build_parser()
    assert parser.parse_args(["demo"]).seed is None
    assert parser.parse_args(["demo", "--seed", "5000"]).seed == 5000
    for bad, message in (("0", "0 is not 1 or more"), ("-3", "-3 is not 1 or more"),
                         ("many", "'many' is not a whole number")):
        with pytest.raises(SystemExit) as exited:
            parser.parse_args(["demo", "--seed", bad])
        assert exited.value.code == 2 and message in capsys.readouterr().err


def test_main_explains_a_missing_setting_without_a_traceback(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.delenv("FEEDBACK_PROVIDERS", raising=False)
    with pytest.raises(SystemExit) as exited:
        main(["demo", "--providers", "real", "--data-dir", str(tmp_path), "--port", "0"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "error: --providers real needs FEEDBACK_PROVIDERS" in err and "Traceback" not in err


def test_main_needs_a_command(capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        main([])
    assert exited.value.code == 2


def test_message_ids_are_fresh_per_answer(demo_app: Flask) -> None:
    client = demo_app.test_client()
    ids = {ask(client, "Hi!")[-1]["message_id"] for _ in range(3)}
    assert len(ids) == 3 and all(uuid.UUID(i).version == 4 for i in ids)
