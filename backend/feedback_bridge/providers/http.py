"""What every ``requests``-based provider shares: a pooled session with timeouts and no hidden retries, and the
classification of responses and exceptions into :class:`~feedback_bridge.exceptions.DeliveryError` subclasses.

The outbox owns retries, so urllib3 never retries on its own: a throttled call comes back at once and the outbox
waits for its ``Retry-After`` instead of a thread sleeping inside ``send``.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from requests.auth import AuthBase

from ..exceptions import CredentialsError, DeliveryError, PermanentDeliveryError, RetryableDeliveryError

logger = logging.getLogger(__name__)

Timeout = tuple[float, float]
DEFAULT_TIMEOUT: Timeout = (5.0, 15.0)  # (connect, read) seconds; keep well below FEEDBACK_LEASE_SECONDS
MAX_BODY_CHARS = 2000  # of a non-JSON (or oversized) response body kept in the outbox
RETRYABLE_STATUSES = frozenset({408, 429})
REDACTED = "[redacted]"


# Visible ASCII, no whitespace: every RFC 6750 token fits, and nothing http.client would refuse in a header.
_HEADER_SAFE_TOKEN = re.compile(r"[\x21-\x7e]+")


def bearer_problem(token: Any) -> str | None:
    """Why ``token`` cannot be sent as ``Authorization: Bearer <token>``, or None. Never quotes the token: a
    trailing newline (a token read from a file) would otherwise end in a ValueError that quotes the header."""
    if not isinstance(token, str) or not token:
        return "is empty or not a string"
    if not _HEADER_SAFE_TOKEN.fullmatch(token):
        return "holds whitespace, a line break or a non-ASCII character, which an HTTP header cannot carry"
    return None


class BearerAuth(AuthBase):
    """Sets ``Authorization: Bearer`` at send time. Passing auth explicitly also stops ``requests`` from
    replacing our header with credentials from ``~/.netrc``, which it does when no auth is given. A token no
    header can carry is a :class:`CredentialsError` that does not quote it."""

    def __init__(self, token: str) -> None:
        self.token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        problem = bearer_problem(self.token)
        if problem:
            raise CredentialsError(f"Not sent: the bearer token {problem}", response={"error": "InvalidToken"})
        request.headers["Authorization"] = f"Bearer {self.token}"
        return request

    def __repr__(self) -> str:  # never the token, should a traceback or debugger print it
        return "BearerAuth(***)"


def parse_timeout(value: Any) -> Timeout:
    """``5`` (both), ``[3, 10]`` (connect, read), or None for the default."""
    if value is None:
        return DEFAULT_TIMEOUT
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        timeout = (float(value), float(value))
    elif isinstance(value, (list, tuple)) and len(value) == 2:
        timeout = (float(value[0]), float(value[1]))
    else:
        raise ValueError("timeout must be seconds or [connect, read] seconds")
    if min(timeout) <= 0:
        raise ValueError("timeouts must be > 0")
    return timeout


def make_session(pool_size: int = 10) -> requests.Session:
    """One session per adapter: keep-alive connections reused across deliveries, at most ``pool_size`` per host."""
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_size, max_retries=0)  # 0: no urllib3 retries
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """``Retry-After`` as seconds from now: delay-seconds or an HTTP date (RFC 9110 10.2.3); None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # an HTTP date is always GMT
            when = when.replace(tzinfo=timezone.utc)
        seconds = (when - (now or datetime.now(timezone.utc))).total_seconds()
    if seconds != seconds or seconds in (float("inf"), float("-inf")):  # NaN or infinite
        return None
    return max(0.0, seconds)


def redact(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return text


def describe_response(response: requests.Response, secrets: Iterable[str] = ()) -> dict[str, Any]:
    """What the outbox keeps of a response: status, the JSON body (or the text, truncated) and ``Retry-After``.
    Any of our secrets a server echoed back is blanked out."""
    secrets = tuple(secrets)
    text = redact(response.text, secrets)
    record: dict[str, Any] = {"status": response.status_code}
    try:
        body: Any = json.loads(text) if text and len(text) <= 10 * MAX_BODY_CHARS else None
    except ValueError:
        body = None
    if body is not None:
        record["body"] = body
    elif text:
        record["body_text"] = text[:MAX_BODY_CHARS]
    if "Retry-After" in response.headers:
        record["retry_after"] = response.headers["Retry-After"]
    return record


def classify(response: requests.Response, secrets: Iterable[str] = (), *, what: str = "provider") -> dict[str, Any]:
    """The recorded response of a 2xx; otherwise raise the matching DeliveryError with it attached."""
    record = describe_response(response, secrets)
    status = response.status_code
    if 200 <= status < 300:
        return record
    summary = f"{what} answered HTTP {status}{_error_hint(record)}"
    if status in RETRYABLE_STATUSES or status >= 500:
        retry_after = retry_after_seconds(response.headers.get("Retry-After"))
        raise RetryableDeliveryError(summary, retry_after=retry_after, response=record)
    if status in (401, 403):
        raise CredentialsError(summary, response=record)
    raise PermanentDeliveryError(summary, response=record)


def request(
    session: requests.Session, method: str, url: str, *, timeout: Timeout, secrets: Iterable[str] = (),
    what: str = "provider", **kwargs: Any,
) -> dict[str, Any]:
    """Send one request and classify the outcome. Transport failures are retryable: the request may not have
    arrived (connection refused or dropped) or its answer was lost (read timeout) — the outbox tries again."""
    secrets = tuple(secrets)
    try:
        response = session.request(method, url, timeout=timeout, allow_redirects=False, **kwargs)
    except (requests.RequestException, ValueError) as exc:
        raise _transport_error(exc, what, secrets) from None
    return classify(response, secrets, what=what)


_INVALID_URL = (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema, requests.exceptions.InvalidSchema)
# First match wins. Timeout before ConnectionError (ConnectTimeout is both). A request refused before it was sent
# (a header http.client or requests will not carry, a body that is not JSON) fails the same way every time, and its
# message quotes the header, which may be secret: only the exception's type is kept.
_TRANSPORT_ERRORS: tuple[tuple[tuple[type[Exception], ...], type[DeliveryError], str], ...] = (
    ((requests.Timeout,), RetryableDeliveryError, "did not answer in time"),
    ((requests.ConnectionError,), RetryableDeliveryError, "connection failed"),
    ((requests.exceptions.InvalidHeader, requests.exceptions.InvalidJSONError), PermanentDeliveryError,
     "request could not be made"),
    ((requests.RequestException,), RetryableDeliveryError, "request failed"),
    ((ValueError,), PermanentDeliveryError, "request could not be made"),  # http.client refusing a header
)


def _transport_error(exc: Exception, what: str, secrets: tuple[str, ...]) -> DeliveryError:
    if isinstance(exc, _INVALID_URL):
        return PermanentDeliveryError(f"{what} URL is invalid: {redact(str(exc), secrets)}")
    # request() catches only RequestException and ValueError, so some row always matches.
    error, words = next((e, w) for kinds, e, w in _TRANSPORT_ERRORS if isinstance(exc, kinds))
    return error(f"{what} {words} ({type(exc).__name__})", response={"error": type(exc).__name__})


def _error_hint(record: dict[str, Any]) -> str:
    """``: NOT_FOUND Conversation not found`` from the common error shapes, to make ``last_error`` readable."""
    body = record.get("body")
    if not isinstance(body, dict):
        return ""
    error = body.get("error", body)
    if isinstance(error, dict):
        parts = [error.get("code"), error.get("message")]
        if isinstance(error.get("detail"), str):
            parts.append(error["detail"])
        hint = " ".join(str(p) for p in parts if isinstance(p, str) and p)
        return f": {hint[:200]}" if hint else ""
    return ""
