"""The bundled demo app: an IT help desk chat whose canned answers stream in word by word, each with a feedback
widget attached by the widget's auto-attach, delivering to the four provider emulators (or to real providers)."""

from __future__ import annotations

import json
import logging
import os
import secrets
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from flask import Flask, Response, redirect, render_template, request, session, stream_with_context
from marshmallow import Schema, ValidationError, fields, validate
from sqlalchemy import select
from werkzeug.exceptions import RequestEntityTooLarge

from . import db
from .api import error
from .demo_answers import TOPICS, pick_answer, words
from .exceptions import ConfigurationError
from .extension import FeedbackBridge
from .schema import messages
from .testing.local import LocalProviders
from .tokens import message_key

logger = logging.getLogger(__name__)

DESK_NAME = "Northwind IT Help Desk"
LOCAL_PROVIDERS = "feedback_bridge.demo.local_providers"
PROVIDER_MODES = ("emulators", "real", "log")
DASHBOARD_CHECK = "feedback_bridge.dashboard.access:localhost_only"
WORD_DELAY = 0.03  # seconds between streamed words (config key DEMO_WORD_DELAY), about a fast typist's pace
HISTORY_LIMIT = 200  # turns of a conversation shown on a page
SUGGESTIONS = tuple(TOPICS[i].example for i in (0, 1, 2, 8))
# Scripts, styles, requests and forms from this origin only: the page has no inline script or style.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "form-action 'self'; base-uri 'none'; frame-ancestors 'none'")


class AskSchema(Schema):
    question = fields.String(required=True, validate=validate.Length(min=1, max=2000))


_ask_schema = AskSchema()


def default_data_dir() -> Path:
    """A writable per-user folder for the demo's database (an installed package's own folder may not be)."""
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "feedback-bridge"


def _persistent_secret(folder: Path) -> str:
    """The demo's signing key, kept beside its database so tokens on open pages survive a restart."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "secret_key"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(secrets.token_hex(32))
    return path.read_text().strip()


class MessageRefs:
    """Each answer's provider ids. The emulators are told about the ids they make, but only for as long as this
    process runs: an answer stored by an earlier run gets fresh ones, once per process. Real providers' ids cannot
    be invented: every answer gets the same ``FEEDBACK_DEMO_REFS`` (a real message's ids), or none."""

    def __init__(self, local: LocalProviders | None, fixed: Mapping[str, Mapping[str, Any]]) -> None:
        self.local = local
        self.fixed = {name: dict(refs) for name, refs in fixed.items()}
        self._made: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def get(self, message_id: str, user_id: str, question: str, answer: str, answered_at: datetime | None = None
            ) -> dict[str, Any]:
        if self.local is None:
            return self.fixed
        with self._lock:
            if message_id not in self._made:
                self._made[message_id] = self.local.new_message_refs(user_id, question, answer,
                                                                     answered_at=answered_at)
            return self._made[message_id]


def _fixed_refs(app: Flask) -> dict[str, Any]:
    value = app.config.get("FEEDBACK_DEMO_REFS") or {}
    if isinstance(value, str):  # the environment's value when it is not valid JSON
        raise ConfigurationError(f"FEEDBACK_DEMO_REFS is not JSON: {value[:60]!r}")
    if not isinstance(value, Mapping) or not all(isinstance(refs, Mapping) for refs in value.values()):
        raise ConfigurationError('FEEDBACK_DEMO_REFS maps provider names to their ids: {"qbusiness": {...}}')
    return dict(value)


def create_app(config: dict[str, Any] | None = None, *, data_dir: str | os.PathLike[str] | None = None,
               providers: str = "emulators") -> Flask:
    """The demo app. ``config`` overrides app config keys; ``data_dir`` holds its SQLite database.

    ``providers="emulators"`` starts the four provider emulators in this process and delivers to them over
    HTTP, with no cloud account; ``"real"`` delivers to the providers ``FEEDBACK_PROVIDERS`` (from ``config`` or
    the environment, as JSON) names, with the ids of ``FEEDBACK_DEMO_REFS`` or none; ``"log"`` only logs
    deliveries. These defaults (and a 2-second settle window) are extension options, so ``FEEDBACK_*``
    environment variables and ``config`` take precedence over them. Call :func:`shutdown` when done.
    """
    if providers not in PROVIDER_MODES:
        raise ValueError(f"providers must be one of {', '.join(PROVIDER_MODES)}")
    instance = Path(data_dir or default_data_dir()).expanduser().resolve()
    app = Flask(__name__, instance_path=str(instance), static_folder=None, template_folder=None)
    app.config.update(SESSION_COOKIE_NAME="feedback_demo", SESSION_COOKIE_SAMESITE="Lax", DEMO_WORD_DELAY=WORD_DELAY)
    app.config.update(config or {})
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = _persistent_secret(instance)
    local = LocalProviders().start() if providers == "emulators" else None
    app.extensions[LOCAL_PROVIDERS] = local
    try:
        options: dict[str, Any] = {"settle_seconds": 2, "dashboard_check": DASHBOARD_CHECK}
        if local is not None:
            options["providers"] = local.providers_config()
        elif providers == "log":
            options["providers"] = {"log": {"mode": "event"}}
        bridge = FeedbackBridge(app, **options)
        runtime = bridge.get_runtime(app)
        if providers == "real" and not runtime.adapters:
            raise ConfigurationError("--providers real needs FEEDBACK_PROVIDERS: set it to the providers' "
                                     "settings as JSON (see the README's Providers section).")
        refs = MessageRefs(local, _fixed_refs(app) if providers == "real" else {})
    except BaseException:
        shutdown(app)
        raise
    if providers == "real":
        logger.info("demo delivering to %s; refs from FEEDBACK_DEMO_REFS for %s", ", ".join(sorted(runtime.adapters)),
                    ", ".join(sorted(refs.fixed)) or "no provider")
    delivery = ("the four local provider emulators" if local is not None
                else ", ".join(sorted(runtime.adapters)) or "no provider")
    dashboard_url = runtime.settings.url_prefix + "/dashboard"

    def visitor() -> tuple[str, str]:
        """This browser's user id and current conversation, kept in the (signed) session cookie."""
        session.permanent = True
        if "user" not in session:
            session["user"] = "demo-" + secrets.token_hex(4)
        if "conversation" not in session:
            session["conversation"] = str(uuid.uuid4())
        return session["user"], session["conversation"]

    registered: set[str] = set()  # answers this process registered: their stored refs are current

    def register(conversation_id: str, message_id: str, user_id: str, question: str, answer: str,
                 answered_at: datetime | None = None) -> str:
        token = bridge.register_message(
            conversation_id=conversation_id, message_id=message_id, user_id=user_id, input=question, output=answer,
            refs=refs.get(message_id, user_id, question, answer, answered_at),
        )
        registered.add(message_id)
        return token

    def token_for(row: Any, conversation_id: str, user_id: str) -> str:
        """A past answer's token: registered again only the first time this process shows it (an earlier run's
        emulators are gone, so it needs fresh ids), else signed for its stored row with no write."""
        if row.message_id in registered:
            return runtime.tokens.issue(row.id, user_id, message_key(conversation_id, row.message_id))
        return register(conversation_id, row.message_id, user_id, row.input or "", row.output or "", row.created_at)

    @app.after_request
    def security_headers(response: Response) -> Response:
        if request.blueprint is None:  # the demo's own pages; the blueprint sets its own
            response.headers.setdefault("Content-Security-Policy", CSP)
            response.headers.setdefault("X-Content-Type-Options", "nosniff")
            response.headers.setdefault("Referrer-Policy", "same-origin")
        return response

    @app.get("/")
    def index() -> str:
        user_id, conversation_id = visitor()
        query = (select(messages.c.id, messages.c.message_id, messages.c.input, messages.c.output,
                        messages.c.created_at)
                 .where(messages.c.conversation_id == conversation_id, messages.c.user_id == user_id)
                 .order_by(messages.c.created_at.desc(), messages.c.id.desc()).limit(HISTORY_LIMIT))
        with db.read(runtime.engine) as conn:
            rows = list(conn.execute(query))[::-1]
        turns = [{"question": row.input, "answer": row.output, "message_id": row.message_id,
                  "token": token_for(row, conversation_id, user_id)}
                 for row in rows]
        return render_template("feedback_bridge/demo.html", desk_name=DESK_NAME, turns=turns,
                               dashboard_url=dashboard_url, suggestions=SUGGESTIONS, delivery=delivery)

    @app.post("/ask")
    def ask() -> Response:
        if request.mimetype != "application/json":
            return error(415, {"_schema": ["Send the question as application/json."]})
        request.max_content_length = 64 * 1024  # a 2,000-character question needs far less
        try:
            payload = request.get_json(silent=True)
        except RequestEntityTooLarge:
            return error(413, {"_schema": ["The request is larger than 64 KiB."]})
        try:
            body = _ask_schema.load(payload or {})
        except ValidationError as exc:
            return error(400, exc.normalized_messages())
        question = body["question"].strip()
        if not question:
            return error(400, {"question": ["Ask a question."]})
        user_id, conversation_id = visitor()
        message_id = str(uuid.uuid4())
        answer = pick_answer(question)
        delay = float(app.config["DEMO_WORD_DELAY"])

        def stream() -> Iterator[str]:
            # One JSON object per line: the words as they are "generated", then the message's token. The answer
            # is registered once it is complete, as a real assistant's would be.
            for word in words(answer):
                yield json.dumps({"text": word}) + "\n"
                time.sleep(delay)
            token = register(conversation_id, message_id, user_id, question, answer)
            yield json.dumps({"token": token, "message_id": message_id}) + "\n"

        return Response(stream_with_context(stream()), mimetype="application/x-ndjson",
                        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    @app.post("/conversations")
    def new_conversation() -> Response:
        visitor()
        session["conversation"] = str(uuid.uuid4())
        return redirect("/", 303)

    return app


def seed(app: Flask, n: int) -> int:
    """Fill the demo's store with ``n`` past events. With the emulators, their messages get ids the emulators
    know, so the deliveries the seed leaves pending are delivered as a real backlog would be."""
    from .seed import seed_store

    local: LocalProviders | None = app.extensions.get(LOCAL_PROVIDERS)
    known = None if local is None else (
        lambda user_id, input, output, at: local.new_message_refs(user_id, input, output, answered_at=at))
    return seed_store(app.extensions["feedback_bridge"].engine, n, make_refs=known)


def shutdown(app: Flask) -> None:
    """Stop the bridge's worker and the demo's emulators."""
    bridge = app.extensions.get("feedback_bridge")
    if bridge is not None:
        bridge.close()
    local = app.extensions.get(LOCAL_PROVIDERS)
    if local is not None:
        local.stop()
