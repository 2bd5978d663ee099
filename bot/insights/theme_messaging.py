"""Block Kit for themes: the `/feedback themes` list and the rename / merge / move modals."""

from __future__ import annotations

import enum
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from bot.insights.themes import ThemeOverview, ThemeSummary
from storage.models import FeedbackItem

Blocks = list[dict[str, Any]]
MAX_ACTIVE = 20
MAX_PROPOSED = 8
MAX_OPTIONS = 100
UNSORTED = "unsorted"


class ThemeAction(enum.StrEnum):
    """Action ids of the list's buttons and the modals' inputs."""

    accept = "themes_accept"
    rename = "themes_rename"
    dismiss = "themes_dismiss"
    manage = "themes_manage"  # overflow: rename / merge / move items
    name = "themes_name_input"
    description = "themes_description_input"
    target = "themes_target_select"
    items = "themes_items_check"
    new_name = "themes_new_name_input"


class ThemeBlock(enum.StrEnum):
    """Block ids of the modals (inline errors are keyed by these)."""

    name = "themes_name"
    description = "themes_description"
    target = "themes_target"
    items = "themes_items"
    new_name = "themes_new_name"


class ThemeCallback(enum.StrEnum):
    """Callback ids of the modals."""

    rename = "themes_rename_modal"
    merge = "themes_merge_modal"
    move = "themes_move_modal"


@dataclass(frozen=True)
class ButtonValue:
    """What a theme button carries: the theme, and the channel the list was shown in (for privacy)."""

    theme_id: int
    channel_id: str | None = None

    def dump(self) -> str:
        return json.dumps({"t": self.theme_id, "c": self.channel_id})

    @classmethod
    def load(cls, value: str) -> ButtonValue:
        data = json.loads(value)
        return cls(theme_id=int(data["t"]), channel_id=data.get("c"))


@dataclass(frozen=True)
class ModalMeta:
    """The modal's private metadata: which theme, where the list is, and how to refresh it."""

    theme_id: int
    channel_id: str | None = None
    response_url: str | None = None

    def dump(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def load(cls, raw: str) -> ModalMeta:
        data = json.loads(raw or "{}")
        return cls(
            theme_id=int(data["theme_id"]),
            channel_id=data.get("channel_id"),
            response_url=data.get("response_url"),
        )


def _text(text: str, kind: str = "mrkdwn") -> dict[str, Any]:
    return {"type": kind, "text": text}


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": _text(text[:3000])}


def _button(label: str, action: ThemeAction, value: ButtonValue, style: str | None = None) -> dict[str, Any]:
    button: dict[str, Any] = {
        "type": "button",
        "text": _text(label, "plain_text"),
        "action_id": action.value,
        "value": value.dump(),
    }
    if style:
        button["style"] = style
    return button


def _overflow(theme_id: int, channel_id: str | None) -> dict[str, Any]:
    where = channel_id or ""
    options = [("Rename…", "rename"), ("Merge into…", "merge"), ("Move or split items…", "move")]
    return {
        "type": "overflow",
        "action_id": ThemeAction.manage.value,
        "options": [
            {"text": _text(label, "plain_text"), "value": f"{verb}:{theme_id}:{where}"}
            for label, verb in options
        ],
    }


def escape(text: str) -> str:
    """Text shown as mrkdwn, with Slack's three control characters escaped."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _counts(theme: ThemeSummary) -> str:
    return f"{theme.this_week} this week · {theme.items} total"


def theme_list_blocks(
    overview: ThemeOverview, *, can_manage: bool, channel_id: str | None, notice: str | None = None
) -> Blocks:
    """Active themes with counts, proposals with Accept / Rename / Dismiss, and the unsorted count."""
    blocks: Blocks = []
    if notice:
        blocks.append(_section(f":white_check_mark: {notice}"))
    blocks.append(
        _section(
            f"*Themes* · {len(overview.active)} active · {len(overview.proposed)} proposed · "
            f"{overview.unsorted} unsorted item(s)"
        )
    )
    if not overview.active and not overview.proposed:
        blocks.append(
            _section(
                "No themes yet. The theme job groups unsorted feedback and proposes themes here once "
                "enough has been captured; admins can also create one with `prodops themes create`."
            )
        )
    for theme in overview.active[:MAX_ACTIVE]:
        block = _section(f"*{escape(theme.name)}* `#{theme.id}` — {_counts(theme)}")
        if can_manage:
            block["accessory"] = _overflow(theme.id, channel_id)
        blocks.append(block)
    if len(overview.active) > MAX_ACTIVE:
        more = len(overview.active) - MAX_ACTIVE
        blocks.append(_context(f"…and {more} smaller theme(s): `prodops themes list` shows every one."))
    if overview.proposed:
        blocks.append({"type": "divider"})
        blocks.append(
            _section("*Proposed themes* — accept the ones that make sense, rename or dismiss the rest.")
        )
    for theme in overview.proposed[:MAX_PROPOSED]:
        about = f"\n{escape(theme.description)}" if theme.description else ""
        blocks.append(_section(f"*{escape(theme.name)}* `#{theme.id}` — {theme.items} item(s){about}"))
        if can_manage:
            value = ButtonValue(theme.id, channel_id)
            blocks.append(
                {
                    "type": "actions",
                    "block_id": f"themes_proposal_{theme.id}",
                    "elements": [
                        _button("Accept", ThemeAction.accept, value, "primary"),
                        _button("Rename…", ThemeAction.rename, value),
                        _button("Dismiss", ThemeAction.dismiss, value, "danger"),
                        _overflow(theme.id, channel_id),
                    ],
                }
            )
    if len(overview.proposed) > MAX_PROPOSED:
        blocks.append(_context(f"…and {len(overview.proposed) - MAX_PROPOSED} more proposal(s)."))
    footer = "Unsorted items are grouped by the theme job about every hour."
    if not can_manage:
        footer += " Only ProdOps admins can accept, rename, merge or move themes."
    blocks.append(_context(footer))
    return blocks


def theme_list_text(overview: ThemeOverview) -> str:
    """The notification text of the list."""
    return (
        f"Themes: {len(overview.active)} active, {len(overview.proposed)} proposed, "
        f"{overview.unsorted} unsorted item(s)"
    )


def _context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [_text(text)]}


def _modal(
    callback: ThemeCallback, title: str, submit: str, meta: ModalMeta, blocks: Blocks
) -> dict[str, Any]:
    return {
        "type": "modal",
        "callback_id": callback.value,
        "title": _text(title[:24], "plain_text"),
        "submit": _text(submit, "plain_text"),
        "close": _text("Cancel", "plain_text"),
        "private_metadata": meta.dump(),
        "blocks": blocks,
    }


def rename_modal(*, name: str, description: str | None, meta: ModalMeta) -> dict[str, Any]:
    """Name and description of a theme; a person's name is never changed by the theme job."""
    return _modal(
        ThemeCallback.rename,
        "Rename theme",
        "Save",
        meta,
        [
            {
                "type": "input",
                "block_id": ThemeBlock.name.value,
                "label": _text("Name", "plain_text"),
                "element": {
                    "type": "plain_text_input",
                    "action_id": ThemeAction.name.value,
                    "initial_value": name,
                    "max_length": 80,
                },
            },
            {
                "type": "input",
                "block_id": ThemeBlock.description.value,
                "optional": True,
                "label": _text("Description", "plain_text"),
                "element": {
                    "type": "plain_text_input",
                    "action_id": ThemeAction.description.value,
                    "multiline": True,
                    "max_length": 2000,
                    **({"initial_value": description} if description else {}),
                },
            },
            _context("The theme job never changes a name or description a person gave."),
        ],
    )


def _theme_option(theme: ThemeSummary) -> dict[str, Any]:
    label = f"{theme.name} (#{theme.id}, {theme.items})"
    if theme.status == "proposed":
        label = f"{theme.name} (proposed, #{theme.id})"
    return {"text": _text(label[:75], "plain_text"), "value": str(theme.id)}


def merge_modal(*, source: ThemeSummary, targets: Sequence[ThemeSummary], meta: ModalMeta) -> dict[str, Any]:
    """Pick the theme that `source`'s items move into."""
    return _modal(
        ThemeCallback.merge,
        "Merge theme",
        "Merge",
        meta,
        [
            _section(
                f"Every item of *{escape(source.name)}* ({source.items}) moves to the theme you pick; "
                f"*{escape(source.name)}* is then closed as merged."
            ),
            {
                "type": "input",
                "block_id": ThemeBlock.target.value,
                "label": _text("Merge into", "plain_text"),
                "element": {
                    "type": "static_select",
                    "action_id": ThemeAction.target.value,
                    "placeholder": _text("Pick a theme", "plain_text"),
                    "options": [_theme_option(t) for t in targets[:MAX_OPTIONS]],
                },
            },
        ],
    )


def _item_option(item: FeedbackItem) -> dict[str, Any]:
    flat = " ".join(item.text.split())
    label = f"#{item.id} {flat}"
    return {
        "text": _text(label[:74] + "…" if len(label) > 75 else label, "plain_text"),
        "value": str(item.id),
    }


def move_modal(
    *,
    source: ThemeSummary,
    items: Sequence[FeedbackItem],
    targets: Sequence[ThemeSummary],
    meta: ModalMeta,
    hidden: int,
) -> dict[str, Any]:
    """Pick items of `source` (its latest this channel may see) and where they go: a theme, unsorted, or
    a new theme (a split)."""
    options = [_theme_option(t) for t in targets[: MAX_OPTIONS - 1]]
    options.append({"text": _text("Unsorted (no theme)", "plain_text"), "value": UNSORTED})
    blocks: Blocks = [
        {
            "type": "input",
            "block_id": ThemeBlock.items.value,
            "label": _text(f"Items of {source.name}"[:2000], "plain_text"),
            "element": {
                "type": "checkboxes",
                "action_id": ThemeAction.items.value,
                "options": [_item_option(i) for i in items[:10]],
            },
        },
    ]
    if hidden:
        blocks.append(_context(f"{hidden} item(s) from private channels or DMs are not shown here."))
    blocks += [
        {
            "type": "input",
            "block_id": ThemeBlock.new_name.value,
            "optional": True,
            "label": _text("Into a new theme named", "plain_text"),
            "element": {
                "type": "plain_text_input",
                "action_id": ThemeAction.new_name.value,
                "max_length": 80,
            },
        },
        {
            "type": "input",
            "block_id": ThemeBlock.target.value,
            "optional": True,
            "label": _text("…or into", "plain_text"),
            "element": {
                "type": "static_select",
                "action_id": ThemeAction.target.value,
                "placeholder": _text("Pick a theme", "plain_text"),
                "options": options,
            },
        },
        _context("Items you move stay where you put them: the theme job never moves them again."),
    ]
    return _modal(ThemeCallback.move, "Move items", "Move", meta, blocks)
