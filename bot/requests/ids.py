"""Block Kit ids for requests, in one place so handlers and builders never disagree."""

from __future__ import annotations

import enum


class RequestCallback(enum.StrEnum):
    """Callback ids of the shortcut and the intake modal."""

    shortcut = "create_request"  # contract: message shortcut
    modal = "request_modal"


class RequestBlock(enum.StrEnum):
    """Block ids of the intake modal."""

    type = "rq_type"
    summary = "rq_title"
    details = "rq_details"
    priority = "rq_priority"
    field_prefix = "rq_field_"


class RequestAction(enum.StrEnum):
    """Action ids of inputs and card buttons."""

    type = "rq_type_select"
    summary = "rq_title_input"
    details = "rq_details_input"
    priority = "rq_priority_select"
    field = "rq_field_input"
    assign_me = "rq_assign_me"
    assign_user = "rq_assign_user"
    set_priority = "rq_set_priority"
    set_status = "rq_set_status"
