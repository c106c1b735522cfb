"""The dashboard over a seeded store, on SQLite and PostgreSQL: numbers, filters, pagination, retry, export."""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import re
from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from markupsafe import escape
from sqlalchemy import select, update

from conftest import register, runtime
from feedback_bridge import PermanentDeliveryError, db
from feedback_bridge.dashboard import queries
from feedback_bridge.schema import events, messages, outbox, states
from feedback_bridge.seed import seed_store
from support import RecordingAdapter, event, outbox_rows, post_events

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)
BASE = "/feedback/dashboard"
AUTH = {"Authorization": "Basic " + base64.b64encode(b"admin:s3cret pass").decode()}
N_EVENTS = 400


@pytest.fixture
def seeded(make_app, database_url) -> Flask:
    app = make_app(FEEDBACK_DATABASE_URL=database_url, FEEDBACK_DASHBOARD_USERS={"admin": "s3cret pass"})
    runtime(app).now = lambda: NOW  # the windows are cut at a known instant
    assert seed_store(runtime(app).engine, N_EVENTS, now=NOW, seed=7) == N_EVENTS
    return app


def client(app: Flask) -> FlaskClient:
    c = app.test_client()
    c.environ_base.update({"HTTP_AUTHORIZATION": AUTH["Authorization"]})
    return c


def store(app: Flask) -> dict[str, list[dict[str, Any]]]:
    """Every row, read straight from the tables, for computing the expected numbers independently."""
    with db.read(runtime(app).engine) as conn:
        return {name: [dict(r) for r in conn.execute(select(table)).mappings()]
                for name, table in (("events", events), ("messages", messages), ("outbox", outbox),
                                    ("states", states))}


def listed(c: FlaskClient, query: str) -> list[str]:
    """Event ids of every page of the list under ``query``, following the "Older" links."""
    ids: list[str] = []
    url: str | None = f"{BASE}/feedback?{query}"
    while url:
        response = c.get(url)
        assert response.status_code == 200, response.data[:300]
        page = response.get_data(as_text=True)
        ids += re.findall(r'data-event-id="([^"]+)"', page)
        found = re.search(r'rel="next" href="([^"]+)"', page)
        url = html.unescape(found[1]) if found else None
    return ids


def figure(page: str, ident: str) -> str:
    return re.search(rf'id="{ident}">([^<]*)<', page)[1]


# -- overview --------------------------------------------------------------------------------------


def test_overview_shows_the_numbers_of_the_window(seeded):
    rows = store(seeded)
    since = NOW - timedelta(days=30)
    window = [e for e in rows["events"] if since <= e["received_at"] < NOW]
    originals = [e for e in window if e["amends"] is None]
    up = sum(e["type"] == "thumbs_up" for e in originals)
    down = sum(e["type"] == "thumbs_down" for e in originals)
    ratings = Counter(e["value"] for e in originals if e["type"] == "rating")
    answers = sum(since <= m["created_at"] < NOW for m in rows["messages"])
    copied = sum(s["copied_at"] is not None and since <= s["copied_at"] < NOW for s in rows["states"])
    assert 0 < len(window) < N_EVENTS and up and down and answers and copied  # the seed spreads over 12 weeks

    page = client(seeded).get(f"{BASE}/").get_data(as_text=True)

    assert figure(page, "stat-total") == f"{len(window):,}"
    assert figure(page, "stat-up-share") == f"{100 * up / (up + down):.1f}%"
    assert figure(page, "stat-ratings") == f"{sum(ratings.values()):,}"
    assert figure(page, "stat-copy-rate") == f"{100 * copied / answers:.1f}%"
    table = re.search(r'<table class="compact" id="ratings">(.*?)</table>', page, re.S)[1]
    assert re.findall(r"<td>([\d,]+)</td>", table) == [f"{ratings[n]:,}" for n in range(1, 6)]
    for provider in ("qbusiness", "qconnect", "moveworks", "nebuly"):
        # Delivered and skipped: the last 24 hours; pending, in flight, failed: all there are.
        expected = Counter(o["status"] for o in rows["outbox"] if o["provider"] == provider and (
            o["status"] not in ("delivered", "skipped") or NOW - timedelta(days=1) <= o["created_at"] < NOW))
        row = re.search(rf'<th scope="row">{provider}</th>(.*?)</tr>', page, re.S)[1]
        shown = dict(re.findall(r'data-status="(\w+)"><a [^>]*>([\d,]+)</a>', row))
        assert shown == {s: f"{expected[s]:,}" for s in ("pending", "in_flight", "delivered", "skipped", "failed")}
    # Charts: one bar per day of the window, with that day's count in its title.
    assert page.count('<rect class="bar"') >= 30 + 5
    last_day = Counter(e["received_at"].date() for e in window)[NOW.date()]
    assert f"{NOW.strftime('%b %d')}: {last_day:,}</title>" in page


def test_overview_window_selector(seeded):
    c = client(seeded)
    week = c.get(f"{BASE}/?days=7").get_data(as_text=True)
    quarter = c.get(f"{BASE}/?days=90").get_data(as_text=True)

    rows = store(seeded)["events"]
    assert figure(week, "stat-total") == f"{sum(e['received_at'] >= NOW - timedelta(days=7) for e in rows):,}"
    assert figure(quarter, "stat-total") == f"{len(rows):,}"  # everything is younger than 12 weeks
    assert 'aria-current="true">7 days' in week
    assert c.get(f"{BASE}/?days=soon").status_code == 400
    assert c.get(f"{BASE}/?days=3000").json == {"errors": {"days": ["One of 7, 30, 90."]}}


# -- list, filters, pagination ---------------------------------------------------------------------


def test_pagination_lists_every_event_exactly_once_newest_first(seeded):
    rows = store(seeded)["events"]

    ids = listed(client(seeded), "")

    assert len(ids) == len(set(ids)) == N_EVENTS > 50
    newest_first = sorted(rows, key=lambda e: (e["received_at"], e["id"]), reverse=True)
    assert ids == [e["event_id"] for e in newest_first]


def expected_ids(app: Flask, keep) -> set[str]:
    rows = store(app)
    by_message = {m["id"]: m for m in rows["messages"]}
    deliveries: dict[int, list[dict[str, Any]]] = {}
    for o in rows["outbox"]:
        deliveries.setdefault(o["event_pk"], []).append(o)
    return {e["event_id"] for e in rows["events"] if keep(e, by_message[e["message_pk"]], deliveries.get(e["id"], []))}


def some(app: Flask, column: str) -> str:
    return store(app)["messages"][5][column]


FILTERS = [
    ("vote=down", lambda e, m, d: e["type"] == "thumbs_down"),
    ("vote=up&reason=HELPFUL", lambda e, m, d: e["type"] == "thumbs_up" and e["reason"] == "HELPFUL"),
    ("rating=4", lambda e, m, d: e["type"] == "rating" and e["value"] == 4),
    ("reason=NOT_COMPLETE", lambda e, m, d: e["reason"] == "NOT_COMPLETE"),
    ("provider=moveworks&status=skipped",
     lambda e, m, d: any(o["provider"] == "moveworks" and o["status"] == "skipped" for o in d)),
    ("status=failed", lambda e, m, d: any(o["status"] == "failed" for o in d)),
    ("days=7", lambda e, m, d: e["received_at"] >= NOW - timedelta(days=7)),
    ("since=2026-11-01&until=2026-11-10",
     lambda e, m, d: datetime(2026, 11, 1, tzinfo=timezone.utc) <= e["received_at"]
     < datetime(2026, 11, 11, tzinfo=timezone.utc)),
]


@pytest.mark.parametrize(("query", "keep"), FILTERS, ids=[q for q, _ in FILTERS])
def test_each_filter_narrows_the_list_to_exactly_its_events(seeded, query, keep):
    expected = expected_ids(seeded, keep)
    assert 0 < len(expected) < N_EVENTS

    assert sorted(listed(client(seeded), query)) == sorted(expected)


DELIVERY_FILTERS = [(q, keep) for q, keep in FILTERS if "status=" in q] + [
    ("provider=qbusiness&status=failed", lambda e, m, d: any(o["provider"] == "qbusiness" and o["status"] == "failed"
                                                             for o in d)),
]


@pytest.mark.parametrize("dense", [0, 10**9], ids=["tested-per-event", "from-the-deliveries"])
@pytest.mark.parametrize(("query", "keep"), DELIVERY_FILTERS, ids=[q for q, _ in DELIVERY_FILTERS])
def test_delivery_filters_list_the_same_pages_whichever_way_they_run(seeded, monkeypatch, query, keep, dense):
    """Many matching deliveries: test each event, newest first; few: start from them. Same pages either way."""
    monkeypatch.setattr(queries, "DENSE_DELIVERIES", dense)
    rows = {e["event_id"]: e for e in store(seeded)["events"]}
    expected = sorted(expected_ids(seeded, keep), key=lambda i: (rows[i]["received_at"], rows[i]["id"]), reverse=True)
    assert len(expected) > 0

    assert listed(client(seeded), query) == expected


def test_user_and_conversation_filters(seeded):
    user, conversation = some(seeded, "user_id"), some(seeded, "conversation_id")
    c = client(seeded)

    by_user = listed(c, f"user={user}")
    by_conversation = listed(c, f"conversation={conversation}")

    assert sorted(by_user) == sorted(expected_ids(seeded, lambda e, m, d: e["user_id"] == user))
    assert sorted(by_conversation) == sorted(
        expected_ids(seeded, lambda e, m, d: m["conversation_id"] == conversation))
    assert by_user and by_conversation


def test_bad_filters_answer_400_with_field_errors(seeded):
    response = client(seeded).get(f"{BASE}/feedback?vote=sideways&rating=6&before=nonsense")

    assert response.status_code == 400
    assert set(response.json["errors"]) == {"vote", "rating", "before"}


def test_rows_show_the_texts_and_each_providers_exact_request(seeded):
    page = client(seeded).get(f"{BASE}/feedback?provider=nebuly&status=delivered").get_data(as_text=True)
    first = store(seeded)
    newest = max((e for e in first["events"] if any(o["event_pk"] == e["id"] and o["provider"] == "nebuly"
                                                    and o["status"] == "delivered" for o in first["outbox"])),
                 key=lambda e: (e["received_at"], e["id"]))
    message = next(m for m in first["messages"] if m["id"] == newest["message_pk"])
    request = next(o["request"] for o in first["outbox"] if o["event_pk"] == newest["id"] and o["provider"] == "nebuly")

    item = page[page.index(f'data-event-id="{newest["event_id"]}"'):]
    item = item[:item.index("</li>")]
    assert escape(message["input"]) in item and escape(message["output"]) in item
    assert escape(json.dumps(request, indent=2, ensure_ascii=False, sort_keys=True)) in item


# -- retry -----------------------------------------------------------------------------------------


def failed_delivery(app: Flask) -> int:
    with db.write(runtime(app).engine) as conn:
        pk = conn.execute(select(outbox.c.id).where(outbox.c.status == "delivered").limit(1)).scalar_one()
        conn.execute(update(outbox).where(outbox.c.id == pk).values(status="failed", attempts=10,
                                                                    last_error="Gave up after 10 attempts."))
    return pk


def status_of(app: Flask, pk: int) -> tuple[str, int]:
    with db.read(runtime(app).engine) as conn:
        return tuple(conn.execute(select(outbox.c.status, outbox.c.attempts).where(outbox.c.id == pk)).one())


def form_token(c: FlaskClient, path: str) -> str:
    page = c.get(path).get_data(as_text=True)
    return html.unescape(re.search(r'name="csrf_token" value="([^"]+)"', page)[1])


def test_retry_a_dead_letter_with_a_valid_csrf_token(seeded):
    pk = failed_delivery(seeded)
    c = client(seeded)
    token = form_token(c, f"{BASE}/feedback?status=failed")

    response = c.post(f"{BASE}/deliveries/retry", data={"csrf_token": token, "id": pk,
                                                        "next": f"{BASE}/feedback?status=failed"},
                      headers={"Origin": "http://localhost", "Sec-Fetch-Site": "same-origin"})

    assert response.status_code == 303
    assert response.headers["Location"] == f"{BASE}/feedback?status=failed&retried=1"
    assert status_of(seeded, pk) == ("pending", 0)
    assert "Moved 1 dead letter back to pending." in c.get(response.headers["Location"]).get_data(as_text=True)


def test_retry_says_which_dead_letters_it_skipped_as_stale(make_app, database_url):
    rec = RecordingAdapter("rec", mode="event")
    app = make_app(FEEDBACK_DATABASE_URL=database_url, FEEDBACK_DASHBOARD_USERS={"admin": "s3cret pass"},
                   FEEDBACK_PROVIDERS={"rec": rec})
    token = register(app)
    rec.fail_next(PermanentDeliveryError("400 bad request"))
    post_events(app, event("thumbs_up", token))
    runtime(app).worker.drain()
    post_events(app, event("thumbs_down", token))  # delivered: the old thumb, sent now, would replace it
    runtime(app).worker.drain()
    c = client(app)

    response = c.post(f"{BASE}/deliveries/retry", data={"csrf_token": form_token(c, f"{BASE}/"), "provider": "rec"})

    assert response.status_code == 303
    assert response.headers["Location"] == f"{BASE}/feedback?retried=0&stale=1"
    page = c.get(response.headers["Location"]).get_data(as_text=True)
    assert "Moved 0 dead letters back to pending. Skipped 1 stale vote: a later vote was delivered since" in page
    assert [r["status"] for r in outbox_rows(app)] == ["skipped", "delivered"]


@pytest.mark.parametrize("attack", ["no token", "forged token", "other browser", "cross-site", "other origin"])
def test_retry_without_a_valid_csrf_token_changes_nothing(seeded, attack):
    pk = failed_delivery(seeded)
    c = client(seeded)
    token = form_token(c, f"{BASE}/feedback")
    data = {"csrf_token": token, "id": pk}
    headers: dict[str, str] = {}
    if attack == "no token":
        del data["csrf_token"]
    elif attack == "forged token":
        data["csrf_token"] = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")
    elif attack == "other browser":  # a token lifted from another session: its cookie nonce does not match
        c = client(seeded)
        c.get(f"{BASE}/")
    elif attack == "cross-site":
        headers["Sec-Fetch-Site"] = "cross-site"
    else:
        headers["Origin"] = "https://evil.example"

    response = c.post(f"{BASE}/deliveries/retry", data=data, headers=headers)

    assert response.status_code == 403
    assert status_of(seeded, pk) == ("failed", 10)


def test_retry_is_post_only_and_redirects_only_inside_the_dashboard(seeded):
    pk = failed_delivery(seeded)
    c = client(seeded)
    assert c.get(f"{BASE}/deliveries/retry?id={pk}").status_code == 405
    assert status_of(seeded, pk) == ("failed", 10)
    token = form_token(c, f"{BASE}/")

    response = c.post(f"{BASE}/deliveries/retry", data={"csrf_token": token, "provider": "qbusiness",
                                                        "next": "https://evil.example/feedback/dashboard/"})

    assert response.status_code == 303 and response.headers["Location"].startswith(f"{BASE}/feedback?retried=")


# -- export ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_export_of_the_current_filter(seeded, fmt):
    expected = expected_ids(seeded, lambda e, m, d: e["type"] == "thumbs_down" and e["received_at"]
                            >= NOW - timedelta(days=30))

    response = client(seeded).get(f"{BASE}/export?vote=down&days=30&format={fmt}")

    assert response.status_code == 200
    assert response.headers["Content-Disposition"].startswith("attachment; filename=")
    assert response.headers["Content-Security-Policy"].startswith("default-src 'none'")
    body = response.get_data(as_text=True)
    if fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(body)))
        assert response.mimetype == "text/csv"
    else:
        rows = [json.loads(line) for line in body.splitlines()]
        assert all(set(r["deliveries"]) == {"qbusiness", "qconnect", "moveworks", "nebuly"} for r in rows)
    assert sorted(r["event_id"] for r in rows) == sorted(expected) and expected
    assert {r["type"] for r in rows} == {"thumbs_down"}
