"""Delivery throughput: the outbox of N events delivered by one worker to the four provider emulators, each
answering after ``--latency`` seconds, against the bound set by the worker's concurrency (concurrency / latency)
and against a sequential loop that makes one call at a time.

    python bench/delivery.py [--events 10000] [--concurrency 32] [--latency 0.05] [--rounds 3]
                             [--database-url URL]

Each round: a clean database, N messages registered (each with its refs at all four emulators) and one vote
on each posted through ``POST /feedback/events`` (settle window 0), so 4 x N deliveries wait in the outbox.
The sequential loop (a worker of concurrency 1, claiming and sending one row at a time) delivers the first
``--sample`` rows; then a worker of ``--concurrency`` runs in its thread, as in the app, and is timed until
every row is finished. Every row must end ``delivered`` and every emulator must have accepted what it was sent.

The emulators (``LocalProviders``) run in a child process, as remote providers would: they do not share the
worker's interpreter lock.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import statistics
import tempfile
import time
import uuid
from multiprocessing.connection import Connection
from typing import Any

import psutil
from flask import Flask
from sqlalchemy import create_engine, select
from statistics_refresh import analyze

from feedback_bridge import FeedbackBridge, db, outbox
from feedback_bridge.schema import metadata
from feedback_bridge.schema import outbox as outbox_table
from feedback_bridge.worker import Worker, WorkerSettings


def serve_emulators(pipe: Connection, latency: float) -> None:
    """The child process: the four emulators, answering the parent's requests over ``pipe``."""
    from feedback_bridge.testing.local import LocalProviders

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per request would cost the emulators CPU

    with LocalProviders() as local:
        for emulator in local.emulators.values():
            emulator.set_latency(latency)
        pipe.send(local.providers_config())
        while True:
            command, argument = pipe.recv()
            if command == "refs":  # [(user, input, output), ...] -> their refs
                pipe.send([local.new_message_refs(*message) for message in argument])
            elif command == "accepted":
                pipe.send({name: len(emulator.received) for name, emulator in local.emulators.items()})
            elif command == "reset":
                for emulator in local.emulators.values():
                    emulator.calls.clear()
                pipe.send(None)
            else:
                return


def ask(pipe: Connection, command: str, argument: Any = None) -> Any:
    pipe.send((command, argument))
    return pipe.recv()


def build(database_url: str, providers: dict[str, Any], pipe: Connection, events: int) -> Flask:
    """A clean database with ``events`` messages and one vote on each, all due now."""
    if not database_url.startswith("sqlite"):
        engine = create_engine(database_url)
        with engine.begin() as conn:
            metadata.drop_all(conn)
        engine.dispose()
    app = Flask("bench_delivery", instance_path=tempfile.mkdtemp())
    app.config.update(SECRET_KEY="bench", FEEDBACK_DATABASE_URL=database_url, FEEDBACK_WORKER=False,
                      FEEDBACK_PROVIDERS=providers, FEEDBACK_SETTLE_SECONDS=0)
    bridge = FeedbackBridge(app)
    messages = [(f"user-{i % 100}", f"question {i}", f"answer {i}") for i in range(events)]
    refs = ask(pipe, "refs", messages)
    with app.app_context():
        tokens = [bridge.register_message(conversation_id=f"c{i}", message_id=f"m{i}", user_id=user, input=q,
                                          output=a, refs=refs[i]) for i, (user, q, a) in enumerate(messages)]
    client = app.test_client()
    for start in range(0, events, 100):
        body = {"events": [{"id": uuid.uuid4().hex, "type": "thumbs_up" if i % 2 else "thumbs_down",
                            "token": tokens[i]} for i in range(start, min(start + 100, events))]}
        response = client.post("/feedback/events", json=body)
        assert response.status_code == 200 and response.json["accepted"] == len(body["events"]), response.json
    return app


def counts(app: Flask) -> dict[str, int]:
    runtime = app.extensions["feedback_bridge"]
    with db.read(runtime.engine) as conn:
        per_provider = outbox.counts(conn)
    return {status: sum(c[status] for c in per_provider.values()) for status in next(iter(per_provider.values()))}


def unfinished(app: Flask) -> bool:
    """Whether a row is still pending or in flight: one seek on the due index. ``counts`` reads the whole
    outbox (15 ms at 40,000 rows on PostgreSQL), five times a second, in the worker's own process."""
    runtime = app.extensions["feedback_bridge"]
    with db.read(runtime.engine) as conn:
        return conn.execute(
            select(outbox_table.c.id).where(outbox_table.c.status.in_(["pending", "in_flight"])).limit(1)
        ).first() is not None


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def one_round(args: argparse.Namespace, providers: dict[str, Any], pipe: Connection, url: str,
              emulators: psutil.Process) -> dict[str, Any]:
    app = build(url, providers, pipe, args.events)
    ask(pipe, "reset")
    runtime = app.extensions["feedback_bridge"]
    analyze(runtime.engine)  # the claim plans on the backlog as it is, as autovacuum would have it
    total = sum(counts(app).values())
    settings = dict(lease_seconds=120, max_attempts=3, backoff_base=1, poll_seconds=0.5)

    sequential = Worker(runtime.engine, runtime.adapters, WorkerSettings(concurrency=1, **settings))
    start = time.perf_counter()
    for _ in range(args.sample):
        assert sequential.run_once() == 1
    sequential_rate = args.sample / (time.perf_counter() - start)
    sequential.stop()

    worker = Worker(runtime.engine, runtime.adapters, WorkerSettings(concurrency=args.concurrency, **settings))
    load = os.getloadavg()[0]
    me = psutil.Process()
    cpu_before, emulator_cpu_before = cpu_seconds(me), cpu_seconds(emulators)
    start = time.perf_counter()
    worker.start()
    while unfinished(app):
        time.sleep(0.2)  # polling the database from outside, as an operator would; not a synchronisation
    elapsed = time.perf_counter() - start
    cpu, emulator_cpu = cpu_seconds(me) - cpu_before, cpu_seconds(emulators) - emulator_cpu_before
    worker.stop()
    final = counts(app)
    accepted = ask(pipe, "accepted")
    assert final["delivered"] == total, final
    assert sum(accepted.values()) == total, accepted  # the sequential loop's and the worker's
    runtime.close()
    rate = (total - args.sample) / elapsed
    done = total - args.sample
    return {"deliveries": done, "seconds": elapsed, "rate": rate, "sequential_rate": sequential_rate,
            "loadavg_1m": load, "cpu_ms": cpu * 1000 / done, "emulator_cpu_ms": emulator_cpu * 1000 / done}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--latency", type=float, default=0.05, help="seconds each emulator waits before answering")
    parser.add_argument("--sample", type=int, default=100, help="deliveries made by the sequential loop")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--database-url", default=None, help="default: a SQLite file in a temporary folder")
    args = parser.parse_args()

    parent, child = multiprocessing.Pipe()
    emulators = multiprocessing.get_context("spawn").Process(target=serve_emulators, args=(child, args.latency))
    emulators.start()
    bound = args.concurrency / args.latency
    print(f"machine: nproc {os.cpu_count()}, load {os.getloadavg()}; {args.events} events x 4 providers, "
          f"latency {args.latency * 1000:.0f} ms, concurrency {args.concurrency}: bound {bound:.0f} deliveries/s")
    try:
        providers = parent.recv()
        rounds = []
        for n in range(args.rounds):
            url = args.database_url or f"sqlite:///{tempfile.mkdtemp()}/bench.sqlite3"
            result = one_round(args, providers, parent, url, psutil.Process(emulators.pid))
            rounds.append(result)
            print(f"round {n}: {result['deliveries']} deliveries in {result['seconds']:.1f} s = "
                  f"{result['rate']:.0f}/s ({result['rate'] / bound:.0%} of the bound); sequential loop "
                  f"{result['sequential_rate']:.1f}/s; CPU per delivery: worker process {result['cpu_ms']:.2f} ms, "
                  f"emulators {result['emulator_cpu_ms']:.2f} ms; load {result['loadavg_1m']:.2f}", flush=True)
    finally:
        parent.send(("stop", None))
        emulators.join(10)
    rate = statistics.median(r["rate"] for r in rounds)
    sequential = statistics.median(r["sequential_rate"] for r in rounds)
    cpu_ms = statistics.median(r["cpu_ms"] for r in rounds)
    print(f"\nmedian over {len(rounds)} rounds: {rate:.0f} deliveries/s = {rate / bound:.0%} of the bound "
          f"({bound:.0f}/s; goal >= 80%), {rate / sequential:.1f}x the sequential loop's {sequential:.1f}/s "
          f"(goal >= 10x); the worker's process spends {cpu_ms:.2f} ms of CPU per delivery, so one process "
          f"(one interpreter lock) tops out near {1000 / cpu_ms:.0f}/s")


if __name__ == "__main__":
    main()
