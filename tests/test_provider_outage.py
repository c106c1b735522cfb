"""Moveworks and Nebuly through an outage, with the real worker thread and the real event API: both providers
throttle (429 + Retry-After), then fail (500), then hang past the client timeout, then drop connections, while
events keep arriving. Afterwards every event is accounted for exactly once per provider. Also: no provider secret
reaches the outbox, a blueprint response or the log."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from itertools import pairwise
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from conftest import register, runtime
from feedback_bridge import db as fdb
from feedback_bridge import outbox as ob
from feedback_bridge.providers.nebuly import AMENDMENT_SKIP
from feedback_bridge.schema import events, outbox
from feedback_bridge.testing import MoveworksEmulator, NebulyEmulator
from support import event, wait_until
from support import outbox_rows as rows

MW_TOKEN, ASSISTANT, NB_KEY = "mw-outage-token-0f1e2d3c", "acme-bot", "nb-outage-key-4b5a6978"
CLIENT_ID, CLIENT_SECRET = "outage-client", "mw-client-secret-77aa88bb"
INPUT, OUTPUT = "How do I reset my password?", "Open Settings, then Security."
FAULTS = [("throttle", 3), ("error", 4), ("hang", 2), ("drop", 3)]  # in this order, on both providers


@pytest.fixture(scope="module")
def emulators() -> Iterator[tuple[MoveworksEmulator, NebulyEmulator]]:
    mw = MoveworksEmulator(tokens={MW_TOKEN}, assistant_name=ASSISTANT, clients={CLIENT_ID: CLIENT_SECRET})
    nebuly = NebulyEmulator(api_keys={NB_KEY})
    # Past the read timeout; a hung call is recorded when it ends.
    mw.hang_seconds = nebuly.hang_seconds = 2.0
    with mw, nebuly:
        yield mw, nebuly


@pytest.fixture(autouse=True)
def _fresh(emulators: tuple[MoveworksEmulator, NebulyEmulator]) -> None:
    for emulator in emulators:
        emulator.reset()


# A read timeout that a busy test machine's slow answer does not hit: an answer that arrives after the client gave
# up is a genuine at-least-once repeat, and would make "exactly once" flaky.
TIMEOUT = [1, 1]


def providers(mw: MoveworksEmulator, nebuly: NebulyEmulator) -> dict[str, Any]:
    return {
        "moveworks": {"base_url": mw.base_url, "assistant_name": ASSISTANT, "token": MW_TOKEN, "timeout": TIMEOUT},
        "nebuly": {"api_key": NB_KEY, "base_url": nebuly.url, "timeout": TIMEOUT},
    }


def settled(app: Flask) -> bool:
    with fdb.read(runtime(app).engine) as conn:
        counts = ob.counts(conn)
    return all(c["pending"] == 0 and c["in_flight"] == 0 for c in counts.values())


def test_outage_every_event_is_delivered_exactly_once_per_provider(make_app, emulators, database_url):
    mw, nebuly = emulators
    app = make_app(
        FEEDBACK_DATABASE_URL=database_url, FEEDBACK_PROVIDERS=providers(mw, nebuly), FEEDBACK_WORKER=True,
        FEEDBACK_SETTLE_SECONDS=0, FEEDBACK_BACKOFF_BASE=0.05, FEEDBACK_BACKOFF_MAX=1.0, FEEDBACK_MAX_ATTEMPTS=100,
        FEEDBACK_POLL_SECONDS=0.2, FEEDBACK_WORKER_CONCURRENCY=4,
    )
    client = app.test_client()
    tokens, known = [], []
    for i in range(12):
        message = mw.add_message()
        known.append(message)
        user = f"user-{i}@example.com"
        tokens.append(register(app, f"m-{i}", user, input=INPUT, output=OUTPUT,
                               refs={"moveworks": message.refs()}))
        created = runtime(app).store.find_message("c-1", f"m-{i}").created_at
        nebuly.add_interaction(user, INPUT, OUTPUT, created)
    for kind, count in FAULTS:
        for emulator in emulators:
            emulator.fail_next(count, kind, retry_after=1)

    posted: list[dict] = []

    def send(*batch: dict) -> None:
        response = client.post("/feedback/events", json={"events": list(batch)})  # also starts the worker
        assert response.status_code == 200 and response.json["accepted"] == len(batch), response.json
        posted.extend(batch)

    def faults_seen(n: int) -> None:  # the stretch has reached its n-th failed call on both providers
        for emulator in emulators:
            wait_until(lambda e=emulator: sum(1 for c in e.calls if c.fault) >= n, 15, f"{n} faults")

    votes = {i: event("thumbs_up", tokens[i], comment=f"first look {i}") for i in range(12)}
    send(*(votes[i] for i in range(6)))
    faults_seen(3)  # throttled
    send(*(event("copy_output", tokens[i], text=f"copied {i}") for i in range(6)))
    for i in range(3):  # change of mind: replaces the vote if it is still waiting for its retry
        votes[i] = event("thumbs_down", tokens[i], reason="NOT_COMPLETE")
        send(votes[i])
    send(*(votes[i] for i in range(6, 12)))
    faults_seen(7)  # server errors
    amendments = [event("thumbs_up", tokens[i], amends=votes[i]["id"], comment=f"second look {i}") for i in (6, 7, 8)]
    send(*amendments)
    send(*(event("rating", tokens[i], value=5) for i in (9, 10, 11)))
    faults_seen(8)  # a hang past the timeout, or a dropped connection
    send(*(event("paste", tokens[i], text=f"pasted {i}") for i in (0, 1, 2, 3)))
    faults_seen(12)  # every fault met
    send(*(event("copy_input", tokens[i], text=f"prompt {i}") for i in (4, 5)))
    wait_until(lambda: settled(app), 30, "the outbox to settle")

    # Nothing lost: every event stored, and one outbox row per provider for each.
    with fdb.read(runtime(app).engine) as conn:
        stored = {r.event_id: r.id for r in conn.execute(select(events.c.event_id, events.c.id))}
    assert set(stored) == {e["id"] for e in posted}
    for provider in ("moveworks", "nebuly"):
        provider_rows = rows(app, provider)
        assert sorted(r["event_pk"] for r in provider_rows) == sorted(stored.values()), provider
        assert not [r for r in provider_rows if r["status"] not in ("delivered", "skipped")], provider
    by_pk = {pk: event_id for event_id, pk in stored.items()}
    kind_of = {e["id"]: e for e in posted}

    # Nebuly: exactly one accepted request per delivered row, none twice, and every event either delivered or
    # skipped for a reason that means "another delivery carries it / it cannot be expressed".
    nb_rows = rows(app, "nebuly")
    delivered = [r for r in nb_rows if r["status"] == "delivered"]
    bodies = Counter(_key(c.json()) for c in nebuly.received)
    assert max(bodies.values()) == 1, "a request was accepted twice"
    assert bodies == Counter(_key(r["request"]["json"]) for r in delivered)
    skipped = Counter(r["last_error"] for r in nb_rows if r["status"] == "skipped")
    assert set(skipped) <= {ob.SUPERSEDED, ob.MERGED, AMENDMENT_SKIP}, skipped
    delivered_ids = {by_pk[r["event_pk"]] for r in delivered}
    for i in range(12):
        assert votes[i]["id"] in delivered_ids, f"the final vote of message {i} was not delivered"
    for e in posted:
        if e["type"] in ("copy_output", "copy_input", "paste", "rating"):
            assert e["id"] in delivered_ids, e
    superseded = {by_pk[r["event_pk"]] for r in nb_rows if r["last_error"] == ob.SUPERSEDED}
    assert all(kind_of[e]["type"] == "thumbs_up" for e in superseded)

    # Moveworks: the final state of each message is the last thing it accepted; nothing was sent twice in a row.
    mw_delivered = [r for r in rows(app, "moveworks") if r["status"] == "delivered"]
    assert len(mw_delivered) == len(mw.received)
    for i, message in enumerate(known):
        submissions = [s for s in mw.submissions if s.message == message]
        assert submissions, f"message {i} got nothing"
        final_vote = votes[i]["type"]
        # An amendment replaced the comment of 6..8; a rating (9..11) carries its own reason and comment (none).
        comment = {6: "second look 6", 7: "second look 7", 8: "second look 8", 9: None, 10: None, 11: None}.get(
            i, f"first look {i}")
        expected = ("unhelpful", "Not complete") if final_vote == "thumbs_down" else ("helpful", comment)
        assert (submissions[-1].rating, submissions[-1].additional_feedback) == expected, i
        pairs = [(s.rating, s.additional_feedback) for s in submissions]
        assert all(a != b for a, b in pairwise(pairs)), f"message {i} got the same state twice: {pairs}"
    # Every fault was met (the stretch really happened), and each failed attempt was retried.
    for emulator in emulators:
        assert Counter(c.fault for c in emulator.calls if c.fault) == dict(FAULTS)


def _key(body: dict) -> tuple:
    feedback, metadata = body["feedback"], body["metadata"]
    return (metadata["end_user"], feedback["slug"], feedback.get("text"), feedback.get("value"))


# -- secrets --------------------------------------------------------------------------------------------------


def test_no_secret_reaches_the_outbox_a_response_or_the_log(make_app, emulators, caplog):
    mw, nebuly = emulators
    caplog.set_level(logging.DEBUG)
    config = providers(mw, nebuly)
    config["moveworks_oauth"] = {
        "adapter": "feedback_bridge.providers.moveworks:MoveworksAdapter", "base_url": mw.base_url,
        "assistant_name": ASSISTANT, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "timeout": TIMEOUT,
    }
    app = make_app(FEEDBACK_PROVIDERS=config, FEEDBACK_BACKOFF_BASE=0.01, FEEDBACK_BACKOFF_MAX=0.01)
    client = app.test_client()
    worker = runtime(app).worker
    responses = []
    for i in range(4):
        message = mw.add_message()
        refs = {"moveworks": message.refs(), "moveworks_oauth": message.refs()}
        if i == 3:  # an unknown message: a 404 recorded with its response
            refs["moveworks"] = {**message.refs(), "message_id": "msg_Unknown"}
        token = register(app, f"m-{i}", refs=refs)
        if i == 1:
            mw.fail_next(2, "throttle", retry_after=0)
            nebuly.fail_next(1, "error")
        if i == 2:
            mw.expire_tokens()  # the OAuth provider refreshes its token on the 401
        responses.append(client.post("/feedback/events", json={"events": [
            event("thumbs_down", token, comment="bad"), event("copy_output", token, text="x")]}))
        responses.append(client.get("/feedback/state", query_string={"token": token}))
        worker.drain()
        worker.drain(now=worker.clock() + timedelta(days=365))  # the retries (not replace(year=): Feb 29)
    responses += [client.get("/feedback/health"), client.get("/feedback/openapi.json")]
    issued = {c.headers["authorization"].split(" ", 1)[1] for c in mw.calls} - {MW_TOKEN}
    assert len(issued) == 2, "two OAuth access tokens were used: the first and its refresh"
    secrets = [MW_TOKEN, NB_KEY, CLIENT_SECRET, *issued]

    with fdb.read(runtime(app).engine) as conn:
        recorded = [dict(r) for r in conn.execute(select(outbox)).mappings()]
    statuses = Counter((r["provider"], r["status"]) for r in recorded)
    assert statuses[("moveworks", "failed")] == 1 and statuses[("moveworks_oauth", "delivered")] == 4
    everything = [str(recorded), caplog.text, *(r.get_data(as_text=True) + str(r.headers) for r in responses),
                  *(str(a.describe()) + str(a.options) for a in runtime(app).adapters.values())]
    for secret in secrets:
        for text in everything:
            assert secret not in text
