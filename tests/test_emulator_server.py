"""The emulator base: a real server on 127.0.0.1, records what it received, injects the faults it is told to."""

from __future__ import annotations

import http.client
import json
import time

import pytest
import requests
from flask import Flask, Response, request

from feedback_bridge.testing.server import EmulatorServer, json_response


class EchoEmulator(EmulatorServer):
    name = "echo"
    hang_seconds = 5.0

    def create_app(self) -> Flask:
        app = Flask(__name__)

        @app.post("/echo")
        def echo() -> Response:
            return json_response({"got": request.get_json()})

        return app

    def throttle_response(self, retry_after: float | None) -> Response:
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
        return json_response({"error": "slow down"}, 429, headers)

    def error_response(self) -> Response:
        return json_response({"error": "boom"}, 500)


@pytest.fixture
def emulator():
    with EchoEmulator() as server:
        yield server


def test_serves_on_loopback_and_records_what_it_accepted(emulator: EchoEmulator):
    assert emulator.url.startswith("http://127.0.0.1:")
    response = requests.post(f"{emulator.url}/echo?x=1", json={"a": 1}, timeout=5)
    assert response.json() == {"got": {"a": 1}}
    [call] = emulator.received
    assert (call.method, call.path, call.query, call.status) == ("POST", "/echo", {"x": "1"}, 200)
    assert call.json() == {"a": 1}
    assert call.headers["content-type"] == "application/json"


def test_fail_next_throttles_then_errors_then_serves(emulator: EchoEmulator):
    emulator.fail_next(1, "throttle", retry_after=7)
    emulator.fail_next(1, "error", status=503)
    first = requests.post(f"{emulator.url}/echo", json={}, timeout=5)
    second = requests.post(f"{emulator.url}/echo", json={}, timeout=5)
    third = requests.post(f"{emulator.url}/echo", json={}, timeout=5)
    assert (first.status_code, first.headers["Retry-After"]) == (429, "7")
    assert second.status_code == 503
    assert third.status_code == 200
    assert [c.fault for c in emulator.calls] == ["throttle", "error", None]
    assert len(emulator.received) == 1


def test_hang_outlives_the_client_timeout(emulator: EchoEmulator):
    emulator.fail_next(1, "hang")
    with pytest.raises(requests.Timeout):
        requests.post(f"{emulator.url}/echo", json={}, timeout=0.3)
    assert requests.post(f"{emulator.url}/echo", json={}, timeout=5).ok


def test_drop_closes_the_connection_without_an_answer(emulator: EchoEmulator):
    emulator.fail_next(1, "drop")
    with pytest.raises(requests.ConnectionError):
        requests.post(f"{emulator.url}/echo", json={}, timeout=5)
    assert emulator.calls[0].fault == "drop"
    assert requests.post(f"{emulator.url}/echo", json={}, timeout=5).ok


def test_wait_for_returns_once_enough_arrived_and_times_out_otherwise(emulator: EchoEmulator):
    requests.post(f"{emulator.url}/echo", json={"n": 1}, timeout=5)
    assert [c.json() for c in emulator.wait_for(1)] == [{"n": 1}]
    with pytest.raises(TimeoutError):
        emulator.wait_for(2, timeout=0.05)


def test_latency_delays_each_answer(emulator: EchoEmulator):
    emulator.set_latency(0.2)
    started = time.monotonic()
    requests.post(f"{emulator.url}/echo", json={}, timeout=5)
    assert time.monotonic() - started >= 0.2
    emulator.reset()
    assert emulator.calls == []


def test_unknown_fault_kind_is_refused(emulator: EchoEmulator):
    with pytest.raises(ValueError, match="kind must be one of"):
        emulator.fail_next(1, "explode")  # type: ignore[arg-type]


def test_reset_releases_a_hung_request_and_never_records_it(emulator: EchoEmulator):
    emulator.fail_next(1, "hang")
    with pytest.raises(requests.Timeout):
        requests.post(f"{emulator.url}/echo", json={"n": "hung"}, timeout=0.2)
    emulator.reset()  # the hung request is answered now, after the reset: it must not show up
    requests.post(f"{emulator.url}/echo", json={"n": "next"}, timeout=5)
    assert [c.json() for c in emulator.wait_for(1, accepted=False)] == [{"n": "next"}]
    assert [c.json() for c in emulator.calls] == [{"n": "next"}]


def post_on(connection: http.client.HTTPConnection, body: dict, headers: dict | None = None
            ) -> http.client.HTTPResponse:
    connection.request("POST", "/echo", json.dumps(body), {"Content-Type": "application/json", **(headers or {})})
    response = connection.getresponse()
    response.read()
    return response


def test_a_client_keeps_its_connection_across_requests_as_with_the_real_apis(emulator: EchoEmulator):
    connection = http.client.HTTPConnection(emulator.host, emulator.port, timeout=5)
    first = post_on(connection, {"n": 1})
    sock = connection.sock
    responses = [first] + [post_on(connection, {"n": n}) for n in (2, 3)]
    assert [r.status for r in responses] == [200, 200, 200]
    assert not any(r.will_close for r in responses) and connection.sock is sock, "one connection for all three"
    assert [c.json() for c in emulator.received] == [{"n": 1}, {"n": 2}, {"n": 3}]

    closing = post_on(connection, {"n": 4}, {"Connection": "close"})
    assert closing.status == 200 and closing.getheader("Connection") == "close" and closing.will_close
    connection.close()


def test_stopping_ends_the_connections_clients_kept(emulator: EchoEmulator):
    connection = http.client.HTTPConnection(emulator.host, emulator.port, timeout=5)
    assert post_on(connection, {"n": 1}).status == 200
    emulator.stop()
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        post_on(connection, {"n": 2})  # not answered by a server that is gone
    assert len(emulator.received) == 1
