"""Block Kit for `/prodops` (help, status, config, admin answers)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from bot.metrics.messaging import format_duration

if TYPE_CHECKING:
    from bot.inbox_admin import QueueSummary

Blocks = list[dict[str, Any]]


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def prodops_help_blocks() -> Blocks:
    """What `/prodops help` shows."""
    return [
        _section(
            "*ProdOps*\n"
            "• `/prodops status` — what is set up in this workspace\n"
            "• `/prodops config` — settings; `/prodops config feedback-emoji <name>` (admins)\n"
            "• `/prodops watch #channel` / `/prodops unwatch #channel` — turn every message in a channel into "
            "feedback (admins)\n"
            "• `/prodops admins list` · `add @user` · `remove @user` (admins)\n"
            "• `/prodops account <name>` — an account's ARR, owner, feedback by theme and open requests\n"
            "• `/prodops duplicates [<link> <ask>]` · `/prodops config retention <N>d|off` (admins)\n"
            "• `/prodops types` — request types, their triage channels, owners and SLAs (admins can edit)\n"
            "• `/request help` — tracking requests\n"
            "• `/feedback help` — capturing feedback"
        )
    ]


def status_blocks(
    *,
    backend: str,
    emoji: str,
    watched: list[str],
    admins: list[str],
    items: int,
    accounts: int,
    similarity: str = "",
    queue: QueueSummary | None = None,
    now: datetime | None = None,
) -> Blocks:
    """`/prodops status` (with the work queue when `queue` and `now` are given)."""
    channels = ", ".join(f"<#{c}>" for c in watched) or "none"
    people = ", ".join(f"<@{u}>" for u in admins) or "only Slack owners and admins"
    blocks = [
        _section(
            f"*ProdOps status*\n"
            f"• Feedback items: *{items:,}* · accounts: *{accounts:,}*\n"
            f"• Feedback reaction: :{emoji}: (`{emoji}`)\n"
            f"• Watched channels: {channels}\n"
            f"• ProdOps admins: {people}\n"
            f"• Database: {backend}" + (f"\n• {similarity}" if similarity else "")
        )
    ]
    if queue is not None and now is not None:
        blocks.append(_section(queue_status_text(queue, now)))
    return blocks


def queue_status_text(queue: QueueSummary, now: datetime) -> str:
    """The work queue in a few lines: waiting, in progress, dead, oldest waiting, insights to work out."""
    age = queue.oldest_waiting_age(now)
    oldest = f" · oldest waiting *{format_duration(age)}*" if age is not None else ""
    text = (
        "*Work queue*\n"
        f"• Deliveries from Slack: *{queue.waiting:,}* waiting · *{queue.in_progress:,}* in progress · "
        f"*{queue.dead:,}* dead{oldest}\n"
        f"• Captured items waiting for insights (themes, duplicates): *{queue.insights_waiting:,}*"
    )
    if queue.dead:
        text += (
            f"\n:warning: {queue.dead:,} {'delivery' if queue.dead == 1 else 'deliveries'} gave up after the "
            "last attempt. On the server, `prodops inbox list --status dead` shows why; "
            "`prodops inbox retry --dead` tries them again."
        )
    return text


def config_blocks(*, emoji: str) -> Blocks:
    """`/prodops config` without arguments."""
    return [
        _section(
            f"*Settings*\n• `feedback-emoji`: :{emoji}: (`{emoji}`)\n"
            "Change one with `/prodops config feedback-emoji <emoji name>` (admins)."
        )
    ]


def notice_blocks(text: str, ok: bool = True) -> Blocks:
    """A one-line answer: done, or what to do instead."""
    return [_section(f"{':white_check_mark:' if ok else ':warning:'} {text}")]


def refusal_blocks(action: str) -> Blocks:
    """The polite no for non-admins, saying who can."""
    return notice_blocks(
        f"Only ProdOps admins can {action}: Slack workspace owners and admins, and people an admin added with "
        "`/prodops admins add @user`. Ask one of them.",
        ok=False,
    )
