"""marshmallow schemas for the event API; the OpenAPI document is generated from them."""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime, timezone
from typing import Any

from marshmallow import EXCLUDE, RAISE, Schema, ValidationError, fields, validate, validates_schema

from .models import REASONS, TEXT_TYPES, VOTE_TYPES, EventType

MAX_EVENTS = 100
MAX_COMMENT = 1000
MAX_TEXT = 10_000
# A token carries the user id (up to 1024 characters, JSON-escaped when not ASCII): measured tokens stay under
# 4.5 kB for any user id register_message accepts, so this keeps every token it issues usable.
MAX_TOKEN = 8192
EVENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{7,63}$")
# RFC 3339 section 5.6 `date-time`, with its time-offset required ("T" and "Z" may be lower case).
RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?(?:Z|[+-][0-9]{2}:[0-9]{2})", re.IGNORECASE
)


class _FullMatch(validate.Regexp):
    """``Regexp`` matching the whole value: ``$`` alone would let a trailing newline through."""

    def __call__(self, value: str) -> str:
        if self.regex.fullmatch(value) is None:
            raise ValidationError(self._format_error(value))
        return value


def _storable(value: str) -> None:
    """Text both databases can store: no NUL (PostgreSQL refuses it) and no lone surrogate (not UTF-8)."""
    if "\x00" in value:
        raise ValidationError("The NUL character U+0000 is not allowed.")
    if any(unicodedata.category(c) == "Cs" for c in value):
        raise ValidationError("Lone surrogate code points are not valid Unicode text.")


def _no_control_characters(value: str) -> None:
    _storable(value)
    bad = next((c for c in value if unicodedata.category(c) == "Cc" and c not in "\n\t"), None)
    if bad is not None:
        raise ValidationError(f"Control character U+{ord(bad):04X} is not allowed (only newline and tab).")


class RFC3339DateTime(fields.AwareDateTime):
    """An RFC 3339 date-time with an offset; ISO 8601 forms outside RFC 3339 are refused."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> datetime:
        if not isinstance(value, str) or RFC3339.fullmatch(value) is None:
            raise ValidationError("Not an RFC 3339 date-time with an offset, e.g. 2025-01-31T09:30:00Z.")
        parsed = super()._deserialize(value.upper(), attr, data, **kwargs)
        try:
            parsed.astimezone(timezone.utc)
        except OverflowError:
            raise ValidationError("The date-time is out of range.") from None
        return parsed


class EventSchema(Schema):
    """One widget event."""

    class Meta:
        unknown = RAISE

    id = fields.String(
        required=True,
        validate=_FullMatch(EVENT_ID, error="Must be 8-64 characters of letters, digits and ._:- ."),
        metadata={"description": "Client-made idempotency key (a UUID)."},
    )
    type = fields.String(required=True, validate=validate.OneOf([t.value for t in EventType]))
    value = fields.Integer(strict=True, validate=validate.Range(1, 5), metadata={"description": "Rating only."})
    reason = fields.String(validate=validate.OneOf(REASONS), metadata={"description": "Votes and ratings."})
    comment = fields.String(validate=[validate.Length(max=MAX_COMMENT), _no_control_characters])
    text = fields.String(
        validate=[validate.Length(1, MAX_TEXT), _storable], metadata={"description": "The copied or pasted text."}
    )
    occurred_at = RFC3339DateTime(format="iso", metadata={"description": "RFC 3339, with an offset."})
    amends = fields.String(
        validate=_FullMatch(EVENT_ID, error="Must be the id of an earlier vote."),
        metadata={"description": "Id of the vote this adds a reason or comment to."},
    )
    token = fields.String(validate=validate.Length(1, MAX_TOKEN), metadata={"description": "The message token."})
    # Unsigned mode (FEEDBACK_ALLOW_UNSIGNED) names the message inline; with a token they must match it.
    conversation_id = fields.String(validate=[validate.Length(1, 256), _storable])
    message_id = fields.String(validate=[validate.Length(1, 256), _storable])
    user_id = fields.String(validate=[validate.Length(1, 1024), _storable])

    @validates_schema(skip_on_field_errors=True)
    def _fields_fit_the_type(self, data: dict[str, Any], **_: Any) -> None:
        kind = EventType(data["type"])
        errors: dict[str, list[str]] = {}
        if kind is EventType.RATING and "value" not in data:
            errors["value"] = ["Required for a rating."]
        if kind is not EventType.RATING and "value" in data:
            errors["value"] = ["Only a rating has a value."]
        for name in ("reason", "comment", "amends"):
            if name in data and kind not in VOTE_TYPES:
                errors[name] = [f"Only thumbs_up, thumbs_down and rating take a {name}."]
        if kind in TEXT_TYPES and "text" not in data:
            errors["text"] = [f"Required for {kind.value}."]
        if kind not in TEXT_TYPES and "text" in data:
            errors["text"] = ["Only copy_output, copy_input and paste carry text."]
        if "amends" in data and "reason" not in data and "comment" not in data:
            errors["amends"] = ["An amendment adds a reason or a comment; give at least one."]
        if errors:
            raise ValidationError(errors)


class EnvelopeSchema(Schema):
    """The body of ``POST /events``. Each event is validated on its own, so one bad event loses no other."""

    class Meta:
        unknown = RAISE

    # A null event is rejected on its own like any other non-object, not with the whole batch.
    events = fields.List(fields.Raw(allow_none=True), required=True, validate=validate.Length(1, MAX_EVENTS))


class OutcomeSchema(Schema):
    id = fields.String(allow_none=True, required=True)
    status = fields.String(required=True, validate=validate.OneOf(["accepted", "duplicate", "rejected"]))
    code = fields.String(metadata={"description": "invalid, token_missing, token_invalid, token_expired, "
                                                  "token_mismatch or message_unknown."})
    errors = fields.Dict(keys=fields.String(), values=fields.Raw())


class EventsResponseSchema(Schema):
    results = fields.List(fields.Nested(OutcomeSchema), required=True)
    accepted = fields.Integer(required=True)
    duplicate = fields.Integer(required=True)
    rejected = fields.Integer(required=True)
    errors = fields.Dict(keys=fields.String(), values=fields.Raw())


class ErrorSchema(Schema):
    errors = fields.Dict(keys=fields.String(), values=fields.Raw(), required=True)
    code = fields.String()


class StateSchema(Schema):
    vote = fields.String(allow_none=True, required=True, validate=validate.OneOf(["up", "down"]))
    rating = fields.Integer(allow_none=True, required=True)
    reason = fields.String(allow_none=True, required=True)
    comment = fields.String(allow_none=True, required=True)
    copied = fields.Boolean(required=True)


class StateQuerySchema(Schema):
    class Meta:
        unknown = EXCLUDE

    token = fields.String(required=True, validate=validate.Length(1, MAX_TOKEN))


class HealthSchema(Schema):
    status = fields.String(required=True)
    database = fields.String(required=True)
    providers = fields.List(fields.String(), required=True)
