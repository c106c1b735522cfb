"""SQLite batches planned before the write lock: written as planned only if nothing they were planned from changed."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from flask import Flask

from conftest import register, runtime
from feedback_bridge import store
from support import RecordingAdapter, event, outbox_rows, post_events, statements_run


@contextmanager
def plans_made(meanwhile: Callable[[], None] = lambda: None) -> Iterator[list[bool]]:
    """Each call of the batch planner, as whether it planned before the transaction (without a connection).
    ``meanwhile`` runs once, right after the states of the first plan made before the lock were read: another
    request's turn (its own plans are not listed)."""
    made: list[bool] = []
    plan = store._plan
    others = False

    def spy(conn, *args, **kwargs):
        nonlocal others
        if not others:
            made.append(conn is None)
        if conn is None and made == [True]:
            others = True
            try:
                meanwhile()
            finally:
                others = False
        return plan(conn, *args, **kwargs)

    store._plan = spy
    try:
        yield made
    finally:
        store._plan = plan


def state_writes(run: list) -> int:
    return sum(sql.startswith("INSERT INTO feedback_states") for sql, _ in run)


def app_with_providers(make_app, url: str) -> Flask:
    providers = {"ev": RecordingAdapter("ev", mode="event"), "st": RecordingAdapter("st")}
    return make_app(FEEDBACK_DATABASE_URL=url, FEEDBACK_PROVIDERS=providers, FEEDBACK_SETTLE_SECONDS=60)


def test_a_batch_of_new_votes_is_planned_before_the_write_lock_on_sqlite_only(make_app, database_url):
    app = app_with_providers(make_app, database_url)
    tokens = [register(app, message_id=f"m-{n}") for n in range(2)]
    with plans_made() as made:
        post_events(app, event("thumbs_up", tokens[0]), event("thumbs_down", tokens[1]))
    # PostgreSQL's writers wait only for the rows they share: there the read would only add a round trip.
    assert made == ([True] if database_url.startswith("sqlite") else [False])
    states = [runtime(app).store.get_state(pk, "alice@example.com").vote for pk in (1, 2)]
    assert states == ["up", "down"]
    assert sorted((r["provider"], r["status"]) for r in outbox_rows(app)) == [
        ("ev", "pending"), ("ev", "pending"), ("st", "pending"), ("st", "pending")]


@pytest.mark.parametrize("kind", ["single event", "amendment", "event id twice"])
def test_batches_a_plan_cannot_hold_are_planned_under_the_lock(make_app, sqlite_url, kind):
    app = app_with_providers(make_app, sqlite_url)
    tokens = [register(app, message_id=f"m-{n}") for n in range(2)]
    vote = event("thumbs_up", tokens[0])
    post_events(app, vote)
    batch = {
        "single event": [event("thumbs_down", tokens[1])],
        "amendment": [event("thumbs_up", tokens[0], amends=vote["id"], reason="HELPFUL"),
                      event("thumbs_down", tokens[1])],
        "event id twice": [event("thumbs_down", tokens[1], id="sent-twice")] * 2,
    }[kind]
    with plans_made() as made:
        post_events(app, *batch)
    assert made == [False]


def test_a_state_changed_after_the_plan_was_read_is_planned_again_under_the_lock(make_app, sqlite_url):
    app = app_with_providers(make_app, sqlite_url)
    tokens = [register(app, message_id=f"m-{n}") for n in range(2)]
    # Another request copies the first answer between the plan's read and this batch's turn at the lock.
    with plans_made(lambda: post_events(app, event("copy_output", tokens[0], text="Open Settings"))) as made:
        post_events(app, event("thumbs_down", tokens[0]), event("thumbs_up", tokens[1]))
    assert made == [True, False]
    first = runtime(app).store.get_state(1, "alice@example.com")
    assert (first.vote, first.copy_count) == ("down", 1)  # the plan, made from before the copy, would lose it


def test_an_event_stored_after_the_plan_was_made_is_a_duplicate_enqueued_once(make_app, sqlite_url):
    app = app_with_providers(make_app, sqlite_url)
    tokens = [register(app, message_id=f"m-{n}") for n in range(2)]
    post_events(app, event("thumbs_up", tokens[0]))
    # A copy of the question changes no state, so the states the plan was made from still hold under the lock.
    copy = event("copy_input", tokens[0], text="How do I reset my password?")
    batch = [copy, event("thumbs_up", tokens[1])]
    # The widget's retry of the copy arrives alone (another tab, say) and is stored first.
    with plans_made(lambda: post_events(app, copy)) as made:
        body = post_events(app, *batch)
    assert made == [True, False]
    assert [r["status"] for r in body["results"]] == ["duplicate", "accepted"]
    per_event = sorted((r["event_pk"], r["provider"]) for r in outbox_rows(app))
    assert per_event == [(1, "ev"), (1, "st"), (2, "ev"), (2, "st"), (3, "ev"), (3, "st")]


@pytest.mark.parametrize("batch", [1, 2])
def test_sqlite_reads_the_states_under_its_write_lock_and_writes_only_those_that_change(
        make_app, database_url, batch):
    """SQLite's write lock is already the whole database's: the states are read, not locked by an upsert that
    creates them, so an event that changes no state writes none. PostgreSQL locks (and so creates) each one."""
    app = app_with_providers(make_app, database_url)
    tokens = [register(app, message_id=f"m-{n}") for n in range(batch)]
    engine, sqlite = runtime(app).engine, database_url.startswith("sqlite")
    post_events(app, event("thumbs_up", tokens[0]))
    copies = [event("copy_input", token, text="How do I reset my password?") for token in tokens]
    with statements_run(engine) as run:
        post_events(app, *copies)
    assert state_writes(run) == (0 if sqlite else 1)
    with engine.connect() as conn:
        keys = conn.exec_driver_sql("SELECT message_pk FROM feedback_states ORDER BY message_pk").scalars().all()
    assert keys == ([1] if sqlite else list(range(1, batch + 1)))
    with statements_run(engine) as run:
        post_events(app, *[event("thumbs_down", token) for token in tokens])
    assert state_writes(run) == (1 if sqlite else 2)
    votes = [runtime(app).store.get_state(pk, "alice@example.com").vote for pk in range(1, batch + 1)]
    assert votes == ["down"] * batch
