"""Where the Moveworks bearer token comes from: a static token, a per-user provider callable, or OAuth client
credentials cached until shortly before they expire. Tokens are secrets: never logged, never recorded."""

from __future__ import annotations

import importlib
import inspect
import logging
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import requests

from ..exceptions import CredentialsError, DeliveryError, PermanentDeliveryError, RetryableDeliveryError
from . import http

logger = logging.getLogger(__name__)


class TokenSource:
    """Where the bearer token comes from. ``refresh`` is called once after a 401/403, with the refused token."""

    kind = "static token"
    refreshable = False
    per_user = False

    def get(self, user_id: str | None) -> str:
        raise NotImplementedError

    def refresh(self, user_id: str | None, *, stale: str) -> str:
        return self.get(user_id)

    def secrets(self) -> tuple[str, ...]:
        """Long-lived secrets to blank out of anything recorded (tokens in use are added per call)."""
        return ()


class StaticToken(TokenSource):
    def __init__(self, token: str) -> None:
        self._token = token

    def get(self, user_id: str | None) -> str:
        return self._token

    def secrets(self) -> tuple[str, ...]:
        return (self._token,)


class ProviderToken(TokenSource):
    """``token_provider(user_id) -> str``, e.g. an exchange of the user's identity token. It is called for each
    delivery (cache inside it if that is costly); after a 401/403 it is called again, with ``refresh=True``
    when it accepts that keyword, so a caching provider knows to fetch a new token."""

    kind = "token provider"
    refreshable = True
    per_user = True

    def __init__(self, provider: Callable[..., str]) -> None:
        self._provider = provider
        try:
            parameters = inspect.signature(provider).parameters
        except (TypeError, ValueError):
            parameters = {}  # type: ignore[assignment]
        self._takes_refresh = "refresh" in parameters or any(
            p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()
        )

    def get(self, user_id: str | None) -> str:
        return self._call(user_id, refresh=False)

    def refresh(self, user_id: str | None, *, stale: str) -> str:
        return self._call(user_id, refresh=True)

    def _call(self, user_id: str | None, *, refresh: bool) -> str:
        try:
            if refresh and self._takes_refresh:
                token = self._provider(user_id, refresh=True)
            else:
                token = self._provider(user_id)
        except DeliveryError:
            raise  # the provider classified its own failure
        except Exception as exc:  # its message may hold anything: only the type is recorded
            logger.warning("The Moveworks token provider raised %s", type(exc).__name__)
            raise RetryableDeliveryError(f"The Moveworks token provider raised {type(exc).__name__}") from None
        if not isinstance(token, str) or not token:
            raise CredentialsError("The Moveworks token provider returned no token")
        return token


class ClientCredentials(TokenSource):
    """OAuth 2.0 client credentials on Moveworks' token endpoint. The access token is cached until shortly
    before ``expires_in``; one thread fetches at a time while the others wait for its result."""

    kind = "client credentials"
    refreshable = True

    def __init__(self, token_url: str, client_id: str, client_secret: str, session: requests.Session,
                 timeout: http.Timeout, clock: Callable[[], float] = time.monotonic) -> None:
        self.token_url, self._client_id, self._client_secret = token_url, client_id, client_secret
        self._session, self._timeout, self._clock = session, timeout, clock
        self._lock = threading.Lock()
        self._token: str | None = None
        self._good_until = 0.0

    def get(self, user_id: str | None) -> str:
        with self._lock:
            if self._token is not None and self._clock() < self._good_until:
                return self._token
            return self._fetch()

    def refresh(self, user_id: str | None, *, stale: str) -> str:
        with self._lock:
            if self._token is not None and self._token != stale and self._clock() < self._good_until:
                return self._token  # another thread refreshed it while this one waited
            return self._fetch()

    def secrets(self) -> tuple[str, ...]:
        return (self._client_secret,)

    def _fetch(self) -> str:
        self._token = None
        secrets = (self._client_secret,)
        try:
            record = http.request(
                self._session, "POST", self.token_url, timeout=self._timeout, secrets=secrets,
                what="Moveworks token endpoint",
                data={"grant_type": "client_credentials", "client_id": self._client_id,
                      "client_secret": self._client_secret},
                headers={"Accept": "application/json"},
            )
        except PermanentDeliveryError as exc:  # invalid_client, invalid_grant...: an operator must act
            raise CredentialsError(str(exc), response=exc.response) from None
        body = record.get("body")
        token = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise CredentialsError("The Moveworks token endpoint answered without an access_token",
                                   response={"status": record["status"]})
        expires_in = body.get("expires_in", 3600)
        lifetime = float(expires_in) if isinstance(expires_in, (int, float)) and expires_in > 0 else 3600.0
        # Renew a little early, so a token does not expire between this check and Moveworks reading it.
        self._good_until = self._clock() + lifetime - min(60.0, lifetime / 10)
        self._token = token
        logger.debug("Fetched a Moveworks access token valid for %.0fs", lifetime)
        return token


def token_source(
    *, base_url: str, token: str | None, token_provider: Any, client_id: str | None, client_secret: str | None,
    token_url: str | None, session: requests.Session, timeout: http.Timeout,
) -> TokenSource:
    """Exactly one of: ``token``; ``token_provider`` (a callable or ``"pkg.mod:func"``); client credentials."""
    given = [bool(token), token_provider is not None, bool(client_id or client_secret)]
    if sum(given) != 1:
        raise ValueError("moveworks needs exactly one of 'token', 'token_provider', or 'client_id' with "
                         "'client_secret'")
    if token:
        if not isinstance(token, str):
            raise ValueError("moveworks 'token' must be a string")
        problem = http.bearer_problem(token)
        if problem:
            raise ValueError(f"moveworks 'token' {problem}")
        return StaticToken(token)
    if token_provider is not None:
        provider = _import(token_provider) if isinstance(token_provider, str) else token_provider
        if not callable(provider):
            raise ValueError("moveworks 'token_provider' must be a callable(user_id) -> str")
        return ProviderToken(provider)
    if not (isinstance(client_id, str) and client_id and isinstance(client_secret, str) and client_secret):
        raise ValueError("moveworks client credentials need both 'client_id' and 'client_secret'")
    if token_url is None:
        parts = urlsplit(base_url)
        token_url = f"{parts.scheme}://{parts.netloc}/oauth/v1/token"
    return ClientCredentials(token_url, client_id, client_secret, session, timeout)


def _import(path: str) -> Any:
    """``"pkg.mod:func"`` or ``"pkg.mod.func"``."""
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ValueError(f"cannot import moveworks token_provider {path!r}: {exc}") from None
