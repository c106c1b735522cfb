"""Messages, the append-only event log and the derived feedback state."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import Connection, Engine, RowMapping, bindparam, select, update
from sqlalchemy.engine import Dialect

from . import db, outbox
from .driver_sql import DriverStatement, fetch_all
from .models import Event, EventType, FeedbackState, Message, apply_event
from .providers import ProviderAdapter
from .schema import events, messages, states

Key = tuple[int, str]  # a state's: (message row id, user id)
STATE_COLUMNS = list(FeedbackState._fields)
KEYED_STATE_COLUMNS = (states.c.message_pk, states.c.user_id, *[states.c[name] for name in STATE_COLUMNS])


class IncomingEvent(NamedTuple):
    """A validated event whose token has been verified: it belongs to ``message`` and ``user_id``."""

    message: Message
    user_id: str
    event: Event


class Outcome(NamedTuple):
    id: str
    status: str  # "accepted" | "duplicate" | "rejected"
    errors: dict[str, list[str]] | None = None
    code: str | None = None

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"id": self.id, "status": self.status}
        if self.errors:
            body["errors"] = self.errors
        if self.code:
            body["code"] = self.code
        return body


class Store:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._read_one = db.single_statement_reader(engine)
        self._sqlite_states = _SQLiteStates(engine.dialect) if engine.dialect.name == "sqlite" else None

    def create_tables(self) -> None:
        db.create_all(self.engine)

    # -- messages ----------------------------------------------------------------------------------

    def register_message(
        self, *, conversation_id: str, message_id: str, user_id: str, input: str | None,
        output: str | None, refs: Mapping[str, Any], now: datetime,
    ) -> Message:
        """Insert the message, or update its texts and refs if it is already known."""
        values = {"input": input, "output": output, "refs": dict(refs)}
        with db.write(self.engine) as conn:
            conn.execute(
                db.insert_ignore(conn.dialect.name, messages, ["conversation_id", "message_id"]).values(
                    conversation_id=conversation_id, message_id=message_id, user_id=user_id,
                    created_at=now, **values,
                )
            )
            where = (messages.c.conversation_id == conversation_id) & (messages.c.message_id == message_id)
            row = conn.execute(
                update(messages).where(where).values(**values).returning(*messages.c)
            ).mappings().one()
        return message_from_row(row)

    def get_message(self, pk: int) -> Message | None:
        with self._read_one() as conn:
            row = conn.execute(_select_message, {"pk": pk}).mappings().first()
        return message_from_row(row) if row else None

    def get_messages(self, pks: Sequence[int]) -> dict[int, Message]:
        """The messages of these row ids that exist, with one read."""
        if not pks:
            return {}
        with self._read_one() as conn:
            rows = conn.execute(SELECT_MESSAGES, {"pks": list(pks)}).mappings().all()
        return {row["id"]: message_from_row(row) for row in rows}

    def find_message(self, conversation_id: str, message_id: str) -> Message | None:
        with self._read_one() as conn:
            params = {"conversation_id": conversation_id, "message_id": message_id}
            row = conn.execute(_find_message, params).mappings().first()
        return message_from_row(row) if row else None

    # -- state -------------------------------------------------------------------------------------

    def get_state(self, message_pk: int, user_id: str) -> FeedbackState:
        with self._read_one() as conn:
            row = conn.execute(_select_state, {"key_pk": message_pk, "key_user": user_id}).mappings().first()
        return FeedbackState(**row) if row else FeedbackState()

    # -- ingest ------------------------------------------------------------------------------------

    def ingest(
        self, items: Sequence[IncomingEvent], adapters: Mapping[str, ProviderAdapter], *,
        settle_seconds: float, now: datetime,
    ) -> list[Outcome]:
        """Append events, update states and enqueue deliveries in one transaction.

        A duplicate event id (seen before, or twice in this batch) is stored once and enqueued once.

        The states the batch touches are read under the write lock. SQLite's lock is already the whole database's,
        so there they are only read; PostgreSQL's writers wait only for the rows they share, so there each state is
        locked, and created if it does not exist yet. (Planning SQLite batches before the lock, and checking the
        plan under it, cost 5% of a batched event's CPU for no events/s on 2 cores: BENCHMARKS.md §17.)
        """
        due = now + timedelta(seconds=settle_seconds)
        keys = sorted({(i.message.pk, i.user_id) for i in items})
        # An amendment is checked against the events before it: such a batch is inserted one event at a time.
        amends = any(i.event.amends for i in items)
        with db.write(self.engine) as conn:
            # Every state row the batch touches, in one statement and one order for all batches: on PostgreSQL,
            # batches sharing rows queue up instead of deadlocking.
            current = self._sqlite_states.read(conn, keys) if self._sqlite_states else _lock_states(conn, keys)
            stored_pks = None if amends else _insert_events(conn, items, now)
            return _fold(conn, items, current, adapters, now, due, stored_pks)


class _SQLiteStates:
    """SQLite's read of a batch's state rows: one statement per number of messages, run as the driver's own SQL,
    its rows converted as SQLAlchemy would."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self._sql: dict[int, str] = {}  # by the number of messages: at most the largest batch
        self._converts = [(i, convert) for i, name in enumerate(STATE_COLUMNS)
                          if (convert := states.c[name].type.dialect_impl(dialect).result_processor(dialect, None))]

    def read(self, conn: Connection, keys: Sequence[Key]) -> dict[Key, FeedbackState]:
        pks = sorted({pk for pk, _ in keys})
        sql = self._sql.get(len(pks))
        if sql is None:
            marks = [bindparam(f"pk_{i}") for i in range(len(pks))]
            statement = select(*KEYED_STATE_COLUMNS).where(states.c.message_pk.in_(marks))
            sql = self._sql[len(pks)] = statement.compile(dialect=self.dialect).string
        found = {}
        for row in fetch_all(conn, sql, pks):
            values = list(row[2:])
            for position, convert in self._converts:
                values[position] = convert(values[position])
            found[(row[0], row[1])] = FeedbackState(*values)
        return {key: found.get(key, FeedbackState()) for key in keys}


def _fold(
    conn: Connection, items: Sequence[IncomingEvent], states: Mapping[Key, FeedbackState],
    adapters: Mapping[str, ProviderAdapter], now: datetime, due: datetime, stored_pks: dict[str, int] | None,
) -> list[Outcome]:
    """Fold ``items`` into ``states``, enqueue their deliveries and save the states that changed; the events'
    outcomes.

    - ``stored_pks`` given: ``{event_id: pk}`` of the events the transaction inserted; one not there is a duplicate.
    - ``stored_pks`` None (a batch with amendments): each event is checked and inserted in turn.
    """
    current, changed_keys, outcomes = dict(states), set(), []
    rows = outbox.RowBuffer(conn, now=now, due=due)
    pks = None if stored_pks is None else dict(stored_pks)
    for item in items:
        event = item.event
        key = (item.message.pk, item.user_id)
        if pks is None:
            problem = _check_amendment(conn, item)
            if problem:
                outcomes.append(Outcome(event.event_id, "rejected", {"amends": [problem]}, "invalid"))
                continue
            event_pk = _insert_events(conn, [item], now).get(event.event_id)
        else:
            event_pk = pks.pop(event.event_id, None)  # a repeat within the batch finds none
        if event_pk is None:
            outcomes.append(Outcome(event.event_id, "duplicate"))
            continue
        before, current[key] = current[key], apply_event(current[key], event)
        changed = current[key] != before
        if changed:
            changed_keys.add(key)
        outbox.enqueue(conn, adapters, item.message, item.user_id, event, event_pk, state_changed=changed, rows=rows)
        outcomes.append(Outcome(event.event_id, "accepted"))
    rows.flush()
    _save_states(conn, {key: current[key] for key in changed_keys})
    return outcomes


_select_message = select(messages).where(messages.c.id == bindparam("pk"))
SELECT_MESSAGES = select(messages).where(messages.c.id.in_(bindparam("pks", expanding=True)))
_find_message = select(messages).where(
    (messages.c.conversation_id == bindparam("conversation_id")) & (messages.c.message_id == bindparam("message_id"))
)


_STATE_KEY = (states.c.message_pk == bindparam("key_pk")) & (states.c.user_id == bindparam("key_user"))
_select_state = select(*[states.c[name] for name in STATE_COLUMNS]).where(_STATE_KEY)
EVENT_ROW_KEYS = tuple(column.key for column in events.c if not column.primary_key)  # what _event_row gives
_lock_states_stmt = DriverStatement(lambda dialect: db.insert_or_lock(
    dialect, states, ["message_pk", "user_id"], touch=[], keep=("copy_count",)
).returning(*KEYED_STATE_COLUMNS),
    keys=("message_pk", "user_id", "copy_count"))
_insert_events_stmt = DriverStatement(
    lambda dialect: db.insert_ignore(dialect, events, ["event_id"]).returning(events.c.id, events.c.event_id),
    keys=EVENT_ROW_KEYS,
)
# An upsert: one statement for all the rows, where an UPDATE runs once per row; on SQLite it creates the rows, which
# are read there, not locked (nor created) first.
_save_states_stmt = DriverStatement(
    lambda dialect: db.insert_or_lock(dialect, states, ["message_pk", "user_id"], touch=STATE_COLUMNS),
    keys=("message_pk", "user_id", *STATE_COLUMNS),
)
_select_amended = select(
    events.c.type, events.c.value, events.c.message_pk, events.c.user_id, events.c.amends
).where(events.c.event_id == bindparam("amends"))


def _lock_states(conn: Connection, keys: list[Key]) -> dict[Key, FeedbackState]:
    """(PostgreSQL) Create the missing state rows and lock all of them, in ``keys`` order, with one statement: an upsert
    whose no-op update takes the row lock (as SELECT ... FOR UPDATE would) and returns the current row."""
    rows = _lock_states_stmt.insert_returning(conn, [
        {"message_pk": pk, "user_id": user, "copy_count": 0} for pk, user in keys
    ])
    found = {(row["message_pk"], row["user_id"]): state_from_row(row) for row in rows}
    return {key: found[key] for key in keys}


def _save_states(conn: Connection, changed: Mapping[Key, FeedbackState]) -> None:
    """Write the final state of every changed row at once: nothing in the transaction reads them before."""
    if changed:
        _save_states_stmt.insert_many(conn, [
            {"message_pk": pk, "user_id": user, **state._asdict()}
            for (pk, user), state in changed.items()
        ])


def _event_row(item: IncomingEvent, now: datetime) -> dict[str, Any]:
    event = item.event
    return {
        "event_id": event.event_id, "message_pk": item.message.pk, "user_id": item.user_id,
        "type": str(event.type), "value": event.value, "reason": event.reason, "comment": event.comment,
        "text": event.text, "amends": event.amends, "occurred_at": event.occurred_at, "received_at": now,
    }


def _insert_events(conn: Connection, items: Sequence[IncomingEvent], now: datetime) -> dict[str, int]:
    """Insert events in multi-row statements, in batch order (ids ascend with it); the first row of each new
    event id wins, as it would one by one. ``{event_id: pk}`` of the rows inserted."""
    rows = _insert_events_stmt.insert_returning(conn, [_event_row(item, now) for item in items])
    return {row["event_id"]: row["id"] for row in rows}


def _check_amendment(conn: Connection, item: IncomingEvent) -> str | None:
    """An amendment must name an earlier vote of the same message and user, of the same type (and value:
    an event provider may be sent the amendment itself, and must not read a new rating into it)."""
    event = item.event
    if event.amends is None:
        return None
    row = conn.execute(_select_amended, {"amends": event.amends}).first()
    if row is None or row.message_pk != item.message.pk or row.user_id != item.user_id:
        return "No vote with this id on this message."
    if row.amends is not None:
        return "Amend the vote itself, not another amendment."
    if row.type != str(event.type):
        return f"The amended vote is of type {row.type!r}, not {str(event.type)!r}."
    if row.value != event.value:
        return f"The amended rating has the value {row.value}; an amendment repeats it."
    return None


def row_to_event(row: RowMapping) -> Event:
    return Event(
        pk=row["id"], event_id=row["event_id"], type=EventType(row["type"]), value=row["value"],
        reason=row["reason"], comment=row["comment"], text=row["text"], amends=row["amends"],
        occurred_at=row["occurred_at"],
    )


def state_from_row(row: RowMapping) -> FeedbackState:
    """The state held in a row's ``STATE_COLUMNS`` (the row may carry others, such as its key)."""
    return FeedbackState(**{name: row[name] for name in STATE_COLUMNS})


def message_from_row(row: RowMapping) -> Message:
    return Message(
        pk=row["id"], conversation_id=row["conversation_id"], message_id=row["message_id"],
        user_id=row["user_id"], input=row["input"], output=row["output"], refs=dict(row["refs"] or {}),
        created_at=row["created_at"],
    )
