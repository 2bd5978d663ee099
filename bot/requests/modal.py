"""The intake modal: type select (the type's fields appear on change), title, details, priority, fields."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import date
from typing import Any

from bot.requests.ids import RequestAction, RequestBlock, RequestCallback
from bot.requests.messaging import PRIORITY_LABELS
from storage.models import RequestPriority, RequestType

FIELD_KINDS = ("text", "select", "date", "user")


@dataclass
class IntakeSource:
    """Where the request was asked; travels in private_metadata."""

    channel_id: str
    source: str
    message_ts: str | None = None
    permalink: str | None = None
    response_url: str | None = None

    def dump(self) -> str:
        """JSON for private_metadata."""
        return json.dumps({k: v for k, v in asdict(self).items() if v is not None})

    @classmethod
    def load(cls, raw: str) -> IntakeSource:
        """Reads private_metadata back."""
        return cls(**json.loads(raw or "{}"))


def _plain(text: str) -> dict[str, Any]:
    return {"type": "plain_text", "text": text[:150], "emoji": True}


def _option(label: str, value: str) -> dict[str, Any]:
    return {"text": _plain(label[:75]), "value": value}


def _input(
    block_id: str, label: str, element: dict[str, Any], optional: bool = False, **extra: Any
) -> dict[str, Any]:
    return {
        "type": "input",
        "block_id": block_id,
        "label": _plain(label),
        "element": element,
        "optional": optional,
        **extra,
    }


def field_element(field: dict[str, Any]) -> dict[str, Any]:
    """The input element for one of a type's extra fields."""
    kind = field.get("kind", "text")
    action = RequestAction.field.value
    if kind == "select":
        return {
            "type": "static_select",
            "action_id": action,
            "options": [_option(str(o), str(o)) for o in field.get("options") or []][:100],
        }
    if kind == "date":
        return {"type": "datepicker", "action_id": action}
    if kind == "user":
        return {"type": "users_select", "action_id": action}
    return {"type": "plain_text_input", "action_id": action}


def request_modal(
    *,
    types: list[RequestType],
    selected: RequestType,
    source: IntakeSource,
    title: str = "",
    details: str = "",
) -> dict[str, Any]:
    """The intake modal for `selected` (changing the type re-renders it with that type's fields)."""
    type_select = {
        "type": "static_select",
        "action_id": RequestAction.type,
        "options": [_option(t.name, str(t.id)) for t in types][:100],
        "initial_option": _option(selected.name, str(selected.id)),
    }
    title_input: dict[str, Any] = {
        "type": "plain_text_input",
        "action_id": RequestAction.summary,
        "max_length": 255,
    }
    if title:
        title_input["initial_value"] = title[:255]
    details_input: dict[str, Any] = {
        "type": "plain_text_input",
        "action_id": RequestAction.details,
        "multiline": True,
        "max_length": 3000,
    }
    if details:
        details_input["initial_value"] = details[:3000]
    default = RequestPriority(selected.default_priority)
    priority = {
        "type": "static_select",
        "action_id": RequestAction.priority,
        "options": [_option(label, p.value) for p, label in PRIORITY_LABELS.items()],
        "initial_option": _option(PRIORITY_LABELS[default], default.value),
    }
    blocks = [
        _input(RequestBlock.type, "Type", type_select, dispatch_action=True),
        _input(RequestBlock.summary, "What do you need?", title_input),
        _input(RequestBlock.details, "Details", details_input, optional=True),
        _input(RequestBlock.priority, "Priority", priority),
    ]
    for field in selected.fields or []:
        blocks.append(
            _input(
                f"{RequestBlock.field_prefix}{field['key']}",
                str(field.get("label") or field["key"]),
                field_element(field),
                optional=not field.get("required", False),
            )
        )
    if source.permalink:
        blocks.insert(
            0,
            {
                "type": "context",
                "elements": [{"type": "mrkdwn", "text": f"From <{source.permalink}|this message>"}],
            },
        )
    return {
        "type": "modal",
        "callback_id": RequestCallback.modal,
        "private_metadata": source.dump(),
        "title": _plain("New request"),
        "submit": _plain("Open request"),
        "close": _plain("Cancel"),
        "blocks": blocks,
    }


@dataclass
class IntakeSubmission:
    """A read submission: values, or inline errors keyed by block id."""

    type_id: int | None
    title: str
    details: str | None
    priority: str | None
    field_values: dict[str, str | None]
    errors: dict[str, str]


def read_intake(values: dict[str, dict[str, Any]], request_type: RequestType | None) -> IntakeSubmission:
    """Turns view.state.values into typed intake values, checking required fields and their kinds."""

    def state(block: str, action: str) -> dict[str, Any]:
        return values.get(block, {}).get(action, {})

    errors: dict[str, str] = {}
    selected_type = (state(RequestBlock.type, RequestAction.type).get("selected_option") or {}).get("value")
    type_id = int(selected_type) if selected_type and selected_type.isdigit() else None
    if type_id is None or request_type is None:
        errors[RequestBlock.type] = "Pick a request type."
    title = (state(RequestBlock.summary, RequestAction.summary).get("value") or "").strip()
    if not title:
        errors[RequestBlock.summary] = "Say in a few words what you need."
    details = (state(RequestBlock.details, RequestAction.details).get("value") or "").strip() or None
    priority = (state(RequestBlock.priority, RequestAction.priority).get("selected_option") or {}).get(
        "value"
    )
    if priority is not None and priority not in {p.value for p in RequestPriority}:
        errors[RequestBlock.priority] = "Pick one of the listed priorities."
    field_values: dict[str, str | None] = {}
    for field in (request_type.fields if request_type else None) or []:
        block = f"{RequestBlock.field_prefix}{field['key']}"
        raw = state(block, RequestAction.field)
        value = (
            raw.get("value")
            or (raw.get("selected_option") or {}).get("value")
            or raw.get("selected_date")
            or raw.get("selected_user")
        )
        if (
            field.get("kind") == "select"
            and value
            and value not in [str(o) for o in field.get("options") or []]
        ):
            errors[block] = "Pick one of the listed options."
        if field.get("kind") == "date" and value:
            try:
                date.fromisoformat(value)
            except ValueError:
                errors[block] = "Pick a date."
        if field.get("required") and not value:
            errors[block] = f"{field.get('label') or field['key']} is required for this type."
        field_values[str(field["key"])] = value
    return IntakeSubmission(type_id, title, details, priority, field_values, errors)
