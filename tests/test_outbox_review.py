"""Review of the store, outbox and worker: ordering per (provider, message, user), supersede and amendment
rules for event providers, and the races PostgreSQL allows between ingest batches and workers."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import Connection, Engine, create_engine, event, select, text

from conftest import register, runtime
from feedback_bridge import CredentialsError, DeliveryStatus, RetryableDeliveryError
from feedback_bridge import db as fdb
from feedback_bridge import outbox as ob
from feedback_bridge.maintenance import purge_older_than
from feedback_bridge.models import FeedbackState
from feedback_bridge.providers import DeliveryContext
from feedback_bridge.schema import events, messages, metadata, outbox
from feedback_bridge.worker import Worker, WorkerSettings
from support import RecordingAdapter, statements_run
from support import event as make_event

LATER = timedelta(minutes=1)


class AmendsRecorder(RecordingAdapter):
    """An event provider whose requests say which vote an amendment amends, as a real mapping must."""

    def __init__(self, name: str | None = None) -> None:
        super().__init__(name, mode="event")

    def build_request(self, context: DeliveryContext) -> dict[str, Any]:
        request = super().build_request(context)
        assert context.event is not None
        request["event"]["amends"] = context.event.amends
        return request


def post(app: Flask, *evs: dict[str, Any]) -> dict[str, Any]:
    response = app.test_client().post("/feedback/events", json={"events": list(evs)})
    assert response.status_code == 200, response.json
    return response.json


def outbox_rows(app: Flask, provider: str | None = None) -> list[dict[str, Any]]:
    query = select(outbox).order_by(outbox.c.id)
    if provider:
        query = query.where(outbox.c.provider == provider)
    with fdb.read(runtime(app).engine) as conn:
        return [dict(r) for r in conn.execute(query).mappings()]


def event_pk(app: Flask, event_id: str) -> int:
    with fdb.read(runtime(app).engine) as conn:
        return conn.execute(select(events.c.id).where(events.c.event_id == event_id)).scalar_one()


def state_of(app: Flask, message_id: str = "m-1", user_id: str = "alice@example.com") -> FeedbackState:
    store = runtime(app).store
    message = store.find_message("c-1", message_id)
    assert message is not None
    return store.get_state(message.pk, user_id)


def sent_events(adapter: RecordingAdapter) -> list[tuple[str, str, str | None]]:
    return [(r["event"]["type"], r["event"]["id"], r["event"]["reason"]) for r in adapter.sent]


def wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


class PauseAt:
    """Holds the first thread that executes a statement matching ``match`` (right after it ran, still inside
    its transaction) until ``release`` is set, so a test can run something else in that window."""

    def __init__(self, engine: Engine, match: Callable[[str, Any], bool], *, when: str = "after") -> None:
        self.engine, self.match, self.identifier = engine, match, f"{when}_cursor_execute"
        self.reached, self.release = threading.Event(), threading.Event()
        self._lock = threading.Lock()
        event.listen(engine, self.identifier, self._hook)

    def _hook(self, conn: Connection, cursor: Any, statement: str, parameters: Any, context: Any,
              executemany: bool) -> None:
        with self._lock:
            if self.reached.is_set() or not self.match(statement, parameters):
                return
            self.reached.set()
        assert self.release.wait(30), "the test never released the paused statement"

    def remove(self) -> None:
        self.release.set()
        event.remove(self.engine, self.identifier, self._hook)


@contextmanager
def in_thread(target: Callable[[], Any]) -> Iterator[dict[str, Any]]:
    """Run ``target`` in a thread; on exit join it and re-raise what it raised. ``box["result"]`` holds its result."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["result"] = target()
        except BaseException as exc:  # re-raised in the test's thread
            box["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    try:
        yield box
    finally:
        thread.join(60)
        assert not thread.is_alive()
    if "error" in box:
        raise box["error"]


# The pg_* tests use conftest's `pg_url`: these races need concurrent writers, which SQLite's single write
# lock rules out.


def lock_waiters(engine: Engine) -> int:
    """How many sessions of the test database are waiting for a lock."""
    with engine.connect() as conn:
        return conn.execute(text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock'")).scalar_one()


# -- one delivery at a time per (provider, message, user) -----------------------------------------------


def test_a_claim_takes_only_the_oldest_unfinished_row_of_each_provider_message_user(make_app, database_url) -> None:
    ev = RecordingAdapter("ev", mode="event")
    app = make_app(FEEDBACK_DATABASE_URL=database_url, FEEDBACK_PROVIDERS={"ev": ev})
    token, other = register(app), register(app, message_id="m-2")
    vote, copy = make_event("thumbs_up", token), make_event("copy_output", token, text="Open Settings")
    elsewhere = make_event("thumbs_down", other)
    post(app, vote, copy, elsewhere)
    now = datetime.now(timezone.utc) + LATER
    with fdb.write(runtime(app).engine) as conn:
        claimed = ob.claim(conn, owner="a", providers=["ev"], limit=10, now=now, lease_seconds=60)
    assert sorted(d.event_pk for d in claimed) == sorted([event_pk(app, vote["id"]), event_pk(app, elsewhere["id"])])
    with fdb.write(runtime(app).engine) as conn:
        for delivery in claimed:
            assert ob.finish(conn, delivery, status=DeliveryStatus.DELIVERED, now=now)
        [after] = ob.claim(conn, owner="a", providers=["ev"], limit=10, now=now, lease_seconds=60)
    assert after.event_pk == event_pk(app, copy["id"])


def test_a_retried_state_delivery_and_a_newer_change_are_not_sent_side_by_side(make_app, database_url) -> None:
    rec = RecordingAdapter("rec")
    app = make_app(FEEDBACK_DATABASE_URL=database_url, FEEDBACK_PROVIDERS={"rec": rec})
    worker = runtime(app).worker
    token = register(app)
    now = datetime.now(timezone.utc) + LATER
    post(app, make_event("thumbs_up", token))
    rec.fail_next(RetryableDeliveryError("throttled", retry_after=0))
    assert worker.run_once(now=now) == 1  # back to pending, due again at once, without its coalesce key
    post(app, make_event("thumbs_down", token))  # a second pending row of the same (provider, message, user)
    assert worker.run_once(now=now + timedelta(seconds=1)) == 1, "two deliveries of one state at once"
    worker.drain(now=now + timedelta(seconds=2))
    assert [r["state"]["vote"] for r in rec.sent] == ["down"]
    assert [(r["status"], r["last_error"]) for r in outbox_rows(app)] == [
        ("delivered", None), ("skipped", "Unchanged since the last delivery.")
    ]


def test_pg_a_row_is_not_claimed_while_another_worker_is_claiming_an_older_one_of_its_key(make_app, pg_url) -> None:
    app = make_app(FEEDBACK_DATABASE_URL=pg_url, FEEDBACK_PROVIDERS={"ev": RecordingAdapter("ev", mode="event")})
    token = register(app)
    post(app, make_event("thumbs_up", token), make_event("copy_output", token, text="Open Settings"))
    engine, now = runtime(app).engine, datetime.now(timezone.utc) + LATER
    with fdb.write(engine) as first:
        assert len(ob.claim(first, owner="a", providers=["ev"], limit=1, now=now, lease_seconds=60)) == 1
        with fdb.write(engine) as second:  # worker "a" has not committed: its row still looks pending
            assert ob.claim(second, owner="b", providers=["ev"], limit=10, now=now, lease_seconds=60) == []
    with fdb.read(engine) as conn:
        assert conn.execute(select(outbox.c.status).order_by(outbox.c.id)).scalars().all() == [
            "in_flight", "pending"]


def test_an_idle_worker_does_not_spin_on_a_row_that_waits_behind_another(make_app, database_url) -> None:
    app = make_app(FEEDBACK_DATABASE_URL=database_url, FEEDBACK_PROVIDERS={"ev": RecordingAdapter("ev", mode="event")})
    token = register(app)
    post(app, make_event("thumbs_up", token), make_event("copy_output", token, text="Open Settings"))
    engine, now = runtime(app).engine, datetime.now(timezone.utc) + LATER
    with fdb.write(engine) as conn:  # another worker holds the first row
        [held] = ob.claim(conn, owner="other", providers=["ev"], limit=1, now=now, lease_seconds=60)
    with fdb.read(engine) as conn:
        assert ob.next_due(conn, ["ev"]) is None, "the only due row cannot be claimed yet"
    assert runtime(app).worker._idle_seconds() == runtime(app).settings.poll_seconds
    retry_at = now + timedelta(hours=1)
    with fdb.write(engine) as conn:  # it fails and backs off: the row behind it waits as long
        assert ob.finish(conn, held, status=DeliveryStatus.PENDING, now=now, next_attempt_at=retry_at)
    with fdb.read(engine) as conn:
        assert ob.next_due(conn, ["ev"]) == retry_at


def test_rows_waiting_for_a_slow_pass_are_not_claimed_under_a_lease_that_runs_out(make_app, database_url) -> None:
    app = make_app(FEEDBACK_DATABASE_URL=database_url,
                   FEEDBACK_PROVIDERS={"rec": RecordingAdapter("rec", mode="event")})
    post(app, make_event("thumbs_up", register(app, message_id="m-1")))
    post(app, make_event("thumbs_up", register(app, message_id="m-2")))
    engine, start = runtime(app).engine, datetime.now(timezone.utc) + LATER
    slow, fast = RecordingAdapter("rec", mode="event"), RecordingAdapter("rec", mode="event")
    slow.gate = threading.Event()
    first = Worker(engine, {"rec": slow}, WorkerSettings(concurrency=1, lease_seconds=10))
    second = Worker(engine, {"rec": fast}, WorkerSettings(concurrency=1, lease_seconds=10))
    try:
        with in_thread(lambda: first.run_once(now=start)):
            assert slow.entered.wait(30), "the first worker is sending its first delivery"
            # The first send outlives the lease. The second worker takes over what that lease covered; a
            # delivery the first worker has not even started must not then be sent by both.
            second.drain(now=start + timedelta(seconds=11))
            slow.gate.set()
    finally:
        slow.gate.set()
        first.stop()
        second.stop()
    sends = Counter(r["message_id"] for r in slow.sent + fast.sent)
    assert sends["m-2"] == 1, sends
    assert [r["status"] for r in outbox_rows(app)] == ["delivered", "delivered"]


# -- event providers: supersede and amendments ------------------------------------------------------------


@pytest.fixture
def event_app(make_app, database_url) -> tuple[Flask, AmendsRecorder]:
    ev = AmendsRecorder("ev")
    app = make_app(FEEDBACK_DATABASE_URL=database_url, FEEDBACK_PROVIDERS={"ev": ev}, FEEDBACK_SETTLE_SECONDS=60)
    return app, ev


def deliver_all(app: Flask) -> None:
    runtime(app).worker.drain(now=datetime.now(timezone.utc) + timedelta(minutes=5))


def test_a_vote_does_not_supersede_a_pending_retract_that_also_clears_the_other_vote(event_app) -> None:
    app, ev = event_app
    token = register(app)
    rating = make_event("rating", token, value=4)
    post(app, rating)
    deliver_all(app)
    retract, up = make_event("retract", token), make_event("thumbs_up", token)
    post(app, retract, up)  # the rating is gone, the thumb is up
    deliver_all(app)
    assert [(t, i) for t, i, _ in sent_events(ev)] == [
        ("rating", rating["id"]), ("retract", retract["id"]), ("thumbs_up", up["id"])]
    assert (state_of(app).vote, state_of(app).rating) == ("up", None)


def test_an_amendment_of_a_superseded_vote_is_not_delivered(event_app) -> None:
    app, ev = event_app
    token = register(app)
    up, down = make_event("thumbs_up", token), make_event("thumbs_down", token)
    post(app, up, down)
    amend = make_event("thumbs_up", token, amends=up["id"], reason="HELPFUL")
    post(app, amend)
    deliver_all(app)
    assert sent_events(ev) == [("thumbs_down", down["id"], None)]
    assert outbox_rows(app)[-1]["status"] == "skipped"


def test_an_amendment_after_a_retract_does_not_bring_the_vote_back(event_app) -> None:
    app, ev = event_app
    token = register(app)
    up = make_event("thumbs_up", token)
    post(app, up)
    deliver_all(app)
    post(app, make_event("retract", token))
    deliver_all(app)
    post(app, make_event("thumbs_up", token, amends=up["id"], reason="HELPFUL", comment="late"))
    deliver_all(app)
    assert [t for t, _, _ in sent_events(ev)] == ["thumbs_up", "retract"]
    assert outbox_rows(app)[-1]["status"] == "skipped"


def test_an_amendment_of_the_current_vote_still_reaches_event_providers(event_app) -> None:
    app, ev = event_app
    token = register(app)
    up = make_event("thumbs_up", token)
    post(app, up, make_event("thumbs_up", token, amends=up["id"], reason="HELPFUL"))  # same batch: merged
    deliver_all(app)
    late = make_event("thumbs_up", token, amends=up["id"], comment="Saved me an hour")  # after delivery
    post(app, late)
    deliver_all(app)
    assert [(r["event"]["id"], r["event"]["amends"], r["event"]["reason"], r["event"]["comment"])
            for r in ev.sent] == [(up["id"], None, "HELPFUL", None),
                                  (late["id"], up["id"], None, "Saved me an hour")]


def test_an_amendment_with_only_a_comment_keeps_the_reason_of_the_vote(make_app, database_url) -> None:
    state, ev = RecordingAdapter("state"), RecordingAdapter("ev", mode="event")
    app = make_app(FEEDBACK_DATABASE_URL=database_url, FEEDBACK_PROVIDERS={"state": state, "ev": ev},
                   FEEDBACK_SETTLE_SECONDS=60)
    token = register(app)
    vote = make_event("thumbs_down", token, reason="NOT_COMPLETE")
    post(app, vote)
    post(app, make_event("thumbs_down", token, amends=vote["id"], comment="Step 3 is missing"))
    deliver_all(app)
    assert [(s["state"]["reason"], s["state"]["comment"]) for s in state.sent] == [
        ("NOT_COMPLETE", "Step 3 is missing")]
    assert [(r["event"]["reason"], r["event"]["comment"]) for r in ev.sent] == [
        ("NOT_COMPLETE", "Step 3 is missing")]


# -- PostgreSQL: ingest batches against workers and against each other -------------------------------------


def test_pg_a_change_joining_a_pending_state_delivery_is_not_lost_to_a_worker_claiming_it(make_app, pg_url) -> None:
    rec = RecordingAdapter("rec")
    app = make_app(FEEDBACK_DATABASE_URL=pg_url, FEEDBACK_PROVIDERS={"rec": rec})
    token = register(app)
    post(app, make_event("thumbs_up", token))  # a pending state delivery, due now
    rt, now = runtime(app), datetime.now(timezone.utc) + LATER
    pause = PauseAt(rt.engine, lambda statement, _: "ON CONFLICT (coalesce_key)" in statement)
    try:
        with in_thread(lambda: post(app, make_event("thumbs_down", token))):
            assert pause.reached.wait(30), "the second change is joining the pending delivery"
            rt.worker.run_once(now=now)  # a worker passes by while that ingest has not committed
            pause.release.set()
    finally:
        pause.remove()
    rt.worker.drain(now=now + timedelta(seconds=1))
    assert [r["state"]["vote"] for r in rec.sent][-1:] == ["down"], rec.sent
    assert state_of(app).vote == "down"


def test_pg_an_amendment_merged_into_a_pending_vote_is_not_lost_to_a_worker_claiming_it(make_app, pg_url) -> None:
    ev = AmendsRecorder("ev")
    app = make_app(FEEDBACK_DATABASE_URL=pg_url, FEEDBACK_PROVIDERS={"ev": ev})
    token = register(app)
    vote = make_event("thumbs_down", token)
    post(app, vote)  # a pending event delivery, due now
    rt, now = runtime(app), datetime.now(timezone.utc) + LATER
    pause = PauseAt(rt.engine, lambda statement, _: "feedback_outbox.event_pk = (SELECT" in statement)
    try:
        amend = make_event("thumbs_down", token, amends=vote["id"], reason="NOT_COMPLETE")
        with in_thread(lambda: post(app, amend)):
            assert pause.reached.wait(30), "the amendment found the pending vote to merge into"
            rt.worker.run_once(now=now)
            pause.release.set()
    finally:
        pause.remove()
    rt.worker.drain(now=now + timedelta(seconds=1))
    assert [(r["event"]["id"], r["event"]["reason"]) for r in ev.sent] == [(vote["id"], "NOT_COMPLETE")]


def test_pg_concurrent_batches_touching_the_same_states_in_opposite_orders_do_not_deadlock(make_app, pg_url) -> None:
    app = make_app(FEEDBACK_DATABASE_URL=pg_url, FEEDBACK_PROVIDERS={"rec": RecordingAdapter("rec")})
    t1, t2 = register(app, message_id="m-1"), register(app, message_id="m-2")
    a1, a2 = make_event("thumbs_up", t1), make_event("thumbs_up", t2)
    b2, b1 = make_event("thumbs_down", t2), make_event("thumbs_down", t1)
    engine = runtime(app).engine
    # Batch A stops once it holds its state rows, before storing its events; batch B then starts with m-2.
    pause = PauseAt(engine, lambda statement, _: statement.startswith("INSERT INTO feedback_events"), when="before")
    watcher = create_engine(pg_url)

    def send(*evs: dict[str, Any]) -> tuple[int, Any]:
        response = app.test_client().post("/feedback/events", json={"events": list(evs)})
        return response.status_code, response.json

    try:
        with in_thread(lambda: send(a1, a2)) as batch_a:
            assert pause.reached.wait(30)
            with in_thread(lambda: send(b2, b1)) as batch_b:
                wait_for(lambda: lock_waiters(watcher) >= 1)  # batch B waits for a row batch A holds
                pause.release.set()
    finally:
        pause.remove()
        watcher.dispose()
    assert batch_a["result"][0] == 200 and batch_a["result"][1]["accepted"] == 2, batch_a["result"]
    assert batch_b["result"][0] == 200 and batch_b["result"][1]["accepted"] == 2, batch_b["result"]


def test_pg_app_processes_starting_together_create_the_tables_once(pg_url) -> None:
    def create(engine: Engine, barrier: threading.Barrier, errors: list[Exception]) -> None:
        barrier.wait()
        try:
            fdb.create_all(engine)
        except Exception as exc:  # collected and asserted below
            errors.append(exc)

    for _ in range(3):
        engines = [fdb.make_engine(pg_url) for _ in range(4)]
        barrier, errors = threading.Barrier(len(engines)), []
        threads = [threading.Thread(target=create, args=(e, barrier, errors)) for e in engines]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        for e in engines:
            e.dispose()
        assert not errors, errors
        drop = create_engine(pg_url)
        metadata.drop_all(drop)
        drop.dispose()


def test_pg_an_amendment_racing_its_vote_waits_for_it_instead_of_being_rejected(make_app, pg_url) -> None:
    app = make_app(FEEDBACK_DATABASE_URL=pg_url, FEEDBACK_PROVIDERS={"rec": RecordingAdapter("rec")})
    token = register(app)
    post(app, make_event("copy_output", token, text="Open Settings"))  # the state row exists already
    vote = make_event("thumbs_down", token)
    amend = make_event("thumbs_down", token, amends=vote["id"], reason="NOT_COMPLETE")
    engine = runtime(app).engine
    pause = PauseAt(engine, lambda statement, params: statement.startswith("INSERT INTO feedback_events")
                    and vote["id"] in params)  # the driver's positional parameters
    watcher = create_engine(pg_url)

    def send(ev: dict[str, Any]) -> dict[str, Any]:
        return app.test_client().post("/feedback/events", json={"events": [ev]}).json

    try:
        with in_thread(lambda: send(vote)) as voting:
            assert pause.reached.wait(30), "the vote is stored but not committed"
            with in_thread(lambda: send(amend)) as amending:
                wait_for(lambda: "result" in amending or lock_waiters(watcher) >= 1)
                pause.release.set()
    finally:
        pause.remove()
        watcher.dispose()
    assert voting["result"]["accepted"] == 1
    assert amending["result"]["results"][0]["status"] == "accepted", amending["result"]
    assert state_of(app).reason == "NOT_COMPLETE"


def test_reviving_several_dead_letters_of_one_state_sends_it_once(make_app, database_url) -> None:
    rec = RecordingAdapter("rec")
    app = make_app(FEEDBACK_DATABASE_URL=database_url, FEEDBACK_PROVIDERS={"rec": rec})
    worker, token = runtime(app).worker, register(app)
    for kind in ("thumbs_up", "thumbs_down", "thumbs_up"):  # three changes, each delivery failing for good
        post(app, make_event(kind, token))
        rec.fail_next(CredentialsError("AccessDeniedException"))
        worker.drain()
    assert [r["status"] for r in outbox_rows(app)] == ["failed"] * 3
    with fdb.write(runtime(app).engine) as conn:
        assert ob.retry_failed(conn, datetime.now(timezone.utc)) == (3, 0)  # the operator fixed the credentials
    assert worker.run_once() == 1, "revived rows of one state are sent one after the other, not side by side"
    worker.drain()
    assert [r["state"]["vote"] for r in rec.sent] == ["up"]
    assert [(r["status"], r["last_error"]) for r in outbox_rows(app)] == [
        ("delivered", None)] + [("skipped", "Unchanged since the last delivery.")] * 2


@pytest.mark.parametrize(("dead", "later", "revived"), [
    ("thumbs_up", "thumbs_down", False),  # the newer thumb would be replaced by the old one
    ("thumbs_up", "retract", False),  # the vote the user took back would come back
    ("rating", "rating", False),
    ("retract", "thumbs_down", False),  # the retract would clear the newer vote
    ("retract", "rating", False),
    ("rating", "thumbs_down", True),  # a thumb and a rating are separate answers: both stand
    ("thumbs_up", "rating", True),
])
def test_retrying_a_dead_vote_never_sends_it_after_a_later_vote_it_would_undo(
    make_app, database_url, dead, later, revived
) -> None:
    rec = RecordingAdapter("rec", mode="event")
    app = make_app(FEEDBACK_DATABASE_URL=database_url, FEEDBACK_PROVIDERS={"rec": rec})
    worker, token = runtime(app).worker, register(app)
    values = {"rating": {"value": 2}}
    first = make_event(dead, token, **values.get(dead, {}))
    post(app, first)
    rec.fail_next(CredentialsError("AccessDeniedException"))
    worker.drain()
    second = make_event(later, token, **values.get(later, {}))
    post(app, second)
    worker.drain()
    assert [r["status"] for r in outbox_rows(app)] == ["failed", "delivered"]

    with fdb.write(runtime(app).engine) as conn:
        assert ob.retry_failed(conn, datetime.now(timezone.utc)) == ((1, 0) if revived else (0, 1))
    worker.drain()
    assert [e[1] for e in sent_events(rec)] == ([second["id"], first["id"]] if revived else [second["id"]])
    dead_row = outbox_rows(app)[0]
    assert (dead_row["status"], dead_row["last_error"]) == (
        ("delivered", None) if revived else ("skipped", ob.RETRY_STALE))


def test_a_retried_dead_vote_goes_before_a_later_vote_not_sent_yet(make_app, database_url) -> None:
    rec = RecordingAdapter("rec", mode="event")
    app = make_app(FEEDBACK_DATABASE_URL=database_url, FEEDBACK_PROVIDERS={"rec": rec})
    worker, token = runtime(app).worker, register(app)
    up, down = make_event("thumbs_up", token), make_event("thumbs_down", token)
    post(app, up)
    rec.fail_next(CredentialsError("AccessDeniedException"))
    worker.drain()
    post(app, down)  # pending: the worker has not run since
    with fdb.write(runtime(app).engine) as conn:
        assert ob.retry_failed(conn, datetime.now(timezone.utc)) == (1, 0)
    worker.drain()
    assert [e[1] for e in sent_events(rec)] == [up["id"], down["id"]], "the provider ends with the later vote"


def test_the_health_check_does_not_queue_for_sqlites_write_lock(make_app, sqlite_url) -> None:
    app = make_app()
    # A long write elsewhere (a purge batch, a big ingest) holds the lock while the probe comes in.
    with fdb.write(runtime(app).engine), in_thread(lambda: app.test_client().get("/feedback/health")) as probe:
        wait_for(lambda: "result" in probe or "error" in probe, timeout=10)
    assert probe["result"].status_code == 200, probe["result"].json


def test_a_batch_sharing_one_token_looks_its_message_up_once(make_app, database_url) -> None:
    app = make_app(FEEDBACK_DATABASE_URL=database_url, FEEDBACK_PROVIDERS={"rec": RecordingAdapter("rec")})
    token = register(app)
    with statements_run(runtime(app).engine) as run:
        body = post(app, *[make_event("copy_output", token, text=f"part {n}") for n in range(20)])
    lookups = [sql for sql, _ in run if sql.startswith("SELECT") and "FROM feedback_messages" in sql]
    assert body["accepted"] == 20
    assert len(lookups) == 1, f"{len(lookups)} look-ups of one message for one batch"


def test_an_amendment_of_a_rating_cannot_deliver_another_value(event_app) -> None:
    app, ev = event_app
    token = register(app)
    rating = make_event("rating", token, value=2)
    post(app, rating)
    deliver_all(app)
    response = app.test_client().post("/feedback/events", json={"events": [
        make_event("rating", token, value=5, amends=rating["id"], comment="meh")]})
    assert response.status_code == 422, response.json
    assert "amends" in response.json["results"][0]["errors"]
    deliver_all(app)
    assert [r["event"]["value"] for r in ev.sent] == [2]
    assert state_of(app).rating == 2


def test_pg_feedback_on_an_old_answer_while_a_retention_purge_takes_it_does_not_deadlock(make_app, pg_url) -> None:
    """Ingest locks the (message, user) state, then key-shares the message (the event's foreign key); the purge
    used to lock the message first, then wait for its states: PostgreSQL aborted one of the two."""
    app = make_app(FEEDBACK_DATABASE_URL=pg_url, FEEDBACK_PROVIDERS={"rec": RecordingAdapter("rec")})
    token = register(app)
    post(app, make_event("thumbs_up", token))  # the state row exists
    engine = runtime(app).engine
    long_ago = datetime.now(timezone.utc) - timedelta(days=100)
    with fdb.write(engine) as conn:  # an answer and its feedback from long ago: the purge takes both
        conn.execute(messages.update().values(created_at=long_ago))
        conn.execute(events.update().values(received_at=long_ago))
    late = make_event("thumbs_down", token)
    pause = PauseAt(engine, lambda statement, _: statement.startswith("INSERT INTO feedback_events"), when="before")
    watcher = create_engine(pg_url)
    purger = fdb.make_engine(pg_url)
    try:
        with in_thread(lambda: post(app, late)) as voting:
            assert pause.reached.wait(30)  # the vote holds its state row, its event not inserted yet
            with in_thread(lambda: purge_older_than(purger, datetime.now(timezone.utc) - timedelta(days=90))) as purge:
                wait_for(lambda: lock_waiters(watcher) >= 1)  # the purge waits for the vote's state row
                pause.release.set()
    finally:
        pause.remove()
        watcher.dispose()
        purger.dispose()
    assert voting["result"]["accepted"] == 1
    assert purge["result"]["events"] == 1 and purge["result"]["messages"] == 0  # the answer has feedback again
    assert state_of(app).vote == "down"
