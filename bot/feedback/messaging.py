"""Block Kit for feedback: small pure functions that tests can compare."""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any

from bot.feedback.ids import FeedbackAction
from bot.feedback.modal import IMPORTANCE_LABELS, KIND_LABELS
from bot.feedback.schemas import ListQuery
from bot.paging import paging_actions
from storage.models import FeedbackItem, Visibility

if TYPE_CHECKING:
    from bot.insights.capture_hook import DuplicateNotice
    from bot.insights.duplicates import Thresholds

Blocks = list[dict[str, Any]]

DUPLICATE_BLOCK_PREFIX = (
    "dup_"  # block ids of the duplicate part of a confirmation, replaced after a decision
)


class DuplicateAction(enum.StrEnum):
    """Action ids of the duplicate buttons (their value is the suggestion id)."""

    undo = "dup_undo"
    merge = "dup_merge"
    reject = "dup_reject"


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


def feedback_confirmation_blocks(
    item: FeedbackItem,
    emoji: str = "bulb",
    duplicate: DuplicateNotice | None = None,
    *,
    theme_name: str | None = None,
) -> Blocks:
    """Thread reply confirming that a message was captured as feedback, with an Edit details button.

    Once the insights have run it is updated with the theme the item joined and a duplicate found at
    capture: linked (with Undo) or asked (Merge / Not a duplicate).
    """
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
        *theme_blocks(theme_name),
        *duplicate_blocks(duplicate),
    ]


def theme_blocks(theme_name: str | None) -> Blocks:
    """The theme an item joined at capture, under its confirmation (nothing while it is unsorted)."""
    if not theme_name:
        return []
    name = theme_name.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return [{**_context(f":card_index_dividers: Theme: *{name}*"), "block_id": "theme"}]


def feedback_confirmation_text(item: FeedbackItem, duplicate: DuplicateNotice | None = None) -> str:
    """Notification fallback text for the confirmation."""
    return f"Captured as feedback #{item.id}{_duplicate_suffix(duplicate)}"


def command_confirmation_text(item: FeedbackItem, duplicate: DuplicateNotice | None = None) -> str:
    """Fallback text of the ephemeral answer after `/feedback <text>` or the form."""
    return f"Feedback #{item.id} saved{_duplicate_suffix(duplicate)}"


def _duplicate_suffix(duplicate: DuplicateNotice | None) -> str:
    if duplicate is not None and duplicate.status == "linked":
        return f", linked as a duplicate of #{duplicate.candidate_id}"
    if duplicate is not None and duplicate.status == "asked":
        return f"; is it a duplicate of #{duplicate.candidate_id}?"
    return ""


def command_confirmation_blocks(
    item: FeedbackItem, note: str | None = None, duplicate: DuplicateNotice | None = None
) -> Blocks:
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
    return [*blocks, *duplicate_blocks(duplicate)]


def _candidate_ref(notice: DuplicateNotice) -> str:
    """`#12 “first words…”`, linked to the message when it has a permalink."""
    excerpt = " ".join(notice.candidate_text.split())
    excerpt = excerpt if len(excerpt) <= 60 else excerpt[:59].rstrip() + "…"
    label = f"#{notice.candidate_id} “{excerpt}”".replace(">", "›").replace("|", "¦")
    return f"<{notice.candidate_permalink}|{label}>" if notice.candidate_permalink else f"*{label}*"


def _button(
    action: DuplicateAction, text: str, notice: DuplicateNotice, style: str | None = None
) -> dict[str, Any]:
    button: dict[str, Any] = {
        "type": "button",
        "action_id": action,
        "text": {"type": "plain_text", "text": text},
        "value": str(notice.suggestion_id),
    }
    if style:
        button["style"] = style
    return button


def duplicate_blocks(notice: DuplicateNotice | None) -> Blocks:
    """The duplicate part of a confirmation: the link with *Undo*, the question, or the decision and who made it."""
    if notice is None:
        return []
    ref, similar = _candidate_ref(notice), f"{round(notice.score * 100)}% similar"
    block_id = f"{DUPLICATE_BLOCK_PREFIX}{notice.status}_{notice.suggestion_id}"
    who = f"<@{notice.decided_by_user_id}>" if notice.decided_by_user_id else "someone"
    if notice.status == "linked":
        return [
            {
                **_section(f":link: Looks like a duplicate of {ref} ({similar}) — linked."),
                "block_id": block_id,
            },
            {
                "type": "actions",
                "block_id": f"{block_id}_actions",
                "elements": [_button(DuplicateAction.undo, "Undo", notice)],
            },
        ]
    if notice.status == "asked":
        return [
            {
                **_section(f":mag: Is this the same feedback as {ref} ({similar})?"),
                "block_id": block_id,
            },
            {
                "type": "actions",
                "block_id": f"{block_id}_actions",
                "elements": [
                    _button(DuplicateAction.merge, "Merge", notice, style="primary"),
                    _button(DuplicateAction.reject, "Not a duplicate", notice),
                ],
            },
        ]
    outcomes = {
        "merged": f":link: Merged with {ref} by {who} — both texts and accounts are kept and counted together.",
        "rejected": f":heavy_multiplication_x: Not a duplicate of {ref}, said {who}. It won't be suggested again.",
        "undone": f":leftwards_arrow_with_hook: Undone by {who}: no longer linked to {ref}.",
    }
    return [
        {
            **_context(outcomes.get(notice.status, f"Duplicate of {ref}: {notice.status}.")),
            "block_id": block_id,
        }
    ]


def duplicate_settings_blocks(bands: Thresholds, *, backend: str) -> Blocks:
    """`/prodops duplicates`: the workspace's bands and the similarity backend's defaults."""
    source = "set for this workspace" if bands.overridden else "the backend's defaults"
    return [
        _section(
            f"*Duplicate suggestions* ({source})\n"
            f"• Link automatically at similarity ≥ *{bands.link:.2f}* (with *Undo*)\n"
            f"• Ask the person who captured it from *{bands.ask:.2f}* (*Merge* / *Not a duplicate*)\n"
            f"• Below {bands.ask:.2f}: a new item"
        ),
        _context(
            f"Backend `{backend}` defaults: link {bands.default_link:.2f}, ask {bands.default_ask:.2f}. "
            "Admins: `/prodops duplicates <link> <ask>` (0 < ask < link ≤ 1) or `/prodops duplicates default`."
        ),
    ]


def replace_duplicate_blocks(blocks: Blocks, notice: DuplicateNotice) -> Blocks:
    """A confirmation's blocks with its duplicate part replaced (the rest of the message stays as it was)."""
    kept = [b for b in blocks if not str(b.get("block_id", "")).startswith(DUPLICATE_BLOCK_PREFIX)]
    return [*kept, *duplicate_blocks(notice)]


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
        "`/feedback list tag <tag>`.\n"
        "• `/feedback themes` — themes, proposals to accept, merge, split · `/feedback trends [week|month]` — "
        "what is rising, by items and ARR · `/feedback ship <theme> [message]` — tell everyone who asked (admins).",
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
