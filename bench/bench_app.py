"""The app the HTTP benchmarks serve with gunicorn: the bridge, plus the floors it is measured against.

    gunicorn --worker-class gthread 'bench_app:create_app()'    (with bench/ and backend/ on PYTHONPATH)

Configured from the environment, so the benchmark driver and every gunicorn worker build the same app:
``BENCH_DATABASE_URL`` (the bridge's database), ``BENCH_WORKER`` (``1``: run the delivery worker) and
``BENCH_ACCOUNTING`` (``1``: each process adds up its requests' CPU, and their time holding SQLite's write gate, per
path, served at ``GET /bench-accounting``).
Two providers, as ``bench/ingest_inprocess.py`` has them: the ``log`` adapter once as a state provider and
once as an event provider, so every event writes both kinds of outbox rows.

- ``POST /floor``: the same body read and parsed as JSON, nothing stored: what Flask and gunicorn cost.
- ``POST /floor-checked``: the same, plus what the bridge must do before it may store anything: each event
  validated by its schema, the tokens verified and their messages read (one read, as ingest does). Nothing
  stored: what is left of ``/feedback/events`` above this is the transaction.
- ``POST /floor-commit``: ``/floor`` plus one row inserted and committed in the bridge's database, through
  the bridge's engine: the least any endpoint that stores its request durably can cost.
- ``POST /floor-stored``: ``/floor-checked``, then the rows ingest writes for the benchmarks' events (thumbs up
  and down, each event of a batch on another answer) written in the bridge's tables, with all their indexes,
  by the DB-API directly in one transaction. The same rows by the plainest code: none of the bridge's general
  logic (amendments, ratings, the state read under lock that decides whether a state changed).
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import os
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

from flask import Flask, g, has_request_context, jsonify, request
from sqlalchemy import Column, DateTime, Integer, MetaData, Table, insert
from werkzeug.exceptions import BadRequest

from feedback_bridge import FeedbackBridge, db
from feedback_bridge.outbox import coalesce_key
from feedback_bridge.schema import Id
from feedback_bridge.schemas import EventSchema
from feedback_bridge.write_gate import WriteGate

SECRET_KEY = "bench-secret"
PROVIDERS = {"log": {"level": "DEBUG"},
             "events": {"adapter": "feedback_bridge.providers.log:LogAdapter", "mode": "event", "level": "DEBUG"}}

_floor_metadata = MetaData()
floor_rows = Table("bench_floor", _floor_metadata, Column("id", Id, primary_key=True, autoincrement=True),
                   Column("events", Integer, nullable=False), Column("received_at", DateTime, nullable=False))


def create_app() -> Flask:
    logging.basicConfig(level=logging.WARNING)
    app = Flask("bench_app", instance_path=os.environ.get("BENCH_INSTANCE", "/tmp/feedback-bench"))
    app.config.update(
        SECRET_KEY=SECRET_KEY, FEEDBACK_DATABASE_URL=os.environ["BENCH_DATABASE_URL"],
        FEEDBACK_WORKER=os.environ.get("BENCH_WORKER") == "1", FEEDBACK_PROVIDERS=PROVIDERS,
        # Load from one address at thousands of requests a minute: the rate limits would answer most with 429.
        FEEDBACK_RATE_LIMIT_IP="", FEEDBACK_RATE_LIMIT_TOKEN="",
    )
    bridge = FeedbackBridge(app)
    runtime = bridge.get_runtime(app)
    engine = runtime.engine
    event_schema = EventSchema()
    with db.write(engine) as conn:
        _floor_metadata.create_all(conn)
    if os.environ.get("BENCH_ACCOUNTING") == "1":
        _account_requests(app)

    @app.post("/floor")
    def floor():
        return jsonify({"received": len(json.loads(request.get_data())["events"])})

    def checked() -> tuple[list[dict], dict]:
        """The body's events validated, and each token's (message, user id); ``BadRequest`` if one is refused."""
        events = [event_schema.load(event) for event in json.loads(request.get_data())["events"]]
        resolved = runtime.resolve_tokens(event["token"] for event in events)
        if any(isinstance(result, Exception) for result in resolved.values()):
            raise BadRequest("a token did not resolve")
        return events, resolved

    @app.post("/floor-checked")
    def floor_checked():
        events, _ = checked()
        return jsonify({"received": len(events)})

    @app.post("/floor-commit")
    def floor_commit():
        received = len(json.loads(request.get_data())["events"])
        with db.write(engine) as conn:
            conn.execute(insert(floor_rows), {"events": received, "received_at": datetime.now(timezone.utc)})
        return jsonify({"received": received})

    @app.post("/floor-stored")
    def floor_stored():
        events, resolved = checked()
        with db.write(engine) as conn:
            stored = _store_directly(conn, [(event, *resolved[event["token"]]) for event in events])
        results = [{"id": event["id"], "status": "accepted" if event["id"] in stored else "duplicate"}
                   for event in events]
        return jsonify({"results": results, "accepted": len(stored), "duplicate": len(events) - len(stored),
                        "rejected": 0})

    return app


def _account_requests(app: Flask) -> None:
    """Add up, per path, the requests this process served, the CPU time of their threads and their wall time,
    from the first ``before_request`` to the last ``teardown_request`` (the app's own work: gunicorn's reading
    of the request and writing of the response are left out, alike for every path). ``GET /bench-accounting``
    answers this process's totals, so a benchmark that interleaves two paths in one load can compare what each
    cost while the machine was the same for both."""
    totals: dict[str, dict[str, float]] = {}
    lock = threading.Lock()
    _time_write_gate_holds()

    @app.before_request
    def start() -> None:
        g.bench_started = time.thread_time(), time.perf_counter()
        g.bench_lock_s = 0.0

    @app.teardown_request
    def account(_error: BaseException | None) -> None:
        if "bench_started" not in g or request.path == "/bench-accounting":
            return
        cpu, wall = time.thread_time() - g.bench_started[0], time.perf_counter() - g.bench_started[1]
        with lock:
            path = totals.setdefault(request.path, {"requests": 0, "cpu_s": 0.0, "wall_s": 0.0, "lock_s": 0.0})
            path["requests"] += 1
            path["cpu_s"] += cpu
            path["wall_s"] += wall
            path["lock_s"] += g.bench_lock_s

    @app.get("/bench-accounting")
    def accounting():
        with lock:
            return jsonify({"pid": os.getpid(), "paths": totals})


def _time_write_gate_holds() -> None:
    """Add to ``g.bench_lock_s`` the time a request holds SQLite's write gate (``write_gate.WriteGate``): where one
    writer at a time binds rather than the CPU, events/s follows this. Every ``WriteGate`` of the process, once."""
    hold = WriteGate.hold
    if getattr(hold, "bench_timed", False):
        return

    @contextmanager
    def timed_hold(self: WriteGate, *args: Any, **kwargs: Any) -> Iterator[None]:
        with hold(self, *args, **kwargs):
            started = time.perf_counter()
            try:
                yield
            finally:
                if has_request_context() and "bench_lock_s" in g:
                    g.bench_lock_s += time.perf_counter() - started

    timed_hold.bench_timed = True  # type: ignore[attr-defined]
    WriteGate.hold = timed_hold  # type: ignore[method-assign]


_INSERT_EVENTS = ("INSERT INTO feedback_events (event_id, message_pk, user_id, type, occurred_at, received_at) "
                  "VALUES {values} ON CONFLICT (event_id) DO NOTHING RETURNING id, event_id")
_SUPERSEDE = ("UPDATE feedback_outbox SET status = 'skipped', last_error = 'Superseded', updated_at = ? "
              "WHERE provider = 'events' AND message_pk = ? AND user_id = ? AND status = 'pending'")
_OPEN_STATE_DELIVERIES = (
    "INSERT INTO feedback_outbox (provider, kind, message_pk, user_id, event_pk, status, coalesce_key, attempts, "
    "next_attempt_at, created_at, updated_at) VALUES {values} "
    "ON CONFLICT (coalesce_key) DO UPDATE SET updated_at = excluded.updated_at RETURNING event_pk")
_INSERT_DELIVERY = (
    "INSERT INTO feedback_outbox (provider, kind, message_pk, user_id, event_pk, status, last_error, attempts, "
    "next_attempt_at, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?)")
_SAVE_STATE = (
    "INSERT INTO feedback_states (message_pk, user_id, vote, vote_event_id, copy_count, updated_at) "
    "VALUES (?, ?, ?, ?, 0, ?) ON CONFLICT (message_pk, user_id) DO UPDATE SET vote = excluded.vote, "
    "vote_event_id = excluded.vote_event_id, updated_at = excluded.updated_at")


@functools.cache  # a statement per batch size: numbered once, as the bridge compiles its statements once
def _numbered(text: str) -> str:
    """``text`` with PostgreSQL's own $1, $2 ... for psycopg's RawCursor, as the bridge's driver SQL sends them."""
    numbers = itertools.count(1)
    return re.sub(r"\?", lambda _: f"${next(numbers)}", text)


def _store_directly(conn, items) -> set[str]:
    """The rows ingest writes for ``items``, (validated event, message, user id) of thumbs up or down with each
    message once, as the benchmarks send them: the event; earlier pending votes to the event provider skipped,
    and a pending delivery of this one; the state provider's pending delivery opened, or joined and the join
    recorded as a skipped row; the state. Five statements. Returns the ids of the events stored (not seen before)."""
    sqlite = conn.dialect.name == "sqlite"
    now = datetime.now(timezone.utc)
    stamp = now.replace(tzinfo=None).isoformat(" ", "microseconds") if sqlite else now  # as UTCDateTime binds

    def run(text: str, params: list, many: bool = False) -> list:
        text = text if sqlite else _numbered(text)
        if many:
            cursor.executemany(text, params)
            return []
        cursor.execute(text, params)
        return cursor.fetchall()

    def rows_of(width: int) -> str:
        return ", ".join(["(" + ", ".join(["?"] * width) + ")"] * len(items))

    # The DB-API cursor of this transaction's connection; psycopg's RawCursor does not parse the statement for
    # placeholders (its default cursor does, on every call for statements of more than 50 parameters).
    connection = conn.connection.dbapi_connection
    cursor = connection.cursor() if sqlite else conn.dialect.loaded_dbapi.RawCursor(connection)
    pks = {event_id: pk for pk, event_id in run(_INSERT_EVENTS.format(values=rows_of(6)), [
        value for event, message, user in items
        for value in (event["id"], message.pk, user, event["type"], stamp, stamp)])}
    items = [(event, message, user) for event, message, user in items if event["id"] in pks]
    if not items:  # all seen before
        return set()
    keyed = [(message.pk, user, pks[event["id"]]) for event, message, user in items]
    run(_SUPERSEDE, [(stamp, pk, user) for pk, user, _ in keyed], many=True)
    opened = {pk for (pk,) in run(_OPEN_STATE_DELIVERIES.format(values=rows_of(11)), [
        value for pk, user, event_pk in keyed
        for value in ("log", "state", pk, user, event_pk, "pending", coalesce_key("log", pk, user), 0,
                      stamp, stamp, stamp)])}
    run(_INSERT_DELIVERY, [("events", "event", pk, user, event_pk, "pending", None, stamp, stamp, stamp)
                           for pk, user, event_pk in keyed]
        + [("log", "state", pk, user, event_pk, "skipped", "Coalesced", stamp, stamp, stamp)
           for pk, user, event_pk in keyed if event_pk not in opened], many=True)
    run(_SAVE_STATE, [(message.pk, user, event["type"][len("thumbs_"):], event["id"], stamp)
                      for event, message, user in items], many=True)
    cursor.close()
    return set(pks)
