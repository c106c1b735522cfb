"""Nebuly: the mapping table on the wire (event API -> outbox -> worker -> emulator), timestamps after the
interaction, merged and late amendments, retractions, the pure mapping, and every error class."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from flask import Flask

from conftest import register, runtime
from feedback_bridge import outbox as ob
from feedback_bridge.models import Event, EventType, Message
from feedback_bridge.providers import DeliveryContext, Skip
from feedback_bridge.providers.nebuly import AMENDMENT_SKIP, RETRACT_SKIP, NebulyAdapter, nebuly_timestamp
from feedback_bridge.testing import NebulyEmulator
from support import event
from support import outbox_rows as rows
from support import post_events as post

KEY = "nb-key-1a2b3c4d5e6f7a8b"
USER = "alice@example.com"
INPUT, OUTPUT = "How do I reset my password?", "Open Settings, then Security, then Reset password."
TIMEOUT = [1.0, 1.0]  # (connect, read): a hang costs a second; a busy machine still answers in time


@pytest.fixture(scope="module")
def nebuly() -> Iterator[NebulyEmulator]:
    emulator = NebulyEmulator(api_keys={KEY})
    emulator.hang_seconds = 1.2  # past the read timeout; the hung call is recorded when it ends
    with emulator:
        yield emulator


@pytest.fixture(autouse=True)
def _fresh(nebuly: NebulyEmulator) -> None:
    nebuly.reset()


def config(nebuly: NebulyEmulator, **options: Any) -> dict[str, Any]:
    return {"nebuly": {"api_key": KEY, "base_url": nebuly.url, "timeout": TIMEOUT, **options}}


@pytest.fixture
def app(make_app, nebuly: NebulyEmulator) -> Flask:
    return make_app(FEEDBACK_PROVIDERS=config(nebuly))


def deliver(app: Flask, after: float = 0) -> list[dict]:
    runtime(app).worker.drain(now=datetime.now(timezone.utc) + timedelta(seconds=after))
    return rows(app)


def created_at(app: Flask, message_id: str = "m-1") -> datetime:
    message = runtime(app).store.find_message("c-1", message_id)
    assert message is not None
    return message.created_at


def interaction(app: Flask, nebuly: NebulyEmulator, message_id: str = "m-1", **kwargs: Any) -> str:
    """Register a message and tell the emulator its interaction ended when the message was registered."""
    token = register(app, message_id, **kwargs)
    nebuly.add_interaction(kwargs.get("user_id", USER), INPUT, OUTPUT, created_at(app, message_id))
    return token


# -- the mapping table, on the wire -----------------------------------------------------------------------------

V = "vote-00000001"
TABLE: list[tuple[str, list[tuple[str, dict]], list[dict]]] = [
    ("thumbs up with reason and comment", [("thumbs_up", {"reason": "HELPFUL", "comment": "Clear steps"})],
     [{"slug": "thumbs_up", "text": "Helpful — Clear steps"}]),
    ("thumbs up", [("thumbs_up", {})], [{"slug": "thumbs_up"}]),
    ("thumbs down with a comment", [("thumbs_down", {"comment": "Wrong menu"})],
     [{"slug": "thumbs_down", "text": "Wrong menu"}]),
    *((f"rating {n}", [("rating", {"value": n, "comment": "ignored: a rating carries a value"})],
       [{"slug": "rating", "value": n}]) for n in range(1, 6)),
    ("copy of an answer", [("copy_output", {"text": "Open Settings"})],
     [{"slug": "copy_output", "text": "Open Settings"}]),
    ("copy of a prompt", [("copy_input", {"text": "reset my password"})],
     [{"slug": "copy_input", "text": "reset my password"}]),
    ("paste", [("paste", {"text": "error 0x80070005"})], [{"slug": "paste", "text": "error 0x80070005"}]),
    ("retract", [("retract", {})], []),
]


@pytest.mark.parametrize(("row", "events", "expected"), TABLE, ids=[t[0] for t in TABLE])
def test_mapping_table_on_the_wire(app, nebuly, row, events, expected):
    token = interaction(app, nebuly)
    post(app, *(event(kind, token, **fields) for kind, fields in events))
    deliver(app)
    assert len(nebuly.calls) == len(expected), "nothing was refused"
    assert [call.json()["feedback"] for call in nebuly.received] == expected
    for call in nebuly.received:
        assert (call.method, call.path) == ("POST", "/event-ingestion/api/v1/events/feedback")
        assert call.headers["authorization"] == f"Bearer {KEY}"
        assert call.headers["content-type"] == "application/json"
        metadata = call.json()["metadata"]
        assert {k: v for k, v in metadata.items() if k != "timestamp"} == {
            "input": INPUT, "output": OUTPUT, "end_user": USER, "anonymize": False}
        assert metadata["timestamp"].endswith("Z") and len(metadata["timestamp"]) == len("2026-11-23T15:00:00.000Z")
    if not expected:
        [row_] = rows(app)
        assert (row_["status"], row_["last_error"]) == ("skipped", RETRACT_SKIP)


def test_timestamp_is_the_event_time_in_utc_with_milliseconds(app, nebuly):
    token = interaction(app, nebuly)
    at = created_at(app) + timedelta(seconds=3, microseconds=456789)
    post(app, event("thumbs_up", token, occurred_at=at.astimezone(timezone(timedelta(hours=2))).isoformat()))
    deliver(app)
    [call] = nebuly.received
    at = at.astimezone(timezone.utc)
    assert call.json()["metadata"]["timestamp"] == f"{at:%Y-%m-%dT%H:%M:%S}.{at.microsecond // 1000:03d}Z"


def test_timestamp_before_the_answer_is_clamped_to_just_after_it(app, nebuly):
    token = interaction(app, nebuly)
    post(app, event("copy_output", token, text="Open Settings",
                    occurred_at=(created_at(app) - timedelta(hours=1)).isoformat()))
    [row] = deliver(app)
    assert row["status"] == "delivered", row
    [call] = nebuly.received
    assert call.json()["metadata"]["timestamp"] == nebuly_timestamp(created_at(app) + timedelta(milliseconds=1))


def test_end_user_override_and_anonymize(make_app, nebuly):
    app = make_app(FEEDBACK_PROVIDERS=config(nebuly, anonymize=True))
    token = register(app, refs={"nebuly": {"end_user": "nebuly-user-7"}})
    post(app, event("thumbs_up", token))
    deliver(app)
    [call] = nebuly.received
    assert call.json()["metadata"]["end_user"] == "nebuly-user-7" and call.json()["metadata"]["anonymize"] is True


def test_a_message_without_texts_omits_input_and_output(app, nebuly):
    token = register(app, input=None, output=None)
    post(app, event("thumbs_down", token))
    deliver(app)
    [call] = nebuly.received
    assert set(call.json()["metadata"]) == {"end_user", "timestamp", "anonymize"}


def test_on_the_database_under_test_a_vote_and_its_record(make_app, nebuly, database_url):
    app = make_app(FEEDBACK_DATABASE_URL=database_url, FEEDBACK_PROVIDERS=config(nebuly))
    token = interaction(app, nebuly)
    post(app, event("rating", token, value=4))
    [row] = deliver(app)
    assert row["status"] == "delivered"
    assert row["response"] == {"status": 200, "body": {"status": "received"}}
    assert row["request"]["url"] == nebuly.url + "/event-ingestion/api/v1/events/feedback"
    assert row["request"]["json"]["feedback"] == {"slug": "rating", "value": 4}
    assert KEY not in str(row)


# -- amendments and retractions across the settle window ------------------------------------------------------


def test_reason_added_while_the_vote_is_pending_is_merged_into_it(make_app, nebuly):
    app = make_app(FEEDBACK_PROVIDERS=config(nebuly), FEEDBACK_SETTLE_SECONDS=60)
    token = interaction(app, nebuly)
    post(app, event("thumbs_down", token, id=V, reason="NOT_COMPLETE"))
    post(app, event("thumbs_down", token, amends=V, comment="Step 3 is missing"))
    statuses = [(r["status"], r["last_error"]) for r in deliver(app, after=61)]
    assert statuses == [("delivered", None), ("skipped", ob.MERGED)]
    [call] = nebuly.received
    assert call.json()["feedback"] == {"slug": "thumbs_down", "text": "Not complete — Step 3 is missing"}


def test_reason_added_after_the_vote_went_out_is_skipped_not_sent_as_a_second_vote(app, nebuly):
    token = interaction(app, nebuly)
    post(app, event("thumbs_down", token, id=V))
    deliver(app)
    post(app, event("thumbs_down", token, amends=V, reason="NOT_FACTUALLY_CORRECT", comment="Wrong year"))
    statuses = [(r["status"], r["last_error"]) for r in deliver(app)]
    assert statuses == [("delivered", None), ("skipped", AMENDMENT_SKIP)]
    assert [c.json()["feedback"] for c in nebuly.calls] == [{"slug": "thumbs_down"}]


def test_a_vote_replaced_inside_the_window_is_not_sent(make_app, nebuly):
    app = make_app(FEEDBACK_PROVIDERS=config(nebuly), FEEDBACK_SETTLE_SECONDS=60)
    token = interaction(app, nebuly)
    post(app, event("thumbs_up", token))
    post(app, event("thumbs_down", token, comment="on second thought"))
    statuses = [(r["status"], r["last_error"]) for r in deliver(app, after=61)]
    assert statuses == [("skipped", ob.SUPERSEDED), ("delivered", None)]
    assert [c.json()["feedback"]["slug"] for c in nebuly.calls] == ["thumbs_down"]


def test_a_retraction_inside_the_window_cancels_the_pending_vote(make_app, nebuly):
    app = make_app(FEEDBACK_PROVIDERS=config(nebuly), FEEDBACK_SETTLE_SECONDS=60)
    token = interaction(app, nebuly)
    post(app, event("thumbs_up", token))
    post(app, event("retract", token))
    statuses = [(r["status"], r["last_error"]) for r in deliver(app, after=61)]
    assert statuses == [("skipped", ob.SUPERSEDED), ("skipped", RETRACT_SKIP)]
    assert nebuly.calls == []


# -- the pure mapping -----------------------------------------------------------------------------------------

NOW = datetime(2026, 11, 23, 15, 0, 0, 250_000, tzinfo=timezone.utc)
MESSAGE = Message(1, "c", "m", "u-1", "q", "a", {}, NOW)


def context(event_: Event, *amendments: Event, message: Message = MESSAGE) -> DeliveryContext:
    return DeliveryContext(message=message, user_id="u-1", now=NOW, event=event_, amendments=amendments)


@pytest.mark.parametrize(("kind", "fields", "feedback"), [
    (EventType.THUMBS_UP, {}, {"slug": "thumbs_up"}),
    (EventType.THUMBS_UP, {"reason": "COMPLETE"}, {"slug": "thumbs_up", "text": "Complete"}),
    (EventType.THUMBS_DOWN, {"comment": "  no  "}, {"slug": "thumbs_down", "text": "no"}),
    (EventType.RATING, {"value": 3, "reason": "OTHER"}, {"slug": "rating", "value": 3}),
    (EventType.COPY_OUTPUT, {"text": "x"}, {"slug": "copy_output", "text": "x"}),
    (EventType.COPY_INPUT, {"text": "y"}, {"slug": "copy_input", "text": "y"}),
    (EventType.PASTE, {"text": "z"}, {"slug": "paste", "text": "z"}),
])
def test_build_request_table(kind, fields, feedback):
    adapter = NebulyAdapter(api_key="k")
    request = adapter.build_request(context(Event("e-1234567", kind, NOW + timedelta(seconds=1), **fields)))
    assert request == {"method": "POST", "url": "https://backend.nebuly.com/event-ingestion/api/v1/events/feedback",
                       "json": {"feedback": feedback, "metadata": {
                           "input": "q", "output": "a", "end_user": "u-1", "timestamp": "2026-11-23T15:00:01.250Z",
                           "anonymize": False}}}
    assert adapter.invalid(request) is None


def test_amendments_merge_field_by_field():
    vote = Event("v-1234567", EventType.THUMBS_DOWN, NOW, reason="NOT_COMPLETE", comment="first")
    amendments = (Event("a-1234567", EventType.THUMBS_DOWN, NOW, comment="second", amends=vote.event_id),
                  Event("a-7654321", EventType.THUMBS_DOWN, NOW, reason="OTHER", amends=vote.event_id))
    request = NebulyAdapter(api_key="k").build_request(context(vote, *amendments))
    assert request["json"]["feedback"]["text"] == "Other — second"


@pytest.mark.parametrize(("event_", "reason"), [
    (Event("r-1234567", EventType.RETRACT, NOW), RETRACT_SKIP),
    (Event("a-1234567", EventType.THUMBS_UP, NOW, comment="late", amends="v-1234567"), AMENDMENT_SKIP),
])
def test_what_nebuly_cannot_take_is_skipped(event_, reason):
    with pytest.raises(Skip) as skipped:
        NebulyAdapter(api_key="k").build_request(context(event_))
    assert skipped.value.reason == reason


@pytest.mark.parametrize(("at", "expected"), [
    (NOW - timedelta(days=1), "2026-11-23T15:00:00.251Z"),
    (NOW, "2026-11-23T15:00:00.251Z"),
    (NOW + timedelta(microseconds=999), "2026-11-23T15:00:00.251Z"),
    (NOW + timedelta(milliseconds=5), "2026-11-23T15:00:00.255Z"),
])
def test_timestamp_is_never_before_the_interaction(at, expected):
    request = NebulyAdapter(api_key="k").build_request(context(Event("e-1234567", EventType.THUMBS_UP, at)))
    assert request["json"]["metadata"]["timestamp"] == expected


@pytest.mark.parametrize(("change", "problem"), [
    (lambda b: b["feedback"].update(slug="like"), "slug 'like'"),
    (lambda b: b["feedback"].update(value=2), "value is only used with the rating slug"),
    (lambda b: b["feedback"].update(slug="rating"), "integer value from 1 to 5"),
    (lambda b: b["feedback"].update(slug="rating", value=6), "integer value from 1 to 5"),
    (lambda b: b["feedback"].update(slug="rating", value=True), "integer value from 1 to 5"),
    (lambda b: b["feedback"].update(slug="copy_output"), "needs the text"),
    (lambda b: b["metadata"].update(end_user=" "), "end_user"),
    (lambda b: b["metadata"].update(end_user=42), "end_user"),
    (lambda b: b["metadata"].update(timestamp="2026-11-23T15:00:00"), "timestamp"),
    (lambda b: b["metadata"].update(anonymize="no"), "anonymize"),
    (lambda b: b.update(action={}), "exactly {feedback, metadata}"),
])
def test_impossible_requests_are_named(change, problem):
    adapter = NebulyAdapter(api_key="k")
    request = adapter.build_request(context(Event("e-1234567", EventType.THUMBS_UP, NOW)))
    change(request["json"])
    assert problem in adapter.invalid(request)


@pytest.mark.parametrize("options", [{}, {"api_key": ""}, {"api_key": "k", "anonymize": "yes"},
                                     {"api_key": "k", "base_url": "backend.nebuly.com"}])
def test_bad_configuration_is_refused(make_app, options):
    from feedback_bridge.exceptions import ConfigurationError

    with pytest.raises(ConfigurationError):
        make_app(FEEDBACK_PROVIDERS={"nebuly": options})


@pytest.mark.parametrize("bad", ["nb-key-xyz\n", "nb-key-xyz\r\n", "\tnb-key-xyz", "nb-key-xyz\u00e9"])
def test_an_api_key_no_header_can_carry_is_refused_without_quoting_it(make_app, bad):
    from feedback_bridge.exceptions import ConfigurationError

    with pytest.raises(ConfigurationError) as raised:
        make_app(FEEDBACK_PROVIDERS={"nebuly": {"api_key": bad}})
    assert "nb-key-xyz" not in str(raised.value)


def test_a_bearer_token_no_header_can_carry_is_a_credentials_error_that_does_not_quote_it():
    # Without this check http.client raises a ValueError quoting the header, which the worker would record.
    import requests

    from feedback_bridge.exceptions import CredentialsError
    from feedback_bridge.providers import http

    with pytest.raises(CredentialsError) as raised:
        http.request(requests.Session(), "POST", "http://127.0.0.1:9/x", timeout=(1, 1),
                     auth=http.BearerAuth("nb-secret-9\n"), secrets=("nb-secret-9\n",))
    assert "nb-secret-9" not in str(raised.value) and "nb-secret-9" not in str(raised.value.response)


# -- every error class ends in the right outbox state -----------------------------------------------------------


def test_throttle_keeps_it_pending_until_retry_after(app, nebuly):
    token = interaction(app, nebuly)
    nebuly.fail_next(1, "throttle", retry_after=9)
    post(app, event("thumbs_up", token))
    before = datetime.now(timezone.utc)
    [row] = deliver(app)
    assert row["status"] == "pending" and row["next_attempt_at"] >= before + timedelta(seconds=9)
    assert row["response"] == {"status": 429, "retry_after": "9", "body": {"detail": "Too Many Requests"}}


def test_retry_after_as_an_http_date_is_honoured(app, nebuly):
    from email.utils import format_datetime

    from feedback_bridge.providers.http import retry_after_seconds

    when = datetime.now(timezone.utc) + timedelta(seconds=30)
    assert 28 <= retry_after_seconds(format_datetime(when, usegmt=True)) <= 30
    assert retry_after_seconds("12") == 12 and retry_after_seconds("soon") is None
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0


@pytest.mark.parametrize(("fault", "error"), [
    ("error", "Nebuly answered HTTP 503"), ("hang", "did not answer in time"), ("drop", "connection failed"),
])
def test_server_errors_hangs_and_drops_are_retried_then_delivered(make_app, nebuly, fault, error):
    app = make_app(FEEDBACK_PROVIDERS=config(nebuly), FEEDBACK_BACKOFF_BASE=0.01, FEEDBACK_BACKOFF_MAX=0.01)
    token = interaction(app, nebuly)
    nebuly.fail_next(1, fault, status=503 if fault == "error" else None)
    post(app, event("copy_output", token, text="Open Settings"))
    [row] = deliver(app)
    assert row["status"] == "pending" and error in row["last_error"]
    if fault != "error":  # no answer to record: what went wrong instead
        assert row["response"] == {"error": "ReadTimeout" if fault == "hang" else "ConnectionError"}
    if fault == "error":
        assert row["response"] == {"status": 503, "body": {"detail": "Internal Server Error"}}
    deliver(app, after=1)
    [row] = rows(app)
    assert row["status"] == "delivered" and row["attempts"] == 2 and len(nebuly.received) == 1
    nebuly.wait_for(2, accepted=False)  # a hung call is recorded when it ends: not in the next test's record


def test_a_403_is_a_credentials_failure(app, nebuly):
    token = interaction(app, nebuly)
    nebuly.fail_next(1, "error", status=403)  # e.g. a key without access to this project
    post(app, event("thumbs_up", token))
    [row] = deliver(app)
    assert row["status"] == "failed" and "CredentialsError" in row["last_error"]
    assert row["response"]["status"] == 403 and len(nebuly.calls) == 1


def test_a_wrong_key_is_a_credentials_failure(make_app, nebuly):
    app = make_app(FEEDBACK_PROVIDERS=config(nebuly, api_key="nb-wrong"))
    token = interaction(app, nebuly)
    post(app, event("thumbs_up", token))
    [row] = deliver(app)
    assert row["status"] == "failed" and "CredentialsError" in row["last_error"]
    assert row["response"] == {"status": 401, "body": {"detail": "Invalid API key"}}


def test_feedback_before_the_interaction_ended_is_a_permanent_400(app, nebuly):
    token = register(app)
    nebuly.add_interaction(USER, INPUT, OUTPUT, created_at(app) + timedelta(minutes=5))  # ended later than us
    post(app, event("thumbs_up", token))
    [row] = deliver(app)
    assert row["status"] == "failed" and "PermanentDeliveryError" in row["last_error"]
    assert row["response"]["status"] == 400 and "after the end of the interaction" in row["response"]["body"]["detail"]


def test_a_wrong_path_is_a_permanent_404(make_app, nebuly):
    app = make_app(FEEDBACK_PROVIDERS=config(nebuly, base_url=nebuly.url + "/eu"))
    token = interaction(app, nebuly)
    post(app, event("thumbs_up", token))
    [row] = deliver(app)
    assert row["status"] == "failed" and row["response"]["status"] == 404


def test_an_impossible_request_is_recorded_with_the_reason_and_never_sent(app, nebuly):
    token = register(app, refs={"nebuly": {"end_user": 42}})
    post(app, event("thumbs_up", token))
    [row] = deliver(app)
    assert row["status"] == "failed" and "end_user must be a non-empty string" in row["last_error"]
    assert row["request"]["json"]["metadata"]["end_user"] == 42 and row["response"] is None
    assert nebuly.calls == []


# -- the shared transport's classification -------------------------------------------------------------------


def response(status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> Any:
    import requests

    made = requests.Response()
    made.status_code, made._content = status, body
    made.headers.update(headers or {})
    made.encoding = "utf-8"
    return made


@pytest.mark.parametrize(("status", "error"), [
    (408, "RetryableDeliveryError"), (429, "RetryableDeliveryError"), (500, "RetryableDeliveryError"),
    (503, "RetryableDeliveryError"), (401, "CredentialsError"), (403, "CredentialsError"),
    (400, "PermanentDeliveryError"), (404, "PermanentDeliveryError"), (422, "PermanentDeliveryError"),
    (301, "PermanentDeliveryError"),
])
def test_statuses_are_classified(status, error):
    from feedback_bridge.providers.http import classify

    with pytest.raises(Exception) as raised:
        classify(response(status, b'{"detail": "x"}', {"Retry-After": "4"}))
    assert type(raised.value).__name__ == error
    assert raised.value.response == {"status": status, "body": {"detail": "x"}, "retry_after": "4"}
    if error == "RetryableDeliveryError":
        assert raised.value.retry_after == 4


def test_recorded_responses_are_truncated_and_never_hold_our_secret():
    from feedback_bridge.providers.http import REDACTED, classify

    record = classify(response(200, b"<html>" + b"x" * 5000 + b"</html>"))
    assert record["status"] == 200 and len(record["body_text"]) == 2000
    with pytest.raises(Exception) as raised:
        classify(response(401, f'{{"detail": "bad key {KEY}"}}'.encode()), secrets=(KEY,))
    assert raised.value.response["body"] == {"detail": f"bad key {REDACTED}"} and KEY not in str(raised.value)
