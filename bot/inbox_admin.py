"""Operator tools for the work queue: what the inbox holds, and retrying or dropping stuck deliveries."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, func, select, update
from sqlalchemy.orm import Session

from storage.db import Database
from storage.models import InboxEvent, InboxStatus, InsightTask
from storage.types import utcnow

# Deliveries not finished yet: counted by /prodops status and GET /metrics (done/ignored are history).
OPEN_STATUSES = (InboxStatus.queued, InboxStatus.pending, InboxStatus.failed, InboxStatus.dead)
RETRYABLE = (InboxStatus.dead, InboxStatus.failed)
# A delivery a worker holds (pending) is not dropped under it; done/ignored ones are already finished.
DROPPABLE = (InboxStatus.queued, InboxStatus.failed, InboxStatus.dead)
INSIGHT_OPEN = ("queued", "pending", "dead")
DROPPED_REASON = "dropped by operator"


@dataclass(frozen=True)
class QueueSummary:
    """Unfinished deliveries and insight tasks, by status, with the oldest time each was received."""

    deliveries: dict[str, int] = field(default_factory=dict)
    oldest: dict[str, datetime] = field(default_factory=dict)
    insight_tasks: dict[str, int] = field(default_factory=dict)
    oldest_insight: datetime | None = None

    @property
    def waiting(self) -> int:
        """Deliveries waiting for a worker (queued, or failed and due for another try)."""
        return self.deliveries.get(InboxStatus.queued, 0) + self.deliveries.get(InboxStatus.failed, 0)

    @property
    def in_progress(self) -> int:
        """Deliveries a process is handling now (lease running)."""
        return self.deliveries.get(InboxStatus.pending, 0)

    @property
    def dead(self) -> int:
        """Deliveries given up on after the last attempt."""
        return self.deliveries.get(InboxStatus.dead, 0)

    @property
    def insights_waiting(self) -> int:
        """Captured items whose insights (theme, duplicates) are not worked out yet."""
        return self.insight_tasks.get("queued", 0) + self.insight_tasks.get("pending", 0)

    def oldest_waiting_age(self, now: datetime) -> float | None:
        """Seconds since the oldest unfinished (waiting or in-progress) delivery was received."""
        times = [
            self.oldest[s]
            for s in (InboxStatus.queued, InboxStatus.failed, InboxStatus.pending)
            if s in self.oldest
        ]
        return max(0.0, (now - min(times)).total_seconds()) if times else None


def queue_summary(
    *, db: Database, team_id: str | None = None, exclude_delivery_id: str | None = None
) -> QueueSummary:
    """Counts unfinished deliveries and insight tasks (one workspace, or all when team_id is None).

    Reads only (no write lock); deliveries come from the inbox's database (`Database.inbox`).
    `exclude_delivery_id`: leave out one delivery (the command asking, which is in progress itself).
    """
    inbox = select(InboxEvent.status, func.count(), func.min(InboxEvent.received_at)).where(
        InboxEvent.status.in_([s.value for s in OPEN_STATUSES])
    )
    tasks = select(InsightTask.status, func.count(), func.min(InsightTask.created_at)).where(
        InsightTask.status.in_(INSIGHT_OPEN)
    )
    if team_id is not None:
        inbox = inbox.where(InboxEvent.team_id == team_id)
        tasks = tasks.where(InsightTask.team_id == team_id)
    if exclude_delivery_id is not None:
        inbox = inbox.where(InboxEvent.delivery_id != exclude_delivery_id)
    deliveries: dict[str, int] = {}
    oldest: dict[str, datetime] = {}
    with db.inbox.read() as s:
        for status, count, first in s.execute(inbox.group_by(InboxEvent.status)):
            deliveries[status] = int(count)
            if first is not None:
                oldest[status] = first
    insight: dict[str, int] = {}
    oldest_insight: datetime | None = None
    with db.read() as s:
        for status, count, first in s.execute(tasks.group_by(InsightTask.status)):
            insight[status] = int(count)
            if status == "queued" and first is not None:
                oldest_insight = first
    return QueueSummary(deliveries, oldest, insight, oldest_insight)


def list_deliveries(
    *, db_session: Session, status: str | None = None, team_id: str | None = None, limit: int = 50
) -> list[InboxEvent]:
    """The newest deliveries first, optionally of one status and one workspace."""
    query = select(InboxEvent).order_by(InboxEvent.id.desc()).limit(limit)
    if status is not None:
        query = query.where(InboxEvent.status == status)
    if team_id is not None:
        query = query.where(InboxEvent.team_id == team_id)
    return list(db_session.scalars(query))


class UnknownDeliveries(LookupError):
    """Some ids name no delivery (in the workspace given); nothing was changed."""

    def __init__(self, ids: Sequence[int], team_id: str | None) -> None:
        self.ids = list(ids)
        self.team_id = team_id
        where = f" in workspace {team_id}" if team_id else ""
        listed = ", ".join(str(i) for i in self.ids)
        super().__init__(f"no inbox delivery with id {listed}{where}")


@dataclass(frozen=True)
class ChangeResult:
    """What a retry or drop did: the ids changed, and the ids left alone with their status."""

    changed: list[int]
    skipped: dict[int, str]


def retry_deliveries(
    *,
    db_session: Session,
    inbox_ids: Sequence[int] = (),
    dead: bool = False,
    team_id: str | None = None,
) -> ChangeResult:
    """Puts dead or failed deliveries back in the queue, available now, with their attempts reset.

    Either `inbox_ids` (all must exist, else UnknownDeliveries and nothing changes) or `dead=True` (every
    dead delivery, of `team_id` when given). Deliveries in another status are reported as skipped.
    """
    now = utcnow()
    return _change(
        db_session,
        inbox_ids=inbox_ids,
        dead=dead,
        team_id=team_id,
        allowed=RETRYABLE,
        values={
            "status": InboxStatus.queued.value,
            "available_at": now,
            "lease_until": now,
            "attempts": 0,
            "claimed_by": None,
            "finished_at": None,
        },
    )


def drop_deliveries(
    *,
    db_session: Session,
    inbox_ids: Sequence[int] = (),
    dead: bool = False,
    team_id: str | None = None,
) -> ChangeResult:
    """Gives up on queued, failed or dead deliveries for good: marked ignored, the row kept for dedup."""
    return _change(
        db_session,
        inbox_ids=inbox_ids,
        dead=dead,
        team_id=team_id,
        allowed=DROPPABLE,
        values={
            "status": InboxStatus.ignored.value,
            "last_error": DROPPED_REASON,
            "finished_at": utcnow(),
            "claimed_by": None,
        },
    )


def _change(
    db_session: Session,
    *,
    inbox_ids: Sequence[int],
    dead: bool,
    team_id: str | None,
    allowed: Sequence[InboxStatus],
    values: dict[str, Any],
) -> ChangeResult:
    """Applies `values` to the chosen deliveries still in an `allowed` status (a conditional update)."""
    if bool(inbox_ids) == dead:
        raise ValueError("give delivery ids or dead=True, not both or neither")
    found = select(InboxEvent.id, InboxEvent.status)
    if dead:
        found = found.where(InboxEvent.status == InboxStatus.dead.value)
    else:
        found = found.where(InboxEvent.id.in_(list(inbox_ids)))
    if team_id is not None:
        found = found.where(InboxEvent.team_id == team_id)
    statuses = {int(i): str(s) for i, s in db_session.execute(found)}
    missing = sorted(set(inbox_ids) - set(statuses))
    if missing:
        raise UnknownDeliveries(missing, team_id)
    allowed_values = [s.value for s in allowed]
    chosen = [i for i, s in statuses.items() if s in allowed_values]
    changed: list[int] = []
    if chosen:
        # The status condition again: a worker may claim or finish a row between the read and this write.
        result = db_session.execute(
            update(InboxEvent)
            .where(InboxEvent.id.in_(chosen), InboxEvent.status.in_(allowed_values))
            .values(**values)
            .returning(InboxEvent.id)
        )
        changed = sorted(int(i) for i in cast(CursorResult[Any], result).scalars())
    skipped = {i: s for i, s in sorted(statuses.items()) if i not in changed}
    return ChangeResult(changed=changed, skipped=skipped)
