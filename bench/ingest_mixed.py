"""Ingest against ``/floor-stored`` in one load: wrk alternates the two endpoints request by request, under gunicorn
(gthread) on 127.0.0.1, and the app adds up each path's CPU (``bench_app``'s ``BENCH_ACCOUNTING``).

    PYTHONPATH=backend:bench python bench/ingest_mixed.py [--database-url URL] [--rounds 10] [--duration 5]

``bench/ingest_gunicorn.py`` runs each endpoint alone for a few seconds, then the other: on a machine whose speed
moves by half between such runs (BENCHMARKS.md §15, §16), the ratio of two runs is mostly the machine's. Here both
endpoints share every second of the load, so what the machine does, it does to both. What is compared is the CPU
time of the threads that served each path, from Flask's first hook to its last, per event (SQLite's work is in
it, PostgreSQL's server is not): on this server, whose two cores the workers and wrk keep busy, that is what bounds
the events/s each endpoint could reach alone (not measured here: a mixed load has one rate). The wall time per
request is reported too, waits included (for the CPU, SQLite's write lock, PostgreSQL). On SQLite, each path's
time holding the write lock per request is compared as well: where one writer at a time binds rather than the CPU
(under this load the lock is held most of the time), it is what bounds events/s.

Prints, per round, each path's CPU per event and their ratio, then the median ratio over the rounds with its
quartiles, and the ratio of the totals; on SQLite, the median ratio of the lock's hold per request. Every event
wrk saw acknowledged must be in the store afterwards.

Needs ``wrk`` (``apt-get install -y wrk``) and gunicorn.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import urllib.request
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psutil
from ingest_gunicorn import (
    LUA,
    add_load_arguments,
    machine,
    quartiles_text,
    run_wrk,
    serve,
    stored_events,
)
from sqlalchemy import create_engine
from statistics_refresh import analyze

FLOOR, EVENTS = "/floor-stored", "/feedback/events"
# ingest_gunicorn's script, with the path taken in turns: odd requests to the floor, even ones to the bridge.
LUA_MIXED = LUA.replace('wrk.format("POST", "%(path)s"',
                        f'wrk.format("POST", (counter %% 2 == 1) and "{FLOOR}" or "{EVENTS}"')


def accounting(port: int, pids: set[int]) -> dict[int, dict[str, dict[str, float]]]:
    """Every worker's totals (``{pid: {path: totals}}``): asked on new connections until each pid has answered
    (a worker may still be loading the app), since the kernel hands each one to whichever worker accepts first."""
    found: dict[int, dict[str, dict[str, float]]] = {}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/bench-accounting", timeout=10) as response:
            answer = json.load(response)
        found[answer["pid"]] = answer["paths"]
        if pids <= found.keys():
            return found
    raise RuntimeError(f"workers {sorted(pids - found.keys())} never answered /bench-accounting")


def spent(before: Mapping[int, Mapping[str, Mapping[str, float]]],
          after: Mapping[int, Mapping[str, Mapping[str, float]]], path: str) -> dict[str, float]:
    """What ``path`` cost all workers between two ``accounting`` snapshots."""
    total = {"requests": 0.0, "cpu_s": 0.0, "wall_s": 0.0, "lock_s": 0.0}
    for pid, paths in after.items():
        for key in total:
            total[key] += paths.get(path, {}).get(key, 0.0) - before.get(pid, {}).get(path, {}).get(key, 0.0)
    return total


def wrk_mixed(port: int, batch: int, tokens_file: Path, args: argparse.Namespace) -> dict[str, Any]:
    lua = LUA_MIXED % {"tokens": tokens_file, "batch": batch, "run": uuid.uuid4().hex[:12]}
    return run_wrk(lua, port, args.connections, args.duration, f"batch {batch}")


def measure(floor: Mapping[str, float], events: Mapping[str, float], batch: int) -> dict[str, float]:
    """One run's figures from each path's totals."""
    per_event = {name: spent["cpu_s"] * 1000 / (spent["requests"] * batch)
                 for name, spent in (("floor", floor), ("events", events))}
    return {"batch": batch, "requests_floor": floor["requests"], "requests_events": events["requests"],
            "cpu_ms_floor": per_event["floor"], "cpu_ms_events": per_event["events"],
            "cpu_ratio": per_event["events"] / per_event["floor"],
            "wall_ratio": (events["wall_s"] / events["requests"]) / (floor["wall_s"] / floor["requests"]),
            "cpu_s_floor": floor["cpu_s"], "cpu_s_events": events["cpu_s"],
            # SQLite's write gate held per request, against the floor's (None where there is no gate: PostgreSQL)
            "lock_ratio": (events["lock_s"] / events["requests"]) / (floor["lock_s"] / floor["requests"])
            if floor["lock_s"] else None}


def report(runs: list[dict[str, Any]], batches: list[int]) -> None:
    print(f"\n{FLOOR} and {EVENTS} in one load, app CPU per event (median of {len(runs) // len(batches)} rounds):")
    for batch in batches:
        mine = [run for run in runs if run["batch"] == batch]
        ratios = [run["cpu_ratio"] for run in mine]
        pooled = (sum(r["cpu_s_events"] for r in mine) / sum(r["requests_events"] for r in mine)) / (
            sum(r["cpu_s_floor"] for r in mine) / sum(r["requests_floor"] for r in mine))
        median = statistics.median(ratios)
        print(f"- batch {batch}: {statistics.median(r['cpu_ms_events'] for r in mine):.3f} ms against "
              f"{statistics.median(r['cpu_ms_floor'] for r in mine):.3f} ms, {median:.2f}x the floor's"
              f"{quartiles_text(ratios, '.2f')}, "
              f"{pooled:.2f}x over all rounds; so {1 / median:.0%} of the floor's events/s where CPU bounds both; "
              f"wall per request {statistics.median(r['wall_ratio'] for r in mine):.2f}x")
        locks = [run["lock_ratio"] for run in mine if run["lock_ratio"] is not None]
        if locks:
            median = statistics.median(locks)
            print(f"  SQLite's write lock held per request {median:.2f}x the floor's{quartiles_text(locks, '.2f')}; "
                  f"so {1 / median:.0%} of the floor's events/s where the lock bounds both")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default=None, help="default: a SQLite file in a temporary folder")
    add_load_arguments(parser, rounds=10)
    parser.add_argument("--batches", type=lambda text: [int(n) for n in text.split(",")], default=[1, 20],
                        help="events per request, comma-separated (default: 1,20)")
    args = parser.parse_args()

    url, tokens_file, server, port = serve(args, args.database_url, BENCH_ACCOUNTING="1")
    print(f"machine: {machine()}")
    print(f"database: {url.split('://')[0]}; gunicorn gthread {args.workers} workers x {args.threads} threads; "
          f"wrk -t1 -c{args.connections} -d{args.duration}s, the two paths in turns; {args.rounds} rounds")
    pids = {child.pid for child in psutil.Process(server.pid).children()}
    engine = create_engine(url)
    runs = []
    try:
        for batch in args.batches:  # unmeasured: each worker compiles its statements, fills its pool and caches
            run_wrk(LUA_MIXED % {"tokens": tokens_file, "batch": batch, "run": f"warm-up-{batch}"}, port,
                    args.connections, 2, "warm-up")
        for round_no in range(args.rounds):
            for batch in args.batches:
                analyze(engine)  # statistics of the tables as they are now, as autovacuum keeps them
                stored_before, before = stored_events(engine), accounting(port, pids)
                result = wrk_mixed(port, batch, tokens_file, args)
                after = accounting(port, pids)
                stored = stored_events(engine) - stored_before
                if stored < result["requests"] * batch:  # both paths store every event
                    raise RuntimeError(f"acknowledged {result['requests'] * batch} events, stored {stored}")
                run = measure(spent(before, after, FLOOR), spent(before, after, EVENTS), batch)
                run["events_per_s"] = result["requests"] * batch / (result["duration_us"] / 1e6)
                runs.append(run)
                print(f"round {round_no} batch {batch:>2}: {run['events_per_s']:7.0f} events/s mixed; app CPU "
                      f"{run['cpu_ms_floor']:.3f} ms/event {FLOOR}, {run['cpu_ms_events']:.3f} {EVENTS}: "
                      f"{run['cpu_ratio']:.2f}x; wall per request {run['wall_ratio']:.2f}x"
                      + (f"; lock held {run['lock_ratio']:.2f}x" if run["lock_ratio"] is not None else "") + " "
                      f"(load {os.getloadavg()[0]:.2f})", flush=True)
    finally:
        server.terminate()
        server.wait(30)
        engine.dispose()
    report(runs, args.batches)


if __name__ == "__main__":
    main()
