"""`/prodops account <name>` and the monthly brief's subscribe / stop buttons. Thin: parse → service → Block Kit."""

from __future__ import annotations

from typing import Any

from slack_bolt import Ack, App, BoltContext, Respond
from slack_sdk import WebClient
from sqlalchemy import select

from bot.accounts import brief
from bot.accounts import brief_messaging as messaging
from bot.accounts.brief_messaging import BriefAction
from bot.admin_messaging import notice_blocks
from bot.workspaces import SettingsCache
from handlers import admin, slack_io
from storage.db import Database
from storage.models import Account, FeedbackItem, Visibility
from storage.types import utcnow

USAGE = (
    "Use `/prodops account <name or domain>`, e.g. `/prodops account Acme` or `/prodops account acme.com`."
)


def register(app: App) -> None:
    """Adds `account` to `/prodops` and binds the brief buttons."""
    admin.SUBCOMMANDS["account"] = account_subcommand
    app.action(BriefAction.subscribe.value)(on_subscribe)
    app.action(BriefAction.unsubscribe.value)(on_unsubscribe)


def account_subcommand(
    *, client: WebClient, db: Database, team_id: str, user_id: str, args: list[str], cache: SettingsCache
) -> list[dict[str, Any]]:
    """The account's brief; items from private conversations only when the reader is in them."""
    query = " ".join(args).strip()
    if not query:
        return notice_blocks(USAGE, ok=False)
    with db.read() as s:
        try:
            account = brief.find_account(db_session=s, team_id=team_id, query=query)
        except brief.AccountNotFound as exc:
            return messaging.not_found_blocks(exc.query, exc.close)
        except brief.AmbiguousAccount as exc:
            return messaging.ambiguous_blocks(exc.query, exc.names)
        account_id = account.id
        private = list(
            s.scalars(
                select(FeedbackItem.channel_id)
                .where(
                    FeedbackItem.team_id == team_id,
                    FeedbackItem.account_id == account.id,
                    FeedbackItem.visibility != Visibility.public.value,
                    FeedbackItem.created_at >= brief.quarter_start(utcnow()),
                )
                .distinct()
            )
        )
    visible = slack_io.channels_user_is_in(client, user_id, private) if private else set()
    with db.read() as s:
        current = s.get(Account, account_id)
        if current is None:  # deleted in between
            return messaging.not_found_blocks(query, [])
        summary = brief.account_brief(
            db_session=s, team_id=team_id, account=current, visible_channels=visible
        )
        subscribed = brief.get_subscription(db_session=s, team_id=team_id, user_id=user_id) is not None
    return messaging.account_brief_blocks(
        summary, viewer_is_owner=current.owner_user_id == user_id, subscribed=subscribed
    )


def on_subscribe(
    ack: Ack, body: dict[str, Any], context: BoltContext, client: WebClient, respond: Respond
) -> None:
    """An account owner subscribes to the monthly brief of their accounts (in their Slack time zone)."""
    ack()
    db: Database = context["db"]
    team_id, user_id = context.team_id or body["team"]["id"], body["user"]["id"]
    with db.read() as s:
        owned = brief.owned_accounts(db_session=s, team_id=team_id, user_id=user_id)
    if not owned:
        text = (
            "Only account owners can subscribe: you own no account. An admin sets owners with "
            "`prodops import accounts FILE.csv` (the `owner` column)."
        )
        respond(
            response_type="ephemeral", replace_original=False, text=text, blocks=notice_blocks(text, ok=False)
        )
        return
    timezone = brief.user_timezone(client, user_id) or "UTC"
    with db.session() as s:
        row, created = brief.subscribe(db_session=s, team_id=team_id, user_id=user_id, timezone=timezone)
        when, zone = row.next_run_at, row.timezone
    local = f"{when.astimezone(brief.safe_zone(zone)):%a %-d %b, %H:%M} ({zone})" if when else "soon"
    names = ", ".join(f"*{a.name}*" for a in owned[:5]) + (
        f" and {len(owned) - 5} more" if len(owned) > 5 else ""
    )
    text = (
        f"{'Subscribed' if created else 'You were already subscribed'}: a DM on the first working day of each "
        f"month about {names}. Next: {local}."
    )
    respond(response_type="ephemeral", replace_original=False, text=text, blocks=notice_blocks(text))


def on_unsubscribe(ack: Ack, body: dict[str, Any], context: BoltContext, respond: Respond) -> None:
    """Stops the monthly brief."""
    ack()
    db: Database = context["db"]
    team_id, user_id = context.team_id or body["team"]["id"], body["user"]["id"]
    with db.session() as s:
        removed = brief.unsubscribe(db_session=s, team_id=team_id, user_id=user_id)
    text = "Your monthly account brief is stopped." if removed else "You had no monthly account brief."
    respond(response_type="ephemeral", replace_original=False, text=text, blocks=notice_blocks(text))
