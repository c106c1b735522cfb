"""What the two AWS adapters share: boto3 clients (one per process and settings, reused across threads),
the request record (JSON-able, timestamps as ISO strings) and its conversion to boto3 parameters, validation
against botocore's model before sending, and the classification of botocore's errors.

The outbox owns retries: botocore's are bounded to ``max_attempts`` (default 2, standard mode, whose first
backoff is at most 1 s), so a throttled call returns quickly and the outbox waits for ``Retry-After``.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from datetime import datetime, timezone
from typing import Any, ClassVar

import boto3
from botocore import xform_name
from botocore.client import BaseClient
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    CredentialRetrievalError,
    HTTPClientError,
    NoCredentialsError,
    ParamValidationError,
    PartialCredentialsError,
    ProfileNotFound,
    SSOError,
    TokenRetrievalError,
)
from botocore.model import Shape

from .._botocore_validation import operation_model, validate
from ..exceptions import CredentialsError, DeliveryError, PermanentDeliveryError, RetryableDeliveryError
from ..models import Message
from .base import ProviderAdapter, Skip
from .http import retry_after_seconds
from .mapping import RatingThresholds

logger = logging.getLogger(__name__)

THROTTLING_CODES = frozenset({
    "ThrottlingException", "Throttling", "ThrottledException", "TooManyRequestsException", "RequestThrottled",
    "RequestThrottledException", "RequestLimitExceeded", "SlowDown",
})
RETRYABLE_CODES = frozenset({"RequestTimeout", "RequestTimeoutException", "InternalFailure", "ServiceUnavailable"})
# Codes AWS sends for credentials that are missing, unknown, expired or wrongly signed (some with HTTP 400).
CREDENTIAL_CODES = frozenset({
    "AccessDeniedException", "UnrecognizedClientException", "InvalidSignatureException", "ExpiredTokenException",
    "IncompleteSignatureException", "MissingAuthenticationTokenException", "InvalidClientTokenId",
    "SignatureDoesNotMatch", "ExpiredToken", "AuthFailure",
})
_NO_CREDENTIALS = (NoCredentialsError, PartialCredentialsError, CredentialRetrievalError, ProfileNotFound,
                   TokenRetrievalError, SSOError)

# -- clients ---------------------------------------------------------------------------------------------------

_clients: dict[tuple[Any, ...], BaseClient] = {}
_clients_lock = threading.Lock()


def aws_client(service: str, *, region_name: str, endpoint_url: str | None = None, profile_name: str | None = None,
               connect_timeout: float = 3.0, read_timeout: float = 10.0, max_attempts: int = 2,
               credentials: tuple[str, str] | None = None) -> BaseClient:
    """The process's client for these settings, created on first use. Clients are thread-safe; sessions are
    not, so creation happens under a lock (which also makes it one client per key).

    ``credentials`` (key id, secret) bypasses boto3's chain: for emulators, which need a signature but no
    account. Real deployments leave it out and use the chain or a profile."""
    key = (service, region_name, endpoint_url, profile_name, connect_timeout, read_timeout, max_attempts, credentials)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            config = Config(
                retries={"total_max_attempts": max_attempts, "mode": "standard"},
                connect_timeout=connect_timeout, read_timeout=read_timeout, user_agent_extra="feedback-bridge",
            )
            key_id, secret = credentials or (None, None)
            session = boto3.session.Session(
                profile_name=profile_name, aws_access_key_id=key_id, aws_secret_access_key=secret
            )
            client = session.client(service, region_name=region_name, endpoint_url=endpoint_url, config=config)
            _clients[key] = client
            logger.debug("Created %s client for %s (endpoint %s)", service, region_name, endpoint_url or "default")
        return client


def forget_clients(service: str | None = None) -> None:
    """Drop cached clients, so the next call reads the credential chain again (after rotating keys)."""
    with _clients_lock:
        for key in [k for k in _clients if service is None or k[0] == service]:
            del _clients[key]


def _after_fork() -> None:
    """A forked worker must not share the parent's connection pools, nor a lock another thread held."""
    global _clients_lock
    _clients.clear()
    _clients_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)

# -- timestamps in the record ---------------------------------------------------------------------------------


def iso(moment: datetime) -> str:
    """A timestamp as the outbox records it: ISO 8601 in UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).isoformat()


def to_boto3(shape: Shape, value: Any) -> Any:
    """The recorded parameters as boto3 takes them: ISO strings at timestamp members become datetimes."""
    if shape.type_name == "timestamp" and isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value  # left for validation to refuse
    if shape.type_name == "structure" and isinstance(value, dict):
        return {k: to_boto3(shape.members[k], v) if k in shape.members else v for k, v in value.items()}
    if shape.type_name == "list" and isinstance(value, list):
        return [to_boto3(shape.member, v) for v in value]
    return value


def jsonable(value: Any) -> Any:
    """A parsed AWS structure as the outbox's JSON column takes it (datetimes as ISO strings)."""
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


# -- errors ---------------------------------------------------------------------------------------------------


def classify(status: int | None, code: str | None) -> type[DeliveryError]:
    """Which outbox outcome an AWS error response leads to."""
    if code in THROTTLING_CODES or code in RETRYABLE_CODES:  # Q Connect throttles with HTTP 400
        return RetryableDeliveryError
    if code in CREDENTIAL_CODES or status in (401, 403):
        return CredentialsError
    if status is not None and 400 <= status < 500 and status not in (408, 429):
        return PermanentDeliveryError
    return RetryableDeliveryError  # 408, 429, 5xx and anything unexpected: the outbox retries, then gives up



def client_error(exc: ClientError) -> DeliveryError:
    """The DeliveryError for an error answer: status, code, message, request id and modelled fields."""
    meta = exc.response.get("ResponseMetadata", {})
    error = exc.response.get("Error", {})
    status, code = meta.get("HTTPStatusCode"), error.get("Code")
    message = redact(error.get("Message"))
    record: dict[str, Any] = {
        "status": status, "code": code, "message": message, "request_id": meta.get("RequestId"),
        "retries": meta.get("RetryAttempts", 0),
    }
    extra = jsonable({k: v for k, v in exc.response.items() if k not in ("Error", "ResponseMetadata")})
    record.update({k: redact(v) if isinstance(v, str) else v for k, v in extra.items()})
    text = f"{code} (HTTP {status}): {message or 'no message'}"
    kind = classify(status, code)
    if kind is RetryableDeliveryError:
        wait = retry_after_seconds(meta.get("HTTPHeaders", {}).get("retry-after"))
        if wait is not None:
            record["retry_after"] = wait
        return RetryableDeliveryError(text, retry_after=wait, response=record)
    return kind(text, response=record)


# A signature mismatch may quote the canonical request, which holds the session token header when one is used.
_CANONICAL = re.compile(r"\s*The Canonical String for this request should have been.*", re.S)
_TOKEN = re.compile(r"(?i)(x-amz-security-token\s*[:=]\s*)\S+")


def redact(message: str | None) -> str | None:
    """An error message as the outbox may keep it: no quoted canonical request, no session token."""
    if not message:
        return message
    return _TOKEN.sub(r"\1<redacted>", _CANONICAL.sub("", message))


def transport_error(exc: BotoCoreError) -> DeliveryError:
    """The DeliveryError for a call that got no answer, or could not be made."""
    if type(exc) is HTTPClientError:  # botocore's catch-all: its message quotes whatever the HTTP client said
        inner = type(exc.kwargs.get("error")).__name__
        record = {"status": None, "code": "HTTPClientError", "message": f"the HTTP client raised {inner}"}
        if isinstance(exc.kwargs.get("error"), ValueError):
            # http.client refusing a header, quoting it. The headers botocore sends come from the credentials
            # (Authorization, X-Amz-Security-Token) and fixed values: a session token with a line break.
            return CredentialsError("An AWS request header could not be sent (a session token with a line break "
                                    "or other character a header cannot carry?); not quoted, it may be secret.",
                                    response=record)
        return RetryableDeliveryError(f"HTTPClientError: the HTTP client raised {inner}", response=record)
    record = {"status": None, "code": type(exc).__name__, "message": str(exc)}
    if isinstance(exc, _NO_CREDENTIALS):
        return CredentialsError(f"No usable AWS credentials: {exc}", response=record)
    if isinstance(exc, ParamValidationError):
        return PermanentDeliveryError(f"Refused by botocore, not sent: {exc}", response=record)
    # Timeouts, refused and dropped connections (ConnectionError, HTTPClientError), and anything else
    return RetryableDeliveryError(f"{type(exc).__name__}: {exc}", response=record)


# -- the adapter base -----------------------------------------------------------------------------------------


class AwsAdapter(ProviderAdapter):
    """A state provider called through one boto3 operation. Subclasses set ``service``/``label``, map states
    in ``build_request`` to ``{"operation": ..., "params": {...}}`` and may shape ``response_record``."""

    mode = "state"
    service: ClassVar[str] = ""
    label: ClassVar[str] = ""  # the product's name, for reasons an operator reads
    operation: ClassVar[str] = "PutFeedback"

    def __init__(self, name: str | None = None, *, region_name: str, endpoint_url: str | None = None,
                 profile_name: str | None = None, rating_thresholds: Any = None, connect_timeout: float = 3.0,
                 read_timeout: float = 10.0, max_attempts: int = 2,
                 static_credentials: tuple[str, str] | list[str] | None = None) -> None:
        super().__init__(name)  # an unknown option is a TypeError, which the registry reports
        _require_str("region_name", region_name)
        if endpoint_url is not None and not (isinstance(endpoint_url, str) and endpoint_url.startswith("http")):
            raise ValueError("endpoint_url must be None or an http(s) URL")
        if profile_name is not None:
            _require_str("profile_name", profile_name)
        for key, seconds in (("connect_timeout", connect_timeout), ("read_timeout", read_timeout)):
            if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds <= 0:
                raise ValueError(f"{key} must be a positive number of seconds")
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or not 1 <= max_attempts <= 5:
            raise ValueError("max_attempts must be an integer from 1 to 5 (botocore's attempts per delivery)")
        if static_credentials is not None and not (
            isinstance(static_credentials, (tuple, list)) and len(static_credentials) == 2
            and all(isinstance(part, str) and part for part in static_credentials)
        ):
            raise ValueError("static_credentials must be a (key id, secret) pair; it is meant for emulators")
        self.thresholds = RatingThresholds.from_option(rating_thresholds)
        self.region_name, self.endpoint_url, self.profile_name = region_name, endpoint_url, profile_name
        self.client_options = {
            "region_name": region_name, "endpoint_url": endpoint_url, "profile_name": profile_name,
            "connect_timeout": float(connect_timeout), "read_timeout": float(read_timeout),
            "max_attempts": max_attempts,
            "credentials": tuple(static_credentials) if static_credentials else None,
        }
        self.input_shape = operation_model(self.service, self.operation).input_shape

    def check_option(self, key: str, member: str, value: Any) -> None:
        """Refuse a config value the service's model would refuse, naming the config key."""
        problems = validate(self.input_shape.members[member], value)
        if problems:
            raise ValueError(f"{key} {problems[0].message} ({self.label} {member})")

    # -- mapping helpers --------------------------------------------------------------------------------------

    def refs(self, message: Message, required: tuple[str, ...]) -> dict[str, Any]:
        """This provider's refs of ``message``; Skip naming what is missing."""
        refs = message.refs.get(self.name)
        missing = [k for k in required if not (isinstance(refs, dict) and refs.get(k))]
        if missing:
            raise Skip(self.missing_refs(missing))
        return dict(refs or {})

    def missing_refs(self, missing: list[str]) -> str:
        return (f"The message was registered without {self.label} refs: register_message(refs={{{self.name!r}: "
                f"{{...}}}}) needs {', '.join(missing)}.")

    def refs_problem(self, message: Message, required: tuple[str, ...]) -> str | None:
        try:
            self.refs(message, required)
        except Skip as skip:
            return skip.reason
        return None

    # -- transport --------------------------------------------------------------------------------------------

    def send(self, request: dict[str, Any]) -> dict[str, Any]:
        if request.get("operation") != self.operation:
            raise PermanentDeliveryError(f"Not sent: {self.label} has no operation {request.get('operation')!r}.")
        params = to_boto3(self.input_shape, request.get("params"))
        problems = validate(self.input_shape, params)
        if problems:
            raise PermanentDeliveryError(
                f"Not sent: {self.label} {self.operation} would refuse it: " + "; ".join(map(str, problems))
            )
        try:
            client = aws_client(self.service, **self.client_options)
            result = getattr(client, xform_name(self.operation))(**params)
        except ClientError as exc:
            error = client_error(exc)
        except BotoCoreError as exc:
            error = transport_error(exc)
        else:
            meta = result.get("ResponseMetadata", {})
            return self.response_record(meta.get("HTTPStatusCode"), meta.get("RequestId"),
                                        meta.get("RetryAttempts", 0), result)
        if isinstance(error, CredentialsError):
            forget_clients(self.service)  # the next attempt reads the credential chain again
        raise error

    def response_record(self, status: int | None, request_id: str | None, retries: int,
                        result: dict[str, Any]) -> dict[str, Any]:
        body = {k: v for k, v in result.items() if k != "ResponseMetadata"}
        record: dict[str, Any] = {"status": status, "request_id": request_id, "retries": retries}
        if body:
            record["body"] = jsonable(body)
        return record

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(), "service": self.service, "region_name": self.region_name,
            "endpoint_url": self.endpoint_url, "profile_name": self.profile_name,
            "rating_thresholds": {"positive": self.thresholds.positive, "negative": self.thresholds.negative},
        }


def _require_str(key: str, value: Any) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{key} must be a non-empty string")
