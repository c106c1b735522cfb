"""Amazon Q Connect: every mapping row and error class, checked on what the emulator received on the wire."""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from flask import Flask

from aws_support import CREDENTIALS, FAST, REGION, SECRET_KEY, deliver, use_fake_credentials
from conftest import register, runtime
from feedback_bridge import ConfigurationError, RetryableDeliveryError
from feedback_bridge.models import Event, EventType, FeedbackState, Message
from feedback_bridge.providers import Skip, aws
from feedback_bridge.providers.mapping import RatingThresholds
from feedback_bridge.providers.qconnect import NO_DELETE, NOTHING_NEW, QConnectAdapter, put_feedback_params
from feedback_bridge.testing import QConnectEmulator
from support import event
from support import outbox_rows as rows
from support import post_events as post

ASSISTANT = "5a1e0c4e-7a2b-4c3d-9e8f-0123456789ab"
ASSISTANT_ARN = f"arn:aws:wisdom:{REGION}:123456789012:assistant/{ASSISTANT}"
TARGET = "0f0e0d0c-0b0a-4998-8776-655443322110"
REFS = {"qconnect": {"target_id": TARGET}}
PATH = f"/assistants/{ASSISTANT}/feedback"


@pytest.fixture(scope="module")
def server():
    with QConnectEmulator(assistants=[ASSISTANT], credentials=CREDENTIALS, region=REGION) as emulator:
        emulator.hang_seconds = 1.0  # past the 0.3 s read timeout of the hang test, and soon over
        yield emulator


@pytest.fixture
def emulator(server: QConnectEmulator, monkeypatch: pytest.MonkeyPatch) -> QConnectEmulator:
    use_fake_credentials(monkeypatch)
    server.reset()
    return server


@pytest.fixture
def qc_app(make_app, emulator: QConnectEmulator):
    def factory(database_url: str | None = None, **options: Any) -> Flask:
        config = {"assistant_id": ASSISTANT, "region_name": REGION, "endpoint_url": emulator.url, **FAST, **options}
        extra = {"FEEDBACK_DATABASE_URL": database_url} if database_url else {}
        return make_app(FEEDBACK_PROVIDERS={"qconnect": config}, **extra)

    return factory


def sent(emulator: QConnectEmulator) -> list[tuple[str, str, str | None]]:
    """(targetId, targetType, relevance) of each accepted call."""
    result = []
    for call in emulator.received:
        body = call.json()
        result.append((body["targetId"], body["targetType"],
                       body["contentFeedback"]["generativeContentFeedbackData"]["relevance"]))
    return result


# -- the mapping table on the wire --------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "relevance"), [("thumbs_up", "HELPFUL"), ("thumbs_down", "NOT_HELPFUL")])
def test_a_thumb_sends_its_relevance(qc_app, emulator, database_url, kind, relevance):
    app = qc_app(database_url)
    [row] = deliver(app, event(kind, register(app, refs=REFS), reason="OTHER", comment="ignored: no field"))
    [call] = emulator.received
    assert (call.method, call.path, call.query) == ("PUT", PATH, {})
    assert call.json() == {"targetId": TARGET, "targetType": "MESSAGE",
                           "contentFeedback": {"generativeContentFeedbackData": {"relevance": relevance}}}
    assert row["status"] == "delivered"
    assert row["request"] == {"operation": "PutFeedback", "params": {"assistantId": ASSISTANT, **call.json()}}
    assert row["response"]["status"] == 200 and row["response"]["request_id"]
    assert row["response"]["body"] == {
        "assistantId": ASSISTANT, "assistantArn": ASSISTANT_ARN, "targetId": TARGET, "targetType": "MESSAGE",
        "contentFeedback": {"generativeContentFeedbackData": {"relevance": relevance}},
    }, "the echoed feedback is kept"


@pytest.mark.parametrize(("thresholds", "value", "expected"), [
    (None, 1, "NOT_HELPFUL"), (None, 2, "NOT_HELPFUL"), (None, 3, None), (None, 4, "HELPFUL"), (None, 5, "HELPFUL"),
    ({"positive": 5, "negative": 1}, 2, None), ({"positive": 5, "negative": 1}, 4, None),
    ({"positive": 5, "negative": 1}, 1, "NOT_HELPFUL"),
])
def test_a_rating_sends_relevance_by_threshold(qc_app, emulator, thresholds, value, expected):
    app = qc_app(rating_thresholds=thresholds)
    [row] = deliver(app, event("rating", register(app, refs=REFS), value=value))
    if expected is None:
        assert emulator.calls == []
        assert row["status"] == "skipped" and f"A rating of {value} is neither helpful" in row["last_error"]
    else:
        assert sent(emulator) == [(TARGET, "MESSAGE", expected)]


@pytest.mark.parametrize(("kind", "what"), [
    ("copy_output", "a copy of the answer"), ("copy_input", "a copy of the prompt"), ("paste", "a paste"),
])
def test_copies_and_pastes_are_skipped_at_ingest(qc_app, emulator, kind, what):
    app = qc_app()
    [row] = deliver(app, event(kind, register(app, refs=REFS), text="Open Settings"))
    assert row["status"] == "skipped" and row["attempts"] == 0
    assert row["last_error"] == f"Amazon Q Connect cannot express {what}: it only takes helpful or not helpful."
    assert emulator.calls == []


def test_a_reason_or_comment_added_later_is_skipped_as_nothing_new(qc_app, emulator):
    app = qc_app()
    token = register(app, refs=REFS)
    vote = event("thumbs_down", token)
    deliver(app, vote)
    *_, amendment = deliver(app, event("thumbs_down", token, amends=vote["id"], reason="NOT_COMPLETE", comment="x"))
    assert (amendment["status"], amendment["last_error"]) == ("skipped", NOTHING_NEW)
    # The same vote sent again with a reason (not as an amendment) maps to the same request: the worker skips it.
    *_, again = deliver(app, event("thumbs_down", token, reason="NOT_CONCISE"))
    assert (again["status"], again["last_error"]) == ("skipped", "Unchanged since the last delivery.")
    assert sent(emulator) == [(TARGET, "MESSAGE", "NOT_HELPFUL")]


def test_a_copy_between_a_vote_and_its_comment_changes_nothing_sent(qc_app, emulator):
    app = qc_app()
    token = register(app, refs=REFS)
    vote = event("thumbs_up", token)
    deliver(app, vote)
    deliver(app, event("copy_output", token, text="Open Settings"))
    deliver(app, event("thumbs_up", token, amends=vote["id"], comment="great"))
    assert [(r["status"], r["last_error"]) for r in rows(app)][1:] == [
        ("skipped", "Amazon Q Connect cannot express a copy of the answer: it only takes helpful or not helpful."),
        ("skipped", NOTHING_NEW),
    ]
    assert len(emulator.received) == 1


def test_a_retract_is_skipped_at_ingest_for_want_of_a_delete_api(qc_app, emulator):
    app = qc_app()
    token = register(app, refs=REFS)
    deliver(app, event("thumbs_up", token))
    *_, row = deliver(app, event("retract", token))
    assert (row["status"], row["last_error"]) == ("skipped", NO_DELETE)
    assert len(emulator.calls) == 1


def test_a_flip_after_delivery_is_sent(qc_app, emulator):
    app = qc_app()
    token = register(app, refs=REFS)
    deliver(app, event("thumbs_up", token))
    deliver(app, event("thumbs_down", token))
    assert [r for _, _, r in sent(emulator)] == ["HELPFUL", "NOT_HELPFUL"]


def test_the_target_type_comes_from_the_refs_or_the_config(qc_app, emulator):
    app = qc_app(target_type="RESULT")
    deliver(app, event("thumbs_up", register(app, message_id="m-1", refs=REFS)))
    deliver(app, event("thumbs_up", register(app, message_id="m-2", refs={
        "qconnect": {"target_id": TARGET, "target_type": "RECOMMENDATION"}})))
    assert [t for _, t, _ in sent(emulator)] == ["RESULT", "RECOMMENDATION"]


def test_an_assistant_arn_is_sent_percent_encoded_in_the_path(qc_app, emulator):
    app = qc_app(assistant_id=ASSISTANT_ARN)
    deliver(app, event("thumbs_up", register(app, refs=REFS)))
    [call] = emulator.received
    assert call.path == f"/assistants/{ASSISTANT_ARN}/feedback"
    assert emulator.accepted[0]["params"]["assistantId"] == ASSISTANT_ARN


def test_a_message_without_refs_is_skipped_with_the_reason_recorded_at_ingest(qc_app, emulator):
    app = qc_app()
    [row] = deliver(app, event("thumbs_up", register(app, refs={"qbusiness": {"conversation_id": "x"}})))
    assert row["status"] == "skipped" and "registered without Amazon Q Connect refs" in row["last_error"]
    assert "needs target_id" in row["last_error"]
    assert emulator.calls == []


@pytest.mark.parametrize(("refs", "problem"), [
    ({"target_id": TARGET.upper()}, "targetId: must match the pattern"),
    ({"target_id": "msg-42"}, "targetId: must match the pattern"),
    ({"target_id": TARGET, "target_type": "ANSWER"}, "targetType: must be one of RECOMMENDATION, RESULT, MESSAGE"),
])
def test_a_request_that_cannot_be_valid_fails_without_being_sent(qc_app, emulator, refs, problem):
    app = qc_app()
    [row] = deliver(app, event("thumbs_up", register(app, refs={"qconnect": refs})))
    assert row["status"] == "failed" and row["last_error"].startswith("PermanentDeliveryError: Not sent")
    assert problem in row["last_error"] and row["request"]["params"]["targetId"] == refs["target_id"]
    assert emulator.calls == []


# -- every error class ends in the right outbox state ----------------------------------------------------------


def test_a_throttle_answered_with_http_400_is_retried(qc_app, emulator, database_url):
    app = qc_app(database_url, max_attempts=1)
    emulator.fail_next(1, "throttle", retry_after=None)
    [row] = deliver(app, event("thumbs_up", register(app, refs=REFS)))
    assert row["status"] == "pending" and row["attempts"] == 1 and row["next_attempt_at"] > datetime.now(timezone.utc)
    assert (row["response"]["status"], row["response"]["code"]) == (400, "ThrottlingException")
    assert row["last_error"] == "RetryableDeliveryError: ThrottlingException (HTTP 400): Rate exceeded"
    runtime(app).worker.drain(now=datetime.now(timezone.utc) + timedelta(seconds=10))
    assert [r["status"] for r in rows(app)] == ["delivered"] and len(emulator.received) == 1


def test_retry_after_on_a_throttle_is_honoured(qc_app, emulator):
    app = qc_app(max_attempts=1)
    emulator.fail_next(1, "throttle", retry_after=30)
    [row] = deliver(app, event("thumbs_up", register(app, refs=REFS)))
    wait = (row["next_attempt_at"] - datetime.now(timezone.utc)).total_seconds()
    assert row["response"]["retry_after"] == 30 and 28 < wait <= 30


def test_a_server_error_is_retried(qc_app, emulator):
    app = qc_app(max_attempts=1)
    emulator.fail_next(1, "error")
    [row] = deliver(app, event("thumbs_up", register(app, refs=REFS)))
    assert row["status"] == "pending" and (row["response"]["status"], row["response"]["code"]) == (
        500, "InternalFailure")


def test_a_hang_past_the_read_timeout_is_retried(qc_app, emulator):
    app = qc_app(read_timeout=0.3, max_attempts=1)
    emulator.fail_next(1, "hang")
    [row] = deliver(app, event("thumbs_up", register(app, refs=REFS)))
    assert row["status"] == "pending" and row["response"]["code"] == "ReadTimeoutError"
    emulator.wait_for(1, accepted=False)  # the held request ends before the next test starts


def test_a_dropped_connection_is_retried(qc_app, emulator):
    app = qc_app(max_attempts=1)
    emulator.fail_next(1, "drop")
    [row] = deliver(app, event("thumbs_up", register(app, refs=REFS)))
    assert row["status"] == "pending" and row["response"]["code"] == "ConnectionClosedError"


def test_wrong_credentials_fail_as_a_credentials_error(qc_app, emulator, monkeypatch):
    use_fake_credentials(monkeypatch, secret="not-" + SECRET_KEY)
    app = qc_app()
    [row] = deliver(app, event("thumbs_up", register(app, refs=REFS)))
    assert row["status"] == "failed" and row["last_error"].startswith("CredentialsError: AccessDeniedException")
    assert row["response"]["status"] == 403 and "signature" in row["response"]["message"]
    assert emulator.received == []
    aws.forget_clients()


def test_an_unknown_assistant_fails_for_good(qc_app, emulator):
    app = qc_app(assistant_id="00000000-0000-4000-8000-000000000000")
    [row] = deliver(app, event("thumbs_up", register(app, refs=REFS)))
    assert row["status"] == "failed" and "ResourceNotFoundException (HTTP 404)" in row["last_error"]
    assert row["response"]["resourceName"] == "00000000-0000-4000-8000-000000000000"


def test_a_validation_error_from_the_service_fails_for_good(qc_app, emulator, monkeypatch):
    monkeypatch.setattr(aws, "validate", lambda shape, value, path="": [])
    app = qc_app()
    [row] = deliver(app, event("thumbs_up", register(app, refs={"qconnect": {"target_id": TARGET.upper()}})))
    assert row["status"] == "failed" and "ValidationException (HTTP 400)" in row["last_error"]
    assert "targetId" in row["response"]["message"]
    assert len(emulator.calls) == 1 and emulator.received == []


def test_a_throttled_send_returns_quickly_after_botocores_bounded_attempts(qc_app, emulator):
    adapter = runtime(qc_app()).adapters["qconnect"]
    request = {"operation": "PutFeedback", "params": put_feedback_params(
        FeedbackState(vote="up"), assistant_id=ASSISTANT, target_id=TARGET, target_type="MESSAGE",
        thresholds=RatingThresholds())}
    emulator.fail_next(10, "throttle", retry_after=None)
    started = time.monotonic()
    with pytest.raises(RetryableDeliveryError):
        adapter.send(request)
    assert len(emulator.calls) == 2, "botocore retries Q Connect's 400 ThrottlingException, but only once"
    assert time.monotonic() - started < 2.0


def test_the_adapter_validates_its_config(make_app):
    base = {"assistant_id": ASSISTANT, "region_name": REGION}
    for bad, key in [
        ({"assistant_id": ASSISTANT.upper()}, "assistant_id"), ({"assistant_id": "my-assistant"}, "assistant_id"),
        ({"target_type": "ANSWER"}, "target_type"), ({"region_name": None}, "region_name"),
        ({"send_user_id": True}, "send_user_id"),
    ]:
        with pytest.raises(ConfigurationError, match=key):
            make_app(FEEDBACK_PROVIDERS={"qconnect": {**base, **bad}})
    adapter = QConnectAdapter(**base)
    assert adapter.describe()["assistant_id"] == ASSISTANT and adapter.describe()["target_type"] == "MESSAGE"
    assert QConnectAdapter(assistant_id=ASSISTANT_ARN, region_name=REGION).assistant_id == ASSISTANT_ARN


# -- the mapping as pure functions -----------------------------------------------------------------------------

T0 = datetime(2026, 11, 23, 15, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize(("state", "expected"), [
    (FeedbackState(vote="up"), "HELPFUL"),
    (FeedbackState(vote="down", reason="OTHER", comment="no field for this"), "NOT_HELPFUL"),
    (FeedbackState(vote="up", rating=1), "HELPFUL"),
    (FeedbackState(rating=5), "HELPFUL"), (FeedbackState(rating=2), "NOT_HELPFUL"),
    (FeedbackState(rating=3), "A rating of 3 is neither helpful (>= 4) nor not helpful (<= 2)"),
    (FeedbackState(copied_at=T0, copy_count=1), "No vote or rating"),
    (FeedbackState(), "No vote or rating"),
])
def test_put_feedback_params(state: FeedbackState, expected: str):
    def build() -> dict[str, Any]:
        return put_feedback_params(state, assistant_id=ASSISTANT, target_id=TARGET, target_type="RESULT",
                                   thresholds=RatingThresholds())

    if expected not in ("HELPFUL", "NOT_HELPFUL"):
        with pytest.raises(Skip, match=re.escape(expected)):
            build()
        return
    assert build() == {"assistantId": ASSISTANT, "targetId": TARGET, "targetType": "RESULT",
                       "contentFeedback": {"generativeContentFeedbackData": {"relevance": expected}}}


@pytest.mark.parametrize(("kind", "amends", "reason"), [
    (EventType.THUMBS_UP, None, None), (EventType.THUMBS_DOWN, None, None), (EventType.RATING, None, None),
    (EventType.THUMBS_DOWN, "v1", NOTHING_NEW), (EventType.RETRACT, None, NO_DELETE),
    (EventType.COPY_OUTPUT, None, "cannot express a copy of the answer"),
    (EventType.COPY_INPUT, None, "cannot express a copy of the prompt"), (EventType.PASTE, None, "a paste"),
])
def test_skip_reason_by_event(kind: EventType, amends: str | None, reason: str | None):
    adapter = QConnectAdapter(assistant_id=ASSISTANT, region_name=REGION)
    message = Message(pk=1, conversation_id="c", message_id="m", user_id="u", input=None, output=None,
                      refs=REFS, created_at=T0)
    got = adapter.skip_reason(Event(event_id="e1", type=kind, occurred_at=T0, amends=amends), message)
    assert got is None if reason is None else reason in got


def test_a_state_with_nothing_to_send_does_not_block_later_votes(qc_app, emulator):
    app = qc_app()
    token = register(app, refs=REFS)
    deliver(app, event("rating", token, value=3))
    post(app, event("rating", token, value=1))
    runtime(app).worker.drain()
    assert [r["status"] for r in rows(app)] == ["skipped", "delivered"]
    assert sent(emulator) == [(TARGET, "MESSAGE", "NOT_HELPFUL")]
