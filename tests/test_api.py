"""The event API: envelope, per-event validation, outcomes, state, idempotency, static endpoints, CORS."""

from __future__ import annotations

import json
import threading
from collections import Counter
from datetime import datetime, timezone
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import given, settings
from hypothesis import strategies as st
from openapi_spec_validator import validate as validate_openapi
from sqlalchemy import create_engine, func, select

from conftest import register, runtime
from feedback_bridge import widget_asset
from feedback_bridge.models import REASONS, EventType
from feedback_bridge.schema import events, outbox, states
from feedback_bridge.schemas import MAX_COMMENT, MAX_EVENTS, MAX_TEXT
from support import RecordingAdapter, event, new_id, statements_run

EVENTS = "/feedback/events"
STATE = "/feedback/state"


def post(client: FlaskClient, *evs: Any, **kwargs: Any):
    return client.post(EVENTS, json={"events": list(evs)}, **kwargs)


def state(client: FlaskClient, token: str) -> dict[str, Any]:
    response = client.get(STATE, query_string={"token": token})
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def stored_ids(app: Flask) -> list[str]:
    with runtime(app).engine.connect() as conn:
        return conn.execute(select(events.c.event_id).order_by(events.c.id)).scalars().all()


@pytest.fixture
def app(make_app) -> Flask:
    return make_app()


@pytest.fixture
def token(app: Flask) -> str:
    return register(app)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


# -- the envelope ------------------------------------------------------------------------------------


@pytest.mark.parametrize("content_type", ["application/json", "text/plain", "text/plain;charset=UTF-8",
                                          "application/json; charset=utf-8"])
def test_json_and_text_plain_bodies_are_accepted(app, token, client, content_type: str) -> None:
    ev = event("thumbs_up", token)
    response = client.post(EVENTS, data=json.dumps({"events": [ev]}), content_type=content_type)
    assert response.status_code == 200
    body = response.get_json()
    assert body["results"] == [{"id": ev["id"], "status": "accepted"}]
    assert (body["accepted"], body["duplicate"], body["rejected"]) == (1, 0, 0)
    assert "errors" not in body
    assert stored_ids(app) == [ev["id"]]


@pytest.mark.parametrize("content_type", [None, "application/x-www-form-urlencoded", "multipart/form-data",
                                          "application/xml", "text/html", "application/jsonx"])
def test_other_content_types_are_415(app, token, client, content_type: str | None) -> None:
    data = json.dumps({"events": [event("thumbs_up", token)]})
    response = client.post(EVENTS, data=data, content_type=content_type)
    assert response.status_code == 415
    assert response.is_json and "errors" in response.get_json()
    assert stored_ids(app) == []


def _many(n: int) -> list[dict[str, Any]]:
    return [event("retract", "t") for _ in range(n)]


@pytest.mark.parametrize("body", [
    b"not json",
    b"",
    b"{\"events\": [",
    b"\xff\xfe\xfa",
    b"[1, 2]",
    b"\"events\"",
    b"null",
    b"42",
    b"{}",
    b"{\"events\": []}",
    b"{\"events\": null}",
    b"{\"events\": {\"0\": {}}}",
    b"{\"events\": \"abc\"}",
    json.dumps({"events": _many(MAX_EVENTS + 1)}).encode(),
    json.dumps({"events": _many(1), "extra": 1}).encode(),
    json.dumps({"Events": _many(1)}).encode(),
    b"[" * 100_000,
    b"{\"events\": " + b"[" * 50_000 + b"]" * 50_000 + b"}",
], ids=lambda b: repr(b[:30]))
def test_malformed_envelope_is_400(app, client, body: bytes) -> None:
    response = client.post(EVENTS, data=body, content_type="application/json")
    assert response.status_code == 400
    payload = response.get_json()
    assert isinstance(payload["errors"], dict) and payload["errors"]
    assert "results" not in payload


def test_envelope_errors_name_the_problem(client) -> None:
    too_many = client.post(EVENTS, json={"events": _many(MAX_EVENTS + 1)}).get_json()
    assert "events" in too_many["errors"]
    extra = client.post(EVENTS, json={"events": _many(1), "extra": 1}).get_json()
    assert "extra" in extra["errors"]
    missing = client.post(EVENTS, json={}).get_json()
    assert "events" in missing["errors"]


def test_a_full_batch_of_max_events_is_accepted(app, token, client) -> None:
    batch = [event("copy_output", token, text=f"copy {i}") for i in range(MAX_EVENTS)]
    response = post(client, *batch)
    assert response.status_code == 200
    assert response.get_json()["accepted"] == MAX_EVENTS
    assert len(stored_ids(app)) == MAX_EVENTS


def test_oversize_body_is_413_json(make_app) -> None:
    app = make_app(FEEDBACK_MAX_CONTENT_LENGTH=2048)
    token = register(app)
    client = app.test_client()
    big = event("copy_output", token, text="x" * 3000)
    response = client.post(EVENTS, data=json.dumps({"events": [big]}), content_type="application/json")
    assert response.status_code == 413
    assert response.is_json and "errors" in response.get_json()
    assert stored_ids(app) == []
    small = event("copy_output", token, text="x" * 100)
    assert post(client, small).status_code == 200


@pytest.mark.parametrize("method", ["get", "put", "delete", "patch"])
def test_other_methods_on_events_are_405_json(client, method: str) -> None:
    response = getattr(client, method)(EVENTS)
    assert response.status_code == 405
    assert response.is_json and "errors" in response.get_json()
    assert "POST" in response.headers["Allow"]


def test_unknown_path_under_prefix_is_404_json_but_the_host_app_keeps_its_own_errors(client) -> None:
    response = client.get("/feedback/nope")
    assert response.status_code == 404
    assert response.is_json and "errors" in response.get_json()
    host = client.get("/elsewhere")
    assert host.status_code == 404
    assert not host.is_json


# -- per-event outcomes ------------------------------------------------------------------------------


def test_one_bad_event_never_loses_the_good_ones(app, token, client) -> None:
    good_vote = event("thumbs_up", token)
    bad_value = event("thumbs_down", token, value=3)
    good_copy = event("copy_output", token, text="Open Settings")
    not_an_object = 5
    unknown_type = event("like", token)
    response = post(client, good_vote, bad_value, good_copy, not_an_object, unknown_type)
    assert response.status_code == 200
    body = response.get_json()
    assert [r["status"] for r in body["results"]] == ["accepted", "rejected", "accepted", "rejected", "rejected"]
    assert [r["id"] for r in body["results"]] == [good_vote["id"], bad_value["id"], good_copy["id"], None,
                                                   unknown_type["id"]]
    assert (body["accepted"], body["duplicate"], body["rejected"]) == (2, 0, 3)
    assert body["results"][1]["errors"] == {"value": ["Only a rating has a value."]}
    assert body["results"][1]["code"] == "invalid"
    assert "type" in body["results"][4]["errors"]
    assert set(body["errors"]["events"]) == {"1", "3", "4"}
    assert stored_ids(app) == [good_vote["id"], good_copy["id"]]
    assert state(client, token) == {"vote": "up", "rating": None, "reason": None, "comment": None, "copied": True}


@pytest.mark.parametrize("bad", [None, False, [], "thumbs_up"], ids=["null", "false", "list", "string"])
def test_an_event_that_is_not_an_object_is_rejected_alone(app, token, client, bad: Any) -> None:
    good = event("thumbs_up", token)
    response = post(client, good, bad)
    assert response.status_code == 200
    body = response.get_json()
    assert [r["status"] for r in body["results"]] == ["accepted", "rejected"]
    assert body["results"][1] == {"id": None, "status": "rejected", "code": "invalid",
                                  "errors": {"_schema": ["Each event must be a JSON object."]}}
    assert stored_ids(app) == [good["id"]]


def test_duplicate_in_one_batch_is_stored_once(app, token, client) -> None:
    ev = event("copy_output", token, text="hello")
    response = post(client, ev, ev)
    assert response.status_code == 200
    body = response.get_json()
    assert [r["status"] for r in body["results"]] == ["accepted", "duplicate"]
    assert (body["accepted"], body["duplicate"]) == (1, 1)
    assert stored_ids(app) == [ev["id"]]
    with runtime(app).engine.connect() as conn:
        assert conn.execute(select(states.c.copy_count)).scalar_one() == 1


def test_resending_an_event_is_a_duplicate_and_changes_nothing(app, token, client) -> None:
    ev = event("copy_output", token, text="hello")
    assert post(client, ev).get_json()["accepted"] == 1
    again = post(client, ev)
    assert again.status_code == 200
    assert again.get_json()["results"] == [{"id": ev["id"], "status": "duplicate"}]
    assert stored_ids(app) == [ev["id"]]
    with runtime(app).engine.connect() as conn:
        assert conn.execute(select(states.c.copy_count)).scalar_one() == 1


def test_all_rejected_for_validation_is_422(app, token, client) -> None:
    response = post(client, event("rating", token), event("thumbs_up", token, text="x"))
    assert response.status_code == 422
    body = response.get_json()
    assert body["rejected"] == 2 and body["accepted"] == 0
    assert body["results"][0]["errors"] == {"value": ["Required for a rating."]}
    assert stored_ids(app) == []


def test_all_rejected_for_tokens_is_401(app, token, client) -> None:
    response = post(client, event("thumbs_up", "bogus"), event("thumbs_down", None))
    assert response.status_code == 401
    assert [r["code"] for r in response.get_json()["results"]] == ["token_invalid", "token_missing"]


def test_a_batch_of_duplicates_only_is_200(app, token, client) -> None:
    ev = event("thumbs_up", token)
    post(client, ev)
    response = post(client, ev)
    assert response.status_code == 200
    assert response.get_json()["duplicate"] == 1


def test_unknown_fields_are_rejected(app, token, client) -> None:
    response = post(client, event("thumbs_up", token, score=5))
    assert response.status_code == 422
    assert "score" in response.get_json()["results"][0]["errors"]


# -- field limits ------------------------------------------------------------------------------------


def check(client: FlaskClient, fields: dict[str, Any], *, ok: bool, field: str | None = None) -> dict[str, Any]:
    response = post(client, fields)
    result = response.get_json()["results"][0]
    if ok:
        assert response.status_code == 200, result
        assert result["status"] == "accepted", result
    else:
        assert response.status_code == 422, result
        assert result["status"] == "rejected"
        assert result["code"] == "invalid"
        if field is not None:
            assert field in result["errors"], result
            assert all(isinstance(m, str) for m in result["errors"][field])
    return result


@pytest.mark.parametrize(("event_id", "ok"), [
    ("abcdefgh", True),  # 8, the minimum
    ("a" * 64, True),  # the maximum
    ("0b6c2b46-7d0e-4f5b-9d2f-6b1e0c3a9f11", True),
    ("A1._:-zz", True),
    ("abcdefg", False),
    ("a" * 65, False),
    ("-abcdefgh", False),
    (".abcdefgh", False),
    ("abc defgh", False),
    ("abcdefgh/", False),
    ("abcdefgh\n", False),
    ("ébcdefgh", False),
    ("", False),
    (12345678, False),
    (None, False),
])
def test_event_id(token, client, event_id: Any, ok: bool) -> None:
    check(client, {"id": event_id, "type": "thumbs_up", "token": token}, ok=ok, field="id")


def test_event_id_is_required(token, client) -> None:
    check(client, {"type": "thumbs_up", "token": token}, ok=False, field="id")


@pytest.mark.parametrize("kind", ["like", "THUMBS_UP", "", None, 1, "vote"])
def test_type_must_be_one_of_seven(token, client, kind: Any) -> None:
    check(client, {"id": new_id(), "type": kind, "token": token}, ok=False, field="type")


def test_type_is_required(token, client) -> None:
    check(client, {"id": new_id(), "token": token}, ok=False, field="type")


@pytest.mark.parametrize("value", [1, 2, 3, 4, 5])
def test_rating_values_in_range(token, client, value: int) -> None:
    check(client, event("rating", token, value=value), ok=True)
    assert state(client, token)["rating"] == value


@pytest.mark.parametrize("value", [0, 6, -1, "5", 5.5, 5.0, True, False, None, [5], {"v": 5}])
def test_rating_values_rejected(token, client, value: Any) -> None:
    check(client, event("rating", token, value=value), ok=False, field="value")


@pytest.mark.parametrize("kind", [t.value for t in EventType if t is not EventType.RATING])
def test_value_only_on_rating(token, client, kind: str) -> None:
    extra = {"text": "t"} if kind in ("copy_output", "copy_input", "paste") else {}
    check(client, event(kind, token, value=3, **extra), ok=False, field="value")


def test_rating_needs_a_value(token, client) -> None:
    check(client, event("rating", token), ok=False, field="value")


@pytest.mark.parametrize("reason", REASONS)
@pytest.mark.parametrize("kind", ["thumbs_up", "thumbs_down", "rating"])
def test_every_reason_on_every_vote_type(token, client, reason: str, kind: str) -> None:
    extra = {"value": 2} if kind == "rating" else {}
    check(client, event(kind, token, reason=reason, **extra), ok=True)
    assert state(client, token)["reason"] == reason


def test_there_are_twelve_reasons() -> None:
    assert len(set(REASONS)) == 12


@pytest.mark.parametrize("reason", ["helpful", "NOT_USEFUL", "", "OTHER ", 3, None])
def test_unknown_reason_rejected(token, client, reason: Any) -> None:
    check(client, event("thumbs_down", token, reason=reason), ok=False, field="reason")


@pytest.mark.parametrize("kind", ["copy_output", "copy_input", "paste", "retract"])
@pytest.mark.parametrize("name", ["reason", "comment"])
def test_reason_and_comment_only_on_votes(token, client, kind: str, name: str) -> None:
    extra = {"text": "t"} if kind != "retract" else {}
    value = "HELPFUL" if name == "reason" else "nice"
    check(client, event(kind, token, **{name: value}, **extra), ok=False, field=name)


@pytest.mark.parametrize(("comment", "ok"), [
    ("x" * MAX_COMMENT, True),
    ("x" * (MAX_COMMENT + 1), False),
    ("", True),
    ("line one\nline two\tindented", True),
    ("ünïcödé and emoji \U0001f600", True),
    ("carriage\rreturn", False),
    ("nul\x00byte", False),
    ("bell\x07", False),
    ("escape\x1b[31m", False),
    ("delete\x7f", False),
    ("c1 control\x85", False),
    ("lone \ud800 surrogate", False),
    (42, False),
])
def test_comment_limits(token, client, comment: Any, ok: bool) -> None:
    check(client, event("thumbs_down", token, comment=comment), ok=ok, field="comment")
    if ok:
        assert state(client, token)["comment"] == comment


@pytest.mark.parametrize("kind", ["copy_output", "copy_input", "paste"])
def test_text_is_required_for_copies_and_pastes(token, client, kind: str) -> None:
    check(client, event(kind, token), ok=False, field="text")
    check(client, event(kind, token, text=""), ok=False, field="text")
    check(client, event(kind, token, text="x" * (MAX_TEXT + 1)), ok=False, field="text")
    check(client, event(kind, token, text="a\x00b"), ok=False, field="text")
    check(client, event(kind, token, text="\udfff"), ok=False, field="text")
    check(client, event(kind, token, text="x"), ok=True)
    check(client, event(kind, token, text="x" * MAX_TEXT), ok=True)
    check(client, event(kind, token, text="tabs\tand\nnewlines\r\n"), ok=True)


@pytest.mark.parametrize("bad", ["a\x00b", "\ud800", "tail \udfff"])
def test_text_no_database_can_store_is_rejected_on_every_backend(make_app, database_url: str, bad: str) -> None:
    app = make_app(FEEDBACK_DATABASE_URL=database_url, FEEDBACK_ALLOW_UNSIGNED=True)
    token = register(app, conversation_id="c", message_id="m", user_id="u")
    client = app.test_client()
    check(client, event("paste", token, text=bad), ok=False, field="text")
    check(client, event("thumbs_up", token, comment=bad), ok=False, field="comment")
    check(client, event("thumbs_up", None, conversation_id=bad, message_id="m", user_id="u"), ok=False,
          field="conversation_id")
    check(client, event("thumbs_up", None, conversation_id="c", message_id="m", user_id=bad), ok=False,
          field="user_id")
    check(client, event("paste", token, text="fine \U0001f600"), ok=True)
    assert len(stored_ids(app)) == 1


@pytest.mark.parametrize("kind", ["thumbs_up", "thumbs_down", "retract"])
def test_text_only_on_copies_and_pastes(token, client, kind: str) -> None:
    check(client, event(kind, token, text="x"), ok=False, field="text")


def test_rating_with_text_is_rejected(token, client) -> None:
    check(client, event("rating", token, value=3, text="x"), ok=False, field="text")


@pytest.mark.parametrize(("occurred_at", "expected"), [
    ("2025-01-31T09:30:00Z", datetime(2025, 1, 31, 9, 30, tzinfo=timezone.utc)),
    ("2025-01-31T09:30:00+05:30", datetime(2025, 1, 31, 4, 0, tzinfo=timezone.utc)),
    ("2025-01-31T09:30:00-08:00", datetime(2025, 1, 31, 17, 30, tzinfo=timezone.utc)),
    ("2025-01-31t09:30:00z", datetime(2025, 1, 31, 9, 30, tzinfo=timezone.utc)),
    ("2025-01-31T09:30:00.250Z", datetime(2025, 1, 31, 9, 30, 0, 250_000, tzinfo=timezone.utc)),
])
def test_occurred_at_rfc3339_is_stored_in_utc(app, token, client, occurred_at: str, expected: datetime) -> None:
    ev = event("thumbs_up", token, occurred_at=occurred_at)
    check(client, ev, ok=True)
    with runtime(app).engine.connect() as conn:
        stored = conn.execute(select(events.c.occurred_at).where(events.c.event_id == ev["id"])).scalar_one()
    assert stored == expected


@pytest.mark.parametrize("occurred_at", [
    "2025-01-31T09:30:00",  # naive
    "2025-01-31",
    "09:30:00Z",
    "20250131T093000Z",  # ISO 8601 basic format, not RFC 3339
    "2025-W05-5T09:30:00Z",  # ISO week date
    "2025-01-31 09:30:00Z",
    "2025-01-31T09:30Z",
    "2025-13-01T00:00:00Z",
    "2025-02-30T00:00:00Z",
    "2025-01-31T25:00:00Z",
    "2025-01-31T09:30:00+25:00",
    "0001-01-01T00:00:00+01:00",  # before year 1 in UTC
    "9999-12-31T23:59:59-01:00",  # after year 9999 in UTC
    "yesterday",
    "",
    1738315800,
    None,
])
def test_occurred_at_rejected(token, client, occurred_at: Any) -> None:
    check(client, event("thumbs_up", token, occurred_at=occurred_at), ok=False, field="occurred_at")


def test_occurred_at_defaults_to_receipt_time(app, token, client) -> None:
    before = datetime.now(timezone.utc)
    ev = event("thumbs_up", token)
    check(client, ev, ok=True)
    after = datetime.now(timezone.utc)
    with runtime(app).engine.connect() as conn:
        stored = conn.execute(select(events.c.occurred_at).where(events.c.event_id == ev["id"])).scalar_one()
    assert before <= stored <= after


# -- amendments --------------------------------------------------------------------------------------


def test_amendment_adds_reason_and_comment_to_the_current_vote(app, token, client) -> None:
    vote = event("thumbs_down", token)
    check(client, vote, ok=True)
    check(client, event("thumbs_down", token, amends=vote["id"], reason="NOT_COMPLETE", comment="Too short"),
          ok=True)
    assert state(client, token) == {"vote": "down", "rating": None, "reason": "NOT_COMPLETE",
                                    "comment": "Too short", "copied": False}


def test_amendment_in_the_same_batch_as_its_vote(app, token, client) -> None:
    vote = event("thumbs_up", token)
    amend = event("thumbs_up", token, amends=vote["id"], reason="HELPFUL")
    response = post(client, vote, amend)
    assert [r["status"] for r in response.get_json()["results"]] == ["accepted", "accepted"]
    assert state(client, token)["reason"] == "HELPFUL"


def test_amendment_of_a_rating(app, token, client) -> None:
    rating = event("rating", token, value=2)
    check(client, rating, ok=True)
    check(client, event("rating", token, value=2, amends=rating["id"], comment="meh"), ok=True)
    assert state(client, token)["comment"] == "meh"


def test_amendment_needs_a_reason_or_comment(token, client) -> None:
    vote = event("thumbs_up", token)
    check(client, vote, ok=True)
    check(client, event("thumbs_up", token, amends=vote["id"]), ok=False, field="amends")


@pytest.mark.parametrize("kind", ["copy_output", "copy_input", "paste", "retract"])
def test_amendment_only_on_votes(token, client, kind: str) -> None:
    vote = event("thumbs_up", token)
    check(client, vote, ok=True)
    extra = {"text": "t"} if kind != "retract" else {}
    check(client, event(kind, token, amends=vote["id"], **extra), ok=False, field="amends")


def test_amendment_of_an_unknown_vote_is_rejected(token, client) -> None:
    result = check(client, event("thumbs_up", token, amends=new_id(), reason="HELPFUL"), ok=False, field="amends")
    assert state(client, token)["reason"] is None
    assert result["errors"]["amends"]


def test_amendment_of_a_later_vote_in_the_same_batch_is_rejected(token, client) -> None:
    vote = event("thumbs_up", token)
    amend = event("thumbs_up", token, amends=vote["id"], reason="HELPFUL")
    response = post(client, amend, vote)
    assert [r["status"] for r in response.get_json()["results"]] == ["rejected", "accepted"]
    assert state(client, token)["reason"] is None


def test_amendment_of_another_vote_type_is_rejected(token, client) -> None:
    vote = event("thumbs_up", token)
    check(client, vote, ok=True)
    check(client, event("thumbs_down", token, amends=vote["id"], reason="NOT_HELPFUL"), ok=False, field="amends")
    check(client, event("rating", token, value=1, amends=vote["id"], comment="x"), ok=False, field="amends")
    assert state(client, token) == {"vote": "up", "rating": None, "reason": None, "comment": None, "copied": False}


def test_amendment_of_a_non_vote_is_rejected(token, client) -> None:
    copy = event("copy_output", token, text="x")
    check(client, copy, ok=True)
    check(client, event("thumbs_up", token, amends=copy["id"], reason="HELPFUL"), ok=False, field="amends")


def test_amendment_of_an_amendment_is_rejected(token, client) -> None:
    vote = event("thumbs_up", token)
    first = event("thumbs_up", token, amends=vote["id"], reason="HELPFUL")
    check(client, vote, ok=True)
    check(client, first, ok=True)
    check(client, event("thumbs_up", token, amends=first["id"], comment="more"), ok=False, field="amends")
    assert state(client, token)["comment"] is None


@pytest.mark.parametrize("amends", ["short", "bad id with spaces", "x" * 65, 5])
def test_amends_must_look_like_an_event_id(token, client, amends: Any) -> None:
    check(client, event("thumbs_up", token, amends=amends, reason="HELPFUL"), ok=False, field="amends")


def test_amendment_of_a_superseded_vote_does_not_change_the_current_one(token, client) -> None:
    first = event("thumbs_up", token)
    second = event("thumbs_up", token)
    check(client, first, ok=True)
    check(client, second, ok=True)
    check(client, event("thumbs_up", token, amends=first["id"], reason="HELPFUL"), ok=True)
    assert state(client, token)["reason"] is None


# -- inline ids --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "limit"), [("conversation_id", 256), ("message_id", 256), ("user_id", 1024)])
def test_inline_id_limits(make_app, name: str, limit: int) -> None:
    app = make_app(FEEDBACK_ALLOW_UNSIGNED=True)
    client = app.test_client()
    base = {"conversation_id": "c", "message_id": "m", "user_id": "u"}
    for bad in ("", "x" * (limit + 1), "nul\x00", "\ud83d", 7):
        check(client, event("thumbs_up", None, **{**base, name: bad}), ok=False, field=name)
    longest = {**base, name: "x" * limit}
    register(app, **longest)
    check(client, event("thumbs_up", None, **longest), ok=True)


# -- state -------------------------------------------------------------------------------------------


def test_state_follows_votes_ratings_retract_and_copies(token, client) -> None:
    empty = {"vote": None, "rating": None, "reason": None, "comment": None, "copied": False}
    assert state(client, token) == empty
    up = event("thumbs_up", token)
    check(client, up, ok=True)
    assert state(client, token) == {**empty, "vote": "up"}
    down = event("thumbs_down", token, reason="NOT_FACTUALLY_CORRECT")
    check(client, down, ok=True)
    assert state(client, token) == {**empty, "vote": "down", "reason": "NOT_FACTUALLY_CORRECT"}
    check(client, event("thumbs_down", token, amends=down["id"], reason="NOT_COMPLETE", comment="Missing steps"),
          ok=True)
    assert state(client, token) == {**empty, "vote": "down", "reason": "NOT_COMPLETE", "comment": "Missing steps"}
    check(client, event("copy_input", token, text="question"), ok=True)
    check(client, event("paste", token, text="pasted"), ok=True)
    assert state(client, token)["copied"] is False  # only copying the answer counts
    check(client, event("copy_output", token, text="answer"), ok=True)
    assert state(client, token)["copied"] is True
    check(client, event("rating", token, value=4), ok=True)
    assert state(client, token)["rating"] == 4
    check(client, event("retract", token), ok=True)
    assert state(client, token) == {**empty, "copied": True}


def test_state_is_per_user_and_per_message(app, client) -> None:
    alice_m1 = register(app, message_id="m-1", user_id="alice")
    alice_m2 = register(app, message_id="m-2", user_id="alice")
    bob_m1 = register(app, message_id="m-1", user_id="bob")
    check(client, event("rating", alice_m1, value=5), ok=True)
    assert state(client, alice_m1)["rating"] == 5
    assert state(client, alice_m2)["rating"] is None
    assert state(client, bob_m1)["rating"] is None


def test_state_schema_matches_openapi(client, token) -> None:
    spec = client.get("/feedback/openapi.json").get_json()
    props = spec["components"]["schemas"]["State"]["properties"]
    assert set(state(client, token)) == set(props)


# -- idempotency under concurrency -------------------------------------------------------------------

THREADS = 8


def test_concurrent_duplicate_posts_store_each_event_once(make_app, database_url: str) -> None:
    adapters = {"rec": RecordingAdapter("rec"), "ev": RecordingAdapter("ev", mode="event")}
    app = make_app(FEEDBACK_DATABASE_URL=database_url, FEEDBACK_PROVIDERS=adapters)
    tokens = [register(app, message_id=f"m-{i}") for i in range(3)]
    batch = [
        event("thumbs_up", tokens[0]),
        event("rating", tokens[1], value=3, reason="COMPLETE"),
        event("copy_output", tokens[2], text="Open Settings"),
    ]
    batch.append(batch[0])  # a duplicate inside the batch as well
    ids = {ev["id"] for ev in batch}
    barrier = threading.Barrier(THREADS)
    responses: list[tuple[int, dict[str, Any]]] = []
    failures: list[BaseException] = []
    lock = threading.Lock()

    def worker() -> None:
        client = app.test_client()
        try:
            barrier.wait(timeout=30)
            response = post(client, *batch)
            with lock:
                responses.append((response.status_code, response.get_json()))
        except BaseException as exc:  # reported below, not lost in the thread
            with lock:
                failures.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads)
    assert failures == []
    assert [status for status, _ in responses] == [200] * THREADS
    statuses: dict[str, Counter[str]] = {i: Counter() for i in ids}
    for _, body in responses:
        assert body["rejected"] == 0
        for result in body["results"]:
            statuses[result["id"]][result["status"]] += 1
    for event_id, counts in statuses.items():
        assert counts["accepted"] == 1, (event_id, counts)
        expected = THREADS * (2 if event_id == batch[0]["id"] else 1) - 1
        assert counts["duplicate"] == expected, (event_id, counts)
    with runtime(app).engine.connect() as conn:
        rows = conn.execute(select(events.c.event_id, func.count()).group_by(events.c.event_id)).all()
        assert dict(rows) == dict.fromkeys(ids, 1)
        per_provider = conn.execute(
            select(outbox.c.provider, outbox.c.event_pk, func.count()).group_by(outbox.c.provider, outbox.c.event_pk)
        ).all()
        assert len(per_provider) == len(ids) * len(adapters)
        assert {count for _, _, count in per_provider} == {1}
        assert conn.execute(select(func.count()).select_from(states)).scalar_one() == 3
        assert conn.execute(select(states.c.copy_count).where(states.c.copy_count > 0)).scalars().all() == [1]


# -- widget, OpenAPI, health -------------------------------------------------------------------------


def test_widget_script_is_cacheable_and_revalidated(client) -> None:
    response = client.get("/feedback/widget.js")
    assert response.status_code == 200
    assert response.mimetype == "text/javascript"
    assert response.data == widget_asset.script().body  # the source, minified once (tests/test_widget_asset.py)
    etag = response.headers["ETag"]
    assert etag
    cache = response.headers["Cache-Control"]
    max_age = int(cache.split("max-age=")[1].split(",")[0])
    assert max_age > 0
    again = client.get("/feedback/widget.js", headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.data == b""
    stale = client.get("/feedback/widget.js", headers={"If-None-Match": '"something-else"'})
    assert stale.status_code == 200 and stale.data == response.data


def test_openapi_document_is_valid_and_documents_the_api(client) -> None:
    response = client.get("/feedback/openapi.json")
    assert response.status_code == 200 and response.is_json
    spec = response.get_json()
    assert spec["openapi"].startswith("3.1")
    validate_openapi(spec)
    assert "post" in spec["paths"]["/feedback/events"]
    assert "get" in spec["paths"]["/feedback/state"]
    event_schema = spec["components"]["schemas"]["Event"]
    assert set(event_schema["properties"]["type"]["enum"]) == {t.value for t in EventType}
    assert len(event_schema["properties"]["type"]["enum"]) == 7
    assert set(event_schema["properties"]["reason"]["enum"]) == set(REASONS)
    assert set(event_schema["required"]) == {"id", "type"}
    envelope = spec["components"]["schemas"]["Envelope"]["properties"]["events"]
    assert envelope["items"] == {"$ref": "#/components/schemas/Event"}
    assert (envelope["minItems"], envelope["maxItems"]) == (1, MAX_EVENTS)
    request_schema = spec["paths"]["/feedback/events"]["post"]["requestBody"]["content"]
    assert {"application/json", "text/plain"} <= set(request_schema)


def test_health_lists_providers(make_app) -> None:
    app = make_app(FEEDBACK_PROVIDERS={"rec": RecordingAdapter("rec"), "log": {}})
    response = app.test_client().get("/feedback/health")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "database": "ok", "providers": ["log", "rec"]}


def test_health_reports_an_unreachable_database(app, client) -> None:
    bridge_runtime = runtime(app)
    reachable = bridge_runtime.engine
    bridge_runtime.engine = create_engine("sqlite:////nonexistent-dir/nowhere/feedback.sqlite3")
    try:
        response = client.get("/feedback/health")
    finally:
        bridge_runtime.engine.dispose()
        bridge_runtime.engine = reachable
    assert response.status_code == 503
    assert response.get_json()["status"] == "degraded"
    assert response.get_json()["database"].startswith("unreachable")
    assert client.get("/feedback/health").status_code == 200


# -- CORS --------------------------------------------------------------------------------------------

ORIGIN = "https://app.example"


def test_cors_allows_the_configured_origin_only(make_app) -> None:
    app = make_app(FEEDBACK_ALLOWED_ORIGINS=[ORIGIN])
    token = register(app)
    client = app.test_client()
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "Content-Type"}
    allowed = client.options(EVENTS, headers={"Origin": ORIGIN, **preflight})
    assert allowed.status_code < 300
    assert allowed.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "POST" in allowed.headers["Access-Control-Allow-Methods"]
    assert "content-type" in allowed.headers["Access-Control-Allow-Headers"].lower()
    posted = post(client, event("thumbs_up", token), headers={"Origin": ORIGIN})
    assert posted.status_code == 200
    assert posted.headers["Access-Control-Allow-Origin"] == ORIGIN
    state_response = client.get(STATE, query_string={"token": token}, headers={"Origin": ORIGIN})
    assert state_response.headers["Access-Control-Allow-Origin"] == ORIGIN
    rejected = post(client, event("thumbs_up", "bad"), headers={"Origin": ORIGIN})
    assert rejected.status_code == 401
    assert rejected.headers["Access-Control-Allow-Origin"] == ORIGIN  # the widget can read the rejection

    other = "https://evil.example"
    assert "Access-Control-Allow-Origin" not in client.options(EVENTS, headers={"Origin": other, **preflight}).headers
    assert "Access-Control-Allow-Origin" not in post(client, event("thumbs_up", token),
                                                     headers={"Origin": other}).headers


def test_no_cors_headers_without_configured_origins(app, token, client) -> None:
    preflight = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST"}
    for response in (client.options(EVENTS, headers=preflight),
                     post(client, event("thumbs_up", token), headers={"Origin": ORIGIN}),
                     client.get(STATE, query_string={"token": token}, headers={"Origin": ORIGIN})):
        assert not [k for k, _ in response.headers.items() if k.lower().startswith("access-control-")]


# -- never a 500 -------------------------------------------------------------------------------------

# Strings with what databases and encoders choke on: NUL, lone surrogates, controls, non-BMP characters.
odd_characters = st.sampled_from(["\x00", "\ud800", "\udfff", "\r", "\x1b", "\u202e", "\U0001f600"])
strings = st.text(st.characters() | odd_characters, max_size=30)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | strings,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(strings, children, max_size=4),
    max_leaves=12,
)
tricky_strings = st.sampled_from([
    "", "x" * 65, "x" * 1001, "x" * 10_001, "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00",
    "2025-01-31T09:30:00Z", "2025-01-31T09:30:00", "abcdefgh-1", "thumbs_up", "rating", "HELPFUL", "a\nb",
    "c", "m", "u", "other",
])
field_names = st.sampled_from(["id", "type", "value", "reason", "comment", "text", "occurred_at", "amends",
                               "token", "conversation_id", "message_id", "user_id", "extra"])
field_values = tricky_strings | strings | st.integers(-10, 10) | json_values
BASES: dict[str, dict[str, Any]] = {
    "thumbs_up": {}, "thumbs_down": {"reason": "NOT_HELPFUL"}, "rating": {"value": 3}, "retract": {},
    "copy_output": {"text": "answer"}, "copy_input": {"text": "question"}, "paste": {"text": "pasted"},
}


@st.composite
def event_like(draw: st.DrawFn, token: str) -> dict[str, Any]:
    """Mostly-valid events with a few fields replaced by odd values, or arbitrary dictionaries."""
    if draw(st.integers(0, 4)) == 0:
        return draw(st.dictionaries(field_names, field_values, max_size=6))
    kind = draw(st.sampled_from(sorted(BASES)))
    body: dict[str, Any] = {"id": draw(st.sampled_from(["abcdefgh-1", "abcdefgh-2"]) | st.uuids().map(str)),
                            "type": kind, **BASES[kind]}
    identity = draw(st.sampled_from(["token", "inline", "garbage", "none"]))
    if identity == "token":
        body["token"] = token
    elif identity == "inline":
        body.update(conversation_id="c", message_id="m", user_id="u")
    elif identity == "garbage":
        body["token"] = draw(strings)
    body.update(draw(st.dictionaries(field_names, field_values, max_size=2)))
    return body


def test_never_a_server_error(make_app) -> None:
    app = make_app(FEEDBACK_ALLOW_UNSIGNED=True)
    token = register(app, conversation_id="c", message_id="m", user_id="u")
    client = app.test_client()
    bodies = st.one_of(
        json_values,
        st.fixed_dictionaries({"events": st.lists(event_like(token) | json_values, max_size=5)}),
        st.fixed_dictionaries({"events": st.lists(event_like(token), min_size=1, max_size=3)}),
    )

    @settings(max_examples=200, deadline=None, database=None)
    @given(body=bodies, as_text=st.booleans(), raw=st.none() | st.text(max_size=50),
           query=st.text(max_size=60) | st.just(token))
    def run(body: Any, as_text: bool, raw: str | None, query: str) -> None:
        if as_text:
            data = json.dumps(body) if raw is None else raw
            response = client.post(EVENTS, data=data.encode("utf-8", "surrogatepass"), content_type="text/plain")
        else:
            response = client.post(EVENTS, json=body)
        assert response.status_code < 500, response.get_data(as_text=True)
        assert response.is_json
        assert client.get(STATE, query_string={"token": query}).status_code < 500

    run()


def test_a_batch_over_several_answers_reads_their_messages_once(make_app, database_url) -> None:
    """Each distinct token used to cost a read of its message; a batch's tokens are now resolved together."""
    app = make_app(FEEDBACK_DATABASE_URL=database_url)
    tokens = [register(app, message_id=f"m-{n}", user_id=f"u{n % 2}@example.com") for n in range(5)]
    forged = tokens[0][:-2] + ("AA" if not tokens[0].endswith("AA") else "BB")
    with statements_run(runtime(app).engine) as run:
        response = post(app.test_client(), *[event("thumbs_up", t) for t in tokens], event("thumbs_down", forged),
                        event("thumbs_down", tokens[1]))
    reads = [sql for sql, _ in run if sql.lstrip().upper().startswith("SELECT") and "feedback_messages" in sql]
    assert [(r["status"], r.get("code")) for r in response.get_json()["results"]] == [
        *[("accepted", None)] * 5, ("rejected", "token_invalid"), ("accepted", None)]
    assert len(reads) == 1, reads
    for n, token in enumerate(tokens):
        state = app.test_client().get("/feedback/state", query_string={"token": token}).get_json()
        assert state["vote"] == ("down" if n == 1 else "up")
