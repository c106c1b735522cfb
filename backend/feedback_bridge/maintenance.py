"""The SQL behind ``flask feedback``: outbox status, the export stream and retention/erasure purges."""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Any

from sqlalchemy import Column, Connection, Engine, String, delete, exists, func, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.functions import FunctionElement

from . import daily, db
from .models import DeliveryStatus
from .schema import events, messages, outbox, states

logger = logging.getLogger(__name__)

PAGE_SIZE = 1000
# The order of the tables in a purge report, children first (the order they are deleted in).
TABLES = ("outbox", "states", "events", "messages")
_UNFINISHED = (DeliveryStatus.PENDING.value, DeliveryStatus.IN_FLIGHT.value)
# Statuses a healthy outbox holds few rows of (most end delivered or skipped).
_FEW = (*_UNFINISHED, DeliveryStatus.FAILED.value)


# -- status ----------------------------------------------------------------------------------------


def oldest_pending(conn: Connection) -> dict[str, datetime]:
    """``{provider: created_at}`` of the oldest delivery not yet finished (pending or in flight)."""
    rows = conn.execute(
        select(outbox.c.provider, func.min(outbox.c.created_at))
        .where(outbox.c.status.in_(_UNFINISHED))
        .group_by(outbox.c.provider)
    ).all()
    return {provider: oldest for provider, oldest in rows}


# -- export ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportFilter:
    """Which events an export (or the dashboard's list) takes; every field given narrows it."""

    since: datetime | None = None  # received at or after
    until: datetime | None = None  # received before
    user_id: str | None = None
    conversation_id: str | None = None
    vote: str | None = None  # "up" or "down": thumbs events (amendments of them included)
    rating: int | None = None  # rating events of this value
    reason: str | None = None
    provider: str | None = None  # with or without status: events with a delivery of this provider...
    status: str | None = None  # ...in this status (any provider's, without one)

    def where(self, *, from_deliveries: bool | None = None) -> list[ColumnElement[bool]]:
        """The clauses on ``events``. ``from_deliveries``: how a delivery filter is run, from the matching
        deliveries (good while they are few) or by testing each event, newest first (good when many match);
        by default the former for the statuses that are usually few (pending, in flight, failed)."""
        clauses: list[ColumnElement[bool]] = []
        if self.since is not None:
            clauses.append(events.c.received_at >= self.since)
        if self.until is not None:
            clauses.append(events.c.received_at < self.until)
        if self.user_id is not None:
            clauses.append(events.c.user_id == self.user_id)
        if self.conversation_id is not None:
            clauses.append(events.c.message_pk.in_(
                select(messages.c.id).where(messages.c.conversation_id == self.conversation_id)
            ))
        if self.vote is not None:
            clauses.append(events.c.type == f"thumbs_{self.vote}")
        if self.rating is not None:
            clauses.append((events.c.type == "rating") & (events.c.value == self.rating))
        if self.reason is not None:
            clauses.append(events.c.reason == self.reason)
        wanted = self.delivery_terms()
        if wanted:
            if from_deliveries if from_deliveries is not None else self.status in _FEW:
                # Few rows have this status, possibly none: start from them (an index on status) rather than
                # test every event, newest first, for one.
                clauses.append(events.c.id.in_(
                    select(outbox.c.event_pk).where(*[column == value for column, value in wanted])))
            else:
                # Per event, its own few deliveries by event_pk; `unindexed` keeps SQLite's planner from
                # scanning every delivery of the provider and status for each event instead.
                clauses.append(exists().where(outbox.c.event_pk == events.c.id,
                                              *[unindexed(column) == value for column, value in wanted]))
        return clauses

    def delivery_terms(self) -> list[tuple[Column[Any], str]]:
        """The (outbox column, value) pairs the provider and status filters ask for."""
        return [(column, value) for column, value in ((outbox.c.provider, self.provider),
                                                      (outbox.c.status, self.status)) if value]


class unindexed(FunctionElement):  # lower case: used like a SQL function
    """The column as is, but not usable as an index key: ``+column`` on SQLite, the plain column elsewhere
    (PostgreSQL's planner needs no such hint, and an expression there would cost it its plan)."""

    inherit_cache = True
    type = String()  # used on text columns only


@compiles(unindexed)
def _unindexed(element: unindexed, compiler: Any, **kw: Any) -> str:
    return compiler.process(element.clauses, **kw)


@compiles(unindexed, "sqlite")
def _unindexed_sqlite(element: unindexed, compiler: Any, **kw: Any) -> str:
    return "+" + compiler.process(element.clauses, **kw)


def count_deliveries(conn: Connection, filters: ExportFilter, *, up_to: int) -> int:
    """How many deliveries match the filter's provider and status, counting no further than ``up_to``."""
    wanted = [column == value for column, value in filters.delivery_terms()]
    return conn.execute(select(func.count()).select_from(select(outbox.c.id).where(*wanted).limit(up_to).subquery())
                        ).scalar_one()


def count_events(engine: Engine, filters: ExportFilter) -> int:
    with db.read(engine) as conn:
        return conn.execute(select(func.count()).select_from(events).where(*filters.where())).scalar_one()


def iter_export(engine: Engine, filters: ExportFilter, *, page_size: int = PAGE_SIZE) -> Iterator[dict[str, Any]]:
    """Every matching event in received order, with its message ids and its deliveries per provider.

    Keyset pagination on (received_at, id), one short read transaction per page, so the table is never
    loaded at once and no long-lived snapshot holds up writers or SQLite checkpoints.
    """
    query = (
        select(
            events.c.id, events.c.event_id, messages.c.conversation_id, messages.c.message_id,
            events.c.user_id, events.c.type, events.c.value, events.c.reason, events.c.comment,
            events.c.text, events.c.amends, events.c.occurred_at, events.c.received_at,
        )
        .join(messages, messages.c.id == events.c.message_pk)
        .where(*filters.where())
        .order_by(events.c.received_at, events.c.id)
        .limit(page_size)
    )
    after: tuple[datetime, int] | None = None
    while True:
        page_query = query
        if after is not None:
            received, pk = after
            page_query = query.where(
                events.c.received_at >= received,
                (events.c.received_at > received) | (events.c.id > pk),
            )
        with db.read(engine) as conn:
            page = conn.execute(page_query).mappings().all()
            deliveries = _deliveries(conn, [row["id"] for row in page])
        for row in page:
            yield _export_row(row, deliveries.get(row["id"], {}))
        if len(page) < page_size:
            return
        after = (page[-1]["received_at"], page[-1]["id"])


def _deliveries(conn: Connection, event_pks: list[int]) -> dict[int, dict[str, dict[str, Any]]]:
    if not event_pks:
        return {}
    rows = conn.execute(
        select(outbox.c.event_pk, outbox.c.provider, outbox.c.status, outbox.c.attempts, outbox.c.last_error,
               outbox.c.delivered_at)
        .where(outbox.c.event_pk.in_(event_pks))
        .order_by(outbox.c.id)
    ).all()
    result: dict[int, dict[str, dict[str, Any]]] = {}
    for row in rows:
        result.setdefault(row.event_pk, {})[row.provider] = {
            "status": row.status, "attempts": row.attempts, "last_error": row.last_error,
            "delivered_at": _iso(row.delivered_at),
        }
    return result


def _export_row(row: Any, deliveries: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {
        "event_id": row["event_id"], "conversation_id": row["conversation_id"], "message_id": row["message_id"],
        "user_id": row["user_id"], "type": row["type"], "value": row["value"], "reason": row["reason"],
        "comment": row["comment"], "text": row["text"], "amends": row["amends"],
        "occurred_at": _iso(row["occurred_at"]), "received_at": _iso(row["received_at"]),
        "deliveries": deliveries,
    }


CSV_COLUMNS = [
    "event_id", "conversation_id", "message_id", "user_id", "type", "value", "reason", "comment", "text",
    "amends", "occurred_at", "received_at", "deliveries",
]
# A cell starting with one of these is a formula to spreadsheet programs (CSV injection): users write comments
# and copied text, and an operator opens the export in a spreadsheet.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def write_export(stream: IO[str], fmt: str, rows: Iterable[dict[str, Any]]) -> None:
    """Write export rows as JSON lines (exact) or CSV (formula cells neutralised with a leading apostrophe)."""
    stream.writelines(export_lines(fmt, rows))


def export_lines(fmt: str, rows: Iterable[dict[str, Any]]) -> Iterator[str]:
    """The export as text pieces, one per row (after the CSV header): what ``write_export`` writes, for a
    streamed HTTP response."""
    if fmt == "jsonl":
        for row in rows:
            yield json.dumps(row, ensure_ascii=False) + "\n"
        return
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        row = {**row, "deliveries": json.dumps(row["deliveries"], ensure_ascii=False)}
        writer.writerow({key: _csv_safe(value) for key, value in row.items()})
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    if buffer.tell():  # the header of an empty export
        yield buffer.getvalue()


def _csv_safe(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


# -- purge -----------------------------------------------------------------------------------------


def _empty_report() -> dict[str, int]:
    return dict.fromkeys(TABLES, 0)


def count_older_than(engine: Engine, cutoff: datetime) -> int:
    with db.read(engine) as conn:
        return conn.execute(
            select(func.count()).select_from(events).where(events.c.received_at < cutoff)
        ).scalar_one()


def purge_older_than(engine: Engine, cutoff: datetime, *, batch_size: int = PAGE_SIZE) -> dict[str, int]:
    """Delete events received before ``cutoff`` with their outbox rows, then messages created before it
    that have no events left, with their states and outbox rows. Returns rows deleted per table.

    Works in batches, each its own transaction, so a large purge never holds SQLite's write lock (or
    PostgreSQL row locks) for long and never binds more ids than a driver accepts.
    """
    report = _empty_report()
    while True:
        with db.write(engine) as conn:
            pks = conn.execute(
                select(events.c.id).where(events.c.received_at < cutoff).order_by(events.c.id).limit(batch_size)
            ).scalars().all()
            if not pks:
                break
            report["outbox"] += conn.execute(delete(outbox).where(outbox.c.event_pk.in_(pks))).rowcount
            report["events"] += conn.execute(delete(events).where(events.c.id.in_(pks))).rowcount
            daily.forget(conn, through=cutoff)
    orphan = (messages.c.created_at < cutoff) & ~exists().where(events.c.message_pk == messages.c.id)
    while True:
        with db.write(engine) as conn:
            pks = conn.execute(
                select(messages.c.id).where(orphan).order_by(messages.c.id).limit(batch_size)
            ).scalars().all()
            if not pks:
                break
            # PostgreSQL: lock as ingest does, the states first (in ingest's order), then the messages. Ingest locks
            # a state, then key-shares its message for the event's foreign key; a purge that locked the message
            # first and then waited for the state deadlocked with it. FOR UPDATE of the messages keeps an ingest
            # from adding an event between the re-check below and the deletes; SQLite's write lock excludes both.
            conn.execute(
                select(states.c.message_pk).where(states.c.message_pk.in_(pks))
                .order_by(states.c.message_pk, states.c.user_id).with_for_update(of=states)
            ).all()
            pks = conn.execute(
                select(messages.c.id).where(messages.c.id.in_(pks) & orphan).with_for_update(of=messages)
            ).scalars().all()
            # Re-checked in each statement: a message that got an event meanwhile is left alone as a whole.
            _add(report, _delete_messages(conn, messages.c.id.in_(pks) & orphan))
            daily.forget(conn, through=cutoff)
    logger.info("Purged feedback received before %s: %s", cutoff.isoformat(), report)
    return report


def purge_user(engine: Engine, user_id: str) -> dict[str, int]:
    """Erase everything of one user: their events, states and deliveries, and the messages registered
    for them (with every other row that hangs off those messages)."""
    report = _empty_report()
    with db.write(engine) as conn:
        own_messages = messages.c.id.in_(
            select(messages.c.id).where(messages.c.user_id == user_id).scalar_subquery()
        )
        for table in (outbox, states, events):
            report[_name(table)] += conn.execute(delete(table).where(table.c.user_id == user_id)).rowcount
        _add(report, _delete_messages(conn, own_messages))
        daily.forget(conn)
    logger.info("Erased the feedback data of one user: %s", report)
    return report


def _delete_messages(conn: Connection, which: ColumnElement[bool]) -> dict[str, int]:
    """Delete messages and their dependent rows explicitly, whatever the database does about FKs."""
    chosen = select(messages.c.id).where(which).scalar_subquery()
    report = _empty_report()
    for table in (outbox, states, events):
        report[_name(table)] = conn.execute(delete(table).where(table.c.message_pk.in_(chosen))).rowcount
    report["messages"] = conn.execute(delete(messages).where(which)).rowcount
    return report


def _name(table: Any) -> str:
    return {outbox.name: "outbox", states.name: "states", events.name: "events"}[table.name]


def _add(report: dict[str, int], more: dict[str, int]) -> None:
    for key, value in more.items():
        report[key] += value
