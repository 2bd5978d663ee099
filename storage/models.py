"""SQLAlchemy 2.0 models. Every table carries `team_id` (the Slack workspace) and every query filters on it."""

from __future__ import annotations

import enum
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    PrimaryKeyConstraint,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

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


class Visibility(enum.StrEnum):
    """Where an item came from: a public channel, a private channel, or a DM / group DM."""

    public = "public"
    private = "private"
    dm = "dm"


class FeedbackKind(enum.StrEnum):
    """What a piece of feedback is."""

    bug = "bug"
    feature_request = "feature_request"
    complaint = "complaint"
    praise = "praise"
    question = "question"


class Importance(enum.StrEnum):
    """How much it matters to the customer."""

    nice_to_have = "nice_to_have"
    important = "important"
    critical = "critical"


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
    account_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id", ondelete="SET NULL"), index=True)
    kind: Mapped[str | None] = mapped_column(String(32))
    importance: Mapped[str | None] = mapped_column(String(16))
    note: Mapped[str | None] = mapped_column(Text)
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    theme: Mapped[str | None] = mapped_column(String(255))
    # Private channel or DM items are shown only where they came from (DESIGN.md, Privacy).
    visibility: Mapped[str] = mapped_column(String(8), default=Visibility.private.value)
    delivery_id: Mapped[str | None] = mapped_column(String(255))
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    account: Mapped[Account | None] = relationship(lazy="joined")
    replies: Mapped[list[FeedbackReply]] = relationship(
        order_by="FeedbackReply.message_ts",
        lazy="selectin",
        cascade="all, delete-orphan",
        passive_deletes=True,
    )

    @property
    def is_private(self) -> bool:
        """True unless the item came from a public channel."""
        return self.visibility != Visibility.public.value

    @property
    def customer(self) -> str | None:
        """The customer's name (export field `customer`)."""
        return self.account.name if self.account else None


class Account(Base):
    """A customer account, with the revenue behind it."""

    __tablename__ = "accounts"
    __table_args__ = (
        UniqueConstraint("team_id", "name_key"),
        UniqueConstraint("team_id", "domain"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    team_id: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(255))
    # Lower-cased, space-collapsed name: "ACME  Corp" and "acme corp" are one account.
    name_key: Mapped[str] = mapped_column(String(255))
    domain: Mapped[str | None] = mapped_column(String(255))
    arr: Mapped[Decimal | None] = mapped_column(Numeric(16, 2))
    segment: Mapped[str | None] = mapped_column(String(64))
    owner_user_id: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class FeedbackTextVersion(Base):
    """A previous text of a feedback item (the message was edited in Slack, or the item in the modal)."""

    __tablename__ = "feedback_text_versions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    team_id: Mapped[str] = mapped_column(String(32))
    feedback_id: Mapped[int] = mapped_column(ForeignKey("feedback_items.id", ondelete="CASCADE"), index=True)
    text: Mapped[str] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(String(32))
    changed_by_user_id: Mapped[str | None] = mapped_column(String(32))
    replaced_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class FeedbackReply(Base):
    """A reply in the thread of a captured message: the item's conversation."""

    __tablename__ = "feedback_replies"
    __table_args__ = (UniqueConstraint("team_id", "feedback_id", "message_ts"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    team_id: Mapped[str] = mapped_column(String(32))
    feedback_id: Mapped[int] = mapped_column(ForeignKey("feedback_items.id", ondelete="CASCADE"), index=True)
    message_ts: Mapped[str] = mapped_column(String(32))
    user_id: Mapped[str | None] = mapped_column(String(32))
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Tag(Base):
    """A tag in a workspace's vocabulary (offered in the capture modal)."""

    __tablename__ = "tags"
    __table_args__ = (UniqueConstraint("team_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    team_id: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class WatchedChannel(Base):
    """A channel whose top-level messages become feedback (opted in by an admin)."""

    __tablename__ = "watched_channels"
    __table_args__ = (PrimaryKeyConstraint("team_id", "channel_id"),)

    team_id: Mapped[str] = mapped_column(String(32))
    channel_id: Mapped[str] = mapped_column(String(32))
    added_by_user_id: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class WorkspaceAdmin(Base):
    """A ProdOps admin added by hand (Slack owners and admins are admins without a row)."""

    __tablename__ = "workspace_admins"
    __table_args__ = (PrimaryKeyConstraint("team_id", "user_id"),)

    team_id: Mapped[str] = mapped_column(String(32))
    user_id: Mapped[str] = mapped_column(String(32))
    added_by_user_id: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
