"""Engine creation and transactions, with the SQLite settings a concurrent writer needs."""

from __future__ import annotations

import sqlite3
import sys
import weakref
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql import Insert, TableClause

from .schema import metadata
from .write_gate import WriteGate

SQLITE_BUSY_TIMEOUT_MS = 30_000
# The PRAGMA synchronous levels offered. OFF is not: in WAL mode a crash of the machine could then corrupt the
# database, where NORMAL can only lose its last commits.
SQLITE_SYNCHRONOUS = ("NORMAL", "FULL", "EXTRA")
T = TypeVar("T")
_write_gates: weakref.WeakKeyDictionary[Engine, WriteGate] = weakref.WeakKeyDictionary()


def make_engine(url: str, options: dict[str, Any] | None = None, *, sqlite_synchronous: str = "NORMAL") -> Engine:
    """``sqlite_synchronous``: SQLite's ``PRAGMA synchronous`` (``FEEDBACK_SQLITE_SYNCHRONOUS``)."""
    if sqlite_synchronous not in SQLITE_SYNCHRONOUS:
        raise ValueError(f"sqlite_synchronous must be one of {SQLITE_SYNCHRONOUS}, not {sqlite_synchronous!r}")
    options = dict(options or {})
    if url.startswith("sqlite"):
        engine = create_engine(url, **options)
        _configure_sqlite(engine, sqlite_synchronous)
    else:
        options.setdefault("pool_pre_ping", True)
        engine = create_engine(url, **options)
    return engine


def _bind_none_at_once() -> None:
    """Before Python 3.12, sqlite3 binds a None only after looking for an adapter for it, and the look-up fails by
    formatting an AttributeError (on its ``PrepareProtocol``): 0.3 us a None, and an event binds about 12 (its NULL
    columns, and its deliveries'), 2% of a batch's instructions. None's own adapter, binding NULL as before, is
    found at once. 3.12 fails the look-up without making an error, which is faster than any adapter. An adapter the
    application registered is kept."""
    if sys.version_info < (3, 12) and (type(None), sqlite3.PrepareProtocol) not in sqlite3.adapters:
        sqlite3.register_adapter(type(None), _none)


def _none(value: None) -> None:
    return value


def _configure_sqlite(engine: Engine, synchronous: str) -> None:
    _bind_none_at_once()
    # pysqlite's own transaction handling defers BEGIN and never takes the write lock up front,
    # which turns concurrent read-then-write transactions into "database is locked" errors.
    # We emit BEGIN ourselves: IMMEDIATE for writes (one writer at a time, waiting on busy_timeout),
    # DEFERRED for read-only work, see `read()`.
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        if engine.url.database not in (None, "", ":memory:"):
            cursor.execute("PRAGMA journal_mode=WAL")
        # In WAL mode NORMAL survives the process being killed, not a power loss (the last commits may roll back);
        # FULL syncs the log at every commit.
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.close()

    database = engine.url.database
    if database not in (None, "", ":memory:") and not database.startswith("file:"):
        _write_gates[engine] = WriteGate(database, SQLITE_BUSY_TIMEOUT_MS / 1000)

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "IMMEDIATE")
        if mode:  # None: no BEGIN, each statement its own transaction (see `single_statement_reader`)
            # Straight to the driver: through SQLAlchemy's execution path a BEGIN cost ~50 us, 5% of an event.
            conn.connection.dbapi_connection.execute(f"BEGIN {mode}")


# Any constant shared by every process of every app: PostgreSQL's advisory lock key for creating the tables.
_CREATE_LOCK = 0x46424252  # "FBBR"


def create_all(engine: Engine) -> None:
    """Create missing tables. App processes starting together on PostgreSQL take turns (an advisory lock),
    or each would see the tables missing and all but one fail on the duplicate; SQLite's IMMEDIATE
    transaction already serialises them."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _CREATE_LOCK})
        metadata.create_all(conn)


def create_missing_indexes(engine: Engine) -> list[str]:
    """Create the indexes ``schema.py`` declares that existing tables lack (``create_all`` adds indexes only
    with new tables), e.g. after an upgrade. Returns their names. On a large store this takes a while, and on
    PostgreSQL blocks writes to each table while its index is built: run it in a quiet moment."""
    created = []
    with engine.begin() as conn:
        existing = inspect(conn)
        for table in metadata.sorted_tables:
            have = {index["name"] for index in existing.get_indexes(table.name)}
            for index in sorted(table.indexes, key=lambda i: i.name or ""):
                if index.name not in have:
                    index.create(conn)
                    created.append(str(index.name))
    return created


@contextmanager
def write(engine: Engine) -> Iterator[Connection]:
    """A write transaction: committed on success, rolled back on error. On a SQLite file, writers queue for the
    write lock at a gate (see ``write_gate``), taken once the connection is out of the pool."""
    gate = _write_gates.get(engine)
    with engine.connect() as conn, gate.hold() if gate else nullcontext(), conn.begin():
        yield conn


@contextmanager
def read(engine: Engine) -> Iterator[Connection]:
    """A read-only transaction that never takes SQLite's write lock."""
    with engine.connect().execution_options(sqlite_begin="DEFERRED") as conn, conn.begin():
        yield conn


def single_statement_reader(engine: Engine) -> Callable[[], AbstractContextManager[Connection]]:
    """Connections for reads of one statement. They run in autocommit, where a statement is its own snapshot:
    the same answer without BEGIN and COMMIT, about half the time of ``read()`` for the token look-up every event
    needs (PostgreSQL: two round trips fewer; SQLite: 160 -> 65 us)."""
    if engine.dialect.name == "postgresql":
        return engine.execution_options(isolation_level="AUTOCOMMIT").connect
    if engine.dialect.name == "sqlite":
        return engine.execution_options(sqlite_begin=None).connect  # pysqlite itself never BEGINs here
    return lambda: read(engine)


def prepared(build: Callable[[str], T]) -> Callable[[Connection], T]:
    """Build a statement once per dialect and reuse it: ``build(dialect_name)``, then
    ``conn.execute(stmt(conn), params)``. Constructing a statement with ``.values(...)`` on every call costs
    SQLAlchemy several times the database's own work on the ingest path; a prebuilt one does not."""
    built: dict[str, T] = {}

    def get(conn: Connection) -> T:
        name = conn.dialect.name
        if name not in built:
            built[name] = build(name)
        return built[name]

    return get


def _dialect_insert(dialect: str, table: TableClause) -> Insert:
    return (postgresql if dialect == "postgresql" else sqlite).insert(table)


def insert_or_lock(
    dialect: str, table: TableClause, index_elements: list[str], touch: list[str], keep: tuple[str, ...] = ()
) -> Insert:
    """``INSERT ... ON CONFLICT DO UPDATE SET touch = excluded.touch, keep = keep``: unlike DO NOTHING, the
    row it conflicts with is updated, so PostgreSQL keeps it locked until this transaction ends; RETURNING
    gives that row. ``keep`` columns are set to their own value: a lock that changes nothing."""
    stmt = _dialect_insert(dialect, table)
    set_ = {name: stmt.excluded[name] for name in touch} | {name: table.c[name] for name in keep}
    return stmt.on_conflict_do_update(index_elements=index_elements, set_=set_)


def insert_ignore(dialect: str, table: TableClause, index_elements: list[str]) -> Insert:
    """``INSERT ... ON CONFLICT DO NOTHING`` for the dialect."""
    return _dialect_insert(dialect, table).on_conflict_do_nothing(index_elements=index_elements)
