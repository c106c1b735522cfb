"""``FeedbackBridge``, the Flask extension, and the per-app runtime it keeps in ``app.extensions``."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from functools import cached_property
from typing import Any

from flask import Flask, current_app, has_app_context, request
from sqlalchemy import Engine
from werkzeug.exceptions import HTTPException

from . import db
from .api import create_blueprint, json_http_error
from .config import Settings, apply_defaults
from .dashboard import register_dashboard
from .exceptions import (
    ConfigurationError,
    NotInitializedError,
    TokenError,
    TokenInvalid,
    TokenMissing,
    UnknownMessageError,
)
from .models import FeedbackState, Message
from .providers import ProviderAdapter, build_adapters
from .ratelimit import RateLimits
from .store import IncomingEvent, Outcome, Store
from .tokens import MessageTokens, TokenClaims, message_key
from .worker import Worker, WorkerSettings

logger = logging.getLogger(__name__)
EXTENSION_KEY = "feedback_bridge"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Runtime:
    """Everything the extension holds for one app: settings, database, adapters, tokens, worker."""

    def __init__(self, app: Flask, settings: Settings) -> None:
        self.settings = settings
        # Adapters first: a bad FEEDBACK_PROVIDERS fails before a database is opened or created.
        self.adapters: dict[str, ProviderAdapter] = build_adapters(settings.providers)
        self.rate_limits = RateLimits(ip=settings.rate_limit_ip, token=settings.rate_limit_token,
                                      storage_uri=settings.rate_limit_storage_uri)
        self.engine: Engine = db.make_engine(settings.database_url, settings.engine_options,
                                             sqlite_synchronous=settings.sqlite_synchronous)
        self.store = Store(self.engine)
        self.store.create_tables()
        self.worker = Worker(self.engine, self.adapters, WorkerSettings(
            concurrency=settings.worker_concurrency, lease_seconds=settings.lease_seconds,
            max_attempts=settings.max_attempts, backoff_base=settings.backoff_base,
            backoff_max=settings.backoff_max, poll_seconds=settings.poll_seconds,
        ))
        self._app_config = app.config
        self._tokens: tuple[tuple[Any, Any], MessageTokens] | None = None
        self._worker_thread: threading.Thread | None = None
        self._worker_lock = threading.Lock()

    @staticmethod
    def now() -> datetime:
        return utcnow()

    @property
    def tokens(self) -> MessageTokens:
        # Keys are read on each use, so a secret set or rotated after init_app is honoured; the signer is
        # rebuilt only when they change (building one derives its keys: too slow for every event).
        config = self._app_config
        keys = (config.get("SECRET_KEY"), config.get("SECRET_KEY_FALLBACKS") or ())
        cached = self._tokens
        if cached is None or cached[0] != keys:
            cached = self._tokens = (keys, MessageTokens(*keys))
        return cached[1]

    def _claims(self, token: str | None) -> TokenClaims:
        if not self._app_config.get("SECRET_KEY"):
            # A client's (bad) token is not a server error: without a secret no token can be trusted.
            if not token:
                raise TokenMissing("A message token is required.")
            raise TokenInvalid("This server cannot verify message tokens.")
        return self.tokens.verify(token, self.settings.token_max_age)

    @staticmethod
    def _speaker(claims: TokenClaims, message: Message | None) -> tuple[Message, str]:
        if message is None or message_key(message.conversation_id, message.message_id) != claims.message_key:
            raise UnknownMessageError("The message of this token is no longer known.")
        return message, claims.user_id

    def resolve_token(self, token: str | None) -> tuple[Message, str]:
        claims = self._claims(token)
        return self._speaker(claims, self.store.get_message(claims.message_pk))

    def resolve_tokens(self, tokens: Iterable[str | None]) -> dict[str | None, tuple[Message, str] | Exception]:
        """``resolve_token`` for each of several tokens, its error as its value, with one read for all their
        messages (a batch from several answers would otherwise cost a round trip per token)."""
        results: dict[str | None, tuple[Message, str] | Exception] = {}
        claims: dict[str | None, TokenClaims] = {}
        for token in set(tokens):
            try:
                claims[token] = self._claims(token)
            except TokenError as exc:
                results[token] = exc
        found = self.store.get_messages(sorted({c.message_pk for c in claims.values()}))
        for token, claim in claims.items():
            try:
                results[token] = self._speaker(claim, found.get(claim.message_pk))
            except UnknownMessageError as exc:
                results[token] = exc
        return results

    def ingest(self, items: Sequence[IncomingEvent], now: datetime) -> list[Outcome]:
        """Store ``items``, received at ``now``."""
        outcomes = self.store.ingest(items, self.adapters, settle_seconds=self.settings.settle_seconds, now=now)
        self.worker.wake()
        return outcomes

    @cached_property
    def _openapi(self) -> dict[str, Any]:
        from .openapi import build_spec

        return build_spec(self.settings.url_prefix)

    def openapi(self) -> dict[str, Any]:
        return self._openapi

    def start_worker(self) -> None:
        """Start the in-app delivery thread once per process (lazily, so it survives pre-fork servers)."""
        if self._worker_thread is not None or not self.adapters:
            return
        with self._worker_lock:
            if self._worker_thread is None:
                self._worker_thread = self.worker.start()
                logger.info("feedback-bridge worker started for %s", ", ".join(sorted(self.adapters)))

    def close(self) -> None:
        self.worker.stop()
        if self._worker_thread is not None:
            self._worker_thread.join(timeout=30)  # do not dispose the engine under a running pass
        for adapter in self.adapters.values():
            adapter.close()
        self.engine.dispose()


class FeedbackBridge:
    """The Flask extension. ``FeedbackBridge(app)``, or ``FeedbackBridge()`` then ``init_app(app)``.

    Keyword options are defaults for the ``FEEDBACK_*`` keys, lower-cased and without the prefix
    (``FeedbackBridge(providers={"log": {}})``); the app's config and the environment take precedence.
    """

    def __init__(self, app: Flask | None = None, **options: Any) -> None:
        self.options = options
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        if EXTENSION_KEY in app.extensions:
            raise ConfigurationError("FeedbackBridge is already initialised on this app.")
        apply_defaults(app, self.options)
        runtime = Runtime(app, Settings.from_app(app))
        app.extensions[EXTENSION_KEY] = runtime
        app.register_blueprint(create_blueprint(runtime))
        runtime.rate_limits.init_app(app)
        register_dashboard(app, runtime)
        prefix = runtime.settings.url_prefix

        # Routing errors (404, 405) under the prefix never reach the blueprint's own handlers. Elsewhere the
        # host app's own HTTPException handler, if it registered one, keeps answering.
        host_handler = app.error_handler_spec.get(None, {}).get(None, {}).get(HTTPException)

        def _json_routing_errors(exc: HTTPException):
            if request.path.startswith(prefix + "/"):
                return json_http_error(exc)
            return host_handler(exc) if host_handler is not None else exc

        if prefix:  # mounted at the root, the host app's errors stay the host app's
            app.register_error_handler(HTTPException, _json_routing_errors)
        from .cli import feedback_cli

        app.cli.add_command(feedback_cli)
        if runtime.settings.worker:
            app.before_request(runtime.start_worker)

    # -- used by the host app ----------------------------------------------------------------------

    def get_runtime(self, app: Flask | None = None) -> Runtime:
        if app is None:
            if not has_app_context():
                raise NotInitializedError(
                    "feedback-bridge needs an application context here: call it inside a request, "
                    "or within `with app.app_context():`."
                )
            app = current_app._get_current_object()  # type: ignore[attr-defined]
        try:
            return app.extensions[EXTENSION_KEY]
        except KeyError:
            raise NotInitializedError(
                "FeedbackBridge is not initialised on this app. Did you forget to call init_app(app)?"
            ) from None

    def register_message(
        self, *, conversation_id: str, message_id: str, user_id: str, input: str | None = None,
        output: str | None = None, refs: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> str:
        """Store an assistant message and return the token its widget carries.

        Call it again for the same message (for another user, or with updated text) as often as needed.
        ``refs`` holds each provider's own ids for this message, keyed by provider name.
        """
        for name, value in (("conversation_id", conversation_id), ("message_id", message_id),
                            ("user_id", user_id)):
            if not isinstance(value, str) or not value or len(value) > (1024 if name == "user_id" else 256):
                raise ValueError(f"{name} must be a non-empty string of at most "
                                 f"{1024 if name == 'user_id' else 256} characters.")
        refs = dict(refs or {})
        if not all(isinstance(v, Mapping) for v in refs.values()):
            raise ValueError("refs maps each provider name to a dict of that provider's ids.")
        runtime = self.get_runtime()
        tokens = runtime.tokens  # without a SECRET_KEY this raises, before anything is stored
        message = runtime.store.register_message(
            conversation_id=conversation_id, message_id=message_id, user_id=user_id, input=input,
            output=output, refs={k: dict(v) for k, v in refs.items()}, now=runtime.now(),
        )
        return tokens.issue(message.pk, user_id, message_key(message.conversation_id, message.message_id))

    def get_state(self, token: str) -> FeedbackState:
        runtime = self.get_runtime()
        message, user_id = runtime.resolve_token(token)
        return runtime.store.get_state(message.pk, user_id)
