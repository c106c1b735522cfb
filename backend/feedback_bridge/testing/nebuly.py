"""A strict local emulator of Nebuly's "Send User Feedback" endpoint (seed 004).

``POST /event-ingestion/api/v1/events/feedback`` with ``Authorization: Bearer <key>`` and
``{"feedback": {"slug", "text"?, "value"?}, "metadata": {"input"?, "output"?, "end_user", "timestamp",
"anonymize"?}}``. Checked as documented: the six slugs; ``value`` an integer 1..5, required with ``rating`` and
allowed with no other slug; ``text`` instead of ``value`` only for the other slugs, and required for
``copy_input``/``copy_output``/``paste`` ("should contain" the copied or pasted text); ``end_user`` and
``timestamp`` required; the timestamp ISO 8601 with a zone; and, for an interaction the emulator was told about
(:meth:`NebulyEmulator.add_interaction`), a feedback timestamp after the interaction ended.

Nebuly documents no response or error bodies. This emulator answers in the style of a FastAPI service, our choice:
200 ``{"status": "received"}``; 401 ``{"detail": "Invalid API key"}`` for a missing or unknown bearer key;
422 ``{"detail": [{"loc": [...], "msg": ..., "type": ...}]}`` for a body that breaks the schema (unknown keys too:
an older page spells ``feedback`` as ``action``, and strictness catches that); 400 ``{"detail": ...}`` for
feedback timestamped before its interaction ended; 429 ``{"detail": "Too Many Requests"}`` with ``Retry-After``;
500 ``{"detail": "Internal Server Error"}``.
"""

from __future__ import annotations

import re
import threading
from datetime import datetime, timezone
from typing import Any

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from .server import EmulatorServer, json_response, retry_after_header

PATH = "/event-ingestion/api/v1/events/feedback"
SLUGS = ("thumbs_up", "thumbs_down", "copy_input", "copy_output", "paste", "rating")
TEXT_SLUGS = ("copy_input", "copy_output", "paste")
_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?(Z|[+-]\d\d:?\d\d)")
_FEEDBACK_KEYS = {"slug", "text", "value"}
_METADATA_KEYS = {"input", "output", "end_user", "timestamp", "anonymize"}

Problem = tuple[list[Any], str, str]  # loc, msg, type


class NebulyEmulator(EmulatorServer):
    """``with NebulyEmulator(api_keys={"nb-key"}) as nebuly: ... base_url=nebuly.url ...``"""

    name = "nebuly"

    def __init__(self, *, api_keys: set[str] | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        self.api_keys: set[str] = set(api_keys or ())
        self.interactions: dict[tuple[str, str, str], datetime] = {}
        self._state_lock = threading.Lock()
        super().__init__(host, port)

    def add_interaction(self, end_user: str, input: str, output: str, ended_at: datetime) -> None:
        """Tell the emulator an interaction was sent: feedback on it must be timestamped after ``ended_at``."""
        if ended_at.tzinfo is None:
            raise ValueError("ended_at needs a time zone")
        with self._state_lock:
            self.interactions[(end_user, input, output)] = ended_at

    def reset(self) -> None:
        """Also forget the interactions; the API keys stay."""
        super().reset()
        with self._state_lock:
            self.interactions.clear()

    def throttle_response(self, retry_after: float | None) -> Response:
        return json_response({"detail": "Too Many Requests"}, 429, retry_after_header(retry_after))

    def error_response(self) -> Response:
        return json_response({"detail": "Internal Server Error"}, 500)

    def create_app(self) -> Flask:
        app = Flask(__name__)

        @app.errorhandler(HTTPException)
        def _http_error(exc: HTTPException) -> Response:
            return json_response({"detail": exc.name}, exc.code or 500)

        @app.post(PATH)
        def feedback() -> Response:
            scheme, _, key = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "bearer" or key not in self.api_keys:
                return json_response({"detail": "Invalid API key"}, 401, {"WWW-Authenticate": "Bearer"})
            body = request.get_json(silent=True) if request.mimetype == "application/json" else None
            problems = _check(body)
            if problems:
                detail = [{"loc": ["body", *loc], "msg": msg, "type": kind} for loc, msg, kind in problems]
                return json_response({"detail": detail}, 422)
            problem = self._check_order(body["metadata"])
            if problem:
                return json_response({"detail": problem}, 400)
            return json_response({"status": "received"})

        return app

    def _check_order(self, metadata: dict[str, Any]) -> str | None:
        key = (metadata["end_user"], metadata.get("input"), metadata.get("output"))
        with self._state_lock:
            ended_at = self.interactions.get(key)  # type: ignore[arg-type]
        if ended_at is not None and parse_timestamp(metadata["timestamp"]) <= ended_at:
            return "The feedback timestamp must be after the end of the interaction it refers to"
        return None


def parse_timestamp(value: str) -> datetime:
    """An ISO 8601 timestamp with a zone (``Z`` or an offset), as a UTC datetime."""
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed.astimezone(timezone.utc)


def _check(body: Any) -> list[Problem]:
    if not isinstance(body, dict):
        return [([], "Expected a JSON object (Content-Type: application/json)", "type_error.dict")]
    problems: list[Problem] = [([key], "Extra inputs are not permitted", "extra_forbidden")
                               for key in sorted(set(body) - {"feedback", "metadata"})]
    for key in ("feedback", "metadata"):
        if key not in body:
            problems.append(([key], "Field required", "missing"))
        elif not isinstance(body[key], dict):
            problems.append(([key], "Input should be an object", "dict_type"))
    if problems:
        return problems
    return _check_feedback(body["feedback"]) + _check_metadata(body["metadata"])


def _check_feedback(feedback: dict[str, Any]) -> list[Problem]:
    problems: list[Problem] = [(["feedback", key], "Extra inputs are not permitted", "extra_forbidden")
                               for key in sorted(set(feedback) - _FEEDBACK_KEYS)]
    slug = feedback.get("slug")
    if slug not in SLUGS:
        problems.append((["feedback", "slug"], f"Input should be one of {', '.join(SLUGS)}", "enum"))
        return problems
    value, text = feedback.get("value"), feedback.get("text")
    if "text" in feedback and not isinstance(text, str):
        problems.append((["feedback", "text"], "Input should be a string", "string_type"))
    if slug == "rating":
        if "value" not in feedback:
            problems.append((["feedback", "value"], "A rating needs a value", "missing"))
        elif isinstance(value, bool) or not isinstance(value, (int, float)) \
                or (isinstance(value, float) and not value.is_integer()) or not 1 <= value <= 5:  # NaN, inf too
            problems.append((["feedback", "value"], "Input should be an integer from 1 to 5", "value_error"))
        if "text" in feedback:
            problems.append((["feedback", "text"], "A rating uses value instead of text", "value_error"))
    elif "value" in feedback:
        problems.append((["feedback", "value"], "value is only used with the rating slug", "value_error"))
    if slug in TEXT_SLUGS and not (isinstance(text, str) and text):
        problems.append((["feedback", "text"], f"{slug} needs the copied or pasted text", "missing"))
    return problems


def _check_metadata(metadata: dict[str, Any]) -> list[Problem]:
    problems: list[Problem] = [(["metadata", key], "Extra inputs are not permitted", "extra_forbidden")
                               for key in sorted(set(metadata) - _METADATA_KEYS)]
    for key in ("end_user", "timestamp"):
        if key not in metadata:
            problems.append((["metadata", key], "Field required", "missing"))
    for key in ("input", "output", "end_user", "timestamp"):
        if key in metadata and not isinstance(metadata[key], str):
            problems.append((["metadata", key], "Input should be a string", "string_type"))
    if isinstance(metadata.get("end_user"), str) and not metadata["end_user"].strip():
        problems.append((["metadata", "end_user"], "end_user must not be empty", "value_error"))
    if "anonymize" in metadata and not isinstance(metadata["anonymize"], bool):
        problems.append((["metadata", "anonymize"], "Input should be a valid boolean", "bool_type"))
    timestamp = metadata.get("timestamp")
    if isinstance(timestamp, str):
        try:
            if not _TIMESTAMP.fullmatch(timestamp):
                raise ValueError
            parse_timestamp(timestamp)
        except ValueError:
            problems.append((["metadata", "timestamp"], "Input should be an ISO 8601 datetime with a time zone",
                             "datetime_parsing"))
    return problems


__all__ = ["NebulyEmulator", "parse_timestamp"]
