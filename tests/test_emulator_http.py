"""The Moveworks and Nebuly emulators are strict: malformed requests, sent with raw ``requests``, are refused
with the documented (or, where undocumented, the declared) status and body."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import requests

from feedback_bridge.testing import MoveworksEmulator, MoveworksMessage, NebulyEmulator

TOKEN, ASSISTANT, KEY = "mw-token", "acme-bot", "nb-key"


@pytest.fixture(scope="module")
def mw() -> Iterator[MoveworksEmulator]:
    with MoveworksEmulator(tokens={TOKEN}, assistant_name=ASSISTANT, clients={"cid": "csecret"}) as emulator:
        yield emulator


@pytest.fixture(scope="module")
def nebuly() -> Iterator[NebulyEmulator]:
    with NebulyEmulator(api_keys={KEY}) as emulator:
        yield emulator


@pytest.fixture(autouse=True)
def _fresh(request: pytest.FixtureRequest) -> None:
    for name in ("mw", "nebuly"):
        if name in request.fixturenames:
            request.getfixturevalue(name).reset()


# -- Moveworks ------------------------------------------------------------------------------------------------


def feedback_url(mw: MoveworksEmulator, message: MoveworksMessage, **ids: str) -> str:
    c, r, m = (ids.get(k, getattr(message, k)) for k in ("conversation_id", "response_id", "message_id"))
    return f"{mw.base_url}/conversations/{c}/responses/{r}/messages/{m}/feedback"


def submit(mw: MoveworksEmulator, message: MoveworksMessage, body: Any = None, *, headers: dict | None = None,
           **ids: str) -> requests.Response:
    sent = {"Authorization": f"Bearer {TOKEN}", "Assistant-Name": ASSISTANT, **(headers or {})}
    sent = {k: v for k, v in sent.items() if v is not None}
    if body is None:
        body = {"callback_id": message.helpful_callback_id}
    if isinstance(body, (str, bytes)):
        return requests.post(feedback_url(mw, message, **ids), data=body, headers=sent, timeout=5)
    return requests.post(feedback_url(mw, message, **ids), json=body, headers=sent, timeout=5)


def error_of(response: requests.Response) -> tuple[int, str]:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    return response.status_code, body["error"]["code"]


def test_moveworks_accepts_the_documented_request(mw):
    message = mw.add_message()
    response = submit(mw, message, {"callback_id": message.unhelpful_callback_id, "additional_feedback": "Wrong"})
    assert (response.status_code, response.json()) == (200, {"status": "SUBMITTED"})
    [submission] = mw.submissions
    assert (submission.message, submission.rating, submission.additional_feedback) == (message, "unhelpful", "Wrong")


@pytest.mark.parametrize(("headers", "expected"), [
    ({"Authorization": None}, (401, "UNAUTHORIZED")),
    ({"Authorization": TOKEN}, (401, "UNAUTHORIZED")),
    ({"Authorization": f"Basic {TOKEN}"}, (401, "UNAUTHORIZED")),
    ({"Authorization": "Bearer someone-elses"}, (401, "UNAUTHORIZED")),
    ({"Assistant-Name": None}, (400, "INVALID_REQUEST")),
    ({"Assistant-Name": ASSISTANT.upper()}, (403, "FORBIDDEN")),
    ({"Assistant-Name": ASSISTANT + " "}, (403, "FORBIDDEN")),
])
def test_moveworks_checks_the_token_and_assistant_name(mw, headers, expected):
    message = mw.add_message()
    assert error_of(submit(mw, message, headers=headers)) == expected
    assert mw.submissions == [] and mw.received == []


@pytest.mark.parametrize(("body", "problem"), [
    ("not json", "JSON object"),
    ([], "JSON object"),
    ({}, "callback_id is required"),
    ({"callback_id": 7}, "callback_id is required"),
    ({"callback_id": ""}, "callback_id is required"),
    ({"callback_id": "X", "rating": "helpful"}, "Unknown fields: rating"),
    ({"callback_id": "X", "additional_feedback": ""}, "additional_feedback"),
    ({"callback_id": "X", "additional_feedback": 3}, "additional_feedback"),
    ({"callback_id": "not-this-messages"}, "does not match this message"),
])
def test_moveworks_refuses_malformed_bodies_with_400_invalid_request(mw, body, problem):
    message = mw.add_message()
    if isinstance(body, dict) and body.get("callback_id") == "X":
        body = {**body, "callback_id": message.helpful_callback_id}
    response = submit(mw, message, body)
    assert error_of(response) == (400, "INVALID_REQUEST")
    assert problem in response.json()["error"]["message"]


def test_moveworks_refuses_a_json_body_sent_without_the_json_content_type(mw):
    message = mw.add_message()
    response = submit(mw, message, f'{{"callback_id": "{message.helpful_callback_id}"}}',
                      headers={"Content-Type": "text/plain"})
    assert error_of(response) == (400, "INVALID_REQUEST")


def test_moveworks_callback_of_another_message_is_invalid(mw):
    message, other = mw.add_message(), mw.add_message()
    response = submit(mw, message, {"callback_id": other.helpful_callback_id})
    assert error_of(response) == (400, "INVALID_REQUEST")


@pytest.mark.parametrize("ids", [
    {"conversation_id": "conv_Unknown1"}, {"response_id": "resp_Unknown1"}, {"message_id": "msg_Unknown1"},
    {"conversation_id": "c-1"}, {"message_id": "resp_WrongPrefix"}, {"conversation_id": "conv_a-b"},
])
def test_moveworks_unknown_or_malformed_ids_are_404(mw, ids):
    message = mw.add_message()
    assert error_of(submit(mw, message, **ids)) == (404, "NOT_FOUND")


def test_moveworks_routing_errors_keep_the_error_shape(mw):
    message = mw.add_message()
    wrong_method = requests.get(feedback_url(mw, message), headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
    assert wrong_method.status_code == 405 and wrong_method.json()["error"]["code"] == "INVALID_REQUEST"
    nowhere = requests.post(mw.url + "/rest/v1/feedback", json={}, timeout=5)
    assert error_of(nowhere) == (404, "NOT_FOUND")


def test_moveworks_an_emulator_failure_is_a_documented_500_internal_error(mw, monkeypatch):
    # The 500 of the OpenAPI document is INTERNAL_ERROR; a crash was answered 500 INVALID_REQUEST.
    def broken() -> None:
        raise RuntimeError("emulator bug")

    monkeypatch.setattr(mw, "_check_headers", broken)
    assert error_of(submit(mw, mw.add_message())) == (500, "INTERNAL_ERROR")


def test_moveworks_throttle_and_error_faults_are_spelled_as_documented(mw):
    message = mw.add_message()
    mw.fail_next(1, "throttle", retry_after=3)
    mw.fail_next(1, "error")
    throttled, failed = submit(mw, message), submit(mw, message)
    assert error_of(throttled) == (429, "RATE_LIMIT_EXCEEDED") and throttled.headers["Retry-After"] == "3"
    assert error_of(failed) == (500, "INTERNAL_ERROR")
    assert mw.submissions == [], "a faulted request is not processed"


def test_moveworks_token_endpoint_issues_expiring_tokens(mw):
    token_url = mw.url + "/oauth/v1/token"
    refused = requests.post(token_url, data={"grant_type": "client_credentials", "client_id": "cid",
                                             "client_secret": "nope"}, timeout=5)
    assert (refused.status_code, refused.json()) == (401, {"error": "invalid_client"})
    wrong_grant = requests.post(token_url, data={"grant_type": "password"}, timeout=5)
    assert (wrong_grant.status_code, wrong_grant.json()) == (400, {"error": "unsupported_grant_type"})
    issued = requests.post(token_url, data={"grant_type": "client_credentials"}, auth=("cid", "csecret"), timeout=5)
    assert issued.status_code == 200 and issued.json()["expires_in"] == 3600
    assert issued.json()["token_type"] == "Bearer"
    access = issued.json()["access_token"]
    message = mw.add_message()
    assert submit(mw, message, headers={"Authorization": f"Bearer {access}"}).status_code == 200
    mw.expire_tokens()
    assert error_of(submit(mw, message, headers={"Authorization": f"Bearer {access}"})) == (401, "UNAUTHORIZED")
    assert submit(mw, message).status_code == 200, "static tokens do not expire"
    assert len(mw.token_requests) == 3 and all(c.path != "/oauth/v1/token" for c in mw.calls)


# -- Nebuly ---------------------------------------------------------------------------------------------------

NOW = datetime(2026, 11, 23, 15, 0, tzinfo=timezone.utc)


def valid_body(**feedback: Any) -> dict[str, Any]:
    return {"feedback": {"slug": "thumbs_up", **feedback},
            "metadata": {"input": "q", "output": "a", "end_user": "u-1", "timestamp": "2026-11-23T15:00:01.000Z",
                         "anonymize": False}}


def send(nebuly: NebulyEmulator, body: Any, key: str | None = KEY, **kwargs: Any) -> requests.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    url = nebuly.url + "/event-ingestion/api/v1/events/feedback"
    if isinstance(body, str):
        return requests.post(url, data=body, headers=headers, timeout=5, **kwargs)
    return requests.post(url, json=body, headers=headers, timeout=5, **kwargs)


def locs(response: requests.Response) -> list[list[Any]]:
    assert response.status_code == 422, response.text
    return [d["loc"] for d in response.json()["detail"]]


@pytest.mark.parametrize("feedback", [
    {}, {"text": "nice"}, {"slug": "thumbs_down", "text": ""}, {"slug": "rating", "value": 1},
    {"slug": "rating", "value": 5.0}, {"slug": "copy_output", "text": "x"}, {"slug": "copy_input", "text": "y"},
    {"slug": "paste", "text": "z"},
])
def test_nebuly_accepts_documented_feedback(nebuly, feedback):
    response = send(nebuly, valid_body(**feedback))
    assert (response.status_code, response.json()) == (200, {"status": "received"})


def test_nebuly_accepts_minimal_metadata_and_offsets(nebuly):
    body = {"feedback": {"slug": "thumbs_up"}, "metadata": {"end_user": "u", "timestamp": "2026-11-23T16:00:00+01:00"}}
    assert send(nebuly, body).status_code == 200


@pytest.mark.parametrize("key", [None, "nb-other"])
def test_nebuly_checks_the_bearer_key(nebuly, key):
    response = send(nebuly, valid_body(), key=key)
    assert (response.status_code, response.json()) == (401, {"detail": "Invalid API key"})
    assert nebuly.received == []


@pytest.mark.parametrize(("change", "loc"), [
    (lambda b: b.pop("feedback"), ["body", "feedback"]),
    (lambda b: b.pop("metadata"), ["body", "metadata"]),
    (lambda b: b.update(action=b.pop("feedback")), ["body", "action"]),
    (lambda b: b.update(feedback="thumbs_up"), ["body", "feedback"]),
    (lambda b: b["feedback"].update(slug="like"), ["body", "feedback", "slug"]),
    (lambda b: b["feedback"].pop("slug"), ["body", "feedback", "slug"]),
    (lambda b: b["feedback"].update(value=1), ["body", "feedback", "value"]),
    (lambda b: b["feedback"].update(text=5), ["body", "feedback", "text"]),
    (lambda b: b["feedback"].update(score=5), ["body", "feedback", "score"]),
    (lambda b: b["feedback"].update(slug="rating"), ["body", "feedback", "value"]),
    (lambda b: b["feedback"].update(slug="rating", value=0), ["body", "feedback", "value"]),
    (lambda b: b["feedback"].update(slug="rating", value=6), ["body", "feedback", "value"]),
    (lambda b: b["feedback"].update(slug="rating", value=2.5), ["body", "feedback", "value"]),
    (lambda b: b["feedback"].update(slug="rating", value=True), ["body", "feedback", "value"]),
    (lambda b: b["feedback"].update(slug="rating", value="4"), ["body", "feedback", "value"]),
    (lambda b: b["feedback"].update(slug="rating", value=4, text="good"), ["body", "feedback", "text"]),
    (lambda b: b["feedback"].update(slug="copy_output"), ["body", "feedback", "text"]),
    (lambda b: b["feedback"].update(slug="paste", text=""), ["body", "feedback", "text"]),
    (lambda b: b["metadata"].pop("end_user"), ["body", "metadata", "end_user"]),
    (lambda b: b["metadata"].update(end_user=""), ["body", "metadata", "end_user"]),
    (lambda b: b["metadata"].update(end_user=7), ["body", "metadata", "end_user"]),
    (lambda b: b["metadata"].pop("timestamp"), ["body", "metadata", "timestamp"]),
    (lambda b: b["metadata"].update(timestamp="2026-11-23T15:00:01"), ["body", "metadata", "timestamp"]),
    (lambda b: b["metadata"].update(timestamp="2026-11-23 15:00:01Z"), ["body", "metadata", "timestamp"]),
    (lambda b: b["metadata"].update(timestamp="2026-13-23T15:00:01Z"), ["body", "metadata", "timestamp"]),
    (lambda b: b["metadata"].update(timestamp=1763910000), ["body", "metadata", "timestamp"]),
    (lambda b: b["metadata"].update(input=["q"]), ["body", "metadata", "input"]),
    (lambda b: b["metadata"].update(anonymize="false"), ["body", "metadata", "anonymize"]),
    (lambda b: b["metadata"].update(user="u"), ["body", "metadata", "user"]),
])
def test_nebuly_refuses_bodies_that_break_the_schema_with_422(nebuly, change, loc):
    body = valid_body()
    change(body)
    assert loc in locs(send(nebuly, body))
    assert nebuly.received == []


def test_nebuly_refuses_a_body_that_is_not_json(nebuly):
    assert locs(send(nebuly, "slug=thumbs_up")) == [["body"]]


@pytest.mark.parametrize("value", ["NaN", "Infinity", "1e999"])
def test_nebuly_refuses_non_finite_ratings(nebuly, value):
    metadata = '"metadata": {"end_user": "u", "timestamp": "2026-11-23T15:00:01.000Z"}'
    body = f'{{"feedback": {{"slug": "rating", "value": {value}}}, {metadata}}}'
    response = requests.post(nebuly.url + "/event-ingestion/api/v1/events/feedback", data=body, timeout=5,
                             headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    assert ["body", "feedback", "value"] in locs(response)


def test_nebuly_orders_feedback_after_its_interaction(nebuly):
    ended = datetime(2026, 11, 23, 15, 0, 1, tzinfo=timezone.utc)
    nebuly.add_interaction("u-1", "q", "a", ended)
    before, same, after = ended - timedelta(milliseconds=1), ended, ended + timedelta(milliseconds=1)
    codes = []
    for at in (before, same, after):
        body = valid_body()
        body["metadata"]["timestamp"] = at.isoformat().replace("+00:00", "Z")
        codes.append(send(nebuly, body).status_code)
    assert codes == [400, 400, 200]
    other = valid_body()
    other["metadata"].update(output="another answer", timestamp="2026-11-23T14:00:00.000Z")
    assert send(nebuly, other).status_code == 200, "no known interaction: the order is not checked"
    with pytest.raises(ValueError):
        nebuly.add_interaction("u-1", "q", "a", datetime(2026, 11, 23))


def test_nebuly_faults_and_routing_errors(nebuly):
    nebuly.fail_next(1, "throttle", retry_after=2)
    nebuly.fail_next(1, "error")
    throttled, failed = send(nebuly, valid_body()), send(nebuly, valid_body())
    assert (throttled.status_code, throttled.headers["Retry-After"]) == (429, "2")
    assert failed.json() == {"detail": "Internal Server Error"} and failed.status_code == 500
    wrong = requests.get(nebuly.url + "/event-ingestion/api/v1/events/feedback", timeout=5)
    assert wrong.status_code == 405 and "detail" in wrong.json()
