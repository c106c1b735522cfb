"""The ``FEEDBACK_*`` configuration keys, their defaults, and how they are read."""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import Config, Flask, Request

from .db import SQLITE_SYNCHRONOUS
from .exceptions import ConfigurationError

PREFIX = "FEEDBACK_"

# Key -> default. The README's configuration table documents each of these.
DEFAULTS: dict[str, Any] = {
    "URL_PREFIX": "/feedback",
    "DATABASE_URL": None,  # None: SQLite file in the app's instance folder
    "ENGINE_OPTIONS": {},
    "SQLITE_SYNCHRONOUS": "NORMAL",
    "PROVIDERS": {},
    "ALLOWED_ORIGINS": [],
    "TOKEN_MAX_AGE": 30 * 24 * 3600,
    "ALLOW_UNSIGNED": False,
    "SETTLE_SECONDS": 5.0,
    "WORKER": True,
    "WORKER_CONCURRENCY": 4,
    "POLL_SECONDS": 2.0,
    "LEASE_SECONDS": 120.0,
    "MAX_ATTEMPTS": 10,
    "BACKOFF_BASE": 2.0,
    "BACKOFF_MAX": 3600.0,
    "MAX_CONTENT_LENGTH": 1024 * 1024,
    "RATE_LIMIT_IP": "600/minute",  # "" turns a limit off
    "RATE_LIMIT_TOKEN": "120/minute",
    "RATE_LIMIT_STORAGE_URI": "memory://",
    "DASHBOARD_CHECK": None,  # None: no admin check, so no dashboard (unless DASHBOARD_USERS)
    "DASHBOARD_USERS": {},
}


def apply_defaults(app: Flask, options: dict[str, Any]) -> None:
    """Fill in every ``FEEDBACK_*`` key the app did not set itself.

    Precedence: ``app.config`` > ``FEEDBACK_*`` environment variables (parsed like Flask's
    ``from_prefixed_env``: JSON values, ``__`` for nested keys) > constructor options > defaults.
    """
    from_env = Config(app.root_path)
    from_env.from_prefixed_env(prefix=PREFIX.rstrip("_"))
    for key, value in from_env.items():
        app.config.setdefault(PREFIX + key, value)
    for key, value in options.items():
        app.config.setdefault(PREFIX + key.upper(), value)
    for key, value in DEFAULTS.items():
        app.config.setdefault(PREFIX + key, value)
    if app.config[PREFIX + "DATABASE_URL"] is None:
        os.makedirs(app.instance_path, exist_ok=True)
        path = os.path.join(app.instance_path, "feedback.sqlite3")
        app.config[PREFIX + "DATABASE_URL"] = f"sqlite:///{path}"


@dataclass(frozen=True)
class Settings:
    """A typed, validated snapshot of the ``FEEDBACK_*`` keys taken at ``init_app`` time."""

    url_prefix: str
    database_url: str
    engine_options: dict[str, Any]
    sqlite_synchronous: str
    providers: dict[str, Any]
    allowed_origins: list[str]
    token_max_age: int
    allow_unsigned: bool
    settle_seconds: float
    worker: bool
    worker_concurrency: int
    poll_seconds: float
    lease_seconds: float
    max_attempts: int
    backoff_base: float
    backoff_max: float
    max_content_length: int
    rate_limit_ip: str
    rate_limit_token: str
    rate_limit_storage_uri: str
    dashboard_check: Callable[[Request], bool] | None
    dashboard_users: dict[str, str]

    @classmethod
    def from_app(cls, app: Flask) -> Settings:
        raw = {key.lower(): app.config[PREFIX + key] for key in DEFAULTS}
        try:
            settings = cls(
                url_prefix="/" + str(raw["url_prefix"]).strip("/") if raw["url_prefix"].strip("/") else "",
                database_url=str(raw["database_url"]),
                engine_options=dict(raw["engine_options"]),
                sqlite_synchronous=str(raw["sqlite_synchronous"]).strip().upper(),
                providers=dict(raw["providers"]),
                allowed_origins=_as_list(raw["allowed_origins"]),
                token_max_age=int(raw["token_max_age"]),
                allow_unsigned=_as_bool(raw["allow_unsigned"]),
                settle_seconds=float(raw["settle_seconds"]),
                worker=_as_bool(raw["worker"]),
                worker_concurrency=int(raw["worker_concurrency"]),
                poll_seconds=float(raw["poll_seconds"]),
                lease_seconds=float(raw["lease_seconds"]),
                max_attempts=int(raw["max_attempts"]),
                backoff_base=float(raw["backoff_base"]),
                backoff_max=float(raw["backoff_max"]),
                max_content_length=int(raw["max_content_length"]),
                rate_limit_ip=str(raw["rate_limit_ip"] or ""),
                rate_limit_token=str(raw["rate_limit_token"] or ""),
                rate_limit_storage_uri=str(raw["rate_limit_storage_uri"] or "memory://"),
                dashboard_check=_as_check(raw["dashboard_check"]),
                dashboard_users={str(name): str(password) for name, password in dict(raw["dashboard_users"]).items()},
            )
        except (TypeError, ValueError, AttributeError) as exc:
            raise ConfigurationError(f"Invalid FEEDBACK_* setting: {exc}") from exc
        if settings.worker_concurrency < 1 or settings.max_attempts < 1:
            raise ConfigurationError("FEEDBACK_WORKER_CONCURRENCY and FEEDBACK_MAX_ATTEMPTS must be >= 1.")
        if settings.settle_seconds < 0 or settings.token_max_age < 1:
            raise ConfigurationError("FEEDBACK_SETTLE_SECONDS must be >= 0 and FEEDBACK_TOKEN_MAX_AGE >= 1.")
        if min(settings.poll_seconds, settings.lease_seconds, settings.backoff_base) <= 0 or settings.backoff_max < 0:
            raise ConfigurationError("FEEDBACK_POLL_SECONDS, FEEDBACK_LEASE_SECONDS and FEEDBACK_BACKOFF_BASE must "
                                     "be > 0 and FEEDBACK_BACKOFF_MAX >= 0.")
        if settings.sqlite_synchronous not in SQLITE_SYNCHRONOUS:
            raise ConfigurationError(f"FEEDBACK_SQLITE_SYNCHRONOUS must be one of {', '.join(SQLITE_SYNCHRONOUS)}, "
                                     f"not {raw['sqlite_synchronous']!r}.")
        if settings.max_content_length < 1:
            raise ConfigurationError("FEEDBACK_MAX_CONTENT_LENGTH must be >= 1.")
        return settings


def _as_check(value: Any) -> Callable[[Request], bool] | None:
    """A callable, or its ``"module:attr"`` import path."""
    if value is None or callable(value):
        return value
    if not isinstance(value, str):
        raise TypeError(f"FEEDBACK_DASHBOARD_CHECK must be a callable or an import path, not {value!r}")
    module_name, sep, attr = value.partition(":")
    if not sep:
        module_name, _, attr = value.rpartition(".")
    try:
        check = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ValueError(f"cannot import FEEDBACK_DASHBOARD_CHECK {value!r}: {exc}") from None
    if not callable(check):
        raise TypeError(f"FEEDBACK_DASHBOARD_CHECK {value!r} is not callable")
    return check


def _as_list(value: Any) -> list[str]:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return [str(part) for part in value]


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        word = value.strip().lower()
        if word not in {"1", "true", "yes", "on", "0", "false", "no", "off", ""}:
            raise ValueError(f"{value!r} is not a boolean")
        return word in {"1", "true", "yes", "on"}
    return bool(value)
