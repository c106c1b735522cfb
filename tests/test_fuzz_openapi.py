"""Schemathesis against the served OpenAPI document, in-process on the WSGI app: no 5xx, and every status code,
content type, header and body as documented. Deterministic (derandomized) and bounded by example counts."""

from __future__ import annotations

import copy
import time
from collections import Counter
from typing import Any

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import delete

from conftest import register, runtime
from feedback_bridge.models import TEXT_TYPES, VOTE_TYPES
from feedback_bridge.schema import messages
from feedback_bridge.tokens import MessageTokens, message_key
from support import RecordingAdapter, clock_shifted

# Not positive_data_acceptance / negative_data_rejection: a batch is answered per event by design (a schema-valid
# event can still be refused for its token, and one bad event next to good ones gets 200).
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]
POSITIVE, NEGATIVE = GenerationMode.POSITIVE, GenerationMode.NEGATIVE
OPENAPI = "/feedback/openapi.json"
MAX_BATCH, MAX_STRING = 5, 100
# Examples per operation and mode: 1,000 requests at least, in well under a minute on two busy cores.
BUDGET = {
    "POST /feedback/events": {POSITIVE: 330, NEGATIVE: 170},
    "GET /feedback/state": {POSITIVE: 260, NEGATIVE: 260},
    "GET /feedback/health": {POSITIVE: 5},
    "GET /feedback/widget.js": {POSITIVE: 5},
}


def capped(document: dict[str, Any]) -> dict[str, Any]:
    """The served document with the request body's sizes capped for generation speed: batches of up to
    ``MAX_BATCH`` events and strings of up to ``MAX_STRING`` characters. Drawing 100-event batches of 10,000-
    character texts costs hypothesis about a second per request; the limits themselves are tested at their
    boundaries in test_api.py. Responses are checked against the document as served."""
    document = copy.deepcopy(document)
    schemas = document["components"]["schemas"]
    schemas["Envelope"]["properties"]["events"]["maxItems"] = MAX_BATCH
    for prop in schemas["Event"]["properties"].values():
        if "maxLength" in prop:
            prop["maxLength"] = min(prop["maxLength"], MAX_STRING)
    return document


def token_pool(app: Flask) -> list[str]:
    """Tokens that reach every branch: valid ones of two users on two messages, one expired, one whose message
    was purged, and one forged with another key."""
    pool = [register(app, message_id=m, user_id=u) for m in ("m-1", "m-2") for u in ("alice", "bob")]
    with clock_shifted(-2 * 3600):
        pool.append(register(app, message_id="m-old"))
    gone = register(app, message_id="m-gone")
    with runtime(app).engine.begin() as conn:
        conn.execute(delete(messages).where(messages.c.message_id == "m-gone"))
    forged = MessageTokens("another-secret").issue(1, "alice", message_key("c-1", "m-1"))
    return [*pool, gone, forged]


def fit(event: dict[str, Any]) -> None:
    """Drop the fields the event's type does not take (cross-field rules a JSON schema cannot state), so more
    generated events get past validation into the store and the outbox."""
    kind = event.get("type")
    for name, allowed in (("value", kind == "rating"), ("text", kind in {t.value for t in TEXT_TYPES}),
                          ("reason", kind in {t.value for t in VOTE_TYPES}), ("comment", kind in {t.value for t in
                                                                                               VOTE_TYPES})):
        if not allowed:
            event.pop(name, None)
    event.pop("amends", None)
    if kind == "rating":
        event.setdefault("value", 3)
    if kind in {t.value for t in TEXT_TYPES}:
        event.setdefault("text", "copied")


def with_tokens(case: schemathesis.Case, data: st.DataObject, pool: list[str]) -> None:
    """Give a generated request real tokens (from ``pool``) some of the time, for the deep paths."""
    choice = st.integers(0, len(pool) + 1)  # past the pool: keep what schemathesis generated
    if case.operation.path.endswith("/state"):
        pick = data.draw(choice)
        if pick < len(pool) and isinstance(case.query, dict):
            case.query["token"] = pool[pick]
        return
    events = case.body.get("events") if isinstance(case.body, dict) else None
    for event in events if isinstance(events, list) else []:
        pick = data.draw(choice)
        if isinstance(event, dict) and pick < len(pool):
            event["token"] = pool[pick]
            for name in ("conversation_id", "message_id", "user_id"):
                event.pop(name, None)
            if data.draw(st.booleans()):
                fit(event)


def fuzz(operation: Any, mode: GenerationMode, examples: int, pool: list[str], seen: Counter[int]) -> int:
    """Run ``examples`` generated requests of one operation; count statuses in ``seen``; return events accepted."""
    accepted = [0]

    @settings(max_examples=examples, derandomize=True, database=None, deadline=None,
              phases=[Phase.explicit, Phase.generate, Phase.shrink], suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode), data=st.data())
    def run(case: schemathesis.Case, data: st.DataObject) -> None:
        with_tokens(case, data, pool)
        response = case.call()
        seen[response.status_code] += 1
        case.validate_response(response, checks=CHECKS)
        if response.status_code == 200 and case.method == "POST":
            accepted[0] += response.json()["accepted"]

    run()
    return accepted[0]


@pytest.mark.timeout(300)  # about 30 s of CPU; more wall time on a machine shared with other test runs
def test_the_api_keeps_its_documented_contract_under_fuzzing(make_app) -> None:
    app = make_app(FEEDBACK_RATE_LIMIT_IP="", FEEDBACK_RATE_LIMIT_TOKEN="", FEEDBACK_TOKEN_MAX_AGE=3600,
                   FEEDBACK_PROVIDERS={"state": RecordingAdapter("state"),
                                       "events": RecordingAdapter("events", mode="event")})
    pool = token_pool(app)
    schema = schemathesis.openapi.from_dict(capped(app.test_client().get(OPENAPI).get_json()))
    schema.app, schema.location = app, OPENAPI  # what from_wsgi sets: requests go to the app in-process
    statuses: dict[str, Counter[int]] = {}
    accepted = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        assert operation.label in BUDGET, f"{operation.label} is documented but not fuzzed"
        seen = statuses.setdefault(operation.label, Counter())
        for mode, examples in BUDGET[operation.label].items():
            started = time.process_time()
            accepted += fuzz(operation, mode, examples, pool, seen)
            print(f"{operation.label} {mode.value}: {time.process_time() - started:.1f} s CPU")

    total = sum(sum(c.values()) for c in statuses.values())
    print(f"schemathesis sent {total} requests: {statuses}; {accepted} events accepted")
    assert total >= 1000
    # The generated requests reached the deep paths, not just the validation at the door.
    assert accepted >= 50
    assert {200, 400, 401, 422} <= set(statuses["POST /feedback/events"])
    assert {200, 401, 404} <= set(statuses["GET /feedback/state"])
