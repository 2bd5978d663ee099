"""SQLAlchemy 2.0 models. Every table carries `team_id` (the Slack workspace) and every query filters on it."""

from __future__ import annotations

import enum
from datetime import datetime
from decimal import Decimal
from typing import Any

from slack_sdk.oauth.installation_store.sqlalchemy import SQLAlchemyInstallationStore
from slack_sdk.oauth.state_store.sqlalchemy import SQLAlchemyOAuthStateStore
from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
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

    queued = "queued"  # recorded, waiting for a worker (from `available_at`)
    pending = "pending"  # claimed, being handled (lease running; taken over when it runs out)
    done = "done"  # handled
    failed = "failed"  # handler raised (interactive deliveries); retried by a worker until max attempts
    ignored = "ignored"  # no listener wanted it
    dead = "dead"  # gave up after max attempts


class Workspace(Base):
    """A Slack workspace that uses the bot, with its per-workspace settings."""

    __tablename__ = "workspaces"

    team_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(255))
    feedback_emoji: Mapped[str] = mapped_column(String(100), default="bulb")
    request_emoji: Mapped[str] = mapped_column(String(100), default="ticket")
    # Duplicate suggestion bands (similarity 0..1); NULL means the similarity backend's default.
    duplicate_link_threshold: Mapped[float | None] = mapped_column(Float)
    duplicate_ask_threshold: Mapped[float | None] = mapped_column(Float)
    # Bumped on every theme decision (assign, move, merge, rename) so each process's index can refresh.
    insights_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Data retention: feedback and requests older than this many days are purged by the worker (NULL: keep).
    retention_days: Mapped[int | None] = mapped_column(Integer)
    # Set when the app is uninstalled or its tokens revoked; the data is purged after `purge_after`.
    uninstalled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    purge_after: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class InboxEvent(Base):
    """One delivery from Slack (event, command, interaction), recorded before it has any effect."""

    __tablename__ = "inbox_events"
    __table_args__ = (
        UniqueConstraint("team_id", "delivery_id"),
        Index(None, "status", "lease_until"),
        Index(None, "status", "available_at"),
        Index(None, "order_key", "id"),
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
    # When a queued delivery may be claimed (now, or later after a failed attempt's backoff).
    available_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Deliveries with the same key run one at a time, in arrival order (a message, then its edit or reply).
    order_key: Mapped[str | None] = mapped_column(String(255))
    claimed_by: Mapped[str | None] = mapped_column(String(64))  # the worker holding the lease


class InsightTask(Base):
    """Insights still to run for a captured item (vector, theme, duplicate), and where to show the outcome.

    Capture writes it with the item; workers encode pending tasks in batches and update the confirmation.
    """

    __tablename__ = "insight_tasks"
    __table_args__ = (
        UniqueConstraint("team_id", "item_id"),
        Index(None, "status", "available_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    team_id: Mapped[str] = mapped_column(String(32))
    item_id: Mapped[int] = mapped_column(ForeignKey("feedback_items.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16), default="queued")  # queued | pending | done | dead
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    available_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # thread: update the confirmation at (channel_id, message_ts); private: ephemeral to user_id in channel_id
    # (a DM when the bot cannot post there); silent: link above the link band, show nothing.
    mode: Mapped[str] = mapped_column(String(16), default="silent")
    channel_id: Mapped[str | None] = mapped_column(String(32))
    message_ts: Mapped[str | None] = mapped_column(String(32))
    user_id: Mapped[str | None] = mapped_column(String(32))
    emoji: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
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
    # The item's theme; `theme_source` "human" means a person put it there and no job will move it.
    theme_id: Mapped[int | None] = mapped_column(ForeignKey("themes.id", ondelete="SET NULL"), index=True)
    theme_source: Mapped[str | None] = mapped_column(String(8))  # auto|human
    theme_similarity: Mapped[float | None] = mapped_column(Float)
    # A duplicate points at the item it repeats (the canonical one); `duplicate_similarity` is the score.
    duplicate_of_id: Mapped[int | None] = mapped_column(
        ForeignKey("feedback_items.id", ondelete="SET NULL"), index=True
    )
    duplicate_similarity: Mapped[float | None] = mapped_column(Float)
    # Private channel or DM items are shown only where they came from (README, How it works: Privacy).
    visibility: Mapped[str] = mapped_column(String(8), default=Visibility.private.value)
    delivery_id: Mapped[str | None] = mapped_column(String(255))
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    account: Mapped[Account | None] = relationship(lazy="joined")
    theme: Mapped[Theme | None] = relationship(lazy="joined", foreign_keys=[theme_id])
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


class RequestStatus(enum.StrEnum):
    """Lifecycle of a process request: new → in_progress ⇄ waiting → done | declined (and reopen)."""

    new = "new"
    in_progress = "in_progress"
    waiting = "waiting"
    done = "done"
    declined = "declined"


class RequestPriority(enum.StrEnum):
    """How urgent a request is; each has its own SLA targets."""

    urgent = "urgent"
    high = "high"
    normal = "normal"
    low = "low"


class RequestType(Base):
    """A kind of request, with its triage channel, owners, extra fields, SLA targets and calendar."""

    __tablename__ = "request_types"
    __table_args__ = (UniqueConstraint("team_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    team_id: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str | None] = mapped_column(Text)
    triage_channel_id: Mapped[str | None] = mapped_column(String(32))
    owners: Mapped[list[str]] = mapped_column(JSON, default=list)
    # [{"key", "label", "kind": text|select|date|user, "required", "options"}]
    fields: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    default_priority: Mapped[str] = mapped_column(String(16), default=RequestPriority.normal.value)
    # {"urgent": {"first_response_minutes": 30, "resolution_minutes": 240}, ...}
    sla: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # {"timezone": "Europe/London", "working_days": [0,1,2,3,4], "start": "09:00", "end": "17:00", "holidays": []}
    calendar: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)
    archived_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class Request(Base):
    """A tracked request: who asked, who owns it, where it stands, and its SLA clock."""

    __tablename__ = "requests"
    __table_args__ = (
        UniqueConstraint("team_id", "channel_id", "message_ts"),
        UniqueConstraint("team_id", "delivery_id"),
        Index(None, "team_id", "status", "due_at"),
        # Period queries (stats, digests): opened, responded and resolved in [start, end).
        Index(None, "team_id", "created_at"),
        Index(None, "team_id", "first_response_at"),
        Index(None, "team_id", "resolved_at"),
        # The SLA tick reads only requests whose next reminder or breach has come: one index range.
        Index(None, "sla_next_check_at"),
        # Replies in these threads count as first responses.
        Index(None, "triage_channel_id", "triage_ts"),
        Index(None, "reply_channel_id", "reply_thread_ts"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    team_id: Mapped[str] = mapped_column(String(32))
    type_id: Mapped[int] = mapped_column(ForeignKey("request_types.id"), index=True)
    title: Mapped[str] = mapped_column(String(255))
    details: Mapped[str | None] = mapped_column(Text)
    field_values: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    priority: Mapped[str] = mapped_column(String(16), default=RequestPriority.normal.value)
    status: Mapped[str] = mapped_column(String(16), default=RequestStatus.new.value)
    requester_user_id: Mapped[str] = mapped_column(String(32))
    assignee_user_id: Mapped[str | None] = mapped_column(String(32))
    # Where it was asked (contract: channel_id, message_ts) and where the requester is told of changes.
    channel_id: Mapped[str] = mapped_column(String(32))
    message_ts: Mapped[str | None] = mapped_column(String(32))
    permalink: Mapped[str | None] = mapped_column(String(1024))
    reply_channel_id: Mapped[str | None] = mapped_column(String(32))
    reply_thread_ts: Mapped[str | None] = mapped_column(String(32))
    triage_channel_id: Mapped[str | None] = mapped_column(String(32))
    triage_ts: Mapped[str | None] = mapped_column(String(32))
    source: Mapped[str] = mapped_column(String(16))
    delivery_id: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    first_response_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    waiting_since: Mapped[datetime | None] = mapped_column(UTCDateTime())
    first_response_due_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    first_response_remind_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    due_at: Mapped[datetime | None] = mapped_column(UTCDateTime())  # resolution due (contract: due_at)
    resolution_remind_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    first_response_escalated_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    resolution_escalated_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The earliest pending reminder or escalation (None: nothing pending), kept by the service.
    sla_next_check_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    type: Mapped[RequestType] = relationship(lazy="joined")


class RequestEvent(Base):
    """One change to a request: who, when, what, from, to."""

    __tablename__ = "request_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    team_id: Mapped[str] = mapped_column(String(32))
    request_id: Mapped[int] = mapped_column(ForeignKey("requests.id", ondelete="CASCADE"), index=True)
    actor_user_id: Mapped[str | None] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(32))
    from_value: Mapped[str | None] = mapped_column(String(255))
    to_value: Mapped[str | None] = mapped_column(String(255))
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class SlaNotice(Base):
    """A reminder or escalation for one request and target: claimed once, then marked sent."""

    __tablename__ = "sla_notices"
    __table_args__ = (
        UniqueConstraint("team_id", "request_id", "target", "kind"),
        # Only unsent claims are looked up (retries after a worker died): a tiny partial index.
        Index(
            "ix_sla_notices_unsent",
            "claimed_at",
            sqlite_where=text("sent_at IS NULL"),
            postgresql_where=text("sent_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    team_id: Mapped[str] = mapped_column(String(32))
    request_id: Mapped[int] = mapped_column(ForeignKey("requests.id", ondelete="CASCADE"), index=True)
    target: Mapped[str] = mapped_column(String(16))  # first_response | resolution
    kind: Mapped[str] = mapped_column(String(16))  # reminder | escalation
    claimed_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Metric(Base):
    """A product metric: what it means, where its numbers come from, and when to pull them."""

    __tablename__ = "metrics"
    __table_args__ = (UniqueConstraint("team_id", "key"), Index(None, "next_run_at"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    team_id: Mapped[str] = mapped_column(String(32))
    key: Mapped[str] = mapped_column(String(64))  # slug, e.g. weekly_active_accounts
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    unit: Mapped[str] = mapped_column(String(16))  # count|percent|currency|duration|ratio
    direction: Mapped[str] = mapped_column(String(16))  # up_is_good|down_is_good
    target: Mapped[float | None] = mapped_column(Float)
    summary: Mapped[str] = mapped_column(String(8))  # last|sum|avg|max|min — how a period is summarised
    period: Mapped[str] = mapped_column(String(8), default="week")  # day|week|month — the default period
    owner_user_id: Mapped[str | None] = mapped_column(String(32))
    source: Mapped[str] = mapped_column(String(16))  # manual|push|sql|builtin
    # sql: {"datasource": "WAREHOUSE", "query": "..."}; builtin: {"name": "feedback_items", "params": {...}}
    source_config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    schedule_cron: Mapped[str | None] = mapped_column(String(100))
    schedule_timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    # When the worker next pulls it; claimed with a conditional update so only one worker runs it.
    next_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(Text)
    archived_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class MetricPoint(Base):
    """One value of a metric at one time; a repeated (metric, ts) replaces the value."""

    __tablename__ = "metric_points"
    __table_args__ = (UniqueConstraint("metric_id", "ts"),)  # also the index for range queries

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    team_id: Mapped[str] = mapped_column(String(32))
    metric_id: Mapped[int] = mapped_column(ForeignKey("metrics.id", ondelete="CASCADE"))
    ts: Mapped[datetime] = mapped_column(UTCDateTime())
    value: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class MetricAlert(Base):
    """An alert rule on a metric: threshold, change vs the previous period, or anomaly."""

    __tablename__ = "metric_alerts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    team_id: Mapped[str] = mapped_column(String(32))
    metric_id: Mapped[int] = mapped_column(ForeignKey("metrics.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # above|below|change|anomaly
    threshold: Mapped[float | None] = mapped_column(Float)  # above/below: the line; change: percent
    window: Mapped[int | None] = mapped_column(Integer)  # anomaly: trailing periods
    k: Mapped[float | None] = mapped_column(Float)  # anomaly: standard deviations
    channel_id: Mapped[str] = mapped_column(String(32))
    cooldown_minutes: Mapped[int] = mapped_column(Integer, default=1440)
    last_fired_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_by_user_id: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class MetricAlertEvent(Base):
    """An alert evaluated for one point: the unique row is the claim, so each point alerts at most once."""

    __tablename__ = "metric_alert_events"
    __table_args__ = (UniqueConstraint("alert_id", "point_ts"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    team_id: Mapped[str] = mapped_column(String(32))
    alert_id: Mapped[int] = mapped_column(ForeignKey("metric_alerts.id", ondelete="CASCADE"))
    point_ts: Mapped[datetime] = mapped_column(UTCDateTime())
    value: Mapped[float] = mapped_column(Float)
    # False: evaluated, but the rule was not met or the alert was cooling down.
    fired: Mapped[bool] = mapped_column(Boolean, default=False)
    message_ts: Mapped[str | None] = mapped_column(String(32))
    evaluated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ApiToken(Base):
    """A push-API token for one workspace: only its hash is kept; shown once when created."""

    __tablename__ = "api_tokens"
    __table_args__ = (UniqueConstraint("token_hash"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    team_id: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(64))  # sha256 hex
    prefix: Mapped[str] = mapped_column(String(16))  # the first characters, to recognise it in lists
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class DigestSubscription(Base):
    """A channel's scheduled digest: when, in which timezone, and which sections."""

    __tablename__ = "digest_subscriptions"
    __table_args__ = (Index(None, "next_run_at"), Index(None, "team_id", "channel_id"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    team_id: Mapped[str] = mapped_column(String(32))
    channel_id: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(100), default="Product Ops digest")
    cadence: Mapped[str] = mapped_column(String(16))  # daily|weekly|monthly|cron
    cron: Mapped[str] = mapped_column(String(100))  # always set: cadences are stored as their cron
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    # {"metrics": {"keys": [...]}, "feedback": {"top": 5, "by": "count"|"arr"}, "requests": {"types": [...]}}
    sections: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    skip_if_empty: Mapped[bool] = mapped_column(Boolean, default=False)
    created_by_user_id: Mapped[str] = mapped_column(String(32))
    # The end of the next period to send; claimed with a conditional update (exactly once per period).
    next_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_period_end: Mapped[datetime | None] = mapped_column(UTCDateTime())
    paused_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    paused_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class DigestOutbox(Base):
    """A rendered digest waiting to be delivered: one row per subscription and period, sent at most once."""

    __tablename__ = "digest_outbox"
    __table_args__ = (
        UniqueConstraint("subscription_id", "period_key"),
        Index(None, "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    team_id: Mapped[str] = mapped_column(String(32))
    subscription_id: Mapped[int] = mapped_column(ForeignKey("digest_subscriptions.id", ondelete="CASCADE"))
    period_key: Mapped[str] = mapped_column(String(64))  # e.g. 2026-11-23..2026-11-30
    channel_id: Mapped[str] = mapped_column(String(32))
    text: Mapped[str] = mapped_column(Text)
    blocks: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    chart_png: Mapped[bytes | None] = mapped_column(LargeBinary)
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending|sending|sent|failed|skipped
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    message_ts: Mapped[str | None] = mapped_column(String(32))
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class SlackOutbox(Base):
    """A Slack message to post exactly once (metric alerts, SLA notices, account briefs): see bot/outbox.py.

    `idempotency_key` names what the message is for (e.g. ``alert-event:42``): writing the same one twice
    fails on the unique constraint, so a message is queued once whoever queues it.
    """

    __tablename__ = "slack_outbox"
    __table_args__ = (
        UniqueConstraint("team_id", "idempotency_key"),
        Index(None, "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    team_id: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(16))  # alert|sla|brief
    idempotency_key: Mapped[str] = mapped_column(String(255))
    channel_id: Mapped[str] = mapped_column(String(32))  # a channel, or a user id for a DM
    thread_ts: Mapped[str | None] = mapped_column(String(32))
    text: Mapped[str] = mapped_column(Text)
    blocks: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    chart_png: Mapped[bytes | None] = mapped_column(LargeBinary)  # uploaded into the message's thread
    chart_name: Mapped[str | None] = mapped_column(String(255))  # the file's name, e.g. signups.png
    chart_title: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending|sending|sent|failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    message_ts: Mapped[str | None] = mapped_column(String(32))
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class ThemeStatus(enum.StrEnum):
    proposed = "proposed"  # suggested by the clustering job, waiting for a person
    active = "active"  # accepted (or created by a person); new items are assigned to it
    merged = "merged"  # folded into `merged_into_id`
    dismissed = "dismissed"  # a proposal a person turned down


class Theme(Base):
    """A named group of feedback items. Names and memberships set by a person are never overwritten."""

    __tablename__ = "themes"
    __table_args__ = (Index(None, "team_id", "status"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    team_id: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default=ThemeStatus.proposed.value)
    keywords: Mapped[list[str]] = mapped_column(JSON, default=list)
    name_source: Mapped[str] = mapped_column(String(8), default="job")  # job|human
    created_by_user_id: Mapped[str | None] = mapped_column(String(32))  # NULL: proposed by the job
    merged_into_id: Mapped[int | None] = mapped_column(ForeignKey("themes.id", ondelete="SET NULL"))
    shipped_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class FeedbackVector(Base):
    """An item's text as a vector of the workspace's similarity model (`model_version` says which fit)."""

    __tablename__ = "feedback_vectors"
    __table_args__ = (Index(None, "team_id", "model_version"),)

    feedback_id: Mapped[int] = mapped_column(
        ForeignKey("feedback_items.id", ondelete="CASCADE"), primary_key=True
    )
    team_id: Mapped[str] = mapped_column(String(32))
    model_version: Mapped[int] = mapped_column(Integer)
    vector: Mapped[bytes] = mapped_column(LargeBinary)  # float32, L2-normalised
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class SimilarityModel(Base):
    """A workspace's fitted similarity model (no pickles: arrays and JSON only)."""

    __tablename__ = "similarity_models"
    __table_args__ = (UniqueConstraint("team_id", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    team_id: Mapped[str] = mapped_column(String(32))
    version: Mapped[int] = mapped_column(Integer)
    backend: Mapped[str] = mapped_column(String(100))  # e.g. tfidf, embeddings:all-MiniLM-L6-v2
    state: Mapped[bytes | None] = mapped_column(LargeBinary)  # the backend's fitted state (npz), if any
    item_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class DuplicateSuggestion(Base):
    """A duplicate found at capture: linked automatically (undoable) or asked about in the thread."""

    __tablename__ = "duplicate_suggestions"
    __table_args__ = (UniqueConstraint("item_id", "candidate_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    team_id: Mapped[str] = mapped_column(String(32))
    item_id: Mapped[int] = mapped_column(ForeignKey("feedback_items.id", ondelete="CASCADE"), index=True)
    candidate_id: Mapped[int] = mapped_column(ForeignKey("feedback_items.id", ondelete="CASCADE"), index=True)
    score: Mapped[float] = mapped_column(Float)
    # linked (auto) | asked | merged | rejected | undone
    status: Mapped[str] = mapped_column(String(16))
    # What the item looked like before the link/merge, so Undo restores exactly that.
    previous_state: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    prompt_channel_id: Mapped[str | None] = mapped_column(String(32))
    prompt_ts: Mapped[str | None] = mapped_column(String(32))
    decided_by_user_id: Mapped[str | None] = mapped_column(String(32))
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ShipNotice(Base):
    """One "shipped" notice for one item and one recipient (thread, reporter, account owner): sent once."""

    __tablename__ = "ship_notices"
    __table_args__ = (
        UniqueConstraint("team_id", "item_id", "target_kind", "target"),
        Index(None, "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    team_id: Mapped[str] = mapped_column(String(32))
    theme_id: Mapped[int | None] = mapped_column(ForeignKey("themes.id", ondelete="SET NULL"), index=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("feedback_items.id", ondelete="CASCADE"))
    target_kind: Mapped[str] = mapped_column(String(16))  # thread|reporter|owner
    target: Mapped[str] = mapped_column(String(64))  # channel:thread_ts, or a user id
    message: Mapped[str] = mapped_column(Text)
    requested_by_user_id: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending|sending|sent|failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class AccountBriefSubscription(Base):
    """An account owner's monthly DM brief of their accounts (sent once per month)."""

    __tablename__ = "account_brief_subscriptions"
    __table_args__ = (UniqueConstraint("team_id", "user_id"), Index(None, "next_run_at"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    team_id: Mapped[str] = mapped_column(String(32))
    user_id: Mapped[str] = mapped_column(String(32))
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    next_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_period: Mapped[str | None] = mapped_column(String(16))  # e.g. 2026-11
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class DataRightsRecord(Base):
    """A record that a person's data was forgotten (who asked, when, how much): ids hashed, no content."""

    __tablename__ = "data_rights_records"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    team_id: Mapped[str] = mapped_column(String(32), index=True)
    action: Mapped[str] = mapped_column(String(16))  # forget|retention|purge
    subject_hash: Mapped[str | None] = mapped_column(String(64))  # keyed HMAC of team:user, never the id
    requested_by: Mapped[str | None] = mapped_column(String(64))
    counts: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    done_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


def _installation_tables() -> tuple[Table, Table, Table]:
    """slack_sdk's OAuth installation and state tables, on our metadata so Alembic creates them.

    Token columns are widened to TEXT: they hold Fernet ciphertext (bot/security/crypto.py), longer than a token.
    """
    installations = SQLAlchemyInstallationStore.build_installations_table(
        Base.metadata, "slack_installations"
    )
    bots = SQLAlchemyInstallationStore.build_bots_table(Base.metadata, "slack_bots")
    states = SQLAlchemyOAuthStateStore.build_oauth_states_table(Base.metadata, "slack_oauth_states")
    for table in (installations, bots):
        for column in table.columns:
            if column.name.endswith("_token"):
                column.type = Text()
    return installations, bots, states


slack_installations, slack_bots, slack_oauth_states = _installation_tables()
