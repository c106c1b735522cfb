"""ANALYZE between a benchmark's phases, as autovacuum would on a production PostgreSQL.

This machine's PostgreSQL runs with ``autovacuum = off`` and the benchmarks recreate their tables, so without it
the planner works from no statistics at all: session 4 measured a batch of 20 at p50 78 ms on such tables against
42 ms once analysed (the supersede UPDATE chose the wrong index). SQLite plans without statistics; it is analysed
too, for the same footing.
"""

from __future__ import annotations

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine


def analyze(target: Engine | str) -> None:
    engine = create_engine(target) if isinstance(target, str) else target
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("ANALYZE"))
    finally:
        if isinstance(target, str):
            engine.dispose()
