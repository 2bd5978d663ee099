"""Block Kit ids for feedback, in one place so handlers and builders never disagree."""

from __future__ import annotations

import enum


class FeedbackCallback(enum.StrEnum):
    """Callback ids of shortcuts and modals."""

    capture_shortcut = "capture_feedback"  # contract: message shortcut
    modal = "feedback_modal"


class FeedbackBlock(enum.StrEnum):
    """Block ids of the capture / edit modal (inline errors are keyed by these)."""

    text = "fb_text"
    customer = "fb_customer"
    kind = "fb_kind"
    tags = "fb_tags"
    importance = "fb_importance"
    note = "fb_note"


class FeedbackAction(enum.StrEnum):
    """Action ids of inputs and buttons."""

    text = "fb_text_input"
    customer = "fb_customer_select"
    kind = "fb_kind_select"
    tags = "fb_tags_select"
    importance = "fb_importance_select"
    note = "fb_note_input"
    edit = "fb_edit"
    list_page = "fb_list_page"


NEW_OPTION_PREFIX = "new:"  # an option value meaning "create this account / tag"
