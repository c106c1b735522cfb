"""Per-day counts of closed UTC days, computed once and kept for the dashboard's overview.

A day's events and answers are stamped with the server's clock when they arrive (``received_at``,
``created_at``), so once a day is over its counts never change again, except by a purge or a seed that writes
the past. Those call :func:`forget`, which empties the table and changes a purge mark; a render saves the days it
counted only if the mark is still the one it read with them, so counts read before a purge never outlive it.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from datetime import date, datetime, timedelta, timezone
from typing import Any

from sqlalchemy import ColumnElement, Connection, Engine, delete, func, select
from sqlalchemy.exc import SQLAlchemyError

from . import db
from .models import REASONS
from .schema import daily_counts, events, messages

logger = logging.getLogger(__name__)

# A day is closed this long after midnight: a request stamped 23:59:59 may still be committing (SQLite's busy
# timeout is 30 s), and app servers' clocks differ by a little.
CLOSE_AFTER = timedelta(minutes=5)
# The row holding the purge mark, on a day no event can have.
MARK_DAY = date(1, 1, 1)
# What a day counts; a saved day lacking any of these (an older version's) is counted again.
KEYS = ("all", "up", "down", *(f"rating{n}" for n in range(1, 6)), "copies", *(f"reason:{r}" for r in REASONS),
        "answers")

_save = db.prepared(lambda dialect: db.insert_or_lock(dialect, daily_counts, ["day"], ["counts", "computed_at"]))
_lock_mark = db.prepared(
    lambda dialect: db.insert_or_lock(dialect, daily_counts, ["day"], [], keep=("counts",))
    .returning(daily_counts.c.counts)
)


def is_closed(start: datetime, end: datetime, now: datetime) -> bool:
    """Whether ``[start, end)`` is a whole UTC day that ended at least ``CLOSE_AFTER`` before ``now``."""
    return start.time() == datetime.min.time() and end - start == timedelta(days=1) and end + CLOSE_AFTER <= now


def count_range(conn: Connection, start: datetime, end: datetime) -> dict[str, int]:
    """Every count of ``[start, end)`` in one statement, each an index range (see ``schema.py``)."""
    received = (events.c.received_at >= start) & (events.c.received_at < end)
    original = received & events.c.amends.is_(None)
    where: dict[str, ColumnElement[bool]] = {
        "all": received,
        "up": _kind("thumbs_up", None) & original,
        "down": _kind("thumbs_down", None) & original,
        **{f"rating{n}": _kind("rating", n) & original for n in range(1, 6)},
        "copies": _kind("copy_output", None) & received,
        **{f"reason:{r}": (events.c.reason == r) & received for r in REASONS},
    }
    columns = [count_of(events, condition).label(key) for key, condition in where.items()]
    answers = (messages.c.created_at >= start) & (messages.c.created_at < end)
    columns.append(count_of(messages, answers).label("answers"))
    return dict(conn.execute(select(*columns)).mappings().one())


def load(conn: Connection, days: Iterable[date]) -> tuple[dict[date, dict[str, int]], str | None]:
    """The saved counts of ``days`` (those saved whole), and the purge mark read in the same transaction."""
    wanted = sorted(days)
    if not wanted:
        return {}, None
    rows = conn.execute(
        select(daily_counts.c.day, daily_counts.c.counts)
        .where((daily_counts.c.day == MARK_DAY) | daily_counts.c.day.between(wanted[0], wanted[-1]))
    ).all()
    mark = next((counts.get("purge") for day, counts in rows if day == MARK_DAY), None)
    saved = {day: counts for day, counts in rows if day != MARK_DAY and all(k in counts for k in KEYS)}
    return saved, mark


def save(engine: Engine, counted: dict[date, dict[str, int]], mark: str | None, now: datetime) -> bool:
    """Keep ``counted`` unless a purge changed the mark since they were read. Locks the mark row first, so a purge
    either ran before (and the mark differs) or waits, and then deletes what this saved. Best effort: a failure
    only costs the next render a recount."""
    if not counted:
        return False
    try:
        with db.write(engine) as conn:
            current = conn.execute(_lock_mark(conn), {"day": MARK_DAY, "counts": {"purge": None},
                                                      "computed_at": now}).scalar_one()
            if current.get("purge") != mark:
                return False
            conn.execute(_save(conn), [{"day": day, "counts": counts, "computed_at": now}
                                       for day, counts in sorted(counted.items())])
        return True
    except SQLAlchemyError:
        logger.warning("Could not save the dashboard's daily counts; they are counted again next time",
                       exc_info=True)
        return False


def forget(conn: Connection, *, through: datetime | None = None) -> None:
    """Call in the transaction that deletes or back-dates events or messages: a new mark, then no saved days (or
    none up to the day of ``through``, for a purge of what is older than it)."""
    conn.execute(_save(conn), {"day": MARK_DAY, "counts": {"purge": uuid.uuid4().hex},
                               "computed_at": datetime.now(timezone.utc)})
    stale = daily_counts.c.day != MARK_DAY
    if through is not None:
        stale &= daily_counts.c.day <= through.astimezone(timezone.utc).date()
    conn.execute(delete(daily_counts).where(stale))


def _kind(kind: str, value: int | None) -> ColumnElement[bool]:
    # Both columns as an equality prefix of ix_feedback_events_kind_received (IS NULL is one, too).
    return (events.c.type == kind) & (events.c.value.is_(None) if value is None else events.c.value == value)


def count_of(table: Any, where: ColumnElement[bool]) -> Any:
    """``SELECT count(*) FROM table WHERE where`` as a scalar subquery, to put many in one SELECT."""
    return select(func.count()).select_from(table).where(where).scalar_subquery()
