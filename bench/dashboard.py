"""Dashboard speed on a large store: the overview and filtered list pages, median of repeated renders.

    python bench/dashboard.py [--database-url URL] [--events 1000000] [--runs 7]

The first run seeds the store with ``feedback_bridge.seed.seed_store`` (minutes for a million events; a store
that already holds at least ``--events`` events is reused as it is), then analyses it. Each page is fetched
once to warm caches, then ``--runs`` times with Flask's test client (no sockets): what is measured is the
bridge's own work, SQL and templates. Goals (issue 5): overview < 500 ms, a filtered list page < 200 ms.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import datetime, timezone

from flask import Flask
from sqlalchemy import func, select, text

from feedback_bridge import FeedbackBridge, db
from feedback_bridge.schema import events, messages
from feedback_bridge.seed import seed_store

DEFAULT_URL = "sqlite:///bench-dashboard.sqlite3"


def seed(database_url: str, n: int) -> None:
    engine = db.make_engine(database_url)
    db.create_all(engine)
    with db.read(engine) as conn:
        have = conn.execute(select(func.count()).select_from(events)).scalar_one()
    if have < n:
        started = time.perf_counter()
        seed_store(engine, n - have, now=datetime.now(timezone.utc))
        print(f"seeded {n - have} events in {time.perf_counter() - started:.0f} s")
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("ANALYZE" if engine.dialect.name == "sqlite" else "VACUUM ANALYZE"))
    engine.dispose()


def build_app(database_url: str) -> Flask:
    app = Flask("bench", instance_path=tempfile.mkdtemp())
    app.config.update(SECRET_KEY="bench", FEEDBACK_DATABASE_URL=database_url, FEEDBACK_WORKER=False,
                      FEEDBACK_DASHBOARD_CHECK=lambda request: True)
    FeedbackBridge(app)
    return app


def pages(app: Flask) -> list[str]:
    """The overview at three windows and list pages under the filters an operator uses most."""
    engine = app.extensions["feedback_bridge"].engine
    with db.read(engine) as conn:
        user, conversation = conn.execute(select(messages.c.user_id, messages.c.conversation_id).limit(1)).one()
    base = "/feedback/dashboard"
    return [
        f"{base}/", f"{base}/?days=7", f"{base}/?days=90",
        f"{base}/feedback", f"{base}/feedback?vote=down&reason=NOT_COMPLETE",
        f"{base}/feedback?rating=1", f"{base}/feedback?provider=qbusiness&status=failed",
        f"{base}/feedback?user={user}", f"{base}/feedback?conversation={conversation}",
        f"{base}/feedback?provider=nebuly&status=pending&days=90",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    seed(args.database_url, args.events)
    app = build_app(args.database_url)
    client = app.test_client()
    print(f"{app.extensions['feedback_bridge'].engine.dialect.name}, {args.events} events, median of {args.runs}")
    for path in pages(app):
        response = client.get(path)
        assert response.status_code == 200, (path, response.status_code)
        times = []
        for _ in range(args.runs):
            started = time.perf_counter()
            response = client.get(path)
            times.append(time.perf_counter() - started)
            assert response.status_code == 200
        print(f"{statistics.median(times) * 1000:8.1f} ms  {path}")
    app.extensions["feedback_bridge"].close()


if __name__ == "__main__":
    main()
