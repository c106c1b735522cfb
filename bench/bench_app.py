"""The app the HTTP benchmarks serve with gunicorn: the bridge, plus the floors it is measured against.

    gunicorn --worker-class gthread 'bench_app:create_app()'    (with bench/ and backend/ on PYTHONPATH)

Configured from the environment, so the benchmark driver and every gunicorn worker build the same app:
``BENCH_DATABASE_URL`` (the bridge's database) and ``BENCH_WORKER`` (``1``: run the delivery worker).
Two providers, as ``bench/ingest_inprocess.py`` has them: the ``log`` adapter once as a state provider and
once as an event provider, so every event writes both kinds of outbox rows.

- ``POST /floor``: the same body read and parsed as JSON, nothing stored: what Flask and gunicorn cost.
- ``POST /floor-checked``: the same, plus what the bridge must do before it may store anything: each event
  validated by its schema, the tokens verified and their messages read (one read, as ingest does). Nothing
  stored: what is left of ``/feedback/events`` above this is the transaction.
- ``POST /floor-commit``: ``/floor`` plus one row inserted and committed in the bridge's database, through
  the bridge's engine: the least any endpoint that stores its request durably can cost.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import datetime, timezone

from flask import Flask, jsonify, request
from sqlalchemy import Column, DateTime, Integer, MetaData, Table, insert

from feedback_bridge import FeedbackBridge, db
from feedback_bridge.schema import Id
from feedback_bridge.schemas import EventSchema

SECRET_KEY = "bench-secret"
PROVIDERS = {"log": {"level": "DEBUG"},
             "events": {"adapter": "feedback_bridge.providers.log:LogAdapter", "mode": "event", "level": "DEBUG"}}

_floor_metadata = MetaData()
floor_rows = Table("bench_floor", _floor_metadata, Column("id", Id, primary_key=True, autoincrement=True),
                   Column("events", Integer, nullable=False), Column("received_at", DateTime, nullable=False))


def create_app() -> Flask:
    logging.basicConfig(level=logging.WARNING)
    app = Flask("bench_app", instance_path=os.environ.get("BENCH_INSTANCE", "/tmp/feedback-bench"))
    app.config.update(
        SECRET_KEY=SECRET_KEY, FEEDBACK_DATABASE_URL=os.environ["BENCH_DATABASE_URL"],
        FEEDBACK_WORKER=os.environ.get("BENCH_WORKER") == "1", FEEDBACK_PROVIDERS=PROVIDERS,
        # Load from one address at thousands of requests a minute: the rate limits would answer most with 429.
        FEEDBACK_RATE_LIMIT_IP="", FEEDBACK_RATE_LIMIT_TOKEN="",
    )
    bridge = FeedbackBridge(app)
    runtime = bridge.get_runtime(app)
    engine = runtime.engine
    event_schema = EventSchema()
    with db.write(engine) as conn:
        _floor_metadata.create_all(conn)

    @app.post("/floor")
    def floor():
        return jsonify({"received": len(json.loads(request.get_data())["events"])})

    @app.post("/floor-checked")
    def floor_checked():
        events = [event_schema.load(event) for event in json.loads(request.get_data())["events"]]
        resolved = runtime.resolve_tokens(event["token"] for event in events)
        if any(isinstance(result, Exception) for result in resolved.values()):
            return jsonify({"error": "a token did not resolve"}), 400
        return jsonify({"received": len(events)})

    @app.post("/floor-commit")
    def floor_commit():
        received = len(json.loads(request.get_data())["events"])
        with db.write(engine) as conn:
            conn.execute(insert(floor_rows), {"events": received, "received_at": datetime.now(timezone.utc)})
        return jsonify({"received": received})

    return app
