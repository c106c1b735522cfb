"""What the deliveries of one claimed pass need to be mapped, read with a fixed number of statements (IN lists)
in one transaction, instead of two or three reads per delivery."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, select
from sqlalchemy.exc import NoResultFound

from . import outbox
from .models import Delivery, Event, FeedbackState
from .providers import DeliveryContext, Skip
from .schema import events, states
from .store import KEYED_STATE_COLUMNS, SELECT_MESSAGES, message_from_row, row_to_event, state_from_row

# By message, the primary key's first column: a row-value IN of (message, user) pairs made SQLite read every state.
_select_states = select(*KEYED_STATE_COLUMNS).where(
    states.c.message_pk.in_(bindparam("pks", expanding=True))
)
_select_events = select(events).where(events.c.id.in_(bindparam("pks", expanding=True)))
_select_amendments = select(events).where(events.c.amends.in_(bindparam("ids", expanding=True))).order_by(events.c.id)

# Per delivery: its context and (state deliveries) the last request delivered for its key; or the exception
# reading it raised, which the worker handles as it would have inside that delivery.
Prepared = tuple[DeliveryContext, dict[str, Any] | None] | Exception


def load_contexts(conn: Connection, deliveries: Sequence[Delivery], now: datetime) -> list[Prepared]:
    """The context of every delivery of a pass, in ``deliveries`` order."""
    pks = sorted({d.message_pk for d in deliveries})
    found = {row["id"]: message_from_row(row) for row in conn.execute(SELECT_MESSAGES, {"pks": pks}).mappings()}
    live = [d for d in deliveries if d.message_pk in found]
    state_keys = {(d.message_pk, d.user_id) for d in live if d.kind == "state"}
    state_of: dict[tuple[int, str], FeedbackState] = {}
    if state_keys:
        rows = conn.execute(_select_states, {"pks": sorted({pk for pk, _ in state_keys})}).mappings()
        state_of = {key: state_from_row(r) for r in rows if (key := (r["message_pk"], r["user_id"])) in state_keys}
    last = outbox.last_delivered_requests(conn, [d for d in live if d.kind == "state"])
    event_pks = sorted({d.event_pk for d in live if d.kind != "state" and d.event_pk is not None})
    event_of: dict[int, Event] = {}
    amendments: dict[str, list[Event]] = {}
    if event_pks:
        event_of = {row["id"]: row_to_event(row) for row in conn.execute(_select_events, {"pks": event_pks}).mappings()}
        ids = sorted({e.event_id for e in event_of.values()})
        for row in conn.execute(_select_amendments, {"ids": ids}).mappings():  # oldest first
            amendments.setdefault(row["amends"], []).append(row_to_event(row))

    prepared: list[Prepared] = []
    for d in deliveries:
        message = found.get(d.message_pk)
        if message is None:
            prepared.append(Skip("The message was purged."))
        elif d.kind == "state":
            state = state_of.get((d.message_pk, d.user_id), FeedbackState())
            context = DeliveryContext(message=message, user_id=d.user_id, now=now, state=state)
            prepared.append((context, last.get((d.provider, d.message_pk, d.user_id))))
        elif d.event_pk not in event_of:
            prepared.append(NoResultFound("No row was found when one was required"))
        else:
            event = event_of[d.event_pk]
            prepared.append((DeliveryContext(message=message, user_id=d.user_id, now=now, event=event,
                                             amendments=tuple(amendments.get(event.event_id, ()))), None))
    return prepared
