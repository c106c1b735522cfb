"""Test helpers shared by the suites: a scriptable recording provider, event builders, posting events,
reading the outbox and waiting for a condition."""

from __future__ import annotations

import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

import itsdangerous.timed
import pytest
from flask import Flask
from sqlalchemy import Engine, select
from sqlalchemy import event as sa_event

from feedback_bridge import ProviderAdapter, RetryableDeliveryError
from feedback_bridge import db as fdb
from feedback_bridge.providers import DeliveryContext
from feedback_bridge.providers.log import LogAdapter
from feedback_bridge.schema import outbox


class RecordingAdapter(LogAdapter):
    """Records every request it is sent. ``fail_next(exc, n)`` makes the next n sends raise ``exc``.

    ``gate`` (a threading.Event), when set on the adapter, makes ``send`` wait on it, so a test can hold
    a delivery in flight deterministically.
    """

    def __init__(self, name: str | None = None, *, mode: str = "state", latency: float = 0.0) -> None:
        super().__init__(name, mode=mode)
        self.latency = latency  # simulated network time per send
        self.sent: list[dict[str, Any]] = []
        self.failures: deque[Exception] = deque()
        self.entered = threading.Event()
        self.gate: threading.Event | None = None
        self._lock = threading.Lock()

    def fail_next(self, exc: Exception, times: int = 1) -> None:
        self.failures.extend([exc] * times)

    def send(self, request: dict[str, Any]) -> dict[str, Any]:
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(30)
        if self.latency:
            time.sleep(self.latency)
        with self._lock:
            if self.failures:
                raise self.failures.popleft()
            self.sent.append(request)
        return {"ok": True, "n": len(self.sent)}


class SlowRetryable(ProviderAdapter):
    name = "slow"

    def build_request(self, context: DeliveryContext) -> dict[str, Any]:
        return {"m": context.message.message_id}

    def send(self, request: dict[str, Any]) -> dict[str, Any]:
        raise RetryableDeliveryError("throttled", retry_after=30, response={"status": 429})


def new_id() -> str:
    return str(uuid.uuid4())


def event(kind: str, token: str | None, **fields: Any) -> dict[str, Any]:
    body = {"id": fields.pop("id", None) or new_id(), "type": kind, **fields}
    if token is not None:
        body["token"] = token
    return body


def post_events(app: Flask, *events: dict[str, Any]) -> dict[str, Any]:
    """POST ``events`` to the event API and insist every one was taken (accepted or duplicate)."""
    response = app.test_client().post("/feedback/events", json={"events": list(events)})
    assert response.status_code == 200 and response.json["rejected"] == 0, response.json
    return response.json


def outbox_rows(app: Flask, provider: str | None = None) -> list[dict[str, Any]]:
    """The outbox, oldest first (of one provider when given)."""
    query = select(outbox).order_by(outbox.c.id)
    if provider:
        query = query.where(outbox.c.provider == provider)
    with fdb.read(app.extensions["feedback_bridge"].engine) as conn:
        return [dict(r) for r in conn.execute(query).mappings()]


@contextmanager
def clock_shifted(seconds: float) -> Iterator[None]:
    """itsdangerous reads the time for the tokens it signs and checks, shifted by ``seconds``."""
    real_time = time.time
    with _token_clock(lambda: real_time() + seconds):
        yield


@contextmanager
def clock_frozen(at: float) -> Iterator[None]:
    """itsdangerous reads ``at`` (seconds since the epoch) for the tokens it signs and checks, whatever the time:
    it counts whole seconds, so a test at a token's exact max age must not let the real clock tick past one."""
    with _token_clock(lambda: at):
        yield


@contextmanager
def _token_clock(read: Callable[[], float]) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(itsdangerous.timed, "time", SimpleNamespace(time=read))
        yield


@contextmanager
def statements_run(engine: Engine) -> Iterator[list[tuple[str, Any]]]:
    """The SQL ``engine`` sends while the block runs, as ``(statement, parameters)``; for executemany, the
    parameters are the list of sets."""
    run: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        run.append((statement, parameters))

    sa_event.listen(engine, "before_cursor_execute", record)
    try:
        yield run
    finally:
        sa_event.remove(engine, "before_cursor_execute", record)


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` until it holds (for state no event announces, like outbox counts); fail after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)
