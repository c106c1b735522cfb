"""All four providers at once, through the emulators the demo runs (``LocalProviders``): while one AWS provider is
out (throttled, then failing, then dropping connections), the other three keep delivering, and afterwards each
provider holds every message's final feedback, each sent once."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest

from conftest import register, runtime
from feedback_bridge import db as fdb
from feedback_bridge import outbox as ob
from feedback_bridge.testing.local import LocalProviders
from support import event, wait_until

QUESTION, ANSWER = "How do I connect to the VPN?", "Open Northwind Connect and pick the Europe gateway."
MESSAGES = 6


@pytest.fixture(scope="module")
def local() -> Iterator[LocalProviders]:
    with LocalProviders() as providers:
        yield providers


@pytest.mark.parametrize("down", ["qbusiness", "qconnect"])
def test_one_provider_out_while_the_others_deliver(make_app, local: LocalProviders, down: str):
    for emulator in local.emulators.values():
        emulator.reset()
    fast = {"connect_timeout": 1.0, "read_timeout": 1.0}
    app = make_app(
        FEEDBACK_PROVIDERS=local.providers_config(qbusiness=fast, qconnect=fast), FEEDBACK_WORKER=True,
        FEEDBACK_BACKOFF_BASE=0.05, FEEDBACK_BACKOFF_MAX=0.5, FEEDBACK_MAX_ATTEMPTS=100, FEEDBACK_POLL_SECONDS=0.2,
    )
    outage = local.emulators[down]
    # botocore tries twice per delivery, so each outbox attempt meets two of these.
    outage.fail_next(4, "throttle", retry_after=0.2)
    outage.fail_next(4, "error")
    outage.fail_next(2, "drop")
    client = app.test_client()
    # Nebuly joins feedback to its interaction by user, input and output: each message asks its own question.
    questions = [f"{QUESTION} ({i})" for i in range(MESSAGES)]
    tokens = [register(app, f"m-{i}", "alice", input=q, output=ANSWER,
                       refs=local.new_message_refs("alice", q, ANSWER)) for i, q in enumerate(questions)]

    def send(*batch: dict) -> None:
        response = client.post("/feedback/events", json={"events": list(batch)})
        assert response.status_code == 200 and response.json["accepted"] == len(batch), response.json

    send(*(event("thumbs_up", t) for t in tokens))
    wait_until(lambda: sum(1 for c in outage.calls if c.fault) >= 4, 15, "the outage to begin")
    send(*(event("thumbs_down", t, reason="NOT_COMPLETE") for t in tokens[:3]))  # changes of mind during it

    def settled() -> bool:
        with fdb.read(runtime(app).engine) as conn:
            counts = ob.counts(conn)
        return all(c["pending"] == 0 and c["in_flight"] == 0 for c in counts.values())

    wait_until(settled, 30, "every provider to catch up")
    assert Counter(c.fault for c in outage.calls if c.fault) == {"throttle": 4, "error": 4, "drop": 2}
    with fdb.read(runtime(app).engine) as conn:
        counts = ob.counts(conn)
    assert all(c["failed"] == 0 for c in counts.values()), counts

    # Each state provider's last word on every message is that message's final vote, and no request twice.
    final = ["NOT_USEFUL"] * 3 + ["USEFUL"] * (MESSAGES - 3)
    last_qb = {c.path: c.json()["messageUsefulness"]["usefulness"] for c in local.qbusiness.received}
    assert sorted(last_qb.values()) == sorted(final)
    last_qc = {c.json()["targetId"]: c.json()["contentFeedback"]["generativeContentFeedbackData"]["relevance"]
               for c in local.qconnect.received}
    assert sorted(last_qc.values()) == sorted(r.replace("USEFUL", "HELPFUL") for r in final)
    last_mw = {(s.message.message_id): s.rating for s in local.moveworks.submissions}
    assert sorted(last_mw.values()) == sorted(["unhelpful"] * 3 + ["helpful"] * (MESSAGES - 3))
    for emulator in (local.qbusiness, local.qconnect, local.moveworks):
        bodies = Counter((c.path, c.body) for c in emulator.received)
        assert max(bodies.values()) == 1, f"{emulator.name} accepted a request twice"
    # Nebuly takes events: one per vote that was not superseded while waiting, none twice.
    slugs = Counter(c.json()["feedback"]["slug"] for c in local.nebuly.received)
    assert slugs["thumbs_down"] == 3 and slugs["thumbs_up"] >= MESSAGES - 3
    assert max(Counter(c.body for c in local.nebuly.received).values()) == 1
