"""Fill a store with realistic, deterministic demo data: ``seed_store(engine, n)``.

Messages of a help desk assistant, the feedback their users gave (thumbs, ratings, reasons, comments, copies,
pastes, amendments, the odd retraction), the folded states, and one outbox row per event and provider with the
request each adapter really builds (the same mapping functions), the skip reasons the adapters really give,
and mostly delivered, some pending and some failed outcomes. Rows are written with ``executemany`` in chunks.
"""

from __future__ import annotations

import json
import logging
import random
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import JSON, Connection, Engine, Table, func, insert, select, text

from . import daily, db
from .models import REASONS, Event, EventType, FeedbackState, apply_event
from .providers import mapping, moveworks, nebuly, qbusiness, qconnect
from .schema import events, messages, outbox, states

# (user_id, input, output, created_at) -> provider refs of a message, as ``register_message`` takes them.
MakeRefs = Callable[[str, str, str, datetime], dict[str, Any]]

logger = logging.getLogger(__name__)

DEFAULT_PROVIDERS = ("qbusiness", "qconnect", "moveworks", "nebuly")
SPAN_DAYS = 84  # twelve weeks of history
CHUNK = 2000  # messages per transaction
# Measured back from the newest message, not from now: at night or at a weekend the backlog is still there.
BACKLOG = timedelta(hours=1)  # still pending: the deliveries of the last hour of activity...
THROTTLED_WINDOW = timedelta(hours=6)  # ...and, throttled (_THROTTLED), a few of the hours before
APPLICATION_ID = "a1b2c3d4-0000-4000-8000-00000000feed"
ASSISTANT_ID = "5e1f0c3a-7d2b-4c1e-9f3a-2b6d8e0a4c11"
MOVEWORKS_URL = moveworks.DEFAULT_BASE_URL
ASSISTANT_NAME = "acmecorp-conversations-rest-api"
THRESHOLDS = mapping.RatingThresholds.from_option(None)

QA = (
    ("How do I reset my password?", "Open Settings, then Security, then Reset password. You will get an email "
     "with a link that is valid for 30 minutes."),
    ("The VPN keeps disconnecting", "Update the VPN client to the latest version, then switch the protocol to "
     "IKEv2 under Preferences. If it still drops, send us the log from Help > Export logs."),
    ("How do I request a new laptop?", "Use the Hardware request form in the service portal. Choose the standard "
     "model unless your manager approved a developer machine; delivery takes about five working days."),
    ("My Outlook calendar does not sync on my phone", "Remove the account from the phone, restart it and add the "
     "account again with modern authentication. Shared calendars can take an hour to appear."),
    ("How many vacation days do I have left?", "Your balance is on the Time off page of the HR portal. It shows "
     "days taken, days planned and what carries over to next year."),
    ("Can I install Python on my work laptop?", "Yes: open Software Center and install Python 3.12. Admin rights "
     "are not needed for packages installed with pip --user."),
    ("The printer on floor 3 says offline", "Printer P3-East was restarted this morning. Remove it from your "
     "printers and add it again from \\\\print01; the driver installs itself."),
    ("How do I share a folder with an external partner?", "Create a shared link in the cloud drive with "
     "'Specific people', add their email and set an expiry date. Links to external users expire after 90 days."),
    ("What is the Wi-Fi password for guests?", "Guests connect to ACME-Guest and get a code by SMS on the portal "
     "page; there is no shared password."),
    ("How do I set up multi-factor authentication?", "Install the authenticator app, then open "
     "aka.acme/mfa-setup and scan the QR code. Keep the backup codes somewhere safe."),
    ("My account is locked", "Accounts unlock by themselves after 15 minutes. If you need access sooner, use "
     "Self-service unlock on the sign-in page or call the service desk at extension 4357."),
    ("How do I submit an expense report?", "In the finance app, choose New report, photograph each receipt and "
     "assign a cost centre. Reports above 500 EUR need your manager's approval."),
    ("Teams says my microphone is not found", "Check that the headset is selected under Settings > Devices and "
     "that Teams may use the microphone in the system privacy settings."),
    ("Where can I find the brand guidelines?", "The brand guidelines, logos and templates are on the Marketing "
     "hub under Brand assets."),
    ("How do I get access to the sales dashboard?", "Request the 'Sales analytics viewer' role in the access "
     "portal; your manager approves it and access follows within an hour."),
    ("The laptop battery drains very fast", "Open Power settings and choose Balanced. Run the battery report "
     "(powercfg /batteryreport); if capacity is below 60%, open a hardware ticket."),
    ("How do I change my bank details for payroll?", "Update them under My profile > Payment in the HR portal "
     "before the 15th to take effect in this month's payroll."),
    ("Can I use my own phone for work email?", "Yes, after enrolling it in the device management app. It "
     "separates work data from your personal apps."),
    ("How do I book a meeting room?", "Use the Rooms tab in the calendar, pick the floor and the number of "
     "people; rooms with video conferencing are marked with a camera."),
    ("Excel crashes when I open a large file", "Open it in safe mode (hold Ctrl while starting Excel) and "
     "disable add-ins. Files above 100 MB are better kept in the data warehouse."),
)
COMMENTS_UP = ("Exactly what I needed, thanks", "Worked first time", "Clear steps", "Saved me a ticket",
               "Quick and correct", "Helpful, though a link would be nice")
COMMENTS_DOWN = ("Step 3 is missing", "The link is broken", "That menu does not exist in my version",
                 "Too long, I just needed the number", "This is outdated since the migration",
                 "Wrong department", "It told me to call a number that is not in service",
                 "Answer & sources don't match <the policy page>")
UP_REASONS = ("HELPFUL", "COMPLETE", "FACTUALLY_CORRECT", "RELEVANT_SOURCES")
DOWN_REASONS = tuple(r for r in REASONS if r not in UP_REASONS)
FIRST = ("anna", "ben", "chloe", "david", "emma", "felix", "grace", "hugo", "ines", "jonas", "karin", "liam",
         "maria", "noah", "olga", "paul", "quinn", "rosa", "sam", "tara")
LAST = ("schmidt", "garcia", "smith", "rossi", "nowak", "dubois", "tanaka", "olsen", "silva", "meyer",
        "kowalski", "berg", "lopez", "walker", "novak")

_FAILURES = {
    "qbusiness": ("ValidationException: The conversation was deleted or has expired.",
                  {"status": 400, "code": "ValidationException", "message": "The conversation was deleted or "
                   "has expired."}),
    "qconnect": ("ResourceNotFoundException: Target not found.",
                 {"status": 404, "code": "ResourceNotFoundException", "message": "Target not found."}),
    "moveworks": ("PermanentDeliveryError: Moveworks answered HTTP 404: message not found",
                  {"status": 404, "body": {"error": {"code": "NOT_FOUND", "message": "message not found"}}}),
    "nebuly": ("Gave up after 10 attempts. RetryableDeliveryError: Nebuly answered HTTP 503",
               {"status": 503, "body_text": "upstream connect error"}),
}
_THROTTLED = ("RetryableDeliveryError: ThrottlingException: Rate exceeded", {"status": 429, "retry_after": "30"})


@dataclass
class _Counters:
    message: int
    event: int
    outbox: int


def seed_store(engine: Engine, n: int, *, now: datetime | None = None, seed: int = 0,
               providers: Sequence[str] = DEFAULT_PROVIDERS, make_refs: MakeRefs | None = None) -> int:
    """Add ``n`` events (with their messages, states and outbox rows) spread over the past twelve weeks.

    ``make_refs(user_id, input, output, created_at)`` gives each message its provider ids instead of made-up ones,
    e.g. ids that emulators know, so the deliveries left pending can still be delivered. Deterministic for a
    given ``seed``, ``now`` and store contents (and ``make_refs``). Returns the number of events added.
    """
    if n <= 0:
        return 0
    now = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    unknown = set(providers) - set(DEFAULT_PROVIDERS)
    if unknown:
        raise ValueError(f"seed_store knows only {', '.join(DEFAULT_PROVIDERS)}, not {', '.join(sorted(unknown))}")
    db.create_all(engine)
    # Two passes over the same random stream: the first counts messages, so their times can be spread evenly.
    n_messages = sum(1 for _ in _plans(random.Random(seed), n))
    rng = random.Random(seed + 1)
    users = _users(rng, min(300, max(1, n_messages)))
    n_conversations = max(min(n_messages, 200), n_messages // 8)
    conversations = [(str(uuid.UUID(int=rng.getrandbits(128), version=4)), users[i % len(users)])
                     for i in range(n_conversations)]
    times = sorted(_message_time(rng, now) for _ in range(n_messages))
    with db.read(engine) as conn:
        ids = _Counters(*(conn.execute(select(func.coalesce(func.max(t.c.id), 0))).scalar_one()
                          for t in (messages, events, outbox)))
    written = 0
    plans = _plans(random.Random(seed), n)
    for start in range(0, n_messages, CHUNK):
        rows: dict[str, list[dict[str, Any]]] = {"messages": [], "events": [], "states": [], "outbox": []}
        for created in times[start:start + CHUNK]:
            plan = next(plans)
            conversation_id, user_id = conversations[rng.randrange(n_conversations)]
            written += _message_rows(rng, rows, ids, plan, conversation_id, user_id, created, now, times[-1],
                                     providers, make_refs)
        with db.write(engine) as conn:
            for table in (messages, events, states, outbox):
                _bulk_insert(conn, table, rows[table.name.removeprefix("feedback_")])
    with db.write(engine) as conn:
        advance_sequences(conn)
        daily.forget(conn)  # the past changed
    logger.info("Seeded %d events on %d messages", written, n_messages)
    return written


def _users(rng: random.Random, count: int) -> list[str]:
    names = [f"{first}.{last}@example.com" for first in FIRST for last in LAST]
    rng.shuffle(names)
    return names[:count]


def _message_time(rng: random.Random, now: datetime) -> datetime:
    """A time in the past twelve weeks: busier lately, quieter at weekends and at night."""
    while True:
        age = SPAN_DAYS * (1 - rng.random() ** 0.8)
        moment = now - timedelta(days=age)
        weekend = moment.weekday() >= 5
        night = moment.hour < 7 or moment.hour > 19
        if rng.random() < (0.3 if weekend else 1.0) * (0.25 if night else 1.0):
            return moment.replace(microsecond=0)


def _plans(rng: random.Random, n: int) -> Iterator[list[dict[str, Any]]]:
    """For each message, the events its user sends (type, value, reason, comment, amends?), ``n`` in all."""
    left = n
    while left > 0:
        plan = _plan(rng)[:left]
        left -= len(plan)
        yield plan


def _plan(rng: random.Random) -> list[dict[str, Any]]:
    plan: list[dict[str, Any]] = []
    roll = rng.random()
    if roll < 0.45:
        plan.append(_vote(rng, "thumbs_up"))
    elif roll < 0.68:
        plan.append(_vote(rng, "thumbs_down"))
    elif roll < 0.83:
        value = rng.choices((1, 2, 3, 4, 5), weights=(8, 10, 14, 30, 38))[0]
        plan.append(_vote(rng, "rating", value))
    if plan and rng.random() < 0.12:  # a reason or comment added afterwards
        vote = plan[0]
        good = vote["type"] == "thumbs_up" or (vote.get("value") or 0) >= 4
        plan.append({**vote, "amends": True, "reason": rng.choice(UP_REASONS if good else DOWN_REASONS),
                     "comment": rng.choice(COMMENTS_UP if good else COMMENTS_DOWN)})
    if plan and plan[0]["type"] != "rating" and rng.random() < 0.03:  # changed their mind
        plan.append({"type": "thumbs_down" if plan[0]["type"] == "thumbs_up" else "thumbs_up"})
    if rng.random() < 0.3 or not plan:
        plan.append({"type": "copy_output"})
    if rng.random() < 0.05:
        plan.append({"type": rng.choice(("copy_input", "paste"))})
    if plan[0]["type"] in ("thumbs_up", "thumbs_down") and rng.random() < 0.01:
        plan.append({"type": "retract"})
    return plan


def _vote(rng: random.Random, kind: str, value: int | None = None) -> dict[str, Any]:
    good = kind == "thumbs_up" or (value or 0) >= 4
    vote: dict[str, Any] = {"type": kind, "value": value}
    if rng.random() < (0.25 if good else 0.6):
        vote["reason"] = rng.choice(UP_REASONS if good else DOWN_REASONS)
    if rng.random() < (0.08 if good else 0.3):
        vote["comment"] = rng.choice(COMMENTS_UP if good else COMMENTS_DOWN)
    return vote


def _new_uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def _base62(rng: random.Random, size: int = 22) -> str:
    number, digits = rng.getrandbits(131), []
    for _ in range(size):
        number, digit = divmod(number, 62)
        digits.append(_BASE62[digit])
    return "".join(digits)


def _refs(rng: random.Random, conversation_id: str, message_id: str) -> dict[str, Any]:
    return {
        "qbusiness": {"conversation_id": conversation_id, "message_id": message_id},
        "qconnect": {"target_id": _new_uuid(rng), "target_type": "MESSAGE"},
        "moveworks": {"conversation_id": "conv_" + _base62(rng), "response_id": "resp_" + _base62(rng),
                      "message_id": "msg_" + _base62(rng), "helpful_callback_id": _new_uuid(rng),
                      "unhelpful_callback_id": _new_uuid(rng)},
    }


def _message_rows(rng: random.Random, rows: dict[str, list[dict[str, Any]]], ids: _Counters,
                  plan: list[dict[str, Any]], conversation_id: str, user_id: str, created: datetime,
                  now: datetime, last_activity: datetime, providers: Sequence[str],
                  make_refs: MakeRefs | None) -> int:
    question, answer = QA[rng.randrange(len(QA))]
    ids.message += 1
    message_id = _new_uuid(rng)
    refs = _refs(rng, conversation_id, message_id)  # drawn either way: the rest of the stream stays the same
    if make_refs is not None:
        refs = make_refs(user_id, question, answer, created)
    rows["messages"].append({"id": ids.message, "conversation_id": conversation_id, "message_id": message_id,
                             "user_id": user_id, "input": question, "output": answer, "refs": refs,
                             "created_at": created})
    state = FeedbackState()
    at = created
    vote_ids: dict[str, str] = {}
    for spec in plan:
        at = min(now, at + timedelta(seconds=rng.randint(4, 600)))
        kind = EventType(spec["type"])
        ids.event += 1
        amends = vote_ids.get(spec["type"]) if spec.get("amends") else None
        text_ = {EventType.COPY_OUTPUT: answer, EventType.COPY_INPUT: question,
                 EventType.PASTE: question}.get(kind)
        event = Event(event_id=_new_uuid(rng), type=kind, occurred_at=at, value=spec.get("value"),
                      reason=spec.get("reason"), comment=spec.get("comment"), text=text_, amends=amends,
                      pk=ids.event)
        if kind in (EventType.THUMBS_UP, EventType.THUMBS_DOWN, EventType.RATING) and amends is None:
            vote_ids[spec["type"]] = event.event_id
        received = at + timedelta(milliseconds=rng.randint(20, 900))
        rows["events"].append({"id": ids.event, "event_id": event.event_id, "message_pk": ids.message,
                               "user_id": user_id, "type": str(kind), "value": event.value,
                               "reason": event.reason, "comment": event.comment, "text": event.text,
                               "amends": amends, "occurred_at": at, "received_at": received})
        state = apply_event(state, event)
        for provider in providers:
            rows["outbox"].append(_outbox_row(rng, ids, provider, event, state, rows["messages"][-1], received,
                                              now, last_activity))
    rows["states"].append({"message_pk": ids.message, "user_id": user_id,
                           **state._asdict()})
    return len(plan)


def _outbox_row(rng: random.Random, ids: _Counters, provider: str, event: Event, state: FeedbackState,
                message: dict[str, Any], received: datetime, now: datetime,
                last_activity: datetime) -> dict[str, Any]:
    ids.outbox += 1
    row: dict[str, Any] = {
        "id": ids.outbox, "provider": provider, "kind": "event" if provider == "nebuly" else "state",
        "message_pk": message["id"], "user_id": message["user_id"], "event_pk": event.pk, "coalesce_key": None,
        "attempts": 0, "next_attempt_at": received, "lease_until": None, "lease_owner": None, "last_error": None,
        "request": None, "response": None, "created_at": received, "updated_at": received, "delivered_at": None,
    }
    try:
        request = _request(provider, event, state, message, received)
    except _Skipped as skip:
        return {**row, "status": "skipped", "last_error": skip.reason}
    row["request"] = request
    age = last_activity - received  # negative for the newest message's later events
    roll = rng.random()
    if age < BACKLOG or (age < THROTTLED_WINDOW and roll < 0.05):
        error, response = (None, None) if age < BACKLOG else _THROTTLED
        attempts = 0 if error is None else rng.randint(2, 6)
        return {**row, "status": "pending", "attempts": attempts, "last_error": error, "response": response,
                "next_attempt_at": now + timedelta(seconds=rng.randint(5, 300))}
    done = received + timedelta(milliseconds=rng.randint(150, 2500))
    if roll < 0.012:
        error, response = _FAILURES[provider]
        return {**row, "status": "failed", "attempts": 10 if provider == "nebuly" else 1, "last_error": error,
                "response": response, "updated_at": done}
    return {**row, "status": "delivered", "attempts": 1, "updated_at": done, "delivered_at": done,
            "response": _response(rng, provider)}


class _Skipped(Exception):
    def __init__(self, reason: str) -> None:
        self.reason = reason


def _request(provider: str, event: Event, state: FeedbackState, message: dict[str, Any],
             received: datetime) -> dict[str, Any]:
    """The request the adapter builds for this event, or _Skipped with the adapter's reason."""
    kind, refs = event.type, message["refs"]
    copies = {EventType.COPY_OUTPUT: "a copy of the answer", EventType.COPY_INPUT: "a copy of the prompt",
              EventType.PASTE: "a paste"}
    try:
        if provider == "qbusiness":
            if kind is EventType.RETRACT:
                raise _Skipped(qbusiness.NO_DELETE)
            if kind in (EventType.COPY_INPUT, EventType.PASTE):
                raise _Skipped(qbusiness.NOT_EXPRESSIBLE.format(what=copies[kind]))
            ref = refs["qbusiness"]
            params = qbusiness.put_feedback_params(
                state, application_id=APPLICATION_ID, conversation_id=ref["conversation_id"],
                message_id=ref["message_id"], user_id=message["user_id"], thresholds=THRESHOLDS, now=received)
            return {"operation": "PutFeedback", "params": params}
        if provider == "qconnect":
            if kind is EventType.RETRACT:
                raise _Skipped(qconnect.NO_DELETE)
            if kind in copies:
                raise _Skipped(qconnect.NOT_EXPRESSIBLE.format(what=copies[kind]))
            if event.amends is not None:
                raise _Skipped(qconnect.NOTHING_NEW)
            params = qconnect.put_feedback_params(state, assistant_id=ASSISTANT_ID,
                                                  target_id=refs["qconnect"]["target_id"], target_type="MESSAGE",
                                                  thresholds=THRESHOLDS)
            return {"operation": "PutFeedback", "params": params}
        if provider == "moveworks":
            return _moveworks_request(event, state, refs["moveworks"])
        return _nebuly_request(event, message)
    except qbusiness.Skip as skip:  # the mapping functions' own "nothing to send"
        raise _Skipped(str(skip)) from None


def _moveworks_request(event: Event, state: FeedbackState, ref: dict[str, str]) -> dict[str, Any]:
    not_expressible = moveworks.NOT_EXPRESSIBLE.get(event.type)
    if not_expressible:
        raise _Skipped(not_expressible)
    vote = mapping.sentiment(state, THRESHOLDS)
    if vote is None:
        raise _Skipped(f"Rating {state.rating} is neither helpful (>= {THRESHOLDS.positive}) nor unhelpful "
                       f"(<= {THRESHOLDS.negative}): nothing to submit." if state.rating is not None and
                       state.vote is None else "No vote or rating: nothing to submit (Moveworks cannot withdraw "
                       "feedback).")
    body: dict[str, Any] = {"callback_id": ref["helpful_callback_id" if vote == "positive" else
                                               "unhelpful_callback_id"]}
    additional = mapping.feedback_text(state.reason, state.comment)
    if additional:
        body["additional_feedback"] = additional
    url = (f"{MOVEWORKS_URL}/conversations/{ref['conversation_id']}/responses/{ref['response_id']}/messages/"
           f"{ref['message_id']}/feedback")
    return {"method": "POST", "url": url,
            "headers": {"Assistant-Name": ASSISTANT_NAME, "Content-Type": "application/json"}, "json": body}


def _nebuly_request(event: Event, message: dict[str, Any]) -> dict[str, Any]:
    if event.type is EventType.RETRACT:
        raise _Skipped(nebuly.RETRACT_SKIP)
    if event.amends is not None:
        raise _Skipped(nebuly.AMENDMENT_SKIP)
    feedback: dict[str, Any] = {"slug": nebuly.SLUG_OF[event.type]}
    if event.type is EventType.RATING:
        feedback["value"] = event.value
    elif event.type in (EventType.THUMBS_UP, EventType.THUMBS_DOWN):
        text_ = mapping.feedback_text(event.reason, event.comment)
        if text_:
            feedback["text"] = text_
    else:
        feedback["text"] = event.text
    metadata = {"input": message["input"], "output": message["output"], "end_user": message["user_id"],
                "timestamp": nebuly.nebuly_timestamp(event.occurred_at), "anonymize": False}
    return {"method": "POST", "url": nebuly.DEFAULT_BASE_URL + nebuly.PATH,
            "json": {"feedback": feedback, "metadata": metadata}}


def _response(rng: random.Random, provider: str) -> dict[str, Any]:
    if provider in ("qbusiness", "qconnect"):
        return {"status": 200, "request_id": _new_uuid(rng), "retries": 0}
    return {"status": 200, "body": {}} if provider == "moveworks" else {"status": 202}


def _bulk_insert(conn: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    """``COPY`` on PostgreSQL through psycopg, where row-by-row inserts take ten times longer; ``executemany``
    elsewhere (SQLite, and PostgreSQL through another driver, whose COPY has another interface)."""
    if not rows:
        return
    if conn.dialect.name != "postgresql" or conn.dialect.driver != "psycopg":
        conn.execute(insert(table), rows)
        return
    names = [column.name for column in table.columns]
    as_json = {column.name for column in table.columns if column.type._type_affinity is JSON}
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    with cursor.copy(f"COPY {table.name} ({', '.join(names)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row([json.dumps(row.get(name)) if name in as_json and row.get(name) is not None
                            else row.get(name) for name in names])


def advance_sequences(conn: Connection) -> None:
    """Ids were given explicitly: move PostgreSQL's sequences past them (SQLite needs nothing)."""
    if conn.dialect.name != "postgresql":
        return
    for table in (messages, events, outbox):
        conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "
                          f"(SELECT COALESCE(MAX(id), 1) FROM {table.name}))"))

