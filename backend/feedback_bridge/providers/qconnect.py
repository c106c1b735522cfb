"""Amazon Q Connect (Amazon Q in Connect) ``PutFeedback``: whether a generative answer was helpful.

Refs per message: ``{"qconnect": {"target_id": <lowercase UUID>, "target_type": "MESSAGE"}}``; the target type
defaults to the config's. The API holds only a relevance: reasons, comments and copies have no field.
"""

from __future__ import annotations

from typing import Any

from ..models import Event, EventType, FeedbackState, Message
from .aws import AwsAdapter
from .base import DeliveryContext, Skip
from .mapping import RatingThresholds, sentiment

RELEVANCE = {"positive": "HELPFUL", "negative": "NOT_HELPFUL"}
NO_DELETE = "Amazon Q Connect has no API to delete feedback: a retract is not sent."
NOT_EXPRESSIBLE = "Amazon Q Connect cannot express {what}: it only takes helpful or not helpful."
NOTHING_NEW = "Nothing new for Amazon Q Connect: it has no field for a reason or comment."
_COPIES = {EventType.COPY_OUTPUT: "a copy of the answer", EventType.COPY_INPUT: "a copy of the prompt",
           EventType.PASTE: "a paste"}


def put_feedback_params(state: FeedbackState, *, assistant_id: str, target_id: str, target_type: str,
                        thresholds: RatingThresholds) -> dict[str, Any]:
    """The ``PutFeedback`` parameters for ``state``, or Skip when it holds no verdict."""
    verdict = sentiment(state, thresholds)
    if verdict is None:
        if state.rating is not None:
            raise Skip(f"A rating of {state.rating} is neither helpful (>= {thresholds.positive}) nor not helpful "
                       f"(<= {thresholds.negative}): nothing to send.")
        raise Skip("No vote or rating: nothing to send.")
    return {
        "assistantId": assistant_id, "targetId": target_id, "targetType": target_type,
        "contentFeedback": {"generativeContentFeedbackData": {"relevance": RELEVANCE[verdict]}},
    }


class QConnectAdapter(AwsAdapter):
    """``{"qconnect": {"assistant_id", "region_name", "target_type": "MESSAGE", "endpoint_url": None,
    "profile_name": None, "rating_thresholds": None}}``."""

    name = "qconnect"
    service = "qconnect"
    label = "Amazon Q Connect"

    def __init__(self, name: str | None = None, *, assistant_id: str, region_name: str,
                 target_type: str = "MESSAGE", **options: Any) -> None:
        super().__init__(name, region_name=region_name, **options)
        self.check_option("assistant_id", "assistantId", assistant_id)
        self.check_option("target_type", "targetType", target_type)
        self.assistant_id, self.target_type = assistant_id, target_type

    def skip_reason(self, event: Event, message: Message) -> str | None:
        if event.type is EventType.RETRACT:
            return NO_DELETE
        if event.type in _COPIES:
            return NOT_EXPRESSIBLE.format(what=_COPIES[event.type])
        if event.amends is not None:  # an amendment changes only the reason and comment
            return NOTHING_NEW
        return self.refs_problem(message, ("target_id",))

    def build_request(self, context: DeliveryContext) -> dict[str, Any]:
        refs = self.refs(context.message, ("target_id",))
        params = put_feedback_params(
            context.state or FeedbackState(), assistant_id=self.assistant_id, target_id=refs["target_id"],
            target_type=refs.get("target_type") or self.target_type, thresholds=self.thresholds,
        )
        return {"operation": self.operation, "params": params}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "assistant_id": self.assistant_id, "target_type": self.target_type}
