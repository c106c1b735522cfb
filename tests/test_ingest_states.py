"""The states a batch folds its events into: read under the write lock, and written only where they change."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager

import pytest
from flask import Flask

from conftest import register, runtime
from feedback_bridge import db
from support import RecordingAdapter, event, outbox_rows, post_events, statements_run


def before_the_write(monkeypatch: pytest.MonkeyPatch, meanwhile: Callable[[], None]) -> None:
    """``meanwhile`` runs once, just before the next write transaction begins: another request's turn at the write
    lock."""
    write, pending = db.write, [meanwhile]

    @contextmanager
    def after_meanwhile(engine):
        if pending:
            pending.pop()()
        with write(engine) as conn:
            yield conn

    monkeypatch.setattr(db, "write", after_meanwhile)


def state_writes(run: list) -> int:
    return sum(sql.startswith("INSERT INTO feedback_states") for sql, _ in run)


def app_with_providers(make_app, url: str) -> Flask:
    providers = {"ev": RecordingAdapter("ev", mode="event"), "st": RecordingAdapter("st")}
    return make_app(FEEDBACK_DATABASE_URL=url, FEEDBACK_PROVIDERS=providers, FEEDBACK_SETTLE_SECONDS=60)


def test_a_state_changed_by_another_request_just_before_the_write_lock_is_kept(make_app, database_url, monkeypatch):
    app = app_with_providers(make_app, database_url)
    tokens = [register(app, message_id=f"m-{n}") for n in range(2)]
    before_the_write(monkeypatch, lambda: post_events(app, event("copy_output", tokens[0], text="Open Settings")))
    post_events(app, event("thumbs_down", tokens[0]), event("thumbs_up", tokens[1]))
    first = runtime(app).store.get_state(1, "alice@example.com")
    assert (first.vote, first.copy_count) == ("down", 1)
    assert runtime(app).store.get_state(2, "alice@example.com").vote == "up"


def test_an_event_stored_by_another_request_just_before_is_a_duplicate_enqueued_once(
        make_app, database_url, monkeypatch):
    app = app_with_providers(make_app, database_url)
    tokens = [register(app, message_id=f"m-{n}") for n in range(2)]
    post_events(app, event("thumbs_up", tokens[0]))
    copy = event("copy_input", tokens[0], text="How do I reset my password?")
    # The widget's retry of the copy arrives alone (another tab, say) and is stored first.
    before_the_write(monkeypatch, lambda: post_events(app, copy))
    body = post_events(app, copy, event("thumbs_up", tokens[1]))
    assert [r["status"] for r in body["results"]] == ["duplicate", "accepted"]
    per_event: dict[int, list[str]] = {}
    for row in outbox_rows(app):
        per_event.setdefault(row["event_pk"], []).append(row["provider"])
    # Three events stored (PostgreSQL's ids skip the one the refused insert drew), each enqueued once per provider.
    assert sorted(sorted(providers) for providers in per_event.values()) == [["ev", "st"]] * 3


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
