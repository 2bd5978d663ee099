"""`/prodops`: help, status, config, channel monitoring and the admin list. Admin rule in bot/admins.py."""

from __future__ import annotations

import re
from typing import Any

from slack_bolt import Ack, App, BoltContext, Respond
from slack_sdk import WebClient
from sqlalchemy import func, select

from bot import admins, inbox_admin, monitoring, workspaces
from bot.admin_messaging import (
    config_blocks,
    notice_blocks,
    prodops_help_blocks,
    refusal_blocks,
    status_blocks,
)
from bot.insights.similarity import backend_description
from bot.security import retention
from bot.security.messaging import retention_changed_text, retention_setting_blocks
from bot.workspaces import SettingsCache
from handlers import slack_io
from handlers.request_types import types_subcommand
from storage.db import Database
from storage.models import Account, FeedbackItem
from storage.types import utcnow

EMOJI_NAME = re.compile(r"^:?([a-z0-9_+'-]{1,100}):?$")


def register(app: App) -> None:
    """Binds `/prodops`."""
    app.command("/prodops")(on_prodops_command)


def on_prodops_command(
    ack: Ack, command: dict[str, Any], context: BoltContext, client: WebClient, respond: Respond
) -> None:
    """Dispatches `/prodops <subcommand>`; admin-only ones check the one admin rule first."""
    text = (command.get("text") or "").strip()
    words = text.split()
    head = words[0].lower() if words else "help"
    if head == "help" or head not in SUBCOMMANDS:
        ack(response_type="ephemeral", blocks=prodops_help_blocks(), text="ProdOps commands")
        return
    ack()
    db: Database = context["db"]
    team_id = context.team_id or command["team_id"]
    user_id = command["user_id"]
    # The status command's own delivery is in the inbox while it runs (as trigger_id): not "in progress".
    own = {"delivery_id": command.get("trigger_id")} if head == "status" else {}
    blocks = SUBCOMMANDS[head](
        client=client,
        db=db,
        team_id=team_id,
        user_id=user_id,
        args=words[1:],
        cache=context["workspace_cache"],
        **own,
    )
    respond(response_type="ephemeral", blocks=blocks, text="ProdOps")


def _status(
    *,
    client: WebClient,
    db: Database,
    team_id: str,
    user_id: str,
    args: list[str],
    cache: SettingsCache,
    delivery_id: str | None = None,
) -> list[dict[str, Any]]:
    queue = inbox_admin.queue_summary(db=db, team_id=team_id, exclude_delivery_id=delivery_id)
    with db.session() as s:
        ws = workspaces.get_or_create(db_session=s, team_id=team_id)
        return status_blocks(
            similarity=backend_description(),
            backend=db.backend,
            emoji=ws.feedback_emoji,
            watched=monitoring.watched_channels(db_session=s, team_id=team_id),
            admins=admins.list_admins(db_session=s, team_id=team_id),
            items=s.scalar(
                select(func.count()).select_from(FeedbackItem).where(FeedbackItem.team_id == team_id)
            )
            or 0,
            accounts=s.scalar(select(func.count()).select_from(Account).where(Account.team_id == team_id))
            or 0,
            queue=queue,
            now=utcnow(),
        )


def _config(
    *, client: WebClient, db: Database, team_id: str, user_id: str, args: list[str], cache: SettingsCache
) -> list[dict[str, Any]]:
    if not args:
        with db.session() as s:
            ws = workspaces.get_or_create(db_session=s, team_id=team_id)
            return config_blocks(emoji=ws.feedback_emoji) + retention_setting_blocks(ws.retention_days)
    key = args[0].lower()
    if key == "retention":
        return _config_retention(client, db, team_id, user_id, args[1:])
    if key not in ("feedback-emoji", "emoji") or len(args) != 2:
        return notice_blocks(
            "Use `/prodops config feedback-emoji <emoji name>`, e.g. `bulb` or `:star:`, or "
            "`/prodops config retention 365d` (or `off`).",
            ok=False,
        )
    match = EMOJI_NAME.match(args[1].lower())
    if match is None:
        return notice_blocks(
            f"“{args[1]}” is not an emoji name. Use the name, e.g. `bulb` or `:star:`.", ok=False
        )
    if not slack_io.is_prodops_admin(client, db, team_id, user_id):
        return refusal_blocks("change settings")
    emoji = workspaces.normalise_emoji(match.group(1))
    with db.session() as s:
        workspaces.get_or_create(db_session=s, team_id=team_id).feedback_emoji = emoji
    cache.forget(team_id)
    return notice_blocks(f"Feedback reaction is now :{emoji}: — react with it to capture a message.")


def _config_retention(
    client: WebClient, db: Database, team_id: str, user_id: str, args: list[str]
) -> list[dict[str, Any]]:
    """`/prodops config retention <N>d|off` (admins): how long feedback and requests are kept."""
    if len(args) != 1:
        with db.session() as s:
            days = workspaces.get_or_create(db_session=s, team_id=team_id).retention_days
        return retention_setting_blocks(days)
    try:
        days = retention.parse_retention(args[0])
    except retention.InvalidRetention as exc:
        return notice_blocks(str(exc), ok=False)
    if not slack_io.is_prodops_admin(client, db, team_id, user_id):
        return refusal_blocks("change the retention")
    with db.session() as s:
        retention.set_retention(db_session=s, team_id=team_id, days=days)
    return notice_blocks(retention_changed_text(days))


def _watch(
    *, client: WebClient, db: Database, team_id: str, user_id: str, args: list[str], cache: SettingsCache
) -> list[dict[str, Any]]:
    return _set_watch(client, db, team_id, user_id, args, on=True, cache=cache)


def _unwatch(
    *, client: WebClient, db: Database, team_id: str, user_id: str, args: list[str], cache: SettingsCache
) -> list[dict[str, Any]]:
    return _set_watch(client, db, team_id, user_id, args, on=False, cache=cache)


def _set_watch(
    client: WebClient,
    db: Database,
    team_id: str,
    user_id: str,
    args: list[str],
    *,
    on: bool,
    cache: SettingsCache,
) -> list[dict[str, Any]]:
    verb = "watch" if on else "unwatch"
    if len(args) != 1:
        return notice_blocks(f"Name one channel: `/prodops {verb} #channel`.", ok=False)
    if not slack_io.is_prodops_admin(client, db, team_id, user_id):
        return refusal_blocks(f"{verb} channels")
    channel_id = slack_io.resolve_channel(client, args[0])
    if channel_id is None:
        return notice_blocks(
            f"I can't find a channel called {args[0]}. Check the name, or pick it with #.", ok=False
        )
    if on:
        member = slack_io.bot_is_member(client, channel_id)
        if not member:
            return notice_blocks(
                f"I'm not in <#{channel_id}> yet, so I can't read it. Type `/invite @ProdOps` in <#{channel_id}>, "
                f"then `/prodops watch` again.",
                ok=False,
            )
        with db.session() as s:
            added = monitoring.watch(db_session=s, team_id=team_id, channel_id=channel_id, user_id=user_id)
        cache.forget(team_id)
        if not added:
            return notice_blocks(f"<#{channel_id}> was already watched.")
        return notice_blocks(
            f"Watching <#{channel_id}>: every new top-level message becomes feedback (thanks, emoji, bots and "
            "auto-replies are skipped). `/prodops unwatch` stops it."
        )
    with db.session() as s:
        removed = monitoring.unwatch(db_session=s, team_id=team_id, channel_id=channel_id)
    cache.forget(team_id)
    if not removed:
        return notice_blocks(f"<#{channel_id}> was not being watched.")
    return notice_blocks(f"Stopped watching <#{channel_id}>. Items already captured stay.")


def _admins(
    *, client: WebClient, db: Database, team_id: str, user_id: str, args: list[str], cache: SettingsCache
) -> list[dict[str, Any]]:
    action = args[0].lower() if args else "list"
    if action == "list":
        with db.session() as s:
            listed = admins.list_admins(db_session=s, team_id=team_id)
        who = ", ".join(f"<@{u}>" for u in listed) or "nobody yet"
        return notice_blocks(f"ProdOps admins: Slack workspace owners and admins, plus {who}.")
    if action not in ("add", "remove") or len(args) != 2:
        return notice_blocks(
            "Use `/prodops admins list`, `/prodops admins add @user` or `remove @user`.", ok=False
        )
    if not slack_io.is_prodops_admin(client, db, team_id, user_id):
        return refusal_blocks("change the admin list")
    target = slack_io.resolve_user(client, args[1])
    if target is None:
        return notice_blocks(f"I can't find {args[1]}. Mention them with @.", ok=False)
    with db.session() as s:
        if action == "add":
            changed = admins.add(db_session=s, team_id=team_id, user_id=target, added_by_user_id=user_id)
            text = f"<@{target}> is now a ProdOps admin." if changed else f"<@{target}> already was an admin."
        else:
            changed = admins.remove(db_session=s, team_id=team_id, user_id=target)
            text = (
                f"<@{target}> is no longer a ProdOps admin."
                if changed
                else f"<@{target}> was not on the list."
            )
    return notice_blocks(text)


SUBCOMMANDS = {
    "types": types_subcommand,
    "status": _status,
    "config": _config,
    "watch": _watch,
    "unwatch": _unwatch,
    "admins": _admins,
}
