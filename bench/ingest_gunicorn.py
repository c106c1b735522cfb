"""Ingest over HTTP: ``POST /feedback/events`` under gunicorn (gthread) on 127.0.0.1, loaded by wrk, against
the floors served by the same app, server and config (``bench/bench_app.py``).

    python bench/ingest_gunicorn.py [--database-url URL] [--rounds 5] [--duration 5]

Each round runs, for 1 and for 20 events per request: ``/floor`` (JSON parsed, nothing stored),
``/floor-checked`` (plus the events validated and their tokens resolved, nothing stored), ``/floor-commit``
(``/floor`` plus one row committed), ``/floor-stored`` (``/floor-checked`` plus each event's rows written by the
DB-API in one transaction) and ``/feedback/events``; one after the other, so every figure has
its floors measured a few seconds away on the same machine, under the same load from other processes. wrk's
Lua script gives every event a unique id and a valid token of one of ``--messages`` pre-registered messages
(thumbs up and down in turn, so each event changes its feedback state). After each events run the store is
counted: every event wrk saw acknowledged must be there. Prints medians over the rounds, and the median of the
per-round ratios to the floors; ``--json FILE`` also writes every run. On a machine whose speed moves between runs,
``bench/ingest_mixed.py`` compares ``/feedback/events`` with ``/floor-stored`` in one load instead.

Needs ``wrk`` (``apt-get install -y wrk``) and gunicorn.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import psutil
from sqlalchemy import create_engine, func, select
from statistics_refresh import analyze

from feedback_bridge import FeedbackBridge
from feedback_bridge.schema import events, metadata

HERE = Path(__file__).resolve().parent
BACKEND = HERE.parent / "backend"

LUA = r"""
local tokens = {}
for line in io.lines("%(tokens)s") do tokens[#tokens + 1] = line end
local batch, run = %(batch)d, "%(run)s"
local threads = 0
local counter = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
function request()
  counter = counter + 1
  local parts = {}
  for i = 1, batch do
    local n = counter * batch + i
    local kind = (n %% 2 == 0) and "thumbs_up" or "thumbs_down"
    parts[i] = string.format('{"id":"%%s-%%d-%%d-%%d","type":"%%s","token":"%%s"}',
                             run, tid, counter, i, kind, tokens[(n * 7919) %% #tokens + 1])
  end
  return wrk.format("POST", "%(path)s", {["Content-Type"] = "application/json"},
                    '{"events":[' .. table.concat(parts, ",") .. ']}')
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('RESULT {"requests": %%d, "duration_us": %%d, "p50_us": %%d, "p99_us": %%d, ' ..
    '"errors": {"connect": %%d, "read": %%d, "write": %%d, "status": %%d, "timeout": %%d}}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.status, e.timeout))
end
"""

ENDPOINTS = {"floor": "/floor", "floor-checked": "/floor-checked", "floor-commit": "/floor-commit",
             "floor-stored": "/floor-stored", "events": "/feedback/events"}


def machine() -> dict[str, Any]:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "unknown")
    return {"nproc": os.cpu_count(), "cpu": model, "loadavg": os.getloadavg()}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare(database_url: str, instance: str, messages: int) -> list[str]:
    """A clean database with ``messages`` registered messages (50 users); their tokens."""
    if not database_url.startswith("sqlite"):
        from bench_app import _floor_metadata

        engine = create_engine(database_url)
        with engine.begin() as conn:
            _floor_metadata.drop_all(conn)
            metadata.drop_all(conn)
        engine.dispose()
    from bench_app import create_app

    app = create_app()
    with app.app_context():  # an uninitialised FeedbackBridge finds the app's runtime in the context
        register = FeedbackBridge().register_message
        tokens = [register(conversation_id=f"c{i // 10}", message_id=f"m{i}", user_id=f"user-{i % 50}",
                           input="question", output="answer") for i in range(messages)]
    app.extensions["feedback_bridge"].close()
    return tokens


def start_server(env: dict[str, str], port: int, workers: int, threads: int) -> subprocess.Popen:
    command = [sys.executable, "-m", "gunicorn", "--worker-class", "gthread", "--workers", str(workers),
               "--threads", str(threads), "--bind", f"127.0.0.1:{port}", "--log-level", "warning",
               "bench_app:create_app()"]
    server = subprocess.Popen(command, env=env)
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/feedback/health", timeout=2) as response:
                if response.status == 200:
                    return server
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                raise RuntimeError("gunicorn did not start") from None
            time.sleep(0.2)  # waiting for another process to bind: nothing to poll but the socket


def serve(args: argparse.Namespace, database_url: str | None, tree: Path = HERE.parent,
          **settings: str) -> tuple[str, Path, subprocess.Popen, int]:
    """``database_url`` (or a new SQLite file) cleaned, ``args.messages`` messages registered and their tokens
    written to a file, and gunicorn serving the ``bench_app`` of checkout ``tree`` on it (``settings``: more
    ``BENCH_*`` variables). Returns (database URL, tokens file, server, port)."""
    instance = tempfile.mkdtemp(prefix="feedback-bench-")
    url = database_url or f"sqlite:///{instance}/bench.sqlite3"
    sys.path[:0] = [str(HERE), str(BACKEND)]
    os.environ.update(BENCH_DATABASE_URL=url, BENCH_INSTANCE=instance, BENCH_WORKER="0", **settings)
    tokens_file = Path(instance) / "tokens.txt"
    tokens_file.write_text("\n".join(prepare(url, instance, args.messages)) + "\n")
    paths = [str(tree / "bench"), str(tree / "backend"), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    port = free_port()
    return url, tokens_file, start_server(env, port, args.workers, args.threads), port


def wrk_command(script: Path, port: int, connections: int, duration: int, threads: int = 1) -> list[str]:
    return ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration}s", "--timeout", "10s",
            "-s", str(script), f"http://127.0.0.1:{port}"]


def wrk_result(output: str, label: str) -> dict[str, Any]:
    """What the Lua script's ``done()`` wrote; an error if wrk saw any."""
    result = json.loads(next(line for line in output.splitlines() if line.startswith("RESULT "))[7:])
    if any(result["errors"].values()):
        raise RuntimeError(f"{label}: wrk saw errors {result['errors']}")
    return result


def start_wrk(lua: str, port: int, connections: int, duration: int, threads: int = 1) -> tuple[subprocess.Popen, Path]:
    """wrk started with this Lua script for ``duration`` seconds on ``connections`` connections; ``finish_wrk``
    waits for it (two can run at once, as ``bench/ingest_ab.py`` runs them)."""
    script = Path(tempfile.mkstemp(suffix=".lua")[1])
    script.write_text(lua)
    command = wrk_command(script, port, connections, duration, threads)
    return subprocess.Popen(command, stdout=subprocess.PIPE, text=True), script


def finish_wrk(started: tuple[subprocess.Popen, Path], label: str) -> dict[str, Any]:
    wrk, script = started
    try:
        output, _ = wrk.communicate()
    finally:
        script.unlink()
    if wrk.returncode:
        raise RuntimeError(f"{label}: wrk failed ({wrk.returncode})")
    return wrk_result(output, label)


def run_wrk(lua: str, port: int, connections: int, duration: int, label: str, threads: int = 1) -> dict[str, Any]:
    return finish_wrk(start_wrk(lua, port, connections, duration, threads), label)


def wrk(port: int, path: str, batch: int, tokens_file: Path, args: argparse.Namespace) -> dict[str, Any]:
    lua = LUA % {"tokens": tokens_file, "batch": batch, "run": uuid.uuid4().hex[:12], "path": path}
    result = run_wrk(lua, port, args.connections, args.duration, f"{path} batch {batch}", args.wrk_threads)
    seconds = result["duration_us"] / 1e6
    return {"requests": result["requests"], "events_per_s": result["requests"] * batch / seconds,
            "p50_ms": result["p50_us"] / 1000, "p99_ms": result["p99_us"] / 1000}


def server_cpu(server: subprocess.Popen) -> float:
    """CPU seconds used so far by the gunicorn workers: a cost per event that other processes' load inflates
    far less than it does times and rates."""
    return sum(t.user + t.system for t in (p.cpu_times() for p in psutil.Process(server.pid).children()))


def stored_events(engine: Any) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(events)).scalar_one()


def quartiles_text(values: list[float], form: str) -> str:
    """`` (quartiles low-high)`` in ``form`` (a format spec such as ``.0%``), or nothing for fewer than 4 values: how
    widely the rounds disagree, so how well a median of a few of them is known on a busy machine."""
    if len(values) < 4:
        return ""
    low, _, high = statistics.quantiles(values, n=4)
    return f" (quartiles {low:{form}}-{high:{form}}{'' if form.endswith('%') else 'x'})"


def add_load_arguments(parser: argparse.ArgumentParser, rounds: int) -> None:
    """The options of the server and of its load, shared by the ingest benchmarks that run gunicorn and wrk."""
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=8, help="wrk's (per server)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    parser.add_argument("--threads", type=int, default=4, help="threads per gunicorn worker")
    parser.add_argument("--messages", type=int, default=1000, help="registered messages the events are spread over")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default=None, help="default: a SQLite file in a temporary folder")
    add_load_arguments(parser, rounds=5)
    parser.add_argument("--wrk-threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None, help="write every run to this file")
    parser.add_argument("--endpoints", type=lambda text: text.split(","), default=list(ENDPOINTS),
                        help=f"comma-separated, of {', '.join(ENDPOINTS)} (default: all; events always)")
    parser.add_argument("--batches", type=lambda text: [int(n) for n in text.split(",")], default=[1, 20],
                        help="events per request, comma-separated (default: 1,20)")
    args = parser.parse_args()
    if unknown := set(args.endpoints) - set(ENDPOINTS):
        parser.error(f"unknown endpoints: {', '.join(sorted(unknown))}")
    args.endpoints = [name for name in ENDPOINTS if name in args.endpoints or name == "events"]

    url, tokens_file, server, port = serve(args, args.database_url)
    print(f"machine: {machine()}")
    print(f"database: {url.split('://')[0]}; gunicorn gthread {args.workers} workers x {args.threads} threads; "
          f"wrk -t{args.wrk_threads} -c{args.connections} -d{args.duration}s; {args.rounds} rounds")
    engine = create_engine(url)
    runs: list[dict[str, Any]] = []
    try:
        for round_no in range(args.rounds):
            load_before = os.getloadavg()[0]
            # Each round starts at another endpoint, so none always runs first (after a pause, or an ANALYZE).
            names = args.endpoints
            names = names[round_no % len(names):] + names[:round_no % len(names)]
            for batch in args.batches:
                for name in names:
                    path = ENDPOINTS[name]
                    if name == "events":
                        analyze(engine)  # statistics of the table as it is now, as autovacuum keeps them
                    before = stored_events(engine) if name == "events" else 0
                    cpu_before = server_cpu(server)
                    result = wrk(port, path, batch, tokens_file, args)
                    result["cpu_ms_per_event"] = (server_cpu(server) - cpu_before) * 1000 / (result["requests"] * batch)
                    if name == "events":
                        stored = stored_events(engine) - before
                        if stored < result["requests"] * batch:
                            raise RuntimeError(f"acknowledged {result['requests'] * batch} events, stored {stored}")
                    runs.append({"round": round_no, "endpoint": name, "batch": batch, **result,
                                 "loadavg_1m": load_before})
                    print(f"round {round_no} {name:<13} batch {batch:>2}: {result['events_per_s']:8.0f} events/s "
                          f"p50 {result['p50_ms']:7.2f} ms p99 {result['p99_ms']:7.2f} ms "
                          f"server CPU {result['cpu_ms_per_event']:6.3f} ms/event (load {load_before:.2f})",
                          flush=True)
    finally:
        server.terminate()
        server.wait(30)
        engine.dispose()
    report(runs, args)
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "database": url.split("://")[0], "runs": runs},
                                        indent=1))


def report(runs: list[dict[str, Any]], args: argparse.Namespace) -> None:
    def pick(name: str, batch: int, key: str) -> list[float]:
        return [r[key] for r in runs if r["endpoint"] == name and r["batch"] == batch]

    med = statistics.median
    print(f"\nmedians over {args.rounds} rounds (load average 1 min: "
          f"{min(r['loadavg_1m'] for r in runs):.2f} to {max(r['loadavg_1m'] for r in runs):.2f}, machine "
          f"{machine()['loadavg'][0]:.2f} now)")
    print("| endpoint | batch | events/s | p50 ms | p99 ms | server CPU ms/event |\n|---|---|---|---|---|---|")
    for batch in args.batches:
        for name in args.endpoints:
            print(f"| {name} | {batch} | {med(pick(name, batch, 'events_per_s')):.0f} | "
                  f"{med(pick(name, batch, 'p50_ms')):.2f} | {med(pick(name, batch, 'p99_ms')):.2f} | "
                  f"{med(pick(name, batch, 'cpu_ms_per_event')):.3f} |")

    def ratios(a: list[float], b: list[float]) -> list[float]:  # paired within each round
        return [x / y for x, y in zip(a, b, strict=True)]

    def ratio(a: list[float], b: list[float]) -> float:
        return med(ratios(a, b))

    print("\nmedian of per-round ratios:")
    for batch in args.batches:
        for floor in [name for name in args.endpoints if name != "events"]:
            rates = pick("events", batch, "events_per_s"), pick(floor, batch, "events_per_s")
            p99 = ratio(pick("events", batch, "p99_ms"), pick(floor, batch, "p99_ms"))
            cpu = ratio(pick("events", batch, "cpu_ms_per_event"), pick(floor, batch, "cpu_ms_per_event"))
            spread = quartiles_text(ratios(*rates), ".0%")
            print(f"- batch {batch}: events/s {ratio(*rates):.0%} of {floor}'s{spread}, p99 {p99:.2f}x "
                  f"{floor}'s, server CPU per event {cpu:.2f}x {floor}'s")
    for name in [name for name in ("events", "floor-stored", "floor-checked") if name in args.endpoints]:
        if not {1, 20} <= set(args.batches):
            break
        speedup = ratio(pick(name, 20, "events_per_s"), pick(name, 1, "events_per_s"))
        print(f"- {name}, batches of 20: {speedup:.1f}x the events/s of single posts")


if __name__ == "__main__":
    main()
