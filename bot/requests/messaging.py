"""Block Kit for requests: the triage card, the requester's notices, SLA reminders. Small pure functions."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from bot.requests import sla
from bot.requests.ids import RequestAction
from storage.models import Request, RequestPriority, RequestStatus

Blocks = list[dict[str, Any]]

STATUS_LABELS = {
    RequestStatus.new: ":new: New",
    RequestStatus.in_progress: ":hammer_and_wrench: In progress",
    RequestStatus.waiting: ":hourglass_flowing_sand: Waiting",
    RequestStatus.done: ":white_check_mark: Done",
    RequestStatus.declined: ":no_entry_sign: Declined",
}
PRIORITY_LABELS = {
    RequestPriority.urgent: ":red_circle: Urgent",
    RequestPriority.high: ":large_orange_circle: High",
    RequestPriority.normal: ":large_blue_circle: Normal",
    RequestPriority.low: ":white_circle: Low",
}


def _plain(text: str) -> dict[str, Any]:
    return {"type": "plain_text", "text": text, "emoji": True}


def _option(label: str, value: str) -> dict[str, Any]:
    return {"text": _plain(label), "value": value}


def sla_line(request: Request, policy: sla.SlaPolicy, now: datetime) -> str:
    """The SLA clock as a person reads it: what is due next, and when."""
    if request.status in (RequestStatus.done.value, RequestStatus.declined.value):
        return "Closed"
    parts = []
    if request.first_response_at is None and request.first_response_due_at is not None:
        parts.append(_due_phrase("first response", policy, request.first_response_due_at, now))
    if request.status == RequestStatus.waiting.value:
        parts.append("resolution clock paused (waiting)")
    elif request.due_at is not None:
        parts.append(_due_phrase("resolution", policy, request.due_at, now))
    return " · ".join(parts) or "No SLA"


def working_day(policy: sla.SlaPolicy) -> timedelta:
    """The length of one working day of the policy's calendar ("1d" in SLA texts means this)."""
    calendar = policy.calendar
    if calendar.all_day:
        return timedelta(days=1)
    start = datetime.combine(datetime.min, calendar.start)
    return datetime.combine(datetime.min, calendar.end) - start


def _due_phrase(what: str, policy: sla.SlaPolicy, due_at: datetime, now: datetime) -> str:
    left = sla.remaining(policy, due_at, now)
    text = sla.humanize(left, day=working_day(policy))
    if left.total_seconds() < 0:
        return f":rotating_light: {what} {text}"
    return f"{what} due in {text} (business time)"


def triage_card_blocks(request: Request, policy: sla.SlaPolicy, now: datetime) -> Blocks:
    """The card in the triage channel, updated in place on every change."""
    status = RequestStatus(request.status)
    priority = RequestPriority(request.priority)
    assignee = f"<@{request.assignee_user_id}>" if request.assignee_user_id else "_unassigned_"
    source = f" · <{request.permalink}|original message>" if request.permalink else ""
    blocks: Blocks = [
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": f"*#{request.id} {request.title}*\n{request.type.name}{source}",
            },
        },
        {
            "type": "section",
            "fields": [
                {"type": "mrkdwn", "text": f"*Requester*\n<@{request.requester_user_id}>"},
                {"type": "mrkdwn", "text": f"*Assignee*\n{assignee}"},
                {"type": "mrkdwn", "text": f"*Status*\n{STATUS_LABELS[status]}"},
                {"type": "mrkdwn", "text": f"*Priority*\n{PRIORITY_LABELS[priority]}"},
            ],
        },
    ]
    if request.details:
        details = request.details if len(request.details) <= 500 else request.details[:499] + "…"
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": details}})
    extra = [
        f"*{k}*: {', '.join(v) if isinstance(v, list) else v}"
        for k, v in (request.field_values or {}).items()
        if v
    ]
    if extra:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": " · ".join(extra)}]})
    blocks.append(
        {
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": f":stopwatch: {sla_line(request, policy, now)}"}],
        }
    )
    blocks.append(
        {
            "type": "actions",
            "block_id": f"rq_card_{request.id}",
            "elements": [
                {
                    "type": "button",
                    "action_id": RequestAction.assign_me,
                    "text": _plain("Assign to me"),
                    "value": str(request.id),
                },
                {
                    "type": "users_select",
                    "action_id": RequestAction.assign_user,
                    "placeholder": _plain("Assign…"),
                },
                {
                    "type": "static_select",
                    "action_id": RequestAction.set_priority,
                    "placeholder": _plain("Priority"),
                    "options": [_option(label, p.value) for p, label in PRIORITY_LABELS.items()],
                },
                {
                    "type": "static_select",
                    "action_id": RequestAction.set_status,
                    "placeholder": _plain("Status"),
                    "options": [_option(label, s.value) for s, label in STATUS_LABELS.items()],
                },
            ],
        }
    )
    return blocks


def card_text(request: Request) -> str:
    """Notification fallback for the card."""
    return f"Request #{request.id}: {request.title} ({request.status.replace('_', ' ')})"


def requester_confirmation_blocks(request: Request, policy: sla.SlaPolicy, now: datetime) -> Blocks:
    """Told to the requester where they asked (thread or DM)."""
    where = f" in <#{request.triage_channel_id}>" if request.triage_channel_id else ""
    return [
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": f":ticket: Request *#{request.id}* “{request.title}” is open{where}. "
                f"You'll hear here when its status changes.",
            },
        },
        {
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": f":stopwatch: {sla_line(request, policy, now)}"}],
        },
    ]


def status_notice_text(request: Request, actor_user_id: str | None, old: str | None, new: str | None) -> str:
    """One line for the requester's thread when something they care about changed."""
    by = f" by <@{actor_user_id}>" if actor_user_id else ""
    old_label = STATUS_LABELS.get(RequestStatus(old), old) if old else "?"
    new_label = STATUS_LABELS.get(RequestStatus(new), new) if new else "?"
    return f"Request *#{request.id}* moved from {old_label} to {new_label}{by}."


def reminder_text(request: Request, target: str, policy: sla.SlaPolicy, now: datetime) -> str:
    """The 75% reminder."""
    due = request.first_response_due_at if target == "first_response" else request.due_at
    left = sla.humanize(sla.remaining(policy, due, now), day=working_day(policy)) if due else "soon"
    what = "a first response" if target == "first_response" else "resolution"
    link = f"<https://slack.com/app_redirect?channel={request.triage_channel_id}|#{request.id}>"
    return f":alarm_clock: Request {link} “{request.title}” needs {what} within {left} (SLA)."


def escalation_text(request: Request, target: str) -> str:
    """At breach: in the triage thread and to the type's owners."""
    what = "first response" if target == "first_response" else "resolution"
    owners = " ".join(f"<@{u}>" for u in request.type.owners or [])
    return f":rotating_light: SLA breached: request *#{request.id}* “{request.title}” is past its {what} target. {owners}".strip()
