"""The database tables, in SQLAlchemy Core. One schema for SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.sqlite import DATETIME as SQLITE_DATETIME

_KEPT_TEXTS = 64  # a batch's distinct datetimes, with room for other threads'
_texts: dict[datetime, str] = {}  # UTC datetimes -> their text, of the last few converted


def _sqlite_text(value: datetime | None) -> str | None:
    """SQLAlchemy's stored text, by the C isoformat, in one call where the decorator's would be three (itself,
    process_bind_param, the impl's).

    A request binds a few datetime objects many times, in several statements and columns (when it was received,
    when its deliveries fall due, when each event occurred): the text of each UTC one is kept, for every column and
    statement alike, and found by one dict lookup. Only UTC datetimes are kept: two equal ones are the same instant,
    so they have the same text (datetimes of another zone can compare equal across a fold while their instants
    differ). A lookup racing another thread's clear() is a miss, never a wrong text."""
    text = _texts.get(value)  # type: ignore[arg-type]  # None, or a naive datetime, is never a key
    if text is not None:
        return text
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("naive datetime given to a UTC column")
    text = value.astimezone(timezone.utc).replace(tzinfo=None).isoformat(" ", "microseconds")
    if value.tzinfo is timezone.utc:
        if len(_texts) >= _KEPT_TEXTS:
            _texts.clear()
        _texts[value] = text
    return text


def _sqlite_datetime(value: str | None) -> datetime | None:
    """A stored text as an aware UTC datetime, by the C ``fromisoformat``, in one call where the decorator's would
    be three, and SQLAlchemy's own a %-format and a regular expression (a sixth of a batch's CPU once)."""
    if value is None:
        return None
    parsed = datetime.fromisoformat(value)
    return parsed.replace(tzinfo=timezone.utc) if parsed.tzinfo is None else parsed.astimezone(timezone.utc)


class UTCDateTime(TypeDecorator):
    """Aware UTC datetimes in, aware UTC datetimes out, whatever the backend stores."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect):
        if dialect.name == "sqlite":
            return dialect.type_descriptor(SQLITE_DATETIME())
        return super().load_dialect_impl(dialect)

    def bind_processor(self, dialect):
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)
        return _sqlite_text

    def result_processor(self, dialect, coltype):
        if dialect.name != "sqlite":
            return super().result_processor(dialect, coltype)
        return _sqlite_datetime

    def process_bind_param(self, value: datetime | None, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


# SQLite only auto-increments a column declared exactly INTEGER PRIMARY KEY.
Id = BigInteger().with_variant(Integer(), "sqlite")
Json = JSON().with_variant(JSONB(), "postgresql")

metadata = MetaData()

messages = Table(
    "feedback_messages",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("conversation_id", String(256), nullable=False),
    Column("message_id", String(256), nullable=False),
    Column("user_id", String(1024), nullable=False),
    Column("input", Text),
    Column("output", Text),
    Column("refs", Json, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("conversation_id", "message_id", name="uq_feedback_messages_ids"),
    Index("ix_feedback_messages_user", "user_id"),
    Index("ix_feedback_messages_created", "created_at"),  # the dashboard's answers per time window
)

events = Table(
    "feedback_events",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("event_id", String(64), nullable=False, unique=True),
    Column("message_pk", Id, ForeignKey(messages.c.id, ondelete="CASCADE"), nullable=False),
    Column("user_id", String(1024), nullable=False),
    Column("type", String(16), nullable=False),
    Column("value", SmallInteger),
    Column("reason", String(40)),
    Column("comment", Text),
    Column("text", Text),
    Column("amends", String(64)),
    Column("occurred_at", UTCDateTime, nullable=False),
    Column("received_at", UTCDateTime, nullable=False),
    Index("ix_feedback_events_message_user", "message_pk", "user_id"),
    Index("ix_feedback_events_received", "received_at"),
    Index("ix_feedback_events_amends", "amends"),
    # The dashboard: its overview counts ranges of these (no sort, no table access), and its list pages one
    # user's events newest first.
    Index("ix_feedback_events_kind_received", "type", "value", "received_at", "amends"),
    Index("ix_feedback_events_reason_received", "reason", "received_at"),
    Index("ix_feedback_events_user_received", "user_id", "received_at"),
)

states = Table(
    "feedback_states",
    metadata,
    Column("message_pk", Id, ForeignKey(messages.c.id, ondelete="CASCADE"), primary_key=True),
    Column("user_id", String(1024), primary_key=True),
    Column("vote", String(4)),
    Column("vote_event_id", String(64)),
    Column("rating", SmallInteger),
    Column("reason", String(40)),
    Column("comment", Text),
    Column("copied_at", UTCDateTime),
    Column("copy_count", Integer, nullable=False, default=0),
    Column("updated_at", UTCDateTime),
    Index("ix_feedback_states_copied", "copied_at"),  # the dashboard's copy rate
)

outbox = Table(
    "feedback_outbox",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("provider", String(64), nullable=False),
    Column("kind", String(8), nullable=False),  # "state" or "event"
    Column("message_pk", Id, ForeignKey(messages.c.id, ondelete="CASCADE"), nullable=False),
    Column("user_id", String(1024), nullable=False),
    Column("event_pk", Id, ForeignKey(events.c.id, ondelete="CASCADE")),
    Column("status", String(16), nullable=False),
    # Set while a state row is pending and unclaimed: the unique index makes later changes of the
    # same (provider, message, user) join this row instead of adding another (the settle window).
    Column("coalesce_key", String(1200), unique=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UTCDateTime, nullable=False),
    Column("lease_until", UTCDateTime),
    Column("lease_owner", String(128)),
    Column("last_error", Text),
    Column("request", Json),
    Column("response", Json),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("delivered_at", UTCDateTime),
    Index("ix_feedback_outbox_due", "status", "next_attempt_at"),
    # The claim's "an older row of this (provider, message, user) is unfinished" seeks on all four columns: with
    # only the first three it read every finished row of the key (650 ms under SQLite's write lock at an 18,000-row
    # backlog, against ~100 ms).
    Index("ix_feedback_outbox_key_status", "provider", "message_pk", "user_id", "status"),
    Index("ix_feedback_outbox_event", "event_pk"),
    Index("ix_feedback_outbox_health", "provider", "status", "created_at"),  # the dashboard's delivery health
)

# The dashboard's overview counts of closed UTC days (daily.py): a day's events and answers never change
# once the day is over, except by a purge, which empties this table.
daily_counts = Table(
    "feedback_daily_counts",
    metadata,
    Column("day", Date, primary_key=True),
    Column("counts", Json, nullable=False),
    Column("computed_at", UTCDateTime, nullable=False),
)
