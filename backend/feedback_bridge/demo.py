"""The bundled demo app: a short IT help desk transcript with a feedback widget under each answer."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

from flask import Flask, render_template

from .extension import FeedbackBridge
from .testing.local import LocalProviders

DESK_NAME = "Northwind IT Help Desk"
CONVERSATION_ID = "demo-helpdesk-1"
USER_ID = "demo-user"
LOCAL_PROVIDERS = "feedback_bridge.demo.local_providers"

# (message id, question, answer): the ids are stable, so reloading the page reuses the stored messages.
TRANSCRIPT: tuple[tuple[str, str, str], ...] = (
    (
        "demo-answer-1",
        "I forgot my password and I'm locked out of my laptop. What should I do?",
        "Choose \"Reset password\" on the sign-in screen and answer your security questions. "
        "If you have not set them up, call the help desk on extension 4357 from any desk phone "
        "and we will send a one-time code to your manager.",
    ),
    (
        "demo-answer-2",
        "How do I connect to the VPN from home?",
        "Open Northwind Connect from the Start menu, pick the \"Europe\" gateway and sign in with your "
        "usual account. Approve the push notification on your phone; the shield icon turns green once "
        "you are connected.",
    ),
    (
        "demo-answer-3",
        "The printer on the 3rd floor says \"offline\". Can you fix it?",
        "Printer 3F-East is being serviced until 2 pm. Until then, send your job to 3F-West: it is already "
        "installed on every office laptop, and it prints on both sides by default.",
    ),
)


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


def create_app(config: dict[str, Any] | None = None, *, data_dir: str | os.PathLike[str] | None = None,
               providers: str = "emulators") -> Flask:
    """The demo app. ``config`` overrides app config keys; ``data_dir`` holds its SQLite database.

    ``providers="emulators"`` starts the four provider emulators in this process and delivers to them over
    HTTP, with no cloud account; ``"log"`` only logs deliveries. These defaults (and a 2-second settle window)
    are extension options, so ``FEEDBACK_*`` environment variables and ``config`` take precedence over them.
    Call :func:`shutdown` when done.
    """
    if providers not in ("emulators", "log"):
        raise ValueError("providers must be 'emulators' or 'log'")
    instance = Path(data_dir or default_data_dir()).expanduser().resolve()
    app = Flask(__name__, instance_path=str(instance), static_folder=None, template_folder=None)
    app.config.update(config or {})
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = _persistent_secret(instance)
    local = LocalProviders().start() if providers == "emulators" else None
    app.extensions[LOCAL_PROVIDERS] = local
    try:
        default = local.providers_config() if local else {"log": {"mode": "event"}}
        bridge = FeedbackBridge(app, providers=default, settle_seconds=2)
    except BaseException:
        shutdown(app)
        raise
    refs: dict[str, dict[str, Any]] = {}  # per message, made once per process: the emulators live as long

    def message_refs(message_id: str, question: str, answer: str) -> dict[str, Any]:
        if local is None:
            return {}
        if message_id not in refs:
            refs[message_id] = local.new_message_refs(USER_ID, question, answer)
        return refs[message_id]

    @app.get("/")
    def index() -> str:
        transcript = [
            {
                "question": question,
                "answer": answer,
                "token": bridge.register_message(
                    conversation_id=CONVERSATION_ID, message_id=message_id, user_id=USER_ID,
                    input=question, output=answer, refs=message_refs(message_id, question, answer),
                ),
            }
            for message_id, question, answer in TRANSCRIPT
        ]
        return render_template("feedback_bridge/demo.html", desk_name=DESK_NAME, transcript=transcript)

    return app


def shutdown(app: Flask) -> None:
    """Stop the bridge's worker and the demo's emulators."""
    bridge = app.extensions.get("feedback_bridge")
    if bridge is not None:
        bridge.close()
    local = app.extensions.get(LOCAL_PROVIDERS)
    if local is not None:
        local.stop()
