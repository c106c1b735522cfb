"""Time the delivery worker's claim on a store with a backlog of due rows.

    PYTHONPATH=backend python bench/claim.py --database-url sqlite:////tmp/claim.sqlite3 --seed 150000
    PYTHONPATH=backend python bench/claim.py --database-url sqlite:///path/to/bench.sqlite3     # an existing store

``--seed N`` empties the store, seeds N events (``seed_store``: mostly delivered or skipped outbox rows) and
makes every ``--every``-th finished row due again, as a worker that fell behind leaves them, then ANALYZEs.
Each claim takes up to 4 due rows inside the same write transaction the worker uses, then rolls back, so the
store is left as it was. On SQLite the claim holds the database's only write lock: ingest waits for it.
``--explain`` prints the database's plan for the claim.
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import datetime, timezone

from sqlalchemy import Engine, event, func, select, update
from statistics_refresh import analyze

from feedback_bridge import db, outbox
from feedback_bridge.schema import metadata
from feedback_bridge.schema import outbox as outbox_table
from feedback_bridge.seed import seed_store


def make_backlog(engine: Engine, events: int, every: int) -> None:
    metadata.drop_all(engine)
    seed_store(engine, events)
    with db.write(engine) as conn:
        conn.execute(
            update(outbox_table)
            .where(outbox_table.c.status.in_(("delivered", "skipped")), outbox_table.c.id % every == 0)
            .values(status="pending", next_attempt_at=outbox_table.c.created_at, delivered_at=None)
        )
    analyze(engine)


def explain(engine: Engine, providers: list[str]) -> str:
    """The plan of the claim's statements, captured as the driver receives them."""
    captured = []

    def capture(conn, cursor, statement, parameters, context, executemany):
        captured.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", capture)
    with engine.connect() as conn, conn.begin() as transaction:
        outbox.claim(conn, owner="bench", providers=providers, limit=4, now=datetime.now(timezone.utc),
                     lease_seconds=120)
        transaction.rollback()
    event.remove(engine, "before_cursor_execute", capture)
    sqlite = engine.dialect.name == "sqlite"
    plans = []
    with engine.connect() as conn, conn.begin() as transaction:
        for statement, parameters in captured:
            if not statement.lstrip().upper().startswith(("UPDATE", "SELECT")):
                continue
            prefix = "EXPLAIN QUERY PLAN " if sqlite else "EXPLAIN (ANALYZE, BUFFERS) "
            rows = conn.exec_driver_sql(prefix + statement, parameters).all()
            plans.append("\n".join(" | ".join(str(c) for c in row) for row in rows))
        transaction.rollback()
    return "\n\n".join(plans)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0, help="empty the store and seed this many events")
    parser.add_argument("--every", type=int, default=8, help="with --seed: every n-th finished row is due again")
    parser.add_argument("--explain", action="store_true")
    options = parser.parse_args()
    engine = db.make_engine(options.database_url)
    if options.seed:
        make_backlog(engine, options.seed, options.every)
    with db.read(engine) as conn:
        providers = list(conn.execute(select(outbox_table.c.provider).distinct()).scalars())
        counts = dict(conn.execute(select(outbox_table.c.status, func.count()).group_by(outbox_table.c.status)).all())
    times = []
    for _ in range(options.runs):
        with engine.connect() as conn, conn.begin() as transaction:
            started = time.perf_counter()
            outbox.claim(conn, owner="bench", providers=providers, limit=4, now=datetime.now(timezone.utc),
                         lease_seconds=120)
            times.append((time.perf_counter() - started) * 1000)
            transaction.rollback()
    print(f"outbox rows by status: {counts}")
    print(f"claim of 4 rows: median {statistics.median(times):.1f} ms (min {min(times):.1f}, max {max(times):.1f})")
    if options.explain:
        print(explain(engine, providers))
    engine.dispose()


if __name__ == "__main__":
    main()
