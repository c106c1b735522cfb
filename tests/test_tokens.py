"""Message tokens: signing, expiry, tampering, key rotation, binding to one message and user, unsigned mode."""

from __future__ import annotations

import random
import re
import time
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from itsdangerous import URLSafeTimedSerializer
from sqlalchemy import delete, func, select

from conftest import register, runtime
from feedback_bridge.exceptions import ConfigurationError, TokenExpired, TokenInvalid, TokenMissing
from feedback_bridge.schema import events, messages
from feedback_bridge.tokens import SALT, MessageTokens, TokenClaims, message_key
from support import clock_frozen, clock_shifted, event

URL_SAFE = re.compile(r"[A-Za-z0-9_.\-]+")


def post(client: FlaskClient, *evs: dict[str, Any]):
    return client.post("/feedback/events", json={"events": list(evs)})


def flip(token: str, segment: int) -> str:
    """Change the first character of one ``.``-separated segment (payload, timestamp or signature).

    The first character of a base64 segment carries six significant bits, so the decoded bytes change.
    """
    parts = token.split(".")
    index = segment if parts[0] else segment + 1  # a compressed payload starts with "."
    parts[index] = ("A" if parts[index][0] != "A" else "B") + parts[index][1:]
    return ".".join(parts)


def stored_events(app: Flask) -> int:
    with runtime(app).engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(events)).scalar_one()


# -- MessageTokens on its own ------------------------------------------------------------------------


def test_token_round_trip_is_compact_and_url_safe() -> None:
    tokens = MessageTokens("k1")
    key = message_key("c-1", "m-1")
    token = tokens.issue(42, "alice@example.com", key)
    assert URL_SAFE.fullmatch(token), token
    assert len(token) < 120
    assert tokens.verify(token, 60) == TokenClaims(42, "alice@example.com", key)


def test_tokens_differ_per_message_and_user() -> None:
    tokens = MessageTokens("k1")
    key = message_key("c-1", "m-1")
    issued = {tokens.issue(1, "alice", key), tokens.issue(2, "alice", key), tokens.issue(1, "bob", key),
              tokens.issue(1, "alice", message_key("c-1", "m-2"))}
    assert len(issued) == 4


def test_message_key_distinguishes_how_ids_are_split() -> None:
    assert message_key("c-1", "m-1") == message_key("c-1", "m-1")
    assert message_key("ab", "c") != message_key("a", "bc")
    assert message_key("a\x1fb", "c") != message_key("a", "b\x1fc")
    assert message_key("a\x00b", "c") != message_key("a", "b\x00c")
    assert message_key("c-1", "m-1") != message_key("c-1", "m-2")


def test_token_signed_with_another_key_is_invalid() -> None:
    forged = MessageTokens("attacker-key").issue(1, "alice", message_key("c-1", "m-1"))
    with pytest.raises(TokenInvalid):
        MessageTokens("k1").verify(forged, 60)


def test_token_with_another_salt_is_invalid() -> None:
    other_purpose = URLSafeTimedSerializer("k1", salt="something-else").dumps([1, "alice", "key"])
    with pytest.raises(TokenInvalid):
        MessageTokens("k1").verify(other_purpose, 60)


@pytest.mark.parametrize("segment", [0, 1, 2], ids=["payload", "timestamp", "signature"])
def test_tampered_token_is_invalid(segment: int) -> None:
    tokens = MessageTokens("k1")
    token = tokens.issue(7, "alice", message_key("c-1", "m-1"))
    tampered = flip(token, segment)
    assert tampered != token
    with pytest.raises(TokenInvalid):
        tokens.verify(tampered, 60)


@pytest.mark.parametrize("token", ["x", "a.b.c", "....", "é" * 10, "\ud800", "tok\x00en"])
def test_garbage_token_is_invalid(token: str) -> None:
    with pytest.raises(TokenInvalid):
        MessageTokens("k1").verify(token, 60)


@pytest.mark.parametrize("token", [None, ""])
def test_missing_token(token: str | None) -> None:
    with pytest.raises(TokenMissing):
        MessageTokens("k1").verify(token, 60)


@pytest.mark.parametrize("payload", [
    [1, "alice"],  # right key, wrong shape: an older two-element token
    ["1", "alice", "key"],
    [True, "alice", "key"],
    [1, 2, "key"],
    [1, "alice", None],
    {"pk": 1, "user": "alice"},
    "alice",
])
def test_correctly_signed_but_malformed_payload_is_invalid(payload: Any) -> None:
    token = URLSafeTimedSerializer("k1", salt=SALT).dumps(payload)
    with pytest.raises(TokenInvalid):
        MessageTokens("k1").verify(token, 60)


def test_expired_token() -> None:
    tokens = MessageTokens("k1")
    with clock_shifted(-3600):
        old = tokens.issue(1, "alice", "key")
    with pytest.raises(TokenExpired):
        tokens.verify(old, 60)
    assert tokens.verify(old, 7200).message_pk == 1  # the same token within a longer max age


def test_forged_token_is_invalid_even_when_also_expired() -> None:
    with clock_shifted(-3600):
        forged = MessageTokens("attacker-key").issue(1, "alice", "key")
    with pytest.raises(TokenInvalid):
        MessageTokens("k1").verify(forged, 60)


def test_key_rotation_verifies_old_tokens_and_signs_with_the_new_key() -> None:
    old_token = MessageTokens("old").issue(1, "alice", "key")
    rotated = MessageTokens("new", ["old"])
    assert rotated.verify(old_token, 60).user_id == "alice"
    new_token = rotated.issue(2, "bob", "key")
    assert MessageTokens("new").verify(new_token, 60).message_pk == 2
    with pytest.raises(TokenInvalid):
        MessageTokens("old").verify(new_token, 60)


def test_a_single_string_fallback_is_one_key_not_one_key_per_character() -> None:
    by_one_letter = MessageTokens("o").issue(1, "mallory", "key")
    rotated = MessageTokens("new", "old")
    with pytest.raises(TokenInvalid):
        rotated.verify(by_one_letter, 60)
    assert rotated.verify(MessageTokens("old").issue(1, "alice", "key"), 60).user_id == "alice"


@pytest.mark.parametrize("secret", [None, ""])
def test_no_secret_key_is_a_configuration_error(secret: str | None) -> None:
    with pytest.raises(ConfigurationError, match="SECRET_KEY"):
        MessageTokens(secret)


# -- tokens through the event API --------------------------------------------------------------------


def test_forged_token_is_rejected_with_401(make_app) -> None:
    app = make_app()
    register(app)
    with app.app_context():
        message = runtime(app).store.find_message("c-1", "m-1")
    forged = MessageTokens("not-the-secret").issue(message.pk, "alice@example.com",
                                                   message_key("c-1", "m-1"))
    response = post(app.test_client(), event("thumbs_up", forged))
    assert response.status_code == 401
    body = response.get_json()
    assert body["rejected"] == 1 and body["accepted"] == 0
    assert body["results"][0]["code"] == "token_invalid"
    assert "token" in body["results"][0]["errors"]
    assert stored_events(app) == 0


@pytest.mark.parametrize("segment", [0, 1, 2], ids=["payload", "timestamp", "signature"])
def test_tampered_token_is_rejected_with_401(make_app, segment: int) -> None:
    app = make_app()
    token = register(app)
    response = post(app.test_client(), event("thumbs_up", flip(token, segment)))
    assert response.status_code == 401
    assert response.get_json()["results"][0]["code"] == "token_invalid"
    assert stored_events(app) == 0


def test_expired_token_is_rejected_with_401(make_app) -> None:
    app = make_app(FEEDBACK_TOKEN_MAX_AGE=60)
    with clock_shifted(-3600):
        old = register(app, message_id="m-old")
    fresh = register(app, message_id="m-new")
    client = app.test_client()
    response = post(client, event("thumbs_up", old))
    assert response.status_code == 401
    assert response.get_json()["results"][0]["code"] == "token_expired"
    assert post(client, event("thumbs_up", fresh)).status_code == 200
    state = client.get("/feedback/state", query_string={"token": old})
    assert state.status_code == 401
    assert state.get_json()["code"] == "token_expired"


def test_token_just_inside_max_age_is_accepted(make_app) -> None:
    app = make_app(FEEDBACK_TOKEN_MAX_AGE=3600)
    with clock_shifted(-3000):
        token = register(app)
    assert post(app.test_client(), event("thumbs_up", token)).status_code == 200


def test_missing_token_is_rejected_with_401(make_app) -> None:
    app = make_app()
    register(app)
    response = post(app.test_client(), event("thumbs_up", None))
    assert response.status_code == 401
    assert response.get_json()["results"][0]["code"] == "token_missing"


def test_one_bad_token_does_not_lose_the_good_events(make_app) -> None:
    app = make_app()
    token = register(app)
    good, bad = event("thumbs_up", token), event("copy_output", token[:-3] + "xyz", text="hi")
    response = post(app.test_client(), good, bad)
    assert response.status_code == 200
    body = response.get_json()
    assert [r["status"] for r in body["results"]] == ["accepted", "rejected"]
    assert body["results"][1]["code"] == "token_invalid"
    assert body["errors"]["events"].keys() == {"1"}
    with runtime(app).engine.connect() as conn:
        assert conn.execute(select(events.c.event_id)).scalars().all() == [good["id"]]


_rng = random.Random(7)
LONG_USER_IDS = [
    "x" * 1024,
    "".join(map(chr, range(0x4E00, 0x5200))),  # 1024 distinct CJK characters
    "".join(chr(_rng.randint(0x10000, 0x10FFFF)) for _ in range(1024)),  # escapes badly in JSON
]


@pytest.mark.parametrize("user_id", LONG_USER_IDS, ids=["ascii", "cjk", "astral"])
def test_every_token_register_message_issues_is_usable(make_app, user_id: str) -> None:
    app = make_app()
    token = register(app, user_id=user_id, message_id="m" * 256, conversation_id="c" * 256)
    assert len(user_id) == 1024
    client = app.test_client()
    response = post(client, event("thumbs_up", token))
    assert response.status_code == 200, response.get_json()
    assert client.get("/feedback/state", query_string={"token": token}).get_json()["vote"] == "up"


def test_a_batch_failing_on_tokens_and_validation_is_422(make_app) -> None:
    app = make_app()
    token = register(app)
    response = post(app.test_client(), event("thumbs_up", "garbage"), event("rating", token, value=9))
    assert response.status_code == 422
    assert [r["code"] for r in response.get_json()["results"]] == ["token_invalid", "invalid"]


def test_key_rotation_through_the_app(make_app) -> None:
    app = make_app(SECRET_KEY="old-secret")
    old_token = register(app, message_id="m-1")
    app.config.update(SECRET_KEY="new-secret", SECRET_KEY_FALLBACKS=["old-secret"])
    new_token = register(app, message_id="m-2")
    client = app.test_client()
    assert post(client, event("thumbs_up", old_token)).status_code == 200
    assert post(client, event("thumbs_down", new_token)).status_code == 200
    assert client.get("/feedback/state", query_string={"token": old_token}).get_json()["vote"] == "up"
    # The new token is signed with the new key only.
    claims = MessageTokens("new-secret").verify(new_token, 60)
    with pytest.raises(TokenInvalid):
        MessageTokens("old-secret").verify(new_token, 60)
    assert claims.user_id == "alice@example.com"
    # Once the old key is dropped from the fallbacks, its tokens stop working.
    app.config["SECRET_KEY_FALLBACKS"] = []
    response = post(client, event("thumbs_down", old_token))
    assert response.status_code == 401
    assert response.get_json()["results"][0]["code"] == "token_invalid"


def test_without_secret_key_a_token_is_rejected_not_a_server_error(make_app) -> None:
    app = make_app(SECRET_KEY=None, FEEDBACK_ALLOW_UNSIGNED=True)
    client = app.test_client()
    response = post(client, event("thumbs_up", "some.client.token"))
    assert response.status_code == 401
    assert response.get_json()["results"][0]["code"] == "token_invalid"
    state = client.get("/feedback/state", query_string={"token": "some.client.token"})
    assert state.status_code == 401


# -- a token speaks for one message and one user -----------------------------------------------------


@pytest.mark.parametrize("inline", [
    {"message_id": "m-2"},
    {"conversation_id": "c-2"},
    {"user_id": "bob@example.com"},
    {"conversation_id": "c-1", "message_id": "m-2", "user_id": "alice@example.com"},
])
def test_inline_ids_contradicting_the_token_are_a_mismatch(make_app, inline: dict[str, str]) -> None:
    app = make_app()
    token_a = register(app, message_id="m-1")
    token_b = register(app, message_id="m-2")
    register(app, message_id="m-1", conversation_id="c-2")
    client = app.test_client()
    response = post(client, event("thumbs_down", token_a, **inline))
    assert response.status_code == 401
    assert response.get_json()["results"][0]["code"] == "token_mismatch"
    assert stored_events(app) == 0
    for token in (token_a, token_b):
        assert client.get("/feedback/state", query_string={"token": token}).get_json()["vote"] is None


def test_inline_ids_agreeing_with_the_token_are_accepted(make_app) -> None:
    app = make_app()
    token = register(app)
    response = post(app.test_client(), event(
        "thumbs_up", token, conversation_id="c-1", message_id="m-1", user_id="alice@example.com"
    ))
    assert response.status_code == 200
    assert response.get_json()["accepted"] == 1


def test_token_of_one_user_only_changes_that_users_state(make_app) -> None:
    app = make_app()
    alice = register(app, user_id="alice@example.com")
    bob = register(app, user_id="bob@example.com")
    client = app.test_client()
    assert post(client, event("thumbs_down", alice)).status_code == 200
    assert client.get("/feedback/state", query_string={"token": alice}).get_json()["vote"] == "down"
    assert client.get("/feedback/state", query_string={"token": bob}).get_json()["vote"] is None


def test_amending_a_vote_of_another_message_is_rejected(make_app) -> None:
    app = make_app()
    token_a = register(app, message_id="m-1")
    token_b = register(app, message_id="m-2")
    client = app.test_client()
    vote_a = event("thumbs_down", token_a)
    assert post(client, vote_a).status_code == 200
    sneaky = event("thumbs_down", token_b, amends=vote_a["id"], reason="HARMFUL_OR_UNSAFE", comment="x")
    response = post(client, sneaky)
    assert response.status_code == 422
    result = response.get_json()["results"][0]
    assert result["status"] == "rejected" and "amends" in result["errors"]
    for token in (token_a, token_b):
        state = client.get("/feedback/state", query_string={"token": token}).get_json()
        assert state["reason"] is None and state["comment"] is None


def test_amending_another_users_vote_is_rejected(make_app) -> None:
    app = make_app()
    alice = register(app, user_id="alice@example.com")
    bob = register(app, user_id="bob@example.com")
    client = app.test_client()
    vote = event("thumbs_up", alice)
    assert post(client, vote).status_code == 200
    response = post(client, event("thumbs_up", bob, amends=vote["id"], reason="HELPFUL"))
    assert response.status_code == 422
    assert client.get("/feedback/state", query_string={"token": alice}).get_json()["reason"] is None


def test_token_of_a_deleted_message_never_speaks_for_the_message_reusing_its_row_id(make_app) -> None:
    app = make_app()
    register(app, message_id="m-1")
    token_gone = register(app, message_id="m-2")
    engine = runtime(app).engine
    with engine.begin() as conn:
        gone_pk = conn.execute(select(messages.c.id).where(messages.c.message_id == "m-2")).scalar_one()
        conn.execute(delete(messages).where(messages.c.id == gone_pk))  # as a purge would
    token_new = register(app, message_id="m-3")
    with engine.connect() as conn:
        new_pk = conn.execute(select(messages.c.id).where(messages.c.message_id == "m-3")).scalar_one()
    assert new_pk == gone_pk  # SQLite reuses the highest row id: the case this test is about
    client = app.test_client()
    response = post(client, event("thumbs_down", token_gone))
    assert response.status_code == 422
    assert response.get_json()["results"][0]["code"] == "message_unknown"
    assert stored_events(app) == 0
    assert client.get("/feedback/state", query_string={"token": token_new}).get_json()["vote"] is None
    gone_state = client.get("/feedback/state", query_string={"token": token_gone})
    assert (gone_state.status_code, gone_state.get_json()["code"]) == (404, "message_unknown")
    documented = client.get("/feedback/openapi.json").get_json()["paths"]["/feedback/state"]["get"]["responses"]
    assert "404" in documented  # found by tests/test_fuzz_openapi.py


# -- replay: a captured token reused for another message, another user, another deployment, or late --


def test_a_token_replayed_with_another_messages_ids_in_a_batch_loses_only_that_event(make_app) -> None:
    app = make_app()
    token_a = register(app, message_id="m-a")
    token_b = register(app, message_id="m-b")
    client = app.test_client()
    replayed = event("thumbs_down", token_a, conversation_id="c-1", message_id="m-b")
    own = event("thumbs_up", token_b)
    response = post(client, replayed, own)
    assert response.status_code == 200
    assert [(r["status"], r.get("code")) for r in response.get_json()["results"]] == [
        ("rejected", "token_mismatch"), ("accepted", None)]
    assert client.get("/feedback/state", query_string={"token": token_b}).get_json()["vote"] == "up"
    assert client.get("/feedback/state", query_string={"token": token_a}).get_json()["vote"] is None


def test_a_token_of_user_x_in_a_batch_for_user_y_never_touches_y(make_app) -> None:
    app = make_app()
    x = register(app, user_id="x@example.com")
    y = register(app, user_id="y@example.com")
    client = app.test_client()
    batch = [event("thumbs_up", y), event("thumbs_down", x, user_id="y@example.com", reason="HARMFUL_OR_UNSAFE"),
             event("rating", x, value=1, user_id="y@example.com")]
    response = post(client, *batch)
    assert [r.get("code") for r in response.get_json()["results"]] == [None, "token_mismatch", "token_mismatch"]
    assert client.get("/feedback/state", query_string={"token": y}).get_json() == {
        "vote": "up", "rating": None, "reason": None, "comment": None, "copied": False}
    assert client.get("/feedback/state", query_string={"token": x}).get_json()["vote"] is None
    assert stored_events(app) == 1


def test_a_token_replayed_on_another_deployment_sharing_the_secret_is_refused(make_app, tmp_path) -> None:
    first = make_app()
    second = make_app(FEEDBACK_DATABASE_URL=f"sqlite:///{tmp_path / 'second.sqlite3'}")
    token = register(first, message_id="m-first")
    register(second, message_id="m-second")  # the same row id, 1, holds another message there
    client = second.test_client()
    response = post(client, event("thumbs_up", token))
    assert response.status_code == 422
    assert response.get_json()["results"][0]["code"] == "message_unknown"
    assert client.get("/feedback/state", query_string={"token": token}).status_code == 404
    assert stored_events(second) == 0


def test_a_token_that_worked_is_refused_once_it_expires(make_app) -> None:
    app = make_app(FEEDBACK_TOKEN_MAX_AGE=60)
    # Issued and checked at set whole seconds: shifted from the running clock, the check "at max age" fell a
    # second past it whenever a second ticked by in between (3 runs in 1,200).
    issued = float(int(time.time()))
    with clock_frozen(issued):
        token = register(app)
    client = app.test_client()
    vote = event("thumbs_up", token)
    assert post(client, vote).status_code == 200
    with clock_frozen(issued + 60):
        assert post(client, event("copy_output", token, text="x")).status_code == 200  # at max age: still valid
    with clock_frozen(issued + 61):
        for replay in (event("thumbs_down", token), vote):  # a new event, and the accepted one sent again
            response = post(client, replay)
            assert response.status_code == 401
            assert response.get_json()["results"][0]["code"] == "token_expired"
        state = client.get("/feedback/state", query_string={"token": token})
        assert (state.status_code, state.get_json()["code"]) == (401, "token_expired")
    assert client.get("/feedback/state", query_string={"token": token}).get_json()["vote"] == "up"
    assert stored_events(app) == 2


# -- unsigned mode -----------------------------------------------------------------------------------

INLINE = {"conversation_id": "c-1", "message_id": "m-1", "user_id": "alice@example.com"}


def test_unsigned_mode_accepts_inline_ids(make_app) -> None:
    app = make_app(FEEDBACK_ALLOW_UNSIGNED=True)
    token = register(app)
    client = app.test_client()
    response = post(client, event("thumbs_up", None, **INLINE))
    assert response.status_code == 200
    assert response.get_json()["results"][0]["status"] == "accepted"
    assert client.get("/feedback/state", query_string={"token": token}).get_json()["vote"] == "up"


def test_unsigned_mode_unknown_message(make_app) -> None:
    app = make_app(FEEDBACK_ALLOW_UNSIGNED=True)
    register(app)
    response = post(app.test_client(), event("thumbs_up", None, **{**INLINE, "message_id": "m-404"}))
    assert response.status_code == 422
    assert response.get_json()["results"][0]["code"] == "message_unknown"
    assert stored_events(app) == 0


@pytest.mark.parametrize("missing", sorted(INLINE))
def test_unsigned_mode_needs_all_three_ids(make_app, missing: str) -> None:
    app = make_app(FEEDBACK_ALLOW_UNSIGNED=True)
    register(app)
    partial = {k: v for k, v in INLINE.items() if k != missing}
    response = post(app.test_client(), event("thumbs_up", None, **partial))
    assert response.status_code == 401
    result = response.get_json()["results"][0]
    assert result["code"] == "token_missing"
    assert missing in result["errors"]["token"][0]


def test_unsigned_mode_still_verifies_a_token_when_one_is_given(make_app) -> None:
    app = make_app(FEEDBACK_ALLOW_UNSIGNED=True)
    token = register(app)
    register(app, message_id="m-2")
    client = app.test_client()
    assert post(client, event("thumbs_up", flip(token, 2), **INLINE)).get_json()["results"][0]["code"] \
        == "token_invalid"
    assert post(client, event("thumbs_up", token, **{**INLINE, "message_id": "m-2"})).get_json()[
        "results"][0]["code"] == "token_mismatch"
    assert stored_events(app) == 0


def test_without_unsigned_mode_inline_ids_are_not_enough(make_app) -> None:
    app = make_app()
    register(app)
    response = post(app.test_client(), event("thumbs_up", None, **INLINE))
    assert response.status_code == 401
    assert response.get_json()["results"][0]["code"] == "token_missing"
    assert stored_events(app) == 0


# -- GET /state and tokens ---------------------------------------------------------------------------


@pytest.mark.parametrize(("query", "code"), [
    ({}, "token_missing"),
    ({"token": ""}, "token_missing"),
    ({"token": "nonsense"}, "token_invalid"),
])
def test_state_with_bad_or_missing_token_is_401(make_app, query: dict[str, str], code: str) -> None:
    app = make_app()
    register(app)
    response = app.test_client().get("/feedback/state", query_string=query)
    assert response.status_code == 401
    assert response.get_json()["code"] == code
    assert "errors" in response.get_json()


def test_state_with_forged_token_is_401(make_app) -> None:
    app = make_app()
    token = register(app)
    client = app.test_client()
    for bad in (flip(token, 0), flip(token, 2), token.replace(".", "", 1)):
        response = client.get("/feedback/state", query_string={"token": bad})
        assert response.status_code == 401
        assert response.get_json()["code"] == "token_invalid"
