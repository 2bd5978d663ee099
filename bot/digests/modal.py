"""`/digest`: the subscription modal, its reading, the list, help and preview answers (all pure Block Kit)."""

from __future__ import annotations

import enum
import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import quote

from pydantic import ValidationError

from bot.digests import service
from bot.digests.schemas import Cadence, DigestSections, FeedbackSection, MetricsSection, RequestsSection
from bot.digests.service import CADENCES, LAST_DAY, WEEKDAY_NAMES, InvalidSchedule, SubscriptionSpec
from storage.models import DigestSubscription

Blocks = list[dict[str, Any]]
MAX_LISTED = 16  # two blocks per subscription keeps a message under Slack's 50 blocks
MAX_OPTIONS = 100  # Slack's limit for a static select
MAX_MESSAGE_BLOCKS = 50
BUILDER_URL = "https://app.slack.com/block-kit-builder/#"
MAX_URL_CHARS = 8000
CADENCE_LABELS = {"daily": "Daily", "weekly": "Weekly", "monthly": "Monthly", "cron": "Custom (cron)"}
SECTION_LABELS = {"metrics": "Metrics", "feedback": "Top feedback", "requests": "Request queue"}
BY_LABELS = {"count": "Number of items", "arr": "ARR behind them"}

HELP = """*`/digest`* — a scheduled summary of metrics, feedback and the request queue, posted in a channel.
• `/digest subscribe` — set one up for this channel (when, time zone, what it shows)
• `/digest list` — this channel's digests (`/digest list all`: every channel's, for admins)
• `/digest edit [id]` — change one (editing a paused digest resumes it)
• `/digest unsubscribe [id]` — stop one
• `/digest preview [id]` — see the current period so far, only you
• `/digest send [id]` — post the current period so far to the channel now, outside the schedule
The id can be left out when the channel has just one digest. You manage the digests of channels you are in; \
ProdOps admins manage any."""


class DigestCallback(enum.StrEnum):
    """Callback id of the subscription modal."""

    modal = "digest_subscription_modal"


class DigestAction(enum.StrEnum):
    """Action ids: buttons on messages, and the modal's inputs."""

    manage = "digest_manage"  # also in every digest's footer; value = subscription id
    preview = "digest_preview"
    unsubscribe = "digest_unsubscribe"
    name = "dg_name_input"
    cadence = "dg_cadence_select"
    time = "dg_time_picker"
    weekday = "dg_weekday_select"
    day = "dg_day_select"
    cron = "dg_cron_input"
    timezone = "dg_timezone_input"
    sections = "dg_sections_checkboxes"
    metrics = "dg_metrics_select"
    feedback_top = "dg_feedback_top_select"
    feedback_by = "dg_feedback_by_radio"
    request_types = "dg_request_types_select"
    options = "dg_options_checkboxes"


class DigestBlock(enum.StrEnum):
    """Block ids of the modal (inline errors are keyed by these)."""

    name = "dg_name"
    cadence = "dg_cadence"
    time = "dg_time"
    weekday = "dg_weekday"
    day = "dg_day"
    cron = "dg_cron"
    timezone = "dg_timezone"
    sections = "dg_sections"
    metrics = "dg_metrics"
    feedback_top = "dg_feedback_top"
    feedback_by = "dg_feedback_by"
    request_types = "dg_request_types"
    options = "dg_options"


SCHEDULE_BLOCKS = {
    "time": DigestBlock.time,
    "weekday": DigestBlock.weekday,
    "day": DigestBlock.day,
    "cron": DigestBlock.cron,
    "timezone": DigestBlock.timezone,
}


@dataclass
class ModalMeta:
    """Which channel and subscription the modal is for, and where to answer; travels in private_metadata."""

    channel_id: str
    subscription_id: int | None = None
    response_url: str | None = None

    def dump(self) -> str:
        """JSON for private_metadata."""
        return json.dumps({k: v for k, v in asdict(self).items() if v is not None})

    @classmethod
    def load(cls, raw: str) -> ModalMeta:
        """Reads private_metadata back."""
        return cls(**json.loads(raw or "{}"))


@dataclass
class DigestForm:
    """The modal's values: a new subscription's defaults, or an existing one's settings."""

    timezone: str
    name: str = service.DEFAULT_NAME
    cadence: Cadence = "weekly"
    time: str = "09:00"
    weekday: str = "mon"
    day: str = "1"
    cron: str = ""
    sections: DigestSections = field(
        default_factory=lambda: DigestSections(feedback=FeedbackSection(), requests=RequestsSection())
    )
    skip_if_empty: bool = False


def form_from_subscription(row: DigestSubscription) -> DigestForm:
    """The modal prefilled from a stored subscription (its cron read back into time, weekday and day)."""
    form = DigestForm(
        timezone=row.timezone,
        name=row.name,
        cadence=row.cadence if row.cadence in CADENCES else "cron",
        cron=row.cron,
        sections=DigestSections.load(row.sections),
        skip_if_empty=row.skip_if_empty,
    )
    fields = row.cron.split()
    if form.cadence != "cron" and len(fields) == 5 and fields[0].isdigit() and fields[1].isdigit():
        form.time = f"{int(fields[1]):02d}:{int(fields[0]):02d}"
        if form.cadence == "weekly" and fields[4] in WEEKDAY_NAMES:
            form.weekday = fields[4]
        if form.cadence == "monthly":
            form.day = fields[2]
    return form


# ---- small pieces ---------------------------------------------------------------------------------


def _plain(text: str) -> dict[str, Any]:
    return {"type": "plain_text", "text": text, "emoji": True}


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def _context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text}]}


def _option(value: str, label: str) -> dict[str, Any]:
    return {"text": _plain(label[:75]), "value": value}


def _button(text: str, action_id: str, value: str, **extra: Any) -> dict[str, Any]:
    return {"type": "button", "text": _plain(text), "action_id": action_id, "value": value, **extra}


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


def _static_select(action_id: str, choices: list[tuple[str, str]], initial: str | None) -> dict[str, Any]:
    options = [_option(value, label) for value, label in choices]
    element: dict[str, Any] = {"type": "static_select", "action_id": action_id, "options": options}
    chosen = next((o for o in options if o["value"] == initial), None)
    if chosen is not None:
        element["initial_option"] = chosen
    return element


def _multi_select(
    action_id: str,
    choices: list[tuple[str, str]],
    initial: list[str],
    *,
    placeholder: str,
    max_items: int | None,
) -> dict[str, Any]:
    options = [_option(value, label) for value, label in choices[:MAX_OPTIONS]]
    element: dict[str, Any] = {
        "type": "multi_static_select",
        "action_id": action_id,
        "options": options,
        "placeholder": _plain(placeholder),
    }
    chosen = [o for o in options if o["value"] in initial]
    if chosen:
        element["initial_options"] = chosen
    if max_items:
        element["max_selected_items"] = max_items
    return element


def _checkboxes(action_id: str, choices: list[tuple[str, str]], initial: list[str]) -> dict[str, Any]:
    options = [_option(value, label) for value, label in choices]
    element: dict[str, Any] = {"type": "checkboxes", "action_id": action_id, "options": options}
    chosen = [o for o in options if o["value"] in initial]
    if chosen:
        element["initial_options"] = chosen
    return element


# ---- the modal ------------------------------------------------------------------------------------


def _schedule_blocks(form: DigestForm) -> Blocks:
    days = [(str(d), str(d)) for d in range(1, 29)] + [(LAST_DAY, "Last day of the month")]
    cron: dict[str, Any] = {
        "type": "plain_text_input",
        "action_id": DigestAction.cron,
        "placeholder": _plain("0 9 * * mon-fri"),
        "max_length": 100,
    }
    if form.cron:
        cron["initial_value"] = form.cron
    return [
        _input(
            DigestBlock.cadence,
            "How often",
            _static_select(DigestAction.cadence, list(CADENCE_LABELS.items()), form.cadence),
            hint="A digest covers the time since the previous one and goes out at the end of its period.",
        ),
        _input(
            DigestBlock.time,
            "At",
            {"type": "timepicker", "action_id": DigestAction.time, "initial_time": form.time},
            optional=True,
            hint="Daily, weekly and monthly digests.",
        ),
        _input(
            DigestBlock.weekday,
            "On (weekly)",
            _static_select(DigestAction.weekday, list(WEEKDAY_NAMES.items()), form.weekday),
            optional=True,
        ),
        _input(
            DigestBlock.day,
            "On day (monthly)",
            _static_select(DigestAction.day, days, form.day),
            optional=True,
        ),
        _input(
            DigestBlock.cron,
            "Cron (custom)",
            cron,
            optional=True,
            hint="minute hour day-of-month month day-of-week, e.g. 0 9 * * mon-fri; at most hourly.",
        ),
        _input(
            DigestBlock.timezone,
            "Time zone",
            {
                "type": "plain_text_input",
                "action_id": DigestAction.timezone,
                "initial_value": form.timezone,
                "max_length": 64,
            },
            hint="An IANA name, e.g. Europe/Berlin or America/New_York.",
        ),
    ]


def _content_blocks(form: DigestForm, *, metrics: list[tuple[str, str]], request_types: list[str]) -> Blocks:
    sections = form.sections
    choices = [(k, v) for k, v in SECTION_LABELS.items() if k != "metrics" or metrics]
    ticked = [k for k in SECTION_LABELS if getattr(sections, k) is not None]
    feedback = sections.feedback or FeedbackSection()
    blocks: Blocks = [
        _input(DigestBlock.sections, "Show", _checkboxes(DigestAction.sections, choices, ticked)),
    ]
    if metrics:
        keys = sections.metrics.keys if sections.metrics else []
        blocks.append(
            _input(
                DigestBlock.metrics,
                "Metrics",
                _multi_select(DigestAction.metrics, metrics, keys, placeholder="Pick up to 12", max_items=12),
                optional=True,
                hint="In this order in the digest.",
            )
        )
    else:
        blocks.append(_context("No metrics are defined yet: `/metric define` adds one."))
    blocks += [
        _input(
            DigestBlock.feedback_top,
            "Top feedback themes",
            _static_select(
                DigestAction.feedback_top, [(str(n), str(n)) for n in range(1, 11)], str(feedback.top)
            ),
            optional=True,
        ),
        _input(
            DigestBlock.feedback_by,
            "Rank feedback by",
            {
                "type": "radio_buttons",
                "action_id": DigestAction.feedback_by,
                "options": [_option(k, v) for k, v in BY_LABELS.items()],
                "initial_option": _option(feedback.by, BY_LABELS[feedback.by]),
            },
            optional=True,
        ),
    ]
    if request_types:
        chosen = sections.requests.types if sections.requests else []
        blocks.append(
            _input(
                DigestBlock.request_types,
                "Request types",
                _multi_select(
                    DigestAction.request_types,
                    [(t, t) for t in request_types],
                    chosen,
                    placeholder="All types",
                    max_items=None,
                ),
                optional=True,
                hint="Leave empty for every type.",
            )
        )
    skip = [("skip_if_empty", "Skip the digest when nothing happened")]
    blocks.append(
        _input(
            DigestBlock.options,
            "Quiet periods",
            _checkboxes(DigestAction.options, skip, ["skip_if_empty"] if form.skip_if_empty else []),
            optional=True,
        )
    )
    return blocks


def subscription_modal(
    *, form: DigestForm, meta: ModalMeta, metrics: list[tuple[str, str]], request_types: list[str]
) -> dict[str, Any]:
    """The subscribe / edit modal; `metrics` are the workspace's (key, name), `request_types` its type names."""
    editing = meta.subscription_id is not None
    name: dict[str, Any] = {
        "type": "plain_text_input",
        "action_id": DigestAction.name,
        "initial_value": form.name,
        "max_length": 100,
    }
    blocks: Blocks = [
        _context(f"Posted in <#{meta.channel_id}>."),
        _input(DigestBlock.name, "Name", name),
        *_schedule_blocks(form),
        {"type": "divider"},
        *_content_blocks(form, metrics=metrics, request_types=request_types),
    ]
    return {
        "type": "modal",
        "callback_id": DigestCallback.modal,
        "private_metadata": meta.dump(),
        "title": _plain("Edit digest" if editing else "Subscribe to a digest"),
        "submit": _plain("Save" if editing else "Subscribe"),
        "close": _plain("Cancel"),
        "blocks": blocks,
    }


@dataclass
class DigestSubmission:
    """A read submission: the spec when valid, else inline errors keyed by block id."""

    spec: SubscriptionSpec | None
    errors: dict[str, str]


def _values(values: dict[str, dict[str, Any]], block: str, action: str) -> dict[str, Any]:
    return values.get(block, {}).get(action, {}) or {}


def _selected(values: dict[str, dict[str, Any]], block: str, action: str) -> str | None:
    return (_values(values, block, action).get("selected_option") or {}).get("value")


def _selected_many(values: dict[str, dict[str, Any]], block: str, action: str) -> list[str]:
    return [o["value"] for o in _values(values, block, action).get("selected_options") or []]


def _read_schedule(
    values: dict[str, dict[str, Any]], errors: dict[str, str]
) -> tuple[Cadence, str, str] | None:
    """(cadence, cron, timezone), or None with the errors filled in."""
    cadence = _selected(values, DigestBlock.cadence, DigestAction.cadence)
    timezone = (_values(values, DigestBlock.timezone, DigestAction.timezone).get("value") or "").strip()
    problem = service.validate_timezone(timezone) if timezone else "Give a time zone, e.g. Europe/Berlin."
    if problem:
        errors[DigestBlock.timezone] = problem
    if cadence not in CADENCES:
        errors[DigestBlock.cadence] = "Pick how often it goes out."
        return None
    try:
        cron = service.cron_for(
            cadence=cadence,
            time=_values(values, DigestBlock.time, DigestAction.time).get("selected_time"),
            weekday=_selected(values, DigestBlock.weekday, DigestAction.weekday),
            day=_selected(values, DigestBlock.day, DigestAction.day),
            cron=_values(values, DigestBlock.cron, DigestAction.cron).get("value"),
        )
    except InvalidSchedule as exc:
        errors[SCHEDULE_BLOCKS.get(exc.field, DigestBlock.cron)] = str(exc)
        return None
    if problem:
        return None
    problem = service.validate_cron(cron, timezone)
    if problem:
        errors[DigestBlock.cron if cadence == "cron" else DigestBlock.time] = problem
        return None
    return cadence, cron, timezone


def _read_sections(
    values: dict[str, dict[str, Any]], errors: dict[str, str], *, metric_keys: set[str]
) -> DigestSections:
    ticked = set(_selected_many(values, DigestBlock.sections, DigestAction.sections))
    if not ticked:
        errors[DigestBlock.sections] = "Tick at least one thing to show."
    sections = DigestSections()
    if "metrics" in ticked:
        keys = _selected_many(values, DigestBlock.metrics, DigestAction.metrics)
        gone = [k for k in keys if k not in metric_keys]
        if not keys:
            errors[DigestBlock.metrics if metric_keys else DigestBlock.sections] = (
                "Pick the metrics to show, or untick Metrics."
                if metric_keys
                else "There are no metrics yet; untick Metrics."
            )
        elif gone:
            errors[DigestBlock.metrics] = f"{', '.join(gone)} no longer exist; pick others."
        elif len(keys) > 12:
            errors[DigestBlock.metrics] = "Pick at most 12 metrics."
        else:
            sections.metrics = MetricsSection(keys=keys)
    if "feedback" in ticked:
        top = _selected(values, DigestBlock.feedback_top, DigestAction.feedback_top) or "5"
        by = _selected(values, DigestBlock.feedback_by, DigestAction.feedback_by) or "count"
        try:
            sections.feedback = FeedbackSection.model_validate({"top": top, "by": by})
        except ValidationError:
            errors[DigestBlock.feedback_top] = "Show between 1 and 10 themes, ranked by count or ARR."
    if "requests" in ticked:
        sections.requests = RequestsSection(
            types=_selected_many(values, DigestBlock.request_types, DigestAction.request_types)
        )
    return sections


def read_submission(values: dict[str, dict[str, Any]], *, metric_keys: set[str]) -> DigestSubmission:
    """Turns view.state.values into a SubscriptionSpec, or inline errors."""
    errors: dict[str, str] = {}
    schedule = _read_schedule(values, errors)
    sections = _read_sections(values, errors, metric_keys=metric_keys)
    name = (_values(values, DigestBlock.name, DigestAction.name).get("value") or "").strip()
    options = _selected_many(values, DigestBlock.options, DigestAction.options)
    if schedule is None or errors:
        return DigestSubmission(spec=None, errors=errors)
    cadence, cron, timezone = schedule
    spec = SubscriptionSpec(
        name=name[:100] or service.DEFAULT_NAME,
        cadence=cadence,
        cron=cron,
        timezone=timezone,
        sections=sections,
        skip_if_empty="skip_if_empty" in options,
    )
    return DigestSubmission(spec=spec, errors={})


# ---- answers --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SubscriptionSummary:
    """What the list shows of one subscription (read inside a session, used outside it)."""

    id: int
    channel_id: str
    name: str
    schedule: str
    sections: str
    skip_if_empty: bool
    next_run_at: datetime | None
    paused_reason: str | None
    paused: bool


def sections_text(sections: DigestSections) -> str:
    """“3 metrics · top 5 feedback by ARR · requests (Data pull)”."""
    parts: list[str] = []
    if sections.metrics:
        parts.append(", ".join(f"`{k}`" for k in sections.metrics.keys))
    if sections.feedback:
        by = " by ARR" if sections.feedback.by == "arr" else ""
        parts.append(f"top {sections.feedback.top} feedback{by}")
    if sections.requests:
        parts.append(
            f"requests ({', '.join(sections.requests.types)})" if sections.requests.types else "requests"
        )
    return " · ".join(parts) or "nothing"


def summarise(row: DigestSubscription) -> SubscriptionSummary:
    """The list's view of a stored subscription."""
    return SubscriptionSummary(
        id=row.id,
        channel_id=row.channel_id,
        name=row.name,
        schedule=service.describe_schedule(cadence=row.cadence, cron=row.cron, timezone=row.timezone),
        sections=sections_text(DigestSections.load(row.sections)),
        skip_if_empty=row.skip_if_empty,
        next_run_at=row.next_run_at,
        paused_reason=row.paused_reason,
        paused=row.paused_at is not None,
    )


def slack_date(when: datetime) -> str:
    """A date Slack shows in the reader's own time zone."""
    fallback = when.strftime("%Y-%m-%d %H:%M UTC")
    return f"<!date^{int(when.timestamp())}^{{date_short_pretty}} at {{time}}|{fallback}>"


def subscription_blocks(item: SubscriptionSummary, *, with_channel: bool) -> Blocks:
    """One subscription in the list: what, when, next run, and Edit / Preview / Unsubscribe."""
    where = f" in <#{item.channel_id}>" if with_channel else ""
    if item.paused:
        state = f":double_vertical_bar: Paused{': ' + item.paused_reason if item.paused_reason else ''} — edit it to resume."
    elif item.next_run_at is not None:
        state = f"Next: {slack_date(item.next_run_at)}"
    else:
        state = "Not scheduled"
    quiet = " · skipped when empty" if item.skip_if_empty else ""
    text = f"*{item.name}* (`{item.id}`){where}\n{item.schedule} · {item.sections}{quiet}\n{state}"
    confirm = {
        "title": _plain("Unsubscribe?"),
        "text": _plain(f"Stop “{item.name[:100]}”? Its schedule and settings are deleted."),
        "confirm": _plain("Unsubscribe"),
        "deny": _plain("Keep it"),
        "style": "danger",
    }
    value = str(item.id)
    return [
        _section(text),
        {
            "type": "actions",
            "block_id": f"dg_row_{item.id}",
            "elements": [
                _button("Edit", DigestAction.manage, value),
                _button("Preview", DigestAction.preview, value),
                _button("Unsubscribe", DigestAction.unsubscribe, value, style="danger", confirm=confirm),
            ],
        },
    ]


def list_blocks(items: list[SubscriptionSummary], *, channel_id: str | None) -> Blocks:
    """`/digest list`: this channel's subscriptions (channel_id) or every channel's (None)."""
    where = f"<#{channel_id}>" if channel_id else "this workspace"
    if not items:
        return [_section(f"No digests in {where} yet. `/digest subscribe` sets one up.")]
    blocks: Blocks = [_section(f"*Digests in {where}*")]
    for item in items[:MAX_LISTED]:
        blocks += subscription_blocks(item, with_channel=channel_id is None)
    if len(items) > MAX_LISTED:
        blocks.append(
            _context(f"…and {len(items) - MAX_LISTED} more; `/digest list` in a channel shows its own.")
        )
    return blocks


def help_blocks() -> Blocks:
    """`/digest help`."""
    return [_section(HELP)]


def text_blocks(text: str) -> Blocks:
    """A one-section answer."""
    return [_section(text)]


def builder_link(blocks: Blocks, *, max_chars: int = MAX_URL_CHARS) -> tuple[str | None, int]:
    """A Block Kit Builder URL for the blocks, and how many fit (trailing blocks are dropped past max_chars)."""
    for count in range(len(blocks), 0, -1):
        url = BUILDER_URL + quote(json.dumps({"blocks": blocks[:count]}, separators=(",", ":")), safe="")
        if len(url) <= max_chars:
            return url, count
    return None, 0


def preview_blocks(digest: Blocks, *, name: str, label: str) -> Blocks:
    """The ephemeral preview: a note, the digest's blocks, and a Block Kit Builder link."""
    room = MAX_MESSAGE_BLOCKS - 2
    shown = digest[:room]
    url, fitted = builder_link(digest)
    if url is None:
        link = "The digest is too large for a Block Kit Builder link."
    elif fitted < len(digest):
        link = f"<{url}|Open in Block Kit Builder> (first {fitted} of {len(digest)} blocks: the rest is too long for a URL)"
    else:
        link = f"<{url}|Open in Block Kit Builder>"
    cut = f" Showing {len(shown)} of {len(digest)} blocks." if len(shown) < len(digest) else ""
    return [
        _context(f":eyes: Preview of *{name}* for {label}, so far — only you see this.{cut}"),
        *shown,
        _context(link),
    ]
