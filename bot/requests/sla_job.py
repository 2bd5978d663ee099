"""The SLA tick: reminders at 75% of a target and escalations at breach, each sent once per request and target.

Which requests are due comes from one indexed range (`sla_next_check_at <= now`); each notice is claimed by
inserting a unique `sla_notices` row, and in the same transaction its messages (one per recipient) are
queued in the one outbox (bot/outbox.py, key ``sla:<notice>:<channel>``) and the notice marked sent
(`sent_at`: handed to the outbox). So two workers, or a restarted one, never send it twice, and the outbox
posts each message once through 429s, outages and crashes. A notice claimed before this (by an older
version that died before sending) is queued the same way after a lease.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, cast

from slack_sdk import WebClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from bot import outbox
from bot.requests import messaging
from bot.requests import service as requests_service
from bot.requests import types as request_types
from bot.requests.sla import SlaPolicy
from storage import claims
from storage.db import Database
from storage.models import Request, SlaNotice
from storage.types import utcnow

logger = logging.getLogger("prodops.sla")

Target = Literal["first_response", "resolution"]
Kind = Literal["reminder", "escalation"]
CLAIM_LEASE = claims.LEASE * 2
OUTBOX_KIND = "sla"


@dataclass
class TickResult:
    """What one tick did."""

    checked: int = 0
    reminders: int = 0  # reminders claimed and queued by this worker
    escalations: int = 0
    delivery: outbox.OutboxResult | None = None  # what the outbox pass after it did


def alerts_due(request: Request, now: datetime) -> list[tuple[Target, Kind]]:
    """The notices a request owes at `now`; a breach already reached makes its reminder moot."""
    due: list[tuple[Target, Kind]] = []
    if request.status in requests_service.OPEN_STATUSES and request.first_response_at is None:
        breached = request.first_response_due_at is not None and request.first_response_due_at <= now
        if breached and request.first_response_escalated_at is None:
            due.append(("first_response", "escalation"))
        elif (
            not breached
            and request.first_response_remind_at is not None
            and request.first_response_remind_at <= now
        ):
            due.append(("first_response", "reminder"))
    if request.status in ("new", "in_progress"):
        breached = request.due_at is not None and request.due_at <= now
        if breached and request.resolution_escalated_at is None:
            due.append(("resolution", "escalation"))
        elif (
            not breached and request.resolution_remind_at is not None and request.resolution_remind_at <= now
        ):
            due.append(("resolution", "reminder"))
    return due


def run_sla_tick(
    *, db: Database, client: WebClient, now: datetime | None = None, batch: int = 200
) -> TickResult:
    """Sends every reminder and escalation that has come due (each with its workspace's client, see TeamClients)."""
    now = now or utcnow()
    result = TickResult()
    _retry_unsent(db=db, now=now)
    with db.read() as s:
        due_ids = list(
            s.execute(
                select(Request.id, Request.team_id)
                .where(Request.sla_next_check_at <= now)
                .order_by(Request.sla_next_check_at)
                .limit(batch)
            ).all()
        )
    for request_id, team_id in due_ids:
        result.checked += 1
        with db.session() as s:
            request = requests_service.get(db_session=s, team_id=team_id, request_id=request_id)
            if request is None:
                continue
            todo = alerts_due(request, now)
            claimed = [
                (t, k, notice) for t, k in todo if (notice := _claim(s, request, t, k, now)) is not None
            ]
            for target, kind in todo:  # the row moves on whether this worker or another sends it
                _mark_done(request, target, kind, now)
            requests_service.refresh_sla_next_check(request)
            policy = request_types.policy_for(request.type)
            for target, kind, notice in claimed:
                _queue(
                    s, notice, _recipients(request), kind, _compose(request, target, kind, policy, now), now
                )
                if kind == "reminder":
                    result.reminders += 1
                else:
                    result.escalations += 1
    result.delivery = outbox.deliver_outbox(db=db, client=client, kinds=(OUTBOX_KIND,), now=now)
    return result


def _retry_unsent(*, db: Database, now: datetime) -> None:
    """Queues notices claimed by a worker that died before sending (after the claim lease)."""
    with db.read() as s:
        stale = list(
            s.execute(
                select(SlaNotice.id, SlaNotice.claimed_at)
                .where(SlaNotice.sent_at.is_(None), SlaNotice.claimed_at < now - CLAIM_LEASE)
                .limit(100)
            ).all()
        )
    for notice_id, seen in stale:
        with db.session() as s:
            if not claims.claim_row(s, SlaNotice, where=SlaNotice.id == notice_id,
                                    seen={SlaNotice.claimed_at: seen}, values={"claimed_at": now}):  # fmt: skip
                continue
            notice = s.get(SlaNotice, notice_id)
            assert notice is not None
            request = requests_service.get(db_session=s, team_id=notice.team_id, request_id=notice.request_id)
            if request is None:
                continue
            target, kind = cast(Target, notice.target), cast(Kind, notice.kind)
            text = _compose(request, target, kind, request_types.policy_for(request.type), now)
            _queue(s, notice, _recipients(request), kind, text, now)


def _claim(s: Session, request: Request, target: Target, kind: Kind, now: datetime) -> SlaNotice | None:
    """Inserts the notice row; None when another worker already has it."""
    notice = SlaNotice(
        team_id=request.team_id, request_id=request.id, target=target, kind=kind, claimed_at=now
    )
    if not claims.claim_by_insert(s, notice):
        return None
    return notice


def _mark_done(request: Request, target: Target, kind: Kind, now: datetime) -> None:
    if target == "first_response" and kind == "reminder":
        request.first_response_remind_at = None
    elif target == "first_response":
        request.first_response_remind_at = None
        request.first_response_escalated_at = now
    elif kind == "reminder":
        request.resolution_remind_at = None
    else:
        request.resolution_remind_at = None
        request.resolution_escalated_at = now


def _compose(request: Request, target: Target, kind: Kind, policy: SlaPolicy, now: datetime) -> str:
    if kind == "reminder":
        return messaging.reminder_text(request, target, policy, now)
    return messaging.escalation_text(request, target)


@dataclass
class _Recipients:
    assignee: str | None
    owners: list[str]
    triage_channel: str | None
    triage_ts: str | None


def _recipients(request: Request) -> _Recipients:
    return _Recipients(
        request.assignee_user_id,
        list(request.type.owners or []),
        request.triage_channel_id,
        request.triage_ts,
    )


def _queue(s: Session, notice: SlaNotice, to: _Recipients, kind: Kind, text: str, now: datetime) -> None:
    """Queues the notice's messages and marks it sent (handed to the outbox), in the caller's transaction.

    Reminder: the assignee (or the owners when unassigned). Escalation: the owners and the triage thread.
    """
    people = ([to.assignee] if to.assignee else to.owners) if kind == "reminder" else to.owners
    posts: list[tuple[str, str | None]] = [(user, None) for user in people]
    if kind == "escalation" and to.triage_channel:
        posts.append((to.triage_channel, to.triage_ts))
    for channel, thread_ts in posts:
        outbox.enqueue(s, team_id=notice.team_id, kind=OUTBOX_KIND, key=f"sla:{notice.id}:{channel}",
                       channel_id=channel, thread_ts=thread_ts, text=text, now=now)  # fmt: skip
    notice.sent_at = now
