"""Per-IP and per-token rate limits on the event API (Flask-Limiter), checked before anything is stored.

A request over any limit is refused whole, with 429 and ``Retry-After``: the widget retries such a request
after that delay (it drops events refused one by one), and the server's event-id idempotency makes the retry
safe. So no limit ever rejects single events of a batch that holds several users' events.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Iterable

from flask import Flask, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from limits import RateLimitItem, parse_many
from limits.strategies import RateLimiter

from .exceptions import ConfigurationError

logger = logging.getLogger(__name__)
KEY_PREFIX = "feedback-bridge"


def _always() -> bool:
    return True


def _parse(name: str, value: str) -> list[RateLimitItem]:
    if not value.strip():
        return []  # an empty string turns the limit off
    try:
        return parse_many(value)
    except ValueError as exc:
        raise ConfigurationError(f"FEEDBACK_{name} is not a rate limit like '600/minute': {exc}") from exc


class RateLimits:
    """The limits of one app. Keys: the client address (``request.remote_addr``; put werkzeug's ``ProxyFix``
    in front when the app runs behind a proxy) and, per token, a digest of its message and user (so user ids
    never reach the storage)."""

    def __init__(self, *, ip: str, token: str, storage_uri: str) -> None:
        self.ip = _parse("RATE_LIMIT_IP", ip)
        self.token = _parse("RATE_LIMIT_TOKEN", token)
        # Our limits are checked by hand in the views (one request can carry several tokens); the host app's
        # RATELIMIT_DEFAULT / RATELIMIT_APPLICATION must never make this limiter count the host's routes.
        storage_uri = storage_uri or "memory://"
        # A slow or unreachable Redis must cost a request at most a second, never hang it.
        timeouts = {"socket_timeout": 1, "socket_connect_timeout": 1} if storage_uri.startswith("redis") else {}
        self.limiter = Limiter(
            get_remote_address, storage_uri=storage_uri, storage_options=timeouts, strategy="fixed-window",
            key_prefix=KEY_PREFIX, headers_enabled=False, swallow_errors=True,
            default_limits_exempt_when=_always, application_limits_exempt_when=_always,
        )

    @property
    def active(self) -> bool:
        return bool(self.ip or self.token) and self.limiter.enabled

    def init_app(self, app: Flask) -> None:
        if self.ip or self.token:  # without limits, no hooks on the host app at all
            self.limiter.init_app(app)

    def retry_after(self, scope: str, subjects: Iterable[tuple[str, str, str]] = ()) -> int | None:
        """Count this request against the IP limit (``subjects`` empty) or against the limit of each
        (conversation id, message id, user id) it carries. All are tested before any is hit, so a refused request costs
        no token anything. Returns the seconds to wait when a limit is reached, else None."""
        if not self.active:
            return None
        if subjects:
            keys = [(item, (KEY_PREFIX, scope, "token", _digest(*subject)))
                    for subject in dict.fromkeys(subjects) for item in self.token]
        else:
            keys = [(item, (KEY_PREFIX, scope, "ip", get_remote_address() or "unknown")) for item in self.ip]
        if not keys:
            return None
        strategy = self.limiter.limiter
        try:
            full = [(item, key) for item, key in keys if not strategy.test(item, *key)]
            if full:
                now = time.time()
                return max(_seconds_left(strategy, item, key, now) for item, key in full)
            for item, key in keys:
                strategy.hit(item, *key)
        except Exception as exc:  # a storage outage must not refuse feedback: fail open, and say so
            logger.warning("Rate limit storage unavailable, %s not limited: %s", request.path, exc)
        return None


def _seconds_left(strategy: RateLimiter, item: RateLimitItem, key: tuple[str, ...], now: float) -> int:
    reset = strategy.get_window_stats(item, *key).reset_time
    return min(item.get_expiry(), max(1, math.ceil(reset - now)))  # Redis TTLs can run a second past the window


def _digest(*ids: str) -> str:
    # The message's own ids, not its row id: apps sharing one Redis never share a budget by accident.
    return hashlib.blake2b(json.dumps(ids).encode(), digest_size=12).hexdigest()
