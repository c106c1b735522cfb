"""The outbox: what each event enqueues, the settle window, retries, dead letters and leases."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import event as sa_event
from sqlalchemy import insert, select, update

from conftest import register, runtime
from feedback_bridge import (
    CredentialsError,
    DeliveryStatus,
    PermanentDeliveryError,
    RetryableDeliveryError,
    Skip,
    delivery_reads,
    driver_sql,
)
from feedback_bridge import db as fdb
from feedback_bridge import outbox as ob
from feedback_bridge.models import Delivery
from feedback_bridge.providers import DeliveryContext, ProviderAdapter
from feedback_bridge.schema import events, messages, outbox, states
from feedback_bridge.worker import Worker, WorkerSettings, backoff_delay
from support import RecordingAdapter, event, statements_run


class Clock:
    """A settable clock for the worker, so retry times are exact. Starts a minute ahead of real time,
    so everything the API enqueued during the test is already due."""

    def __init__(self) -> None:
        self.now = datetime.now(timezone.utc) + timedelta(minutes=1)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


class VoteOnly(ProviderAdapter):
    """A state provider whose request is just the vote, to see repeated states being skipped."""

    name = "vote_only"

    def __init__(self, name: str | None = None) -> None:
        super().__init__(name)
        self.sent: list[dict[str, Any]] = []

    def build_request(self, context: DeliveryContext) -> dict[str, Any]:
        assert context.state is not None
        if context.state.vote is None:
            raise Skip("No vote to send.")
        return {"vote": context.state.vote}

    def send(self, request: dict[str, Any]) -> dict[str, Any]:
        self.sent.append(request)
        return {}


def post(app, *events: dict) -> dict:
    response = app.test_client().post("/feedback/events", json={"events": list(events)})
    assert response.status_code == 200, response.json
    return response.json


def rows(app, provider: str | None = None) -> list[dict]:
    query = select(outbox).order_by(outbox.c.id)
    if provider:
        query = query.where(outbox.c.provider == provider)
    with fdb.read(runtime(app).engine) as conn:
        return [dict(r) for r in conn.execute(query).mappings()]


def make_worker(app, clock: Clock, **settings: Any) -> Worker:
    rt = runtime(app)
    return Worker(rt.engine, rt.adapters, WorkerSettings(**settings), clock=clock)


@pytest.fixture
def state_app(make_app, database_url):
    rec = RecordingAdapter("rec")
    app = make_app(FEEDBACK_DATABASE_URL=database_url, FEEDBACK_PROVIDERS={"rec": rec})
    return app, rec


def test_a_vote_is_delivered_with_request_and_response_recorded(state_app):
    app, rec = state_app
    token = register(app)
    post(app, event("thumbs_down", token, reason="NOT_COMPLETE", comment="Missing step 3"))
    assert runtime(app).worker.drain() == 1
    assert len(rec.sent) == 1
    assert rec.sent[0]["state"]["vote"] == "down"
    assert rec.sent[0]["state"]["reason"] == "NOT_COMPLETE"
    [row] = rows(app)
    assert row["status"] == DeliveryStatus.DELIVERED
    assert row["request"] == rec.sent[0]
    assert row["response"] == {"ok": True, "n": 1}
    assert row["attempts"] == 1 and row["delivered_at"] is not None and row["lease_until"] is None


def test_flips_inside_the_settle_window_make_one_delivery_of_the_final_state(make_app, database_url):
    rec = RecordingAdapter("rec")
    app = make_app(FEEDBACK_DATABASE_URL=database_url, FEEDBACK_PROVIDERS={"rec": rec},
                   FEEDBACK_SETTLE_SECONDS=60)
    token = register(app)
    post(app, event("thumbs_up", token))
    post(app, event("thumbs_down", token))
    post(app, event("thumbs_up", token))
    worker = runtime(app).worker
    start = datetime.now(timezone.utc)
    assert worker.run_once(now=start + timedelta(seconds=30)) == 0, "nothing is due inside the window"
    assert worker.run_once(now=start + timedelta(seconds=61)) == 1
    assert [r["state"]["vote"] for r in rec.sent] == ["up"]
    first, *later = rows(app)
    assert first["status"] == "delivered"
    assert [(r["status"], r["last_error"]) for r in later] == [
        ("skipped", f"{ob.COALESCED} (#{first['id']})")] * 2, "the later flips say which delivery carried them"


def test_a_reason_added_inside_the_window_is_merged_into_the_pending_vote(make_app, database_url):
    state, events_ = RecordingAdapter("state"), RecordingAdapter("events", mode="event")
    app = make_app(FEEDBACK_DATABASE_URL=database_url, FEEDBACK_PROVIDERS={"state": state, "events": events_},
                   FEEDBACK_SETTLE_SECONDS=60)
    token = register(app)
    vote = event("thumbs_down", token)
    post(app, vote)
    post(app, event("thumbs_down", token, amends=vote["id"], reason="NOT_FACTUALLY_CORRECT", comment="Wrong"))
    runtime(app).worker.drain(now=datetime.now(timezone.utc) + timedelta(seconds=61))
    assert [(s["state"]["vote"], s["state"]["reason"], s["state"]["comment"]) for s in state.sent] == [
        ("down", "NOT_FACTUALLY_CORRECT", "Wrong")
    ]
    [sent] = events_.sent
    assert sent["event"]["id"] == vote["id"]
    assert (sent["event"]["reason"], sent["event"]["comment"]) == ("NOT_FACTUALLY_CORRECT", "Wrong")
    statuses = [(r["status"], r["last_error"]) for r in rows(app, "events")]
    assert statuses == [("delivered", None), ("skipped", ob.MERGED)]


def test_event_providers_skip_votes_superseded_inside_the_window(make_app, database_url):
    rec = RecordingAdapter("ev", mode="event")
    app = make_app(FEEDBACK_DATABASE_URL=database_url, FEEDBACK_PROVIDERS={"ev": rec},
                   FEEDBACK_SETTLE_SECONDS=60)
    token = register(app)
    first, second = event("thumbs_up", token), event("thumbs_down", token)
    rating = event("rating", token, value=4)
    post(app, first, rating, second)
    runtime(app).worker.drain(now=datetime.now(timezone.utc) + timedelta(seconds=61))
    assert sorted(s["event"]["id"] for s in rec.sent) == sorted([second["id"], rating["id"]])
    by_event = {r["status"]: r["last_error"] for r in rows(app) if r["status"] == "skipped"}
    assert by_event == {"skipped": ob.SUPERSEDED}


def test_a_vote_supersedes_in_the_same_steps_however_many_votes_the_answer_had_before(make_app, sqlite_url):
    """Counted in SQLite VM steps: the statement that skips a vote's superseded pending deliveries, after 10 and
    after 600 earlier votes of the user on the answer. It read every one of them before (an IN over the key's
    events): 30 times the steps at 600."""
    app = make_app(FEEDBACK_PROVIDERS={"ev": RecordingAdapter("ev", mode="event")}, FEEDBACK_SETTLE_SECONDS=60)
    engine, token = runtime(app).engine, register(app)
    counted: Counter[str] = Counter()

    def count_supersedes(conn, cursor, statement, *_args) -> None:
        if statement.startswith("UPDATE feedback_outbox SET status"):
            conn.connection.dbapi_connection.set_progress_handler(lambda: counted.update(["steps"]), 1)

    def stop_counting(conn, *_args) -> None:
        conn.connection.dbapi_connection.set_progress_handler(None, 1)

    def steps_of_one_more_vote() -> int:
        counted.clear()
        sa_event.listen(engine, "before_cursor_execute", count_supersedes)
        sa_event.listen(engine, "after_cursor_execute", stop_counting)
        try:
            post(app, event("thumbs_up", token))
        finally:
            sa_event.remove(engine, "before_cursor_execute", count_supersedes)
            sa_event.remove(engine, "after_cursor_execute", stop_counting)
        return counted["steps"]

    def votes(n: int) -> None:
        for start in range(0, n, 100):
            post(app, *[event("thumbs_down" if i % 2 else "thumbs_up", token)
                        for i in range(start, min(n, start + 100))])

    votes(10)
    few = steps_of_one_more_vote()
    votes(600)
    many = steps_of_one_more_vote()
    assert few > 0
    assert many < 1.5 * few, (few, many)
    assert [r["status"] for r in rows(app, "ev")].count("pending") == 1  # it still superseded every earlier one


def test_one_batch_over_many_messages_supersedes_and_coalesces_each_message_on_its_own(make_app, database_url):
    ev, st = RecordingAdapter("ev", mode="event"), RecordingAdapter("st")
    app = make_app(FEEDBACK_DATABASE_URL=database_url, FEEDBACK_PROVIDERS={"ev": ev, "st": st},
                   FEEDBACK_SETTLE_SECONDS=60)
    tokens = [register(app, message_id=f"m-{n}") for n in range(3)]
    ups = [event("thumbs_up", t) for t in tokens]
    post(app, *ups)
    downs = [event("thumbs_down", t) for t in tokens[:2]]  # the third message keeps its vote
    post(app, *downs)
    status = {(r["provider"], r["event_pk"]): (r["status"], r["last_error"]) for r in rows(app)}
    pks = {e["id"]: pk for e, pk in zip([*ups, *downs], sorted({r["event_pk"] for r in rows(app)}), strict=True)}
    for up in ups[:2]:
        assert status[("ev", pks[up["id"]])] == ("skipped", ob.SUPERSEDED)
    assert status[("ev", pks[ups[2]["id"]])] == ("pending", None)
    for down in downs:
        assert status[("ev", pks[down["id"]])] == ("pending", None)
        assert status[("st", pks[down["id"]])][0] == "skipped"  # joined the pending state delivery
        assert status[("st", pks[down["id"]])][1].startswith(ob.COALESCED)
    runtime(app).worker.drain(now=datetime.now(timezone.utc) + timedelta(seconds=61))
    assert sorted(s["event"]["id"] for s in ev.sent) == sorted([ups[2]["id"], *(d["id"] for d in downs)])
    assert sorted(s["state"]["vote"] for s in st.sent) == ["down", "down", "up"]


def test_after_delivery_a_new_change_is_delivered_again_and_a_repeated_state_is_skipped(make_app, database_url):
    vote_only = VoteOnly("v")
    app = make_app(FEEDBACK_DATABASE_URL=database_url, FEEDBACK_PROVIDERS={"v": vote_only})
    token = register(app)
    worker = runtime(app).worker
    post(app, event("thumbs_up", token))
    worker.drain()
    post(app, event("thumbs_down", token))
    worker.drain()
    post(app, event("thumbs_down", token, id=None, reason="NOT_COMPLETE"))  # same vote, new reason
    worker.drain()
    assert vote_only.sent == [{"vote": "up"}, {"vote": "down"}]
    last = rows(app)[-1]
    assert (last["status"], last["last_error"]) == ("skipped", "Unchanged since the last delivery.")


def test_events_that_do_not_change_the_state_are_recorded_as_skipped_for_state_providers(state_app):
    app, rec = state_app
    token = register(app)
    post(app, event("paste", token, text="my error message"))
    assert runtime(app).worker.drain() == 0
    [row] = rows(app)
    assert (row["status"], row["last_error"]) == ("skipped", ob.UNCHANGED_STATE)
    assert rec.sent == []


def test_a_skip_from_the_mapping_is_recorded_with_its_reason(make_app):
    vote_only = VoteOnly("v")
    app = make_app(FEEDBACK_PROVIDERS={"v": vote_only})
    token = register(app)
    post(app, event("copy_output", token, text="Open Settings"))
    runtime(app).worker.drain()
    [row] = rows(app)
    assert (row["status"], row["last_error"]) == ("skipped", "No vote to send.")
    assert vote_only.sent == []


def test_retry_after_is_honoured_then_the_delivery_succeeds(state_app):
    app, rec = state_app
    clock = Clock()
    worker = make_worker(app, clock)
    token = register(app)
    post(app, event("thumbs_up", token))
    rec.fail_next(RetryableDeliveryError("throttled", retry_after=30, response={"status": 429}))
    assert worker.run_once(now=clock.now) == 1
    [row] = rows(app)
    assert row["status"] == "pending" and row["attempts"] == 1
    assert row["next_attempt_at"] == clock.now + timedelta(seconds=30)
    assert row["response"] == {"status": 429} and "throttled" in row["last_error"]
    assert worker.run_once(now=clock.now + timedelta(seconds=29)) == 0
    assert worker.run_once(now=clock.advance(30)) == 1
    [row] = rows(app)
    assert (row["status"], row["attempts"], row["last_error"]) == ("delivered", 2, None)
    assert len(rec.sent) == 1


@pytest.mark.parametrize("exc", [
    PermanentDeliveryError("ValidationException: comment too long", response={"status": 400}),
    CredentialsError("AccessDeniedException", response={"status": 403}),
])
def test_permanent_and_credential_errors_become_dead_letters_and_can_be_retried(state_app, exc):
    app, rec = state_app
    token = register(app)
    post(app, event("thumbs_up", token))
    rec.fail_next(exc)
    runtime(app).worker.drain()
    [row] = rows(app)
    assert row["status"] == "failed" and row["attempts"] == 1
    assert row["last_error"] == f"{type(exc).__name__}: {exc}"
    assert row["response"] == exc.response
    assert row["request"]["state"]["vote"] == "up", "the exact request is kept for the operator"
    with fdb.write(runtime(app).engine) as conn:
        assert ob.retry_failed(conn, datetime.now(timezone.utc), provider="other") == (0, 0)
        assert ob.retry_failed(conn, datetime.now(timezone.utc), provider="rec") == (1, 0)
    runtime(app).worker.drain()
    assert [r["status"] for r in rows(app)] == ["delivered"]
    assert len(rec.sent) == 1


def test_exhausted_retries_become_a_dead_letter(state_app):
    app, rec = state_app
    clock = Clock()
    worker = make_worker(app, clock, max_attempts=3, backoff_base=1, backoff_max=10)
    token = register(app)
    post(app, event("thumbs_up", token))
    rec.fail_next(RetryableDeliveryError("HTTP 500"), times=3)
    for _ in range(3):
        assert worker.run_once(now=clock.advance(60)) == 1
    [row] = rows(app)
    assert row["status"] == "failed" and row["attempts"] == 3
    assert row["last_error"].startswith("Gave up after 3 attempts.")
    assert worker.run_once(now=clock.advance(3600)) == 0


def test_a_bug_in_an_adapter_is_retried_not_lost(state_app):
    app, rec = state_app
    token = register(app)
    post(app, event("thumbs_up", token))
    rec.fail_next(KeyError("boom"))
    clock = Clock()
    worker = make_worker(app, clock)
    worker.run_once(now=clock.now)
    [row] = rows(app)
    assert row["status"] == "pending" and "KeyError" in row["last_error"]
    worker.run_once(now=clock.advance(3600))
    assert [r["status"] for r in rows(app)] == ["delivered"]


@pytest.mark.parametrize(("attempts", "rand", "expected"), [
    (1, 0.0, 1.0), (1, 1.0, 2.0), (3, 0.0, 4.0), (3, 1.0, 8.0), (20, 0.5, 75.0),
])
def test_backoff_is_exponential_with_equal_jitter_and_capped(attempts, rand, expected):
    settings = WorkerSettings(backoff_base=2.0, backoff_max=100.0)
    assert backoff_delay(attempts, settings, None, rand) == pytest.approx(expected)


def test_backoff_uses_retry_after_when_given_capped_at_the_maximum():
    settings = WorkerSettings(backoff_base=2.0, backoff_max=100.0)
    assert backoff_delay(5, settings, 7.5, 0.9) == 7.5
    assert backoff_delay(1, settings, 10_000, 0.0) == 100.0


def test_a_worker_that_lost_its_lease_cannot_overwrite_the_new_owner(state_app):
    app, _ = state_app
    token = register(app)
    post(app, event("thumbs_up", token))
    rt = runtime(app)
    now = datetime.now(timezone.utc)
    with fdb.write(rt.engine) as conn:
        [first] = ob.claim(conn, owner="a", providers=["rec"], limit=10, now=now, lease_seconds=10)
    later = now + timedelta(seconds=11)
    with fdb.write(rt.engine) as conn:
        [second] = ob.claim(conn, owner="b", providers=["rec"], limit=10, now=later, lease_seconds=10)
        assert second.pk == first.pk and second.attempts == 2
        assert not ob.finish(conn, first, status=DeliveryStatus.FAILED, now=later, error="late")
        assert ob.finish(conn, second, status=DeliveryStatus.DELIVERED, now=later)
    [row] = rows(app)
    assert row["status"] == "delivered" and row["last_error"] is None


def test_the_worker_records_finished_sends_and_claims_the_next_in_one_commit(state_app, monkeypatch):
    app, _ = state_app
    post(app, event("thumbs_up", register(app, "m-1")), event("thumbs_down", register(app, "m-2")))
    clock = Clock()
    worker = make_worker(app, clock, concurrency=1)
    claimed, prepared = worker._claim(1, clock.now)
    outcomes = [worker._deliver(d, p) for d, p in zip(claimed, prepared, strict=True)]
    commits = []

    def count(conn: Any) -> None:
        commits.append(conn)

    sa_event.listen(runtime(app).engine, "commit", count)
    claimed, _ = worker._record_and_claim(outcomes, 1, clock.now)
    sa_event.remove(runtime(app).engine, "commit", count)
    assert len(claimed) == 1
    assert len(commits) == 2, "one write (the outcomes and the claim) and one read (the claimed rows' contexts)"
    assert [r["status"] for r in rows(app)] == ["delivered", "in_flight"]

    def claim_fails(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("the claim failed")

    outcomes = [(claimed[0], DeliveryStatus.DELIVERED, {"request": {"vote": "down"}, "response": {}})]
    monkeypatch.setattr(ob, "claim", claim_fails)
    with pytest.raises(RuntimeError, match="the claim failed"):
        worker._record_and_claim(outcomes, 1, clock.now)
    assert [r["status"] for r in rows(app)] == ["delivered", "delivered"], "the sends are recorded all the same"


def test_a_row_is_not_claimed_while_an_older_one_of_the_same_key_is_in_flight(state_app):
    app, _ = state_app
    token = register(app)
    rt = runtime(app)
    post(app, event("thumbs_up", token))
    now = datetime.now(timezone.utc)
    with fdb.write(rt.engine) as conn:
        [held] = ob.claim(conn, owner="a", providers=["rec"], limit=10, now=now, lease_seconds=60)
    post(app, event("thumbs_down", token))  # a new pending row for the same (provider, message, user)
    later = now + timedelta(seconds=5)  # the new row is due, the held lease still live
    with fdb.write(rt.engine) as conn:
        assert ob.claim(conn, owner="b", providers=["rec"], limit=10, now=later, lease_seconds=60) == []
        ob.finish(conn, held, status=DeliveryStatus.DELIVERED, now=later)
        [next_] = ob.claim(conn, owner="b", providers=["rec"], limit=10, now=later, lease_seconds=60)
    assert next_.pk != held.pk


def test_a_claim_takes_rows_whose_lease_ran_out_first_then_the_oldest_due_within_its_limit(state_app):
    app, _ = state_app
    tokens = [register(app, message_id=f"m-{i}") for i in range(3)]
    rt = runtime(app)
    post(app, event("thumbs_up", tokens[0]))
    now = datetime.now(timezone.utc)
    with fdb.write(rt.engine) as conn:  # a worker that died holding this row's lease
        [dead] = ob.claim(conn, owner="dead", providers=["rec"], limit=10, now=now, lease_seconds=1)
    post(app, event("thumbs_up", tokens[1]))
    post(app, event("thumbs_up", tokens[2]))
    due = [r["id"] for r in rows(app) if r["status"] == "pending"]
    later = now + timedelta(seconds=5)
    with fdb.write(rt.engine) as conn:
        taken = ob.claim(conn, owner="b", providers=["rec"], limit=2, now=later, lease_seconds=60)
    assert [(d.pk, d.attempts, d.lease_owner) for d in taken] == [(dead.pk, 2, "b"), (due[0], 1, "b")]
    assert [r["id"] for r in rows(app) if r["status"] == "pending"] == due[1:]


def test_a_claim_walks_the_due_index_instead_of_sorting_the_backlog(make_app, sqlite_url):
    """With an OR of 'due' and 'lease ran out', a claim of 4 rows read and sorted every due row: 235 ms inside
    SQLite's write lock at a 74,000-row backlog (bench/claim.py). Each case now follows the index's order."""
    app = make_app(FEEDBACK_PROVIDERS={"rec": RecordingAdapter("rec")})
    engine = runtime(app).engine
    with statements_run(engine) as statements, fdb.write(engine) as conn:
        ob.claim(conn, owner="a", providers=["rec"], limit=4, now=datetime.now(timezone.utc), lease_seconds=60)
    claims = [(sql, params) for sql, params in statements if sql.lstrip().startswith("UPDATE")]
    assert len(claims) == 2
    with fdb.read(engine) as conn:
        for sql, params in claims:
            plan = " / ".join(row[-1] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, params))
            assert "ix_feedback_outbox_due" in plan and "TEMP B-TREE" not in plan, plan


def test_reading_a_pass_seeks_its_rows_instead_of_reading_every_state_and_delivery(make_app, sqlite_url):
    """The states and the last delivered requests of a pass were read with row-value IN lists, which SQLite
    answers by reading every state and every delivered row: each claim's cost grew with all history."""
    app = make_app(FEEDBACK_PROVIDERS={"rec": RecordingAdapter("rec"), "ev": RecordingAdapter("ev", mode="event")})
    engine = runtime(app).engine
    post(app, event("thumbs_up", register(app, "m-1")), event("thumbs_down", register(app, "m-2")))
    now = datetime.now(timezone.utc) + timedelta(minutes=1)
    with fdb.write(engine) as conn:  # two of each: a list of one is an equality, which any plan seeks on
        claimed = ob.claim(conn, owner="a", providers=["rec", "ev"], limit=4, now=now, lease_seconds=60)
    assert sorted(d.kind for d in claimed) == ["event", "event", "state", "state"]
    with statements_run(engine) as statements, fdb.read(engine) as conn:
        prepared = delivery_reads.load_contexts(conn, claimed, now)
    assert not any(isinstance(p, Exception) for p in prepared)
    assert len(statements) >= 4
    with fdb.read(engine) as conn:
        for sql, params in statements:
            plan = [row[-1] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, params)]
            assert not [step for step in plan if step.startswith("SCAN feedback_")], (sql, plan)


def test_the_workers_reads_cost_the_same_however_much_history_and_backlog_the_store_holds(make_app, sqlite_url):
    """Counted in SQLite VM steps, at 40 and at 2,000 answers (each with a state, a delivered request and a
    pending delivery due later): reading a pass's contexts and an idle worker's next due time. The first grew
    with the store before: a row-value IN read every state and every delivered row (37 times the steps here)."""
    engine = runtime(make_app(FEEDBACK_PROVIDERS={"rec": RecordingAdapter("rec")})).engine
    now = datetime.now(timezone.utc)

    def grow_to(n: int, have: int) -> None:
        with fdb.write(engine) as conn:
            conn.execute(insert(messages), [{"id": i, "conversation_id": "c", "message_id": f"m-{i}", "user_id": "u",
                                             "refs": {}, "created_at": now} for i in range(have + 1, n + 1)])
            conn.execute(insert(states), [{"message_pk": i, "user_id": "u", "vote": "up", "copy_count": 0}
                                          for i in range(have + 1, n + 1)])
            row = {"provider": "rec", "kind": "state", "user_id": "u", "attempts": 0, "created_at": now,
                   "updated_at": now}
            conn.execute(insert(outbox), [
                {**row, "message_pk": i, "status": "delivered", "request": {"vote": "up"}, "delivered_at": now,
                 "next_attempt_at": now} for i in range(have + 1, n + 1)
            ] + [{**row, "message_pk": i, "status": "pending", "request": None, "delivered_at": None,
                  "next_attempt_at": now + timedelta(hours=1, seconds=i)} for i in range(have + 1, n + 1)])

    def steps() -> tuple[int, int]:
        passes = [Delivery(pk=0, provider="rec", kind="state", message_pk=pk, user_id="u", event_pk=None, attempts=0)
                  for pk in (1, 2)]
        counted = Counter()
        reads = {"contexts": lambda conn: delivery_reads.load_contexts(conn, passes, now),
                 "next due": lambda conn: ob.next_due(conn, ["rec"])}
        for name, read in reads.items():
            with fdb.read(engine) as conn:
                driver = conn.connection.dbapi_connection
                driver.set_progress_handler(lambda name=name: counted.update([name]), 1)  # returns None: go on
                read(conn)
                driver.set_progress_handler(None, 1)
        return counted["contexts"], counted["next due"]

    grow_to(40, 0)
    small = steps()
    grow_to(2000, 40)
    large = steps()
    assert large[0] < 1.5 * small[0] and large[1] < 1.5 * small[1], (small, large)


def test_pg_last_delivered_requests_are_sought_by_key_even_with_statistics_from_before_any_delivery(make_app, pg_url):
    """Statistics taken while nothing was delivered yet (a new store, or autovacuum behind) made PostgreSQL read
    the last delivered requests by walking every delivered row of ix_feedback_outbox_due: 18 ms at 40,000 rows."""
    engine = runtime(make_app(FEEDBACK_DATABASE_URL=pg_url, FEEDBACK_PROVIDERS={"rec": RecordingAdapter("rec")})).engine
    now = datetime.now(timezone.utc)
    with fdb.write(engine) as conn:
        conn.execute(insert(messages), [{"id": i, "conversation_id": "c", "message_id": f"m-{i}", "user_id": "u",
                                         "refs": {}, "created_at": now} for i in range(1, 2001)])
        conn.execute(insert(outbox), [{"provider": "rec", "kind": "state", "message_pk": i, "user_id": "u",
                                       "status": "pending", "attempts": 0, "next_attempt_at": now,
                                       "created_at": now, "updated_at": now} for i in range(1, 2001)])
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("ANALYZE feedback_outbox")
    with fdb.write(engine) as conn:
        conn.execute(update(outbox).values(status="delivered", delivered_at=now, request={"vote": "up"}))
        with statements_run(engine) as statements:
            found = ob.last_delivered_requests(conn, [
                Delivery(pk=0, provider="rec", kind="state", message_pk=pk, user_id="u", event_pk=None, attempts=0)
                for pk in (7, 8)])
        [(sql, params)] = statements
        plan = "\n".join(r[0] for r in conn.exec_driver_sql("EXPLAIN " + sql, params))
    assert "ix_feedback_outbox_key_status" in plan and "ix_feedback_outbox_due" not in plan, plan
    assert found == {("rec", 7, "u"): {"vote": "up"}, ("rec", 8, "u"): {"vote": "up"}}


def test_pg_a_supersede_reads_each_pending_rows_event_by_primary_key_even_without_statistics(make_app, pg_url):
    """Without statistics (a new store, autovacuum behind or off), PostgreSQL ran the supersede's correlated
    EXISTS as a join that read every vote of the kind in the store through the dashboard's index: 0.8 ms a vote
    at 18,000 events. The event is now a scalar subquery on the primary key."""
    app = make_app(FEEDBACK_DATABASE_URL=pg_url, FEEDBACK_PROVIDERS={"ev": RecordingAdapter("ev", mode="event")},
                   FEEDBACK_SETTLE_SECONDS=60)
    engine, token = runtime(app).engine, register(app)
    now = datetime.now(timezone.utc)
    with fdb.write(engine) as conn:
        conn.execute(insert(messages), [{"id": 1000 + i, "conversation_id": "c", "message_id": f"other-{i}",
                                         "user_id": "u", "refs": {}, "created_at": now} for i in range(20)])
        conn.execute(insert(events), [{"event_id": f"vote-{i:05}", "message_pk": 1000 + i % 20, "user_id": "u",
                                       "type": "thumbs_up", "occurred_at": now, "received_at": now}
                                      for i in range(3000)])
    post(app, event("thumbs_up", token))
    with statements_run(engine) as statements:
        post(app, event("thumbs_down", token))
    [(sql, params)] = [(sql, params) for sql, params in statements if sql.startswith("UPDATE feedback_outbox")]
    with fdb.read(engine) as conn:
        one = params[0] if isinstance(params, list) else params  # a single set runs as execute
        cursor = driver_sql._cursor(conn)  # the cursor driver SQL sends it on (psycopg's takes $n as they are)
        cursor.execute("EXPLAIN " + sql, one)
        plan = "\n".join(r[0] for r in cursor.fetchall())
    assert "feedback_events_pkey" in plan and "ix_feedback_events_kind" not in plan, plan
    assert [r["status"] for r in rows(app, "ev")] == ["skipped", "pending"]


def test_reclaim_on_start_puts_expired_in_flight_rows_back(state_app):
    app, rec = state_app
    token = register(app)
    post(app, event("thumbs_up", token))
    rt = runtime(app)
    with fdb.write(rt.engine) as conn:  # a worker that died holding a lease which has since run out
        ob.claim(conn, owner="dead-worker", providers=["rec"], limit=10, now=datetime.now(timezone.utc),
                 lease_seconds=0)
    assert [r["status"] for r in rows(app)] == ["in_flight"]
    assert rt.worker.reclaim() == 1
    [row] = rows(app)
    assert (row["status"], row["lease_owner"]) == ("pending", None)
    rt.worker.drain()
    assert len(rec.sent) == 1


def test_rows_of_unconfigured_providers_stay_pending(make_app, sqlite_url):
    app = make_app(FEEDBACK_PROVIDERS={"rec": RecordingAdapter("rec")})
    token = register(app)
    post(app, event("thumbs_up", token))
    with fdb.write(runtime(app).engine) as conn:
        conn.execute(update(outbox).values(provider="gone"))
    assert runtime(app).worker.drain() == 0
    assert [r["status"] for r in rows(app)] == ["pending"]
