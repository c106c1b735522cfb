"""Nebuly "Send User Feedback": an *event* provider.

``POST {base_url}/event-ingestion/api/v1/events/feedback`` with ``Authorization: Bearer <api key>`` and
``{"feedback": {"slug", "text"?, "value"?}, "metadata": {"input", "output", "end_user", "timestamp", "anonymize"}}``.
Nebuly joins feedback to the interaction by ``end_user`` + ``input`` + ``output`` and wants the feedback timestamped
after the interaction ended, so the timestamp is the event's time, clamped to just after the message was registered.

Nebuly has no way to delete or amend feedback: a retraction is skipped (it still cancels a vote that is pending
inside the settle window), and a reason or comment added after its vote went out is skipped rather than sent as
a second vote. The recorded request never holds the API key: it is added at send time.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime, timedelta, timezone
from typing import Any

from ..exceptions import PermanentDeliveryError
from ..models import EventType
from . import http
from .base import DeliveryContext, ProviderAdapter, Skip
from .mapping import feedback_text

logger = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://backend.nebuly.com"
PATH = "/event-ingestion/api/v1/events/feedback"
SLUGS = frozenset({"thumbs_up", "thumbs_down", "copy_input", "copy_output", "paste", "rating"})
TEXT_SLUGS = frozenset({"copy_input", "copy_output", "paste"})  # "the text field should contain" what was copied
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?(Z|[+-]\d\d:\d\d)")
# After the interaction, as Nebuly requires; a millisecond is the resolution of the timestamps we send.
AFTER_INTERACTION = timedelta(milliseconds=1)
SLUG_OF = {
    EventType.THUMBS_UP: "thumbs_up", EventType.THUMBS_DOWN: "thumbs_down", EventType.RATING: "rating",
    EventType.COPY_OUTPUT: "copy_output", EventType.COPY_INPUT: "copy_input", EventType.PASTE: "paste",
}
RETRACT_SKIP = "Nebuly has no API to delete feedback: a retraction cannot be sent."
AMENDMENT_SKIP = ("Its vote was no longer pending when this arrived (sent or in flight): Nebuly cannot amend "
                  "feedback, and sending the vote again with this text would count it twice.")


def nebuly_timestamp(at: datetime) -> str:
    """``2026-11-23T15:00:00.123Z``: UTC, milliseconds (truncated), ``Z``."""
    at = at.astimezone(timezone.utc)
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


class NebulyAdapter(ProviderAdapter):
    name = "nebuly"
    mode = "event"

    def __init__(
        self, name: str | None = None, *, api_key: str, base_url: str = DEFAULT_BASE_URL, anonymize: bool = False,
        timeout: Any = None, pool_size: int = 10,
    ) -> None:
        super().__init__(name, base_url=base_url, anonymize=anonymize)  # not the key: options may be shown
        if not isinstance(api_key, str) or not api_key:
            raise ValueError("nebuly needs a non-empty 'api_key'")
        problem = http.bearer_problem(api_key)
        if problem:
            raise ValueError(f"nebuly 'api_key' {problem}")
        if not isinstance(base_url, str) or not base_url.startswith(("https://", "http://")):
            raise ValueError("nebuly 'base_url' must be an http(s) URL")
        if not isinstance(anonymize, bool):
            raise ValueError("nebuly 'anonymize' must be true or false")
        self._api_key = api_key
        self.base_url = base_url.rstrip("/")
        self.url = self.base_url + PATH
        self.anonymize = anonymize
        self.timeout = http.parse_timeout(timeout)
        self.session = http.make_session(pool_size)

    # -- mapping (pure) ----------------------------------------------------------------------------

    def build_request(self, context: DeliveryContext) -> dict[str, Any]:
        event, message = context.event, context.message
        if event is None:
            raise Skip("Nebuly receives events, and there is none.")
        if event.type is EventType.RETRACT:
            raise Skip(RETRACT_SKIP)
        if event.amends is not None:
            # Reached only when the vote was no longer pending at ingest (else it was merged into it).
            raise Skip(AMENDMENT_SKIP)
        feedback: dict[str, Any] = {"slug": SLUG_OF[event.type]}
        if event.type is EventType.RATING:
            feedback["value"] = event.value  # "use the field value instead of the text field"
        elif event.type in (EventType.THUMBS_UP, EventType.THUMBS_DOWN):
            amended = context.amended_event()
            text = feedback_text(amended.reason, amended.comment)
            if text:
                feedback["text"] = text
        else:
            feedback["text"] = event.text
        refs = message.refs.get(self.name) or {}
        metadata: dict[str, Any] = {}
        if message.input is not None:
            metadata["input"] = message.input
        if message.output is not None:
            metadata["output"] = message.output
        metadata["end_user"] = refs.get("end_user") or message.user_id
        metadata["timestamp"] = nebuly_timestamp(max(event.occurred_at, message.created_at + AFTER_INTERACTION))
        metadata["anonymize"] = self.anonymize
        return {"method": "POST", "url": self.url, "json": {"feedback": feedback, "metadata": metadata}}

    # -- transport ---------------------------------------------------------------------------------

    def send(self, request: dict[str, Any]) -> dict[str, Any]:
        problem = self.invalid(request)
        if problem:
            raise PermanentDeliveryError(f"Not sent: {problem}")
        return http.request(
            self.session, "POST", self.url, json=request["json"], auth=http.BearerAuth(self._api_key),
            timeout=self.timeout, secrets=(self._api_key,), what="Nebuly",
        )

    def invalid(self, request: dict[str, Any]) -> str | None:
        """Why ``request`` breaks the documented rules, or None."""
        if request.get("url") != self.url:
            return f"the URL is not {self.url}"
        body = request.get("json")
        if not isinstance(body, dict) or set(body) != {"feedback", "metadata"}:
            return "the body must be exactly {feedback, metadata}"
        return _invalid_feedback(body["feedback"]) or _invalid_metadata(body["metadata"])

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "base_url": self.base_url, "anonymize": self.anonymize}

    def close(self) -> None:
        self.session.close()


def _invalid_feedback(feedback: Any) -> str | None:
    if not isinstance(feedback, dict) or set(feedback) - {"slug", "text", "value"}:
        return "feedback holds only slug, text and value"
    slug = feedback.get("slug")
    if slug not in SLUGS:
        return f"slug {slug!r} is not one of {sorted(SLUGS)}"
    value, text = feedback.get("value"), feedback.get("text")
    if slug == "rating":
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 5:
            return "a rating needs an integer value from 1 to 5"
        if "text" in feedback:
            return "a rating carries its value instead of text"
    elif "value" in feedback:
        return "value is only used with the rating slug"
    if "text" in feedback and not isinstance(text, str):
        return "text must be a string"
    if slug in TEXT_SLUGS and not text:
        return f"{slug} needs the text that was copied or pasted"
    return None


def _invalid_metadata(metadata: Any) -> str | None:
    if not isinstance(metadata, dict) or set(metadata) - {"input", "output", "end_user", "timestamp", "anonymize"}:
        return "metadata holds only input, output, end_user, timestamp and anonymize"
    end_user = metadata.get("end_user")
    if not isinstance(end_user, str) or not end_user.strip():
        return "end_user must be a non-empty string"
    for key in ("input", "output"):
        if key in metadata and not isinstance(metadata[key], str):
            return f"{key} must be a string"
    timestamp = metadata.get("timestamp")
    if not isinstance(timestamp, str) or not TIMESTAMP.fullmatch(timestamp):
        return "timestamp must be ISO 8601 with a zone, like 2026-11-23T15:00:00.000Z"
    if "anonymize" in metadata and not isinstance(metadata["anonymize"], bool):
        return "anonymize must be a boolean"
    return None
