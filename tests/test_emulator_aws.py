"""The Amazon Q emulators are strict: SigV4 scope and signature, botocore's model (required members, types,
lengths, patterns, enums, timestamps), known resources, and AWS rest-json errors. boto3 for the good path, raw
signed requests for what boto3 would never send."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import boto3
import pytest
import requests
from botocore.config import Config
from botocore.exceptions import ClientError

from aws_support import ACCESS_KEY, CREDENTIALS, REGION, SECRET_KEY, signed_request
from feedback_bridge import testing
from feedback_bridge._botocore_validation import Problem, operation_model, validate
from feedback_bridge.exceptions import CredentialsError, PermanentDeliveryError, RetryableDeliveryError
from feedback_bridge.providers.aws import classify, client_error, jsonable, redact
from feedback_bridge.providers.http import retry_after_seconds as retry_after
from feedback_bridge.testing import QBusinessEmulator, QConnectEmulator

APP = "a1b2c3d4-0000-4000-8000-00000000000a"
CONV = "c" * 36
MSG = "m" * 36
QB_PATH = f"/applications/{APP}/conversations/{CONV}/messages/{MSG}/feedback"
ASSISTANT = "5a1e0c4e-7a2b-4c3d-9e8f-0123456789ab"
TARGET = "0f0e0d0c-0b0a-4998-8776-655443322110"
QC_BODY = {"targetId": TARGET, "targetType": "MESSAGE",
           "contentFeedback": {"generativeContentFeedbackData": {"relevance": "HELPFUL"}}}


@pytest.fixture(scope="module")
def qbusiness() -> Iterator[QBusinessEmulator]:
    with QBusinessEmulator(applications=[APP], credentials=CREDENTIALS, region=REGION) as emulator:
        yield emulator


@pytest.fixture(scope="module")
def qconnect() -> Iterator[QConnectEmulator]:
    with QConnectEmulator(assistants=[ASSISTANT], credentials=CREDENTIALS, region=REGION) as emulator:
        yield emulator


@pytest.fixture(autouse=True)
def _fresh(qbusiness: QBusinessEmulator, qconnect: QConnectEmulator) -> None:
    qbusiness.reset()
    qconnect.reset()


def client(service: str, url: str, secret: str = SECRET_KEY) -> Any:
    return boto3.session.Session(aws_access_key_id=ACCESS_KEY, aws_secret_access_key=secret).client(
        service, region_name=REGION, endpoint_url=url,
        config=Config(retries={"total_max_attempts": 1, "mode": "standard"}, read_timeout=2, connect_timeout=2),
    )


def qb(emulator: QBusinessEmulator, body: Any = None, *, path: str = QB_PATH, query: str = "", **kw: Any
       ) -> requests.Response:
    return signed_request("POST", f"{emulator.url}{path}{query}", body, service="qbusiness", **kw)


def qc(emulator: QConnectEmulator, body: Any = None, *, assistant: str = ASSISTANT, **kw: Any) -> requests.Response:
    return signed_request("PUT", f"{emulator.url}/assistants/{assistant}/feedback", body, service="wisdom", **kw)


def aws_error(response: requests.Response) -> tuple[int, str, dict[str, Any]]:
    assert response.headers["Content-Type"] == "application/json" and response.headers["x-amzn-RequestId"]
    body = response.json()
    assert isinstance(body["message"], str) and body["message"]
    return response.status_code, response.headers["x-amzn-ErrorType"], body


def usefulness(**fields: Any) -> dict[str, Any]:
    return {"messageUsefulness": {"usefulness": "USEFUL", "submittedAt": 1795446000, **fields}}


# -- the good path, with boto3 ----------------------------------------------------------------------------------


def test_exported_from_feedback_bridge_testing():
    assert {"QBusinessEmulator", "QConnectEmulator"} <= set(testing.__all__)


def test_qbusiness_accepts_what_boto3_sends_and_answers_200_with_an_empty_body(qbusiness):
    now = datetime.now(timezone.utc)
    result = client("qbusiness", qbusiness.url).put_feedback(
        applicationId=APP, conversationId=CONV, messageId=MSG, userId="alice@example.com",
        messageCopiedAt=now, messageUsefulness={"usefulness": "NOT_USEFUL", "reason": "NOT_CONCISE",
                                                "comment": "x" * 1000, "submittedAt": now},
    )
    assert result["ResponseMetadata"]["HTTPStatusCode"] == 200
    [call] = qbusiness.received
    assert (call.method, call.path, call.response) == ("POST", QB_PATH, b"")
    assert call.query == {"userId": "alice@example.com"}
    assert call.headers["authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/")
    assert "/us-east-1/qbusiness/aws4_request" in call.headers["authorization"]
    [accepted] = qbusiness.accepted
    assert accepted["params"]["messageUsefulness"]["comment"] == "x" * 1000
    assert accepted["params"]["applicationId"] == APP


def test_qconnect_echoes_the_feedback(qconnect):
    result = client("qconnect", qconnect.url).put_feedback(assistantId=ASSISTANT, **QC_BODY)
    del result["ResponseMetadata"]
    assert result == {**QC_BODY, "assistantId": ASSISTANT,
                      "assistantArn": f"arn:aws:wisdom:{REGION}:123456789012:assistant/{ASSISTANT}"}
    [call] = qconnect.received
    assert call.method == "PUT" and "/us-east-1/wisdom/aws4_request" in call.headers["authorization"]


@pytest.mark.parametrize("stamp", [1795446000, 1795446000.125])
def test_timestamps_are_epoch_seconds_whole_or_fractional(qbusiness, stamp):
    assert qb(qbusiness, {"messageCopiedAt": stamp}).status_code == 200


def test_an_empty_body_is_a_valid_qbusiness_request(qbusiness):
    assert qb(qbusiness, raw=b"").status_code == 200
    assert qb(qbusiness, {}).status_code == 200


# -- SigV4 ---------------------------------------------------------------------------------------------------


def test_an_unsigned_request_is_access_denied(qbusiness, qconnect):
    for response in (requests.post(f"{qbusiness.url}{QB_PATH}", json={}, timeout=5),
                     requests.put(f"{qconnect.url}/assistants/{ASSISTANT}/feedback", json=QC_BODY, timeout=5)):
        status, code, body = aws_error(response)
        assert (status, code) == (403, "AccessDeniedException") and "Missing Authentication Token" in body["message"]
    assert qbusiness.accepted == [] and qconnect.accepted == []


@pytest.mark.parametrize(("service", "target"), [("wisdom", "qbusiness"), ("qbusiness", "qconnect")])
def test_a_signature_for_another_service_is_access_denied(qbusiness, qconnect, service, target):
    if target == "qbusiness":
        response = signed_request("POST", f"{qbusiness.url}{QB_PATH}", {}, service=service)
        expected = "'qbusiness'"
    else:
        response = signed_request("PUT", f"{qconnect.url}/assistants/{ASSISTANT}/feedback", QC_BODY, service=service)
        expected = "'wisdom'"
    status, code, body = aws_error(response)
    assert (status, code) == (403, "AccessDeniedException")
    assert f"Credential should be scoped to correct service: {expected}" in body["message"]


def test_a_wrong_secret_an_unknown_key_a_tampered_body_or_another_region_are_access_denied(qbusiness):
    cases = {
        "does not match": qb(qbusiness, {}, secret="wrong"),
        "security token included in the request is invalid": qb(qbusiness, {}, access_key="AKIAUNKNOWN"),
        "does not match ": qb(qbusiness, {}, tamper=json.dumps(usefulness()).encode()),
        "valid region": qb(qbusiness, {}, region="eu-west-1"),
    }
    for fragment, response in cases.items():
        status, code, body = aws_error(response)
        assert (status, code) == (403, "AccessDeniedException") and fragment.strip() in body["message"]
    assert qbusiness.accepted == []


def test_a_malformed_authorization_header_or_stale_date_is_access_denied(qbusiness):
    url = f"{qbusiness.url}{QB_PATH}"
    bad = requests.post(url, data=b"{}", headers={"Authorization": "Bearer token"}, timeout=5)
    assert aws_error(bad)[:2] == (403, "AccessDeniedException")
    good = qb(qbusiness, {})
    assert good.status_code == 200
    scope = f"{ACCESS_KEY}/20200101/{REGION}/qbusiness/aws4_request"
    stale = requests.post(url, data=b"{}", timeout=5, headers={
        "X-Amz-Date": "20200101T000000Z",
        "Authorization": f"AWS4-HMAC-SHA256 Credential={scope}, SignedHeaders=host;x-amz-date, Signature={'0' * 64}",
    })
    status, code, body = aws_error(stale)
    assert (status, code) == (403, "AccessDeniedException") and "expired" in body["message"]


@pytest.mark.parametrize(("minutes", "accepted"), [(4, True), (-4, True), (6, False), (-6, False)])
def test_a_correct_signature_more_than_five_minutes_from_now_is_expired(qbusiness, monkeypatch, minutes, accepted):
    # AWS: "a request must reach AWS within five minutes of the time stamp in the request" (SigV4 reference);
    # botocore issue 149 quotes the answer: "Signature expired: ... (... - 5 min.)".
    import botocore.auth

    signed_at = datetime.now(timezone.utc).replace(tzinfo=None) - timedelta(minutes=minutes)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: signed_at)
    response = qb(qbusiness, {})
    if accepted:
        assert response.status_code == 200
    else:
        status, code, body = aws_error(response)
        assert (status, code) == (403, "AccessDeniedException") and "expired" in body["message"]


def test_without_known_credentials_any_well_scoped_signature_is_accepted():
    with QBusinessEmulator(applications=[APP]) as emulator:
        assert qb(emulator, {}, secret="anything", access_key="AKIAANY").status_code == 200
        assert qb(emulator, {}, secret="anything").status_code == 200


# -- botocore's model, on receipt ----------------------------------------------------------------------------


@pytest.mark.parametrize(("body", "field", "fragment"), [
    ({"messageUsefulness": {"usefulness": "USEFUL"}}, "messageUsefulness.submittedAt", "is required"),
    (usefulness(usefulness="GREAT"), "messageUsefulness.usefulness", "must be one of USEFUL, NOT_USEFUL"),
    (usefulness(reason="BECAUSE"), "messageUsefulness.reason", "must be one of NOT_FACTUALLY_CORRECT"),
    (usefulness(comment="x" * 1001), "messageUsefulness.comment", "at most 1000 characters"),
    (usefulness(comment="line\nbreak"), "messageUsefulness.comment", "must match the pattern ^\\P{C}*$"),
    (usefulness(submittedAt="2026-11-23T15:00:00Z"), "messageUsefulness.submittedAt", "must be a timestamp"),
    ({"messageCopiedAt": True}, "messageCopiedAt", "must be a timestamp"),
    ({"messageUsefulness": "USEFUL"}, "messageUsefulness", "must be an object"),
    ({"messageRating": 5}, "messageRating", "is not a member of PutFeedbackRequest"),
    ({"applicationId": APP}, "applicationId", "belongs in the uri"),
])
def test_qbusiness_body_validation(qbusiness, body, field, fragment):
    status, code, error = aws_error(qb(qbusiness, body))
    assert (status, code, error["reason"]) == (400, "ValidationException", "FIELD_VALIDATION_FAILED")
    assert field in [f["name"] for f in error["fields"]]
    assert any(fragment in f["message"] for f in error["fields"] if f["name"] == field), error
    assert f"Value at '{field}' failed to satisfy constraint" in error["message"]
    assert qbusiness.accepted == []


@pytest.mark.parametrize(("path", "query", "field"), [
    (QB_PATH.replace(CONV, "-" + CONV[1:]), "", "conversationId"),
    (QB_PATH.replace(MSG, MSG[:35]), "", "messageId"),
    (QB_PATH.replace(MSG, MSG + "m"), "", "messageId"),
    (QB_PATH.replace(CONV, "c" * 35 + "_"), "", "conversationId"),
    (QB_PATH, "?userId=", "userId"),
    (QB_PATH, "?userId=a%00b", "userId"),
    (QB_PATH, "?userId=" + "u" * 1025, "userId"),
])
def test_qbusiness_path_and_query_validation(qbusiness, path, query, field):
    status, code, error = aws_error(qb(qbusiness, {}, path=path, query=query))
    assert (status, code) == (400, "ValidationException")
    assert {f["name"] for f in error["fields"]} == {field}  # a wrong length may break the pattern too


def test_a_body_that_is_not_json_cannot_be_parsed(qbusiness):
    status, code, error = aws_error(qb(qbusiness, raw=b"{not json"))
    assert (status, code, error["reason"], error["fields"]) == (400, "ValidationException", "CANNOT_PARSE", [])
    assert aws_error(qb(qbusiness, [1, 2]))[2]["reason"] == "CANNOT_PARSE"


def test_an_unknown_application_is_not_found(qbusiness):
    status, code, error = aws_error(qb(qbusiness, {}, path=QB_PATH.replace(APP, "b" * 36)))
    assert (status, code) == (404, "ResourceNotFoundException")
    assert (error["resourceId"], error["resourceType"]) == ("b" * 36, "APPLICATION")
    qbusiness.add_application("b" * 36)
    assert qb(qbusiness, {}, path=QB_PATH.replace(APP, "b" * 36)).status_code == 200


def test_an_unknown_route_or_method_is_an_unknown_operation(qbusiness):
    assert aws_error(qb(qbusiness, {}, path="/applications/x/feedback"))[:2] == (404, "UnknownOperationException")
    response = signed_request("GET", f"{qbusiness.url}{QB_PATH}", None, service="qbusiness")
    assert aws_error(response)[:2] == (404, "UnknownOperationException")


@pytest.mark.parametrize(("body", "fragment"), [
    ({**QC_BODY, "targetId": TARGET.upper()}, "targetId"),
    ({**QC_BODY, "targetId": TARGET + "0"}, "targetId"),
    ({**QC_BODY, "targetType": "ANSWER"}, "targetType"),
    ({k: v for k, v in QC_BODY.items() if k != "targetType"}, "targetType' failed to satisfy constraint: Member is "),
    ({**QC_BODY, "contentFeedback": {}}, "must set exactly one of generativeContentFeedbackData"),
    ({**QC_BODY, "contentFeedback": {"generativeContentFeedbackData": {}}}, "relevance' failed"),
    ({**QC_BODY, "contentFeedback": {"generativeContentFeedbackData": {"relevance": "MEH"}}}, "HELPFUL, NOT_HELPFUL"),
])
def test_qconnect_body_validation(qconnect, body, fragment):
    status, code, error = aws_error(qc(qconnect, body))
    assert (status, code) == (400, "ValidationException") and fragment in error["message"]
    assert set(error) == {"message"}, "Q Connect's ValidationException models only a message"


def test_qconnect_takes_an_assistant_arn_and_refuses_an_unknown_assistant(qconnect):
    arn = f"arn:aws:wisdom:{REGION}:123456789012:assistant/{ASSISTANT}"
    ok = qc(qconnect, QC_BODY, assistant=arn.replace(":", "%3A").replace("/", "%2F"))
    assert ok.status_code == 200 and ok.json()["assistantId"] == ASSISTANT
    unknown = str(uuid.uuid4())
    status, code, error = aws_error(qc(qconnect, QC_BODY, assistant=unknown))
    assert (status, code, error["resourceName"]) == (404, "ResourceNotFoundException", unknown)
    assert aws_error(qc(qconnect, QC_BODY, assistant="not-an-id"))[:2] == (400, "ValidationException")


@pytest.mark.parametrize("resource", [f"knowledge-base/{ASSISTANT}", f"session/{ASSISTANT}/{TARGET}"])
def test_qconnect_an_arn_of_another_resource_is_not_found_rather_than_a_server_error(qconnect, resource):
    # The model's UuidOrArn pattern takes any wisdom ARN; only an assistant's names an assistant. Answering 500
    # here (the emulator crashed) made a request that can never succeed look retryable.
    arn = f"arn:aws:wisdom:{REGION}:123456789012:{resource}"
    status, code, error = aws_error(qc(qconnect, QC_BODY, assistant=arn.replace(":", "%3A").replace("/", "%2F")))
    assert (status, code, error["resourceName"]) == (404, "ResourceNotFoundException", arn)


# -- faults, as each service spells them ---------------------------------------------------------------------


def test_throttles_are_429_for_qbusiness_and_400_for_qconnect(qbusiness, qconnect):
    qbusiness.fail_next(1, "throttle", retry_after=3)
    qconnect.fail_next(1, "throttle", retry_after=None)
    first, second = qb(qbusiness, {}), qc(qconnect, QC_BODY)
    assert aws_error(first)[:2] == (429, "ThrottlingException") and first.headers["Retry-After"] == "3"
    assert aws_error(second)[:2] == (400, "ThrottlingException") and "Retry-After" not in second.headers


def test_server_errors(qbusiness, qconnect):
    qbusiness.fail_next(1, "error")
    qconnect.fail_next(1, "error", status=503)
    assert aws_error(qb(qbusiness, {}))[:2] == (500, "InternalServerException")
    assert aws_error(qc(qconnect, QC_BODY))[:2] == (503, "InternalFailure")


def test_boto3_sees_the_emulators_errors_as_the_modelled_exceptions(qbusiness, qconnect):
    qb_client, qc_client = client("qbusiness", qbusiness.url), client("qconnect", qconnect.url)
    with pytest.raises(qb_client.exceptions.ValidationException) as caught:
        qb_client.put_feedback(applicationId=APP, conversationId=CONV, messageId=MSG,
                               messageUsefulness={"usefulness": "USEFUL", "submittedAt": 0, "comment": "x" * 1001})
    assert caught.value.response["reason"] == "FIELD_VALIDATION_FAILED"
    qconnect.fail_next(1, "throttle")
    with pytest.raises(qc_client.exceptions.ThrottlingException):
        qc_client.put_feedback(assistantId=ASSISTANT, **QC_BODY)
    with pytest.raises(ClientError) as denied:  # another client: its exception classes are its own
        client("qconnect", qconnect.url, secret="wrong").put_feedback(assistantId=ASSISTANT, **QC_BODY)
    assert denied.value.response["Error"]["Code"] == "AccessDeniedException"


# -- the shared pieces, as pure functions ----------------------------------------------------------------------


def test_validate_against_the_model():
    shape = operation_model("qbusiness", "PutFeedback").input_shape
    good = {"applicationId": APP, "conversationId": CONV, "messageId": MSG,
            "messageUsefulness": {"usefulness": "USEFUL", "submittedAt": datetime.now(timezone.utc)}}
    assert validate(shape, good) == []
    assert validate(shape, {**good, "userId": "Zoë 👍"}) == []
    assert validate(shape, {"applicationId": APP}) == [Problem("conversationId", "is required"),
                                                       Problem("messageId", "is required")]
    assert str(Problem("messageId", "is required")) == "messageId: is required"


@pytest.mark.parametrize(("status", "code", "kind"), [
    (429, "ThrottlingException", RetryableDeliveryError), (400, "ThrottlingException", RetryableDeliveryError),
    (400, "TooManyRequestsException", RetryableDeliveryError), (408, "RequestTimeout", RetryableDeliveryError),
    (429, None, RetryableDeliveryError), (500, "InternalServerException", RetryableDeliveryError),
    (503, "ServiceUnavailable", RetryableDeliveryError), (403, "AccessDeniedException", CredentialsError),
    (401, "Unauthorized", CredentialsError), (400, "ExpiredTokenException", CredentialsError),
    (400, "UnrecognizedClientException", CredentialsError), (400, "ValidationException", PermanentDeliveryError),
    (404, "ResourceNotFoundException", PermanentDeliveryError), (409, "ConflictException", PermanentDeliveryError),
    (None, None, RetryableDeliveryError),
])
def test_classify(status, code, kind):
    assert classify(status, code) is kind


def test_a_quoted_canonical_request_and_session_token_are_not_recorded():
    quoted = ("The request signature we calculated does not match the signature you provided.\n\nThe Canonical "
              "String for this request should have been\n'POST\n/\n\nx-amz-security-token:IQoJsecret\n'")
    exc = ClientError({"Error": {"Code": "InvalidSignatureException", "Message": quoted},
                       "ResponseMetadata": {"HTTPStatusCode": 403}, "message": quoted}, "PutFeedback")
    error = client_error(exc)
    assert isinstance(error, CredentialsError) and "IQoJsecret" not in str(error) + str(error.response)
    assert error.response["message"] == "The request signature we calculated does not match the signature you provided."
    assert redact("x-amz-security-token: abc def") == "x-amz-security-token: <redacted> def"


def test_recorded_aws_structures_are_json_safe():
    moment = datetime(2026, 11, 23, 15, 0, tzinfo=timezone.utc)
    assert jsonable({"at": moment, "items": ({"raw": b"x"},), "n": 1}) == {
        "at": "2026-11-23T15:00:00+00:00", "items": [{"raw": "x"}], "n": 1}


def test_retry_after_reads_seconds_and_http_dates():
    assert retry_after("7") == 7.0 and retry_after("0.5") == 0.5 and retry_after("-3") == 0.0
    assert retry_after(None) is None and retry_after("soon") is None
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0


@pytest.mark.parametrize("method", ["OPTIONS", "TRACE", "GET"])
def test_a_method_with_no_operation_is_an_unknown_operation_not_a_crash(qbusiness, method):
    path = f"/applications/{APP}/conversations/{'c' * 36}/messages/{'m' * 36}/feedback"
    response = requests.request(method, qbusiness.url + path, timeout=5)
    assert (response.status_code, response.headers["x-amzn-ErrorType"]) == (404, "UnknownOperationException")
    assert method in response.json()["message"]
