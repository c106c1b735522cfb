"""Moveworks Conversations API (beta), "Submit feedback": a *state* provider.

``POST {base_url}/conversations/{conversation_id}/responses/{response_id}/messages/{message_id}/feedback`` with
``{"callback_id": <helpful or unhelpful callback id of the message>, "additional_feedback": <reason — comment>}``.
Moveworks takes helpful/unhelpful and free text only: copies, pastes and retractions are skipped at ingest, and
a state with no vote (or a middling rating) is skipped at delivery. A reason or comment added later changes the
state, so the feedback is submitted again with its ``additional_feedback``.

The recorded request holds the method, URL, ``Assistant-Name`` and body; the bearer token is added at send time
only, so it never reaches the outbox.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import re
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import requests

from ..exceptions import CredentialsError, DeliveryError, PermanentDeliveryError, RetryableDeliveryError
from ..models import Event, EventType, Message
from . import http
from .base import DeliveryContext, ProviderAdapter, Skip
from .mapping import RatingThresholds, feedback_text, sentiment

logger = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.moveworks.ai/rest/v1beta1"
# "A base-62 identifier prefixed by a short resource type" (seed 003); the prefixes are those of its examples.
ID_PATTERNS = {
    "conversation_id": re.compile(r"conv_[0-9A-Za-z]+"),
    "response_id": re.compile(r"resp_[0-9A-Za-z]+"),
    "message_id": re.compile(r"msg_[0-9A-Za-z]+"),
}
_NOT_EXPRESSIBLE = {
    EventType.COPY_OUTPUT: "Moveworks takes only helpful/unhelpful feedback: a copy is not expressible.",
    EventType.COPY_INPUT: "Moveworks takes only helpful/unhelpful feedback: a copied prompt is not expressible.",
    EventType.PASTE: "Moveworks takes only helpful/unhelpful feedback: a paste is not expressible.",
    EventType.RETRACT: "Moveworks has no API to withdraw feedback: a retraction cannot be sent.",
}


class MoveworksAdapter(ProviderAdapter):
    name = "moveworks"
    mode = "state"

    def __init__(
        self, name: str | None = None, *, assistant_name: str, base_url: str = DEFAULT_BASE_URL,
        token: str | None = None, token_provider: Any = None, client_id: str | None = None,
        client_secret: str | None = None, token_url: str | None = None, rating_thresholds: Any = None,
        timeout: Any = None, pool_size: int = 10,
    ) -> None:
        # Only what is safe to show goes to ``self.options``: credentials stay in the token source.
        super().__init__(name, base_url=base_url, assistant_name=assistant_name)
        if not isinstance(assistant_name, str) or not assistant_name:
            raise ValueError("moveworks needs a non-empty 'assistant_name' (sent as the Assistant-Name header)")
        if not isinstance(base_url, str) or not base_url.startswith(("https://", "http://")):
            raise ValueError("moveworks 'base_url' must be an http(s) URL")
        self.base_url = base_url.rstrip("/")
        self.assistant_name = assistant_name
        self.thresholds = RatingThresholds.from_option(rating_thresholds)
        self.timeout = http.parse_timeout(timeout)
        self.session = http.make_session(pool_size)
        self.tokens: TokenSource = token_source(
            base_url=self.base_url, token=token, token_provider=token_provider, client_id=client_id,
            client_secret=client_secret, token_url=token_url, session=self.session, timeout=self.timeout,
        )
        self._url_pattern = re.compile(
            re.escape(self.base_url) + r"/conversations/([^/]*)/responses/([^/]*)/messages/([^/]*)/feedback"
        )

    # -- mapping (pure) ----------------------------------------------------------------------------

    def skip_reason(self, event: Event, message: Message) -> str | None:
        if not message.refs.get(self.name):
            return f"The message was registered without {self.name!r} refs: Moveworks cannot identify it."
        return _NOT_EXPRESSIBLE.get(event.type)

    def build_request(self, context: DeliveryContext) -> dict[str, Any]:
        state = context.state
        if state is None:
            raise Skip("Moveworks receives feedback states, and there is none.")
        refs = context.message.refs.get(self.name) or {}
        vote = sentiment(state, self.thresholds)
        if vote is None:
            if state.rating is not None and state.vote is None:
                raise Skip(f"Rating {state.rating} is neither helpful (>= {self.thresholds.positive}) nor "
                           f"unhelpful (<= {self.thresholds.negative}): nothing to submit.")
            raise Skip("No vote or rating: nothing to submit (Moveworks cannot withdraw feedback).")
        body: dict[str, Any] = {
            "callback_id": refs.get("helpful_callback_id" if vote == "positive" else "unhelpful_callback_id"),
        }
        text = feedback_text(state.reason, state.comment)
        if text:
            body["additional_feedback"] = text
        ids = [quote(str(refs.get(key) or ""), safe="") for key in ID_PATTERNS]
        request: dict[str, Any] = {
            "method": "POST",
            "url": f"{self.base_url}/conversations/{ids[0]}/responses/{ids[1]}/messages/{ids[2]}/feedback",
            "headers": {"Assistant-Name": self.assistant_name, "Content-Type": "application/json"},
            "json": body,
        }
        if self.tokens.per_user:  # the token depends on whose feedback this is
            request["user_id"] = context.user_id
        return request

    # -- transport ---------------------------------------------------------------------------------

    def send(self, request: dict[str, Any]) -> dict[str, Any]:
        problem = self.invalid(request)
        if problem:
            raise PermanentDeliveryError(f"Not sent: {problem}")
        user_id = request.get("user_id")
        token = self.tokens.get(user_id)
        try:
            return self._post(request, token)
        except CredentialsError as exc:
            if not self.tokens.refreshable:
                raise
            status = (exc.response or {}).get("status")
            logger.info("Moveworks refused the access token (HTTP %s); refreshing it and trying once more", status)
            token = self.tokens.refresh(user_id, stale=token)
            return self._post(request, token)

    def _post(self, request: dict[str, Any], token: str) -> dict[str, Any]:
        return http.request(
            self.session, "POST", request["url"], json=request["json"], headers=request["headers"],
            auth=http.BearerAuth(token), timeout=self.timeout, secrets=(token, *self.tokens.secrets()),
            what="Moveworks",
        )

    def invalid(self, request: dict[str, Any]) -> str | None:
        """Why ``request`` cannot be valid by the documented constraints, or None."""
        match = self._url_pattern.fullmatch(str(request.get("url", "")))
        if match is None:
            return f"the URL is not a feedback URL under {self.base_url}"
        for (key, pattern), raw in zip(ID_PATTERNS.items(), match.groups(), strict=True):
            value = unquote(raw)
            if not value:
                return f"{key} is missing from the message's {self.name!r} refs"
            if not pattern.fullmatch(value):
                return f"{key} {value!r} is not a Moveworks id (expected {pattern.pattern})"
        body = request.get("json")
        if not isinstance(body, dict) or set(body) - {"callback_id", "additional_feedback"}:
            return "the body must hold only callback_id and additional_feedback"
        if not isinstance(body.get("callback_id"), str) or not body["callback_id"]:
            return "the callback id for this vote is missing from the message's refs"
        if "additional_feedback" in body and (
            not isinstance(body["additional_feedback"], str) or not body["additional_feedback"]
        ):
            return "additional_feedback must be non-empty text when present"
        if request.get("headers", {}).get("Assistant-Name") != self.assistant_name:
            return "the Assistant-Name header does not match the configured assistant"
        return None

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "base_url": self.base_url, "assistant_name": self.assistant_name,
                "auth": self.tokens.kind}

    def close(self) -> None:
        self.session.close()


# -- access tokens -------------------------------------------------------------------------------------


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
