"""SQLAlchemy 2.0 models. Every table carries `team_id` (the Slack workspace) and every query filters on it."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Index, Integer, MetaData, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from storage.types import UTCDateTime, utcnow

# Deterministic constraint names so Alembic migrations are identical on SQLite and Postgres.
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base with the project's naming convention."""

    metadata = MetaData(naming_convention=NAMING)


class FeedbackSource(enum.StrEnum):
    """How a feedback item was captured (contract: export field `source`)."""

    reaction = "reaction"
    shortcut = "shortcut"
    command = "command"
    channel = "channel"


class InboxStatus(enum.StrEnum):
    """Lifecycle of a delivery from Slack in the inbox."""

    pending = "pending"  # recorded, being handled (lease running)
    done = "done"  # handled
    failed = "failed"  # handler raised; retried by the sweeper until max attempts
    ignored = "ignored"  # no listener wanted it
    dead = "dead"  # gave up after max attempts


class Workspace(Base):
    """A Slack workspace that uses the bot, with its per-workspace settings."""

    __tablename__ = "workspaces"

    team_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(255))
    feedback_emoji: Mapped[str] = mapped_column(String(100), default="bulb")
    request_emoji: Mapped[str] = mapped_column(String(100), default="ticket")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class InboxEvent(Base):
    """One delivery from Slack (event, command, interaction), recorded before it has any effect."""

    __tablename__ = "inbox_events"
    __table_args__ = (
        UniqueConstraint("team_id", "delivery_id"),
        Index(None, "status", "lease_until"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    team_id: Mapped[str] = mapped_column(String(32))
    delivery_id: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(64))
    body: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default=InboxStatus.pending.value)
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    lease_until: Mapped[datetime] = mapped_column(UTCDateTime())
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(Text)


class FeedbackItem(Base):
    """A piece of customer feedback captured from Slack."""

    __tablename__ = "feedback_items"
    __table_args__ = (
        # One item per Slack message; NULL message_ts (typed with /feedback) never collides.
        UniqueConstraint("team_id", "channel_id", "message_ts"),
        # The Slack delivery (command, submission) that created it, so a replayed delivery never adds a second.
        UniqueConstraint("team_id", "delivery_id"),
        Index(None, "team_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    team_id: Mapped[str] = mapped_column(String(32))
    channel_id: Mapped[str] = mapped_column(String(32))
    message_ts: Mapped[str | None] = mapped_column(String(32))
    thread_ts: Mapped[str | None] = mapped_column(String(32))
    permalink: Mapped[str | None] = mapped_column(String(1024))
    text: Mapped[str] = mapped_column(Text)
    author_user_id: Mapped[str | None] = mapped_column(String(32))
    captured_by_user_id: Mapped[str] = mapped_column(String(32))
    source: Mapped[str] = mapped_column(String(16))
    customer: Mapped[str | None] = mapped_column(String(255))
    kind: Mapped[str | None] = mapped_column(String(32))
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    theme: Mapped[str | None] = mapped_column(String(255))
    # Captured in a private channel or DM: shown only where it came from (DESIGN.md, Privacy).
    is_private: Mapped[bool] = mapped_column(Boolean, default=True)
    delivery_id: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
