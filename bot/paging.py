"""Older / Newer buttons for ephemeral lists (`/feedback list`, `/request list`)."""

from __future__ import annotations

import json
from typing import Any


def paging_actions(
    action_prefix: str, state: dict[str, Any], page: int, has_more: bool
) -> dict[str, Any] | None:
    """An actions block with ← Newer / Older → carrying the list's filters and the page; None on a lone page.

    Each button's action id ends with its page (`<prefix>_<page>`), so the two never share an id.
    """
    buttons = []
    if page > 1:
        buttons.append(_page_button(action_prefix, "← Newer", state, page - 1))
    if has_more:
        buttons.append(_page_button(action_prefix, "Older →", state, page + 1))
    return {"type": "actions", "elements": buttons} if buttons else None


def _page_button(action_prefix: str, label: str, state: dict[str, Any], page: int) -> dict[str, Any]:
    return {
        "type": "button",
        "action_id": f"{action_prefix}_{page}",
        "text": {"type": "plain_text", "text": label},
        "value": json.dumps({**state, "page": page}),
    }
