"""Test helpers shared by the suites: a scriptable recording provider and event builders."""

from __future__ import annotations

import threading
import time
import uuid
from collections import deque
from typing import Any

from feedback_bridge import ProviderAdapter, RetryableDeliveryError
from feedback_bridge.providers import DeliveryContext
from feedback_bridge.providers.log import LogAdapter


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
