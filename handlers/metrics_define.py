"""`/metric define`: the modal in which an admin defines one manual or push metric (sql/builtin: YAML)."""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from slack_bolt import Ack, App, BoltContext
from slack_sdk import WebClient
from sqlalchemy.exc import IntegrityError

from bot.admin_messaging import refusal_blocks
from bot.metrics import registry
from bot.metrics.registry import MetricSpec
from handlers import slack_io
from storage.db import Database

logger = logging.getLogger("prodops.metrics_define")

Blocks = list[dict[str, Any]]

UNITS = {
    "count": "Count",
    "percent": "Percent",
    "currency": "Currency",
    "duration": "Duration",
    "ratio": "Ratio",
}
DIRECTIONS = {"up_is_good": "Up is good", "down_is_good": "Down is good"}
SUMMARIES = {
    "sum": "Sum of the period",
    "avg": "Average",
    "last": "Last value",
    "max": "Maximum",
    "min": "Minimum",
}
PERIODS = {"day": "Day", "week": "Week", "month": "Month"}
SOURCES = {
    "manual": "Manual: people record values with /metric record",
    "push": "Push: a system sends points to the HTTP API",
}


class DefineCallback(enum.StrEnum):
    """Callback id of the define modal."""

    modal = "metric_define_modal"


class DefineBlock(enum.StrEnum):
    """Block ids of the modal (inline errors are keyed by these)."""

    key = "md_key"
    name = "md_name"
    description = "md_description"
    unit = "md_unit"
    direction = "md_direction"
    target = "md_target"
    summary = "md_summary"
    period = "md_period"
    source = "md_source"
    owner = "md_owner"


class DefineAction(enum.StrEnum):
    """Action ids of the modal's inputs."""

    key = "md_key_input"
    name = "md_name_input"
    description = "md_description_input"
    unit = "md_unit_select"
    direction = "md_direction_select"
    target = "md_target_input"
    summary = "md_summary_select"
    period = "md_period_select"
    source = "md_source_radio"
    owner = "md_owner_select"


FIELD_BLOCKS = {
    "key": DefineBlock.key,
    "name": DefineBlock.name,
    "description": DefineBlock.description,
    "unit": DefineBlock.unit,
    "direction": DefineBlock.direction,
    "target": DefineBlock.target,
    "summary": DefineBlock.summary,
    "period": DefineBlock.period,
    "source": DefineBlock.source,
    "owner": DefineBlock.owner,
}


def register(app: App) -> None:
    """Binds the define modal's submission."""
    app.view(DefineCallback.modal)(on_define_submit)


# ---- Block Kit (pure) -------------------------------------------------------------------------------


def _plain(text: str) -> dict[str, Any]:
    return {"type": "plain_text", "text": text, "emoji": True}


def _option(value: str, label: str) -> dict[str, Any]:
    return {"text": _plain(label), "value": value}


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


def _text(action_id: str, *, placeholder: str, max_length: int, multiline: bool = False) -> dict[str, Any]:
    return {
        "type": "plain_text_input",
        "action_id": action_id,
        "placeholder": _plain(placeholder),
        "max_length": max_length,
        "multiline": multiline,
    }


def _select(action_id: str, choices: dict[str, str], initial: str) -> dict[str, Any]:
    options = [_option(value, label) for value, label in choices.items()]
    return {
        "type": "static_select",
        "action_id": action_id,
        "options": options,
        "initial_option": _option(initial, choices[initial]),
    }


def define_modal(*, user_id: str) -> dict[str, Any]:
    """The empty define modal; the defining admin is the default owner."""
    sources = [_option(value, label) for value, label in SOURCES.items()]
    blocks: Blocks = [
        _input(
            DefineBlock.key,
            "Key",
            _text(DefineAction.key, placeholder="weekly_signups", max_length=64),
            hint="Lowercase letters, digits and _; used in /metric KEY and in the push API URL. It cannot change.",
        ),
        _input(
            DefineBlock.name, "Name", _text(DefineAction.name, placeholder="Weekly signups", max_length=200)
        ),
        _input(
            DefineBlock.description,
            "What it means",
            _text(DefineAction.description, placeholder="How it is counted", max_length=2000, multiline=True),
            optional=True,
        ),
        _input(DefineBlock.unit, "Unit", _select(DefineAction.unit, UNITS, "count")),
        _input(DefineBlock.direction, "Direction", _select(DefineAction.direction, DIRECTIONS, "up_is_good")),
        _input(
            DefineBlock.target,
            "Target",
            _text(DefineAction.target, placeholder="250", max_length=40),
            optional=True,
            hint="A number for the period (percent: 95 means 95 %). Leave empty for no target.",
        ),
        _input(
            DefineBlock.summary,
            "Summarise a period by",
            _select(DefineAction.summary, SUMMARIES, "sum"),
            hint="Sum for counts of events; last for levels like MRR or headcount.",
        ),
        _input(DefineBlock.period, "Period", _select(DefineAction.period, PERIODS, "week")),
        _input(
            DefineBlock.source,
            "Where the numbers come from",
            {
                "type": "radio_buttons",
                "action_id": DefineAction.source,
                "options": sources,
                "initial_option": sources[0],
            },
            hint="SQL and built-in metrics (pulled on a schedule) are defined in YAML: prodops metrics load FILE.yml",
        ),
        _input(
            DefineBlock.owner,
            "Owner",
            {"type": "users_select", "action_id": DefineAction.owner, "initial_user": user_id},
            optional=True,
        ),
    ]
    return {
        "type": "modal",
        "callback_id": DefineCallback.modal,
        "title": _plain("Define a metric"),
        "submit": _plain("Create"),
        "close": _plain("Cancel"),
        "blocks": blocks,
    }


def defined_view(spec: MetricSpec, *, team_id: str) -> dict[str, Any]:
    """What the modal turns into once the metric exists: how to feed it."""
    if spec.source == "push":
        how = (
            f'Make a token (once): `prodops tokens create --team {team_id} --name "what sends it"`, then send '
            f"points:\n```curl -X POST $PRODOPS_URL/api/v1/metrics/{spec.key}/points \\\n"
            '  -H "Authorization: Bearer $TOKEN" -H "Content-Type: application/json" \\\n'
            '  -d \'{"ts": "2026-11-02T09:00:00Z", "value": 42}\'```'
        )
    else:
        how = f"Record values with `/metric record {spec.key} 42` (optionally a date: `2026-11-02`)."
    return {
        "type": "modal",
        "callback_id": f"{DefineCallback.modal}_done",
        "title": _plain("Metric created"),
        "close": _plain("Done"),
        "blocks": [
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": f":white_check_mark: Created *{spec.name}* (`{spec.key}`). {how}\n"
                    f"See it with `/metric {spec.key}`.",
                },
            }
        ],
    }


@dataclass
class DefineSubmission:
    """A read submission: the spec when valid, else inline errors keyed by block id."""

    spec: MetricSpec | None
    errors: dict[str, str]


def read_define_submission(values: dict[str, dict[str, Any]]) -> DefineSubmission:
    """Turns view.state.values into a MetricSpec, or inline errors."""

    def state(block: str, action: str) -> dict[str, Any]:
        return values.get(block, {}).get(action, {}) or {}

    def selected(block: str, action: str) -> str | None:
        return (state(block, action).get("selected_option") or {}).get("value")

    errors: dict[str, str] = {}
    target_text = (state(DefineBlock.target, DefineAction.target).get("value") or "").strip()
    target: float | None = None
    if target_text:
        try:
            target = float(target_text.replace(",", "").removesuffix("%").strip())
        except ValueError:
            errors[DefineBlock.target] = "Give a number, like 250 or 0.95 (or leave it empty for no target)."
    raw = {
        "key": (state(DefineBlock.key, DefineAction.key).get("value") or "").strip(),
        "name": state(DefineBlock.name, DefineAction.name).get("value") or "",
        "description": state(DefineBlock.description, DefineAction.description).get("value"),
        "unit": selected(DefineBlock.unit, DefineAction.unit),
        "direction": selected(DefineBlock.direction, DefineAction.direction),
        "target": target,
        "summary": selected(DefineBlock.summary, DefineAction.summary),
        "period": selected(DefineBlock.period, DefineAction.period),
        "source": selected(DefineBlock.source, DefineAction.source),
        "owner": state(DefineBlock.owner, DefineAction.owner).get("selected_user"),
    }
    if raw["source"] not in SOURCES:
        errors[DefineBlock.source] = "Pick manual or push (sql and builtin metrics are defined in YAML)."
    try:
        spec = MetricSpec.model_validate({k: v for k, v in raw.items() if v is not None})
    except ValidationError as exc:
        for path, message in registry.validation_messages(exc):
            block = FIELD_BLOCKS.get(path.split(".")[0].split(" ")[0], DefineBlock.key)
            errors.setdefault(block, _phrase(path, message))
        return DefineSubmission(spec=None, errors=errors)
    return DefineSubmission(spec=None if errors else spec, errors=errors)


def _phrase(path: str, message: str) -> str:
    if path == "name" and message == "must not be empty":
        return "Give the metric a name."
    if path == "key" and message == "is required":
        return f"Give the metric a key: {registry.KEY_HINT}."
    text = message[:1].upper() + message[1:] if message else message
    return text if path in FIELD_BLOCKS else f"{path}: {message}"


# ---- listeners --------------------------------------------------------------------------------------


def open_define_modal(
    client: WebClient, db: Database, *, team_id: str, user_id: str, trigger_id: str
) -> list[dict[str, Any]] | None:
    """For `/metric define`: refusal blocks for non-admins; otherwise opens the modal and returns None."""
    if not slack_io.is_prodops_admin(client, db, team_id, user_id):
        return refusal_blocks("define metrics")
    client.views_open(trigger_id=trigger_id, view=define_modal(user_id=user_id))
    return None


def on_define_submit(
    ack: Ack, body: dict[str, Any], view: dict[str, Any], context: BoltContext, client: WebClient
) -> None:
    """Validates inline (errors keep the form open), creates the metric, then shows how to feed it."""
    db: Database = context["db"]
    team_id = context.team_id or ""
    user_id = body["user"]["id"]
    if not slack_io.is_prodops_admin(client, db, team_id, user_id):
        ack(response_action="errors", errors={DefineBlock.key: "Only ProdOps admins can define metrics."})
        return
    submission = read_define_submission(view["state"]["values"])
    if submission.spec is None:
        ack(response_action="errors", errors=submission.errors)
        return
    spec = submission.spec
    try:
        with db.session() as s:
            registry.create_metric(db_session=s, team_id=team_id, spec=spec)
    except registry.MetricKeyTaken as exc:
        ack(response_action="errors", errors={DefineBlock.key: str(exc)})
        return
    except IntegrityError:  # another admin took the key at the same moment
        ack(
            response_action="errors",
            errors={DefineBlock.key: f"`{spec.key}` was just taken; pick another key."},
        )
        return
    logger.info("metric %s defined in %s by %s", spec.key, team_id, user_id)
    ack(response_action="update", view=defined_view(spec, team_id=team_id))
