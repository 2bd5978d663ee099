"""`/feedback trends [week|month]`, `/feedback ship <theme> [message]` and the *Mark shipped* button. Thin."""

from __future__ import annotations

import logging
from typing import Any, Literal

from slack_bolt import Ack, App, BoltContext, Respond
from slack_sdk import WebClient

from bot.admin_messaging import refusal_blocks
from bot.insights import insight_messaging as messaging
from bot.insights import ship, trends
from bot.insights.insight_messaging import InsightAction
from handlers import feedback, slack_io
from storage.db import Database

logger = logging.getLogger("prodops.insights")

TRENDS_USAGE = "Use `/feedback trends` (last 7 days) or `/feedback trends month` (last 30 days)."
SHIP_USAGE = (
    "Use `/feedback ship <theme> [message]`, e.g. `/feedback ship CSV export Exports now keep every column`. "
    'Quote a theme name that runs into your message: `/feedback ship "CSV export" …`, or use its number: '
    "`/feedback ship #12 …`."
)


def register(app: App) -> None:
    """Adds `trends` and `ship` to `/feedback` and binds the *Mark shipped* button."""
    feedback.SUBCOMMANDS["trends"] = on_trends
    feedback.SUBCOMMANDS["ship"] = on_ship
    app.action(InsightAction.ship_theme.value)(on_ship_button)


def on_trends(
    *, ack: Ack, command: dict[str, Any], context: BoltContext, client: WebClient, respond: Respond, args: str
) -> None:
    """The top themes of the week (or month), rising first, each with one example this channel may see."""
    word = args.strip().lower() or "week"
    if word not in ("week", "month"):
        ack(response_type="ephemeral", text="Unknown period", blocks=messaging.error_blocks(TRENDS_USAGE))
        return
    ack()
    period: Literal["week", "month"] = "month" if word == "month" else "week"
    db: Database = context["db"]
    team_id = context.team_id or command["team_id"]
    start, end = trends.window_for(period)
    with db.read() as s:
        report = trends.theme_trends(
            db_session=s, team_id=team_id, start=start, end=end, channel_id=command["channel_id"]
        )
    can_ship = bool(report.themes) and slack_io.is_prodops_admin(client, db, team_id, command["user_id"])
    respond(
        response_type="ephemeral",
        text=messaging.trends_text(report),
        blocks=messaging.trends_blocks(report, period=period, can_ship=can_ship),
    )


def on_ship(
    *, ack: Ack, command: dict[str, Any], context: BoltContext, client: WebClient, respond: Respond, args: str
) -> None:
    """Marks a theme shipped and queues the notices; answers at once with how many will go out."""
    if not args.strip():
        ack(response_type="ephemeral", text="Which theme?", blocks=messaging.error_blocks(SHIP_USAGE))
        return
    ack()
    db: Database = context["db"]
    team_id = context.team_id or command["team_id"]
    user_id = command["user_id"]
    if not slack_io.is_prodops_admin(client, db, team_id, user_id):
        respond(
            response_type="ephemeral",
            text="Only admins can ship",
            blocks=refusal_blocks("mark themes shipped"),
        )
        return
    try:
        with db.session() as s:
            theme, message = ship.parse_ship_args(db_session=s, team_id=team_id, args=args)
            plan = ship.plan_ship(
                db_session=s,
                team_id=team_id,
                theme_id=theme.id,
                message=message,
                requested_by_user_id=user_id,
            )
    except ship.ThemeNotFound as exc:
        respond(
            response_type="ephemeral", text="No such theme", blocks=messaging.error_blocks(_not_found(exc))
        )
        return
    except ship.AmbiguousTheme as exc:
        listed = ", ".join(f"`#{theme_id}` {name}" for theme_id, name in exc.matches)
        text = f"Several themes are called “{exc.name}”: {listed}. Name one by its number: `/feedback ship #<n> …`."
        respond(response_type="ephemeral", text="Which theme?", blocks=messaging.error_blocks(text))
        return
    respond(response_type="ephemeral", text=f"{plan.theme_name} shipped", blocks=messaging.ship_blocks(plan))


def _not_found(exc: ship.ThemeNotFound) -> str:
    close = ", ".join(f"*{name}*" for name in exc.close)
    hint = f" Did you mean {close}?" if close else " There are no accepted themes yet."
    return f"No accepted theme is called “{exc.name}”.{hint} `/feedback trends` lists them. {SHIP_USAGE}"


def on_ship_button(
    ack: Ack, body: dict[str, Any], context: BoltContext, client: WebClient, respond: Respond
) -> None:
    """*Mark shipped* in the trends list (after Slack's confirmation): ships with the theme's name as message."""
    ack()
    db: Database = context["db"]
    team_id = context.team_id or body["team"]["id"]
    user_id = body["user"]["id"]
    if not slack_io.is_prodops_admin(client, db, team_id, user_id):
        respond(
            response_type="ephemeral",
            replace_original=False,
            text="Only admins can ship",
            blocks=refusal_blocks("mark themes shipped"),
        )
        return
    try:
        theme_id = int(body["actions"][0]["value"])
        with db.session() as s:
            plan = ship.plan_ship(
                db_session=s, team_id=team_id, theme_id=theme_id, message=None, requested_by_user_id=user_id
            )
    except (ValueError, ship.ThemeNotFound):
        respond(
            response_type="ephemeral",
            replace_original=False,
            text="Theme gone",
            blocks=messaging.error_blocks("That theme no longer exists. Run `/feedback trends` again."),
        )
        return
    respond(
        response_type="ephemeral",
        replace_original=False,
        text=f"{plan.theme_name} shipped",
        blocks=messaging.ship_blocks(plan),
    )
