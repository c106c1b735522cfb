"""Amazon Q Business: every mapping row and error class, checked on what the emulator received on the wire."""

from __future__ import annotations

import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from flask import Flask

from aws_support import ACCESS_KEY, CREDENTIALS, FAST, REGION, SECRET_KEY, deliver, use_fake_credentials
from conftest import register, runtime
from feedback_bridge import ConfigurationError, RetryableDeliveryError
from feedback_bridge.models import EventType, FeedbackState
from feedback_bridge.providers import Skip, aws
from feedback_bridge.providers.mapping import RatingThresholds
from feedback_bridge.providers.qbusiness import NO_DELETE, QBusinessAdapter, clean_comment, put_feedback_params
from feedback_bridge.testing import QBusinessEmulator
from support import event
from support import outbox_rows as rows
from support import post_events as post

APP_ID = "a1b2c3d4-0000-4000-8000-00000000000a"
OTHER_APP = "b1b2c3d4-0000-4000-8000-00000000000b"
CONV = "c1b2c3d4-0000-4000-8000-00000000000c"
MSG = "d1b2c3d4-0000-4000-8000-00000000000d"
REFS = {"qbusiness": {"conversation_id": CONV, "message_id": MSG}}
PATH = f"/applications/{APP_ID}/conversations/{CONV}/messages/{MSG}/feedback"
USER = "alice@example.com"


@pytest.fixture(scope="module")
def server():
    with QBusinessEmulator(applications=[APP_ID, OTHER_APP], credentials=CREDENTIALS, region=REGION) as emulator:
        emulator.hang_seconds = 1.0  # past the 0.3 s read timeout of the hang test, and soon over
        yield emulator


@pytest.fixture
def emulator(server: QBusinessEmulator, monkeypatch: pytest.MonkeyPatch) -> QBusinessEmulator:
    use_fake_credentials(monkeypatch)
    server.reset()
    return server


@pytest.fixture
def qb_app(make_app, emulator: QBusinessEmulator):
    """``qb_app(**options)``: an app whose only provider is Q Business, pointed at the emulator."""

    def factory(database_url: str | None = None, **options: Any) -> Flask:
        config = {"application_id": APP_ID, "region_name": REGION, "endpoint_url": emulator.url, **FAST, **options}
        extra = {"FEEDBACK_DATABASE_URL": database_url} if database_url else {}
        return make_app(FEEDBACK_PROVIDERS={"qbusiness": config}, **extra)

    return factory


def wire(emulator: QBusinessEmulator) -> list[dict[str, Any]]:
    """What the emulator accepted: path, userId and JSON body of each call."""
    return [{"path": c.path, "userId": c.query.get("userId"), "body": c.json()} for c in emulator.received]


def epoch(moment: datetime) -> Any:
    return pytest.approx(moment.timestamp(), abs=1)  # botocore 1.43 sends whole seconds, 1.44 fractional


# -- the mapping table on the wire --------------------------------------------------------------------------------


def test_thumbs_up_sends_useful_with_reason_comment_and_submitted_at(qb_app, emulator, database_url):
    app = qb_app(database_url)
    token = register(app, refs=REFS)
    at = datetime(2026, 11, 23, 15, 0, 0, tzinfo=timezone.utc)
    [row] = deliver(app, event("thumbs_up", token, reason="HELPFUL", comment="Exactly right",
                               occurred_at=at.isoformat()))
    assert wire(emulator) == [{"path": PATH, "userId": USER, "body": {"messageUsefulness": {
        "usefulness": "USEFUL", "reason": "HELPFUL", "comment": "Exactly right", "submittedAt": epoch(at)}}}]
    assert row["status"] == "delivered"
    assert row["request"] == {"operation": "PutFeedback", "params": {
        "applicationId": APP_ID, "conversationId": CONV, "messageId": MSG, "userId": USER,
        "messageUsefulness": {"usefulness": "USEFUL", "reason": "HELPFUL", "comment": "Exactly right",
                              "submittedAt": "2026-11-23T15:00:00+00:00"}}}
    assert row["response"]["status"] == 200 and row["response"]["retries"] == 0 and row["response"]["request_id"]
    assert ACCESS_KEY not in str(row) and SECRET_KEY not in str(row), "no credential is recorded"


def test_thumbs_down_sends_not_useful_with_reason_and_comment(qb_app, emulator):
    app = qb_app()
    token = register(app, refs=REFS)
    deliver(app, event("thumbs_down", token, reason="NOT_FACTUALLY_CORRECT", comment="The dates are wrong"))
    [call] = wire(emulator)
    usefulness = call["body"]["messageUsefulness"]
    assert (usefulness["usefulness"], usefulness["reason"], usefulness["comment"]) == (
        "NOT_USEFUL", "NOT_FACTUALLY_CORRECT", "The dates are wrong")
    assert "messageCopiedAt" not in call["body"]


@pytest.mark.parametrize(("thresholds", "value", "expected"), [
    (None, 1, "NOT_USEFUL"), (None, 2, "NOT_USEFUL"), (None, 3, None), (None, 4, "USEFUL"), (None, 5, "USEFUL"),
    ({"positive": 5, "negative": 3}, 3, "NOT_USEFUL"), ({"positive": 5, "negative": 3}, 4, None),
    ({"positive": 5, "negative": 3}, 5, "USEFUL"),
])
def test_a_rating_sends_usefulness_by_threshold(qb_app, emulator, thresholds, value, expected):
    app = qb_app(rating_thresholds=thresholds)
    token = register(app, refs=REFS)
    [row] = deliver(app, event("rating", token, value=value))
    if expected is None:
        assert emulator.calls == []
        assert row["status"] == "skipped" and f"A rating of {value} is neither useful" in row["last_error"]
    else:
        [call] = wire(emulator)
        assert call["body"]["messageUsefulness"]["usefulness"] == expected


def test_a_thumb_wins_over_a_rating(qb_app, emulator):
    app = qb_app()
    token = register(app, refs=REFS)
    deliver(app, event("rating", token, value=1), event("thumbs_up", token))
    assert [c["body"]["messageUsefulness"]["usefulness"] for c in wire(emulator)] == ["USEFUL"]


def test_a_copy_of_the_answer_sends_the_first_copy_time_with_the_known_usefulness(qb_app, emulator):
    app = qb_app()
    token = register(app, refs=REFS)
    first = datetime.now(timezone.utc) - timedelta(minutes=5)
    voted = first - timedelta(minutes=1)
    deliver(app, event("thumbs_up", token, occurred_at=voted.isoformat()))
    deliver(app, event("copy_output", token, text="Open Settings", occurred_at=first.isoformat()))
    deliver(app, event("copy_output", token, text="Security", occurred_at=(first + timedelta(minutes=1)).isoformat()))
    calls = wire(emulator)
    assert "messageCopiedAt" not in calls[0]["body"]
    assert [c["body"]["messageCopiedAt"] for c in calls[1:]] == [epoch(first)] * (len(calls) - 1)
    assert all(c["body"]["messageUsefulness"]["usefulness"] == "USEFUL" for c in calls)
    assert [c["body"]["messageUsefulness"]["submittedAt"] for c in calls] == [epoch(voted)] * len(calls), (
        "a copy does not move the time the verdict was given")


def test_a_copy_without_a_vote_sends_only_the_copy_time(qb_app, emulator):
    app = qb_app()
    token = register(app, refs=REFS)
    at = datetime.now(timezone.utc) - timedelta(minutes=1)
    deliver(app, event("copy_output", token, text="Open Settings", occurred_at=at.isoformat()))
    assert [c["body"] for c in wire(emulator)] == [{"messageCopiedAt": epoch(at)}]


@pytest.mark.parametrize(("kind", "reason"), [
    ("copy_input", "cannot express a copy of the prompt"), ("paste", "cannot express a paste"),
])
def test_a_copy_of_the_prompt_or_a_paste_is_skipped_at_ingest(qb_app, emulator, kind, reason):
    app = qb_app()
    token = register(app, refs=REFS)
    [row] = deliver(app, event(kind, token, text="my question"))
    assert row["status"] == "skipped" and reason in row["last_error"] and row["attempts"] == 0
    assert emulator.calls == []


def test_a_reason_and_comment_added_later_send_the_full_state_again(qb_app, emulator):
    app = qb_app()
    token = register(app, refs=REFS)
    vote = event("thumbs_down", token)
    deliver(app, vote)
    deliver(app, event("thumbs_down", token, amends=vote["id"], reason="NOT_COMPLETE", comment="Step 3?"))
    first, second = (c["body"]["messageUsefulness"] for c in wire(emulator))
    assert first.keys() == {"usefulness", "submittedAt"}
    assert (second["usefulness"], second["reason"], second["comment"]) == ("NOT_USEFUL", "NOT_COMPLETE", "Step 3?")


def test_a_retract_is_skipped_at_ingest_for_want_of_a_delete_api(qb_app, emulator):
    app = qb_app()
    token = register(app, refs=REFS)
    deliver(app, event("thumbs_up", token))
    *_, row = deliver(app, event("retract", token))
    assert (row["status"], row["last_error"]) == ("skipped", NO_DELETE)
    assert len(emulator.calls) == 1


def test_user_id_is_left_out_when_send_user_id_is_false(qb_app, emulator):
    app = qb_app(send_user_id=False)
    deliver(app, event("thumbs_up", register(app, refs=REFS)))
    [call] = emulator.received
    assert call.query == {}


def test_an_application_id_in_the_refs_overrides_the_config(qb_app, emulator):
    app = qb_app()
    refs = {"qbusiness": {**REFS["qbusiness"], "application_id": OTHER_APP}}
    deliver(app, event("thumbs_up", register(app, refs=refs)))
    assert [c.path for c in emulator.received] == [PATH.replace(APP_ID, OTHER_APP)]


def test_a_message_without_refs_is_skipped_with_the_reason_recorded_at_ingest(qb_app, emulator):
    app = qb_app()
    [row] = deliver(app, event("thumbs_up", register(app)))
    assert row["status"] == "skipped" and row["attempts"] == 0
    assert "registered without Amazon Q Business refs" in row["last_error"]
    assert "conversation_id, message_id" in row["last_error"]
    assert emulator.calls == []


def test_a_multi_line_comment_is_sent_on_one_line(qb_app, emulator):
    app = qb_app()
    deliver(app, event("thumbs_down", register(app, refs=REFS), comment="Step 3\nis missing\tentirely"))
    [call] = wire(emulator)
    assert call["body"]["messageUsefulness"]["comment"] == "Step 3 is missing entirely"


def test_a_request_that_cannot_be_valid_fails_without_being_sent(qb_app, emulator):
    app = qb_app()
    refs = {"qbusiness": {"conversation_id": "-" + CONV[1:], "message_id": MSG[:-1]}}
    [row] = deliver(app, event("thumbs_up", register(app, refs=refs)))
    assert row["status"] == "failed" and row["last_error"].startswith("PermanentDeliveryError: Not sent")
    assert "conversationId: must match the pattern" in row["last_error"]
    assert "messageId: must have exactly 36 characters" in row["last_error"]
    assert row["request"]["params"]["messageId"] == MSG[:-1], "the request is kept for the operator"
    assert emulator.calls == []


# -- every error class ends in the right outbox state ----------------------------------------------------------
# One botocore attempt per delivery here (no backoff sleep inside botocore); the bounded retries of the default
# are measured in test_a_throttled_send_returns_quickly_after_botocores_bounded_attempts.


def test_a_throttle_is_retried_after_retry_after_then_delivered(qb_app, emulator, database_url):
    app = qb_app(database_url, max_attempts=1)
    emulator.fail_next(1, "throttle", retry_after=7)
    before = datetime.now(timezone.utc)
    [row] = deliver(app, event("thumbs_up", register(app, refs=REFS)))
    assert row["status"] == "pending" and row["attempts"] == 1
    assert row["last_error"].startswith("RetryableDeliveryError: ThrottlingException (HTTP 429)")
    assert row["response"]["status"] == 429 and row["response"]["code"] == "ThrottlingException"
    assert row["response"]["retry_after"] == 7 and row["response"]["retries"] == 0
    assert row["response"]["request_id"]
    assert before + timedelta(seconds=7) <= row["next_attempt_at"] <= datetime.now(timezone.utc) + timedelta(seconds=7)
    assert len(emulator.calls) == 1 and emulator.received == []
    runtime(app).worker.drain(now=datetime.now(timezone.utc) + timedelta(seconds=8))
    [row] = rows(app)
    assert (row["status"], row["attempts"]) == ("delivered", 2)
    assert len(emulator.received) == 1


@pytest.mark.parametrize("status", [500, 503])
def test_a_server_error_is_retried(qb_app, emulator, status):
    app = qb_app(max_attempts=1)
    emulator.fail_next(1, "error", status=status)
    [row] = deliver(app, event("thumbs_up", register(app, refs=REFS)))
    assert row["status"] == "pending" and row["next_attempt_at"] > datetime.now(timezone.utc)
    assert (row["response"]["status"], row["response"]["code"]) == (status, "InternalServerException")


def test_a_hang_past_the_read_timeout_is_retried(qb_app, emulator):
    app = qb_app(read_timeout=0.3, max_attempts=1)
    emulator.fail_next(1, "hang")
    started = time.monotonic()
    [row] = deliver(app, event("thumbs_up", register(app, refs=REFS)))
    assert time.monotonic() - started < 3
    assert row["status"] == "pending" and row["response"]["code"] == "ReadTimeoutError"
    assert row["response"]["status"] is None
    emulator.wait_for(1, accepted=False)  # the held request ends before the next test starts


def test_a_dropped_connection_is_retried(qb_app, emulator):
    app = qb_app(max_attempts=1)
    emulator.fail_next(1, "drop")
    [row] = deliver(app, event("thumbs_up", register(app, refs=REFS)))
    assert row["status"] == "pending" and row["response"]["code"] == "ConnectionClosedError"
    assert [c.fault for c in emulator.calls] == ["drop"]


def test_wrong_credentials_fail_as_a_credentials_error(qb_app, emulator, monkeypatch):
    use_fake_credentials(monkeypatch, secret="not-" + SECRET_KEY)
    app = qb_app()
    [row] = deliver(app, event("thumbs_up", register(app, refs=REFS)))
    assert row["status"] == "failed" and row["last_error"].startswith("CredentialsError: AccessDeniedException")
    assert (row["response"]["status"], row["response"]["code"]) == (403, "AccessDeniedException")
    assert SECRET_KEY not in str(row["request"]) + str(row["response"])
    assert emulator.received == []
    aws.forget_clients()


def test_no_credentials_at_all_fail_as_a_credentials_error_without_a_call(qb_app, emulator, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    aws.forget_clients()
    app = qb_app()
    [row] = deliver(app, event("thumbs_up", register(app, refs=REFS)))
    assert row["status"] == "failed" and row["last_error"].startswith("CredentialsError: No usable AWS credentials")
    assert row["response"]["code"] == "NoCredentialsError"
    assert emulator.calls == []
    aws.forget_clients()


def test_a_session_token_no_header_can_carry_fails_as_credentials_without_being_recorded(
    qb_app, emulator, monkeypatch, caplog
):
    # A session token with a trailing newline: http.client refuses the header with a ValueError quoting it,
    # which botocore wraps in an HTTPClientError whose message the outbox and the log would keep.
    monkeypatch.setenv("AWS_SESSION_TOKEN", "IQoJsession-secret-77\n")
    aws.forget_clients()
    app = qb_app()
    [row] = deliver(app, event("thumbs_up", register(app, refs=REFS)))
    assert row["status"] == "failed" and row["last_error"].startswith("CredentialsError"), row["last_error"]
    assert "session-secret-77" not in str(row) and "session-secret-77" not in caplog.text
    assert emulator.calls == []
    aws.forget_clients()


def test_a_missing_profile_fails_as_a_credentials_error_without_a_call(qb_app, emulator):
    app = qb_app(profile_name="no-such-profile")
    [row] = deliver(app, event("thumbs_up", register(app, refs=REFS)))
    assert row["status"] == "failed" and row["response"]["code"] == "ProfileNotFound"
    assert "no-such-profile" in row["last_error"] and emulator.calls == []


def test_an_unknown_application_fails_for_good(qb_app, emulator):
    app = qb_app()
    refs = {"qbusiness": {**REFS["qbusiness"], "application_id": "e" * 36}}
    [row] = deliver(app, event("thumbs_up", register(app, refs=refs)))
    assert row["status"] == "failed" and "ResourceNotFoundException (HTTP 404)" in row["last_error"]
    assert row["response"]["resourceType"] == "APPLICATION" and row["response"]["resourceId"] == "e" * 36


def test_a_validation_error_from_the_service_fails_for_good(qb_app, emulator, monkeypatch):
    # Our own check would stop this request; without it, the emulator's check answers as the service would.
    monkeypatch.setattr(aws, "validate", lambda shape, value, path="": [])
    app = qb_app()
    refs = {"qbusiness": {"conversation_id": "-" + CONV[1:], "message_id": MSG}}
    [row] = deliver(app, event("thumbs_up", register(app, refs=refs)))
    assert row["status"] == "failed" and "ValidationException (HTTP 400)" in row["last_error"]
    assert row["response"]["reason"] == "FIELD_VALIDATION_FAILED"
    assert [f["name"] for f in row["response"]["fields"]] == ["conversationId"]
    assert len(emulator.calls) == 1 and emulator.received == []


# -- the client ------------------------------------------------------------------------------------------------


def test_a_throttled_send_returns_quickly_after_botocores_bounded_attempts(qb_app, emulator):
    adapter = runtime(qb_app()).adapters["qbusiness"]
    request = {"operation": "PutFeedback", "params": {"applicationId": APP_ID, "conversationId": CONV,
                                                      "messageId": MSG}}
    emulator.fail_next(10, "throttle", retry_after=None)
    started = time.monotonic()
    with pytest.raises(RetryableDeliveryError) as caught:
        adapter.send(request)
    elapsed = time.monotonic() - started
    assert len(emulator.calls) == 2, "botocore made max_attempts=2 attempts, not legacy mode's 5"
    assert elapsed < 2.0, f"one backoff of at most 1 s, not ~10 s: took {elapsed:.2f}s"
    assert caught.value.retry_after is None and caught.value.response["retries"] == 1

    emulator.reset()
    single = runtime(qb_app(max_attempts=1)).adapters["qbusiness"]
    emulator.fail_next(10, "throttle")
    with pytest.raises(RetryableDeliveryError):
        single.send(request)
    assert len(emulator.calls) == 1


def test_one_client_per_process_and_settings_shared_across_threads(emulator):
    options = {"region_name": REGION, "endpoint_url": emulator.url, "connect_timeout": 1.0, "read_timeout": 1.0}
    barrier = threading.Barrier(8)

    def get(_: int) -> int:
        barrier.wait()
        return id(aws.aws_client("qbusiness", **options))

    with ThreadPoolExecutor(8) as pool:
        assert len(set(pool.map(get, range(8)))) == 1
    assert aws.aws_client("qbusiness", **options) is not aws.aws_client("qbusiness", **{**options, "max_attempts": 1})


def test_the_adapter_validates_its_config_and_describes_itself_without_credentials(make_app):
    base = {"application_id": APP_ID, "region_name": REGION}
    for bad, key in [
        ({"application_id": "short"}, "application_id"), ({"application_id": "-" + APP_ID[1:]}, "application_id"),
        ({"region_name": ""}, "region_name"), ({"send_user_id": "yes"}, "send_user_id"),
        ({"endpoint_url": "localhost:1"}, "endpoint_url"), ({"max_attempts": 0}, "max_attempts"),
        ({"read_timeout": -1}, "read_timeout"), ({"rating_thresholds": {"positive": 2, "negative": 3}}, "rating"),
        ({"aws_secret_access_key": "x"}, "aws_secret_access_key"),
    ]:
        with pytest.raises(ConfigurationError, match=key):
            make_app(FEEDBACK_PROVIDERS={"qbusiness": {**base, **bad}})
    with pytest.raises(ConfigurationError, match="application_id"):
        make_app(FEEDBACK_PROVIDERS={"qbusiness": {"region_name": REGION}})
    adapter = QBusinessAdapter(**base, profile_name="feedback")
    assert adapter.describe() == {
        "name": "qbusiness", "mode": "state", "adapter": "QBusinessAdapter", "service": "qbusiness",
        "region_name": REGION, "endpoint_url": None, "profile_name": "feedback",
        "rating_thresholds": {"positive": 4, "negative": 2}, "application_id": APP_ID, "send_user_id": True,
    }


# -- the mapping as pure functions -----------------------------------------------------------------------------

T0 = datetime(2026, 11, 23, 15, 0, tzinfo=timezone.utc)
T1 = T0 + timedelta(minutes=2)
IDS = {"application_id": APP_ID, "conversation_id": CONV, "message_id": MSG}


@pytest.mark.parametrize(("state", "expected"), [
    (FeedbackState(vote="up", updated_at=T0), {"messageUsefulness": {"usefulness": "USEFUL",
                                                                     "submittedAt": T0.isoformat()}}),
    (FeedbackState(vote="down", reason="OTHER", comment=" Too long ", updated_at=T0),
     {"messageUsefulness": {"usefulness": "NOT_USEFUL", "reason": "OTHER", "comment": "Too long",
                            "submittedAt": T0.isoformat()}}),
    (FeedbackState(rating=4, updated_at=T0), {"messageUsefulness": {"usefulness": "USEFUL",
                                                                    "submittedAt": T0.isoformat()}}),
    (FeedbackState(rating=2, vote="up", updated_at=T0), {"messageUsefulness": {"usefulness": "USEFUL",
                                                                               "submittedAt": T0.isoformat()}}),
    (FeedbackState(vote="up", copied_at=T0, copy_count=2, updated_at=T1),
     {"messageUsefulness": {"usefulness": "USEFUL", "submittedAt": T1.isoformat()}, "messageCopiedAt": T0.isoformat()}),
    (FeedbackState(rating=3, copied_at=T0, copy_count=1, updated_at=T1), {"messageCopiedAt": T0.isoformat()}),
    (FeedbackState(rating=3, reason="OTHER", updated_at=T0), "A rating of 3 is neither useful (>= 4)"),
    (FeedbackState(), "No vote, rating or copy"),
])
def test_put_feedback_params(state: FeedbackState, expected: Any):
    def build(**kw: Any) -> dict[str, Any]:
        return put_feedback_params(state, **IDS, user_id=None, thresholds=RatingThresholds(), now=T1, **kw)

    if isinstance(expected, str):
        with pytest.raises(Skip, match=re.escape(expected)):
            build()
        return
    ids = {"applicationId": APP_ID, "conversationId": CONV, "messageId": MSG}
    assert build() == {**ids, **expected}


def test_clean_comment_keeps_text_and_drops_control_and_format_characters():
    assert clean_comment("a\r\nb\tc\u200bd\x07e") == "a b cde"
    assert clean_comment("Ünïcödé 👍 ok") == "Ünïcödé 👍 ok"
    assert clean_comment("\n\t ") is None and clean_comment(None) is None


@pytest.mark.parametrize(("kind", "skipped"), [
    (EventType.THUMBS_UP, False), (EventType.THUMBS_DOWN, False), (EventType.RATING, False),
    (EventType.COPY_OUTPUT, False), (EventType.COPY_INPUT, True), (EventType.PASTE, True), (EventType.RETRACT, True),
])
def test_skip_reason_by_event_type(kind: EventType, skipped: bool):
    from feedback_bridge.models import Event, Message

    adapter = QBusinessAdapter(application_id=APP_ID, region_name=REGION)
    message = Message(pk=1, conversation_id="c", message_id="m", user_id=USER, input=None, output=None,
                      refs=REFS, created_at=T0)
    reason = adapter.skip_reason(Event(event_id="e1", type=kind, occurred_at=T0), message)
    assert (reason is not None) == skipped
    bare = Message(**{**message.__dict__, "refs": {}})
    assert adapter.skip_reason(Event(event_id="e1", type=kind, occurred_at=T0), bare) is not None


def test_events_after_a_state_with_nothing_to_send_are_not_lost(qb_app, emulator):
    app = qb_app()
    token = register(app, refs=REFS)
    deliver(app, event("rating", token, value=3))
    post(app, event("rating", token, value=5))
    runtime(app).worker.drain()
    assert [r["status"] for r in rows(app)] == ["skipped", "delivered"]
    assert wire(emulator)[0]["body"]["messageUsefulness"]["usefulness"] == "USEFUL"


def test_static_credentials_sign_without_any_credential_chain(qb_app, emulator, monkeypatch):
    """What the demo does: an emulator needs a signature, not an account."""
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(key)
    app = qb_app(static_credentials=[ACCESS_KEY, SECRET_KEY])
    [row] = deliver(app, event("thumbs_up", register(app, refs=REFS)))
    assert row["status"] == "delivered" and len(emulator.received) == 1
    adapter = runtime(app).adapters["qbusiness"]
    assert SECRET_KEY not in str(adapter.describe()) and SECRET_KEY not in str(row)


@pytest.mark.parametrize("bad", ["key:secret", [ACCESS_KEY], [ACCESS_KEY, ""], (ACCESS_KEY, 1)])
def test_static_credentials_must_be_a_pair(make_app, bad):
    with pytest.raises(ConfigurationError, match="static_credentials must be a"):
        make_app(FEEDBACK_PROVIDERS={"qbusiness": {"application_id": APP_ID, "region_name": REGION,
                                                   "static_credentials": bad}})
