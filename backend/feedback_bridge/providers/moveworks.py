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

import logging
import re
from typing import Any
from urllib.parse import quote, unquote

from ..exceptions import CredentialsError, PermanentDeliveryError
from ..models import Event, EventType, Message
from . import http
from .base import DeliveryContext, ProviderAdapter, Skip
from .mapping import RatingThresholds, feedback_text, sentiment
from .moveworks_tokens import TokenSource, token_source

logger = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.moveworks.ai/rest/v1beta1"
# "A base-62 identifier prefixed by a short resource type" (seed 003); the prefixes are those of its examples.
ID_PATTERNS = {
    "conversation_id": re.compile(r"conv_[0-9A-Za-z]+"),
    "response_id": re.compile(r"resp_[0-9A-Za-z]+"),
    "message_id": re.compile(r"msg_[0-9A-Za-z]+"),
}
NOT_EXPRESSIBLE = {
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
        if assistant_name != assistant_name.strip() or any(ord(ch) < 32 or ord(ch) == 127 for ch in assistant_name):
            raise ValueError("moveworks 'assistant_name' must match exactly, and an Assistant-Name header cannot "
                             "carry surrounding spaces or line breaks (a trailing newline?)")
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
        return NOT_EXPRESSIBLE.get(event.type)

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
