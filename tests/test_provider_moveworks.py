"""Moveworks: the mapping table on the wire (through the event API, the outbox and the worker, into the emulator),
the pure mapping, every error class ending in the right outbox state, and the three kinds of access token."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from flask import Flask

from conftest import register, runtime
from feedback_bridge.models import Event, EventType, FeedbackState, Message
from feedback_bridge.providers import DeliveryContext, Skip
from feedback_bridge.providers.moveworks import MoveworksAdapter
from feedback_bridge.providers.moveworks_tokens import ClientCredentials
from feedback_bridge.testing import MoveworksEmulator, MoveworksMessage
from support import event
from support import outbox_rows as rows
from support import post_events as post

TOKEN = "mw-static-token-5f0e1d2c3b4a"
ASSISTANT = "acmecorp-conversations-rest-api"
CLIENT_ID, CLIENT_SECRET = "bridge-client", "mw-client-secret-9a8b7c"
TIMEOUT = [1.0, 1.0]  # (connect, read): a hang costs a second; a busy machine still answers in time


@pytest.fixture(scope="module")
def mw() -> Iterator[MoveworksEmulator]:
    emulator = MoveworksEmulator(tokens={TOKEN}, assistant_name=ASSISTANT, clients={CLIENT_ID: CLIENT_SECRET})
    emulator.hang_seconds = 1.2  # past the read timeout; the hung call is recorded when it ends
    with emulator:
        yield emulator


@pytest.fixture(autouse=True)
def _fresh(mw: MoveworksEmulator) -> Iterator[None]:
    mw.reset()
    yield
    mw.token_ttl, mw.assistant_name = 3600, ASSISTANT


def config(mw: MoveworksEmulator, **options: Any) -> dict[str, Any]:
    base = {"base_url": mw.base_url, "assistant_name": ASSISTANT, "token": TOKEN, "timeout": TIMEOUT}
    return {"moveworks": {**base, **options}}


@pytest.fixture
def app(make_app, mw: MoveworksEmulator) -> Flask:
    return make_app(FEEDBACK_PROVIDERS=config(mw))


def deliver(app: Flask) -> list[dict]:
    # A fixed "now": a retry due a moment later waits for the next call instead of joining this drain.
    runtime(app).worker.drain(now=datetime.now(timezone.utc))
    return rows(app)


def new_message(app: Flask, mw: MoveworksEmulator, message_id: str = "m-1") -> tuple[str, MoveworksMessage]:
    known = mw.add_message()
    return register(app, message_id, refs={"moveworks": known.refs()}), known


# -- the mapping table, on the wire -----------------------------------------------------------------------------

V = "vote-00000001"  # the id of the vote an amendment names
TABLE: list[tuple[str, list[list[tuple[str, dict]]], list[tuple[str, str | None]], dict[str, Any]]] = [
    # (row, batches of events (each batch is posted, then the worker drains), submissions expected, options)
    ("thumbs up, reason and comment", [[("thumbs_up", {"reason": "HELPFUL", "comment": "Clear steps"})]],
     [("helpful", "Helpful — Clear steps")], {}),
    ("thumbs down", [[("thumbs_down", {})]], [("unhelpful", None)], {}),
    ("rating 1", [[("rating", {"value": 1})]], [("unhelpful", None)], {}),
    ("rating 2", [[("rating", {"value": 2, "comment": "meh"})]], [("unhelpful", "meh")], {}),
    ("rating 3", [[("rating", {"value": 3})]], [], {}),
    ("rating 4", [[("rating", {"value": 4})]], [("helpful", None)], {}),
    ("rating 5", [[("rating", {"value": 5})]], [("helpful", None)], {}),
    ("rating 4, thresholds 5/3", [[("rating", {"value": 4})]], [], {"positive": 5, "negative": 3}),
    ("rating 3, thresholds 5/3", [[("rating", {"value": 3})]], [("unhelpful", None)], {"positive": 5, "negative": 3}),
    ("thumb wins over rating", [[("rating", {"value": 1}), ("thumbs_up", {})]], [("helpful", None)], {}),
    ("copy of an answer", [[("copy_output", {"text": "Open Settings"})]], [], {}),
    ("copy of a prompt", [[("copy_input", {"text": "reset password"})]], [], {}),
    ("paste", [[("paste", {"text": "error 0x80"})]], [], {}),
    ("reason and comment added later",
     [[("thumbs_down", {"id": V})],
      [("thumbs_down", {"amends": V, "reason": "NOT_FACTUALLY_CORRECT", "comment": "Wrong menu"})]],
     [("unhelpful", None), ("unhelpful", "Not factually correct — Wrong menu")], {}),
    ("retract after the vote went out", [[("thumbs_up", {})], [("retract", {})]], [("helpful", None)], {}),
    ("retract before delivery", [[("thumbs_up", {}), ("retract", {})]], [], {}),
]


@pytest.mark.parametrize(("row", "batches", "expected", "thresholds"), TABLE, ids=[t[0] for t in TABLE])
def test_mapping_table_on_the_wire(make_app, mw, row, batches, expected, thresholds):
    options = {"rating_thresholds": thresholds} if thresholds else {}
    app = make_app(FEEDBACK_PROVIDERS=config(mw, **options))
    token, known = new_message(app, mw)
    for batch in batches:
        post(app, *(event(kind, token, **fields) for kind, fields in batch))
        deliver(app)
    assert [(s.rating, s.additional_feedback) for s in mw.submissions] == expected
    for call, (rating, text) in zip(mw.received, expected, strict=True):
        assert call.method == "POST"
        assert call.path == (f"/rest/v1beta1/conversations/{known.conversation_id}/responses/"
                             f"{known.response_id}/messages/{known.message_id}/feedback")
        assert call.headers["authorization"] == f"Bearer {TOKEN}"
        assert call.headers["assistant-name"] == ASSISTANT
        assert call.headers["content-type"] == "application/json"
        callback = known.helpful_callback_id if rating == "helpful" else known.unhelpful_callback_id
        assert call.json() == {"callback_id": callback, **({"additional_feedback": text} if text else {})}
    assert len(mw.calls) == len(expected), "nothing was refused"
    statuses = {r["status"] for r in rows(app)}
    assert statuses <= {"delivered", "skipped"}
    if not expected:
        assert all(r["last_error"] for r in rows(app)), "each skip says why"


@pytest.mark.parametrize("kind", ["copy_output", "copy_input", "paste", "retract"])
def test_what_moveworks_cannot_express_is_skipped_at_ingest_with_the_reason(app, mw, kind):
    token, _ = new_message(app, mw)
    fields = {"text": "some text"} if kind != "retract" else {}
    post(app, event(kind, token, **fields))
    [row] = rows(app)  # recorded at ingest, before any worker ran
    assert row["status"] == "skipped" and row["request"] is None
    assert "Moveworks" in row["last_error"]
    assert ("withdraw" if kind == "retract" else "not expressible") in row["last_error"]


def test_a_message_without_moveworks_refs_is_skipped_with_the_reason(app, mw):
    token = register(app, "m-2")
    post(app, event("thumbs_up", token))
    [row] = deliver(app)
    assert row["status"] == "skipped" and "without 'moveworks' refs" in row["last_error"]
    assert mw.calls == []


def test_on_the_database_under_test_a_vote_is_delivered(make_app, mw, database_url):
    app = make_app(FEEDBACK_DATABASE_URL=database_url, FEEDBACK_PROVIDERS=config(mw))
    token, known = new_message(app, mw)
    post(app, event("thumbs_up", token, comment="thanks"))
    [row] = deliver(app)
    assert row["status"] == "delivered" and row["response"] == {"status": 200, "body": {"status": "SUBMITTED"}}
    assert row["request"] == {
        "method": "POST",
        "url": f"{mw.base_url}/conversations/{known.conversation_id}/responses/{known.response_id}/messages/"
               f"{known.message_id}/feedback",
        "headers": {"Assistant-Name": ASSISTANT, "Content-Type": "application/json"},
        "json": {"callback_id": known.helpful_callback_id, "additional_feedback": "thanks"},
    }


# -- the pure mapping -----------------------------------------------------------------------------------------

REFS = {"conversation_id": "conv_1", "response_id": "resp_1", "message_id": "msg_1",
        "helpful_callback_id": "HELP", "unhelpful_callback_id": "UNHELP"}
NOW = datetime(2026, 11, 23, 15, 0, tzinfo=timezone.utc)
MESSAGE = Message(1, "c", "m", "u", "in", "out", {"moveworks": REFS}, NOW)


@pytest.mark.parametrize(("state", "body"), [
    (FeedbackState(vote="up"), {"callback_id": "HELP"}),
    (FeedbackState(vote="down", reason="NOT_COMPLETE", comment=" step 3 "),
     {"callback_id": "UNHELP", "additional_feedback": "Not complete — step 3"}),
    (FeedbackState(vote="up", rating=1), {"callback_id": "HELP"}),
    (FeedbackState(rating=5, comment="great"), {"callback_id": "HELP", "additional_feedback": "great"}),
    (FeedbackState(rating=4), {"callback_id": "HELP"}),
    (FeedbackState(rating=2), {"callback_id": "UNHELP"}),
    (FeedbackState(rating=1, reason="OTHER"), {"callback_id": "UNHELP", "additional_feedback": "Other"}),
    (FeedbackState(rating=3), None),
    (FeedbackState(), None),
    (FeedbackState(copied_at=NOW, copy_count=1), None),
])
def test_build_request_table(state, body):
    adapter = MoveworksAdapter(base_url="https://mw.example/rest/v1beta1", assistant_name="bot", token="t")
    context = DeliveryContext(message=MESSAGE, user_id="u", now=NOW, state=state)
    if body is None:
        with pytest.raises(Skip):
            adapter.build_request(context)
        return
    request = adapter.build_request(context)
    assert request["json"] == body
    assert request["url"] == "https://mw.example/rest/v1beta1/conversations/conv_1/responses/resp_1/messages/msg_1/feedback"
    assert "t" not in request["headers"].values() and "Authorization" not in request["headers"]
    assert adapter.invalid(request) is None


@pytest.mark.parametrize(("kind", "skipped"), [
    (EventType.THUMBS_UP, False), (EventType.THUMBS_DOWN, False), (EventType.RATING, False),
    (EventType.COPY_OUTPUT, True), (EventType.COPY_INPUT, True), (EventType.PASTE, True), (EventType.RETRACT, True),
])
def test_skip_reason_table(kind, skipped):
    adapter = MoveworksAdapter(assistant_name="bot", token="t")
    reason = adapter.skip_reason(Event("e-1234567", kind, NOW), MESSAGE)
    assert (reason is not None) is skipped
    assert adapter.skip_reason(Event("e-1234567", EventType.THUMBS_UP, NOW), Message(
        1, "c", "m", "u", None, None, {}, NOW)) is not None


@pytest.mark.parametrize(("refs", "problem"), [
    ({**REFS, "conversation_id": "c-1"}, "conversation_id 'c-1' is not a Moveworks id"),
    ({**REFS, "response_id": "resp_"}, "response_id 'resp_' is not"),
    ({**REFS, "message_id": "msg_a/b"}, "message_id 'msg_a/b' is not"),
    ({k: v for k, v in REFS.items() if k != "message_id"}, "message_id is missing"),
    ({**REFS, "unhelpful_callback_id": ""}, "callback id for this vote is missing"),
])
def test_impossible_requests_are_named(refs, problem):
    adapter = MoveworksAdapter(assistant_name="bot", token="t")
    message = Message(1, "c", "m", "u", None, None, {"moveworks": refs}, NOW)
    request = adapter.build_request(DeliveryContext(message=message, user_id="u", now=NOW,
                                                    state=FeedbackState(vote="down")))
    assert problem in adapter.invalid(request)


@pytest.mark.parametrize("options", [
    {}, {"token": "a", "client_id": "b", "client_secret": "c"}, {"client_id": "b"},
    {"token_provider": "no.such.module:fn"}, {"token_provider": 42}, {"token": "t", "assistant_name": ""},
    {"token": "t", "base_url": "ftp://x"}, {"token": "t", "timeout": 0},
])
def test_bad_configuration_is_refused(make_app, options):
    from feedback_bridge.exceptions import ConfigurationError

    with pytest.raises(ConfigurationError):
        make_app(FEEDBACK_PROVIDERS={"moveworks": {"assistant_name": "bot", **options}})


# -- every error class ends in the right outbox state -----------------------------------------------------------


def test_throttle_keeps_it_pending_until_retry_after(app, mw):
    token, _ = new_message(app, mw)
    mw.fail_next(1, "throttle", retry_after=7)
    post(app, event("thumbs_up", token))
    before = datetime.now(timezone.utc)
    [row] = deliver(app)
    assert row["status"] == "pending" and row["attempts"] == 1
    assert row["next_attempt_at"] >= before + timedelta(seconds=7)
    assert row["response"] == {"status": 429, "retry_after": "7", "body": {
        "error": {"code": "RATE_LIMIT_EXCEEDED", "message": "Rate limit exceeded"}}}
    assert "RetryableDeliveryError" in row["last_error"] and row["request"]["json"]


@pytest.mark.parametrize(("fault", "error"), [
    ("error", "answered HTTP 500: INTERNAL_ERROR"), ("hang", "did not answer in time"),
    ("drop", "connection failed"),
])
def test_server_errors_hangs_and_drops_are_retried_then_delivered(make_app, mw, fault, error):
    app = make_app(FEEDBACK_PROVIDERS=config(mw), FEEDBACK_BACKOFF_BASE=0.01, FEEDBACK_BACKOFF_MAX=0.01)
    token, _ = new_message(app, mw)
    mw.fail_next(1, fault)
    post(app, event("thumbs_up", token))
    [row] = deliver(app)
    assert row["status"] == "pending" and error in row["last_error"]
    if fault != "error":  # no answer to record: what went wrong instead
        assert row["response"] == {"error": "ReadTimeout" if fault == "hang" else "ConnectionError"}
    if fault == "error":
        assert row["response"]["body"]["error"]["code"] == "INTERNAL_ERROR"
    runtime(app).worker.drain(now=datetime.now(timezone.utc) + timedelta(seconds=1))
    [row] = rows(app)
    assert row["status"] == "delivered" and row["attempts"] == 2
    assert len(mw.received) == 1
    mw.wait_for(2, accepted=False)  # a hung call is recorded when it ends: not in the next test's record


def test_unknown_message_is_a_permanent_404(app, mw):
    known = mw.add_message()
    refs = {**known.refs(), "message_id": "msg_NotKnownToMoveworks"}
    token = register(app, refs={"moveworks": refs})
    post(app, event("thumbs_up", token))
    [row] = deliver(app)
    assert row["status"] == "failed" and "PermanentDeliveryError" in row["last_error"]
    assert row["response"]["status"] == 404 and row["response"]["body"]["error"]["code"] == "NOT_FOUND"


def test_callback_id_of_another_message_is_a_permanent_400(app, mw):
    known, other = mw.add_message(), mw.add_message()
    token = register(app, refs={"moveworks": {**known.refs(), "helpful_callback_id": other.helpful_callback_id}})
    post(app, event("thumbs_up", token))
    [row] = deliver(app)
    assert row["status"] == "failed"
    assert row["response"]["status"] == 400 and row["response"]["body"]["error"]["code"] == "INVALID_REQUEST"


def test_an_impossible_request_is_recorded_with_the_reason_and_never_sent(app, mw):
    known = mw.add_message()
    token = register(app, refs={"moveworks": {**known.refs(), "conversation_id": "c-1"}})
    post(app, event("thumbs_up", token))
    [row] = deliver(app)
    assert row["status"] == "failed" and "conversation_id 'c-1' is not a Moveworks id" in row["last_error"]
    assert row["request"]["url"].endswith(f"/conversations/c-1/responses/{known.response_id}/messages/"
                                          f"{known.message_id}/feedback")
    assert row["response"] is None and mw.calls == []


def test_a_refused_static_token_fails_at_once_as_credentials(make_app, mw):
    app = make_app(FEEDBACK_PROVIDERS=config(mw, token="not-a-known-token"))
    token, _ = new_message(app, mw)
    post(app, event("thumbs_up", token))
    [row] = deliver(app)
    assert row["status"] == "failed" and "CredentialsError" in row["last_error"]
    assert row["response"]["status"] == 401 and row["response"]["body"]["error"]["code"] == "UNAUTHORIZED"
    assert len(mw.calls) == 1, "a static token cannot be refreshed: no second try"


def test_a_wrong_assistant_name_is_a_403_credentials_failure(make_app, mw):
    app = make_app(FEEDBACK_PROVIDERS=config(mw, assistant_name="someone-else"))
    token, _ = new_message(app, mw)
    post(app, event("thumbs_down", token))
    [row] = deliver(app)
    assert row["status"] == "failed" and row["response"]["status"] == 403


# -- access tokens ----------------------------------------------------------------------------------------------


def oauth(mw: MoveworksEmulator, **options: Any) -> dict[str, Any]:
    return config(mw, **{"token": None, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, **options})


def test_client_credentials_token_is_cached_then_refreshed_once_on_401(make_app, mw):
    app = make_app(FEEDBACK_PROVIDERS=oauth(mw))
    first, _ = new_message(app, mw, "m-1")
    second, _ = new_message(app, mw, "m-2")
    post(app, event("thumbs_up", first), event("thumbs_up", second))
    deliver(app)
    assert len(mw.received) == 2 and len(mw.token_requests) == 1, "one token for both deliveries"
    assert mw.token_requests[0] == {"client_id": CLIENT_ID, "grant_type": "client_credentials"}
    mw.expire_tokens()  # as if expires_in had passed on Moveworks' clock before ours
    post(app, event("thumbs_down", first))
    deliver(app)
    assert [c.status for c in mw.calls] == [200, 200, 401, 200]
    assert len(mw.token_requests) == 2 and mw.calls[2].headers["authorization"] != mw.calls[3].headers[
        "authorization"]
    assert [r["status"] for r in rows(app)] == ["delivered"] * 3


def test_client_credentials_refreshed_once_then_failed(make_app, mw):
    mw.token_ttl = 0  # every token the emulator issues is already expired
    app = make_app(FEEDBACK_PROVIDERS=oauth(mw))
    token, _ = new_message(app, mw)
    post(app, event("thumbs_up", token))
    [row] = deliver(app)
    assert row["status"] == "failed" and "CredentialsError" in row["last_error"]
    assert [c.status for c in mw.calls] == [401, 401] and len(mw.token_requests) == 2


def test_a_refused_client_is_a_credentials_failure_and_nothing_is_sent(make_app, mw):
    app = make_app(FEEDBACK_PROVIDERS=oauth(mw, client_secret="wrong"))
    token, _ = new_message(app, mw)
    post(app, event("thumbs_up", token))
    [row] = deliver(app)
    assert row["status"] == "failed" and "token endpoint answered HTTP 401" in row["last_error"]
    assert row["response"] == {"status": 401, "body": {"error": "invalid_client"}}
    assert mw.calls == []


def test_the_default_token_url_is_on_the_api_host():
    adapter = MoveworksAdapter(assistant_name="bot", client_id="a", client_secret="s3cr3t-value",
                               base_url="https://api.eu.moveworks.ai/rest/v1beta1")
    assert isinstance(adapter.tokens, ClientCredentials)
    assert adapter.tokens.token_url == "https://api.eu.moveworks.ai/oauth/v1/token"
    assert adapter.describe()["auth"] == "client credentials" and "s3cr3t" not in str(adapter.describe())


def test_concurrent_deliveries_fetch_one_token(mw):
    adapter = MoveworksAdapter(**oauth(mw)["moveworks"])
    tokens: list[str] = []
    barrier = threading.Barrier(8)

    def get() -> None:
        barrier.wait()
        tokens.append(adapter.tokens.get(None))

    threads = [threading.Thread(target=get) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    adapter.close()
    assert len(set(tokens)) == 1 and len(mw.token_requests) == 1


PROVIDED: list[tuple[str, bool]] = []


def provide_token(user_id: str, refresh: bool = False) -> str:
    """A per-user token provider, imported by its dotted path in the test below."""
    PROVIDED.append((user_id, refresh))
    return "stale-token" if not refresh else TOKEN


def test_token_provider_by_import_path_is_asked_per_user_and_again_on_401(make_app, mw):
    PROVIDED.clear()
    app = make_app(FEEDBACK_PROVIDERS=config(mw, token=None, token_provider="test_provider_moveworks:provide_token"))
    token, _ = new_message(app, mw)
    post(app, event("thumbs_up", token))
    [row] = deliver(app)
    assert row["status"] == "delivered" and row["request"]["user_id"] == "alice@example.com"
    assert PROVIDED == [("alice@example.com", False), ("alice@example.com", True)]
    assert [c.status for c in mw.calls] == [401, 200]


def test_token_provider_that_raises_is_retryable_without_its_message(make_app, mw):
    def broken(user_id: str) -> str:
        raise RuntimeError("identity service down: secret=hunter2")

    app = make_app(FEEDBACK_PROVIDERS=config(mw, token=None, token_provider=broken))
    token, _ = new_message(app, mw)
    post(app, event("thumbs_up", token))
    [row] = deliver(app)
    assert row["status"] == "pending" and "RuntimeError" in row["last_error"]
    assert "hunter2" not in str(row) and mw.calls == []


def test_a_token_no_header_can_carry_fails_as_credentials_without_reaching_the_record_or_log(make_app, mw, caplog):
    # A token read from a file with its trailing newline: http.client would refuse the header with a ValueError
    # that quotes it, and the worker would keep that message in the outbox and the log.
    app = make_app(FEEDBACK_PROVIDERS=config(mw, token=None, token_provider=lambda user_id: "mw-secret-42\n"))
    token, _ = new_message(app, mw)
    post(app, event("thumbs_up", token))
    [row] = deliver(app)
    assert row["status"] == "failed" and "CredentialsError" in row["last_error"], row["last_error"]
    assert "mw-secret-42" not in str(row) and "mw-secret-42" not in caplog.text and mw.calls == []


@pytest.mark.parametrize("bad", ["mw-token\n", " mw-token", "mw token"])
def test_a_static_token_no_header_can_carry_is_refused_at_configuration(make_app, mw, bad):
    from feedback_bridge.exceptions import ConfigurationError

    with pytest.raises(ConfigurationError) as raised:
        make_app(FEEDBACK_PROVIDERS=config(mw, token=bad))
    assert "mw-token" not in str(raised.value)


def test_an_assistant_name_no_header_can_carry_is_refused_at_configuration(make_app, mw):
    from feedback_bridge.exceptions import ConfigurationError

    with pytest.raises(ConfigurationError, match="Assistant-Name"):
        make_app(FEEDBACK_PROVIDERS=config(mw, assistant_name=ASSISTANT + "\n"))


def test_a_header_requests_refuses_fails_for_good_not_retried():
    # requests refuses the header before sending (InvalidHeader): no retry can change that.
    import requests

    from feedback_bridge.exceptions import PermanentDeliveryError
    from feedback_bridge.providers import http

    with pytest.raises(PermanentDeliveryError) as raised:
        http.request(requests.Session(), "POST", "http://127.0.0.1:9/x", timeout=(1, 1),
                     headers={"Assistant-Name": "bot\nX-Injected: 1"}, what="Moveworks")
    assert raised.value.response == {"error": "InvalidHeader"} and "Injected" not in str(raised.value)


def test_client_credentials_token_is_renewed_shortly_before_it_expires(mw):
    import requests

    now = [1000.0]
    mw.token_ttl = 100  # renewed 10 s early: a tenth of its life, as that is under a minute
    source = ClientCredentials(mw.url + "/oauth/v1/token", CLIENT_ID, CLIENT_SECRET, requests.Session(), (1, 1),
                               clock=lambda: now[0])
    first = source.get(None)
    now[0] += 89
    assert source.get(None) == first and len(mw.token_requests) == 1
    now[0] += 2
    assert source.get(None) != first and len(mw.token_requests) == 2


def test_concurrent_401s_refresh_the_token_once(mw):
    adapter = MoveworksAdapter(**oauth(mw)["moveworks"])
    stale = adapter.tokens.get(None)
    fresh: list[str] = []
    barrier = threading.Barrier(8)

    def refresh() -> None:
        barrier.wait()
        fresh.append(adapter.tokens.refresh(None, stale=stale))

    threads = [threading.Thread(target=refresh) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    adapter.close()
    assert len(set(fresh)) == 1 and stale not in fresh
    assert len(mw.token_requests) == 2, "the first token, and one refresh for all eight"
