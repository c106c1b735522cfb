"""The worker's loop without the sends: per iteration, record 4 outcomes, claim 4 rows and read their contexts,
as one write transaction and a read (``Worker._record_and_claim``, what the worker does) or as two writes and a
read (``_record`` then ``_claim``, what it did). Interleaved blocks of 50 iterations over a store of due rows;
wall and CPU milliseconds per iteration.

    PYTHONPATH=backend python bench/worker_loop.py [--database-url URL] [--rows 6000] [--blocks 10]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

from flask import Flask
from sqlalchemy import create_engine
from statistics_refresh import analyze

from feedback_bridge import DeliveryStatus, FeedbackBridge
from feedback_bridge.schema import metadata
from feedback_bridge.worker import Worker

ITERATIONS = 50


def build(url: str, rows: int) -> Worker:
    engine = create_engine(url)
    metadata.drop_all(engine)
    engine.dispose()
    app = Flask("worker_loop")
    app.config.update(SECRET_KEY="bench", FEEDBACK_DATABASE_URL=url, FEEDBACK_WORKER=False,
                      FEEDBACK_PROVIDERS={"log": {"level": "CRITICAL"}}, FEEDBACK_SETTLE_SECONDS=0,
                      FEEDBACK_RATE_LIMIT_IP="", FEEDBACK_RATE_LIMIT_TOKEN="")
    bridge = FeedbackBridge(app)
    client = app.test_client()
    with app.app_context():
        for first in range(0, rows, 20):
            body = {"events": [
                {"id": uuid.uuid4().hex, "type": "thumbs_up",
                 "token": bridge.register_message(conversation_id="c", message_id=f"m{i}", user_id="u")}
                for i in range(first, first + 20)
            ]}
            assert client.post("/feedback/events", json=body).status_code == 200
    runtime = app.extensions["feedback_bridge"]
    analyze(runtime.engine)
    return runtime.worker


def delivered(claimed: list[Any]) -> list[Any]:
    return [(d, DeliveryStatus.DELIVERED, {"request": {}, "response": {}}) for d in claimed]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=None, help="default: a SQLite file in a temporary folder")
    parser.add_argument("--rows", type=int, default=6000)
    parser.add_argument("--blocks", type=int, default=10)
    args = parser.parse_args()
    url = args.database_url or f"sqlite:///{tempfile.mkdtemp()}/worker_loop.sqlite3"
    worker = build(url, args.rows)
    now = datetime.now(timezone.utc) + timedelta(minutes=1)
    outcomes = delivered(worker._claim(4, now)[0])
    results: dict[str, list[tuple[float, float]]] = {"one commit": [], "two commits": []}
    for block in range(args.blocks):
        for mode in sorted(results, reverse=block % 2 == 1):
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(ITERATIONS):
                if mode == "one commit":
                    claimed, _ = worker._record_and_claim(outcomes, 4, now)
                else:
                    worker._record(outcomes)
                    claimed, _ = worker._claim(4, now)
                outcomes = delivered(claimed)
            results[mode].append(((time.perf_counter() - wall) * 1000 / ITERATIONS,
                                  (time.process_time() - cpu) * 1000 / ITERATIONS))
    for mode, runs in results.items():
        print(f"{mode}: wall {statistics.median(r[0] for r in runs):.2f} ms, "
              f"CPU {statistics.median(r[1] for r in runs):.2f} ms per iteration (medians of {len(runs)} blocks)")


if __name__ == "__main__":
    main()
