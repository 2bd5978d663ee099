"""Channel monitoring and following captured messages: new messages, thread replies, edits, deletions."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt import App, BoltContext
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot import monitoring
from bot.feedback import service as feedback_service
from bot.feedback.noise import classify_message
from bot.insights.batch import InsightMode
from handlers import requests as requests_handlers
from handlers import slack_io
from handlers.capture import capture_message
from storage.db import Database
from storage.models import FeedbackSource

logger = logging.getLogger("prodops.monitoring")


def register(app: App) -> None:
    """Binds the message listener (every message event the app is subscribed to)."""
    app.event("message")(on_message)


def on_message(event: dict[str, Any], context: BoltContext, client: WebClient) -> None:
    """Routes a message event: an edit, a deletion, a reply to a captured message, or a watched-channel post."""
    db: Database = context["db"]
    team_id = context.team_id or ""
    subtype = event.get("subtype")
    channel_id = event.get("channel", "")
    if subtype == "message_changed":
        _follow_edit(db, team_id, channel_id, event.get("message") or {})
        return
    if subtype == "message_deleted":
        with db.session() as s:
            feedback_service.mark_deleted(
                db_session=s, team_id=team_id, channel_id=channel_id, message_ts=event.get("deleted_ts", "")
            )
        return
    thread_ts, ts = event.get("thread_ts"), event.get("ts", "")
    if thread_ts and thread_ts != ts:
        _attach_reply(db, team_id, event)
        requests_handlers.note_thread_reply(client, db, team_id=team_id, event=event)
        return
    _capture_if_watched(client, db, team_id, event, context)


def _follow_edit(db: Database, team_id: str, channel_id: str, message: dict[str, Any]) -> None:
    if not message.get("ts"):
        return
    with db.session() as s:
        feedback_service.record_slack_edit(
            db_session=s,
            team_id=team_id,
            channel_id=channel_id,
            message_ts=message["ts"],
            new_text=slack_io.message_text(message),
        )


def _attach_reply(db: Database, team_id: str, event: dict[str, Any]) -> None:
    """A human reply in the thread of a captured message joins the item's conversation."""
    if event.get("bot_id") or event.get("subtype") not in (None, "thread_broadcast", "file_share"):
        return
    with db.session() as s:
        feedback_service.attach_reply(
            db_session=s,
            team_id=team_id,
            channel_id=event["channel"],
            thread_ts=event["thread_ts"],
            message_ts=event["ts"],
            user_id=event.get("user"),
            text=slack_io.message_text(event),
        )


def _capture_if_watched(
    client: WebClient, db: Database, team_id: str, event: dict[str, Any], context: BoltContext
) -> None:
    """A top-level human message in a watched channel becomes an item, unless it is noise."""
    channel_id = event.get("channel", "")
    with db.read() as s:
        if not monitoring.is_watched(db_session=s, team_id=team_id, channel_id=channel_id):
            return
    verdict = classify_message(event)
    if verdict.is_noise:
        logger.debug("not feedback (%s): %s/%s", verdict.reason, channel_id, event.get("ts"))
        return
    message = slack_io.SlackMessage(
        channel_id=channel_id,
        ts=event["ts"],
        thread_ts=None,
        user_id=event.get("user"),
        text=slack_io.message_text(event),
    )
    captured = capture_message(
        client,
        db,
        team_id=team_id,
        message=message,
        captured_by_user_id=event.get("user") or "",
        source=FeedbackSource.channel,
        # The confirmation here is a reaction, not a message: a duplicate above the link threshold is linked
        # silently, and nothing is asked (a question in every thread would drown a watched channel).
        show=InsightMode.silent,
    )
    if captured.created:
        emoji = context["workspace_cache"].feedback_emoji(team_id)
        try:  # a quiet sign that the message is tracked; no thread reply for every message
            client.reactions_add(channel=channel_id, timestamp=event["ts"], name=emoji)
        except SlackApiError as exc:
            logger.info(
                "could not mark %s/%s as captured: %s", channel_id, event["ts"], exc.response.get("error")
            )
