"""The inbox: every delivery from Slack is recorded by its id before it has effects (DESIGN.md, Inbox)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

from slack_bolt.request.internals import extract_team_id
from sqlalchemy import CursorResult, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from storage.models import InboxEvent, InboxStatus
from storage.types import utcnow

# Read-only requests: answering them twice is harmless, and Slack wants them fast.
UNRECORDED_TYPES = {"url_verification", "ssl_check", "block_suggestion"}


@dataclass(frozen=True)
class Delivery:
    """What identifies one delivery from Slack."""

    team_id: str
    delivery_id: str
    kind: str


def identify_delivery(body: dict[str, Any]) -> Delivery | None:
    """The inbox key of a Slack request body, or None for requests we do not record."""
    kind = str(body.get("type") or ("slash_command" if "command" in body else "unknown"))
    if kind in UNRECORDED_TYPES:
        return None
    team_id = _team_id(body)
    if body.get("event_id"):
        event_kind = body.get("event", {}).get("type", "event")
        return Delivery(team_id, str(body["event_id"]), f"event:{event_kind}")
    if body.get("trigger_id"):
        return Delivery(team_id, str(body["trigger_id"]), kind)
    # Interactions without a trigger id are not retried by Slack; the body itself identifies them.
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    return Delivery(team_id, f"sha256:{digest}", kind)


def _team_id(body: dict[str, Any]) -> str:
    """The workspace a body belongs to: the one the app is authorized in, as Bolt reads it (in a Slack
    Connect channel the top-level team_id is the other org's, `authorizations[0].team_id` is ours)."""
    team_id = extract_team_id(body)
    if isinstance(team_id, str) and team_id:
        return team_id
    user = body.get("user")
    if isinstance(user, dict) and isinstance(user.get("team_id"), str) and user["team_id"]:
        return str(user["team_id"])
    return "unknown"


def record_delivery(
    *, db_session: Session, delivery: Delivery, body: dict[str, Any], lease_seconds: float
) -> int | None:
    """Records a delivery; returns its inbox id, or None when it was already recorded (a retry)."""
    row = InboxEvent(
        team_id=delivery.team_id,
        delivery_id=delivery.delivery_id,
        kind=delivery.kind,
        body=body,
        status=InboxStatus.pending.value,
        attempts=1,
        lease_until=utcnow() + timedelta(seconds=lease_seconds),
    )
    try:
        with db_session.begin_nested():
            db_session.add(row)
    except IntegrityError:
        return None
    return row.id


def finish_delivery(
    *, db_session: Session, inbox_id: int, status: InboxStatus, error: str | None = None
) -> None:
    """Marks a delivery handled (done/ignored) or failed, with the error for the record."""
    db_session.execute(
        update(InboxEvent)
        .where(InboxEvent.id == inbox_id)
        .values(status=status.value, finished_at=utcnow(), last_error=error)
    )


def claim_stale_deliveries(
    *, db_session: Session, lease_seconds: float, max_attempts: int, limit: int = 50
) -> list[InboxEvent]:
    """Claims deliveries whose handler died or failed (lease expired), exactly once across processes.

    A delivery past `max_attempts` is marked dead instead of being claimed.
    """
    now = utcnow()
    candidates = db_session.execute(
        select(InboxEvent.id, InboxEvent.lease_until, InboxEvent.attempts)
        .where(
            InboxEvent.status.in_([InboxStatus.pending.value, InboxStatus.failed.value]),
            InboxEvent.lease_until < now,
        )
        .order_by(InboxEvent.id)
        .limit(limit)
    ).all()
    claimed_ids: list[int] = []
    for inbox_id, seen_lease, attempts in candidates:
        if attempts >= max_attempts:
            db_session.execute(
                update(InboxEvent)
                .where(InboxEvent.id == inbox_id, InboxEvent.lease_until == seen_lease)
                .values(status=InboxStatus.dead.value, finished_at=now)
            )
            continue
        # Conditional update: only the process that saw this lease wins the claim.
        result = db_session.execute(
            update(InboxEvent)
            .where(InboxEvent.id == inbox_id, InboxEvent.lease_until == seen_lease)
            .values(
                lease_until=now + timedelta(seconds=lease_seconds),
                attempts=InboxEvent.attempts + 1,
                status=InboxStatus.pending.value,
            )
        )
        if cast(CursorResult[Any], result).rowcount == 1:
            claimed_ids.append(inbox_id)
    if not claimed_ids:
        return []
    return list(db_session.scalars(select(InboxEvent).where(InboxEvent.id.in_(claimed_ids))))


def get_delivery(*, db_session: Session, inbox_id: int) -> InboxEvent | None:
    """Gets an inbox row by id."""
    return db_session.get(InboxEvent, inbox_id)
