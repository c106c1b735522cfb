"""The dashboard's SQL: one aggregate pass over a time window for the overview, keyset pages for the list.

Everything is computed by the database from indexes (see ``schema.py``): the overview reads the covering
index on ``(received_at, type, value, reason, amends)`` and ``(created_at, provider, status)``, the list reads
``received_at`` (or a user's ``(user_id, received_at)``) newest first and stops after one page.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Connection, Engine, func, select

from .. import db, maintenance
from ..models import DeliveryStatus
from ..schema import events, messages, outbox, states

PAGE_SIZE = 50
STATUSES = [s.value for s in DeliveryStatus]


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
    counts: dict[str, int]
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


def _day(column: Any, dialect: str) -> ColumnElement[str]:
    """The UTC calendar day of a timestamp, as ``YYYY-MM-DD`` text."""
    if dialect == "postgresql":
        return func.to_char(func.timezone("UTC", column), "YYYY-MM-DD")
    return func.substr(column, 1, 10)  # SQLite stores UTC as "YYYY-MM-DD HH:MM:SS[.ffffff]"


def overview(engine: Engine, since: datetime, until: datetime) -> Overview:
    with db.read(engine) as conn:
        day = _day(events.c.received_at, conn.dialect.name)
        original = events.c.amends.is_(None)
        in_window = (events.c.received_at >= since) & (events.c.received_at < until)
        rows = conn.execute(
            select(day, events.c.type, events.c.value, events.c.reason, original, func.count())
            .where(in_window).group_by(day, events.c.type, events.c.value, events.c.reason, original)
        ).all()
        answers = conn.execute(select(func.count()).select_from(messages).where(
            (messages.c.created_at >= since) & (messages.c.created_at < until))).scalar_one()
        copied = conn.execute(select(func.count()).select_from(states).where(
            (states.c.copied_at >= since) & (states.c.copied_at < until))).scalar_one()
        health = _health(conn, since, until)
    first, last = since.date(), (until - timedelta(microseconds=1)).date()
    by_day = {first + timedelta(days=i): Day(first + timedelta(days=i)) for i in range((last - first).days + 1)}
    ratings = dict.fromkeys(range(1, 6), 0)
    reasons: Counter[str] = Counter()
    copies = 0
    for day_text, kind, value, reason, is_original, n in rows:
        entry = by_day.setdefault(date.fromisoformat(day_text), Day(date.fromisoformat(day_text)))
        entry.total += n
        if reason:
            reasons[reason] += n
        if not is_original:
            continue
        if kind == "thumbs_up":
            entry.up += n
        elif kind == "thumbs_down":
            entry.down += n
        elif kind == "rating" and value in ratings:
            ratings[value] += n
        elif kind == "copy_output":
            copies += n
    return Overview(since=since, until=until, days=sorted(by_day.values(), key=lambda d: d.day), ratings=ratings,
                    reasons=reasons.most_common(), copies=copies, answers=answers, answers_copied=copied,
                    health=health)


def _health(conn: Connection, since: datetime, until: datetime) -> dict[str, ProviderHealth]:
    """Deliveries created in the window per provider and status; the oldest unfinished one of all time."""
    rows = conn.execute(
        select(outbox.c.provider, outbox.c.status, func.count())
        .where((outbox.c.created_at >= since) & (outbox.c.created_at < until))
        .group_by(outbox.c.provider, outbox.c.status)
    ).all()
    oldest = maintenance.oldest_pending(conn)
    health = {name: ProviderHealth(dict.fromkeys(STATUSES, 0), oldest.get(name)) for name in oldest}
    for provider, status, n in rows:
        health.setdefault(provider, ProviderHealth(dict.fromkeys(STATUSES, 0), oldest.get(provider)))
        health[provider].counts[status] = n
    return dict(sorted(health.items()))


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
        .where(*filters.where())
        .order_by(events.c.received_at.desc(), events.c.id.desc())
        .limit(size + 1)
    )
    if before is not None:
        received, pk = before
        query = query.where(events.c.received_at <= received,
                            (events.c.received_at < received) | (events.c.id < pk))
    with db.read(engine) as conn:
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
