"""Dashboard speed on a large store: the overview and filtered list pages, median of repeated renders.

    python bench/dashboard.py [--database-url URL] [--events 1000000] [--runs 7]

The first run seeds the store: 100,000 events from ``feedback_bridge.seed.seed_store``, copied by the database
up to ``--events`` (a store that already holds that many is reused as it is), then analysed. Each page is fetched
once to warm caches (for the overview, after timing a cold render that counts every day, as the first one after a
purge does), then ``--runs`` times with Flask's test client (no sockets): what is measured is the
bridge's own work, SQL and templates. Goals (issue 5): overview < 500 ms, a filtered list page < 200 ms.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import datetime, timezone

from flask import Flask
from sqlalchemy import Engine, Insert, Table, func, insert, literal, null, select, text

from feedback_bridge import FeedbackBridge, daily, db
from feedback_bridge.schema import events, messages, outbox, states
from feedback_bridge.seed import advance_sequences, seed_store

DEFAULT_URL = "sqlite:///bench-dashboard.sqlite3"
BASE_EVENTS = 100_000


def seed(database_url: str, n: int, base: int = BASE_EVENTS) -> None:
    """``base`` events from ``seed_store``, then copies of them made by the database itself (new ids, message
    and event ids suffixed ``-k``, same times) up to ``n``: the same mix, ten times as dense, in minutes."""
    engine = db.make_engine(database_url)
    db.create_all(engine)
    with db.read(engine) as conn:
        have = conn.execute(select(func.count()).select_from(events)).scalar_one()
    if have >= n:
        created = db.create_missing_indexes(engine)  # a store seeded by an earlier version of the schema
        if created:
            print(f"created indexes {', '.join(created)}")
            _analyze(engine)
        engine.dispose()
        return
    started = time.perf_counter()
    if have < base:
        seed_store(engine, base - have, now=datetime.now(timezone.utc))
    with db.read(engine) as conn:
        maxima = [conn.execute(select(func.max(t.c.id))).scalar_one() for t in (messages, events, outbox)]
        have = conn.execute(select(func.count()).select_from(events)).scalar_one()
    copies = -(-n // have) - 1
    for k in range(1, copies + 1):
        with db.write(engine) as conn:
            for table in (messages, events, states, outbox):
                conn.execute(_copy(table, k, *maxima))
    with db.write(engine) as conn:
        advance_sequences(conn)
        daily.forget(conn)
    print(f"seeded {base} events and {copies} copies in {time.perf_counter() - started:.0f} s")
    _analyze(engine)
    engine.dispose()


def _analyze(engine: Engine) -> None:
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE" if engine.dialect.name == "sqlite" else "VACUUM ANALYZE"))


def _copy(table: Table, k: int, max_message: int, max_event: int, max_outbox: int) -> Insert:
    """``INSERT INTO table SELECT`` the original rows with their keys shifted by ``k`` times the maxima."""
    shifted = {
        "message_pk": table.c.get("message_pk", None), "event_pk": table.c.get("event_pk", None),
    }
    exprs = []
    for column in table.columns:
        name = column.name
        if name == "id":
            offset = {"feedback_messages": max_message, "feedback_events": max_event}.get(table.name, max_outbox)
            exprs.append(column + k * offset)
        elif name in shifted and shifted[name] is not None:
            exprs.append(column + k * (max_message if name == "message_pk" else max_event))
        elif name in ("message_id", "event_id", "amends"):
            exprs.append(column + literal(f"-{k}"))
        elif name == "coalesce_key":
            exprs.append(null())
        else:
            exprs.append(column)
    originals = table.c.message_pk <= max_message if table.name != "feedback_messages" else table.c.id <= max_message
    return insert(table).from_select([c.name for c in table.columns], select(*exprs).where(originals))


def build_app(database_url: str) -> Flask:
    app = Flask("bench", instance_path=tempfile.mkdtemp())
    app.config.update(SECRET_KEY="bench", FEEDBACK_DATABASE_URL=database_url, FEEDBACK_WORKER=False,
                      FEEDBACK_DASHBOARD_CHECK=lambda request: True)
    FeedbackBridge(app)
    return app


def pages(app: Flask) -> list[str]:
    """The overview at three windows and list pages under the filters an operator uses most."""
    engine = app.extensions["feedback_bridge"].engine
    with db.read(engine) as conn:
        user, conversation = conn.execute(select(messages.c.user_id, messages.c.conversation_id).limit(1)).one()
    base = "/feedback/dashboard"
    return [
        f"{base}/", f"{base}/?days=7", f"{base}/?days=90",
        f"{base}/feedback", f"{base}/feedback?vote=down&reason=NOT_COMPLETE",
        f"{base}/feedback?rating=1", f"{base}/feedback?provider=qbusiness&status=failed",
        f"{base}/feedback?user={user}", f"{base}/feedback?conversation={conversation}",
        f"{base}/feedback?provider=nebuly&status=pending&days=90", f"{base}/feedback?status=failed",
        f"{base}/feedback?provider=moveworks&status=skipped",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    seed(args.database_url, args.events)
    app = build_app(args.database_url)
    client = app.test_client()
    print(f"{app.extensions['feedback_bridge'].engine.dialect.name}, {args.events} events, median of {args.runs}")
    engine = app.extensions["feedback_bridge"].engine
    for path in pages(app):
        cold = ""
        if "/feedback/dashboard/?" in path or path.endswith("/dashboard/"):
            with db.write(engine) as conn:
                daily.forget(conn)  # the first render after a purge counts every day; later ones read them
            started = time.perf_counter()
            response = client.get(path)
            cold = f"  (cold, counting every day: {(time.perf_counter() - started) * 1000:.1f} ms)"
        response = client.get(path)
        assert response.status_code == 200, (path, response.status_code)
        times = []
        for _ in range(args.runs):
            started = time.perf_counter()
            response = client.get(path)
            times.append(time.perf_counter() - started)
            assert response.status_code == 200
        print(f"{statistics.median(times) * 1000:8.1f} ms  {path}{cold}")
    app.extensions["feedback_bridge"].close()


if __name__ == "__main__":
    main()
