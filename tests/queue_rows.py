"""Rows in the work queues (inbox, insight tasks, outboxes) for tests of the operator tools and /metrics.

Times are set so that no worker or scheduled tick takes them while a test looks: leases run for a day,
and queued rows become available tomorrow.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from storage.db import Database
from storage.models import (
    DigestOutbox,
    DigestSubscription,
    FeedbackItem,
    InboxEvent,
    InsightTask,
    Request,
    ShipNotice,
    SlaNotice,
)
from storage.types import utcnow

LATER = timedelta(days=1)


def add_delivery(
    db: Database,
    *,
    team_id: str,
    status: str,
    attempts: int = 1,
    kind: str = "event:reaction_added",
    last_error: str | None = None,
    received_ago: timedelta = timedelta(0),
    claimed_by: str | None = None,
) -> int:
    """One inbox row; returns its id."""
    now = utcnow()
    row = InboxEvent(
        team_id=team_id,
        delivery_id=f"Ev{uuid.uuid4().hex[:12]}",
        kind=kind,
        body={"type": "event_callback", "team_id": team_id},
        status=status,
        attempts=attempts,
        lease_until=now + LATER,
        available_at=now + LATER,
        received_at=now - received_ago,
        last_error=last_error,
        claimed_by=claimed_by,
        finished_at=now if status in ("done", "ignored", "dead") else None,
    )
    with db.inbox.session() as s:
        s.add(row)
        s.flush()
        return row.id


def add_item(db: Database, *, team_id: str) -> int:
    """A captured feedback item; returns its id."""
    with db.session() as s:
        item = FeedbackItem(
            team_id=team_id,
            channel_id="C0QUEUE",
            message_ts=f"{uuid.uuid4().int % 10**9}.000100",
            text="Exports time out on big workspaces",
            captured_by_user_id="U0PM",
            source="reaction",
        )
        s.add(item)
        s.flush()
        return item.id


def add_insight_task(
    db: Database, *, team_id: str, status: str = "queued", created_ago: timedelta = timedelta(0)
) -> int:
    """An insight task for a new item; returns the task id."""
    item_id = add_item(db, team_id=team_id)
    now = utcnow()
    with db.session() as s:
        task = InsightTask(
            team_id=team_id,
            item_id=item_id,
            status=status,
            available_at=now + LATER,
            lease_until=now + LATER if status == "pending" else None,
            created_at=now - created_ago,
        )
        s.add(task)
        s.flush()
        return task.id


def add_digest_outbox(db: Database, *, team_id: str, status: str) -> int:
    """A rendered digest in the outbox, not due before tomorrow; returns its id."""
    now = utcnow()
    with db.session() as s:
        subscription = DigestSubscription(
            team_id=team_id,
            channel_id="C0DIGEST",
            cadence="weekly",
            cron="0 9 * * mon",
            created_by_user_id="U0PM",
            next_run_at=now + timedelta(days=7),
        )
        s.add(subscription)
        s.flush()
        row = DigestOutbox(
            team_id=team_id,
            subscription_id=subscription.id,
            period_key=uuid.uuid4().hex[:12],
            channel_id="C0DIGEST",
            text="digest",
            blocks=[],
            status=status,
            next_attempt_at=now + LATER,
        )
        s.add(row)
        s.flush()
        return row.id


def add_ship_notice(db: Database, *, team_id: str, status: str) -> int:
    """A shipped notice waiting in its outbox, not due before tomorrow; returns its id."""
    item_id = add_item(db, team_id=team_id)
    with db.session() as s:
        row = ShipNotice(
            team_id=team_id,
            item_id=item_id,
            target_kind="reporter",
            target=f"U{uuid.uuid4().hex[:8].upper()}",
            message="Shipped!",
            requested_by_user_id="U0PM",
            status=status,
            next_attempt_at=utcnow() + LATER,
        )
        s.add(row)
        s.flush()
        return row.id


def add_sla_notice(db: Database, *, team_id: str, sent: bool) -> int:
    """An SLA reminder claimed for a new request (sent, or not yet); returns its id."""
    from bot.requests.types import ensure_default_type

    with db.session() as s:
        kind = ensure_default_type(db_session=s, team_id=team_id)
        request = Request(
            team_id=team_id,
            type_id=kind.id,
            title="Pull the churn numbers",
            requester_user_id="U0ASK",
            channel_id="C0ASK",
            source="command",
        )
        s.add(request)
        s.flush()
        notice = SlaNotice(
            team_id=team_id,
            request_id=request.id,
            target="first_response",
            kind="reminder",
            claimed_at=utcnow() + LATER,  # never looks abandoned to the SLA tick
            sent_at=utcnow() if sent else None,
        )
        s.add(notice)
        s.flush()
        return notice.id


def deliveries(db: Database, team_id: str) -> dict[int, dict[str, Any]]:
    """Every inbox row of a workspace, by id: the columns retry and drop may change."""
    with db.inbox.read() as s:
        rows = s.scalars(select(InboxEvent).where(InboxEvent.team_id == team_id))
        return {
            row.id: {
                "status": row.status,
                "attempts": row.attempts,
                "available_at": row.available_at,
                "lease_until": row.lease_until,
                "last_error": row.last_error,
                "finished_at": row.finished_at,
                "claimed_by": row.claimed_by,
            }
            for row in rows
        }
