"""Per-IP and per-token rate limits: 429 with Retry-After for the whole request, before anything is stored."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import limits.storage.memory
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

import feedback_bridge.ratelimit
from conftest import register, runtime
from feedback_bridge.exceptions import ConfigurationError
from feedback_bridge.schema import events
from support import event

EVENTS = "/feedback/events"
REDIS_ENV = "FEEDBACK_TEST_REDIS_URL"
NO_LIMITS = {"FEEDBACK_RATE_LIMIT_IP": "", "FEEDBACK_RATE_LIMIT_TOKEN": ""}


def client(app: Flask, ip: str = "127.0.0.1") -> FlaskClient:
    test_client = app.test_client()
    test_client.environ_base["REMOTE_ADDR"] = ip
    return test_client


def post(test_client: FlaskClient, *evs: dict[str, Any]):
    return test_client.post(EVENTS, json={"events": list(evs)})


def stored(app: Flask) -> set[str]:
    with runtime(app).engine.connect() as conn:
        return set(conn.execute(select(events.c.event_id)).scalars())


def count(app: Flask) -> int:
    with runtime(app).engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(events)).scalar_one()


def assert_rate_limited(response) -> int:
    assert response.status_code == 429, response.get_data(as_text=True)
    body = response.get_json()
    assert body["code"] == "rate_limited" and body["errors"]["_schema"]
    retry_after = int(response.headers["Retry-After"])
    assert 1 <= retry_after <= 60
    return retry_after


class FakeClock:
    """Stands in for the ``time`` module of the memory storage and of our Retry-After arithmetic."""

    def __init__(self) -> None:
        self.now = 1_900_000_000.0

    def time(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(limits.storage.memory, "time", fake)
    monkeypatch.setattr(feedback_bridge.ratelimit, "time", fake)
    return fake


def test_the_ip_limit_refuses_the_whole_request_and_spares_other_clients_and_the_host_app(make_app) -> None:
    app = make_app(FEEDBACK_RATE_LIMIT_IP="3/minute", FEEDBACK_RATE_LIMIT_TOKEN="")

    @app.get("/host-page")
    def host_page() -> str:
        return "host"

    token = register(app)
    mallory, alice = client(app, "10.0.0.66"), client(app, "10.0.0.1")
    for _ in range(3):
        assert post(mallory, event("thumbs_up", token)).status_code == 200
    before = count(app)
    refused = [event("thumbs_down", token), event("copy_output", token, text="x")]
    assert_rate_limited(post(mallory, *refused))
    assert_rate_limited(mallory.post(EVENTS, data=b"not even json", content_type="text/plain"))
    assert count(app) == before and not stored(app) & {e["id"] for e in refused}
    assert post(alice, event("thumbs_down", token)).status_code == 200, "another address is not limited"
    # GET /state has its own budget per address, and the host app's routes have none.
    assert mallory.get("/feedback/state", query_string={"token": token}).status_code == 200
    for _ in range(10):
        host = mallory.get("/host-page")
        assert host.status_code == 200 and "Retry-After" not in host.headers


def test_the_host_apps_flask_limiter_settings_never_make_this_limiter_count_its_routes(make_app) -> None:
    app = make_app(RATELIMIT_DEFAULT="1/minute", RATELIMIT_APPLICATION="1/minute",
                   FEEDBACK_RATE_LIMIT_IP="100/minute")

    @app.get("/host-page")
    def host_page() -> str:
        return "host"

    token = register(app)
    test_client = client(app)
    for _ in range(3):
        assert test_client.get("/host-page").status_code == 200
        assert post(test_client, event("thumbs_up", token)).status_code == 200


def test_ratelimit_enabled_false_turns_these_limits_off_too(make_app) -> None:
    app = make_app(RATELIMIT_ENABLED=False, FEEDBACK_RATE_LIMIT_IP="1/minute", FEEDBACK_RATE_LIMIT_TOKEN="1/minute")
    token = register(app)
    test_client = client(app)
    for _ in range(3):
        assert post(test_client, event("thumbs_up", token)).status_code == 200


def test_the_state_route_is_limited_per_address_and_per_token(make_app) -> None:
    app = make_app(FEEDBACK_RATE_LIMIT_IP="4/minute", FEEDBACK_RATE_LIMIT_TOKEN="2/minute")
    alice, bob = register(app, user_id="alice"), register(app, user_id="bob")
    test_client = client(app)
    for _ in range(2):
        assert test_client.get("/feedback/state", query_string={"token": alice}).status_code == 200
    assert_rate_limited(test_client.get("/feedback/state", query_string={"token": alice}))
    assert test_client.get("/feedback/state", query_string={"token": bob}).status_code == 200
    assert_rate_limited(test_client.get("/feedback/state", query_string={"token": bob}))  # the 5th from here


def test_the_token_limit_counts_each_user_of_a_batch_and_refuses_the_batch_whole(make_app) -> None:
    app = make_app(FEEDBACK_RATE_LIMIT_IP="", FEEDBACK_RATE_LIMIT_TOKEN="2/minute")
    alice, bob, carol = (register(app, user_id=u) for u in ("alice", "bob", "carol"))
    test_client = client(app)
    for _ in range(2):
        response = post(test_client, event("thumbs_up", alice), event("thumbs_up", bob))
        assert response.status_code == 200 and response.get_json()["accepted"] == 2
    before = stored(app)
    mixed = [event("thumbs_down", carol), event("thumbs_down", alice)]
    assert_rate_limited(post(test_client, *mixed))
    assert stored(app) == before, "nothing of a limited batch is stored, not even carol's event"
    # The refused request cost carol nothing: two requests of her own still pass, then hers is full too.
    assert post(test_client, event("thumbs_up", carol)).status_code == 200
    retried = post(test_client, mixed[0])
    assert retried.status_code == 200 and retried.get_json()["accepted"] == 1
    assert_rate_limited(post(test_client, event("rating", carol, value=4)))
    # A fresh page of the same message and user carries a new token string, but the same budget.
    assert_rate_limited(post(test_client, event("thumbs_up", register(app, user_id="alice"))))


def test_rejected_events_spend_no_token_budget(make_app) -> None:
    app = make_app(FEEDBACK_RATE_LIMIT_IP="", FEEDBACK_RATE_LIMIT_TOKEN="1/minute")
    token = register(app)
    test_client = client(app)
    for _ in range(3):
        assert post(test_client, event("rating", token)).status_code == 422  # no value: rejected, not stored
    assert post(test_client, event("thumbs_up", token)).status_code == 200


def test_retry_after_is_exact_and_the_retried_request_is_stored_once(make_app, clock: FakeClock) -> None:
    app = make_app(FEEDBACK_RATE_LIMIT_IP="2/minute", FEEDBACK_RATE_LIMIT_TOKEN="")
    token = register(app)
    test_client = client(app)
    assert post(test_client, event("thumbs_up", token)).status_code == 200
    clock.now += 20
    assert post(test_client, event("copy_output", token, text="a")).status_code == 200
    batch = [event("thumbs_down", token, reason="NOT_COMPLETE"), event("paste", token, text="b")]
    assert assert_rate_limited(post(test_client, *batch)) == 40  # the window opened 20 s ago
    clock.now += 39
    assert assert_rate_limited(post(test_client, *batch)) == 1
    clock.now += 1
    response = post(test_client, *batch)  # exactly Retry-After seconds after the first refusal
    assert response.status_code == 200 and response.get_json()["accepted"] == 2
    assert post(test_client, *batch).get_json()["duplicate"] == 2
    assert count(app) == 4


def test_limits_off(make_app) -> None:
    app = make_app(**NO_LIMITS)
    token = register(app)
    test_client = client(app)
    for _ in range(30):
        assert post(test_client, event("thumbs_up", token)).status_code == 200
    assert "limiter" not in app.extensions, "no limiter hooks on the host app when every limit is off"


def test_default_limits_apply_without_configuration(make_app) -> None:
    app = make_app()
    limits_ = runtime(app).rate_limits
    assert [str(item) for item in limits_.ip] == ["600 per 1 minute"]
    assert [str(item) for item in limits_.token] == ["120 per 1 minute"]
    assert limits_.limiter in app.extensions["limiter"]


@pytest.mark.parametrize("key", ["FEEDBACK_RATE_LIMIT_IP", "FEEDBACK_RATE_LIMIT_TOKEN"])
def test_a_malformed_limit_is_a_configuration_error(make_app, key: str) -> None:
    with pytest.raises(ConfigurationError, match=key):
        make_app(**{key: "many per fortnight"})


def test_an_unreachable_storage_lets_feedback_through(make_app, caplog) -> None:
    app = make_app(FEEDBACK_RATE_LIMIT_IP="1/minute", FEEDBACK_RATE_LIMIT_STORAGE_URI="redis://127.0.0.1:1/0")
    token = register(app)
    test_client = client(app)
    for _ in range(3):
        assert post(test_client, event("thumbs_up", token)).status_code == 200
    assert "Rate limit storage unavailable" in caplog.text


@pytest.fixture
def redis_url() -> Iterator[tuple[str, str]]:
    url = os.environ.get(REDIS_ENV)
    if not url:
        pytest.skip(f"{REDIS_ENV} is not set: the Redis storage test needs a server (CI sets it)")
    import redis

    connection, run = redis.Redis.from_url(url), uuid.uuid4().hex[:8]
    yield url, run  # run: in the keys of this test's clients (deleted after; per-token keys expire with the window)
    for key in connection.scan_iter(f"LIMITS:LIMITER/{feedback_bridge.ratelimit.KEY_PREFIX}/*{run}*"):
        connection.delete(key)
    connection.close()


def test_redis_storage_is_shared_by_two_app_instances(make_app, redis_url: tuple[str, str]) -> None:
    url, run = redis_url
    config = {"FEEDBACK_RATE_LIMIT_IP": "3/minute", "FEEDBACK_RATE_LIMIT_TOKEN": "4/minute",
              "FEEDBACK_RATE_LIMIT_STORAGE_URI": url}
    first, second = make_app(**config), make_app(**config)  # two processes' worth, one database
    ip = f"client-{run}"  # REMOTE_ADDR private to this run of the test (a key, never parsed)
    token = register(first, user_id=f"user-{run}")
    one, two = client(first, ip), client(second, ip)
    assert post(one, event("thumbs_up", token)).status_code == 200
    assert post(two, event("thumbs_down", token)).status_code == 200
    assert post(one, event("thumbs_up", token)).status_code == 200
    assert_rate_limited(post(two, event("thumbs_down", token)))
    assert_rate_limited(post(one, event("thumbs_down", token)))
    # The token's budget is shared too: 3 spent; one more from anywhere, then none.
    other = f"{ip}1"
    assert post(client(second, other), event("rating", token, value=2)).status_code == 200
    assert_rate_limited(post(client(first, f"{ip}2"), event("rating", token, value=3)))
    assert count(first) == 4
