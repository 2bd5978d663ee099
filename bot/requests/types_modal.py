"""`/prodops types`: the list with Edit / Archive / New type buttons and the type modal (all pure)."""

from __future__ import annotations

import enum
import json
import re
from dataclasses import asdict, dataclass
from typing import Any

from pydantic import ValidationError

from bot.requests.sla import Priority
from bot.requests.types import (
    DEFAULT_TYPE,
    DURATION_HINT,
    FieldSpec,
    RequestTypeSpec,
    validation_messages,
)

Blocks = list[dict[str, Any]]
MAX_LISTED = 20  # two blocks per type keeps a message under Slack's 50 blocks
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
PRIORITY_LABELS = {
    Priority.urgent: "Urgent",
    Priority.high: "High",
    Priority.normal: "Normal",
    Priority.low: "Low",
}
TARGET_LABELS = {"first_response": "first response", "resolution": "resolution"}


class TypesCallback(enum.StrEnum):
    """Callback id of the type modal."""

    modal = "request_type_modal"


class TypesAction(enum.StrEnum):
    """Action ids of the list's buttons and the modal's inputs."""

    edit = "rt_edit"
    new = "rt_new"
    archive = "rt_archive"
    name = "rt_name_input"
    description = "rt_description_input"
    channel = "rt_channel_select"
    owners = "rt_owners_select"
    priority = "rt_priority_select"
    sla = "rt_sla_input"
    days = "rt_days_checkboxes"
    start = "rt_start_time"
    end = "rt_end_time"
    timezone = "rt_timezone_input"
    holidays = "rt_holidays_input"


class TypesBlock(enum.StrEnum):
    """Block ids of the modal (inline errors are keyed by these); SLA blocks come from `sla_block`."""

    name = "rt_name"
    description = "rt_description"
    channel = "rt_channel"
    owners = "rt_owners"
    priority = "rt_priority"
    days = "rt_days"
    start = "rt_start"
    end = "rt_end"
    timezone = "rt_timezone"
    holidays = "rt_holidays"


def sla_block(priority: Priority | str, target: str) -> str:
    """Block id of one SLA input, e.g. rt_sla_urgent_first_response."""
    return f"rt_sla_{priority}_{target}"


@dataclass
class ModalMeta:
    """Which type the modal edits and where to refresh the list; travels in private_metadata."""

    type_id: int | None = None
    response_url: str | None = None

    def dump(self) -> str:
        """JSON for private_metadata."""
        return json.dumps({k: v for k, v in asdict(self).items() if v is not None})

    @classmethod
    def load(cls, raw: str) -> ModalMeta:
        """Reads private_metadata back."""
        return cls(**json.loads(raw or "{}"))


# ---- the list ---------------------------------------------------------------------------------------


def _plain(text: str) -> dict[str, Any]:
    return {"type": "plain_text", "text": text, "emoji": True}


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def _button(text: str, action_id: str, value: str, style: str | None = None) -> dict[str, Any]:
    button: dict[str, Any] = {"type": "button", "text": _plain(text), "action_id": action_id, "value": value}
    if style:
        button["style"] = style
    return button


def days_summary(days: list[int]) -> str:
    """[0,1,2,3,4] → 'Mon–Fri'; [0,2,4] → 'Mon, Wed, Fri'."""
    short = [WEEKDAYS[d][:3] for d in days]
    if len(days) > 2 and days == list(range(days[0], days[-1] + 1)):
        return f"{short[0]}–{short[-1]}"
    return ", ".join(short)


def sla_summary(spec: RequestTypeSpec) -> str:
    """'urgent 1h/8h · high 4h/2d …' (first response / resolution)."""
    parts = [
        f"{p} {t.first_response or '–'}/{t.resolution or '–'}"
        for p in Priority
        if (t := spec.sla.get(p)) is not None
    ]
    return " · ".join(parts) or "no targets"


def type_summary(spec: RequestTypeSpec, *, is_default: bool) -> str:
    """One type's mrkdwn line for the list."""
    title = f"*{spec.name}*" + (" _(default)_" if is_default else "")
    description = f"\n{spec.description[:200]}" if spec.description else ""
    triage = f"<#{spec.triage_channel_id}>" if spec.triage_channel_id else "the channel where it was asked"
    owners = ", ".join(f"<@{u}>" for u in spec.owners) or "none"
    cal = spec.calendar
    hours = f"{days_summary(cal.working_days)} {cal.start:%H:%M}–{cal.end:%H:%M} {cal.timezone}"
    fields = f" · {len(spec.fields)} extra field(s)" if spec.fields else ""
    return (
        f"{title}{description}\n"
        f"Triage: {triage} · owners: {owners} · default priority: {spec.default_priority}{fields}\n"
        f"SLA (first response/resolution): {sla_summary(spec)} · {hours}"
    )


def types_list_blocks(types: list[tuple[int, RequestTypeSpec, bool]], *, can_edit: bool) -> Blocks:
    """`/prodops types`: each (id, spec, is_default), with Edit / Archive buttons and New type for admins."""
    blocks: Blocks = [_section(f"*Request types* ({len(types)})")]
    for type_id, spec, is_default in types[:MAX_LISTED]:
        blocks.append(_section(type_summary(spec, is_default=is_default)))
        if can_edit:
            buttons = [_button("Edit", TypesAction.edit, str(type_id))]
            if not is_default:
                archive = _button("Archive", TypesAction.archive, str(type_id), style="danger")
                archive["confirm"] = {
                    "title": _plain("Archive this type?"),
                    "text": _plain(
                        f"“{spec.name[:80]}” will not be offered for new requests. Open requests keep it."
                    ),
                    "confirm": _plain("Archive"),
                    "deny": _plain("Cancel"),
                }
                buttons.append(archive)
            blocks.append({"type": "actions", "block_id": f"rt_type_{type_id}", "elements": buttons})
    if len(types) > MAX_LISTED:
        blocks.append(_section(f"…and {len(types) - MAX_LISTED} more: `prodops types list` shows them all."))
    if can_edit:
        blocks.append(
            {
                "type": "actions",
                "block_id": "rt_list_actions",
                "elements": [_button("New type", TypesAction.new, "new", style="primary")],
            }
        )
    else:
        blocks.append(
            {
                "type": "context",
                "elements": [{"type": "mrkdwn", "text": "ProdOps admins can add and edit types here."}],
            }
        )
    return blocks


# ---- the modal --------------------------------------------------------------------------------------


def _input(
    block_id: str, label: str, element: dict[str, Any], *, optional: bool = False, hint: str | None = None
) -> dict[str, Any]:
    block: dict[str, Any] = {
        "type": "input",
        "block_id": block_id,
        "label": _plain(label),
        "element": element,
        "optional": optional,
    }
    if hint:
        block["hint"] = _plain(hint)
    return block


def _text(
    action_id: str, value: str | None, *, max_length: int | None = None, multiline: bool = False
) -> dict[str, Any]:
    element: dict[str, Any] = {"type": "plain_text_input", "action_id": action_id, "multiline": multiline}
    if max_length:
        element["max_length"] = max_length
    if value:
        element["initial_value"] = value
    return element


def _option(label: str, value: str) -> dict[str, Any]:
    return {"text": _plain(label), "value": value}


def type_modal(*, spec: RequestTypeSpec | None, meta: ModalMeta) -> dict[str, Any]:
    """The create / edit modal, prefilled from `spec` (a new type starts from the default's SLAs and hours)."""
    editing = meta.type_id is not None
    base = spec or DEFAULT_TYPE
    cal = base.calendar
    channel: dict[str, Any] = {
        "type": "conversations_select",
        "action_id": TypesAction.channel,
        "placeholder": _plain("Where new requests are triaged"),
        "filter": {"include": ["public", "private"], "exclude_bot_users": True},
    }
    if base.triage_channel_id:
        channel["initial_conversation"] = base.triage_channel_id
    owners: dict[str, Any] = {
        "type": "multi_users_select",
        "action_id": TypesAction.owners,
        "placeholder": _plain("Who handles these requests"),
    }
    if base.owners:
        owners["initial_users"] = list(base.owners)
    priorities = [_option(label, str(p)) for p, label in PRIORITY_LABELS.items()]
    priority = {
        "type": "static_select",
        "action_id": TypesAction.priority,
        "options": priorities,
        "initial_option": _option(PRIORITY_LABELS[base.default_priority], str(base.default_priority)),
    }
    blocks: Blocks = [
        _input(TypesBlock.name, "Name", _text(TypesAction.name, spec.name if spec else None, max_length=100)),
        _input(
            TypesBlock.description,
            "Description",
            _text(
                TypesAction.description, base.description if spec else None, max_length=2000, multiline=True
            ),
            optional=True,
        ),
        _input(
            TypesBlock.channel,
            "Triage channel",
            channel,
            optional=True,
            hint="Empty: requests are triaged in the channel where they were asked.",
        ),
        _input(TypesBlock.owners, "Owners", owners, optional=True),
        _input(TypesBlock.priority, "Default priority", priority),
        {"type": "header", "text": _plain("SLA targets (business time)")},
        {
            "type": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": "30m, 4h or 2d — a day (d) is one working day of the hours below. "
                    "Leave a target empty for none.",
                }
            ],
        },
    ]
    for p, label in PRIORITY_LABELS.items():
        target = base.sla.get(p)
        for name, words in TARGET_LABELS.items():
            value = getattr(target, name) if target is not None else None
            blocks.append(
                _input(sla_block(p, name), f"{label}: {words}", _text(TypesAction.sla, value), optional=True)
            )
    day_options = [_option(day, str(i)) for i, day in enumerate(WEEKDAYS)]
    blocks += [
        {"type": "header", "text": _plain("Business hours")},
        _input(
            TypesBlock.days,
            "Working days",
            {
                "type": "checkboxes",
                "action_id": TypesAction.days,
                "options": day_options,
                "initial_options": [day_options[d] for d in cal.working_days],
            },
        ),
        _input(
            TypesBlock.start,
            "Opens at",
            {"type": "timepicker", "action_id": TypesAction.start, "initial_time": f"{cal.start:%H:%M}"},
        ),
        _input(
            TypesBlock.end,
            "Closes at",
            {"type": "timepicker", "action_id": TypesAction.end, "initial_time": f"{cal.end:%H:%M}"},
            hint="00:00 means midnight (for 24-hour days).",
        ),
        _input(
            TypesBlock.timezone,
            "Time zone",
            _text(TypesAction.timezone, cal.timezone, max_length=64),
            hint="An IANA name, like Europe/London, America/New_York or UTC.",
        ),
        _input(
            TypesBlock.holidays,
            "Holidays",
            _text(TypesAction.holidays, ", ".join(d.isoformat() for d in cal.holidays)),
            optional=True,
            hint="Dates without business hours, e.g. 2026-12-25, 2026-12-26",
        ),
    ]
    if spec is not None and spec.fields:
        keys = ", ".join(f"`{f.key}`" for f in spec.fields)
        blocks.append(
            {
                "type": "context",
                "elements": [
                    {
                        "type": "mrkdwn",
                        "text": f"Extra intake fields ({keys}) are kept; change them with `prodops types load`.",
                    }
                ],
            }
        )
    return {
        "type": "modal",
        "callback_id": TypesCallback.modal,
        "private_metadata": meta.dump(),
        "title": _plain("Edit request type" if editing else "New request type"),
        "submit": _plain("Save" if editing else "Create"),
        "close": _plain("Cancel"),
        "blocks": blocks,
    }


# ---- reading a submission ---------------------------------------------------------------------------


@dataclass
class TypeSubmission:
    """A read submission: the spec when valid, else inline errors keyed by block id."""

    spec: RequestTypeSpec | None
    errors: dict[str, str]


def _error_block(path: str, message: str) -> tuple[str, str]:
    """Where a validation problem shows in the modal, and its text."""
    head = path.split(" ")[0].split(".")
    if head[0] == "sla" and len(head) >= 3:
        return sla_block(head[1], head[2]), message
    if head[0] == "calendar" and len(head) >= 2:
        block = {
            "timezone": TypesBlock.timezone,
            "working_days": TypesBlock.days,
            "start": TypesBlock.start,
            "end": TypesBlock.end,
            "holidays": TypesBlock.holidays,
        }.get(head[1], TypesBlock.timezone)
        return block, message
    simple = {
        "name": TypesBlock.name,
        "description": TypesBlock.description,
        "triage_channel": TypesBlock.channel,
        "triage_channel_id": TypesBlock.channel,
        "owners": TypesBlock.owners,
        "default_priority": TypesBlock.priority,
    }
    if head[0] in simple:
        return simple[head[0]], message
    # A whole-type problem: its message starts with its own path ("sla.urgent: …", "calendar: end …").
    if match := re.match(r"^sla\.(\w+): (resolution)", message):
        return sla_block(match.group(1), match.group(2)), message.split(": ", 1)[1]
    if head == ["calendar"]:
        return TypesBlock.end, message
    return TypesBlock.name, message


def read_type_submission(values: dict[str, dict[str, Any]], *, fields: list[FieldSpec]) -> TypeSubmission:
    """Turns view.state.values into a spec (keeping the type's extra `fields`), or inline errors."""

    def state(block: str, action: str) -> dict[str, Any]:
        return values.get(block, {}).get(action, {}) or {}

    sla: dict[str, dict[str, str | None]] = {}
    for p in Priority:
        target = {name: state(sla_block(p, name), TypesAction.sla).get("value") for name in TARGET_LABELS}
        if any((v or "").strip() for v in target.values()):
            sla[str(p)] = target
    holidays_text = state(TypesBlock.holidays, TypesAction.holidays).get("value") or ""
    days = [o.get("value") for o in state(TypesBlock.days, TypesAction.days).get("selected_options") or []]
    errors: dict[str, str] = {}
    if not days:
        errors[TypesBlock.days] = "Tick at least one working day."
    calendar: dict[str, Any] = {
        "timezone": (state(TypesBlock.timezone, TypesAction.timezone).get("value") or "").strip() or "UTC",
        "working_days": [int(d) for d in days if str(d).isdigit()] or [0],
        "start": state(TypesBlock.start, TypesAction.start).get("selected_time") or "09:00",
        "end": state(TypesBlock.end, TypesAction.end).get("selected_time") or "17:00",
        "holidays": [h for h in re.split(r"[\s,;]+", holidays_text) if h],
    }
    raw = {
        "name": state(TypesBlock.name, TypesAction.name).get("value") or "",
        "description": state(TypesBlock.description, TypesAction.description).get("value"),
        "triage_channel": state(TypesBlock.channel, TypesAction.channel).get("selected_conversation"),
        "owners": state(TypesBlock.owners, TypesAction.owners).get("selected_users") or [],
        "default_priority": (
            state(TypesBlock.priority, TypesAction.priority).get("selected_option") or {}
        ).get("value")
        or str(Priority.normal),
        "sla": sla,
        "calendar": calendar,
        "fields": [f.model_dump(mode="json") for f in fields],
    }
    try:
        spec = RequestTypeSpec.model_validate(raw)
    except ValidationError as exc:
        for path, message in validation_messages(exc):
            block, text = _error_block(path, message)
            errors.setdefault(block, _modal_phrase(path, text))
        return TypeSubmission(spec=None, errors=errors)
    if errors:
        return TypeSubmission(spec=None, errors=errors)
    return TypeSubmission(spec=spec, errors={})


def _modal_phrase(path: str, message: str) -> str:
    """The file-oriented message, phrased for the form."""
    if path == "name" and message == "must not be empty":
        return "Give the type a name."
    if path.startswith("sla.") and "is not a duration" in message:
        return message.replace(f"is not {DURATION_HINT}", f"is not {DURATION_HINT} (or empty for no target)")
    if path.startswith("calendar.holidays"):
        return f"{message}. Separate dates with commas."
    return message[:1].upper() + message[1:] if message else message
