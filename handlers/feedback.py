"""Feedback capture listeners: the feedback reaction and `/feedback`. Thin: parse → service → Block Kit."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt import Ack, App, BoltContext, Respond
from slack_sdk import WebClient

from bot import workspaces
from bot.feedback import messaging
from bot.feedback import service as feedback_service
from bot.feedback.schemas import MAX_TEXT, FeedbackCapture
from handlers import slack_io
from storage.db import Database
from storage.models import FeedbackSource

logger = logging.getLogger("prodops.feedback")


def register(app: App) -> None:
    """Binds the feedback listeners."""
    app.event("reaction_added")(on_reaction_added)
    app.command("/feedback")(on_feedback_command)


def on_reaction_added(event: dict[str, Any], context: BoltContext, client: WebClient) -> None:
    """Captures the reacted-to message as feedback when the reaction is the workspace's feedback emoji."""
    db: Database = context["db"]
    item = event.get("item") or {}
    if item.get("type") != "message":
        return
    team_id, channel_id, ts = context.team_id or "", item["channel"], item["ts"]
    with db.session() as s:
        emoji = workspaces.get_or_create(db_session=s, team_id=team_id).feedback_emoji
        if workspaces.normalise_emoji(event.get("reaction", "")) != emoji:
            return
        if feedback_service.get_by_message(
            db_session=s, team_id=team_id, channel_id=channel_id, message_ts=ts
        ):
            return  # already captured: another reaction adds nothing

    message = slack_io.fetch_message(client, channel_id=channel_id, ts=ts)
    if message is None:
        logger.info("reacted message %s/%s is gone; nothing captured", channel_id, ts)
        return
    capture = FeedbackCapture(
        team_id=team_id,
        channel_id=channel_id,
        message_ts=ts,
        thread_ts=message.thread_ts,
        permalink=slack_io.permalink(client, channel_id=channel_id, ts=ts),
        text=message.text[:MAX_TEXT],
        author_user_id=message.user_id or event.get("item_user"),
        captured_by_user_id=event["user"],
        source=FeedbackSource.reaction,
        visibility=slack_io.conversation_visibility(client, channel_id),
    )
    with db.session() as s:
        stored, created = feedback_service.capture(db_session=s, item_in=capture)
        text = messaging.feedback_confirmation_text(stored)
        blocks = messaging.feedback_confirmation_blocks(stored, emoji)
    if not created:
        return
    client.chat_postMessage(
        channel=channel_id, thread_ts=message.thread_ts or ts, text=text, blocks=blocks, unfurl_links=False
    )


def on_feedback_command(
    ack: Ack, command: dict[str, Any], context: BoltContext, client: WebClient, respond: Respond
) -> None:
    """`/feedback <text>` saves an item; `/feedback` or `/feedback help` explains usage."""
    db: Database = context["db"]
    text = (command.get("text") or "").strip()
    if text.lower() in ("", "help"):
        with db.session() as s:
            emoji = workspaces.get_or_create(db_session=s, team_id=context.team_id or "").feedback_emoji
        ack(
            response_type="ephemeral",
            blocks=messaging.feedback_help_blocks(emoji),
            text="How to use /feedback",
        )
        return
    if len(text) > MAX_TEXT:
        ack(
            response_type="ephemeral",
            blocks=messaging.error_blocks(
                f"That is {len(text):,} characters; feedback can be at most {MAX_TEXT:,}. "
                "Shorten it, or post it as a message and react to it instead."
            ),
            text="Feedback too long",
        )
        return
    ack()  # Web API calls below happen after the ack
    channel_id = command["channel_id"]
    capture = FeedbackCapture(
        team_id=context.team_id or command["team_id"],
        channel_id=channel_id,
        text=text,
        author_user_id=command["user_id"],
        captured_by_user_id=command["user_id"],
        source=FeedbackSource.command,
        visibility=slack_io.conversation_visibility(client, channel_id),
        delivery_id=command.get("trigger_id"),
    )
    with db.session() as s:
        stored, _ = feedback_service.capture(db_session=s, item_in=capture)
        text, blocks = f"Feedback #{stored.id} saved", messaging.command_confirmation_blocks(stored)
    respond(response_type="ephemeral", text=text, blocks=blocks)
