"""Who may see the dashboard: the configured admin check and/or HTTP basic users, and the CSRF token of
its one state-changing form."""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from collections.abc import Mapping, Sequence

from flask import Request
from itsdangerous import BadSignature, URLSafeTimedSerializer

from ..config import Settings

REALM = "feedback-bridge"
CSRF_COOKIE = "feedback_dashboard_csrf"
CSRF_MAX_AGE = 4 * 3600  # seconds a rendered retry button stays usable
_CSRF_SALT = "feedback-bridge.dashboard.csrf"
_LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


def localhost_only(request: Request) -> bool:
    """An admin check for ``FEEDBACK_DASHBOARD_CHECK``: only requests from this machine (loopback)."""
    try:
        address = ipaddress.ip_address(request.remote_addr or "")
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in _LOOPBACK)


def enabled(settings: Settings) -> bool:
    """The dashboard exists only when an admin check or basic users are configured."""
    return settings.dashboard_check is not None or bool(settings.dashboard_users)


class Denied(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def admin_identity(settings: Settings, request: Request) -> str:
    """The admin's name (the basic-auth user, or "" when only a check is configured); raises Denied:
    401 for missing or wrong credentials, 403 when the check refuses."""
    identity = ""
    if settings.dashboard_users:
        auth = request.authorization
        if auth is None or auth.type != "basic" or not _password_ok(settings.dashboard_users, auth.username,
                                                                     auth.password):
            raise Denied(401, "Sign in with a dashboard user name and password.")
        identity = auth.username or ""
    if settings.dashboard_check is not None and not settings.dashboard_check(request):
        raise Denied(403, "The dashboard's admin check refused this request.")
    return identity


def _password_ok(users: Mapping[str, str], username: str | None, password: str | None) -> bool:
    # Compared in constant time, and a wrong user costs as much as a wrong password (no user enumeration).
    expected = users.get(username or "")
    given = (password or "").encode()
    matches = hmac.compare_digest((expected if expected is not None else secrets.token_hex(16)).encode(), given)
    return matches and expected is not None


def new_nonce() -> str:
    return secrets.token_urlsafe(18)


def _serializer(secret_key: str | bytes, fallbacks: Sequence[str | bytes]) -> URLSafeTimedSerializer:
    # itsdangerous signs with the last key and accepts any: fallbacks keep rendered forms valid across a rotation.
    return URLSafeTimedSerializer([*fallbacks, secret_key], salt=_CSRF_SALT)


def csrf_token(secret_key: str | bytes, fallbacks: Sequence[str | bytes], identity: str, nonce: str) -> str:
    """A signed, expiring token bound to the admin and to this browser's cookie nonce."""
    return _serializer(secret_key, fallbacks).dumps([identity, nonce])


def csrf_valid(secret_key: str | bytes, fallbacks: Sequence[str | bytes], token: str | None, identity: str,
               nonce: str | None, *, max_age: int = CSRF_MAX_AGE) -> bool:
    if not token or not nonce:
        return False
    try:
        claims = _serializer(secret_key, fallbacks).loads(token, max_age=max_age)
    except BadSignature:  # includes SignatureExpired
        return False
    return (isinstance(claims, list) and len(claims) == 2
            and hmac.compare_digest(str(claims[0]), identity) and hmac.compare_digest(str(claims[1]), nonce))


def same_origin(request: Request) -> bool:
    """Browsers say where a POST came from; a cross-site one is refused even before the token is checked.

    ``Sec-Fetch-Site`` decides when sent. ``Origin`` is checked otherwise, unless it is ``null``: under the
    dashboard's ``Referrer-Policy: no-referrer`` Chromium sends ``Origin: null`` with its own forms. Clients that
    send neither (curl) rely on the CSRF token alone, which every POST needs anyway.
    """
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None:
        return site == "same-origin"
    origin = request.headers.get("Origin")
    return origin in (None, "null") or origin == request.host_url.rstrip("/")
