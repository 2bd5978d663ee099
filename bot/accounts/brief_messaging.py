"""Block Kit for `/prodops account` and the monthly account brief DM."""

from __future__ import annotations

import enum
from typing import Any

from bot.accounts.brief import AccountBrief
from bot.digests.render import clip, context, escape, format_arr, plural, section

Blocks = list[dict[str, Any]]
MAX_ACCOUNTS_PER_DM = 10
QUOTE = 120


class BriefAction(enum.StrEnum):
    """Action ids of the brief's buttons."""

    subscribe = "account_brief_subscribe"
    unsubscribe = "account_brief_unsubscribe"


def _facts(brief: AccountBrief) -> str:
    arr = format_arr(brief.arr) if brief.arr is not None else "no ARR on record"
    owner = f"<@{brief.owner_user_id}>" if brief.owner_user_id else "no owner"
    parts = [f"ARR {arr}", brief.segment or "no segment", f"owner {owner}"]
    return " · ".join(parts)


def _feedback(brief: AccountBrief) -> str:
    if not brief.items:
        return f"*Feedback in {brief.quarter}:* none yet."
    themes = ", ".join(f"{escape(t.name)} ({t.count})" for t in brief.themes[:8])
    more = f", and {len(brief.themes) - 8} more" if len(brief.themes) > 8 else ""
    return f"*Feedback in {brief.quarter}:* {plural(brief.items, 'item')} — {themes}{more}"


def _latest(brief: AccountBrief) -> str:
    lines = []
    for item in brief.latest:
        quoted = escape(clip(" ".join(item.text.split()), QUOTE))
        link = f"<{item.permalink}|“{quoted}”>" if item.permalink else f"“{quoted}”"
        lines.append(f"• {link} — {escape(item.theme or 'Unsorted')}, {item.created_at:%-d %b}")
    return "*Latest:*\n" + "\n".join(lines)


def _requests(brief: AccountBrief) -> str:
    if not brief.requests:
        return "*Open requests:* none."
    lines = [
        f"• {f'<{r.link}|#{r.id} {escape(r.title)}>' if r.link else f'#{r.id} {escape(r.title)}'} — "
        f"{r.status.replace('_', ' ')}"
        for r in brief.requests
    ]
    return "*Open requests:*\n" + "\n".join(lines)


def account_brief_blocks(
    brief: AccountBrief, *, viewer_is_owner: bool = False, subscribed: bool = False
) -> Blocks:
    """`/prodops account <name>`: facts, feedback by theme this quarter, latest items, open requests."""
    title = f"*{escape(brief.name)}*" + (f" · {escape(brief.domain)}" if brief.domain else "")
    blocks: Blocks = [section(f"{title}\n{_facts(brief)}"), section(_feedback(brief))]
    if brief.latest:
        blocks.append(section(_latest(brief)))
    elif brief.items:
        blocks.append(context("Its items this quarter are in private conversations you are not in."))
    blocks.append(section(_requests(brief)))
    if viewer_is_owner:
        button = (
            {
                "type": "button",
                "action_id": BriefAction.unsubscribe.value,
                "text": {"type": "plain_text", "text": "Stop my monthly brief"},
                "value": "unsubscribe",
            }
            if subscribed
            else {
                "type": "button",
                "action_id": BriefAction.subscribe.value,
                "style": "primary",
                "text": {"type": "plain_text", "text": "Subscribe to a monthly brief of my accounts"},
                "value": "subscribe",
            }
        )
        blocks.append({"type": "actions", "elements": [button]})
    blocks.append(
        context("Requests are matched by the account's name or domain, or opened from its feedback.")
    )
    return blocks


def monthly_brief_blocks(briefs: list[AccountBrief], period: str) -> Blocks:
    """The monthly DM: each of the owner's accounts in a few lines (public items only are quoted)."""
    blocks: Blocks = [section(f"*:briefcase: Your accounts — {period}*")]
    for brief in briefs[:MAX_ACCOUNTS_PER_DM]:
        lines = [f"*{escape(brief.name)}* — {_facts(brief)}", _feedback(brief)]
        if brief.latest:
            lines.append(_latest(brief))
        lines.append(_requests(brief))
        blocks.append(section(clip("\n".join(lines), 2900)))
    if len(briefs) > MAX_ACCOUNTS_PER_DM:
        blocks.append(context(f"…and {len(briefs) - MAX_ACCOUNTS_PER_DM} more: `/prodops account <name>`."))
    blocks.append(
        context("Monthly, on the first working day. Stop it with `/prodops account <name>` → *Stop*.")
    )
    return blocks


def monthly_brief_text(briefs: list[AccountBrief], period: str) -> str:
    """Notification text of the monthly DM."""
    return f"Your accounts — {period}: {plural(len(briefs), 'account')}"


def not_found_blocks(query: str, close: list[str]) -> Blocks:
    """Unknown account: close names, and what to do."""
    hint = f" Did you mean {', '.join(f'*{escape(n)}*' for n in close)}?" if close else ""
    return [
        section(
            f":warning: No account matches “{escape(query)}”.{hint} Use `/prodops account <name or domain>`; "
            "accounts come from `prodops import accounts FILE.csv`."
        )
    ]


def ambiguous_blocks(query: str, names: list[str]) -> Blocks:
    """Several accounts match: name them."""
    listed = ", ".join(f"*{escape(n)}*" for n in names)
    return [section(f":warning: “{escape(query)}” matches {listed}. Give the full name or the domain.")]
