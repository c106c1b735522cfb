"""The blueprint: event API, state, widget script, OpenAPI document and health check."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Response, jsonify, request
from flask_cors import CORS
from marshmallow import ValidationError
from sqlalchemy import text
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from . import db, widget_asset
from .exceptions import TokenError, TokenMismatch, TokenMissing, UnknownMessageError
from .models import Event, EventType, Message
from .resources import resource_dir
from .schemas import EnvelopeSchema, EventSchema, StateQuerySchema
from .store import IncomingEvent, Outcome

if TYPE_CHECKING:
    from .extension import Runtime

logger = logging.getLogger(__name__)
_event_schema = EventSchema()
_envelope_schema = EnvelopeSchema()
_state_query_schema = StateQuerySchema()
BODY_TYPES = ("application/json", "text/plain")  # text/plain: sendBeacon and preflight-free fetch


def error(status: int, errors: dict[str, Any], code: str | None = None) -> Response:
    body: dict[str, Any] = {"errors": errors}
    if code:
        body["code"] = code
    response = jsonify(body)
    response.status_code = status
    return response


def rate_limited(seconds: int) -> Response:
    response = error(429, {"_schema": [f"Too many requests; retry in {seconds} s."]}, "rate_limited")
    response.headers["Retry-After"] = str(seconds)
    return response


def create_blueprint(runtime: Runtime) -> Blueprint:
    settings = runtime.settings
    bp = Blueprint(
        "feedback_bridge", __name__, url_prefix=settings.url_prefix or None,
        template_folder=str(resource_dir("templates")), static_folder=str(resource_dir("static")),
        static_url_path="/static",
    )
    if settings.allowed_origins:
        CORS(bp, origins=settings.allowed_origins, methods=["GET", "POST", "OPTIONS"],
             allow_headers=["Content-Type"], max_age=86400)

    bp.register_error_handler(HTTPException, json_http_error)
    bp.register_error_handler(Exception, _unexpected_error)

    @bp.post("/events")
    def post_events() -> Response:
        if wait := runtime.rate_limits.retry_after("events"):  # before the body is even read
            return rate_limited(wait)
        if request.mimetype not in BODY_TYPES:
            return error(415, {"_schema": ["Send the events as application/json (or text/plain)."]})
        # A Content-Length past the limit raises 413 before anything is read. A streamed (chunked) body is cut
        # off after one byte more than the limit: werkzeug stops at the limit without saying it was reached.
        request.max_content_length = settings.max_content_length + 1
        raw = request.get_data(cache=False)
        if len(raw) > settings.max_content_length:
            raise RequestEntityTooLarge()
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            return error(400, {"_schema": [f"The body is not valid JSON: {exc}"]})
        except RecursionError:
            return error(400, {"_schema": ["The body is not valid JSON: nested too deeply."]})
        try:
            envelope = _envelope_schema.load(body) if isinstance(body, dict) else _envelope_schema.load({})
        except ValidationError as exc:
            messages = exc.messages if isinstance(body, dict) else {"_schema": ["Expected a JSON object."]}
            return error(400, messages)

        outcomes: list[Outcome | None] = []
        valid: list[IncomingEvent] = []
        lookups = _Lookups(runtime)
        lookups.prefetch_tokens(envelope["events"])
        received = runtime.now()
        for raw_event in envelope["events"]:
            outcome, incoming = _check_event(runtime, raw_event, lookups, received)
            outcomes.append(outcome)
            if incoming:
                valid.append(incoming)
        # Per-token limits refuse the whole request before anything is stored: the widget retries it whole.
        subjects = [(i.message.conversation_id, i.message.message_id, i.user_id) for i in valid]
        if subjects and (wait := runtime.rate_limits.retry_after("events", subjects)):
            return rate_limited(wait)
        if valid:
            stored = iter(runtime.ingest(valid, received))
            outcomes = [outcome or next(stored) for outcome in outcomes]
        return _events_response([o for o in outcomes if o is not None])

    @bp.get("/state")
    def get_state() -> Response:
        if wait := runtime.rate_limits.retry_after("state"):
            return rate_limited(wait)
        try:
            query = _state_query_schema.load(request.args)
        except ValidationError as exc:
            return error(401, exc.messages, "token_missing")
        try:
            message, user_id = runtime.resolve_token(query["token"])
        except TokenError as exc:
            return error(401, {"token": [str(exc)]}, exc.code)
        except UnknownMessageError as exc:
            return error(404, {"token": [str(exc)]}, "message_unknown")
        if wait := runtime.rate_limits.retry_after("state", [(message.conversation_id, message.message_id, user_id)]):
            return rate_limited(wait)
        return jsonify(runtime.store.get_state(message.pk, user_id).as_public_dict())

    widget_asset.add_routes(bp)  # /widget.js, /widget.mjs, /widget/i18n/<lang>.json: minified, cached

    @bp.get("/openapi.json")
    def openapi() -> Response:
        return jsonify(runtime.openapi())

    @bp.get("/health")
    def health() -> tuple[Response, int]:
        try:
            with db.read(runtime.engine) as conn:  # never queues for SQLite's write lock
                conn.execute(text("SELECT 1"))
            database, status = "ok", 200
        except Exception as exc:  # report, do not raise: this is what load balancers poll
            database, status = f"unreachable: {type(exc).__name__}", 503
        body = {"status": "ok" if status == 200 else "degraded", "database": database,
                "providers": sorted(runtime.adapters)}
        return jsonify(body), status

    return bp


class _Lookups:
    """The token and message look-ups of one request, each done once: the events of a batch mostly share
    one token, and every look-up is a database round trip."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._done: dict[tuple[Any, ...], Any] = {}

    def _once(self, key: tuple[Any, ...], look_up: Callable[[], Any]) -> Any:
        if key not in self._done:
            try:
                self._done[key] = look_up()
            except (TokenError, UnknownMessageError) as exc:
                self._done[key] = exc
        result = self._done[key]
        if isinstance(result, Exception):
            raise result.with_traceback(None)
        return result

    def prefetch_tokens(self, raw_events: list[Any]) -> None:
        """Resolve the distinct tokens of a batch together: one read for all their messages."""
        tokens = {e["token"] for e in raw_events if isinstance(e, dict) and isinstance(e.get("token"), str)}
        if len(tokens) > 1:
            for token, result in self.runtime.resolve_tokens(tokens).items():
                self._done[("token", token)] = result

    def token(self, token: str | None) -> tuple[Message, str]:
        return self._once(("token", token), lambda: self.runtime.resolve_token(token))

    def message(self, conversation_id: str, message_id: str) -> Message | None:
        return self._once(("ids", conversation_id, message_id),
                          lambda: self.runtime.store.find_message(conversation_id, message_id))


def _check_event(
    runtime: Runtime, raw: Any, lookups: _Lookups, received: datetime
) -> tuple[Outcome | None, IncomingEvent | None]:
    """Validate one event and resolve its message; a rejection outcome, or the event to store (one the client gave
    no time occurred when it was received)."""
    event_id = raw.get("id") if isinstance(raw, dict) and isinstance(raw.get("id"), str) else None
    if not isinstance(raw, dict):
        return Outcome(event_id, "rejected", {"_schema": ["Each event must be a JSON object."]}, "invalid"), None
    try:
        data = _event_schema.load(raw)
    except ValidationError as exc:
        return Outcome(event_id, "rejected", exc.messages, "invalid"), None
    try:
        message, user_id = _resolve_message(runtime, data, lookups)
    except TokenError as exc:
        return Outcome(event_id, "rejected", {"token": [str(exc)]}, exc.code), None
    except UnknownMessageError as exc:
        return Outcome(event_id, "rejected", {"token": [str(exc)]}, "message_unknown"), None
    event = Event(
        event_id=data["id"], type=EventType(data["type"]), value=data.get("value"), reason=data.get("reason"),
        comment=data.get("comment"), text=data.get("text"), amends=data.get("amends"),
        occurred_at=data.get("occurred_at") or received,
    )
    return None, IncomingEvent(message=message, user_id=user_id, event=event)


_INLINE_IDS = ("conversation_id", "message_id", "user_id")


def _resolve_message(runtime: Runtime, data: dict[str, Any], lookups: _Lookups) -> tuple[Message, str]:
    inline = {k: data[k] for k in data.keys() & _INLINE_IDS}  # mostly none: the set is made in C
    if "token" in data or not runtime.settings.allow_unsigned:
        message, user_id = lookups.token(data.get("token"))
        # Inline ids next to a token are a cross-check: a token never speaks for another message or user.
        if inline and any(inline.get(k) not in (None, v) for k, v in
               (("conversation_id", message.conversation_id), ("message_id", message.message_id),
                ("user_id", user_id))):
            raise TokenMismatch("The token was issued for another message or user.")
        return message, user_id
    missing = [k for k in _INLINE_IDS if k not in inline]
    if missing:
        raise TokenMissing(f"Without a token, give {', '.join(missing)}.")
    message = lookups.message(inline["conversation_id"], inline["message_id"])
    if message is None:
        raise UnknownMessageError("No message was registered with these ids.")
    return message, inline["user_id"]


def _events_response(outcomes: list[Outcome]) -> Response:
    counts = dict.fromkeys(("accepted", "duplicate", "rejected"), 0)
    for outcome in outcomes:
        counts[outcome.status] += 1
    body: dict[str, Any] = {"results": [o.as_dict() for o in outcomes], **counts}
    if counts["rejected"]:
        body["errors"] = {"events": {str(i): o.errors for i, o in enumerate(outcomes) if o.status == "rejected"}}
    status = 200
    if counts["rejected"] == len(outcomes):
        token_only = all((o.code or "").startswith("token_") for o in outcomes)
        status = 401 if token_only else 422
    response = jsonify(body)
    response.status_code = status
    return response


def _unexpected_error(exc: Exception) -> Response:
    if isinstance(exc, HTTPException):
        return json_http_error(exc)
    logger.exception("Unhandled error in the feedback API")
    return error(500, {"_schema": ["Internal error; the event batch was not stored. Retry later."]})


def json_http_error(exc: HTTPException) -> Response:
    """HTTP errors under the prefix answer in JSON, like every other response of the API."""
    response = error(exc.code or 500, {"_schema": [exc.description or exc.name]})
    # Keep the error's own headers, such as the Allow header a 405 must carry.
    for name, value in exc.get_headers():
        if name.lower() != "content-type":
            response.headers[name] = value
    return response
