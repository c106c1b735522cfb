"""Two versions of the bridge under load at the same time: ``POST /feedback/events`` served by gunicorn from two source
trees, each with its own database, each loaded by its own wrk, both runs starting together.

    PYTHONPATH=backend:bench python bench/ingest_ab.py --a /tmp/old [--b .] [--rounds 10] [--duration 5] [--batch 20]

A change to the ingest path is usually a few percent; this machine's speed moves by half between runs a few seconds
apart (BENCHMARKS.md §16), so two versions measured in turns mostly measure the machine. Run side by side, both
see the same seconds. They also share the two cores: each server gets the CPU its runnable threads ask for, so a
version that needs less CPU per event, or leaves its threads waiting less (on SQLite's write lock, say), serves
more. The figure is each round's ratio of events/s, B to A, with their server CPU per event beside it.

``--a`` and ``--b`` are checkouts (``git worktree add /tmp/old <commit>``); each is served from its own ``backend/``
and ``bench/``, on a database this checkout's code created (so their tables must be the same).
Needs ``wrk`` (``apt-get install -y wrk``) and gunicorn.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import uuid
from pathlib import Path

from ingest_gunicorn import (
    LUA,
    add_load_arguments,
    finish_wrk,
    machine,
    quartiles_text,
    serve,
    server_cpu,
    start_wrk,
)


def load(port: int, batch: int, tokens_file: Path, args: argparse.Namespace) -> tuple[subprocess.Popen, Path]:
    lua = LUA % {"tokens": tokens_file, "batch": batch, "run": uuid.uuid4().hex[:12], "path": "/feedback/events"}
    return start_wrk(lua, port, args.connections, args.duration)


def events_per_s(started: tuple[subprocess.Popen, Path], batch: int) -> float:
    result = finish_wrk(started, f"batch {batch}")
    return result["requests"] * batch / (result["duration_us"] / 1e6)


def report(runs: list[dict[str, float]]) -> None:
    rates = [run["events_per_s_b"] / run["events_per_s_a"] for run in runs]
    cpu = [run["cpu_ms_b"] / run["cpu_ms_a"] for run in runs]
    print(f"\nover {len(runs)} rounds, B against A: events/s {statistics.median(rates):.2f}x"
          f"{quartiles_text(rates, '.2f')}, server CPU per event {statistics.median(cpu):.2f}x"
          f"{quartiles_text(cpu, '.2f')}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--a", type=Path, required=True, help="the checkout to compare against")
    parser.add_argument("--b", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--batch", type=int, default=20, help="events per request")
    add_load_arguments(parser, rounds=10)
    args = parser.parse_args()

    servers, tokens_files, cpu_before = {}, {}, {}
    print(f"machine: {machine()}")
    print(f"A {args.a.resolve()}, B {args.b.resolve()}: SQLite each; gunicorn gthread {args.workers} workers x "
          f"{args.threads} threads each; wrk -t1 -c{args.connections} -d{args.duration}s each, at the same time; "
          f"batches of {args.batch}")
    try:
        for name, tree in (("a", args.a.resolve()), ("b", args.b.resolve())):
            _, tokens_files[name], server, port = serve(args, None, tree)
            servers[name] = (server, port)
        runs = []
        for round_no in range(args.rounds):
            started = {}
            for name, (server, port) in servers.items():
                cpu_before[name] = server_cpu(server)
                started[name] = load(port, args.batch, tokens_files[name], args)
            run: dict[str, float] = {}
            for name, wrk in started.items():
                run[f"events_per_s_{name}"] = rate = events_per_s(wrk, args.batch)
                cpu = server_cpu(servers[name][0]) - cpu_before[name]
                run[f"cpu_ms_{name}"] = cpu * 1000 / (rate * args.duration)
            runs.append(run)
            print(f"round {round_no}: A {run['events_per_s_a']:6.0f} events/s, {run['cpu_ms_a']:.3f} ms CPU/event; "
                  f"B {run['events_per_s_b']:6.0f}, {run['cpu_ms_b']:.3f}: "
                  f"{run['events_per_s_b'] / run['events_per_s_a']:.2f}x (load {os.getloadavg()[0]:.2f})", flush=True)
    finally:
        for server, _ in servers.values():
            server.terminate()
            server.wait(30)
    report(runs)


if __name__ == "__main__":
    main()
