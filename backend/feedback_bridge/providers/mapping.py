"""Mapping rules shared by several providers: what a rating means as a vote, and how a reason and a comment
read as one piece of text. Pure functions, table-tested."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from ..models import FeedbackState

Sentiment = Literal["positive", "negative"]

REASON_LABELS = {
    "NOT_FACTUALLY_CORRECT": "Not factually correct",
    "HARMFUL_OR_UNSAFE": "Harmful or unsafe",
    "INCORRECT_OR_MISSING_SOURCES": "Incorrect or missing sources",
    "NOT_HELPFUL": "Not helpful",
    "FACTUALLY_CORRECT": "Factually correct",
    "COMPLETE": "Complete",
    "RELEVANT_SOURCES": "Relevant sources",
    "HELPFUL": "Helpful",
    "NOT_BASED_ON_DOCUMENTS": "Not based on documents",
    "NOT_COMPLETE": "Not complete",
    "NOT_CONCISE": "Not concise",
    "OTHER": "Other",
}


@dataclass(frozen=True)
class RatingThresholds:
    """A rating of at least ``positive`` counts as useful, at most ``negative`` as not useful; between: neither."""

    positive: int = 4
    negative: int = 2

    def __post_init__(self) -> None:
        if not (1 <= self.negative < self.positive <= 5):
            raise ValueError("rating thresholds need 1 <= negative < positive <= 5")

    @classmethod
    def from_option(cls, option: Any) -> RatingThresholds:
        """``None``, a ``RatingThresholds``, or ``{"positive": 4, "negative": 2}`` from configuration."""
        if option is None:
            return cls()
        if isinstance(option, RatingThresholds):
            return option
        if isinstance(option, dict):
            return cls(**option)
        raise ValueError("rating_thresholds must be a dict like {'positive': 4, 'negative': 2}")

    def sentiment(self, rating: int) -> Sentiment | None:
        if rating >= self.positive:
            return "positive"
        if rating <= self.negative:
            return "negative"
        return None


def sentiment(state: FeedbackState, thresholds: RatingThresholds) -> Sentiment | None:
    """The vote a state expresses. A thumb is the explicit answer, so it wins over a rating given as well."""
    if state.vote == "up":
        return "positive"
    if state.vote == "down":
        return "negative"
    if state.rating is not None:
        return thresholds.sentiment(state.rating)
    return None


def feedback_text(reason: str | None, comment: str | None) -> str | None:
    """``"Not factually correct — the dates are wrong"``; None when there is neither."""
    parts = [REASON_LABELS.get(reason, reason) if reason else None, comment.strip() if comment else None]
    text = " — ".join(p for p in parts if p)
    return text or None
