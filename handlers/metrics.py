"""`/metric`: one metric's value, change and target; the list; manual records; sharing a chart; define.

`/metric <key>` answers ephemerally, and ephemeral messages cannot carry files, so it shows the last periods
as a sparkline and a small table; `/metric <key> share` posts the summary with the chart PNG to the channel.
"""

from __future__ import annotations

import logging
import re
from datetime import date
from typing import Any

from slack_bolt import Ack, App, BoltContext, Respond
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.metrics import alerts, messaging
from bot.metrics.chart import render_chart
from handlers import metrics_define
from storage.db import Database
from storage.models import Metric
from storage.types import utcnow

logger = logging.getLogger("prodops.metrics")

DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
RECORD_USAGE = "Use `/metric record <key> <value> [YYYY-MM-DD]`, e.g. `/metric record nps 42 2026-11-23`."
SHARE_PERIODS = alerts.CHART_PERIODS


def register(app: App) -> None:
    """Binds `/metric`."""
    app.command("/metric")(on_metric_command)


def _say(respond: Respond, text: str) -> None:
    respond(response_type="ephemeral", text=text, blocks=messaging.text_blocks(text))


def find_metric(*, db_session: Session, team_id: str, key: str) -> Metric | None:
    """A live metric by key."""
    return db_session.scalar(
        select(Metric).where(
            Metric.team_id == team_id, Metric.key == key.lower(), Metric.archived_at.is_(None)
        )
    )


def _unknown(key: str) -> str:
    return f"There is no metric `{key}`. `/metric list` shows them all; `/metric define` adds one."


def on_metric_command(
    ack: Ack, command: dict[str, Any], context: BoltContext, client: WebClient, respond: Respond
) -> None:
    """`/metric <key> [share] | list | record <key> <value> [date] | define | help`."""
    text = (command.get("text") or "").strip()
    word, _, rest = text.partition(" ")
    word, rest = word.lower(), rest.strip()
    if word in ("", "help"):
        ack(response_type="ephemeral", text=messaging.HELP, blocks=messaging.text_blocks(messaging.HELP))
        return
    ack()
    db: Database = context["db"]
    team_id = context.team_id or command["team_id"]
    user_id = command["user_id"]
    if word == "list":
        answer_list(db, respond, team_id=team_id)
    elif word == "record":
        answer_record(db, respond, team_id=team_id, args=rest)
    elif word == "define":
        open_define(client, db, respond, team_id=team_id, user_id=user_id, trigger_id=command["trigger_id"])
    elif rest.lower() == "share":
        share_metric(
            client, db, respond, team_id=team_id, user_id=user_id, channel_id=command["channel_id"], key=word
        )
    elif rest:
        _say(respond, f"I don't know `/metric {text}`.\n\n{messaging.HELP}")
    else:
        answer_metric(db, respond, team_id=team_id, key=word)


def answer_metric(db: Database, respond: Respond, *, team_id: str, key: str) -> None:
    """The ephemeral view of one metric."""
    with db.read() as s:
        metric = find_metric(db_session=s, team_id=team_id, key=key)
        view = (
            alerts.metric_view(db_session=s, metric=metric, count=messaging.TABLE_PERIODS) if metric else None
        )
    if view is None:
        _say(respond, _unknown(key))
        return
    respond(response_type="ephemeral", text=messaging.metric_text(view), blocks=messaging.metric_blocks(view))


def answer_list(db: Database, respond: Respond, *, team_id: str) -> None:
    """Every live metric with its latest value."""
    with db.read() as s:
        metrics = s.scalars(
            select(Metric).where(Metric.team_id == team_id, Metric.archived_at.is_(None)).order_by(Metric.key)
        )
        views = [alerts.metric_view(db_session=s, metric=m, count=1) for m in metrics]
    blocks = messaging.list_blocks(views)
    respond(response_type="ephemeral", text=f"{len(views)} metrics", blocks=blocks)


def parse_record(args: str, unit: str) -> tuple[float, date | None] | str:
    """The value and optional day of `/metric record <key> <value> [YYYY-MM-DD]` (key removed), or an error."""
    tokens = args.split()
    day: date | None = None
    if len(tokens) >= 2 and (DATE.match(tokens[-1]) or re.match(r"^\d{4}[-/.]\d", tokens[-1])):
        try:
            day = date.fromisoformat(tokens[-1]) if DATE.match(tokens[-1]) else None
        except ValueError:
            day = None
        if day is None:
            return f"`{tokens[-1]}` isn't a date; use YYYY-MM-DD, e.g. 2026-11-23."
        tokens = tokens[:-1]
    if not tokens:
        return RECORD_USAGE
    raw = " ".join(tokens)
    value = messaging.parse_value(raw, unit)
    if value is None:
        return f"`{raw}` isn't a number. {RECORD_USAGE}"
    return value, day


def answer_record(db: Database, respond: Respond, *, team_id: str, args: str) -> None:
    """Records a manual metric's value for a day (today by default) and confirms it."""
    from bot.metrics.sources import SourceError, record_manual

    key, _, rest = args.partition(" ")
    if not key:
        _say(respond, RECORD_USAGE)
        return
    now = utcnow()
    with db.session() as s:
        metric = find_metric(db_session=s, team_id=team_id, key=key)
        if metric is None:
            error: str | None = _unknown(key)
        elif metric.source != "manual":
            error = (
                f"`{metric.key}` gets its numbers from its *{metric.source}* source, so values can't be "
                "recorded by hand. Only metrics with the manual source take `/metric record`."
            )
        else:
            parsed = parse_record(rest, metric.unit)
            if isinstance(parsed, str):
                error = parsed
            elif parsed[1] is not None and parsed[1] > now.date():
                error = f"{parsed[1].isoformat()} is in the future; record values for today or earlier."
            else:
                try:
                    point = record_manual(
                        db_session=s, metric=metric, value=parsed[0], day=parsed[1], now=now
                    )
                except SourceError as exc:
                    error = exc.message + (f" {exc.hint}" if exc.hint else "")
                else:
                    error = None
                    s.flush()
                    view = alerts.metric_view(db_session=s, metric=metric, count=messaging.TABLE_PERIODS)
                    recorded = messaging.format_value(point.value, metric.unit)
                    day_text = point.ts.date().isoformat()
    if error is not None:
        _say(respond, error)
        return
    confirmation = f":white_check_mark: Recorded *{view.name}* = *{recorded}* for {day_text}."
    blocks = [*messaging.text_blocks(confirmation), *messaging.metric_blocks(view)]
    respond(response_type="ephemeral", text=confirmation, blocks=blocks)


def share_metric(
    client: WebClient,
    db: Database,
    respond: Respond,
    *,
    team_id: str,
    user_id: str,
    channel_id: str,
    key: str,
) -> None:
    """Posts the metric's summary and its chart to the channel."""
    with db.read() as s:
        metric = find_metric(db_session=s, team_id=team_id, key=key)
        view = alerts.metric_view(db_session=s, metric=metric, count=SHARE_PERIODS) if metric else None
    if view is None:
        _say(respond, _unknown(key))
        return
    if view.current is None:
        _say(respond, f"`{view.key}` has no values yet, so there is nothing to share.")
        return
    png = render_chart(title=view.name, values=list(view.periods), unit=view.unit, target=view.target)
    try:
        client.files_upload_v2(
            channel=channel_id,
            file=png,
            filename=f"{view.key}.png",
            title=f"{view.name} — last {len(view.periods)} {view.period}s",
            initial_comment=f"{messaging.metric_text(view)}\n_Shared by <@{user_id}> · `/metric {view.key}`_",
        )
    except SlackApiError as exc:
        error = exc.response.get("error")
        logger.info("metric %s not shared in %s: %s", view.key, channel_id, error)
        _say(
            respond, f"I couldn't post in this channel (`{error}`). Invite me to it, or try another channel."
        )
        return
    _say(respond, f"Shared *{view.name}* with its chart in <#{channel_id}>.")


def open_define(
    client: WebClient, db: Database, respond: Respond, *, team_id: str, user_id: str, trigger_id: str
) -> None:
    """Opens the define-a-metric modal, or tells a non-admin who can."""
    refusal = metrics_define.open_define_modal(
        client, db, team_id=team_id, user_id=user_id, trigger_id=trigger_id
    )
    if refusal:  # not allowed: the module's blocks say who can
        respond(response_type="ephemeral", text=_blocks_text(refusal), blocks=refusal)


def _blocks_text(blocks: list[dict[str, Any]]) -> str:
    """The first section's text, as the fallback for blocks."""
    for block in blocks:
        text = block.get("text")
        if isinstance(text, dict) and text.get("text"):
            return str(text["text"])
    return "Sorry, you can't do that."
