"""Oversized bodies against a real server, at the socket: refused with 413 before the server reads them."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from flask import Flask
from sqlalchemy import func, select
from werkzeug.serving import make_server

from conftest import register, runtime
from feedback_bridge.schema import events
from support import event

TEN_MB = 10 * 1024 * 1024


@contextmanager
def served(app: Flask) -> Iterator[int]:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_port
    finally:
        server.shutdown()
        thread.join(10)


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Read one HTTP/1.1 response with a Content-Length (the server's 413) from ``sock``."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the connection closed before a response: {data!r}"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    while len(body) < int(headers["content-length"]):
        chunk = sock.recv(65536)
        assert chunk, "the connection closed mid-body"
        body += chunk
    return int(lines[0].split()[1]), headers, body


def stored(app: Flask) -> int:
    with runtime(app).engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(events)).scalar_one()


@pytest.fixture
def app(make_app) -> Flask:
    return make_app()  # FEEDBACK_MAX_CONTENT_LENGTH at its default, 1 MB


def test_a_10_mb_content_length_is_refused_before_the_body_is_sent(app: Flask) -> None:
    token = register(app)
    start = json.dumps({"events": [event("copy_output", token, text="x" * 500)]}).encode()[:1000]
    with served(app) as port, socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"POST /feedback/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n" % TEN_MB + start)
        # The other 10 MB minus 1000 bytes are never sent: the answer must come without them.
        status, headers, body = read_response(sock)
    assert status == 413
    assert headers["content-type"] == "application/json"
    assert "_schema" in json.loads(body)["errors"]
    assert stored(app) == 0


def test_a_chunked_body_without_content_length_is_cut_off_at_the_limit(app: Flask) -> None:
    sent, total = [0], 64 * 1024 * 1024
    with served(app) as port, socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"POST /feedback/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")

        def send_chunks() -> None:
            chunk = b"%x\r\n%s\r\n" % (64 * 1024, b" " * (64 * 1024))  # JSON whitespace, never a valid end
            try:
                while sent[0] < total:
                    sock.sendall(chunk)
                    sent[0] += 64 * 1024
            except OSError:  # the server stopped reading and closed: what this test wants
                return

        sender = threading.Thread(target=send_chunks, daemon=True)
        sender.start()
        status, headers, body = read_response(sock)
        sock.shutdown(socket.SHUT_RDWR)
        sender.join(15)
    assert status == 413, body
    assert headers["content-type"] == "application/json" and "_schema" in json.loads(body)["errors"]
    assert sent[0] < total, "the server read the whole 64 MB"
    assert stored(app) == 0


def padded_body(token: str, size: int) -> bytes:
    """A valid one-event body of exactly ``size`` bytes (JSON whitespace pads it)."""
    body = json.dumps({"events": [event("thumbs_up", token)]}).encode()
    assert len(body) <= size
    return body[:-1] + b" " * (size - len(body)) + b"}"


@pytest.mark.parametrize(("extra", "status"), [(0, 200), (1, 413)], ids=["at-the-limit", "one-byte-over"])
@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_the_limit_is_exact_however_the_body_is_framed(make_app, framing: str, extra: int, status: int) -> None:
    app = make_app(FEEDBACK_MAX_CONTENT_LENGTH=4096)
    body = padded_body(register(app), 4096 + extra)
    if framing == "chunked":  # two chunks, then the last (empty) one
        framed = b"Transfer-Encoding: chunked\r\n\r\n" + b"".join(
            b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:1000], body[1000:], b""))
    else:
        framed = b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    with served(app) as port, socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"POST /feedback/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\n" + framed)
        got, _, answer = read_response(sock)
    assert got == status, answer
    assert stored(app) == (1 if status == 200 else 0)
