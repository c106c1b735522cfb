"""Smoke tests of the benchmarks (the benchmarks themselves are not tests: see BENCHMARKS.md): the delivery
benchmark on a handful of events, which checks on its own that every row was delivered and accepted, and the
ingest benchmark's stored floor against what ingest stores."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from sqlalchemy import select

from feedback_bridge import db as fdb
from feedback_bridge.schema import events, messages, outbox, states

ROOT = Path(__file__).resolve().parent.parent


def test_the_delivery_benchmark_runs_and_delivers_everything() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "backend"), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "delivery.py"), "--events", "6", "--rounds", "1", "--sample", "2",
         "--latency", "0.01", "--concurrency", "4"],
        capture_output=True, text=True, timeout=120, env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "round 0: 22 deliveries" in result.stdout, result.stdout
    assert "median over 1 rounds" in result.stdout


def test_the_instruction_count_benchmark_sends_its_requests() -> None:
    """The part of ``bench/ingest_instructions.py`` valgrind runs (valgrind itself is not needed by the suite)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "backend"), str(ROOT / "bench")])}
    for path in ("/floor-stored", "/feedback/events"):
        result = subprocess.run(
            [sys.executable, str(ROOT / "bench" / "ingest_instructions.py"), "--child", path, "--batch", "3",
             "--requests", "2"], capture_output=True, text=True, timeout=120, env=env,
        )
        assert result.returncode == 0, result.stderr[-3000:]


def test_the_lock_benchmark_times_one_write_transaction_per_request() -> None:
    """``bench/ingest_lock.py`` checks on its own that it timed one held write gate per request."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "backend"), str(ROOT / "bench")])}
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "ingest_lock.py"), "--batch", "3", "--requests", "3", "--rounds", "2"],
        capture_output=True, text=True, timeout=120, env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "/feedback/events holds the lock" in result.stdout, result.stdout


def test_the_stored_floor_writes_the_rows_ingest_writes(monkeypatch, tmp_path, database_url) -> None:
    """``/floor-stored`` is the ingest benchmark's plainest implementation of the same work: a thumbs up and
    then a thumbs down on an answer (and the thumbs down again) must be answered as ``/feedback/events``
    answers them and leave the same rows in every table, or the floor measures something else."""
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    monkeypatch.setenv("BENCH_DATABASE_URL", database_url)
    monkeypatch.setenv("BENCH_INSTANCE", str(tmp_path))
    from bench_app import create_app

    from feedback_bridge import FeedbackBridge

    app = create_app()
    client = app.test_client()
    with app.app_context():
        tokens = {path: FeedbackBridge().register_message(conversation_id="c", message_id=path, user_id="u",
                                                          input="q", output="a")
                  for path in ("/floor-stored", "/feedback/events")}
    answers: dict[str, list[dict[str, Any]]] = {path: [] for path in tokens}
    for kind in ("thumbs_up", "thumbs_down", "thumbs_down"):
        for path, token in tokens.items():
            vote = {"id": f"{kind}.{path[1:].replace('/', '.')}", "type": kind, "token": token}
            response = client.post(path, json={"events": [vote]})
            assert response.status_code == 200, response.json
            answers[path].append({**response.json, "results": [r["status"] for r in response.json["results"]]})
    assert answers["/feedback/events"][2] == {"results": ["duplicate"], "accepted": 0, "duplicate": 1, "rejected": 0}
    assert answers["/floor-stored"] == answers["/feedback/events"]

    def written(message_id: str) -> dict[str, Any]:
        pk = select(messages.c.id).where(messages.c.message_id == message_id).scalar_subquery()
        with fdb.read(app.extensions["feedback_bridge"].engine) as conn:
            deliveries = conn.execute(select(outbox.c.provider, outbox.c.kind, outbox.c.status, outbox.c.coalesce_key)
                                      .where(outbox.c.message_pk == pk).order_by(outbox.c.provider, outbox.c.id)).all()
            return {
                "events": conn.execute(select(events.c.type, events.c.user_id).where(events.c.message_pk == pk)).all(),
                "outbox": [(p, k, s, key is not None) for p, k, s, key in deliveries],
                "state": conn.execute(select(states.c.vote, states.c.vote_event_id.like("thumbs_down%"))
                                      .where(states.c.message_pk == pk)).all(),
            }

    floor, ingest = written("/floor-stored"), written("/feedback/events")
    assert ingest["outbox"] == [("events", "event", "skipped", False), ("events", "event", "pending", False),
                                ("log", "state", "pending", True), ("log", "state", "skipped", False)]
    assert ingest["state"] == [("down", True)]
    assert floor == ingest
    app.extensions["feedback_bridge"].close()


def test_the_gunicorn_benchmark_reports_each_ratio_with_how_widely_its_rounds_disagree(monkeypatch, capsys) -> None:
    """``bench/ingest_gunicorn.py``'s report (the runs need wrk and gunicorn): medians of the per-round ratios, and
    their quartiles, which say how far the median of a few rounds can be trusted on a busy machine."""
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    import argparse

    import ingest_gunicorn

    rates = {"floor-stored": [100, 100, 100, 100, 100], "events": [60, 80, 90, 100, 120]}
    runs = [{"round": n, "endpoint": name, "batch": 1, "events_per_s": rate, "p50_ms": 1.0, "p99_ms": 2.0,
             "cpu_ms_per_event": 1.0 if name == "events" else 0.8, "loadavg_1m": 1.0}
            for name, per_round in rates.items() for n, rate in enumerate(per_round)]
    ingest_gunicorn.report(runs, argparse.Namespace(rounds=5, batches=[1], endpoints=["floor-stored", "events"]))
    out = capsys.readouterr().out
    assert "- batch 1: events/s 90% of floor-stored's (quartiles 70%-110%), p99 1.00x floor-stored's, " \
           "server CPU per event 1.25x floor-stored's" in out, out


def test_the_bench_app_adds_up_each_paths_requests_and_cpu(monkeypatch, tmp_path) -> None:
    """``BENCH_ACCOUNTING``: what ``bench/ingest_mixed.py`` compares, counted per path in each process."""
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    monkeypatch.setenv("BENCH_DATABASE_URL", f"sqlite:///{tmp_path / 'bench.sqlite3'}")
    monkeypatch.setenv("BENCH_INSTANCE", str(tmp_path))
    monkeypatch.setenv("BENCH_ACCOUNTING", "1")
    from bench_app import create_app

    from feedback_bridge import FeedbackBridge
    from feedback_bridge.write_gate import WriteGate

    monkeypatch.setattr(WriteGate, "hold", WriteGate.hold)  # the bench app times every gate's holds: undone after
    app = create_app()
    timed = WriteGate.hold
    assert getattr(timed, "bench_timed", False)
    client = app.test_client()
    with app.app_context():
        token = FeedbackBridge().register_message(conversation_id="c", message_id="m", user_id="u", input="q",
                                                  output="a")
    for n, path in enumerate(["/floor-stored", "/feedback/events"] * 2 + ["/floor-stored"]):
        vote = {"id": f"event-{n:04}", "type": "thumbs_up", "token": token}
        assert client.post(path, json={"events": [vote]}).status_code == 200
    client.get("/bench-accounting")  # not counted: asking must not change the answer
    answer = client.get("/bench-accounting").json
    assert answer["pid"] == os.getpid()
    assert sorted(answer["paths"]) == ["/feedback/events", "/floor-stored"]
    assert [answer["paths"][path]["requests"] for path in ("/floor-stored", "/feedback/events")] == [3, 2]
    for totals in answer["paths"].values():
        assert 0 < totals["cpu_s"] <= totals["wall_s"] + 0.001  # a thread's CPU time cannot outrun the clock
        assert 0 < totals["lock_s"] < totals["wall_s"]  # both paths write under SQLite's write gate
    create_app()  # a second app in the process times each hold once, not twice
    assert WriteGate.hold is timed
    before = client.get("/bench-accounting").json["paths"]["/floor-stored"]
    assert client.post("/floor-stored", json={"events": [{**vote, "id": "event-last"}]}).status_code == 200
    after = client.get("/bench-accounting").json["paths"]["/floor-stored"]
    assert 0 < after["lock_s"] - before["lock_s"] < after["wall_s"] - before["wall_s"]
    app.extensions["feedback_bridge"].close()


def test_the_mixed_benchmark_compares_the_cpu_each_path_cost_all_workers(monkeypatch, capsys) -> None:
    """``bench/ingest_mixed.py`` (its runs need wrk and gunicorn): each worker's totals taken before and after a run,
    what each path cost between them, per event, and their ratio over the rounds."""
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    import ingest_mixed

    assert '(counter % 2 == 1) and "/floor-stored" or "/feedback/events"' in ingest_mixed.LUA_MIXED % {
        "tokens": "t", "batch": 1, "run": "r"}
    before = {1: {"/floor-stored": {"requests": 10, "cpu_s": 1.0, "wall_s": 2.0}}, 2: {}}
    after = {1: {"/floor-stored": {"requests": 30, "cpu_s": 3.0, "wall_s": 6.0},
                 "/feedback/events": {"requests": 20, "cpu_s": 2.5, "wall_s": 5.0}},
             2: {"/floor-stored": {"requests": 20, "cpu_s": 2.0, "wall_s": 4.0},
                 "/feedback/events": {"requests": 20, "cpu_s": 2.5, "wall_s": 6.0}}}
    floor = ingest_mixed.spent(before, after, "/floor-stored")
    events_ = ingest_mixed.spent(before, after, "/feedback/events")
    assert floor == {"requests": 40, "cpu_s": 4.0, "wall_s": 8.0, "lock_s": 0.0}
    assert events_ == {"requests": 40, "cpu_s": 5.0, "wall_s": 11.0, "lock_s": 0.0}
    run = ingest_mixed.measure(floor, events_, batch=2)
    assert (run["cpu_ms_floor"], run["cpu_ms_events"], run["cpu_ratio"], run["wall_ratio"]) == (50.0, 62.5, 1.25, 1.375)
    assert run["lock_ratio"] is None  # no write gate (PostgreSQL): no line about it
    runs = [{**run, "cpu_ratio": ratio} for ratio in (1.1, 1.2, 1.25, 1.3, 1.5)]
    ingest_mixed.report(runs, [2])
    out = capsys.readouterr().out
    assert "- batch 2: 62.500 ms against 50.000 ms, 1.25x the floor's (quartiles 1.15-1.40x), 1.25x over all " \
           "rounds; so 80% of the floor's events/s where CPU bounds both; wall per request 1.38x" in out, out
    assert "write lock" not in out
    sqlite = ingest_mixed.measure({**floor, "lock_s": 2.0}, {**events_, "lock_s": 2.5}, batch=2)
    assert sqlite["lock_ratio"] == 1.25
    ingest_mixed.report([{**sqlite, "lock_ratio": ratio} for ratio in (1.1, 1.2, 1.25, 1.3, 1.5)], [2])
    assert "SQLite's write lock held per request 1.25x the floor's (quartiles 1.15-1.40x); so 80% of the floor's " \
           "events/s where the lock bounds both" in capsys.readouterr().out


def test_the_ab_benchmark_reports_the_ratio_of_two_versions_run_side_by_side(monkeypatch, capsys) -> None:
    """``bench/ingest_ab.py``'s report (its runs need wrk and gunicorn): per round B's events/s and CPU per event
    against A's, taken in the same seconds; their medians and quartiles."""
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    import ingest_ab

    runs = [{"events_per_s_a": 100.0, "cpu_ms_a": 1.0, "events_per_s_b": rate, "cpu_ms_b": cpu}
            for rate, cpu in ((90, 0.9), (100, 0.95), (105, 0.96), (110, 0.97), (130, 1.1))]
    ingest_ab.report(runs)
    out = capsys.readouterr().out
    assert "over 5 rounds, B against A: events/s 1.05x (quartiles 0.95-1.20x), server CPU per event 0.96x " \
           "(quartiles 0.93-1.04x)" in out, out
