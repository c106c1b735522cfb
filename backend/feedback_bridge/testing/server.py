"""The part every provider emulator shares: a real HTTP server on 127.0.0.1, a record of what it received,
and fault injection (throttling, server errors, hangs past the client's timeout, dropped connections, latency).

Subclasses build a Flask app with the vendor's routes in :meth:`EmulatorServer.create_app` and say how the
vendor spells a throttle and a server error (:meth:`throttle_response`, :meth:`error_response`).
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

from flask import Flask, Response, g, request
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

FaultKind = Literal["throttle", "error", "hang", "drop"]
FAULT_KINDS: tuple[FaultKind, ...] = ("throttle", "error", "hang", "drop")


@dataclass(frozen=True)
class Received:
    """One request as it reached the emulator, and what the emulator answered."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    status: int
    response: bytes
    fault: FaultKind | None = None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass
class _Fault:
    kind: FaultKind
    retry_after: float | None = None
    status: int | None = None


@dataclass
class _Faults:
    queue: deque[_Fault] = field(default_factory=deque)
    latency: float = 0.0


class _KeepAliveHandler(WSGIRequestHandler):
    """HTTP/1.1 with connections kept open, as the real APIs keep them: otherwise every call opens a TCP
    connection and a server thread, and a benchmark measures that instead of the client.

    werkzeug's development server closes every connection (``Connection: close``) because after each response it
    drains what is left of the request body, and on a kept connection that read would run into the next request
    and block. The emulators' apps read every body whole, so nothing is left to drain: the drain is skipped."""

    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes: on a kept connection Nagle's algorithm would hold the body
        # back until the client's delayed ACK, 40 ms a request.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.open_connections.add(self.connection)  # type: ignore[attr-defined]

    def finish(self) -> None:
        self.server.open_connections.discard(self.connection)  # type: ignore[attr-defined]
        super().finish()

    def send_header(self, keyword: str, value: str) -> None:
        if keyword.lower() == "connection" and value.lower() == "close" and not self.close_connection:
            return  # werkzeug's, on every response; said (and done) only when the client asked to close
        super().send_header(keyword, value)

    def run_wsgi(self) -> None:
        stream = self.rfile
        self.rfile = _NoDrain(stream)  # type: ignore[assignment]
        try:
            super().run_wsgi()
        finally:
            self.rfile = stream


class _NoDrain:
    """The request stream, except for werkzeug's after-response drain (one read of 10 MB), which finds nothing."""

    DRAIN = 10_000_000

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def read(self, size: int = -1) -> bytes:
        return b"" if size >= self.DRAIN else self._stream.read(size)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class EmulatorServer:
    """Base class. ``with QBusinessEmulator() as emulator: ... emulator.url ...`` or ``start()``/``stop()``."""

    name = "emulator"
    #: How long a "hang" fault holds the request before answering 500. Longer than any client timeout we set;
    #: ``stop()`` and ``reset()`` release hung requests at once.
    hang_seconds = 30.0

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host, self.port = host, port
        self.calls: list[Received] = []
        self._faults = _Faults()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._release = threading.Event()  # set by reset(): frees requests hung before it
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self.app = self.create_app()
        self.app.before_request(self._before)
        self.app.after_request(self._after)

    # -- what subclasses provide ------------------------------------------------------------------------------

    def create_app(self) -> Flask:
        raise NotImplementedError

    def throttle_response(self, retry_after: float | None) -> Response:
        raise NotImplementedError

    def error_response(self) -> Response:
        raise NotImplementedError

    # -- life cycle --------------------------------------------------------------------------------------------

    def start(self) -> EmulatorServer:
        self._release = threading.Event()
        self._server = make_server(self.host, self.port, self.app, threaded=True, request_handler=_KeepAliveHandler)
        self._server.open_connections = set()  # type: ignore[attr-defined]
        self.port = self._server.server_port
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name=f"{self.name}-emulator", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._release.set()  # frees hung requests
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            for connection in list(self._server.open_connections):  # type: ignore[attr-defined]
                with contextlib.suppress(OSError):  # kept connections end with the server, as a real one's would
                    connection.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(10)
        self._server = self._thread = None

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # -- fault injection ---------------------------------------------------------------------------------------

    def fail_next(self, count: int = 1, kind: FaultKind = "throttle", *, retry_after: float | None = 1,
                  status: int | None = None) -> None:
        """Answer the next ``count`` requests with a fault instead of serving them.

        ``throttle``: the vendor's throttling error (with ``Retry-After`` when given); ``error``: the vendor's
        server error (``status`` overrides 500, e.g. 503); ``hang``: hold the request past the client timeout;
        ``drop``: close the connection without answering.
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"kind must be one of {FAULT_KINDS}")
        with self._lock:
            self._faults.queue.extend(_Fault(kind, retry_after, status) for _ in range(count))

    def set_latency(self, seconds: float) -> None:
        """Add ``seconds`` before every answer, as a distant service would."""
        with self._lock:
            self._faults.latency = seconds

    def reset(self) -> None:
        """Forget what was received and any pending faults and latency (state a subclass keeps is its own).
        Requests hung or in progress before the reset are released and never recorded."""
        with self._lock:
            self.calls.clear()
            self._faults = _Faults()
            self._release.set()
            self._release = threading.Event()

    # -- what was received -------------------------------------------------------------------------------------

    @property
    def received(self) -> list[Received]:
        """The requests the emulator accepted (2xx), in arrival order."""
        with self._lock:
            return [call for call in self.calls if call.ok]

    def wait_for(self, count: int, timeout: float = 10.0, *, accepted: bool = True) -> list[Received]:
        """Block until ``count`` requests were accepted (or made at all), then return them; TimeoutError if not."""

        def enough() -> bool:
            seen = [c for c in self.calls if c.ok] if accepted else self.calls
            return len(seen) >= count

        with self._changed:
            if not self._changed.wait_for(enough, timeout):
                raise TimeoutError(f"{self.name} emulator saw {len(self.calls)} calls, waited for {count}")
            return [c for c in self.calls if c.ok] if accepted else list(self.calls)

    # -- hooks -------------------------------------------------------------------------------------------------

    def _before(self) -> Response | None:
        with self._lock:
            latency = self._faults.latency
            fault = self._faults.queue.popleft() if self._faults.queue else None
            g.emulator_release = release = self._release
        if latency:
            release.wait(latency)
        g.emulator_fault = fault.kind if fault else None
        if fault is None:
            return None
        if fault.kind == "throttle":
            return self.throttle_response(fault.retry_after)
        if fault.kind == "error":
            response = self.error_response()
            if fault.status:
                response.status_code = fault.status
            return response
        if fault.kind == "hang":
            release.wait(self.hang_seconds)
            return self.error_response()
        # drop: recorded first (the client must never see the drop before the record), then the connection is
        # closed under the client's feet; werkzeug treats the failed write as a dropped connection, quietly.
        self._record(Response(status=499), "drop")
        connection = request.environ.get("werkzeug.socket")
        if connection is not None:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        return Response(status=499)

    def _after(self, response: Response) -> Response:
        if g.get("emulator_fault") != "drop":
            self._record(response, g.get("emulator_fault"))
        return response

    def _record(self, response: Response, fault: FaultKind | None) -> None:
        call = Received(
            method=request.method,
            path=request.path,
            query=request.args.to_dict(),
            headers={k.lower(): v for k, v in request.headers.items()},
            body=request.get_data(cache=True),
            status=response.status_code,
            response=b"" if response.direct_passthrough else response.get_data(),
            fault=fault,
        )
        with self._changed:
            if g.get("emulator_release", self._release) is not self._release:
                return  # began before a reset(): belongs to a test that is over
            self.calls.append(call)
            self._changed.notify_all()


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON response with exactly the given body (Flask's ``jsonify`` would sort and pretty-print)."""
    payload = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
    return Response(payload, status=status, headers=headers or {}, content_type="application/json")


def retry_after_header(seconds: float | None) -> dict[str, str]:
    """``{"Retry-After": "2"}`` (or ``"0.5"``) for a throttle answer; nothing when no delay is given."""
    if seconds is None:
        return {}
    return {"Retry-After": str(int(seconds)) if float(seconds).is_integer() else str(seconds)}
