"""Block Kit for feedback: small pure functions that tests can compare."""

from __future__ import annotations

from typing import Any

from bot.feedback.ids import FeedbackAction
from bot.feedback.modal import IMPORTANCE_LABELS, KIND_LABELS
from bot.feedback.schemas import ListQuery
from bot.paging import paging_actions
from storage.models import FeedbackItem, Visibility

Blocks = list[dict[str, Any]]


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def _context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text}]}


def _quote(text: str, limit: int = 280) -> str:
    """A message excerpt as a Slack quote, cut at `limit` characters."""
    short = text if len(text) <= limit else text[: limit - 1].rstrip() + "…"
    return "\n".join("> " + line for line in short.splitlines() or [""])


def _edit_button(item: FeedbackItem) -> dict[str, Any]:
    return {
        "type": "button",
        "action_id": FeedbackAction.edit,
        "text": {"type": "plain_text", "text": "Edit details"},
        "value": str(item.id),
    }


def feedback_confirmation_blocks(item: FeedbackItem, emoji: str = "bulb") -> Blocks:
    """Thread reply confirming that a message was captured as feedback, with an Edit details button."""
    customer = f" for *{item.customer}*" if item.customer else ""
    return [
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": f":{emoji}: Saved as feedback *#{item.id}*{customer} by <@{item.captured_by_user_id}>.",
            },
            "accessory": _edit_button(item),
        },
        _context(
            "Add the customer, kind and tags with *Edit details*. Replies in this thread are kept with it."
        ),
    ]


def feedback_confirmation_text(item: FeedbackItem) -> str:
    """Notification fallback text for the confirmation."""
    return f"Captured as feedback #{item.id}"


def command_confirmation_blocks(item: FeedbackItem, note: str | None = None) -> Blocks:
    """Ephemeral answer after saving from `/feedback` or the modal."""
    customer = f" for *{item.customer}*" if item.customer else ""
    blocks: Blocks = [
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": f":white_check_mark: Feedback *#{item.id}* saved{customer}."},
            "accessory": _edit_button(item),
        },
        _section(_quote(item.text)),
    ]
    if note:
        blocks.append(_context(note))
    return blocks


def feedback_help_blocks(emoji: str) -> Blocks:
    """What `/feedback help` shows."""
    lines = [
        "*Capture customer feedback*",
        f"• React with :{emoji}: to a message (the bot must be in the channel).",
        "• Message menu (⋮) → *Capture feedback* opens a form with customer, kind, tags and importance.",
        "• `/feedback <text>` saves what you type; start with a customer name to link it: "
        "`/feedback Acme: export to CSV drops the last column`.",
        "• `/feedback` on its own opens the form.",
        "• `/feedback list` — recent items; `/feedback list mine`, `/feedback list customer <name>`, "
        "`/feedback list tag <tag>`.",
    ]
    return [_section("\n".join(lines))]


def error_blocks(text: str) -> Blocks:
    """An ephemeral error that tells the user what to do next."""
    return [_section(f":warning: {text}")]


def _item_line(item: FeedbackItem) -> str:
    where = f"<{item.permalink}|#{item.id}>" if item.permalink else f"#{item.id}"
    bits = [where]
    if item.customer:
        bits.append(f"*{item.customer}*")
    if item.kind:
        bits.append(KIND_LABELS.get(item.kind, item.kind))  # type: ignore[call-overload]
    if item.importance:
        bits.append(IMPORTANCE_LABELS.get(item.importance, item.importance))  # type: ignore[call-overload]
    if item.visibility != Visibility.public.value:
        bits.append(":lock: private")
    header = " · ".join(bits)
    tags = " ".join(f"`{t}`" for t in item.tags or [])
    excerpt = item.text if len(item.text) <= 200 else item.text[:199].rstrip() + "…"
    return f"{header}  {tags}\n{excerpt}".strip()


def list_blocks(
    items: list[FeedbackItem], *, title: str, query: ListQuery, page: int, has_more: bool
) -> Blocks:
    """A page of `/feedback list`: one section per item with its permalink, and paging buttons."""
    if not items:
        return [_section(f"*{title}*\nNothing here yet. Capture some with `/feedback <text>` or a reaction.")]
    blocks: Blocks = [_section(f"*{title}* — page {page}")]
    blocks += [_section(_item_line(item)) for item in items]
    paging = paging_actions(FeedbackAction.list_page, query.model_dump(exclude_none=True), page, has_more)
    return [*blocks, paging] if paging else blocks
