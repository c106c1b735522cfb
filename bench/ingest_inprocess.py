"""Ingest cost of ``POST /feedback/events`` inside one process, against the floors of ``bench/bench_app.py``.

    PYTHONPATH=backend:bench python bench/ingest_inprocess.py [--database-url URL] [--requests 2000]

Uses Flask's test client (no sockets) on ``bench_app``'s app, so it measures the bridge's own work per request
(parsing, validation, token checks and the database transaction) against the same floors as
``bench/ingest_gunicorn.py`` does over HTTP; quick enough to run while changing the ingest path.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable

from bench_app import _floor_metadata, create_app
from flask import Flask
from sqlalchemy import create_engine
from statistics_refresh import analyze

from feedback_bridge import FeedbackBridge
from feedback_bridge.schema import metadata


def build_app(database_url: str) -> tuple[Flask, list[str]]:
    """``bench_app``'s app (the bridge and its floors, as gunicorn serves them) on empty tables, and 200 messages'
    tokens."""
    if not database_url.startswith("sqlite"):  # a server's tables outlive the run before
        engine = create_engine(database_url)
        with engine.begin() as conn:
            _floor_metadata.drop_all(conn)
            metadata.drop_all(conn)
        engine.dispose()
    os.environ.update(BENCH_DATABASE_URL=database_url, BENCH_INSTANCE=tempfile.mkdtemp(), BENCH_WORKER="0")
    app = create_app()
    with app.app_context():
        register = FeedbackBridge().register_message
        tokens = [register(conversation_id="c", message_id=f"m{i}", user_id=f"u{i % 50}", input="q", output="a")
                  for i in range(200)]
    return app, tokens


PATHS = ("/floor", "/floor-checked", "/floor-stored", "/feedback/events")


def body(tokens: list[str], n: int, batch: int, new_id: Callable[[], str] = lambda: str(uuid.uuid4())) -> dict:
    """Request ``n``'s body: ``batch`` thumbs up and down in turn, each on the next of ``tokens``' messages."""
    return {"events": [{"id": new_id(), "type": "thumbs_up" if (n + i) % 2 else "thumbs_down",
                        "token": tokens[(n * batch + i) % len(tokens)]} for i in range(batch)]}


def run(app: Flask, path: str, tokens: list[str], requests: int, batch: int) -> tuple[float, float]:
    client = app.test_client()
    latencies = []
    for n in range(requests):
        body_n = body(tokens, n, batch)
        start = time.perf_counter()
        response = client.post(path, json=body_n)
        latencies.append(time.perf_counter() - start)
        assert response.status_code == 200, response.get_data(as_text=True)
    events_per_second = requests * batch / sum(latencies)
    return events_per_second, statistics.quantiles(latencies, n=100)[98] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default=None, help="default: a SQLite file in a temporary folder")
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    url = args.database_url or f"sqlite:///{tempfile.mkdtemp()}/bench.sqlite3"
    app, tokens = build_app(url)
    print(f"database: {url.split('://')[0]}, {args.requests} requests per row")
    print(f"{'endpoint':<14}{'batch':>6}{'events/s':>12}{'p99 ms':>10}")
    for batch in (1, 20):
        for path in PATHS:
            analyze(app.extensions["feedback_bridge"].engine)  # as autovacuum keeps them (statistics_refresh.py)
            rate, p99 = run(app, path, tokens, args.requests // (1 if batch == 1 else 4), batch)
            print(f"{path.split('/')[-1]:<14}{batch:>6}{rate:>12.0f}{p99:>10.2f}")
    app.extensions["feedback_bridge"].close()


if __name__ == "__main__":
    main()
