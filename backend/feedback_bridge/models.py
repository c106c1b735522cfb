"""Plain records passed between the store, the mapping functions and the worker.

The records made for every event (``Event``, ``FeedbackState``, and the store's ``IncomingEvent`` and ``Outcome``) are
NamedTuples: immutable, and built in one call where a frozen dataclass's ``__init__`` makes a call per field (a
batch of 20 executed 4% fewer instructions for it)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple


class DeliveryStatus(str, enum.Enum):
    """Where an outbox row is in its life."""

    PENDING = "pending"
    IN_FLIGHT = "in_flight"
    DELIVERED = "delivered"
    SKIPPED = "skipped"
    FAILED = "failed"  # a dead letter: permanent error or retries exhausted; `flask feedback retry` revives it

    def __str__(self) -> str:
        return self.value


class EventType(str, enum.Enum):
    THUMBS_UP = "thumbs_up"
    THUMBS_DOWN = "thumbs_down"
    RATING = "rating"
    COPY_OUTPUT = "copy_output"
    COPY_INPUT = "copy_input"
    PASTE = "paste"
    RETRACT = "retract"

    def __str__(self) -> str:
        return self.value


VOTE_TYPES = frozenset({EventType.THUMBS_UP, EventType.THUMBS_DOWN, EventType.RATING})
TEXT_TYPES = frozenset({EventType.COPY_OUTPUT, EventType.COPY_INPUT, EventType.PASTE})

# The twelve Amazon Q Business `UsefulnessReason` values, the widget's reason vocabulary.
REASONS = (
    "NOT_FACTUALLY_CORRECT",
    "HARMFUL_OR_UNSAFE",
    "INCORRECT_OR_MISSING_SOURCES",
    "NOT_HELPFUL",
    "FACTUALLY_CORRECT",
    "COMPLETE",
    "RELEVANT_SOURCES",
    "HELPFUL",
    "NOT_BASED_ON_DOCUMENTS",
    "NOT_COMPLETE",
    "NOT_CONCISE",
    "OTHER",
)


@dataclass(frozen=True)
class Message:
    pk: int
    conversation_id: str
    message_id: str
    user_id: str
    input: str | None
    output: str | None
    refs: dict[str, Any]
    created_at: datetime


class Event(NamedTuple):
    event_id: str
    type: EventType
    occurred_at: datetime
    value: int | None = None
    reason: str | None = None
    comment: str | None = None
    text: str | None = None
    amends: str | None = None
    pk: int | None = None


class FeedbackState(NamedTuple):
    """What one user currently says about one message, derived from the event log."""

    vote: str | None = None  # "up" | "down"
    vote_event_id: str | None = None
    rating: int | None = None
    reason: str | None = None
    comment: str | None = None
    copied_at: datetime | None = None
    copy_count: int = 0
    updated_at: datetime | None = None  # when the vote, rating, reason or comment last changed (copies: copied_at)

    def as_public_dict(self) -> dict[str, Any]:
        return {
            "vote": self.vote,
            "rating": self.rating,
            "reason": self.reason,
            "comment": self.comment,
            "copied": self.copy_count > 0,
        }


def apply_event(state: FeedbackState, event: Event) -> FeedbackState:
    """Return the state after ``event``. Pure: the store persists the result if it differs."""
    at = event.occurred_at
    kind = event.type
    if event.amends is not None:
        # An amendment adds a reason/comment to the vote it names, if that vote is still the current one;
        # what it leaves out stays as it was.
        if state.vote_event_id != event.amends:
            return state
        return state._replace(
            reason=event.reason if event.reason is not None else state.reason,
            comment=event.comment if event.comment is not None else state.comment, updated_at=at,
        )
    if kind in (EventType.THUMBS_UP, EventType.THUMBS_DOWN):
        vote = "up" if kind is EventType.THUMBS_UP else "down"
        return state._replace(
            vote=vote, vote_event_id=event.event_id, reason=event.reason, comment=event.comment,
            updated_at=at,
        )
    if kind is EventType.RATING:
        return state._replace(
            rating=event.value, vote_event_id=event.event_id, reason=event.reason,
            comment=event.comment, updated_at=at,
        )
    if kind is EventType.RETRACT:
        return state._replace(vote=None, vote_event_id=None, rating=None, reason=None, comment=None, updated_at=at)
    if kind is EventType.COPY_OUTPUT:
        # Not ``updated_at``: a copy says nothing of the verdict, whose time Q Business records (submittedAt).
        return state._replace(copied_at=state.copied_at or at, copy_count=state.copy_count + 1)
    return state  # copy_input and paste say nothing about the answer itself


@dataclass(frozen=True)
class Delivery:
    """One outbox row, as the worker sees it after claiming it."""

    pk: int
    provider: str
    kind: str  # "state" | "event"
    message_pk: int
    user_id: str
    event_pk: int | None
    attempts: int
    lease_owner: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
