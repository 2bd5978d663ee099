"""Block Kit for request reports: `/request list`, `/request stats` and App Home. Small pure functions."""

from __future__ import annotations

import enum
from datetime import datetime, timedelta
from typing import Any

from bot.paging import paging_actions
from bot.requests import messaging, sla
from bot.requests import types as request_types
from bot.requests.metrics import Durations, MetricsRow, RequestMetrics, TypeMetrics
from storage.models import FeedbackItem, Request, RequestPriority, RequestStatus

Blocks = list[dict[str, Any]]

DEFAULT_DAY = timedelta(hours=8)
HOME_LIMIT = 10
STATS_TYPE_LINES = 10  # keeps the section under Block Kit's 3000 characters


class ReportAction(enum.StrEnum):
    """Action ids of the list's paging buttons and the App Home buttons (value: the request id)."""

    list_page = "rq_list_page"  # + "_<page>"
    home_start = "rq_home_start"
    home_waiting = "rq_home_waiting"
    home_done = "rq_home_done"


HOME_TRANSITIONS = {
    ReportAction.home_start: RequestStatus.in_progress,
    ReportAction.home_waiting: RequestStatus.waiting,
    ReportAction.home_done: RequestStatus.done,
}
HOW_TO = (
    "*How to*\n"
    "• `/request <what you need>` or `/request` (the form) asks Product Ops for something; "
    "react with :ticket: or use the message menu → *Create request* to turn a message into one.\n"
    "• `/request list [mine|assigned|overdue|type <name>]` lists requests; "
    "`/request stats [type]` shows the last 7 days.\n"
    "• `/feedback <text>`, the :bulb: reaction or the message menu → *Capture feedback* saves customer "
    "feedback; `/feedback list mine` lists yours."
)


def escape(text: str) -> str:
    """Text made safe inside mrkdwn and links (Slack's three escapes)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def _context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text}]}


def _button(label: str, action_id: str, value: str, style: str | None = None) -> dict[str, Any]:
    button: dict[str, Any] = {
        "type": "button",
        "action_id": action_id,
        "text": {"type": "plain_text", "text": label},
        "value": value,
    }
    if style:
        button["style"] = style
    return button


def error_blocks(text: str) -> Blocks:
    """An ephemeral error that tells the user what to do next."""
    return [_section(f":warning: {text}")]


# ---- one request ------------------------------------------------------------------------------------


def request_link(request: Request) -> str:
    """`#id title`, linked to the triage channel when the card was posted."""
    label = f"#{request.id} {escape(request.title)}"
    if request.triage_channel_id and request.triage_ts:
        return f"<https://slack.com/app_redirect?channel={request.triage_channel_id}|{label}>"
    return f"*{label}*"


def request_line(request: Request, now: datetime) -> str:
    """Two lines: the linked title, then status, priority, assignee and the SLA phrase."""
    policy = request_types.policy_for(request.type)
    assignee = f"<@{request.assignee_user_id}>" if request.assignee_user_id else "_unassigned_"
    details = " · ".join(
        [
            messaging.STATUS_LABELS[RequestStatus(request.status)],
            messaging.PRIORITY_LABELS[RequestPriority(request.priority)],
            assignee,
            messaging.sla_line(request, policy, now),
        ]
    )
    return f"{request_link(request)}\n{details}"


# ---- /request list ----------------------------------------------------------------------------------


def list_blocks(
    requests: list[Request], *, title: str, state: dict[str, Any], page: int, has_more: bool, now: datetime
) -> Blocks:
    """A page of `/request list`: one section per request, and Newer / Older buttons carrying `state`."""
    if not requests and page == 1:
        return [_section(f"*{title}*\nNothing here. Ask for something with `/request <what you need>`.")]
    blocks: Blocks = [_section(f"*{title}* — page {page}")]
    blocks += [_section(request_line(r, now)) for r in requests]
    paging = paging_actions(ReportAction.list_page, state, page, has_more)
    return [*blocks, paging] if paging else blocks


# ---- /request stats ---------------------------------------------------------------------------------


def _duration(value: timedelta | None, day: timedelta) -> str:
    return "—" if value is None else sla.humanize(value, day=day)


def percent(rate: float | None) -> str:
    """0.25 → '25%', None → '—'."""
    return "—" if rate is None else f"{rate * 100:.0f}%"


def _breach(row: MetricsRow) -> str:
    return f"{percent(row.breach_rate)} ({row.breached} of {row.judged})" if row.judged else "—"


def _p50_p90(durations: Durations, day: timedelta) -> str:
    return f"{_duration(durations.p50, day)} / {_duration(durations.p90, day)}"


def stats_blocks(current: RequestMetrics, previous: RequestMetrics, *, title: str, day: timedelta) -> Blocks:
    """`/request stats`: the last period against the one before, and one line per type when not filtered."""
    now, before = current.total, previous.total

    def field(name: str, this: str, that: str | None = None) -> dict[str, str]:
        text = f"*{name}*\n{this}" + (f"  _(before: {that})_" if that is not None else "")
        return {"type": "mrkdwn", "text": text}

    blocks: Blocks = [
        _section(f"*{title}* — last 7 days, compared with the 7 days before"),
        {
            "type": "section",
            "fields": [
                field("Opened", str(now.opened), str(before.opened)),
                field("Closed", str(now.closed), str(before.closed)),
                field("Open now", str(now.open_now)),
                field("Overdue now", str(now.overdue_now)),
                field(
                    "First response p50 / p90",
                    _p50_p90(now.first_response, day),
                    _p50_p90(before.first_response, day),
                ),
                field(
                    "Resolution p50 / p90", _p50_p90(now.resolution, day), _p50_p90(before.resolution, day)
                ),
                field("SLA breach rate", _breach(now), _breach(before)),
            ],
        },
    ]
    if current.type_id is None and current.by_type:
        lines = [type_stats_line(row, day) for row in current.by_type[:STATS_TYPE_LINES]]
        hidden = len(current.by_type) - len(lines)
        if hidden > 0:
            lines.append(f"_and {hidden} more types — `/request stats <type name>`_")
        blocks.append(_section("*Per type (last 7 days)*\n" + "\n".join(lines)))
    blocks.append(
        _context(
            "Times are business time on each type's calendar "
            f"(1d = {day / timedelta(hours=1):g}h). Breach rate: requests closed late or past "
            "due while open, of those closed or due in the period."
        )
    )
    return blocks


def type_stats_line(row: TypeMetrics, day: timedelta) -> str:
    """One type's row in `/request stats`."""
    name = escape(row.type_name if len(row.type_name) <= 60 else row.type_name[:59] + "…")
    return (
        f"• *{name}*: opened {row.opened} · closed {row.closed} · open {row.open_now} · "
        f"overdue {row.overdue_now} · first response p50 {_duration(row.first_response.p50, day)} · "
        f"resolution p50 {_duration(row.resolution.p50, day)} · breach {percent(row.breach_rate)}"
    )


# ---- App Home ---------------------------------------------------------------------------------------


def _more(shown: int, total: int, command: str) -> dict[str, Any] | None:
    if total <= shown:
        return None
    return _context(f"and {total - shown} more — `{command}`")


def home_request_actions(request: Request) -> dict[str, Any]:
    """Start / Waiting / Done for one assigned request (only the moves its status allows)."""
    status = RequestStatus(request.status)
    value = str(request.id)
    buttons = []
    if status in (RequestStatus.new, RequestStatus.waiting):
        buttons.append(_button("Start", ReportAction.home_start, value))
    if status in (RequestStatus.new, RequestStatus.in_progress):
        buttons.append(_button("Waiting", ReportAction.home_waiting, value))
    buttons.append(_button("Done", ReportAction.home_done, value, style="primary"))
    return {"type": "actions", "block_id": f"rq_home_{request.id}", "elements": buttons}


def feedback_line(item: FeedbackItem) -> str:
    """One of the user's recent captures, linked to its message."""
    where = f"<{item.permalink}|#{item.id}>" if item.permalink else f"#{item.id}"
    text = " ".join(item.text.split())
    excerpt = text if len(text) <= 120 else text[:119].rstrip() + "…"
    return f"{where} {escape(excerpt)}  _{item.created_at:%d %b}_"


def home_blocks(
    *,
    asked: list[Request],
    asked_total: int,
    assigned: list[Request],
    assigned_total: int,
    feedback: list[FeedbackItem],
    now: datetime,
    notice: str | None = None,
) -> Blocks:
    """The App Home tab: your requests, requests assigned to you, your recent feedback, and how to."""
    blocks: Blocks = []
    if notice:
        blocks.append(_section(f":warning: {notice}"))
    blocks.append({"type": "header", "text": {"type": "plain_text", "text": "Requests you asked for"}})
    blocks += [_section(request_line(r, now)) for r in asked] or [_context("Nothing open.")]
    if more := _more(len(asked), asked_total, "/request list mine"):
        blocks.append(more)
    blocks.append({"type": "divider"})
    blocks.append({"type": "header", "text": {"type": "plain_text", "text": "Assigned to you"}})
    for request in assigned:
        blocks += [_section(request_line(request, now)), home_request_actions(request)]
    if not assigned:
        blocks.append(_context("Nothing open is assigned to you."))
    if more := _more(len(assigned), assigned_total, "/request list assigned"):
        blocks.append(more)
    blocks.append({"type": "divider"})
    blocks.append({"type": "header", "text": {"type": "plain_text", "text": "Your recent feedback"}})
    blocks += [_section(feedback_line(i)) for i in feedback] or [
        _context("You have not captured any feedback yet.")
    ]
    blocks += [{"type": "divider"}, _section(HOW_TO)]
    return blocks


def home_view(blocks: Blocks) -> dict[str, Any]:
    """The view object for `views.publish`."""
    return {"type": "home", "blocks": blocks}
