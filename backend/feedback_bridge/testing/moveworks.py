"""A strict local emulator of the Moveworks Conversations API (beta) "Submit feedback" endpoint (seed 003).

``POST /rest/v1beta1/conversations/{conversation_id}/responses/{response_id}/messages/{message_id}/feedback``,
answered as documented: 200 ``{"status": "SUBMITTED"}``; errors ``{"error": {"code", "message"}}`` with
400 ``INVALID_REQUEST`` (malformed body, or a callback id that is not one of this message's), 404 ``NOT_FOUND``
(unknown or malformed conversation, response or message id), 429 ``RATE_LIMIT_EXCEEDED`` (with ``Retry-After``)
and 500 ``INTERNAL_ERROR``.

Not documented for this endpoint, so chosen here in the same error shape: a missing, unknown, expired or revoked
bearer token is 401 ``UNAUTHORIZED``; an ``Assistant-Name`` that does not match exactly is 403 ``FORBIDDEN``
(missing: 400 ``INVALID_REQUEST``); a body key other than ``callback_id``/``additional_feedback``, or an empty
``additional_feedback`` (the vendor notes say to omit it), is 400 ``INVALID_REQUEST``.

It also serves an OAuth 2.0 client-credentials token endpoint on ``/oauth/v1/token`` (form or HTTP Basic client
authentication; ``{"access_token", "token_type": "Bearer", "expires_in"}``; errors as RFC 6749 ``{"error"}``).
Token requests are kept in :attr:`MoveworksEmulator.token_requests`, not in ``calls``, and are never faulted.
"""

from __future__ import annotations

import base64
import re
import secrets
import string
import threading
import time
from dataclasses import dataclass
from typing import Any

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from .server import EmulatorServer, json_response, retry_after_header

API_PREFIX = "/rest/v1beta1"
TOKEN_PATH = "/oauth/v1/token"
_BASE62 = string.ascii_letters + string.digits
_IDS = {"conversation": re.compile(r"conv_[0-9A-Za-z]+"), "response": re.compile(r"resp_[0-9A-Za-z]+"),
        "message": re.compile(r"msg_[0-9A-Za-z]+")}


def new_id(prefix: str) -> str:
    """``conv_32bt7BMLhLyVzTUjfi35N``: a type prefix and 21 base-62 characters, as in the documented examples."""
    return prefix + "_" + "".join(secrets.choice(_BASE62) for _ in range(21))


@dataclass(frozen=True)
class MoveworksMessage:
    """An assistant message the emulator knows, with its two feedback callback ids."""

    conversation_id: str
    response_id: str
    message_id: str
    helpful_callback_id: str
    unhelpful_callback_id: str

    def refs(self) -> dict[str, str]:
        """The ``"moveworks"`` refs to pass to ``register_message``."""
        return {"conversation_id": self.conversation_id, "response_id": self.response_id,
                "message_id": self.message_id, "helpful_callback_id": self.helpful_callback_id,
                "unhelpful_callback_id": self.unhelpful_callback_id}


@dataclass(frozen=True)
class Submission:
    """Feedback the emulator accepted."""

    message: MoveworksMessage
    rating: str  # "helpful" | "unhelpful"
    additional_feedback: str | None


class MoveworksEmulator(EmulatorServer):
    """``with MoveworksEmulator(tokens={"t0k3n"}, assistant_name="acme") as mw: mw.base_url ...``"""

    name = "moveworks"

    def __init__(self, *, tokens: set[str] | None = None, assistant_name: str = "acmecorp-conversations-rest-api",
                 clients: dict[str, str] | None = None, token_ttl: float = 3600, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self.assistant_name = assistant_name
        self.static_tokens: set[str] = set(tokens or ())
        self.clients: dict[str, str] = dict(clients or {})  # OAuth client_id -> client_secret
        self.token_ttl = token_ttl
        self.messages: dict[tuple[str, str, str], MoveworksMessage] = {}
        self.submissions: list[Submission] = []
        self.token_requests: list[dict[str, Any]] = []
        self._issued: dict[str, float] = {}  # access token -> expiry (time.monotonic)
        self._state_lock = threading.Lock()
        super().__init__(host, port)

    @property
    def base_url(self) -> str:
        return self.url + API_PREFIX

    # -- what a test sets up -----------------------------------------------------------------------

    def add_message(self, conversation_id: str | None = None, response_id: str | None = None,
                    message_id: str | None = None) -> MoveworksMessage:
        message = MoveworksMessage(
            conversation_id or new_id("conv"), response_id or new_id("resp"), message_id or new_id("msg"),
            # Opaque tokens, as Moveworks' look (base64url text); unique per message and rating.
            base64.urlsafe_b64encode(secrets.token_bytes(18)).decode().rstrip("="),
            base64.urlsafe_b64encode(secrets.token_bytes(18)).decode().rstrip("="),
        )
        with self._state_lock:
            self.messages[(message.conversation_id, message.response_id, message.message_id)] = message
        return message

    def expire_tokens(self) -> None:
        """Every access token issued so far stops working (as after ``expires_in``); static tokens stay valid."""
        with self._state_lock:
            self._issued.clear()

    def revoke(self, token: str) -> None:
        with self._state_lock:
            self.static_tokens.discard(token)
            self._issued.pop(token, None)

    def reset(self) -> None:
        """Also forget submissions, token requests and issued tokens; known messages and clients stay."""
        super().reset()
        with self._state_lock:
            self.submissions.clear()
            self.token_requests.clear()
            self._issued.clear()

    # -- the vendor's spelling of faults -----------------------------------------------------------

    def throttle_response(self, retry_after: float | None) -> Response:
        return _error(429, "RATE_LIMIT_EXCEEDED", "Rate limit exceeded", retry_after_header(retry_after))

    def error_response(self) -> Response:
        return _error(500, "INTERNAL_ERROR", "Internal server error")

    def _before(self) -> Response | None:
        return None if request.path == TOKEN_PATH else super()._before()

    def _after(self, response: Response) -> Response:
        return response if request.path == TOKEN_PATH else super()._after(response)

    # -- routes ------------------------------------------------------------------------------------

    def create_app(self) -> Flask:
        app = Flask(__name__)

        @app.errorhandler(HTTPException)
        def _http_error(exc: HTTPException) -> Response:  # routing errors in the vendor's shape
            status = exc.code or 500
            code = "INTERNAL_ERROR" if status >= 500 else "NOT_FOUND" if status == 404 else "INVALID_REQUEST"
            return _error(status, code, exc.description or exc.name)

        @app.post(API_PREFIX + "/conversations/<conversation_id>/responses/<response_id>/messages/"
                  "<message_id>/feedback")
        def submit_feedback(conversation_id: str, response_id: str, message_id: str) -> Response:
            problem = self._check_headers()
            if problem is not None:
                return problem
            for kind, value in (("conversation", conversation_id), ("response", response_id),
                                ("message", message_id)):
                if not _IDS[kind].fullmatch(value):
                    return _error(404, "NOT_FOUND", f"No {kind} with id {value!r}")
            with self._state_lock:
                message = self.messages.get((conversation_id, response_id, message_id))
            if message is None:
                return _error(404, "NOT_FOUND", "Conversation, response or message does not exist")
            body = request.get_json(silent=True) if request.mimetype == "application/json" else None
            problem = _check_body(body)
            if problem:
                return _error(400, "INVALID_REQUEST", problem)
            callback = body["callback_id"]
            if callback not in (message.helpful_callback_id, message.unhelpful_callback_id):
                return _error(400, "INVALID_REQUEST", "callback_id does not match this message")
            rating = "helpful" if callback == message.helpful_callback_id else "unhelpful"
            with self._state_lock:
                self.submissions.append(Submission(message, rating, body.get("additional_feedback")))
            return json_response({"status": "SUBMITTED"})

        @app.post(TOKEN_PATH)
        def token() -> Response:
            return self._issue_token()

        return app

    def _check_headers(self) -> Response | None:
        auth = request.headers.get("Authorization", "")
        scheme, _, token = auth.partition(" ")
        now = time.monotonic()
        with self._state_lock:
            valid = scheme.lower() == "bearer" and (
                token in self.static_tokens or self._issued.get(token, 0.0) > now
            )
        if not valid:
            return _error(401, "UNAUTHORIZED", "Missing, invalid or expired bearer token",
                          {"WWW-Authenticate": 'Bearer error="invalid_token"'})
        name = request.headers.get("Assistant-Name")
        if name is None:
            return _error(400, "INVALID_REQUEST", "The Assistant-Name header is required")
        if name != self.assistant_name:
            return _error(403, "FORBIDDEN", "The token is not valid for this assistant")
        return None

    def _issue_token(self) -> Response:
        form = request.form
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        if request.authorization is not None and request.authorization.type == "basic":
            client_id, client_secret = request.authorization.username, request.authorization.password
        with self._state_lock:
            self.token_requests.append({"client_id": client_id, "grant_type": form.get("grant_type")})
        if form.get("grant_type") != "client_credentials":
            return json_response({"error": "unsupported_grant_type"}, 400)
        if client_id is None or self.clients.get(client_id) != client_secret:
            return json_response({"error": "invalid_client"}, 401)
        token = secrets.token_urlsafe(24)
        with self._state_lock:
            self._issued[token] = time.monotonic() + self.token_ttl
        return json_response({"access_token": token, "token_type": "Bearer", "expires_in": int(self.token_ttl)},
                             headers={"Cache-Control": "no-store"})


def _check_body(body: Any) -> str | None:
    if not isinstance(body, dict):
        return "The body must be a JSON object (Content-Type: application/json)"
    unknown = set(body) - {"callback_id", "additional_feedback"}
    if unknown:
        return f"Unknown fields: {', '.join(sorted(unknown))}"
    if not isinstance(body.get("callback_id"), str) or not body["callback_id"]:
        return "callback_id is required and must be a string"
    if "additional_feedback" in body and (
        not isinstance(body["additional_feedback"], str) or not body["additional_feedback"]
    ):
        return "additional_feedback must be a non-empty string when given"
    return None


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return json_response({"error": {"code": code, "message": message}}, status, headers)


__all__ = ["MoveworksEmulator", "MoveworksMessage", "Submission", "new_id"]
