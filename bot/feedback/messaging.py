"""Block Kit for feedback: small pure functions that tests can compare."""

from __future__ import annotations

from typing import Any

from storage.models import FeedbackItem

Blocks = list[dict[str, Any]]


def _context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text}]}


def _quote(text: str, limit: int = 280) -> str:
    """A message excerpt as a Slack quote, cut at `limit` characters."""
    short = text if len(text) <= limit else text[: limit - 1].rstrip() + "…"
    return "\n".join("> " + line for line in short.splitlines() or [""])


def feedback_confirmation_blocks(item: FeedbackItem, emoji: str = "bulb") -> Blocks:
    """Thread reply confirming that a message was captured as feedback."""
    return [
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": f":{emoji}: Saved as feedback *#{item.id}* by <@{item.captured_by_user_id}>.",
            },
        },
        _context(f"Anyone can add feedback: react with :{emoji}: to a message, or type `/feedback <text>`."),
    ]


def feedback_confirmation_text(item: FeedbackItem) -> str:
    """Notification fallback text for the confirmation."""
    return f"Captured as feedback #{item.id}"


def command_confirmation_blocks(item: FeedbackItem) -> Blocks:
    """Ephemeral answer to `/feedback <text>`."""
    customer = f" for *{item.customer}*" if item.customer else ""
    return [
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": f":white_check_mark: Feedback *#{item.id}* saved{customer}."},
        },
        {"type": "section", "text": {"type": "mrkdwn", "text": _quote(item.text)}},
    ]


def feedback_help_blocks(emoji: str) -> Blocks:
    """What `/feedback help` shows."""
    lines = [
        "*Capture customer feedback*",
        f"• React with :{emoji}: to any message to capture it (the bot must be in the channel).",
        "• `/feedback <text>` saves what you type, e.g. `/feedback Acme: export to CSV drops the last column`.",
        "• `/feedback help` shows this message.",
    ]
    return [{"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)}}]


def error_blocks(text: str) -> Blocks:
    """An ephemeral error that tells the user what to do next."""
    return [{"type": "section", "text": {"type": "mrkdwn", "text": f":warning: {text}"}}]
