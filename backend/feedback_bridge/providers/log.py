"""The built-in ``log`` provider: writes each delivery to the Python log.

It exercises the whole outbox path with no external service, and is useful while wiring up an app.
``{"log": {"mode": "event"}}`` makes it receive events instead of states.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from ..models import FeedbackState
from .base import DeliveryContext, ProviderAdapter

logger = logging.getLogger(__name__)


class LogAdapter(ProviderAdapter):
    name = "log"

    def __init__(self, name: str | None = None, *, mode: str = "state", level: str = "INFO") -> None:
        super().__init__(name, mode=mode, level=level)
        if mode not in ("state", "event"):
            raise ValueError("mode must be 'state' or 'event'")
        self.mode = mode  # type: ignore[misc]  # per-instance choice of the class-level default
        self.level = logging.getLevelName(level.upper())

    def build_request(self, context: DeliveryContext) -> dict[str, Any]:
        message = context.message
        request: dict[str, Any] = {
            "conversation_id": message.conversation_id,
            "message_id": message.message_id,
            "user_id": context.user_id,
        }
        if context.state is not None:
            request["state"] = _state_dict(context.state)
        if context.event is not None:
            event = context.amended_event()
            request["event"] = {
                "id": event.event_id,
                "type": str(event.type),
                "value": event.value,
                "reason": event.reason,
                "comment": event.comment,
                "text": event.text,
                "occurred_at": event.occurred_at.isoformat(),
            }
        return request

    def send(self, request: dict[str, Any]) -> dict[str, Any]:
        logger.log(self.level, "feedback delivery %s: %s", self.name, json.dumps(request, sort_keys=True))
        return {"logged": True}


def _state_dict(state: FeedbackState) -> dict[str, Any]:
    return {
        "vote": state.vote,
        "rating": state.rating,
        "reason": state.reason,
        "comment": state.comment,
        "copied_at": state.copied_at.isoformat() if state.copied_at else None,
        "updated_at": state.updated_at.isoformat() if state.updated_at else None,
    }
