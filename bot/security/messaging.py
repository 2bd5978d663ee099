"""Block Kit for data-rights answers in Slack (`/prodops config retention`)."""

from __future__ import annotations

from typing import Any

from bot.security.retention import MAX_DAYS, MIN_DAYS

Blocks = list[dict[str, Any]]

RETENTION_HELP = (
    f"`/prodops config retention <N>d` ({MIN_DAYS}d–{MAX_DAYS}d) deletes feedback, closed requests and "
    "delivered digests older than that, every hour; `/prodops config retention off` keeps everything (admins)."
)


def retention_setting_blocks(days: int | None) -> Blocks:
    """The retention line shown under `/prodops config`."""
    now = f"*{days} days*" if days else "*off* (everything is kept)"
    return [
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": f"• `retention`: {now}\n{RETENTION_HELP}"},
        }
    ]


def retention_changed_text(days: int | None) -> str:
    """What an admin is told after changing the retention."""
    if days is None:
        return "Retention is off: feedback, requests and digests are kept until you delete them."
    return (
        f"Retention is now {days} days: within the hour, and every hour after, feedback, closed requests and "
        f"delivered digests older than {days} days are deleted. Metric points are kept. "
        "`/prodops config retention off` stops it."
    )
