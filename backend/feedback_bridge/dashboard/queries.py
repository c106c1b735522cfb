"""The dashboard's SQL: range counts for the overview (closed days saved, see ``daily.py``), keyset pages for
the list.

Everything is computed by the database from indexes (see ``schema.py``): the overview counts index ranges, the
list reads ``received_at`` (or a user's ``(user_id, received_at)``) newest first and stops after one page.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from typing import Any

from sqlalchemy import Connection, Engine, func, select

from .. import daily, db, maintenance
from ..models import REASONS, DeliveryStatus
from ..schema import events, messages, outbox, states

PAGE_SIZE = 50
STATUSES = [s.value for s in DeliveryStatus]
# Delivery health counts these statuses over the last day only (four rows per event: counting a quarter's worth
# would cost seconds); pending, in-flight and failed deliveries are counted whenever they were created.
FINISHED = (DeliveryStatus.DELIVERED.value, DeliveryStatus.SKIPPED.value)
RECENT = timedelta(days=1)


@dataclass
class Day:
    day: date
    total: int = 0  # every event
    up: int = 0  # thumbs up (not amendments)
    down: int = 0

    @property
    def up_share(self) -> float | None:
        votes = self.up + self.down
        return 100 * self.up / votes if votes else None


@dataclass
class ProviderHealth:
    counts: dict[str, int]  # delivered and skipped: created in the last day; the others: all there are now
    oldest_pending: datetime | None


@dataclass
class Overview:
    since: datetime
    until: datetime
    days: list[Day]
    ratings: dict[int, int]  # 1..5 -> ratings given (not amendments)
    reasons: list[tuple[str, int]]  # most frequent first, amendments included
    copies: int  # copy_output events
    answers: int  # messages registered in the window
    answers_copied: int  # of which were copied for the first time in the window
    health: dict[str, ProviderHealth] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(d.total for d in self.days)

    @property
    def up_share(self) -> float | None:
        up, down = sum(d.up for d in self.days), sum(d.down for d in self.days)
        return 100 * up / (up + down) if up + down else None

    @property
    def copy_rate(self) -> float | None:
        return 100 * self.answers_copied / self.answers if self.answers else None


def overview(engine: Engine, since: datetime, until: datetime, *, now: datetime | None = None) -> Overview:
    """Every number of the overview: per-day counts, read from ``daily`` for closed days and counted otherwise.

    A count is an equality prefix plus a time range of one index (see ``schema.py``), so the database walks only
    the matching index entries: no table rows, no sort for a GROUP BY. Closed days are counted once and saved, so
    a warm render counts only today and the window's first, partial day, whatever the window's volume. A day is a
    UTC calendar day; ``now`` (default ``until``) decides which days are closed.
    """
    days = _days(since, until)
    closed = {start.date() for start, end in days if daily.is_closed(start, end, now or until)}
    names = providers(engine)
    counted: dict[date, dict[str, int]] = {}
    with _read(engine) as conn:
        saved, mark = daily.load(conn, closed)
        per_day = []
        for start, end in days:
            counts = saved.get(start.date())
            if counts is None:
                counts = daily.count_range(conn, start, end)
                if start.date() in closed:
                    counted[start.date()] = counts
            per_day.append(counts)
        live = _live_counts(conn, since, until, names)
        oldest = maintenance.oldest_pending(conn)
    daily.save(engine, counted, mark, now or until)
    window = {key: sum(counts[key] for counts in per_day) for key in daily.KEYS}
    return Overview(
        since=since, until=until,
        days=[Day(start.date(), counts["all"], counts["up"], counts["down"])
              for (start, _), counts in zip(days, per_day, strict=True)],
        ratings={value: window[f"rating{value}"] for value in range(1, 6)},
        reasons=sorted(((r, window[f"reason:{r}"]) for r in REASONS if window[f"reason:{r}"]),
                       key=lambda item: -item[1]),
        copies=window["copies"], answers=window["answers"], answers_copied=live["copied"],
        health={name: ProviderHealth({s: live[f"health:{name}:{s}"] for s in STATUSES}, oldest.get(name))
                for name in sorted(set(names) | set(oldest))},
    )


def _live_counts(conn: Connection, since: datetime, until: datetime, names: list[str]) -> dict[str, int]:
    """What changes after its day: answers first copied in the window (a copy carries the browser's time, and may
    arrive days later), and delivery health, in one statement."""
    statement = {"copied": daily.count_of(states, (states.c.copied_at >= since) & (states.c.copied_at < until))}
    recent = until - RECENT
    for name in names:
        for status in STATUSES:
            # Finished deliveries are most of the outbox: count the recent ones. The rest are few: count all.
            where = (outbox.c.provider == name) & (outbox.c.status == status)
            if status in FINISHED:
                where &= (outbox.c.created_at >= recent) & (outbox.c.created_at < until)
            statement[f"health:{name}:{status}"] = daily.count_of(outbox, where)
    row = conn.execute(select(*[query.label(f"c{i}") for i, query in enumerate(statement.values())])).one()
    return dict(zip(statement, row, strict=True))


@contextmanager
def _read(engine: Engine) -> Iterator[Connection]:
    """A read transaction for a page. On PostgreSQL without parallel workers: these statements stop after a page
    of rows or count index ranges, and starting workers for each cost more than it saved (measured on 1M events)."""
    with db.read(engine) as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("SET LOCAL max_parallel_workers_per_gather = 0")
        yield conn


def _days(since: datetime, until: datetime) -> list[tuple[datetime, datetime]]:
    """The UTC calendar days the window touches, each cut to the window."""
    first = datetime.combine(since.date(), time(), tzinfo=timezone.utc)
    result = []
    while first < until:
        following = first + timedelta(days=1)
        result.append((max(first, since), min(following, until)))
        first = following
    return result


def providers(engine: Engine) -> list[str]:
    """Every provider name in the outbox, by a loose index scan (one index seek per name, not a table scan)."""
    names: list[str] = []
    with db.read(engine) as conn:
        while True:
            query = select(func.min(outbox.c.provider))
            if names:
                query = query.where(outbox.c.provider > names[-1])
            name = conn.execute(query).scalar()
            if name is None:
                return names
            names.append(name)


@dataclass
class Page:
    rows: list[dict[str, Any]]
    next_cursor: str | None  # the "older" link, None on the last page


def encode_cursor(received_at: datetime, pk: int) -> str:
    return f"{received_at.isoformat()}_{pk}"


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    """Raises ValueError for anything but what ``encode_cursor`` made."""
    moment, _, pk = cursor.rpartition("_")
    parsed = datetime.fromisoformat(moment)
    if parsed.tzinfo is None:
        raise ValueError("cursor time without offset")
    return parsed, int(pk)


# Past this many matching deliveries, a delivery filter tests events newest first instead of starting from the
# deliveries: the matches are dense enough to fill a page soon, and sorting them all would cost more.
DENSE_DELIVERIES = 2000


def list_page(engine: Engine, filters: maintenance.ExportFilter, *, before: tuple[datetime, int] | None = None,
              size: int = PAGE_SIZE) -> Page:
    """One page of events newest first, each with its message and its deliveries (request and response)."""
    query = (
        select(
            events.c.id, events.c.event_id, events.c.user_id, events.c.type, events.c.value, events.c.reason,
            events.c.comment, events.c.text, events.c.amends, events.c.occurred_at, events.c.received_at,
            messages.c.conversation_id, messages.c.message_id, messages.c.input, messages.c.output,
        )
        .join(messages, messages.c.id == events.c.message_pk)
        .order_by(events.c.received_at.desc(), events.c.id.desc())
        .limit(size + 1)
    )
    if before is not None:
        received, pk = before
        query = query.where(events.c.received_at <= received,
                            (events.c.received_at < received) | (events.c.id < pk))
    with _read(engine) as conn:
        dense = filters.status is not None and maintenance.count_deliveries(
            conn, filters, up_to=DENSE_DELIVERIES + 1) > DENSE_DELIVERIES
        query = query.where(*filters.where(from_deliveries=False if dense else None))
        rows = [dict(row) for row in conn.execute(query).mappings()]
        more = len(rows) > size
        rows = rows[:size]
        deliveries = _deliveries(conn, [row["id"] for row in rows])
    for row in rows:
        row["deliveries"] = deliveries.get(row["id"], [])
    cursor = encode_cursor(rows[-1]["received_at"], rows[-1]["id"]) if more else None
    return Page(rows, cursor)


def _deliveries(conn: Connection, event_pks: list[int]) -> dict[int, list[dict[str, Any]]]:
    if not event_pks:
        return {}
    result: dict[int, list[dict[str, Any]]] = {}
    rows = conn.execute(
        select(outbox.c.id, outbox.c.event_pk, outbox.c.provider, outbox.c.kind, outbox.c.status,
               outbox.c.attempts, outbox.c.last_error, outbox.c.request, outbox.c.response,
               outbox.c.next_attempt_at, outbox.c.delivered_at, outbox.c.updated_at)
        .where(outbox.c.event_pk.in_(event_pks))
        .order_by(outbox.c.provider, outbox.c.id)
    ).mappings()
    for row in rows:
        result.setdefault(row["event_pk"], []).append(dict(row))
    return result
