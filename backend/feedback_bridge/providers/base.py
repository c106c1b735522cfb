"""The interface every provider adapter implements.

An adapter has two halves kept apart on purpose: *mapping* (``skip_reason`` and ``build_request``, pure
functions of the records they are given, table-tested) and *transport* (``send``, the only method that
touches the network). The outbox owns retries; ``send`` classifies each failure by raising one of the
narrow :class:`~feedback_bridge.exceptions.DeliveryError` subclasses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Literal

from ..models import Event, FeedbackState, Message


class Skip(Exception):
    """Raised by ``build_request`` when the provider cannot express this delivery. Recorded, never sent."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class DeliveryContext:
    """Everything a mapping function may look at for one delivery."""

    message: Message
    user_id: str
    now: datetime
    state: FeedbackState | None = None  # "state" providers
    event: Event | None = None  # "event" providers
    amendments: tuple[Event, ...] = field(default_factory=tuple)  # merged into a pending vote

    def amended_event(self) -> Event:
        """``event`` with its merged amendments applied, oldest first: each adds what it gives, and leaves
        the rest (as the feedback state does). For "event" deliveries only."""
        event = self.event
        if event is None:
            raise ValueError("a state delivery has no event to amend")
        for amendment in self.amendments:
            event = event._replace(
                reason=amendment.reason if amendment.reason is not None else event.reason,
                comment=amendment.comment if amendment.comment is not None else event.comment,
            )
        return event


class ProviderAdapter:
    """Base class. Subclasses set ``name`` and ``mode`` and override the mapping and transport hooks.

    ``mode = "state"``: the provider receives the full current feedback state of (message, user) after
    each change; changes inside the settle window are coalesced into one delivery.
    ``mode = "event"``: the provider receives each event; votes superseded inside the settle window are
    skipped, and a reason/comment added while its vote is still pending is merged into it.
    """

    name: ClassVar[str] = ""
    mode: ClassVar[Literal["state", "event"]] = "state"

    def __init__(self, name: str | None = None, **options: Any) -> None:
        self.name = name or type(self).name
        self.options = options

    def skip_reason(self, event: Event, message: Message) -> str | None:
        """Why this provider can never express ``event`` (recorded as a skipped delivery), or None."""
        return None

    def build_request(self, context: DeliveryContext) -> dict[str, Any]:
        """Map one delivery to the request this provider should receive, or raise :class:`Skip`."""
        raise NotImplementedError

    def send(self, request: dict[str, Any]) -> dict[str, Any]:
        """Send ``request``; return the provider's response as a JSON-able dict, or raise DeliveryError."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """A summary safe to show an operator: never credentials."""
        return {"name": self.name, "mode": self.mode, "adapter": type(self).__name__}

    def close(self) -> None:
        """Release connections; called when the app's bridge shuts down."""
