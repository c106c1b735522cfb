"""The mapping rules several providers share."""

from __future__ import annotations

import pytest

from feedback_bridge.models import REASONS, FeedbackState
from feedback_bridge.providers import ADAPTERS
from feedback_bridge.providers.mapping import REASON_LABELS, RatingThresholds, feedback_text, sentiment


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (FeedbackState(), None),
        (FeedbackState(vote="up"), "positive"),
        (FeedbackState(vote="down"), "negative"),
        (FeedbackState(rating=5), "positive"),
        (FeedbackState(rating=4), "positive"),
        (FeedbackState(rating=3), None),
        (FeedbackState(rating=2), "negative"),
        (FeedbackState(rating=1), "negative"),
        (FeedbackState(vote="down", rating=5), "negative"),  # the explicit thumb wins
        (FeedbackState(vote="up", rating=1), "positive"),
    ],
)
def test_sentiment_with_default_thresholds(state: FeedbackState, expected: str | None):
    assert sentiment(state, RatingThresholds()) == expected


@pytest.mark.parametrize(
    ("rating", "expected"), [(5, "positive"), (4, None), (3, None), (2, "negative"), (1, "negative")]
)
def test_thresholds_are_configurable(rating: int, expected: str | None):
    thresholds = RatingThresholds.from_option({"positive": 5, "negative": 2})
    assert sentiment(FeedbackState(rating=rating), thresholds) == expected


@pytest.mark.parametrize("option", [{"positive": 3, "negative": 3}, {"positive": 6, "negative": 2}, {"negative": 0},
                                    "4/2", {"positive": 4, "bad": 1}])
def test_invalid_thresholds_are_refused(option):
    with pytest.raises((ValueError, TypeError)):
        RatingThresholds.from_option(option)


@pytest.mark.parametrize(
    ("reason", "comment", "expected"),
    [
        (None, None, None),
        (None, "  ", None),
        ("NOT_COMPLETE", None, "Not complete"),
        (None, " dates are wrong ", "dates are wrong"),
        ("NOT_FACTUALLY_CORRECT", "dates are wrong", "Not factually correct — dates are wrong"),
    ],
)
def test_feedback_text(reason, comment, expected):
    assert feedback_text(reason, comment) == expected


def test_every_reason_has_a_label():
    assert set(REASON_LABELS) == set(REASONS)


def test_vendor_adapters_are_registered_by_import_path():
    assert {"qbusiness", "qconnect", "moveworks", "nebuly"} <= set(ADAPTERS)


def test_the_records_made_for_every_event_are_immutable_values() -> None:
    """``Event`` and ``FeedbackState`` are NamedTuples (built in one call): still values, never changed in place."""
    from datetime import datetime, timezone

    from feedback_bridge.models import Event, EventType, apply_event

    state = FeedbackState(vote="up")
    event = Event("e-00000001", EventType.THUMBS_DOWN, datetime(2026, 1, 1, tzinfo=timezone.utc))
    with pytest.raises(AttributeError):
        state.vote = "down"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        event.reason = "OTHER"  # type: ignore[misc]
    after = apply_event(state, event)
    assert (state.vote, after.vote, after.vote_event_id) == ("up", "down", "e-00000001")
    assert after == FeedbackState(vote="down", vote_event_id="e-00000001", updated_at=event.occurred_at)
