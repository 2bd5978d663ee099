"""Requests service: opening, the lifecycle, permissions, first response and the SLA clock. No Slack here."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bot.requests import sla
from bot.requests.schemas import RequestCreate
from storage.models import Request, RequestEvent, RequestPriority, RequestStatus, RequestType

OPEN_STATUSES = (RequestStatus.new.value, RequestStatus.in_progress.value, RequestStatus.waiting.value)
CLOSED_STATUSES = (RequestStatus.done.value, RequestStatus.declined.value)
TRANSITIONS: dict[RequestStatus, set[RequestStatus]] = {
    RequestStatus.new: {
        RequestStatus.in_progress,
        RequestStatus.waiting,
        RequestStatus.done,
        RequestStatus.declined,
    },
    RequestStatus.in_progress: {RequestStatus.waiting, RequestStatus.done, RequestStatus.declined},
    RequestStatus.waiting: {RequestStatus.in_progress, RequestStatus.done, RequestStatus.declined},
    RequestStatus.done: {RequestStatus.in_progress},  # reopen
    RequestStatus.declined: {RequestStatus.in_progress},  # reopen
}


class RequestError(Exception):
    """A change that cannot be made; the message is for the person who tried."""


class NotAllowed(RequestError):
    """The person may not make this change."""


@dataclass(frozen=True)
class Actor:
    """Who is acting, and whether they are a ProdOps admin."""

    user_id: str
    is_admin: bool = False


def get(*, db_session: Session, team_id: str, request_id: int) -> Request | None:
    """Gets a request by id, within one workspace."""
    return db_session.scalar(select(Request).where(Request.team_id == team_id, Request.id == request_id))


def get_by_message(*, db_session: Session, team_id: str, channel_id: str, message_ts: str) -> Request | None:
    """The request opened from one Slack message, if any."""
    return db_session.scalar(
        select(Request).where(
            Request.team_id == team_id, Request.channel_id == channel_id, Request.message_ts == message_ts
        )
    )


def find_by_thread(*, db_session: Session, team_id: str, channel_id: str, thread_ts: str) -> Request | None:
    """The request whose triage thread or requester thread this is."""
    return db_session.scalar(
        select(Request).where(
            Request.team_id == team_id,
            or_(
                (Request.triage_channel_id == channel_id) & (Request.triage_ts == thread_ts),
                (Request.reply_channel_id == channel_id) & (Request.reply_thread_ts == thread_ts),
            ),
        )
    )


def _event(
    db_session: Session,
    request: Request,
    actor: str | None,
    kind: str,
    old: str | None,
    new: str | None,
    at: datetime,
) -> RequestEvent:
    event = RequestEvent(
        team_id=request.team_id,
        request_id=request.id,
        actor_user_id=actor,
        kind=kind,
        from_value=old,
        to_value=new,
        at=at,
    )
    db_session.add(event)
    return event


def _schedule(request: Request, policy: sla.SlaPolicy, start: datetime) -> None:
    """Sets the due and reminder times of both targets from `start` at the request's priority."""
    priority = sla.Priority(request.priority)
    if request.first_response_at is None:
        request.first_response_due_at = sla.first_response_due(policy, priority, start)
        request.first_response_remind_at = sla.reminder_at(policy, priority, start, "first_response")
    request.due_at = sla.resolution_due(policy, priority, start)
    request.resolution_remind_at = sla.reminder_at(policy, priority, start, "resolution")
    refresh_sla_next_check(request)


def refresh_sla_next_check(request: Request) -> None:
    """Keeps `sla_next_check_at` at the earliest reminder or breach still to be announced."""
    pending: list[datetime] = []
    if request.status in OPEN_STATUSES and request.first_response_at is None:
        if request.first_response_remind_at is not None:
            pending.append(request.first_response_remind_at)
        if request.first_response_due_at is not None and request.first_response_escalated_at is None:
            pending.append(request.first_response_due_at)
    if request.status in (RequestStatus.new.value, RequestStatus.in_progress.value):
        if request.resolution_remind_at is not None:
            pending.append(request.resolution_remind_at)
        if request.due_at is not None and request.resolution_escalated_at is None:
            pending.append(request.due_at)
    request.sla_next_check_at = min(pending) if pending else None


def open_request(
    *,
    db_session: Session,
    request_in: RequestCreate,
    request_type: RequestType,
    policy: sla.SlaPolicy,
    now: datetime,
) -> tuple[Request, bool]:
    """Opens a request (once per message or delivery); returns (request, created)."""
    request = Request(
        team_id=request_in.team_id,
        type_id=request_type.id,
        title=request_in.title,
        details=request_in.details,
        field_values=request_in.field_values,
        priority=(request_in.priority or RequestPriority(request_type.default_priority)).value,
        status=RequestStatus.new.value,
        requester_user_id=request_in.requester_user_id,
        channel_id=request_in.channel_id,
        message_ts=request_in.message_ts,
        permalink=request_in.permalink,
        reply_channel_id=request_in.reply_channel_id,
        reply_thread_ts=request_in.reply_thread_ts,
        triage_channel_id=request_type.triage_channel_id or request_in.channel_id,
        source=request_in.source,
        delivery_id=request_in.delivery_id,
        created_at=now,
    )
    _schedule(request, policy, now)
    try:
        with db_session.begin_nested():
            db_session.add(request)
            db_session.flush()
            _event(
                db_session,
                request,
                request_in.requester_user_id,
                "created",
                None,
                RequestStatus.new.value,
                now,
            )
    except IntegrityError:
        existing = _existing(db_session, request_in)
        if existing is None:
            raise
        return existing, False
    return request, True


def _existing(db_session: Session, request_in: RequestCreate) -> Request | None:
    if request_in.message_ts:
        return get_by_message(
            db_session=db_session,
            team_id=request_in.team_id,
            channel_id=request_in.channel_id,
            message_ts=request_in.message_ts,
        )
    if request_in.delivery_id:
        return db_session.scalar(
            select(Request).where(
                Request.team_id == request_in.team_id, Request.delivery_id == request_in.delivery_id
            )
        )
    return None


def may_manage(request: Request, actor: Actor) -> bool:
    """Assignee, the type's owners and admins may change a request."""
    return (
        actor.is_admin
        or actor.user_id == request.assignee_user_id
        or actor.user_id in (request.type.owners or [])
    )


def record_first_response(
    *, db_session: Session, request: Request, user_id: str | None, now: datetime
) -> bool:
    """The first reply, claim or change by someone other than the requester stops the first-response clock."""
    if request.first_response_at is not None or not user_id or user_id == request.requester_user_id:
        return False
    request.first_response_at = now
    request.first_response_remind_at = None
    refresh_sla_next_check(request)
    _event(db_session, request, user_id, "first_response", None, None, now)
    return True


def change_status(
    *,
    db_session: Session,
    request: Request,
    to: RequestStatus,
    actor: Actor,
    policy: sla.SlaPolicy,
    now: datetime,
) -> RequestEvent:
    """Moves a request along its lifecycle, pausing the resolution clock while it is waiting."""
    current = RequestStatus(request.status)
    if to == current:
        raise RequestError(f"It is already {to.value.replace('_', ' ')}.")
    cancelling = actor.user_id == request.requester_user_id and to == RequestStatus.declined
    if not (cancelling or may_manage(request, actor)):
        raise NotAllowed(
            "Only the assignee, the request type's owners or a ProdOps admin can change this request "
            "(the requester can cancel it)."
        )
    if to not in TRANSITIONS[current]:
        raise RequestError(
            f"A {current.value.replace('_', ' ')} request cannot move to {to.value.replace('_', ' ')}."
        )
    if current == RequestStatus.waiting and request.waiting_since is not None:
        if request.due_at is not None:
            request.due_at = sla.resume_after_waiting(policy, request.due_at, request.waiting_since, now)
        if request.resolution_remind_at is not None:
            request.resolution_remind_at = sla.resume_after_waiting(
                policy, request.resolution_remind_at, request.waiting_since, now
            )
        request.waiting_since = None
    if to == RequestStatus.waiting:
        request.waiting_since = now
    if to.value in CLOSED_STATUSES:
        request.resolved_at = now
    elif current.value in CLOSED_STATUSES:  # reopened: the resolution clock starts again
        request.resolved_at = None
        priority = sla.Priority(request.priority)
        request.due_at = sla.resolution_due(policy, priority, now)
        request.resolution_remind_at = sla.reminder_at(policy, priority, now, "resolution")
    request.status = to.value
    record_first_response(db_session=db_session, request=request, user_id=actor.user_id, now=now)
    refresh_sla_next_check(request)
    return _event(db_session, request, actor.user_id, "status", current.value, to.value, now)


def assign(
    *, db_session: Session, request: Request, assignee_user_id: str, actor: Actor, now: datetime
) -> RequestEvent:
    """Sets the assignee; anyone may take an unassigned request, reassigning needs manage rights."""
    taking_unassigned = request.assignee_user_id is None and assignee_user_id == actor.user_id
    if not (taking_unassigned or may_manage(request, actor)):
        raise NotAllowed("Only the assignee, the request type's owners or a ProdOps admin can reassign it.")
    if request.assignee_user_id == assignee_user_id:
        raise RequestError("That person is already assigned.")
    old = request.assignee_user_id
    request.assignee_user_id = assignee_user_id
    if request.status == RequestStatus.new.value:
        request.status = RequestStatus.in_progress.value
        _event(
            db_session,
            request,
            actor.user_id,
            "status",
            RequestStatus.new.value,
            RequestStatus.in_progress.value,
            now,
        )
    record_first_response(db_session=db_session, request=request, user_id=actor.user_id, now=now)
    return _event(db_session, request, actor.user_id, "assignee", old, assignee_user_id, now)


def set_priority(
    *,
    db_session: Session,
    request: Request,
    priority: RequestPriority,
    actor: Actor,
    policy: sla.SlaPolicy,
    now: datetime,
) -> RequestEvent:
    """Changes the priority; the SLA targets are recomputed from when the request was opened."""
    if not may_manage(request, actor):
        raise NotAllowed(
            "Only the assignee, the request type's owners or a ProdOps admin can change the priority."
        )
    if request.priority == priority.value:
        raise RequestError(f"It is already {priority.value}.")
    old = request.priority
    request.priority = priority.value
    waiting_since = request.waiting_since
    _schedule(request, policy, request.created_at)
    if waiting_since is not None and request.due_at is not None:
        request.due_at = sla.resume_after_waiting(policy, request.due_at, waiting_since, now)
    refresh_sla_next_check(request)
    record_first_response(db_session=db_session, request=request, user_id=actor.user_id, now=now)
    return _event(db_session, request, actor.user_id, "priority", old, priority.value, now)


def events(*, db_session: Session, team_id: str, request_id: int) -> list[RequestEvent]:
    """A request's history, oldest first."""
    return list(
        db_session.scalars(
            select(RequestEvent)
            .where(RequestEvent.team_id == team_id, RequestEvent.request_id == request_id)
            .order_by(RequestEvent.at, RequestEvent.id)
        )
    )
