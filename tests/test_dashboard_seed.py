"""``seed_store``: deterministic, realistic demo data."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import inspect, select, text

from feedback_bridge import db
from feedback_bridge.models import REASONS
from feedback_bridge.providers import moveworks, nebuly, qbusiness, qconnect
from feedback_bridge.schema import events, messages, outbox, states
from feedback_bridge.seed import seed_store
from feedback_bridge.store import Store

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)


def dump(url: str) -> dict[str, list[tuple]]:
    engine = db.make_engine(url)
    try:
        with db.read(engine) as conn:
            return {t.name: [tuple(r) for r in conn.execute(select(t).order_by(*t.primary_key.columns))]
                    for t in (messages, events, states, outbox)}
    finally:
        engine.dispose()


def seeded(url: str, n: int, seed: int) -> dict[str, list[tuple]]:
    engine = db.make_engine(url)
    try:
        assert seed_store(engine, n, now=NOW, seed=seed) == n
    finally:
        engine.dispose()
    return dump(url)


def test_same_seed_same_store_other_seed_other_store(tmp_path):
    first = seeded(f"sqlite:///{tmp_path / 'a.sqlite3'}", 300, 1)
    again = seeded(f"sqlite:///{tmp_path / 'b.sqlite3'}", 300, 1)
    other = seeded(f"sqlite:///{tmp_path / 'c.sqlite3'}", 300, 2)

    assert first == again
    assert first["feedback_events"] != other["feedback_events"]
    assert len(first["feedback_events"]) == 300


def test_realistic_contents(database_url):
    engine = db.make_engine(database_url)
    try:
        assert seed_store(engine, 3000, now=NOW, seed=5) == 3000
        with db.read(engine) as conn:
            evs = conn.execute(select(events)).mappings().all()
            msgs = conn.execute(select(messages)).mappings().all()
            rows = conn.execute(select(outbox)).mappings().all()
            n_states = len(conn.execute(select(states.c.message_pk)).all())
        # The ids were given explicitly; PostgreSQL's sequences were moved past them, so the app can go on.
        added = Store(engine).register_message(conversation_id="c-new", message_id="m-new", user_id="u",
                                               input=None, output=None, refs={}, now=NOW)
        assert added.pk == max(m["id"] for m in msgs) + 1
    finally:
        engine.dispose()

    assert len(evs) == 3000 and n_states == len(msgs)
    assert all(NOW - timedelta(weeks=12) <= e["received_at"] <= NOW + timedelta(seconds=1) for e in evs)
    assert {e["type"] for e in evs} == {"thumbs_up", "thumbs_down", "rating", "copy_output", "copy_input", "paste",
                                        "retract"}
    assert {e["reason"] for e in evs} - {None} <= set(REASONS) and len({e["reason"] for e in evs}) > 8
    assert any(e["comment"] for e in evs) and any(e["amends"] for e in evs)
    assert 100 <= len({m["user_id"] for m in msgs}) <= 300 and len({m["conversation_id"] for m in msgs}) >= 100
    statuses = Counter(r["status"] for r in rows)
    assert statuses["delivered"] > statuses["skipped"] > statuses["failed"] > 0
    assert len(rows) == 4 * len(evs)
    skips = {r["last_error"] for r in rows if r["status"] == "skipped"}
    # The adapters' own words, not made-up ones.
    assert {qbusiness.NO_DELETE, qconnect.NOTHING_NEW, nebuly.RETRACT_SKIP,
            moveworks.NOT_EXPRESSIBLE[moveworks.EventType.COPY_OUTPUT]} <= skips
    qb = next(r["request"] for r in rows if r["provider"] == "qbusiness" and r["status"] == "delivered")
    assert qb["operation"] == "PutFeedback" and len(qb["params"]["applicationId"]) == 36
    mw = next(r["request"] for r in rows if r["provider"] == "moveworks" and r["status"] == "delivered")
    assert "/conversations/conv_" in mw["url"] and mw["json"]["callback_id"]


@pytest.mark.parametrize("n", [0, -5])
def test_nothing_to_seed(tmp_path, n):
    engine = db.make_engine(f"sqlite:///{tmp_path / 'x.sqlite3'}")
    assert seed_store(engine, n) == 0
    engine.dispose()


def test_seeding_twice_adds_to_the_store(tmp_path):
    url = f"sqlite:///{tmp_path / 'x.sqlite3'}"
    seeded(url, 100, 1)
    after = seeded(url, 50, 2)
    assert len(after["feedback_events"]) == 150
    assert len({row[1] for row in after["feedback_events"]}) == 150  # event ids stay unique


def test_missing_indexes_are_created_for_a_store_made_before_them(database_url):
    engine = db.make_engine(database_url)
    try:
        db.create_all(engine)
        dashboard = ["ix_feedback_events_kind_received", "ix_feedback_outbox_health", "ix_feedback_states_copied"]
        with engine.begin() as conn:
            for name in dashboard:
                conn.execute(text(f"DROP INDEX {name}"))

        assert sorted(db.create_missing_indexes(engine)) == dashboard
        assert db.create_missing_indexes(engine) == []
        names = {i["name"] for table in ("feedback_events", "feedback_outbox", "feedback_states")
                 for i in inspect(engine).get_indexes(table)}
        assert set(dashboard) <= names
    finally:
        engine.dispose()


@pytest.mark.parametrize("now", [NOW, datetime(2026, 11, 22, 3, 0, tzinfo=timezone.utc)],
                         ids=["weekday", "sunday-night"])
def test_the_last_hour_of_activity_is_left_pending_whatever_the_time_of_seeding(tmp_path, now):
    """The demo delivers the seed's backlog on start; a quiet hour must not leave it with nothing to deliver."""
    engine = db.make_engine(f"sqlite:///{tmp_path / 'x.sqlite3'}")
    try:
        seed_store(engine, 2000, now=now, seed=3)
        with db.read(engine) as conn:
            newest, last = conn.execute(select(messages.c.id, messages.c.created_at)
                                        .order_by(messages.c.created_at.desc()).limit(1)).one()
            rows = conn.execute(select(outbox)).mappings().all()
    finally:
        engine.dispose()
    last = last.replace(tzinfo=timezone.utc)
    pending = [r for r in rows if r["status"] == "pending"]
    assert {r["provider"] for r in rows if r["message_pk"] == newest and r["status"] != "skipped"} <= {
        r["provider"] for r in pending if r["message_pk"] == newest}
    assert any(r["provider"] == "nebuly" for r in pending if r["message_pk"] == newest)
    assert all(last - r["created_at"].replace(tzinfo=timezone.utc) < timedelta(hours=6) for r in pending)
    assert all(r["next_attempt_at"].replace(tzinfo=timezone.utc) > now for r in pending)
