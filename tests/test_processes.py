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

import requests
from sqlalchemy import select

from conftest import register, runtime
from feedback_bridge import db as fdb
from feedback_bridge.schema import events, outbox
from support import RecordingAdapter, event

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
    import sys
    from flask import Flask
    from werkzeug.serving import make_server
    from feedback_bridge import FeedbackBridge

    app = Flask("killed_app", instance_path=sys.argv[2])
    app.config.update(SECRET_KEY="test-secret", FEEDBACK_DATABASE_URL=sys.argv[1], FEEDBACK_WORKER=False,
                      FEEDBACK_PROVIDERS={"log": {}})
    FeedbackBridge(app)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    print(server.server_port, flush=True)
    server.serve_forever()
""")


def test_every_event_acknowledged_before_a_sigkill_is_in_the_store(make_app, database_url, tmp_path):
    app = make_app(FEEDBACK_DATABASE_URL=database_url, FEEDBACK_PROVIDERS={"log": {}})
    tokens = [register(app, message_id=f"m-{m}") for m in range(10)]
    script = tmp_path / "app_server.py"
    script.write_text(APP_SERVER)
    server = subprocess.Popen([sys.executable, str(script), database_url, str(tmp_path / "inst")],
                              stdout=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{server.stdout.readline().strip()}/feedback/events"

    acknowledged: list[str] = []
    lock, enough = threading.Lock(), threading.Event()

    def post_until_the_server_dies(worker: int) -> None:
        session, n = requests.Session(), 0
        while True:
            n += 1
            body = event("thumbs_up" if n % 2 else "thumbs_down", tokens[(worker + n) % len(tokens)])
            try:
                response = session.post(url, data=json.dumps({"events": [body]}), timeout=10,
                                        headers={"Content-Type": "text/plain"})
            except requests.ConnectionError:
                return
            if response.status_code == 200:
                with lock:
                    acknowledged.append(body["id"])
                    if len(acknowledged) >= 150:
                        enough.set()

    posters = [threading.Thread(target=post_until_the_server_dies, args=(w,)) for w in range(3)]
    for poster in posters:
        poster.start()
    assert enough.wait(60), "the server acknowledged events"
    os.kill(server.pid, signal.SIGKILL)  # while the posters are still sending
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
