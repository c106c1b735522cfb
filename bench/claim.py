"""Time the delivery worker's claim on an existing store (say, one `bench/memory.py` left with a backlog).

    PYTHONPATH=backend python bench/claim.py --database-url sqlite:///path/to/bench.sqlite3 [--runs 5]

Each claim takes up to 4 due rows inside the same write transaction the worker uses, then rolls back, so the
store is left as it was. On SQLite the claim holds the database's only write lock: ingest waits for it.
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import datetime, timezone

from sqlalchemy import func, select

from feedback_bridge import db, outbox
from feedback_bridge.schema import outbox as outbox_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--runs", type=int, default=5)
    options = parser.parse_args()
    engine = db.make_engine(options.database_url)
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
    print(f"claim of 4 rows: median {statistics.median(times):.0f} ms (min {min(times):.0f}, max {max(times):.0f})")
    engine.dispose()


if __name__ == "__main__":
    main()
