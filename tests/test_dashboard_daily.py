"""The overview's saved day counts (``daily.py``), on SQLite and PostgreSQL: a warm overview is the cold one, a day
is saved only once closed, and a purge or a seed never leaves counts of rows that are gone."""

from __future__ import annotations

import dataclasses
from datetime import date, datetime, timedelta, timezone

import pytest
from sqlalchemy import Engine, select, update

from conftest import runtime
from feedback_bridge import daily, db, maintenance
from feedback_bridge.dashboard import queries
from feedback_bridge.schema import daily_counts, events
from feedback_bridge.seed import seed_store

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)
MIDNIGHT = datetime(2026, 11, 20, tzinfo=timezone.utc)


@pytest.fixture
def engine(make_app, database_url) -> Engine:
    engine = runtime(make_app(FEEDBACK_DATABASE_URL=database_url)).engine
    assert seed_store(engine, 400, now=NOW, seed=3) == 400
    return engine


def saved(engine: Engine) -> dict[date, dict[str, int]]:
    with db.read(engine) as conn:
        return {day: counts for day, counts in conn.execute(select(daily_counts.c.day, daily_counts.c.counts))
                if day != daily.MARK_DAY}


def numbers(overview: queries.Overview) -> dict:
    """Everything the page shows."""
    return {**dataclasses.asdict(overview), "total": overview.total, "up_share": overview.up_share,
            "copy_rate": overview.copy_rate}


def test_a_warm_overview_is_the_cold_one_and_reads_only_saved_closed_days(engine):
    since = NOW - timedelta(days=90)
    cold = queries.overview(engine, since, NOW)

    # Saved: every whole day before today; not the window's first, partial day, nor today.
    expected_days = {(since + timedelta(days=k)).date() for k in range(1, 90)}
    assert set(saved(engine)) == expected_days
    assert queries.overview(engine, since, NOW) == cold
    assert cold.total == 400 and sum(cold.ratings.values()) > 0 and cold.answers > 0  # seeded over 12 weeks

    # The warm render takes its closed days from the table: change one, and the overview shows it.
    day = (NOW - timedelta(days=2)).date()
    with db.write(engine) as conn:
        conn.execute(update(daily_counts).where(daily_counts.c.day == day)
                     .values(counts={**saved(engine)[day], "all": 10_000}))
    warm = queries.overview(engine, since, NOW)
    assert warm.total == cold.total - next(d.total for d in cold.days if d.day == day) + 10_000


def test_a_day_is_saved_only_once_closed(engine):
    yesterday = (MIDNIGHT - timedelta(days=1)).date()
    since = MIDNIGHT - timedelta(days=3)

    queries.overview(engine, since, MIDNIGHT + timedelta(minutes=2))
    assert yesterday not in saved(engine)  # a request stamped 23:59:59 may still be committing
    queries.overview(engine, since, MIDNIGHT + daily.CLOSE_AFTER)
    assert yesterday in saved(engine)

    # A window ending in the past saves its closed days too, but never a day cut by the window.
    queries.overview(engine, NOW - timedelta(days=20, hours=6), NOW - timedelta(days=10, hours=6))
    assert (NOW - timedelta(days=20, hours=6)).date() not in saved(engine)
    assert (NOW - timedelta(days=11)).date() in saved(engine)


@pytest.mark.parametrize("purge", ["user", "older"])
def test_a_purge_forgets_the_saved_days(engine, purge):
    since = NOW - timedelta(days=90)
    before = queries.overview(engine, since, NOW)
    assert saved(engine)
    with db.read(engine) as conn:
        user = conn.execute(select(events.c.user_id).order_by(events.c.id).limit(1)).scalar_one()

    if purge == "user":
        report = maintenance.purge_user(engine, user)
    else:
        report = maintenance.purge_older_than(engine, NOW - timedelta(days=30))
    assert report["events"] > 0
    if purge == "user":
        assert saved(engine) == {}
    else:  # days after the cutoff's lost nothing: they stay saved
        assert min(saved(engine)) == (NOW - timedelta(days=29)).date()

    after = queries.overview(engine, since, NOW)
    with db.read(engine) as conn:
        left = conn.execute(select(events.c.received_at).where(events.c.received_at >= since)).scalars().all()
    assert after.total == len(left) == before.total - report["events"]


def test_counts_read_before_a_purge_are_not_saved_after_it(engine):
    day = (NOW - timedelta(days=5)).date()
    start = datetime.combine(day, datetime.min.time(), tzinfo=timezone.utc)
    with db.read(engine) as conn:
        found, mark = daily.load(conn, [day])
        counts = daily.count_range(conn, start, start + timedelta(days=1))
    assert found == {}
    with db.write(engine) as conn:
        daily.forget(conn)  # a purge commits while the render is counting

    assert daily.save(engine, {day: counts}, mark, NOW) is False
    assert saved(engine) == {}
    with db.read(engine) as conn:
        _, mark = daily.load(conn, [day])
    assert daily.save(engine, {day: counts}, mark, NOW) is True
    assert saved(engine) == {day: counts}


def test_a_saved_day_of_an_older_layout_is_counted_again(engine):
    since = NOW - timedelta(days=7)
    first = queries.overview(engine, since, NOW)
    day = (NOW - timedelta(days=3)).date()
    with db.write(engine) as conn:
        conn.execute(update(daily_counts).where(daily_counts.c.day == day).values(counts={"all": 1}))

    assert queries.overview(engine, since, NOW) == first
    assert set(saved(engine)[day]) == set(daily.KEYS)


def test_a_seed_forgets_the_saved_days(engine):
    since = NOW - timedelta(days=90)
    queries.overview(engine, since, NOW)
    assert saved(engine)
    seed_store(engine, 100, now=NOW, seed=4)
    assert saved(engine) == {}
    assert queries.overview(engine, since, NOW).total == 500
