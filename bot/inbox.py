"""The inbox: every delivery from Slack is recorded by its id before it has effects (README, How it works: Inbox)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

from slack_bolt.request.internals import extract_team_id
from sqlalchemy import CursorResult, Table, and_, exists, or_, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from storage import claims as storage_claims
from storage.models import InboxEvent, InboxStatus
from storage.types import utcnow

# Read-only requests: answering them twice is harmless, and Slack wants them fast.
UNRECORDED_TYPES = {"url_verification", "ssl_check", "block_suggestion"}
# The Postgres channel on which recorders wake workers (LISTEN/NOTIFY); payload: which queue has work.
WAKE_CHANNEL = "prodops_work"
# Deliveries that still count: a later one with the same order key waits behind them.
ACTIVE_STATUSES = (InboxStatus.queued.value, InboxStatus.pending.value, InboxStatus.failed.value)


# The inbox as a leased work queue (storage/claims.py): queued rows wait until `available_at`, a claimed
# ("pending") row holds its lease until `lease_until`; settling and lease renewal are fenced by the claim's
# attempt count there. Claiming stays here: one statement claims a batch and keeps each thread's order.
INBOX_QUEUE = storage_claims.Queue(
    model=InboxEvent,
    id=InboxEvent.id,
    status=InboxEvent.status,
    attempts=InboxEvent.attempts,
    due_at=InboxEvent.available_at,
    lease_until=InboxEvent.lease_until,
    waiting=(InboxStatus.queued.value,),
    claimed=InboxStatus.pending.value,
    dead=InboxStatus.dead.value,
)


@dataclass(frozen=True)
class Delivery:
    """What identifies one delivery from Slack, and how it is handled.

    `queued`: an Events API delivery, acknowledged at once and handled by a worker; interactive payloads are
    handled by the web process that received them (`queued` False). `order_key`: deliveries with the same
    key are handled one at a time in arrival order (a message, then its edits, replies and reactions).
    """

    team_id: str
    delivery_id: str
    kind: str
    queued: bool = False
    order_key: str | None = None


@dataclass(frozen=True)
class ClaimedDelivery:
    """A delivery a worker has claimed: what to run, and the attempt this is (1 for the first)."""

    inbox_id: int
    delivery_id: str
    kind: str
    attempts: int
    body: dict[str, Any]


def identify_delivery(body: dict[str, Any]) -> Delivery | None:
    """The inbox key of a Slack request body, or None for requests we do not record."""
    kind = str(body.get("type") or ("slash_command" if "command" in body else "unknown"))
    if kind in UNRECORDED_TYPES:
        return None
    team_id = _team_id(body)
    if body.get("event_id"):
        event = body.get("event")
        event = event if isinstance(event, dict) else {}
        event_kind = str(event.get("type") or "event")
        return Delivery(
            team_id,
            str(body["event_id"]),
            f"event:{event_kind}"[:64],
            queued=kind == "event_callback",
            order_key=order_key(team_id, event),
        )
    if body.get("trigger_id"):
        return Delivery(team_id, str(body["trigger_id"]), kind)
    # Interactions without a trigger id are not retried by Slack; the body itself identifies them.
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    return Delivery(team_id, f"sha256:{digest}", kind)


def order_key(team_id: str, event: dict[str, Any]) -> str | None:
    """The conversation thread an event is about (`team:channel:thread root ts`), or None when order is moot.

    A reaction, an edit, a deletion or a thread reply is handled after what came before it in the same
    thread, so an edit never overtakes the capture of its message.
    """
    kind = event.get("type")
    if kind in ("reaction_added", "reaction_removed"):
        item = event.get("item")
        if not isinstance(item, dict):
            return None
        channel, ts, root = item.get("channel"), item.get("ts"), None
    elif kind == "message":
        inner = event.get("message") or event.get("previous_message")
        inner = inner if isinstance(inner, dict) else {}
        channel = event.get("channel")
        root = event.get("thread_ts") or inner.get("thread_ts")
        ts = inner.get("ts") or event.get("deleted_ts") or event.get("ts")
    else:
        return None
    if not isinstance(channel, str) or not isinstance(root or ts, str):
        return None
    return f"{team_id}:{channel}:{root or ts}"[:255]


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
    now = utcnow()
    row = InboxEvent(
        team_id=delivery.team_id,
        delivery_id=delivery.delivery_id,
        kind=delivery.kind,
        body=body,
        status=(InboxStatus.queued if delivery.queued else InboxStatus.pending).value,
        attempts=0 if delivery.queued else 1,
        lease_until=now if delivery.queued else now + timedelta(seconds=lease_seconds),
        available_at=now,
        order_key=delivery.order_key,
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


def _due_clause(table: Table, now: Any) -> Any:
    """Queued and available, or claimed (or failed) with the lease run out."""
    return or_(
        and_(
            table.c.status == InboxStatus.queued.value,
            or_(table.c.available_at.is_(None), table.c.available_at <= now),
        ),
        and_(
            table.c.status.in_([InboxStatus.pending.value, InboxStatus.failed.value]),
            table.c.lease_until < now,
        ),
    )


def claim_deliveries(
    *,
    db_session: Session,
    worker_id: str,
    lease_seconds: float,
    max_attempts: int,
    limit: int = 16,
    skip_locked: bool = False,
) -> list[ClaimedDelivery]:
    """Claims up to `limit` due deliveries for this worker, exactly once across processes, oldest first.

    Due: queued and available, or a lease that ran out (a killed worker, or a web process that died while
    handling an interaction). A delivery waits while an earlier one with its order key is still active.
    One whose lease ran out after `max_attempts` is marked dead instead. Postgres: `skip_locked` lets many
    workers claim side by side without waiting on each other's rows; SQLite has one writer at a time.
    """
    now = utcnow()
    table = cast(Table, InboxEvent.__table__)
    earlier = table.alias("earlier")
    blocked = exists().where(
        earlier.c.order_key == table.c.order_key,
        earlier.c.id < table.c.id,
        earlier.c.status.in_(ACTIVE_STATUSES),
    )
    rows, _dead = storage_claims.claim_batch(
        db_session,
        INBOX_QUEUE,
        due=_due_clause(table, now),
        where=[or_(table.c.order_key.is_(None), ~blocked)],
        now=now,
        lease=timedelta(seconds=lease_seconds),
        limit=limit,
        max_attempts=max_attempts,
        also={"claimed_by": worker_id[:64]},
        dead_also={"finished_at": now, "claimed_by": None},
        # Only a lease that ran out after the last attempt: a queued delivery is run (a retry resets attempts).
        dead_where=[table.c.status.in_([InboxStatus.pending.value, InboxStatus.failed.value])],
        returning=(table.c.id, table.c.delivery_id, table.c.kind, table.c.attempts, table.c.body),
        skip_locked=skip_locked,
    )
    claimed = [ClaimedDelivery(r.id, r.delivery_id, r.kind, r.attempts, r.body) for r in rows]
    return sorted(claimed, key=lambda c: c.inbox_id)


def settle_delivery(
    *,
    db_session: Session,
    claimed: ClaimedDelivery,
    status: InboxStatus,
    error: str | None = None,
    retry_in: float | None = None,
) -> bool:
    """Records a claimed delivery's outcome: done, ignored, dead, or (`retry_in` seconds) queued again.

    Only the claim that is still current settles: a worker whose lease ran out and was taken over (the
    attempt count moved on) changes nothing. Returns whether the row was settled.
    """
    now = utcnow()
    values: dict[str, Any] = {"claimed_by": None}
    if error is not None:  # a success keeps the error of the attempt before it, for the record
        values["last_error"] = error
    if retry_in is not None:
        values |= {
            "status": InboxStatus.queued.value,
            "available_at": now + timedelta(seconds=retry_in),
            "lease_until": now,
        }
    else:
        values |= {"status": status.value, "finished_at": now}
    held = storage_claims.Claim(claimed.inbox_id, claimed.attempts)
    return storage_claims.settle_in(db_session, INBOX_QUEUE, held, **values)


def extend_leases(
    *, db_session: Session, claims: list[ClaimedDelivery], worker_id: str, lease_seconds: float
) -> int:
    """Renews the lease of deliveries this worker is still running (its heartbeat); returns how many.

    A lease only runs out when its worker stopped renewing it: it died, or cannot reach the database.
    """
    renewed = 0
    until = utcnow() + timedelta(seconds=lease_seconds)
    for held in claims:
        renewed += storage_claims.claim_row(
            db_session,
            InboxEvent,
            where=InboxEvent.id == held.inbox_id,
            seen={
                InboxEvent.status: InboxStatus.pending.value,
                InboxEvent.attempts: held.attempts,
                InboxEvent.claimed_by: worker_id[:64],
            },
            values={"lease_until": until},
        )
    return renewed


def has_due_deliveries(*, db_session: Session) -> bool:
    """Whether any delivery is due for a worker now (a cheap indexed look, for idle polling)."""
    table = cast(Table, InboxEvent.__table__)
    return (
        db_session.execute(select(table.c.id).where(_due_clause(table, utcnow())).limit(1)).first()
        is not None
    )


def wake_workers(*, db_session: Session, queue: str = "inbox") -> None:
    """Postgres: wakes listening workers when this transaction commits (NOTIFY); nothing on SQLite."""
    if db_session.get_bind().dialect.name == "postgresql":
        db_session.execute(
            text("SELECT pg_notify(:channel, :queue)"), {"channel": WAKE_CHANNEL, "queue": queue}
        )


def get_delivery(*, db_session: Session, inbox_id: int) -> InboxEvent | None:
    """Gets an inbox row by id."""
    return db_session.get(InboxEvent, inbox_id)
