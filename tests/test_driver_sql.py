"""The ingest's statements run as driver SQL: the same rows, values and types as SQLAlchemy's own execution."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import bindparam, insert, select, text, update
from sqlalchemy.dialects.sqlite import DATETIME as SQLITE_DATETIME

from conftest import runtime
from feedback_bridge import db as fdb
from feedback_bridge.driver_sql import DriverStatement
from feedback_bridge.schema import UTCDateTime, messages, outbox, states

KEYS = ("provider", "kind", "message_pk", "user_id", "status", "attempts", "next_attempt_at", "created_at",
        "updated_at", "last_error")


@pytest.fixture
def engine(make_app, database_url):
    engine = runtime(make_app(FEEDBACK_DATABASE_URL=database_url)).engine
    with fdb.write(engine) as conn:
        conn.execute(insert(messages), [{"id": pk, "conversation_id": "c", "message_id": f"m-{pk}", "user_id": "u",
                                         "refs": {}, "created_at": datetime.now(timezone.utc)} for pk in (1, 2, 3)])
    return engine


def delivery(pk: int, at: datetime, **changes) -> dict:
    return {"provider": "p", "kind": "event", "message_pk": pk, "user_id": "u", "status": "pending", "attempts": 0,
            "next_attempt_at": at, "created_at": at, "updated_at": at, "last_error": None, **changes}


def test_rows_written_as_driver_sql_read_back_as_those_sqlalchemy_writes(engine) -> None:
    """Stored alike, down to SQLite's text of a datetime, so range queries and sorts mix both kinds of rows."""
    here = timezone(timedelta(hours=2))
    at = datetime(2026, 12, 5, 21, 30, 15, 123456, tzinfo=here)  # not UTC: converted as SQLAlchemy converts it
    with fdb.write(engine) as conn:
        conn.execute(insert(outbox), [delivery(1, at)])
        DriverStatement(lambda dialect: insert(outbox), KEYS).executemany(conn, [delivery(2, at), delivery(3, at)])
    with fdb.read(engine) as conn:
        rows = conn.execute(select(outbox.c.message_pk, outbox.c.next_attempt_at).order_by(outbox.c.id)).all()
        stored = conn.exec_driver_sql("SELECT DISTINCT CAST(created_at AS TEXT) FROM feedback_outbox").all()
    assert rows == [(1, at), (2, at), (3, at)]
    assert rows[1].next_attempt_at.tzinfo == timezone.utc
    assert len(stored) == 1, stored
    if engine.dialect.name == "sqlite":  # the text SQLAlchemy's own SQLite DATETIME writes, whole seconds too
        assert stored == [("2026-12-05 19:30:15.123456",)]
        stock = SQLITE_DATETIME().bind_processor(engine.dialect)
        ours = UTCDateTime().bind_processor(engine.dialect)
        for moment in (at, at.replace(microsecond=0), datetime(2031, 1, 1, tzinfo=timezone.utc)):
            assert ours(moment) == stock(moment.astimezone(timezone.utc).replace(tzinfo=None))


def test_an_insert_of_many_rows_returns_them_processed_as_sqlalchemy_would(engine) -> None:
    now = datetime.now(timezone.utc)
    lock = DriverStatement(
        lambda dialect: fdb.insert_or_lock(dialect, states, ["message_pk", "user_id"], touch=[], keep=("copy_count",))
        .returning(states.c.message_pk, states.c.copied_at, states.c.copy_count),
        keys=("message_pk", "user_id", "copy_count"),
    )
    with fdb.write(engine) as conn:
        conn.execute(insert(states), {"message_pk": 1, "user_id": "u", "copied_at": now, "copy_count": 3})
        returned = lock.insert_returning(conn, [{"message_pk": pk, "user_id": "u", "copy_count": 0} for pk in (1, 2)])
        assert lock.insert_returning(conn, []) == []
    assert sorted(returned, key=lambda row: row["message_pk"]) == [
        {"message_pk": 1, "copied_at": now, "copy_count": 3},  # the existing row, kept as it was
        {"message_pk": 2, "copied_at": None, "copy_count": 0},
    ]


def test_a_statements_own_values_are_kept_and_every_row_gives_the_rest(engine) -> None:
    now = datetime.now(timezone.utc)
    skip = DriverStatement(
        lambda dialect: update(outbox).where(outbox.c.message_pk == bindparam("pk")).values(status="skipped"),
        keys=("pk",),
    )
    with fdb.write(engine) as conn:
        conn.execute(insert(outbox), [delivery(pk, now) for pk in (1, 2, 3)])
        skip.executemany(conn, [{"pk": 1}, {"pk": 3}])
        with pytest.raises(KeyError):
            skip.executemany(conn, [{}])
        with pytest.raises(ValueError, match=r"Not parameters of this statement: \['message'\]"):
            skip.executemany(conn, [{"pk": 2, "message": 2}])
        with pytest.raises(TypeError, match="Only an INSERT"):
            skip.insert_returning(conn, [{"pk": 2}])
    with fdb.read(engine) as conn:
        assert conn.execute(select(outbox.c.status).order_by(outbox.c.id)).scalars().all() == [
            "skipped", "pending", "skipped"]


def test_a_column_default_left_out_of_the_keys_is_refused_not_written_as_null(engine) -> None:
    """SQLAlchemy fills Python-side defaults (``attempts``) in at execution; driver SQL would send NULL."""
    statement = DriverStatement(lambda dialect: insert(outbox), [k for k in KEYS if k != "attempts"])
    with fdb.write(engine) as conn, pytest.raises(ValueError, match="'attempts' has no value"):
        row = delivery(1, datetime.now(timezone.utc))
        del row["attempts"]
        statement.executemany(conn, [row])


def test_a_naive_datetime_is_refused_and_each_distinct_one_is_converted(engine) -> None:
    statement = DriverStatement(lambda dialect: insert(outbox), KEYS)
    first = datetime(2026, 12, 5, 12, 0, tzinfo=timezone.utc)
    second = first + timedelta(microseconds=1)  # converting the last one seen again must not reuse its text
    with fdb.write(engine) as conn:
        statement.executemany(conn, [delivery(1, first), delivery(2, second), delivery(3, first)])
    with fdb.read(engine) as conn:
        assert conn.execute(select(outbox.c.created_at).order_by(outbox.c.id)).scalars().all() == [
            first, second, first]
    with fdb.write(engine) as conn, pytest.raises(ValueError, match="naive datetime"):
        statement.executemany(conn, [delivery(1, datetime(2026, 12, 5, 12, 0))])
    with fdb.read(engine) as conn:
        assert conn.execute(text("SELECT count(*) FROM feedback_outbox")).scalar() == 3
