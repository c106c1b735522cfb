"""The ingest's statements run as driver SQL: the same rows, values and types as SQLAlchemy's own execution."""

from __future__ import annotations

import logging
import sqlite3
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import Column, MetaData, Table, bindparam, create_engine, insert, select, text, update
from sqlalchemy import event as sa_event
from sqlalchemy.dialects.sqlite import DATETIME as SQLITE_DATETIME
from sqlalchemy.exc import IntegrityError

from conftest import register, runtime
from feedback_bridge import db as fdb
from feedback_bridge.driver_sql import MAX_GROUPS, DriverStatement
from feedback_bridge.schema import UTCDateTime, messages, outbox, states
from support import RecordingAdapter, event, post_events, statements_run

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


@pytest.mark.parametrize(("stored", "expected"), [
    ("2026-12-05 19:30:15.123456", datetime(2026, 12, 5, 19, 30, 15, 123456, tzinfo=timezone.utc)),
    ("2026-12-05 19:30:15", datetime(2026, 12, 5, 19, 30, 15, tzinfo=timezone.utc)),
    ("2026-12-05 21:30:15+02:00", datetime(2026, 12, 5, 19, 30, 15, tzinfo=timezone.utc)),  # another program's
    (None, None),
])
def test_sqlite_datetime_texts_read_back_as_aware_utc_datetimes(tmp_path, stored, expected) -> None:
    table = Table("moments", MetaData(), Column("at", UTCDateTime))
    engine = fdb.make_engine(f"sqlite:///{tmp_path}/moments.sqlite3")
    with fdb.write(engine) as conn:
        table.create(conn)
        conn.exec_driver_sql("INSERT INTO moments (at) VALUES (?)", (stored,))
    with fdb.read(engine) as conn:
        read = conn.execute(select(table.c.at)).scalar_one()
    assert read == expected
    assert read is None or read.tzinfo is timezone.utc


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


def test_many_rows_are_inserted_in_order_a_bounded_number_of_groups_at_a_time(engine) -> None:
    """Rows past ``MAX_GROUPS`` take more statements, in row order (ids ascend with the rows); the compiled
    statements kept are one per group count, whatever the row counts asked for."""
    statement = DriverStatement(lambda dialect: insert(outbox), KEYS)
    at = datetime.now(timezone.utc)
    total = 2 * MAX_GROUPS + 5
    with statements_run(engine) as run, fdb.write(engine) as conn:
        statement.insert_many(conn, [delivery(1 + i % 3, at, last_error=str(i)) for i in range(total)])
        for count in range(1, 3 * MAX_GROUPS):
            statement.insert_many(conn, [delivery(1, at)] * count)
    assert [len(params) for _, params in run[:3]] == [MAX_GROUPS * len(KEYS)] * 2 + [5 * len(KEYS)]
    assert len(statement._compiled) == MAX_GROUPS
    with fdb.read(engine) as conn:
        errors = conn.execute(select(outbox.c.last_error).order_by(outbox.c.id).limit(total)).scalars().all()
    assert errors == [str(i) for i in range(total)]


def test_cursor_listeners_see_each_statement_and_driver_errors_arrive_as_sqlalchemys(engine) -> None:
    """Driver SQL skips SQLAlchemy's execution objects, not its cursor events nor its exception types."""
    statement = DriverStatement(lambda dialect: insert(outbox), KEYS)
    seen: list[tuple[str, str, bool]] = []
    for when in ("before", "after"):
        sa_event.listen(engine, f"{when}_cursor_execute",
                        lambda conn, cursor, sql, params, context, many, when=when: seen.append((when, sql, many)))
    at = datetime.now(timezone.utc)
    with fdb.write(engine) as conn:
        statement.insert_many(conn, [delivery(1, at)])
        statement.executemany(conn, [delivery(2, at)])
    assert [(when, sql.split(" (")[0], many) for when, sql, many in seen] == [
        ("before", "INSERT INTO feedback_outbox", False), ("after", "INSERT INTO feedback_outbox", False),
        ("before", "INSERT INTO feedback_outbox", True), ("after", "INSERT INTO feedback_outbox", True),
    ]
    with pytest.raises(IntegrityError) as raised, fdb.write(engine) as conn:  # no such message: a foreign key
        statement.insert_many(conn, [delivery(99, at)])
    assert "INSERT INTO feedback_outbox" in raised.value.statement
    with fdb.read(engine) as conn:
        assert conn.execute(text("SELECT count(*) FROM feedback_outbox")).scalar() == 2


class Refused(Exception):
    """What an application's ``handle_error`` listener may turn a database error into."""


def test_handle_error_listeners_see_driver_sql_errors_and_may_replace_them(engine) -> None:
    seen: list[tuple[str, type]] = []

    def translate(context):
        seen.append((context.statement, type(context.sqlalchemy_exception)))
        return Refused(str(context.original_exception))

    sa_event.listen(engine, "handle_error", translate)
    statement = DriverStatement(lambda dialect: insert(outbox), KEYS)
    with pytest.raises(Refused), fdb.write(engine) as conn:  # no such message: a foreign key
        statement.insert_many(conn, [delivery(99, datetime.now(timezone.utc))])
    sa_event.remove(engine, "handle_error", translate)
    assert len(seen) == 1 and seen[0][0].startswith("INSERT INTO feedback_outbox")
    assert issubclass(seen[0][1], IntegrityError)
    with pytest.raises(IntegrityError), fdb.write(engine) as conn:  # without the listener: SQLAlchemy's type
        statement.insert_many(conn, [delivery(99, datetime.now(timezone.utc))])


@pytest.mark.parametrize("echo", [True, False], ids=["echo", "logging-configured"])
def test_an_engine_that_logs_its_sql_logs_driver_sql_too(make_app, database_url, caplog, echo) -> None:
    engine = runtime(make_app(FEEDBACK_DATABASE_URL=database_url, FEEDBACK_ENGINE_OPTIONS={"echo": echo})).engine
    with fdb.write(engine) as conn:
        conn.execute(insert(messages), {"id": 1, "conversation_id": "c", "message_id": "m", "user_id": "u",
                                        "refs": {}, "created_at": datetime.now(timezone.utc)})
    with caplog.at_level(logging.INFO, logger="sqlalchemy.engine.Engine"), fdb.write(engine) as conn:
        statement = DriverStatement(lambda dialect: insert(outbox), KEYS)
        statement.insert_many(conn, [delivery(1, datetime.now(timezone.utc))])
    assert any(record.getMessage().startswith("INSERT INTO feedback_outbox") for record in caplog.records)
    with fdb.read(engine) as conn:
        assert conn.execute(text("SELECT count(*) FROM feedback_outbox")).scalar() == 1


def test_every_datetime_is_written_as_its_own_text_however_many_are_converted(engine) -> None:
    """The SQLite processor keeps the text of the last few datetimes by identity: past its limit it forgets them,
    and objects made later (at addresses freed by then) must still get their own text."""
    statement = DriverStatement(lambda dialect: insert(outbox), KEYS)
    start = datetime(2026, 12, 5, 12, 0, tzinfo=timezone.utc)
    with fdb.write(engine) as conn:
        for i in range(300):
            moment = start + timedelta(seconds=i)  # each object dropped after its row: its address can come back
            statement.insert_many(conn, [delivery(1, moment), delivery(2, start)])
    with fdb.read(engine) as conn:
        rows = conn.execute(select(outbox.c.message_pk, outbox.c.created_at).order_by(outbox.c.id)).all()
    assert [at for pk, at in rows if pk == 1] == [start + timedelta(seconds=i) for i in range(300)]
    assert {at for pk, at in rows if pk == 2} == {start}


def test_threads_converting_datetimes_at_once_each_get_their_own_texts() -> None:
    """SQLite's kept texts are shared by every column and thread: a thread's entries, or its clearing of them,
    never give another thread a wrong text."""
    convert = UTCDateTime().bind_processor(create_engine("sqlite://").dialect)
    start = datetime(2026, 12, 6, tzinfo=timezone.utc)
    barrier = threading.Barrier(4)

    def wrong_texts(thread: int) -> list[str]:
        barrier.wait()
        wrong = []
        for i in range(2000):
            moment = start + timedelta(microseconds=thread * 10_000 + i)  # a new object each time
            for _ in range(2):  # the second one found kept, unless another thread has cleared it
                if convert(moment) != moment.replace(tzinfo=None).isoformat(" ", "microseconds"):
                    wrong.append(moment.isoformat())
        return wrong

    with ThreadPoolExecutor(4) as pool:
        assert [w for wrong in pool.map(wrong_texts, range(4)) for w in wrong] == []


def test_outside_a_transaction_driver_sql_begins_one_as_sqlalchemy_would(engine) -> None:
    with engine.connect() as conn:
        statement = DriverStatement(lambda dialect: insert(outbox), KEYS)
        statement.insert_many(conn, [delivery(1, datetime.now(timezone.utc))])
        assert conn.in_transaction()
        conn.rollback()
    with fdb.read(engine) as conn:
        assert conn.execute(text("SELECT count(*) FROM feedback_outbox")).scalar() == 0


def test_a_postgresql_connection_lost_mid_ingest_refuses_the_batch_and_the_next_one_is_stored(make_app, pg_url) -> None:
    """Driver SQL raises the driver's error itself: the batch must still be refused whole, and the next one stored,
    on another connection."""
    app = make_app(FEEDBACK_DATABASE_URL=pg_url, FEEDBACK_PROVIDERS={"ev": RecordingAdapter("ev", mode="event")})
    engine, token = runtime(app).engine, register(app)
    killer = create_engine(pg_url)
    inserted_by: list[int] = []

    def kill_the_first_insert(conn, cursor, statement, *_args) -> None:
        if statement.startswith("INSERT INTO feedback_events"):
            inserted_by.append(pid := conn.connection.dbapi_connection.info.backend_pid)
            if len(inserted_by) == 1:
                with killer.connect() as other:
                    other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})

    failures: list[tuple[str, bool]] = []
    sa_event.listen(engine, "before_cursor_execute", kill_the_first_insert)
    sa_event.listen(engine, "handle_error",
                    lambda context: failures.append((context.statement or "", context.is_disconnect)))
    lost = app.test_client().post("/feedback/events", json={"events": [event("thumbs_up", token)]})
    assert lost.status_code == 500, lost.json
    # The insert's failure is handled as SQLAlchemy handles a lost connection: invalidated, not pooled again.
    assert failures[0][0].startswith("INSERT INTO feedback_events") and failures[0][1], failures
    post_events(app, event("thumbs_down", token))
    sa_event.remove(engine, "before_cursor_execute", kill_the_first_insert)
    assert len(inserted_by) == 2 and inserted_by[0] != inserted_by[1]
    with fdb.read(engine) as conn:
        assert conn.execute(select(outbox.c.status)).scalars().all() == ["pending"]
        assert conn.execute(text("SELECT type FROM feedback_events")).scalars().all() == ["thumbs_down"]
    killer.dispose()


def test_a_statement_of_one_parameter_takes_it_from_each_row(engine) -> None:
    """A row's values are a tuple however few: one parameter is a one-item tuple, not the value itself."""
    at = datetime.now(timezone.utc)
    by_message = DriverStatement(lambda dialect: update(outbox).where(outbox.c.message_pk == bindparam("pk")).values(
        last_error=outbox.c.provider), keys=("pk",))  # its only parameter: the row's
    with fdb.write(engine) as conn:
        DriverStatement(lambda dialect: insert(outbox), KEYS).insert_many(conn, [delivery(1, at), delivery(2, at)])
        by_message.executemany(conn, [{"pk": 2}])
    with fdb.read(engine) as conn:
        assert conn.execute(select(outbox.c.message_pk, outbox.c.last_error).order_by(outbox.c.message_pk)).all() == [
            (1, None), (2, "p")]


ORDERED_KEYS = ("provider", "kind", "message_pk", "user_id", "status", "attempts", "next_attempt_at", "last_error",
                "created_at", "updated_at")  # KEYS in the table's column order: the statement's parameter order


def test_rows_given_as_tuples_are_written_as_dict_rows_are(engine) -> None:
    """A tuple holds its values as the driver takes them: a ``converter`` converts a datetime once for many rows."""
    here = timezone(timedelta(hours=2))
    at = datetime(2026, 12, 5, 21, 30, 15, 123456, tzinfo=here)
    as_tuples = DriverStatement(lambda dialect: insert(outbox), ORDERED_KEYS, tuples=True)
    with fdb.write(engine) as conn:
        DriverStatement(lambda dialect: insert(outbox), KEYS).insert_many(conn, [delivery(1, at)])
        bound = as_tuples.converter(conn, "created_at")(at)
        assert as_tuples.converter(conn, "last_error")("kept") == "kept"  # no processor: the value itself
        as_tuples.insert_many(conn, [("p", "event", pk, "u", "pending", 0, bound, None, bound, bound) for pk in (2, 3)])
        as_tuples.executemany(conn, [("p", "event", 3, "u", "skipped", 0, bound, "why", bound, bound)])
    if engine.dialect.name == "sqlite":
        assert bound == "2026-12-05 19:30:15.123456"
    else:
        assert bound == at and bound.tzinfo == timezone.utc
    columns = [outbox.c[key] for key in ORDERED_KEYS]
    with fdb.read(engine) as conn:
        rows = conn.execute(select(*columns).order_by(outbox.c.id)).all()
        texts = conn.exec_driver_sql("SELECT DISTINCT CAST(created_at AS TEXT) FROM feedback_outbox").all()
    assert [tuple(row) for row in rows] == [
        ("p", "event", 1, "u", "pending", 0, at, None, at, at), ("p", "event", 2, "u", "pending", 0, at, None, at, at),
        ("p", "event", 3, "u", "pending", 0, at, None, at, at), ("p", "event", 3, "u", "skipped", 0, at, "why", at, at)]
    assert len(texts) == 1, texts


def test_tuples_out_of_the_statements_order_or_of_another_length_are_refused(engine) -> None:
    """A tuple's values are placed by position: a key out of order, or one missing, would shift the others; a
    converter asked for a key the statement does not have would leave its values unconverted."""
    at = datetime.now(timezone.utc)
    out_of_order = DriverStatement(lambda dialect: insert(outbox), KEYS, tuples=True)
    as_tuples = DriverStatement(lambda dialect: insert(outbox), ORDERED_KEYS, tuples=True)
    with fdb.write(engine) as conn:
        with pytest.raises(ValueError, match="in their order"):
            out_of_order.insert_many(conn, [tuple(delivery(1, at)[key] for key in KEYS)])
        with pytest.raises(ValueError, match="A row of 9 values, where this statement takes 10"):
            as_tuples.insert_many(conn, [("p", "event", 1, "u", "pending", 0, at, None, at)])
        with pytest.raises(ValueError, match="'creatd_at' is not a parameter of this statement"):
            as_tuples.converter(conn, "creatd_at")
    with fdb.read(engine) as conn:
        assert conn.execute(text("SELECT count(*) FROM feedback_outbox")).scalar() == 0


def test_sqlite_binds_a_none_through_its_own_adapter_before_python_3_12(engine, monkeypatch) -> None:
    """Without one, sqlite3 (before 3.12) formats an AttributeError for every None it binds (db._bind_none_at_once).
    The adapter binds NULL, as before; an application's own is kept."""
    key = (type(None), sqlite3.PrepareProtocol)
    if engine.dialect.name == "sqlite":
        assert (sqlite3.adapters.get(key) is fdb._none) == (sys.version_info < (3, 12))
        with fdb.read(engine) as conn:
            assert conn.exec_driver_sql("SELECT ? IS NULL, typeof(?)", (None, None)).one() == (1, "null")
    theirs = lambda value: None  # noqa: E731
    monkeypatch.setitem(sqlite3.adapters, key, theirs)
    fdb.make_engine("sqlite://").dispose()
    assert sqlite3.adapters[key] is theirs
