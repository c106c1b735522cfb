"""The durable outbox: one row per delivery to one provider, claimed by workers under a lease.

Claims are a single ``UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED) RETURNING`` statement:
on PostgreSQL concurrent workers skip each other's rows; on SQLite the statement runs inside a
``BEGIN IMMEDIATE`` transaction, so claims are serialised. Either way no row is claimed twice while its
lease is live, and results are written only by the lease owner.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Connection,
    Exists,
    Select,
    Update,
    bindparam,
    case,
    exists,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.orm import aliased

from . import db
from .driver_sql import DriverStatement
from .models import Delivery, DeliveryStatus, Event, EventType, Message
from .providers import ProviderAdapter
from .schema import events, outbox

PENDING, IN_FLIGHT = DeliveryStatus.PENDING.value, DeliveryStatus.IN_FLIGHT.value
DELIVERED, SKIPPED, FAILED = DeliveryStatus.DELIVERED.value, DeliveryStatus.SKIPPED.value, DeliveryStatus.FAILED.value

UNCHANGED_STATE = "The feedback state did not change."
SUPERSEDED = "Superseded by a later vote inside the settle window."
MERGED = "Merged into the pending vote it amends."
STALE_AMENDMENT = "The amended vote was replaced or retracted since."
COALESCED = "Coalesced into the pending delivery of this feedback state"
RETRY_STALE = "Not retried: a later vote was delivered since, and this one, sent after it, would undo it."

# Which earlier pending votes a new vote replaces, for "event" providers. A retract is never replaced by
# a vote: it clears the thumb and the rating, a later vote restores only one of them.
_SUPERSEDES = {
    EventType.THUMBS_UP: ("thumbs_up", "thumbs_down"),
    EventType.THUMBS_DOWN: ("thumbs_up", "thumbs_down"),
    EventType.RATING: ("rating",),
    EventType.RETRACT: ("thumbs_up", "thumbs_down", "rating", "retract"),
}
# The later votes that make a dead letter of each kind stale: those that replace it, and for a retract any
# vote at all (it would clear that vote too, not only the ones it was given to clear).
_LATER_REPLACING = {old: [new for new, replaces in _SUPERSEDES.items() if str(old) in replaces] for old in _SUPERSEDES}
_LATER_REPLACING[EventType.RETRACT] = list(_SUPERSEDES)


# The outbox rows ``enqueue`` writes, in the table's column order, which is the statements' parameter order: the
# rows are tuples of these (see ``RowBuffer``). A state delivery it opens has the key that joins later changes to it,
# and no error. (Each column left out is a None not bound: sqlite3 binds one more slowly than a text, db.py.)
ROW_KEYS = ("provider", "kind", "message_pk", "user_id", "event_pk", "status", "attempts", "next_attempt_at",
            "last_error", "created_at", "updated_at")
OPEN_KEYS = ("provider", "kind", "message_pk", "user_id", "event_pk", "status", "coalesce_key", "attempts",
             "next_attempt_at", "created_at", "updated_at")
_EVENT_PK, _COALESCE_KEY = OPEN_KEYS.index("event_pk"), OPEN_KEYS.index("coalesce_key")
_insert_rows = DriverStatement(lambda dialect: insert(outbox), keys=ROW_KEYS, tuples=True)
_open_state_deliveries = DriverStatement(lambda dialect: db.insert_or_lock(
    dialect, outbox, ["coalesce_key"], touch=["updated_at"]
).returning(outbox.c.id, outbox.c.event_pk, outbox.c.coalesce_key), keys=OPEN_KEYS, tuples=True)
_KEY = ((outbox.c.provider == bindparam("k_provider")) & (outbox.c.message_pk == bindparam("k_message"))
        & (outbox.c.user_id == bindparam("k_user")))
_vote_of_amendment = select(events.c.id).where(events.c.event_id == bindparam("amends")).scalar_subquery()
# Locked, so a worker cannot claim the vote and read its amendments before this one is committed.
_pending_vote_delivery = select(outbox.c.id).where(
    (outbox.c.provider == bindparam("k_provider")) & (outbox.c.event_pk == _vote_of_amendment)
    & (outbox.c.status == PENDING)
).with_for_update(of=outbox)
_vote_replaced = select(exists(select(events.c.id).where(
    (events.c.message_pk == bindparam("k_message")) & (events.c.user_id == bindparam("k_user"))
    & events.c.amends.is_(None) & events.c.type.in_(bindparam("kinds", expanding=True))
    & (events.c.id > _vote_of_amendment)
)))
# The pending rows of the key are few, and each one's event is read by its primary key: a scalar subquery, which
# no planner turns into a join. (An IN over the key's events read every vote ever given on the answer, at every
# supersede; a correlated EXISTS let PostgreSQL without statistics read every vote of the kind in the store.)
_kind_of_event = select(events.c.type).where(
    (events.c.id == outbox.c.event_pk) & events.c.amends.is_(None)
).scalar_subquery()
_supersede_by_kinds = {kinds: DriverStatement(lambda dialect, kinds=kinds: update(outbox).where(
    _KEY & (outbox.c.status == PENDING) & or_(*(_kind_of_event == kind for kind in kinds))  # no expanding IN
).values(status=SKIPPED, last_error=SUPERSEDED, updated_at=bindparam("k_now")),
    keys=("k_provider", "k_message", "k_user", "k_now")) for kinds in _SUPERSEDES.values()}


def _supersede(kinds: tuple[str, ...]) -> DriverStatement:
    """Pending deliveries of earlier votes of ``kinds`` (one statement per set: executemany takes no
    expanding IN) become skipped."""
    return _supersede_by_kinds[kinds]


class RowBuffer:
    """The outbox writes of one ingest transaction, run together by ``flush()``: the supersedes (one
    executemany per set of vote types), then the state deliveries opened or joined (one multi-row upsert),
    then the plain inserts (one multi-row insert, with the coalesced skips the upsert revealed).

    Every statement ``enqueue`` runs reads and writes only the rows of one (message, user), and a pending
    write is not in the table yet: so ``before()``, called before each event's rows, flushes when that event's
    (message, user) has writes waiting here; the writes of different ones may wait until the end of the batch.

    Rows are made here, as tuples of ``ROW_KEYS`` (or ``OPEN_KEYS``), with the batch's two times converted for the
    driver once.
    """

    def __init__(self, conn: Connection, *, now: datetime, due: datetime) -> None:
        self.conn = conn
        self._at = now  # for the supersedes, whose parameters are converted as they are run
        convert = _insert_rows.converter(conn, "created_at")
        self._now, self._due = convert(now), convert(due)
        self._event: tuple[int, str, int] = (0, "", 0)  # the (message, user, event row) whose rows are made
        self._rows: list[tuple[Any, ...]] = []
        self._supersedes: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        self._opens: list[tuple[Any, ...]] = []
        self.keys: set[tuple[int, str]] = set()  # the (message, user) of the writes waiting

    def before(self, message_pk: int, user_id: str, event_pk: int) -> None:
        """The rows made next are the event's stored as row ``event_pk``."""
        key = (message_pk, user_id)
        if key in self.keys:
            self.flush()
        self.keys.add(key)
        self._event = (message_pk, user_id, event_pk)

    def skip(self, provider: str, kind: str, reason: str) -> None:
        message_pk, user_id, event_pk = self._event
        self._rows.append(
            (provider, kind, message_pk, user_id, event_pk, SKIPPED, 0, self._now, reason, self._now, self._now))

    def pending(self, provider: str) -> None:
        """A delivery of the event itself, due when the settle window ends."""
        message_pk, user_id, event_pk = self._event
        self._rows.append(
            (provider, "event", message_pk, user_id, event_pk, PENDING, 0, self._due, None, self._now, self._now))

    def open_state(self, provider: str) -> None:
        """The pending delivery of the (message, user)'s state opened, or the one already open joined."""
        message_pk, user_id, event_pk = self._event
        self._opens.append((provider, "state", message_pk, user_id, event_pk, PENDING,
                            coalesce_key(provider, message_pk, user_id), 0, self._due, self._now, self._now))

    def supersede(self, provider: str, kinds: tuple[str, ...]) -> None:
        message_pk, user_id, _ = self._event
        self._supersedes.setdefault(kinds, []).append(
            {"k_provider": provider, "k_message": message_pk, "k_user": user_id, "k_now": self._at})

    def flush(self) -> None:
        conn, rows = self.conn, self._rows
        for kinds, params in self._supersedes.items():
            _supersede(kinds).executemany(conn, params)
        if self._opens:
            # Opens the pending delivery of each state, or joins (and locks, until this transaction commits)
            # the one already open, so no worker claims it before it can see this change.
            opened = {r["coalesce_key"]: r for r in _open_state_deliveries.insert_returning(conn, self._opens)}
            for row in self._opens:
                pending = opened[row[_COALESCE_KEY]]
                if pending["event_pk"] != row[_EVENT_PK]:
                    # A pending delivery of this state exists: it will carry this change. Say so on the event.
                    rows.append((*row[:_EVENT_PK + 1], SKIPPED, 0, self._now,
                                 f"{COALESCED} (#{pending['id']})", self._now, self._now))
        _insert_rows.insert_many(conn, rows)
        self._rows, self._supersedes, self._opens, self.keys = [], {}, [], set()


def enqueue(
    conn: Connection, adapters: Mapping[str, ProviderAdapter], message: Message, user_id: str, event: Event,
    event_pk: int, *, state_changed: bool, rows: RowBuffer,
) -> None:
    """Record what each provider should do about ``event``, stored as row ``event_pk``: a pending delivery (due
    when its settle window ends), or a skip with its reason.

    Statements are prebuilt and run with parameters: this is on the request path of every event. The writes go
    to ``rows``, which the caller flushes; ``conn`` is read only for amendments.
    """
    rows.before(message.pk, user_id, event_pk)  # first: it may flush writes the amendment reads below must see
    stale: bool | None = None  # whether the vote an amendment names has been replaced since; asked once
    for name, adapter in adapters.items():
        reason = adapter.skip_reason(event, message)
        if reason is None and adapter.mode == "state" and not state_changed:
            reason = UNCHANGED_STATE
        if reason is None and adapter.mode == "event" and event.amends:
            if stale is None:
                replaced_by = [str(kind) for kind, replaces in _SUPERSEDES.items() if str(event.type) in replaces]
                stale = conn.execute(_vote_replaced, {
                    "k_message": message.pk, "k_user": user_id, "kinds": replaced_by, "amends": event.amends,
                }).scalar_one()
            if stale:
                reason = STALE_AMENDMENT
            elif conn.execute(_pending_vote_delivery, {"k_provider": name, "amends": event.amends}).first():
                reason = MERGED
        if reason is not None:
            rows.skip(name, adapter.mode, reason)
        elif adapter.mode == "state":
            rows.open_state(name)
        else:
            if event.amends is None and event.type in _SUPERSEDES:
                rows.supersede(name, _SUPERSEDES[event.type])
            rows.pending(name)


def coalesce_key(provider: str, message_pk: int, user_id: str) -> str:
    return f"{provider}\x1f{message_pk}\x1f{user_id}"


def _waiting(now: BindParameter[Any] | None) -> Exists:
    """True for a row that must wait for another row of its (provider, message, user): an older one not
    finished yet (pending or in flight, whatever its lease or due time, even if another worker's claim of
    it is not committed yet), or any one in flight under a live lease (every lease when ``now`` is None)."""
    other = aliased(outbox)
    in_flight = other.c.status == IN_FLIGHT
    if now is not None:
        in_flight &= other.c.lease_until >= now
    older_unfinished = (other.c.id < outbox.c.id) & other.c.status.in_((PENDING, IN_FLIGHT))
    # Both cases are unfinished rows: said once more on its own, the status is a key an index can seek on.
    return exists().where(
        (other.c.provider == outbox.c.provider) & (other.c.message_pk == outbox.c.message_pk)
        & (other.c.user_id == outbox.c.user_id) & other.c.status.in_((PENDING, IN_FLIGHT))
        & (other.c.id != outbox.c.id) & (older_unfinished | in_flight)
    )


def _due(status: str, due: ColumnElement[bool]) -> Select[tuple[int]]:
    """Rows of one status due for a claim, oldest due first: the order of ``ix_feedback_outbox_due``, so the
    database walks that index and stops at the limit instead of testing and sorting every due row."""
    return (
        select(outbox.c.id)
        .where(outbox.c.status == status, due, outbox.c.provider.in_(bindparam("c_providers", expanding=True)),
               ~_waiting(bindparam("c_now")))
        .order_by(outbox.c.next_attempt_at, outbox.c.id)
        .limit(bindparam("c_limit"))
        .with_for_update(skip_locked=True, of=outbox)
    )


def _take(due: Select[tuple[int]]) -> Update:
    return (
        update(outbox)
        .where(outbox.c.id.in_(due.scalar_subquery()))
        .values(
            status=IN_FLIGHT, lease_owner=bindparam("c_owner"), lease_until=bindparam("c_lease_until"),
            attempts=outbox.c.attempts + 1, coalesce_key=None, updated_at=bindparam("c_now"),
        )
        .returning(
            outbox.c.id, outbox.c.provider, outbox.c.kind, outbox.c.message_pk, outbox.c.user_id,
            outbox.c.event_pk, outbox.c.attempts, outbox.c.lease_owner,
        )
    )


# Built once: constructing them (the self-join in ``_waiting``) cost more than running them, at every claim.
# Two statements rather than one with an OR of both cases: with the OR no index gives the order, and a claim
# read and sorted the whole backlog (235 ms for 4 rows of a 74,000-row backlog on SQLite, inside its write lock).
_claim_expired = _take(_due(IN_FLIGHT, outbox.c.lease_until < bindparam("c_now")))
_claim_pending = _take(_due(PENDING, outbox.c.next_attempt_at <= bindparam("c_now")))


def claim(
    conn: Connection, *, owner: str, providers: list[str], limit: int, now: datetime, lease_seconds: float
) -> list[Delivery]:
    """Take up to ``limit`` rows whose lease expired, then due rows, for ``providers`` under a new lease.

    Rows of one (provider, message, user) are taken one at a time, oldest first (see ``_waiting``), so a
    provider never sees an older state overtake a newer one, nor one delivery sent twice side by side.
    """
    params = {
        "c_providers": providers, "c_now": now, "c_limit": limit, "c_owner": owner,
        "c_lease_until": now + timedelta(seconds=lease_seconds),
    }
    rows = conn.execute(_claim_expired, params).all()
    if len(rows) < limit:
        rows += conn.execute(_claim_pending, {**params, "c_limit": limit - len(rows)}).all()
    return [
        Delivery(pk=r.id, provider=r.provider, kind=r.kind, message_pk=r.message_pk, user_id=r.user_id,
                 event_pk=r.event_pk, attempts=r.attempts, lease_owner=r.lease_owner)
        for r in sorted(rows, key=lambda r: r.id)
    ]


def finish(
    conn: Connection, delivery: Delivery, *, status: DeliveryStatus, now: datetime,
    request: dict[str, Any] | None = None, response: dict[str, Any] | None = None,
    error: str | None = None, next_attempt_at: datetime | None = None,
) -> bool:
    """Record the outcome of a claimed delivery. False if the lease was lost to another worker."""
    values = {"request": request, "response": response, "error": error, "next_attempt_at": next_attempt_at}
    return not finish_many(conn, [(delivery, status, values)], now=now)


_ours = select(outbox.c.id).where(
    outbox.c.id.in_(bindparam("f_ids", expanding=True)) & (outbox.c.status == IN_FLIGHT)
    & (outbox.c.lease_owner == bindparam("f_owner"))
).with_for_update(of=outbox)
# The SET clause comes from each executemany's parameter names (column names), the WHERE from these.
_finish_row = update(outbox).where(
    (outbox.c.id == bindparam("f_id")) & (outbox.c.status == IN_FLIGHT) & (outbox.c.lease_owner == bindparam("f_owner"))
)


# A delivery, how it ended, and what to record (``finish``'s keyword arguments).
Outcome = tuple[Delivery, DeliveryStatus, dict[str, Any]]


def finish_many(conn: Connection, outcomes: list[Outcome], *, now: datetime) -> list[Delivery]:
    """Record the outcomes of a pass as ``finish`` would one by one (``values``: its keyword arguments), with
    one read and an executemany per shape of values. Returns the deliveries whose lease was lost (not written)."""
    kept: set[int] = set()
    by_owner: dict[str | None, list[int]] = {}
    for delivery, _, _ in outcomes:
        by_owner.setdefault(delivery.lease_owner, []).append(delivery.pk)
    for owner, pks in by_owner.items():  # locked (PostgreSQL) so no claim takes them over until we commit
        kept.update(conn.execute(_ours, {"f_ids": sorted(pks), "f_owner": owner}).scalars())
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for delivery, status, values in sorted(outcomes, key=lambda o: o[0].pk):
        if delivery.pk not in kept:
            continue
        row: dict[str, Any] = {
            "f_id": delivery.pk, "f_owner": delivery.lease_owner, "status": status.value, "updated_at": now,
            "lease_until": None, "last_error": values.get("error"), "request": values.get("request"),
            "response": values.get("response"),
        }
        if status is DeliveryStatus.DELIVERED:
            row["delivered_at"] = now
        if values.get("next_attempt_at") is not None:
            row["next_attempt_at"] = values["next_attempt_at"]
        groups.setdefault(tuple(row), []).append(row)
    for rows in groups.values():
        conn.execute(_finish_row, rows)
    return [delivery for delivery, _, _ in outcomes if delivery.pk not in kept]


def reclaim_expired(conn: Connection, now: datetime) -> int:
    """Put rows whose worker died (lease expired) back to pending. Run when a worker starts."""
    result = conn.execute(
        update(outbox)
        .where((outbox.c.status == IN_FLIGHT) & (outbox.c.lease_until < now))
        .values(status=PENDING, lease_until=None, lease_owner=None, next_attempt_at=now, updated_at=now)
    )
    return result.rowcount


def release(conn: Connection, deliveries: list[Delivery], *, now: datetime) -> int:
    """Give claimed rows that were never sent back to pending, their claim not counted as an attempt (a worker
    stopping with rows it had claimed ahead). Rows whose lease was lost are left alone."""
    if not deliveries:
        return 0
    by_owner: dict[str | None, list[int]] = {}
    for delivery in deliveries:
        by_owner.setdefault(delivery.lease_owner, []).append(delivery.pk)
    released = 0
    for owner, pks in by_owner.items():
        released += conn.execute(
            update(outbox)
            .where(outbox.c.id.in_(pks) & (outbox.c.status == IN_FLIGHT) & (outbox.c.lease_owner == owner))
            .values(status=PENDING, lease_owner=None, lease_until=None, attempts=outbox.c.attempts - 1,
                    updated_at=now)
        ).rowcount
    return released


# Narrowed by provider and message, which ``ix_feedback_outbox_key_status`` seeks on; the caller keeps its keys.
# A row-value IN of whole keys is not an index search in SQLite: it read every delivered row, at every claim.
# "Delivered" ranks first and is tested outside: as a condition inside, a PostgreSQL planner whose statistics
# predate the deliveries (none delivered yet) walked ix_feedback_outbox_due's delivered rows, all of them.
_ranked_delivered = select(
    outbox.c.provider, outbox.c.message_pk, outbox.c.user_id, outbox.c.request, outbox.c.status,
    func.row_number().over(
        partition_by=(outbox.c.provider, outbox.c.message_pk, outbox.c.user_id),
        order_by=(case((outbox.c.status == DELIVERED, 0), else_=1), outbox.c.delivered_at.desc(), outbox.c.id.desc()),
    ).label("rank"),
).where(
    outbox.c.provider.in_(bindparam("l_providers", expanding=True))
    & outbox.c.message_pk.in_(bindparam("l_pks", expanding=True)) & (outbox.c.kind == "state")
).subquery()
_last_delivered = select(
    _ranked_delivered.c.provider, _ranked_delivered.c.message_pk, _ranked_delivered.c.user_id,
    _ranked_delivered.c.request,
).where((_ranked_delivered.c.rank == 1) & (_ranked_delivered.c.status == DELIVERED))


def last_delivered_requests(
    conn: Connection, deliveries: list[Delivery]
) -> dict[tuple[str, int, str], dict[str, Any] | None]:
    """The request last delivered for each state delivery's (provider, message_pk, user_id), with one statement
    (a state that maps to the same request again is skipped)."""
    keys = {(d.provider, d.message_pk, d.user_id) for d in deliveries}
    if not keys:
        return {}
    params = {"l_providers": sorted({k[0] for k in keys}), "l_pks": sorted({k[1] for k in keys})}
    rows = conn.execute(_last_delivered, params)
    return {key: r.request for r in rows if (key := (r.provider, r.message_pk, r.user_id)) in keys}


class Retried(NamedTuple):
    revived: int  # back to pending
    stale: int  # skipped instead: a later vote was delivered, and this one would undo it


def retry_failed(
    conn: Connection, now: datetime, *, provider: str | None = None, ids: list[int] | None = None
) -> Retried:
    """Dead letters back to pending with a fresh attempt budget, except the votes an event provider has
    since been sent a later answer to: sent now, after it, the old vote would replace the newer one."""
    where = outbox.c.status == FAILED
    if provider:
        where &= outbox.c.provider == provider
    if ids:
        where &= outbox.c.id.in_(ids)
    stale = conn.execute(update(outbox).where(where & _undoes_a_later_delivery()).values(
        status=SKIPPED, last_error=RETRY_STALE, updated_at=now
    )).rowcount
    revived = conn.execute(update(outbox).where(where).values(
        status=PENDING, attempts=0, next_attempt_at=now, last_error=None, updated_at=now
    )).rowcount
    return Retried(revived, stale)


def _undoes_a_later_delivery() -> ColumnElement[bool]:
    """An event row of a vote (or its amendment, or a retract) with a later vote of its (provider, message,
    user) delivered or being sent, one that replaces it (``_SUPERSEDES``) or that a retract would clear."""
    later, mine, theirs = aliased(outbox), aliased(events), aliased(events)
    replaced = or_(*((mine.c.type == str(old)) & theirs.c.type.in_([str(new) for new in newer])
                     for old, newer in _LATER_REPLACING.items()))
    return (outbox.c.kind == "event") & exists().where(
        (later.c.provider == outbox.c.provider) & (later.c.message_pk == outbox.c.message_pk)
        & (later.c.user_id == outbox.c.user_id) & (later.c.kind == "event") & (later.c.id > outbox.c.id)
        & later.c.status.in_((DELIVERED, IN_FLIGHT))
        & (mine.c.id == outbox.c.event_pk) & (theirs.c.id == later.c.event_pk) & replaced
    )


def counts(conn: Connection) -> dict[str, dict[str, int]]:
    """``{provider: {status: n}}`` with every status present."""
    rows = conn.execute(
        select(outbox.c.provider, outbox.c.status, func.count()).group_by(outbox.c.provider, outbox.c.status)
    ).all()
    result: dict[str, dict[str, int]] = {}
    for provider, status, n in rows:
        result.setdefault(provider, {s.value: 0 for s in DeliveryStatus})[status] = n
    return result


def next_due(conn: Connection, providers: list[str]) -> datetime | None:
    """When the earliest pending row becomes due, so an idle worker knows how long to sleep. Rows waiting
    for another row of their (provider, message, user) do not count: that one's due time (or its worker's
    finishing) decides, and the worker's poll interval covers the latter."""
    return conn.execute(
        select(func.min(outbox.c.next_attempt_at)).where(
            (outbox.c.status == PENDING) & outbox.c.provider.in_(providers) & ~_waiting(None)
        )
    ).scalar()


