"""marshmallow schemas for the event API; the OpenAPI document is generated from them."""

from __future__ import annotations

import re
import unicodedata
from typing import Any

from marshmallow import EXCLUDE, RAISE, Schema, ValidationError, fields, validate, validates_schema

from .models import REASONS, TEXT_TYPES, VOTE_TYPES, EventType

MAX_EVENTS = 100
MAX_COMMENT = 1000
MAX_TEXT = 10_000
EVENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{7,63}$")


def _no_control_characters(value: str) -> None:
    bad = next((c for c in value if unicodedata.category(c) == "Cc" and c not in "\n\t"), None)
    if bad is not None:
        raise ValidationError(f"Control character U+{ord(bad):04X} is not allowed (only newline and tab).")


class EventSchema(Schema):
    """One widget event."""

    class Meta:
        unknown = RAISE

    id = fields.String(
        required=True,
        validate=validate.Regexp(EVENT_ID, error="Must be 8-64 characters of letters, digits and ._:- ."),
        metadata={"description": "Client-made idempotency key (a UUID)."},
    )
    type = fields.String(required=True, validate=validate.OneOf([t.value for t in EventType]))
    value = fields.Integer(strict=True, validate=validate.Range(1, 5), metadata={"description": "Rating only."})
    reason = fields.String(validate=validate.OneOf(REASONS), metadata={"description": "Votes and ratings."})
    comment = fields.String(validate=[validate.Length(max=MAX_COMMENT), _no_control_characters])
    text = fields.String(
        validate=validate.Length(1, MAX_TEXT), metadata={"description": "The copied or pasted text."}
    )
    occurred_at = fields.AwareDateTime(format="iso", metadata={"description": "RFC 3339, with an offset."})
    amends = fields.String(
        validate=validate.Regexp(EVENT_ID, error="Must be the id of an earlier vote."),
        metadata={"description": "Id of the vote this adds a reason or comment to."},
    )
    token = fields.String(validate=validate.Length(1, 2048), metadata={"description": "The message token."})
    # Unsigned mode (FEEDBACK_ALLOW_UNSIGNED) names the message inline; with a token they must match it.
    conversation_id = fields.String(validate=validate.Length(1, 256))
    message_id = fields.String(validate=validate.Length(1, 256))
    user_id = fields.String(validate=validate.Length(1, 1024))

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

    events = fields.List(
        fields.Raw(), required=True, validate=validate.Length(1, MAX_EVENTS),
        metadata={"items": {"$ref": "#/components/schemas/Event"}},
    )


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

    token = fields.String(required=True, validate=validate.Length(1, 2048))


class HealthSchema(Schema):
    status = fields.String(required=True)
    database = fields.String(required=True)
    providers = fields.List(fields.String(), required=True)
