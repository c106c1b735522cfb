"""Real processes: several worker processes over one outbox, and an app server killed mid-load."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import requests
from sqlalchemy import select

from conftest import register, runtime
from feedback_bridge import db as fdb
from feedback_bridge.schema import events, outbox
from feedback_bridge.testing import NebulyEmulator
from support import RecordingAdapter, event, new_id, wait_until

WORKER_PROCESS = textwrap.dedent("""
    import json, pathlib, sys, time
    from feedback_bridge.db import make_engine
    from feedback_bridge.providers.log import LogAdapter
    from feedback_bridge.worker import Worker, WorkerSettings

    url, out, go = sys.argv[1], pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3])

    class FileRecorder(LogAdapter):
        def send(self, request):
            time.sleep(0.003)  # stands in for the provider's network time
            with out.open("a") as file:
                file.write(json.dumps({"provider": self.name, "request": request}) + "\\n")
            return {"ok": True}

    adapters = {"state": FileRecorder("state"), "events": FileRecorder("events", mode="event")}
    worker = Worker(make_engine(url), adapters, WorkerSettings(concurrency=2))
    while not go.exists():  # all processes start delivering together
        time.sleep(0.005)
    worker.drain()
    worker.stop()
""")


def test_worker_processes_racing_over_one_outbox_deliver_everything_once(make_app, database_url, tmp_path):
    app = make_app(FEEDBACK_DATABASE_URL=database_url, FEEDBACK_PROVIDERS={
        "state": RecordingAdapter("state"), "events": RecordingAdapter("events", mode="event"),
    })
    client, expected = app.test_client(), []
    for m in range(30):
        token = register(app, message_id=f"m-{m}", user_id=f"user-{m % 4}")
        batch = [event("thumbs_down", token, reason="NOT_COMPLETE"), event("paste", token, text="error 42"),
                 event("copy_output", token, text="Open Settings")]
        expected += [e["id"] for e in batch]
        assert client.post("/feedback/events", json={"events": batch}).json["accepted"] == 3

    script, go = tmp_path / "worker_process.py", tmp_path / "go"
    script.write_text(WORKER_PROCESS)
    outputs = [tmp_path / f"delivered-{n}.jsonl" for n in range(3)]
    children = [subprocess.Popen([sys.executable, str(script), database_url, str(out), str(go)])
                for out in outputs]
    go.touch()
    assert [child.wait(120) for child in children] == [0, 0, 0]

    delivered = [json.loads(line) for out in outputs if out.exists() for line in out.read_text().splitlines()]
    sent_events = Counter(d["request"]["event"]["id"] for d in delivered if d["provider"] == "events")
    assert sorted(sent_events) == sorted(expected) and set(sent_events.values()) == {1}
    states = [d["request"] for d in delivered if d["provider"] == "state"]
    assert sorted(s["message_id"] for s in states) == sorted(f"m-{m}" for m in range(30))
    assert sum(out.exists() for out in outputs) >= 2, "more than one process took part"
    with fdb.read(runtime(app).engine) as conn:
        statuses = Counter(conn.execute(select(outbox.c.status)).scalars())
    # The state provider: one delivery per message carrying the vote and the copy (the copy's own row is
    # skipped as coalesced into it), and each paste skipped (no state change).
    assert statuses == {"delivered": 30 + 90, "skipped": 30 + 30}


APP_SERVER = textwrap.dedent("""
    import json, sys
    from flask import Flask
    from werkzeug.serving import make_server
    from feedback_bridge import FeedbackBridge

    app = Flask("killed_app", instance_path=sys.argv[1])
    app.config.update(SECRET_KEY="test-secret", **json.loads(sys.argv[2]))
    FeedbackBridge(app)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    print(server.server_port, flush=True)
    server.serve_forever()
""")
NEBULY_KEY = "nb-crash-test-key"


def start_app_server(tmp_path: Path, config: dict[str, Any]) -> tuple[subprocess.Popen, str]:
    """The bridge in a werkzeug server of its own process (its in-app worker on); returns it and its base URL."""
    script = tmp_path / "app_server.py"
    script.write_text(APP_SERVER)
    server = subprocess.Popen([sys.executable, str(script), str(tmp_path / "inst"), json.dumps(config)],
                              stdout=subprocess.PIPE, text=True)
    return server, f"http://127.0.0.1:{server.stdout.readline().strip()}/feedback"


def test_every_event_acknowledged_before_a_sigkill_is_stored_and_delivered_after_restart(
    make_app, database_url, tmp_path
):
    with NebulyEmulator(api_keys={NEBULY_KEY}) as nebuly:
        nebuly.set_latency(0.05)  # one delivery at a time, slower than the posters: a backlog when it dies
        # The server delivers as it takes events (its worker thread on), with leases short enough that the
        # restarted server reclaims the deliveries the killed one held within the test's time.
        config = {"FEEDBACK_DATABASE_URL": database_url, "FEEDBACK_SETTLE_SECONDS": 0,
                  "FEEDBACK_LEASE_SECONDS": 2, "FEEDBACK_POLL_SECONDS": 0.2, "FEEDBACK_WORKER_CONCURRENCY": 1,
                  "FEEDBACK_PROVIDERS": {"nebuly": {"base_url": nebuly.url, "api_key": NEBULY_KEY}}}
        app = make_app(**config)
        tokens = [register(app, message_id=f"m-{m}") for m in range(10)]
        server, base = start_app_server(tmp_path, config)

        acknowledged: list[str] = []
        lock, enough = threading.Lock(), threading.Event()

        def post_until_the_server_dies(worker: int) -> None:
            session, n = requests.Session(), 0
            while True:
                n += 1
                event_id = new_id()  # also the copied text: what Nebuly receives names the event
                body = event("copy_output", tokens[(worker + n) % len(tokens)], id=event_id, text=event_id)
                try:
                    response = session.post(f"{base}/events", data=json.dumps({"events": [body]}), timeout=10,
                                            headers={"Content-Type": "text/plain"})
                except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError):
                    return  # the server died before answering, or in the middle of its answer
                if response.status_code == 200:
                    with lock:
                        acknowledged.append(event_id)
                        if len(acknowledged) >= 150:
                            enough.set()

        posters = [threading.Thread(target=post_until_the_server_dies, args=(w,)) for w in range(3)]
        for poster in posters:
            poster.start()
        assert enough.wait(60), "the server acknowledged events"
        os.kill(server.pid, signal.SIGKILL)  # while the posters are still sending and the worker delivering
        server.wait(30)
        for poster in posters:
            poster.join(60)
        assert server.returncode == -signal.SIGKILL

        with fdb.read(runtime(app).engine) as conn:
            stored = set(conn.execute(select(events.c.event_id)).scalars())
            queued = set(conn.execute(
                select(events.c.event_id).join(outbox, outbox.c.event_pk == events.c.id)).scalars())
        assert set(acknowledged) <= stored, "an acknowledged event was lost"
        assert stored <= queued, "an event was stored without its outbox row"
        assert len(acknowledged) >= 150
        with fdb.read(runtime(app).engine) as conn:
            left = Counter(conn.execute(select(outbox.c.status)).scalars())
        assert left["pending"] + left["in_flight"] > 0, f"the restart has deliveries to finish: {left}"

        restarted, base = start_app_server(tmp_path, config)
        try:
            assert requests.get(f"{base}/health", timeout=10).status_code == 200  # starts its worker

            def delivered() -> set[str]:
                return {json.loads(call.body)["feedback"]["text"] for call in nebuly.received}

            wait_until(lambda: set(acknowledged) <= delivered(), 90, "every acknowledged event delivered")
            wait_until(lambda: outbox_statuses(app) == {"delivered"}, 30, "the outbox settled")
        finally:
            restarted.terminate()
            restarted.wait(30)


def outbox_statuses(app) -> set[str]:
    with fdb.read(runtime(app).engine) as conn:
        return set(conn.execute(select(outbox.c.status)).scalars())
