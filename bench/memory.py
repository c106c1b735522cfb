"""Server memory under sustained ingest: the RSS of the gunicorn worker process (the app, with its delivery
worker running) after the first 1,000 events and after 100,000.

    python bench/memory.py [--events 100000] [--database-url URL]

One gunicorn gthread worker (``bench/bench_app.py``, delivering to the ``log`` providers as events arrive)
on 127.0.0.1; ``--clients`` keep-alive HTTP clients post batches of ``--batch`` events, a mix of votes with a
reason and a comment, ratings and copies of a 300-character text, each with a unique id and the token of one
of 1,000 messages. RSS (psutil) is read after the first 1,000 events and every 10,000 after. Goal: the last
reading is within 30 MB of the first.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import sys
import tempfile
import threading
import time
import uuid
from typing import Any

import psutil
from ingest_gunicorn import BACKEND, HERE, free_port, machine, prepare, start_server
from statistics_refresh import analyze

GOAL_MB = 30


def body(tokens: list[str], n: int, batch: int) -> bytes:
    events: list[dict[str, Any]] = []
    for i in range(n * batch, (n + 1) * batch):
        event: dict[str, Any] = {"id": uuid.uuid4().hex, "token": tokens[(i * 7919) % len(tokens)]}
        kind = i % 4
        if kind == 0:
            event.update(type="thumbs_down", reason="NOT_COMPLETE", comment=f"Step {i} is missing")
        elif kind == 1:
            event.update(type="thumbs_up")
        elif kind == 2:
            event.update(type="rating", value=i % 5 + 1, comment="ok")
        else:
            event.update(type="copy_output", text=f"{i} " + "copied text " * 25)
        events.append(event)
    return json.dumps({"events": events}).encode()


def post_batches(port: int, tokens: list[str], numbers: itertools.count, last: int, batch: int,
                 lock: threading.Lock, errors: list[Exception]) -> None:
    try:
        _post_batches(port, tokens, numbers, last, batch, lock)
    except Exception as exc:  # reported by the main thread
        errors.append(exc)


def _post_batches(port: int, tokens: list[str], numbers: itertools.count, last: int, batch: int,
                  lock: threading.Lock) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    while True:
        with lock:
            n = next(numbers)
        if n >= last:
            return
        connection.request("POST", "/feedback/events", body(tokens, n, batch), {"Content-Type": "application/json"})
        response = connection.getresponse()
        answer = json.loads(response.read())
        if response.status != 200 or answer["accepted"] != batch:
            raise RuntimeError(f"batch {n}: {response.status} {answer}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--threads", type=int, default=4, help="threads of the gunicorn worker")
    parser.add_argument("--database-url", default=None, help="default: a SQLite file in a temporary folder")
    args = parser.parse_args()

    instance = tempfile.mkdtemp(prefix="feedback-bench-")
    url = args.database_url or f"sqlite:///{instance}/bench.sqlite3"
    sys.path[:0] = [str(HERE), str(BACKEND)]
    os.environ.update(BENCH_DATABASE_URL=url, BENCH_INSTANCE=instance, BENCH_WORKER="1")
    tokens = prepare(url, instance, 1000)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(BACKEND), os.environ.get("PYTHONPATH", "")])}
    port = free_port()
    print(f"machine: {machine()}; database {url.split('://')[0]}; {args.events} events in batches of {args.batch}, "
          f"{args.clients} clients, 1 gunicorn gthread worker x {args.threads} threads, delivery worker on")
    server = start_server(env, port, 1, args.threads)
    try:
        (worker,) = psutil.Process(server.pid).children()
        numbers, lock = itertools.count(), threading.Lock()
        readings: list[tuple[int, float]] = []
        errors: list[Exception] = []
        start = time.perf_counter()
        for checkpoint in [1000, *range(10_000, args.events + 1, 10_000)]:
            clients = [threading.Thread(target=post_batches, args=(port, tokens, numbers, checkpoint // args.batch,
                                                                   args.batch, lock, errors))
                       for _ in range(args.clients)]
            for client in clients:
                client.start()
            for client in clients:
                client.join()
            if errors:
                raise errors[0]
            numbers = itertools.count(checkpoint // args.batch)
            analyze(url)  # as autovacuum would between the stretches of load (outside the timing)
            rss = worker.memory_info().rss / 2**20
            readings.append((checkpoint, rss))
            print(f"{checkpoint:>7} events: RSS {rss:6.1f} MB ({time.perf_counter() - start:5.0f} s, "
                  f"load {os.getloadavg()[0]:.2f})", flush=True)
    finally:
        server.terminate()
        server.wait(30)
    growth = readings[-1][1] - readings[0][1]
    print(f"\nRSS after {readings[-1][0]} events: {readings[-1][1]:.1f} MB, after {readings[0][0]}: "
          f"{readings[0][1]:.1f} MB; growth {growth:+.1f} MB (goal: within {GOAL_MB} MB): "
          f"{'met' if growth <= GOAL_MB else 'missed'}")


if __name__ == "__main__":
    main()
