"""Strict local emulators of Amazon Q Business and Amazon Q Connect ``PutFeedback``.

Routes, methods, path labels and query strings come from botocore's service model, as do the input checks
(types, required members, lengths, patterns, enums) and the error codes and statuses. A request must carry a
SigV4 ``Authorization`` header scoped to the service's signing name (``qbusiness``, ``wisdom``); given
``credentials={access_key_id: secret}``, the emulator also recomputes the signature.

    with QBusinessEmulator(applications=[app_id], credentials={"AKID": "secret"}) as emulator:
        boto3.client("qbusiness", endpoint_url=emulator.url, ...).put_feedback(...)
        emulator.accepted  # [{"operation": "PutFeedback", "params": {...}}]
"""

from __future__ import annotations

import hmac
import json
import re
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timezone
from typing import Any, ClassVar
from urllib.parse import parse_qsl, quote, unquote

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.model import OperationModel
from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from .._botocore_validation import Problem, service_model, validate
from .server import EmulatorServer, json_response, retry_after_header

__all__ = ["AwsEmulator", "QBusinessEmulator", "QConnectEmulator"]

_AUTH = re.compile(r"AWS4-HMAC-SHA256 Credential=([^,\s]+),\s*SignedHeaders=([^,\s]+),\s*Signature=([0-9a-f]{64})")
_METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]
# How far X-Amz-Date may be from now: "a request must reach AWS within five minutes of the time stamp in the
# request" (AWS SigV4 reference); 15 minutes is S3's allowance, not these services'.
MAX_SKEW_SECONDS = 5 * 60


class AwsEmulator(EmulatorServer):
    """A rest-json AWS service serving the operations that have a ``handle_<operation>`` method."""

    service: ClassVar[str] = ""  # botocore's name for the service model
    throttle_status: ClassVar[int] = 429
    server_error: ClassVar[str] = "InternalServerException"

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, region: str | None = None,
                 credentials: Mapping[str, str] | None = None, account_id: str = "123456789012") -> None:
        self.model = service_model(self.service)
        self.signing_name = self.model.signing_name or self.model.endpoint_prefix
        self.region, self.account_id = region, account_id
        self.credentials = dict(credentials) if credentials is not None else None
        self.accepted: list[dict[str, Any]] = []  # what passed every check, as parsed members
        self._state_lock = threading.Lock()
        self._routes: list[tuple[str, re.Pattern[str], OperationModel, Callable[[dict[str, Any]], Response]]] = []
        for name in self.model.operation_names:
            handler = getattr(self, f"handle_{name}", None)
            if handler is not None:
                op = self.model.operation_model(name)
                self._routes.append((op.http["method"], _route(op.http["requestUri"]), op, handler))
        super().__init__(host, port)

    # -- the server ---------------------------------------------------------------------------------------------

    def create_app(self) -> Flask:
        app = Flask(f"{self.service}-emulator")

        # Every method reaches _dispatch (no automatic OPTIONS answer), which names what has no operation.
        @app.route("/", defaults={"rest": ""}, methods=_METHODS, provide_automatic_options=False)
        @app.route("/<path:rest>", methods=_METHODS, provide_automatic_options=False)
        def dispatch(rest: str) -> Response:
            return self._dispatch()

        @app.errorhandler(Exception)
        def crashed(exc: Exception) -> Response:  # a bug here must still answer as AWS would
            if isinstance(exc, HTTPException):  # a method no route takes (TRACE...): no such operation
                return self.error("UnknownOperationException", f"No operation at {request.method} {request.path}",
                                  404)
            app.logger.exception("%s emulator failed", self.name)
            return self.error_response()

        return app

    def reset(self) -> None:
        super().reset()
        with self._state_lock:
            self.accepted.clear()

    def _dispatch(self) -> Response:
        raw = request.environ.get("RAW_URI") or quote(request.path)  # the path as signed: still percent-encoded
        raw_path, _, raw_query = raw.partition("?")
        found = [(route, m) for route in self._routes
                 if route[0] == request.method and (m := route[1].fullmatch(raw_path))]
        if not found:
            return self.error("UnknownOperationException", f"No operation at {request.method} {raw_path}", 404)
        (_, _, op, handler), match = found[0]
        denied = self.check_signature(raw_path, raw_query)
        if denied is not None:
            return denied
        params, problems = self._read_input(op, match.groupdict(), raw_query)
        if problems:
            return self.validation_error(problems)
        response = handler(params)
        if 200 <= response.status_code < 300:
            with self._state_lock:
                self.accepted.append({"operation": op.name, "params": params})
        return response

    def _read_input(self, op: OperationModel, labels: dict[str, str], raw_query: str
                    ) -> tuple[dict[str, Any], list[Problem]]:
        """The operation's members from the path, query, headers and JSON body, and what is wrong with them."""
        shape = op.input_shape
        query = dict(parse_qsl(raw_query, keep_blank_values=True))
        params: dict[str, Any] = {}
        problems: list[Problem] = []
        for name, member in shape.members.items():
            location, wire = member.serialization.get("location"), member.serialization.get("name", name)
            if location == "uri" and wire in labels:
                params[name] = unquote(labels[wire])
            elif location == "querystring" and wire in query:
                params[name] = query[wire]
            elif location == "header" and wire in request.headers:
                params[name] = request.headers[wire]
        body = request.get_data()
        if body:
            try:
                document = json.loads(body)
            except ValueError:
                return params, [Problem("", "the body is not JSON")]
            if not isinstance(document, dict):
                return params, [Problem("", "the body must be a JSON object")]
            for key, value in document.items():
                member = shape.members.get(key)
                if member is not None and member.serialization.get("location"):
                    problems.append(Problem(key, "belongs in the " + member.serialization["location"]))
                else:
                    params[key] = value
        return params, problems + validate(shape, params)

    # -- SigV4 --------------------------------------------------------------------------------------------------

    def check_signature(self, raw_path: str, raw_query: str) -> Response | None:
        """AccessDeniedException unless the request is SigV4-signed for this service (and, when the emulator
        knows the secret, signed correctly)."""
        header = request.headers.get("Authorization")
        if not header:
            return self.denied("Missing Authentication Token: the request is not signed.")
        match = _AUTH.fullmatch(header.strip())
        if match is None:
            return self.denied("The Authorization header is not an AWS4-HMAC-SHA256 signature.")
        credential, signed_headers, signature = match.groups()
        scope = credential.split("/")
        if len(scope) != 5 or scope[4] != "aws4_request":
            return self.denied(f"Malformed credential scope {credential!r}.")
        access_key, date, region, signing_name = scope[:4]
        if signing_name != self.signing_name:
            return self.denied(f"Credential should be scoped to correct service: '{self.signing_name}'.")
        if self.region is not None and region != self.region:
            return self.denied(f"Credential should be scoped to a valid region: '{self.region}'.")
        amz_date = request.headers.get("X-Amz-Date", "")
        try:
            signed_at = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
        except ValueError:
            return self.denied("X-Amz-Date is missing or malformed.")
        if amz_date[:8] != date:
            return self.denied("The credential scope date is not the date of X-Amz-Date.")
        if abs((datetime.now(timezone.utc) - signed_at).total_seconds()) > MAX_SKEW_SECONDS:
            return self.denied("Signature expired: X-Amz-Date is too far from the server's time.")
        names = signed_headers.split(";")
        if "host" not in names or "x-amz-date" not in names:
            return self.denied("SignedHeaders must include host and x-amz-date.")
        if self.credentials is None:
            return None
        secret = self.credentials.get(access_key)
        if secret is None:
            return self.denied("The security token included in the request is invalid.")
        url = f"http://{request.host}{raw_path}" + (f"?{raw_query}" if raw_query else "")
        signed = AWSRequest(method=request.method, url=url, data=request.get_data(),
                            headers={name: request.headers.get(name, "") for name in names})
        signed.context["timestamp"] = amz_date
        signer = SigV4Auth(Credentials(access_key, secret, request.headers.get("X-Amz-Security-Token")),
                           signing_name, region)
        expected = signer.signature(signer.string_to_sign(signed, signer.canonical_request(signed)), signed)
        if not hmac.compare_digest(expected, signature):
            return self.denied("The request signature we calculated does not match the signature you provided.")
        return None

    # -- answers ------------------------------------------------------------------------------------------------

    def error(self, code: str, message: str, status: int | None = None, headers: Mapping[str, str] | None = None,
              **fields: Any) -> Response:
        """An AWS rest-json error: ``x-amzn-ErrorType`` and ``{"message": ...}``, status from the model."""
        if status is None:
            status = self.model.shape_for(code).metadata["error"]["httpStatusCode"]
        return json_response({"message": message, **fields}, status, {
            "x-amzn-ErrorType": code, "x-amzn-RequestId": str(uuid.uuid4()), **(headers or {}),
        })

    def denied(self, message: str) -> Response:
        return self.error("AccessDeniedException", message, 403)

    def validation_error(self, problems: list[Problem]) -> Response:
        n = len(problems)
        message = f"{n} validation error{'s' if n > 1 else ''} detected: " + "; ".join(
            f"Value at '{p.path or 'input'}' failed to satisfy constraint: Member {p.message}" for p in problems
        )
        members = self.model.shape_for("ValidationException").members
        fields: dict[str, Any] = {}
        if "reason" in members:
            fields["reason"] = "CANNOT_PARSE" if any(not p.path for p in problems) else "FIELD_VALIDATION_FAILED"
        if "fields" in members:
            fields["fields"] = [{"name": p.path, "message": p.message} for p in problems if p.path]
        return self.error("ValidationException", message, **fields)

    def ok(self, body: Any = None) -> Response:
        return json_response(body, 200, {"x-amzn-RequestId": str(uuid.uuid4())})

    def throttle_response(self, retry_after: float | None) -> Response:
        return self.error("ThrottlingException", "Rate exceeded", self.throttle_status, retry_after_header(retry_after))

    def error_response(self) -> Response:
        return self.error(self.server_error, "We encountered an internal error. Please try again.", 500)


class QBusinessEmulator(AwsEmulator):
    """``PutFeedback`` of Amazon Q Business: 200 with an empty body for a known application."""

    name = "qbusiness"
    service = "qbusiness"

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, applications: Iterable[str] = (),
                 **options: Any) -> None:
        self.applications = set(applications)
        super().__init__(host, port, **options)

    def add_application(self, application_id: str) -> None:
        self.applications.add(application_id)

    def handle_PutFeedback(self, params: dict[str, Any]) -> Response:  # named after the operation
        if params["applicationId"] not in self.applications:
            return self.error("ResourceNotFoundException", f"Application {params['applicationId']} not found.",
                              resourceId=params["applicationId"], resourceType="APPLICATION")
        return self.ok()


class QConnectEmulator(AwsEmulator):
    """``PutFeedback`` of Amazon Q Connect: echoes the feedback for a known assistant (UUID or ARN).

    Q Connect models its ThrottlingException as HTTP 400; its model has no 500 error for the operation, so a
    server error is AWS's common ``InternalFailure``."""

    name = "qconnect"
    service = "qconnect"
    throttle_status = 400
    server_error = "InternalFailure"

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, assistants: Iterable[str] = (),
                 **options: Any) -> None:
        self.assistants = set(assistants)
        super().__init__(host, port, **options)

    def add_assistant(self, assistant_id: str) -> None:
        self.assistants.add(assistant_id)

    def handle_PutFeedback(self, params: dict[str, Any]) -> Response:  # named after the operation
        given = params["assistantId"]
        assistant_id = self._assistant_of(given)
        if assistant_id not in self.assistants:
            return self.error("ResourceNotFoundException", f"Assistant {given} not found.", resourceName=given)
        return self.ok({
            "assistantId": assistant_id,
            "assistantArn": f"arn:aws:wisdom:{self.region or 'us-east-1'}:{self.account_id}:assistant/{assistant_id}",
            "targetId": params["targetId"], "targetType": params["targetType"],
            "contentFeedback": params["contentFeedback"],
        })


    def _assistant_of(self, given: str) -> str | None:
        """The assistant a UUID or ARN names: None for an ARN of another resource (a knowledge base, a session),
        account or region, which the model's pattern lets through and the service cannot find."""
        if not given.startswith("arn:"):
            return given
        parts = given.split(":", 5)
        resource = parts[5].split("/") if len(parts) == 6 else []
        if len(resource) != 2 or resource[0] != "assistant" or parts[4] != self.account_id \
                or (self.region is not None and parts[3] != self.region):
            return None
        return resource[1]


def _route(request_uri: str) -> re.Pattern[str]:
    """``/assistants/{assistantId}/feedback`` -> a pattern over the raw (percent-encoded) path."""
    path = request_uri.split("?", 1)[0]
    parts = re.split(r"\{(\w+)(\+?)\}", path)
    regex = ""
    for i, part in enumerate(parts):
        if i % 3 == 0:
            regex += re.escape(part)
        elif i % 3 == 1:
            regex += f"(?P<{part}>{'.+' if parts[i + 1] else '[^/]+'})"
    return re.compile(regex)


