"""The SLA tick: reminders at 75% of a target and escalations at breach, each sent once per request and target.

Which requests are due comes from one indexed range (`sla_next_check_at <= now`); each notice is claimed by
inserting a unique `sla_notices` row before it is sent, so two workers, or a restarted one, never send it
twice. A claim whose sending died is retried after a lease.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bot.requests import messaging
from bot.requests import service as requests_service
from bot.requests import types as request_types
from bot.requests.sla import SlaPolicy
from bot.slack_client import for_team
from storage.db import Database
from storage.models import Request, SlaNotice
from storage.types import utcnow

logger = logging.getLogger("prodops.sla")

Target = Literal["first_response", "resolution"]
Kind = Literal["reminder", "escalation"]
CLAIM_LEASE = timedelta(minutes=10)


@dataclass
class TickResult:
    """What one tick did."""

    checked: int = 0
    reminders: int = 0
    escalations: int = 0


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
    _retry_unsent(db=db, client=client, now=now)
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
            claimed = [(t, k) for t, k in todo if _claim(s, request, t, k, now)]
            for target, kind in todo:  # the row moves on whether this worker or another sends it
                _mark_done(request, target, kind, now)
            requests_service.refresh_sla_next_check(request)
            policy = request_types.policy_for(request.type)
            messages = [(t, k, _compose(request, t, k, policy, now)) for t, k in claimed]
            targets = _recipients(request)
        for target, kind, text in messages:
            _send(for_team(client, team_id), targets, kind, text)
            with db.session() as s:
                s.execute(
                    update(SlaNotice)
                    .where(
                        SlaNotice.team_id == team_id,
                        SlaNotice.request_id == request_id,
                        SlaNotice.target == target,
                        SlaNotice.kind == kind,
                    )
                    .values(sent_at=utcnow())
                )
            if kind == "reminder":
                result.reminders += 1
            else:
                result.escalations += 1
    return result


def _retry_unsent(*, db: Database, client: WebClient, now: datetime) -> None:
    """Re-sends notices claimed by a worker that died before sending (after the claim lease)."""
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
            won = s.execute(
                update(SlaNotice)
                .where(SlaNotice.id == notice_id, SlaNotice.claimed_at == seen)
                .values(claimed_at=now)
            )
            if not getattr(won, "rowcount", 0):
                continue
            notice = s.get(SlaNotice, notice_id)
            assert notice is not None
            request = requests_service.get(db_session=s, team_id=notice.team_id, request_id=notice.request_id)
            if request is None:
                continue
            target, kind, team_id = notice.target, notice.kind, notice.team_id
            text = _compose(request, target, kind, request_types.policy_for(request.type), now)  # type: ignore[arg-type]
            recipients = _recipients(request)
        _send(for_team(client, team_id), recipients, kind, text)  # type: ignore[arg-type]
        with db.session() as s:
            s.execute(update(SlaNotice).where(SlaNotice.id == notice_id).values(sent_at=utcnow()))


def _claim(s: Session, request: Request, target: Target, kind: Kind, now: datetime) -> bool:
    """Inserts the notice row; False when another worker already has it."""
    try:
        with s.begin_nested():
            s.add(
                SlaNotice(
                    team_id=request.team_id, request_id=request.id, target=target, kind=kind, claimed_at=now
                )
            )
    except IntegrityError:
        return False
    return True


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


def _send(client: WebClient, to: _Recipients, kind: Kind, text: str) -> None:
    """Reminder: the assignee (or the owners when unassigned). Escalation: the triage thread and the owners."""
    people = ([to.assignee] if to.assignee else to.owners) if kind == "reminder" else to.owners
    posts: list[tuple[str, str | None]] = [(user, None) for user in people]
    if kind == "escalation" and to.triage_channel:
        posts.append((to.triage_channel, to.triage_ts))
    for channel, thread_ts in posts:
        try:
            client.chat_postMessage(channel=channel, thread_ts=thread_ts, text=text)
        except SlackApiError as exc:
            logger.warning("SLA %s not delivered to %s: %s", kind, channel, exc.response.get("error"))
