"""The dashboard's query string: filters for the list and the export, the overview's window, the cursor."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import click
from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate

from ..cli import IsoDateTime
from ..maintenance import ExportFilter
from ..models import REASONS, DeliveryStatus
from . import queries

WINDOWS = (7, 30, 90)  # days the overview offers
DEFAULT_WINDOW = 30


class _When(fields.Field):
    """An ISO 8601 date or date-time (what ``<input type=date>`` sends); UTC when it has no offset.
    ``inclusive_date``: a bare date as an upper bound means the end of that day."""

    def __init__(self, *, inclusive_date: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.inclusive_date = inclusive_date

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> datetime:
        try:
            moment = IsoDateTime().convert(value, None, None)
        except click.BadParameter as exc:
            raise ValidationError(exc.message) from None
        bare_date = isinstance(value, str) and len(value.strip()) == 10
        return moment + timedelta(days=1) if self.inclusive_date and bare_date else moment


class _Cursor(fields.String):
    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> tuple[datetime, int]:
        try:
            return queries.decode_cursor(super()._deserialize(value, attr, data, **kwargs))
        except (ValueError, OverflowError):
            raise ValidationError("Not a page cursor of this list.") from None


class FilterSchema(Schema):
    class Meta:
        unknown = EXCLUDE  # e.g. ``retried`` after a retry

    days = fields.Integer(validate=validate.Range(1, 3660))
    since = _When()
    until = _When(inclusive_date=True)
    vote = fields.String(validate=validate.OneOf(["up", "down"]))
    rating = fields.Integer(validate=validate.Range(1, 5))
    reason = fields.String(validate=validate.OneOf(REASONS))
    provider = fields.String(validate=validate.Length(1, 64))
    status = fields.String(validate=validate.OneOf([s.value for s in DeliveryStatus]))
    user = fields.String(validate=validate.Length(1, 1024))
    conversation = fields.String(validate=validate.Length(1, 256))
    before = _Cursor()
    format = fields.String(validate=validate.OneOf(["csv", "jsonl"]))


_schema = FilterSchema()


def parse(args: Any) -> dict[str, Any]:
    """The query string, empty fields dropped (a submitted form sends them); raises ValidationError."""
    return _schema.load({key: value for key, value in args.items() if value.strip()})


def export_filter(params: dict[str, Any], now: datetime) -> ExportFilter:
    since = params.get("since")
    if since is None and "days" in params:
        since = now - timedelta(days=params["days"])
    return ExportFilter(
        since=since, until=params.get("until"), user_id=params.get("user"),
        conversation_id=params.get("conversation"), vote=params.get("vote"), rating=params.get("rating"),
        reason=params.get("reason"), provider=params.get("provider"), status=params.get("status"),
    )
