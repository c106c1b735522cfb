"""The ingest's many-row statements, compiled by SQLAlchemy once and run as the driver's own SQL.

For every parameter set of an executemany or a multi-row insert, SQLAlchemy builds the parameters in Python and
calls a bind processor per value: for a batch of 20 events (about 140 rows across its statements) that was a
fifth of the request's CPU, as much as the database took to write the rows. A ``DriverStatement`` compiles its
statement once per dialect (and row count), with positional parameters, and hands the DB-API cursor tuples:
values are converted only where their column's type has a processor (the UTC datetimes), by that processor.

The cursor is the transaction's own, called as ``exec_driver_sql`` would call it, without the execution context
and result objects SQLAlchemy builds around each call (a ninth of a single event's instructions, for its six
statements): ``before_cursor_execute`` and ``after_cursor_execute`` listeners are still called (with no context),
a failed statement is handled by SQLAlchemy (``handle_error`` listeners called, a lost connection invalidated, the
error raised as its ``DBAPIError`` subclass), and an engine that logs its SQL (``echo``, or the
``sqlalchemy.engine`` logger at INFO) logs these statements and their parameters too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from itertools import chain
from typing import Any

from sqlalchemy import Connection, Insert, bindparam
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.dml import UpdateBase

Row = Mapping[str, Any]
# VALUES groups per INSERT: more rows take several statements. It bounds the compiled statements kept (one per
# group count), and keeps a statement under the 999 parameters SQLite before 3.32 allowed.
MAX_GROUPS = 32


class _Compiled:
    """A statement as the driver runs it: its SQL, and how to make its positional values from rows.

    ``values(row)`` is a function made for the statement, as ``namedtuple`` makes its methods: one tuple display of
    the row's items in parameter order, each passed through its column type's processor where it has one, the
    statement's own constants in place (a batch of 20 binds about 140 rows: an ``itemgetter``, a dict merge and a
    loop over the conversions cost 2% more of its instructions). With ``groups`` VALUES groups (0: a statement for
    executemany), the values are one such block per row, and the parameters of group i are named ``{key}_{i}``."""

    def __init__(self, statement: UpdateBase, dialect: Dialect, keys: Sequence[str], groups: int,
                 tuples: bool) -> None:
        # for_executemany: no implicit RETURNING of the primary key, which a one-row INSERT would get.
        compiled = statement.compile(dialect=dialect, for_executemany=True)
        self.sql = compiled.string
        names = list(compiled.positiontup or ())
        block = len(names) // max(groups, 1)
        source = {(f"{key}_0" if groups else key): key for key in keys}
        picked, items, names_used = [], [], {}  # names_used: what the generated function's items refer to
        self.converts: dict[str, Callable[[Any], Any]] = {}
        for position, name in enumerate(names[:block]):
            bind = compiled.binds[name]
            convert = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if name in source:
                picked.append(source[name])
                item = f"row[{source[name]!r}]"
                if convert:
                    self.converts[source[name]] = convert
                    names_used[f"convert_{position}"] = convert
                    item = f"convert_{position}({item})"
            elif bind.value is not None:  # a constant of the statement, such as a status it sets
                picked.append(name)
                names_used[f"constant_{position}"] = convert(bind.value) if convert else bind.value
                item = f"constant_{position}"
            else:  # e.g. a column default, which SQLAlchemy fills in at execution and this does not
                raise ValueError(f"{name!r} has no value: give it in every row.")
            items.append(item)
        expected = [f"{key}_{i}" for i in range(groups) for key in picked] if groups else names
        if names != expected:
            raise ValueError(f"Unexpected parameters for {groups} VALUES groups: {names}")
        if tuples and picked != list(keys):
            raise ValueError(f"Rows given as tuples must hold the parameters in their order, {picked}, not {keys}.")
        display = "".join(f"{item}, " for item in items)  # "(a, )": a tuple display, of one item too
        # Rows given as tuples are their values already: no function is made for them.
        self.values: Callable[[Row], tuple[Any, ...]] | None = None if tuples else eval(
            f"lambda row: ({display})", names_used)
        returning = [(column.key, column.type.dialect_impl(dialect).result_processor(dialect, None))
                     for column in statement.exported_columns]
        self.returned_keys = tuple(key for key, _ in returning)
        self.result_converts = [(key, convert) for key, convert in returning if convert]

    def result(self, fetched: Sequence[Sequence[Any]]) -> list[dict[str, Any]]:
        keys = self.returned_keys
        rows = [dict(zip(keys, row, strict=True)) for row in fetched]
        for key, convert in self.result_converts:
            for row in rows:
                row[key] = convert(row[key])
        return rows


class DriverStatement:
    """``build(dialect_name)`` gives the statement; ``keys`` are the row keys its parameters are named by.

    - ``executemany(conn, rows)``: one statement, run for every row (no RETURNING).
    - ``insert_many(conn, rows)``: an INSERT given as many VALUES groups as rows (``MAX_GROUPS`` at most per
      statement, in row order): the database runs one statement where an executemany runs one per row.
    - ``insert_returning(conn, rows)``: the same, with its RETURNING rows as dicts, processed as SQLAlchemy would
      (their order within a statement is the database's).

    Rows are dicts by key, each value converted by its column type's processor; or, with ``tuples``, tuples of the
    values in ``keys`` order, which must be the statement's parameter order, each already as the driver takes it
    (see ``converter``). Tuples are for the rows made by the thousand: an outbox row holds two of its batch's
    datetimes, converted once a batch, where a dict row took three conversions and a function call of its own.
    """

    def __init__(self, build: Callable[[str], UpdateBase], keys: Sequence[str], *, tuples: bool = False) -> None:
        self.build = build
        self.keys = tuple(keys)
        self.tuples = tuples
        self._keys = frozenset(keys)
        self._compiled: dict[tuple[type[Dialect], int], _Compiled] = {}

    def _dialect(self, conn: Connection) -> Dialect:
        """The dialect to compile with: positional parameters (tuples are cheaper than dicts); for psycopg,
        PostgreSQL's own ``$n``, which its ``RawCursor`` takes (see ``_cursor``)."""
        dialect = conn.dialect
        if dialect.positional and dialect.driver != "psycopg":
            return dialect
        if type(dialect) not in _positional_dialects:
            style = "numeric_dollar" if dialect.driver == "psycopg" else "format"
            _positional_dialects[type(dialect)] = type(dialect)(paramstyle=style)
        return _positional_dialects[type(dialect)]

    def compiled(self, conn: Connection, rows: int) -> _Compiled:
        """``rows`` 0: the statement for executemany; n: an INSERT with n VALUES groups."""
        found = self._compiled.get((type(conn.dialect), rows))
        if found is None:
            statement = self.build(conn.dialect.name)
            if rows == 0:
                if isinstance(statement, Insert):
                    statement = statement.values({key: bindparam(key) for key in self.keys})
            elif isinstance(statement, Insert):
                statement = statement.values([{key: bindparam(f"{key}_{i}") for key in self.keys}
                                              for i in range(rows)])
            else:
                raise TypeError("Only an INSERT takes VALUES groups.")
            found = _Compiled(statement, self._dialect(conn), self.keys, rows, self.tuples)
            self._compiled[(type(conn.dialect), rows)] = found
        return found

    def converter(self, conn: Connection, key: str) -> Callable[[Any], Any]:
        """What makes a value of the parameter ``key`` as the driver takes it, as a row of ``tuples`` holds it."""
        if key not in self._keys:  # or a misspelt key's values would go to the driver unconverted
            raise ValueError(f"{key!r} is not a parameter of this statement: {self.keys}")
        return self.compiled(conn, 0).converts.get(key, _as_it_is)

    def _check(self, row: Any) -> None:
        """A key the statement does not take would be dropped without a word; SQLAlchemy would write it. A tuple
        of another length would shift every value after the first missing one."""
        if self.tuples:
            if len(row) != len(self.keys):
                raise ValueError(f"A row of {len(row)} values, where this statement takes {len(self.keys)}: "
                                 f"{self.keys}")
        elif not self._keys.issuperset(row):
            raise ValueError(f"Not parameters of this statement: {sorted(row.keys() - self._keys)}")

    def executemany(self, conn: Connection, rows: Sequence[Any]) -> None:
        if rows:
            self._check(rows[0])
            compiled = self.compiled(conn, 0)
            _run(conn, compiled.sql, rows if self.tuples else [compiled.values(row) for row in rows], many=True)

    def insert_many(self, conn: Connection, rows: Sequence[Any]) -> None:
        self._inserts(conn, rows, fetch=False)

    def insert_returning(self, conn: Connection, rows: Sequence[Any]) -> list[dict[str, Any]]:
        return self._inserts(conn, rows, fetch=True)

    def _inserts(self, conn: Connection, rows: Sequence[Any], *, fetch: bool) -> list[dict[str, Any]]:
        returned: list[dict[str, Any]] = []
        if rows:
            self._check(rows[0])
        for start in range(0, len(rows), MAX_GROUPS):
            group = rows[start:start + MAX_GROUPS]
            compiled = self.compiled(conn, len(group))
            values = group if self.tuples else map(compiled.values, group)
            fetched = _run(conn, compiled.sql, tuple(chain.from_iterable(values)), fetch=fetch)
            returned += compiled.result(fetched)
        return returned


def fetch_all(conn: Connection, sql: str, params: Sequence[Any]) -> list[Any]:
    """The rows of a query in the driver's own SQL and placeholders, run as a ``DriverStatement`` is."""
    return _run(conn, sql, params, fetch=True)


def _run(conn: Connection, sql: str, params: Any, *, many: bool = False, fetch: bool = False) -> list[Any]:
    """``sql`` on the DB-API cursor of ``conn``'s transaction (see the module's docstring); the rows it returned
    if ``fetch``."""
    if not conn.in_transaction():
        conn.begin()  # as SQLAlchemy would begin one itself
    cursor = _cursor(conn)
    try:
        for listener in conn.dispatch.before_cursor_execute:
            sql, params = listener(conn, cursor, sql, params, None, many)
        logger = conn.engine.logger
        if logger.isEnabledFor(logging.INFO):  # echo on, or SQLAlchemy's logging configured to show SQL
            logger.info(sql)
            logger.info("[driver SQL] %r", params)
        if many:
            cursor.executemany(sql, params)
        else:
            cursor.execute(sql, params)
        conn.dispatch.after_cursor_execute(conn, cursor, sql, params, None, many)
        return cursor.fetchall() if fetch else []
    except BaseException as exc:  # as SQLAlchemy's own execution catches
        # SQLAlchemy's handling of a failed statement, which raises: ``handle_error`` listeners, a lost connection
        # invalidated (with the pool's other connections of that age), the error raised as its DBAPIError type. A
        # private method, as its own ``_cursor_execute`` calls it (read in 2.0.0 and 2.1.9): the tests hold it to
        # what it does, and CI runs them on SQLAlchemy 2.0.0, the lowest pyproject allows, as well.
        conn._handle_dbapi_exception(exc, sql, params, cursor, None)
    finally:
        cursor.close()


def _cursor(conn: Connection) -> Any:
    dbapi_connection = conn.connection.dbapi_connection
    if conn.dialect.driver == "psycopg":
        # psycopg finds %s placeholders with a regular expression and keeps the result only for statements of up
        # to 50 parameters: a multi-row INSERT was parsed again on every call, a fifth of a batch's instructions.
        # Its RawCursor sends PostgreSQL's own $n placeholders as they are.
        return conn.dialect.loaded_dbapi.RawCursor(dbapi_connection)
    return dbapi_connection.cursor()


def _as_it_is(value: Any) -> Any:
    return value


_positional_dialects: dict[type[Dialect], Dialect] = {}
