"""Amazon Q Business ``PutFeedback``: the user's usefulness verdict, reason, comment and first copy time.

Refs per message: ``{"qbusiness": {"conversation_id": ..., "message_id": ...}}`` (36-character ids, the
message id being ``ChatSync``'s ``systemMessageId``); an ``application_id`` there overrides the config.
"""

from __future__ import annotations

import unicodedata
from datetime import datetime
from typing import Any

from ..models import Event, EventType, FeedbackState, Message
from .aws import AwsAdapter, iso
from .base import DeliveryContext, Skip
from .mapping import RatingThresholds, sentiment

NO_DELETE = "Amazon Q Business has no API to delete feedback: a retract is not sent."
NOT_EXPRESSIBLE = "Amazon Q Business cannot express {what}: only a copy of the answer is sent."
USEFULNESS = {"positive": "USEFUL", "negative": "NOT_USEFUL"}


def put_feedback_params(
    state: FeedbackState, *, application_id: str, conversation_id: str, message_id: str, user_id: str | None,
    thresholds: RatingThresholds, now: datetime,
) -> dict[str, Any]:
    """The ``PutFeedback`` parameters for ``state`` (timestamps as ISO strings), or Skip when it says
    nothing Q Business can hold: no verdict (no thumb, a rating between the thresholds) and no copy."""
    params: dict[str, Any] = {"applicationId": application_id, "conversationId": conversation_id,
                              "messageId": message_id}
    if user_id is not None:
        params["userId"] = user_id
    verdict = sentiment(state, thresholds)
    if verdict is not None:
        usefulness: dict[str, Any] = {"usefulness": USEFULNESS[verdict]}
        if state.reason:
            usefulness["reason"] = state.reason
        comment = clean_comment(state.comment)
        if comment:
            usefulness["comment"] = comment
        usefulness["submittedAt"] = iso(state.updated_at or now)
        params["messageUsefulness"] = usefulness
    if state.copied_at is not None:
        params["messageCopiedAt"] = iso(state.copied_at)
    if verdict is None and state.copied_at is None:
        if state.rating is not None:
            raise Skip(f"A rating of {state.rating} is neither useful (>= {thresholds.positive}) nor not useful "
                       f"(<= {thresholds.negative}), and the answer was not copied: nothing to send.")
        raise Skip("No vote, rating or copy of the answer: nothing to send.")
    return params


def clean_comment(comment: str | None) -> str | None:
    """The comment as the API takes it: no control or format characters (``\\P{C}*``). Line breaks and tabs
    become spaces, the rest is dropped, so a multi-line comment is sent rather than refused."""
    if not comment:
        return None
    kept = (" " if ch in "\r\n\t" else ch for ch in comment)
    text = "".join(ch for ch in kept if not unicodedata.category(ch).startswith("C"))
    return " ".join(text.split()) or None


class QBusinessAdapter(AwsAdapter):
    """``{"qbusiness": {"application_id", "region_name", "send_user_id": True, "endpoint_url": None,
    "profile_name": None, "rating_thresholds": None}}``."""

    name = "qbusiness"
    service = "qbusiness"
    label = "Amazon Q Business"

    def __init__(self, name: str | None = None, *, application_id: str, region_name: str,
                 send_user_id: bool = True, **options: Any) -> None:
        super().__init__(name, region_name=region_name, **options)
        self.check_option("application_id", "applicationId", application_id)
        if not isinstance(send_user_id, bool):
            raise ValueError("send_user_id must be true or false")
        self.application_id, self.send_user_id = application_id, send_user_id

    def skip_reason(self, event: Event, message: Message) -> str | None:
        if event.type is EventType.RETRACT:
            return NO_DELETE
        if event.type is EventType.COPY_INPUT:
            return NOT_EXPRESSIBLE.format(what="a copy of the prompt")
        if event.type is EventType.PASTE:
            return NOT_EXPRESSIBLE.format(what="a paste")
        return self.refs_problem(message, ("conversation_id", "message_id"))

    def build_request(self, context: DeliveryContext) -> dict[str, Any]:
        refs = self.refs(context.message, ("conversation_id", "message_id"))
        params = put_feedback_params(
            context.state or FeedbackState(), application_id=refs.get("application_id") or self.application_id,
            conversation_id=refs["conversation_id"], message_id=refs["message_id"],
            user_id=context.user_id if self.send_user_id else None, thresholds=self.thresholds, now=context.now,
        )
        return {"operation": self.operation, "params": params}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "application_id": self.application_id, "send_user_id": self.send_user_id}
