"""`flask feedback ...`: worker, deliver, status, retry, export and purge, against SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from sqlalchemy import func, insert, select, update

from conftest import register, runtime
from feedback_bridge import PermanentDeliveryError
from feedback_bridge import db as fdb
from feedback_bridge.cli import Duration
from feedback_bridge.maintenance import ExportFilter, iter_export
from feedback_bridge.schema import events, messages, outbox, states
from support import RecordingAdapter, event

TESTS_DIR = Path(__file__).resolve().parent
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def cli(app, *args: str, input: str | None = None) -> Result:
    return app.test_cli_runner().invoke(args=["feedback", *args], input=input, catch_exceptions=False)


def post(app, *items: dict[str, Any]) -> None:
    response = app.test_client().post("/feedback/events", json={"events": list(items)})
    assert response.status_code == 200, response.json
    assert response.json["accepted"] == len(items), response.json


def query(app, statement) -> list[dict[str, Any]]:
    with fdb.read(runtime(app).engine) as conn:
        return [dict(r) for r in conn.execute(statement).mappings()]


def execute(app, statement) -> None:
    with fdb.write(runtime(app).engine) as conn:
        conn.execute(statement)


def count(app, table) -> int:
    with fdb.read(runtime(app).engine) as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar_one()


def outbox_rows(app) -> list[dict[str, Any]]:
    return query(app, select(outbox).order_by(outbox.c.id))


def event_pk(app, event_id: str) -> int:
    [row] = query(app, select(events.c.id).where(events.c.event_id == event_id))
    return row["id"]


@pytest.fixture
def rec_app(make_app, database_url):
    rec = RecordingAdapter("rec")
    return make_app(FEEDBACK_DATABASE_URL=database_url, FEEDBACK_PROVIDERS={"rec": rec}), rec


# -- deliver ---------------------------------------------------------------------------------------


def test_deliver_once_delivers_what_is_due_and_prints_the_status(rec_app):
    app, rec = rec_app
    post(app, event("thumbs_down", register(app, "m-1"), reason="NOT_COMPLETE"))
    post(app, event("thumbs_up", register(app, "m-2")))

    result = cli(app, "deliver", "--once")

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "Processed 2 deliveries."
    assert lines[1].split() == ["provider", "pending", "in_flight", "delivered", "skipped", "failed", "oldest",
                                "pending"]
    assert lines[2].split() == ["rec", "0", "0", "2", "0", "0", "-"]
    assert sorted((r["message_id"], r["state"]["vote"], r["state"]["reason"]) for r in rec.sent) == [
        ("m-1", "down", "NOT_COMPLETE"), ("m-2", "up", None)]
    assert [r["status"] for r in outbox_rows(app)] == ["delivered", "delivered"]
    assert cli(app, "deliver", "--once").stdout.startswith("Processed 0 deliveries.\n")


def test_deliver_needs_once(rec_app):
    app, rec = rec_app
    post(app, event("thumbs_up", register(app)))
    result = cli(app, "deliver")
    assert result.exit_code == 2
    assert "flask feedback worker" in result.stderr
    assert rec.sent == [] and outbox_rows(app)[0]["status"] == "pending"


def test_worker_and_deliver_refuse_without_providers(make_app):
    app = make_app()
    for args in (["deliver", "--once"], ["worker"]):
        result = cli(app, *args)
        assert result.exit_code == 1
        assert "No providers are configured" in result.stderr


# -- status ----------------------------------------------------------------------------------------


def test_status_counts_per_provider_and_age_of_the_oldest_pending(rec_app):
    app, rec = rec_app
    rec.fail_next(PermanentDeliveryError("rejected"))
    post(app, event("thumbs_up", register(app, "m-1")))
    runtime(app).worker.drain()
    post(app, event("thumbs_up", register(app, "m-2")))
    runtime(app).worker.drain()
    post(app, event("thumbs_up", register(app, "m-3")), event("thumbs_down", register(app, "m-4")))
    two_hours_ago = datetime.now(timezone.utc) - timedelta(hours=2)
    m3 = query(app, select(messages.c.id).where(messages.c.message_id == "m-3"))[0]["id"]
    execute(app, update(outbox).where(outbox.c.message_pk == m3).values(created_at=two_hours_ago))

    result = cli(app, "status", "--json")

    assert result.exit_code == 0, result.output
    [(name, info)] = json.loads(result.stdout)["providers"].items()
    assert name == "rec" and info["configured"] is True
    assert info["counts"] == {"pending": 2, "in_flight": 0, "delivered": 1, "skipped": 0, "failed": 1}
    assert 7200 <= info["oldest_pending_age_seconds"] < 7200 + 60

    table = cli(app, "status").stdout.splitlines()
    assert table[1].split() == ["rec", "2", "0", "1", "0", "1", "2h", "00m"]


def test_status_lists_configured_providers_without_rows_and_leftover_providers(make_app, database_url):
    old = make_app(FEEDBACK_DATABASE_URL=database_url, FEEDBACK_PROVIDERS={"gone": RecordingAdapter("gone")})
    post(old, event("thumbs_up", register(old)))
    app = make_app(FEEDBACK_DATABASE_URL=database_url, FEEDBACK_PROVIDERS={"rec": RecordingAdapter("rec")})

    status = json.loads(cli(app, "status", "--json").stdout)["providers"]

    assert status["rec"] == {"configured": True, "oldest_pending_age_seconds": None,
                             "counts": dict.fromkeys(["pending", "in_flight", "delivered", "skipped", "failed"], 0)}
    assert status["gone"]["configured"] is False and status["gone"]["counts"]["pending"] == 1
    assert "gone (not configured)" in cli(app, "status").stdout


# -- retry -----------------------------------------------------------------------------------------


@pytest.fixture
def dead_letters(make_app, database_url):
    """Two providers, two messages, every delivery failed for good."""
    a, b = RecordingAdapter("a"), RecordingAdapter("b")
    app = make_app(FEEDBACK_DATABASE_URL=database_url, FEEDBACK_PROVIDERS={"a": a, "b": b})
    for adapter in (a, b):
        adapter.fail_next(PermanentDeliveryError("400 bad request"), times=2)
    post(app, event("thumbs_up", register(app, "m-1")), event("thumbs_down", register(app, "m-2")))
    assert runtime(app).worker.drain() == 4
    assert {(r["status"], r["attempts"]) for r in outbox_rows(app)} == {("failed", 1)}
    return app, a, b


def statuses(app) -> dict[int, tuple[str, str]]:
    return {r["id"]: (r["provider"], r["status"]) for r in outbox_rows(app)}


def test_retry_requires_a_filter_or_all(dead_letters):
    app, _, _ = dead_letters
    before = statuses(app)
    for args in ([], ["--all", "--provider", "a"], ["--all", "--id", "1"]):
        result = cli(app, "retry", *args)
        assert result.exit_code == 2, args
        assert "--all" in result.stderr
    assert statuses(app) == before


def test_retry_by_provider_then_id_then_all(dead_letters):
    app, a, b = dead_letters
    result = cli(app, "retry", "--provider", "a")
    assert result.exit_code == 0 and result.stdout == "Moved 2 failed deliveries back to pending.\n"
    rows = outbox_rows(app)
    assert {(r["provider"], r["status"], r["attempts"], r["last_error"]) for r in rows} == {
        ("a", "pending", 0, None), ("b", "failed", 1, "PermanentDeliveryError: 400 bad request")}

    first_b, second_b = (r["id"] for r in rows if r["provider"] == "b")
    assert cli(app, "retry", "--id", str(first_b), "--id", "999999").stdout.startswith("Moved 1 failed delivery")
    assert statuses(app)[first_b] == ("b", "pending") and statuses(app)[second_b] == ("b", "failed")

    assert cli(app, "retry", "--provider", "a").stdout.startswith("Moved 0 ")
    assert cli(app, "retry", "--all").stdout.startswith("Moved 1 failed delivery")
    assert cli(app, "deliver", "--once").stdout.startswith("Processed 4 deliveries.")
    assert {s for _, s in statuses(app).values()} == {"delivered"}
    assert len(a.sent) == len(b.sent) == 2


def test_retry_skips_a_dead_vote_a_later_delivered_vote_replaced_and_says_so(make_app, database_url):
    rec = RecordingAdapter("rec", mode="event")
    app = make_app(FEEDBACK_DATABASE_URL=database_url, FEEDBACK_PROVIDERS={"rec": rec})
    token = register(app)
    rec.fail_next(PermanentDeliveryError("400 bad request"))
    post(app, event("thumbs_up", token))
    runtime(app).worker.drain()
    post(app, event("thumbs_down", token))
    runtime(app).worker.drain()

    result = cli(app, "retry", "--all")

    assert result.exit_code == 0
    assert result.stdout == ("Moved 0 failed deliveries back to pending.\nSkipped 1 stale vote: a later vote was "
                             "delivered since, and sending the old one after it would undo it.\n")
    assert [r["status"] for r in outbox_rows(app)] == ["skipped", "delivered"]


def test_retry_warns_about_a_provider_that_is_not_configured(dead_letters):
    app, _, _ = dead_letters
    result = cli(app, "retry", "--provider", "nebuly")
    assert result.exit_code == 0
    assert "not configured" in result.stderr and result.stdout.startswith("Moved 0 ")


# -- export ----------------------------------------------------------------------------------------


@pytest.fixture
def history(rec_app):
    """Alice votes down with a comment and copies the answer; Bob rates another message. Received one
    hour apart (T0, T0+1h, T0+2h); Alice's vote is delivered, the rest still pending."""
    app, _ = rec_app
    alice, bob = register(app, "m-1", "alice"), register(app, "m-2", "bob", conversation_id="c-2")
    vote = event("thumbs_down", alice, id="vote-0001", reason="NOT_COMPLETE", comment='Says "step 3",\nmissing',
                 occurred_at="2025-12-31T23:59:00+00:00")
    post(app, vote)
    runtime(app).worker.drain()
    post(app, event("copy_output", alice, id="copy-0001", text="Open Settings, then Security"))
    post(app, event("rating", bob, id="rate-0001", value=4))
    for hour, event_id in enumerate(["vote-0001", "copy-0001", "rate-0001"]):
        execute(app, update(events).where(events.c.event_id == event_id)
                .values(received_at=T0 + timedelta(hours=hour)))
    return app


def test_export_jsonl_to_stdout(history):
    app = history

    result = cli(app, "export")

    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["event_id"] for r in rows] == ["vote-0001", "copy-0001", "rate-0001"]
    vote, copy, rating = rows
    delivered_at = vote["deliveries"]["rec"].pop("delivered_at")
    assert datetime.fromisoformat(delivered_at).tzinfo is not None
    assert vote == {
        "event_id": "vote-0001", "conversation_id": "c-1", "message_id": "m-1", "user_id": "alice",
        "type": "thumbs_down", "value": None, "reason": "NOT_COMPLETE", "comment": 'Says "step 3",\nmissing',
        "text": None, "amends": None, "occurred_at": "2025-12-31T23:59:00+00:00",
        "received_at": "2026-01-01T00:00:00+00:00",
        "deliveries": {"rec": {"status": "delivered", "attempts": 1, "last_error": None}},
    }
    assert (copy["type"], copy["text"], copy["received_at"]) == (
        "copy_output", "Open Settings, then Security", "2026-01-01T01:00:00+00:00")
    assert copy["deliveries"]["rec"] == {"status": "pending", "attempts": 0, "last_error": None,
                                         "delivered_at": None}
    assert (rating["user_id"], rating["conversation_id"], rating["value"]) == ("bob", "c-2", 4)


def test_export_csv_to_a_file_with_a_progress_bar(history, tmp_path):
    app = history
    path = tmp_path / "export.csv"

    result = cli(app, "export", "--format", "csv", "--output", str(path))

    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert "Exporting events" in result.stderr and "Wrote 3 events" in result.stderr
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["event_id"] for r in rows] == ["vote-0001", "copy-0001", "rate-0001"]
    vote = rows[0]
    assert vote["comment"] == 'Says "step 3",\nmissing' and vote["value"] == "" and vote["user_id"] == "alice"
    assert vote["received_at"] == "2026-01-01T00:00:00+00:00"
    assert json.loads(vote["deliveries"])["rec"]["status"] == "delivered"
    assert json.loads(rows[2]["deliveries"])["rec"]["status"] == "pending" and rows[2]["value"] == "4"


def test_export_csv_to_stdout_has_no_progress_bar(history):
    app = history
    result = cli(app, "export", "--format", "csv")
    assert result.exit_code == 0 and result.stderr == ""
    assert [r["event_id"] for r in csv.DictReader(io.StringIO(result.stdout))] == [
        "vote-0001", "copy-0001", "rate-0001"]


@pytest.mark.parametrize("comment", ["=HYPERLINK(\"http://evil\")", "+1+2", "-2+3", "@SUM(A1)", "\tx"])
def test_export_csv_neutralises_formulas_and_jsonl_keeps_them(rec_app, comment):
    app, _ = rec_app
    post(app, event("thumbs_down", register(app, "m-1", "alice"), id="formula-1", comment=comment))
    as_csv, as_jsonl = cli(app, "export", "--format", "csv"), cli(app, "export")
    [row] = list(csv.DictReader(io.StringIO(as_csv.stdout, newline="")))
    assert row["comment"] == "'" + comment
    assert json.loads(as_jsonl.stdout)["comment"] == comment


@pytest.mark.parametrize(("args", "expected"), [
    (["--user", "alice"], ["vote-0001", "copy-0001"]),
    (["--user", "nobody"], []),
    (["--since", "2026-01-01T01:00:00Z"], ["copy-0001", "rate-0001"]),
    (["--until", "2026-01-01T01:00:00+00:00"], ["vote-0001"]),
    (["--since", "2026-01-01T02:00:00+01:00", "--until", "2026-01-01T02:00"], ["copy-0001"]),
    (["--since", "2026-01-01", "--user", "bob"], ["rate-0001"]),
])
def test_export_filters(history, args, expected):
    app = history
    result = cli(app, "export", *args)
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["event_id"] for line in result.stdout.splitlines()] == expected


def test_export_rejects_a_bad_date(history):
    app = history
    result = cli(app, "export", "--since", "yesterday")
    assert result.exit_code == 2 and "ISO 8601" in result.stderr


def test_export_pages_through_ties_in_received_time(rec_app):
    app, _ = rec_app
    token = register(app)
    ids = [f"evt-{i:04d}" for i in range(7)]
    post(app, *(event("copy_output", token, id=i, text="x") for i in ids))
    # Received times with ties across page boundaries: pages of 2 must neither skip nor repeat rows.
    times = [T0, T0, T0, T0 + timedelta(seconds=1), T0 + timedelta(seconds=1), T0, T0 + timedelta(seconds=2)]
    for event_id, at in zip(ids, times, strict=True):
        execute(app, update(events).where(events.c.event_id == event_id).values(received_at=at))
    expected = [i for _, _, i in sorted(zip(times, [event_pk(app, i) for i in ids], ids, strict=True))]

    rows = list(iter_export(runtime(app).engine, ExportFilter(), page_size=2))

    assert [r["event_id"] for r in rows] == expected
    since = [r["event_id"] for r in iter_export(runtime(app).engine, ExportFilter(since=T0 + timedelta(seconds=1)),
                                                 page_size=1)]
    assert since == expected[4:]


# -- purge -----------------------------------------------------------------------------------------


def test_duration_parsing():
    assert Duration().convert("90d", None, None) == timedelta(days=90)
    assert Duration().convert("12h", None, None) == timedelta(hours=12)
    assert Duration().convert("30m", None, None) == timedelta(minutes=30)


@pytest.mark.parametrize("args", [[], ["--older-than", "90d", "--user", "alice"], ["--older-than", "90x"],
                                  ["--older-than", "0d"]])
def test_purge_usage_errors(rec_app, args):
    app, _ = rec_app
    post(app, event("thumbs_up", register(app)))
    result = cli(app, "purge", "--yes", *args)
    assert result.exit_code == 2
    assert count(app, events) == 1


@pytest.fixture
def aged(rec_app):
    """m-old: registered and voted on 100 days ago. m-mixed: an old vote and a fresh copy. m-new: fresh.
    m-silent: registered 100 days ago, never any feedback. Everything delivered."""
    app, _ = rec_app
    now = datetime.now(timezone.utc)
    long_ago = now - timedelta(days=100)
    old, mixed, new = register(app, "m-old"), register(app, "m-mixed"), register(app, "m-new")
    register(app, "m-silent")
    post(app, event("thumbs_up", old, id="old-vote"), event("rating", old, id="old-rating", value=2),
         event("thumbs_down", mixed, id="mixed-vote"))
    runtime(app).worker.drain()
    post(app, event("copy_output", mixed, id="mixed-copy", text="x"), event("thumbs_up", new, id="new-vote"))
    runtime(app).worker.drain()
    execute(app, update(messages).where(messages.c.message_id.in_(["m-old", "m-silent", "m-mixed"]))
            .values(created_at=long_ago))
    execute(app, update(events).where(events.c.event_id.in_(["old-vote", "old-rating", "mixed-vote"]))
            .values(received_at=long_ago))
    return app


def test_purge_older_than_asks_first_and_aborts_on_no(aged):
    before = [count(aged, t) for t in (messages, events, states, outbox)]
    result = cli(aged, "purge", "--older-than", "90d", input="n\n")
    assert result.exit_code == 1
    assert "Delete 3 events received before" in result.output and "Aborted" in result.output
    assert [count(aged, t) for t in (messages, events, states, outbox)] == before


def test_purge_older_than_deletes_old_events_and_orphaned_old_messages(aged):
    old_event_pks = [event_pk(aged, i) for i in ("old-vote", "old-rating", "mixed-vote")]
    old_outbox = query(aged, select(outbox.c.id).where(outbox.c.event_pk.in_(old_event_pks)))
    assert old_outbox, "the old events were delivered"
    m_old = query(aged, select(messages.c.id).where(messages.c.message_id == "m-old"))[0]["id"]
    # A pending delivery of m-old that no event points at any more still goes with its message.
    now = datetime.now(timezone.utc)
    execute(aged, insert(outbox).values(provider="rec", kind="state", message_pk=m_old, user_id="alice@example.com",
                                        status="pending", attempts=0, next_attempt_at=now, created_at=now,
                                        updated_at=now))

    result = cli(aged, "purge", "--older-than", "90d", input="y\n")

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == (
        f"Deleted: outbox {len(old_outbox) + 1}, states 1, events 3, messages 2")
    assert sorted(r["message_id"] for r in query(aged, select(messages.c.message_id))) == ["m-mixed", "m-new"]
    assert sorted(r["event_id"] for r in query(aged, select(events.c.event_id))) == ["mixed-copy", "new-vote"]
    remaining = query(aged, select(outbox.c.event_pk, outbox.c.message_pk))
    assert remaining and not {r["event_pk"] for r in remaining} & set(old_event_pks)
    assert m_old not in {r["message_pk"] for r in remaining}
    assert [r["vote"] for r in query(aged, select(states).order_by(states.c.message_pk))] == ["down", "up"]

    again = cli(aged, "purge", "--older-than", "90d", "--yes")
    assert again.stdout == "Deleted: outbox 0, states 0, events 0, messages 0\n"


def test_purge_older_than_keeps_everything_younger(aged):
    result = cli(aged, "purge", "--older-than", "101d", "--yes")
    assert result.stdout == "Deleted: outbox 0, states 0, events 0, messages 0\n"
    assert count(aged, events) == 5 and count(aged, messages) == 4


def test_purge_user_erases_only_that_user(rec_app):
    app, _ = rec_app
    alice_own = register(app, "m-a", "alice", conversation_id="c-a")
    bob_on_alices = register(app, "m-a", "bob", conversation_id="c-a")
    bob_own = register(app, "m-b", "bob", conversation_id="c-b")
    alice_on_bobs = register(app, "m-b", "alice", conversation_id="c-b")
    carol_own = register(app, "m-c", "carol", conversation_id="c-c")
    post(app, event("thumbs_up", alice_own), event("thumbs_down", bob_on_alices),
         event("thumbs_up", bob_own), event("rating", alice_on_bobs, value=5), event("thumbs_up", carol_own))
    runtime(app).worker.drain()
    post(app, event("copy_output", alice_own, text="x"))
    assert count(app, outbox) == 6

    result = cli(app, "purge", "--user", "alice", input="y\n")

    assert result.exit_code == 0, result.output
    assert "Delete every message, event, state and delivery of user 'alice'?" in result.output
    # alice's 3 events, states and deliveries, plus bob's vote on alice's message m-a.
    assert result.stdout.splitlines()[-1] == "Deleted: outbox 4, states 3, events 4, messages 1"
    for table in (messages, events, states, outbox):
        assert not query(app, select(table).where(table.c.user_id == "alice")), table.name
    assert sorted(r["message_id"] for r in query(app, select(messages.c.message_id))) == ["m-b", "m-c"]
    assert sorted((r["user_id"], r["type"]) for r in query(app, select(events))) == [
        ("bob", "thumbs_up"), ("carol", "thumbs_up")]
    assert sorted(r["user_id"] for r in query(app, select(states))) == ["bob", "carol"]
    assert sorted(r["user_id"] for r in query(app, select(outbox))) == ["bob", "carol"]


# -- worker (a real process, stopped by a real signal) ---------------------------------------------

WORKER_APP = """
    import os

    from flask import Flask
    from support import RecordingAdapter

    from feedback_bridge import FeedbackBridge

    app = Flask(__name__)
    app.config.update(
        SECRET_KEY="test-secret", FEEDBACK_DATABASE_URL=os.environ["CLI_TEST_DATABASE_URL"],
        FEEDBACK_PROVIDERS={"rec": RecordingAdapter("rec")}, FEEDBACK_SETTLE_SECONDS=0, FEEDBACK_POLL_SECONDS=0.1,
    )
    FeedbackBridge(app)
"""


def wait_until(predicate, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_worker_process_delivers_until_signalled(rec_app, database_url, tmp_path, sig):
    app, _ = rec_app
    (tmp_path / "cli_worker_app.py").write_text(textwrap.dedent(WORKER_APP))
    post(app, event("thumbs_up", register(app, "m-1")))
    # A delivery whose worker died mid-flight: the new worker reclaims it.
    post(app, event("thumbs_down", register(app, "m-2")))
    crashed = datetime.now(timezone.utc) - timedelta(minutes=10)
    execute(app, update(outbox).where(outbox.c.id == outbox_rows(app)[-1]["id"]).values(
        status="in_flight", attempts=1, lease_owner="dead-host:1:x", lease_until=crashed))

    env = {**os.environ, "FLASK_APP": "cli_worker_app", "CLI_TEST_DATABASE_URL": database_url,
           "PYTHONPATH": os.pathsep.join([str(tmp_path), str(TESTS_DIR), os.environ.get("PYTHONPATH", "")])}
    stdout, stderr = (tmp_path / "worker.out").open("w+"), (tmp_path / "worker.err").open("w+")
    proc = subprocess.Popen([sys.executable, "-m", "flask", "feedback", "worker", "--concurrency", "2"],
                            cwd=tmp_path, env=env, stdout=stdout, stderr=stderr)
    try:
        def delivered() -> int:
            assert proc.poll() is None, (tmp_path / "worker.err").read_text()
            return sum(r["status"] == "delivered" for r in outbox_rows(app))

        wait_until(lambda: delivered() == 2, what="the queued deliveries")
        post(app, event("thumbs_up", register(app, "m-3")))
        wait_until(lambda: delivered() == 3, what="a delivery enqueued while the worker idles")
        proc.send_signal(sig)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        stdout.close()
        stderr.close()

    log = (tmp_path / "worker.err").read_text()
    assert "delivering to rec with concurrency 2" in log
    assert f"Stopping on {sig.name}" in log and "Worker stopped." in log
    rows = outbox_rows(app)
    assert [(r["status"], r["response"]["ok"]) for r in rows] == [("delivered", True)] * 3
    assert rows[1]["attempts"] == 2 and rows[1]["request"]["state"]["vote"] == "down"
    assert {r["lease_until"] for r in rows} == {None}
