"""Capturing a Slack message as feedback: the Slack reads around the service call, shared by every mode."""

from __future__ import annotations

from dataclasses import dataclass

from slack_sdk import WebClient

from bot.feedback import service as feedback_service
from bot.feedback.schemas import MAX_TEXT, FeedbackCapture, FeedbackDetails
from handlers import slack_io
from storage.db import Database
from storage.models import FeedbackItem, FeedbackSource


@dataclass
class Captured:
    """The outcome of a capture, read while the session was open."""

    item_id: int
    created: bool
    thread_ts: str
    item: FeedbackItem  # detached, with its account and replies loaded for rendering


def capture_message(
    client: WebClient,
    db: Database,
    *,
    team_id: str,
    message: slack_io.SlackMessage,
    captured_by_user_id: str,
    source: FeedbackSource,
    details: FeedbackDetails | None = None,
    delivery_id: str | None = None,
) -> Captured:
    """Stores a Slack message as an item (once per message), with permalink, visibility and existing replies."""
    capture = FeedbackCapture(
        team_id=team_id,
        channel_id=message.channel_id,
        message_ts=message.ts,
        thread_ts=message.thread_ts,
        permalink=slack_io.permalink(client, channel_id=message.channel_id, ts=message.ts),
        text=message.text[:MAX_TEXT],
        author_user_id=message.user_id,
        captured_by_user_id=captured_by_user_id,
        source=source,
        visibility=slack_io.conversation_visibility(client, message.channel_id),
        delivery_id=delivery_id,
    )
    replies = (
        slack_io.thread_replies(client, channel_id=message.channel_id, thread_ts=message.ts)
        if message.reply_count and not message.thread_ts
        else []
    )
    with db.session() as s:
        item, created = feedback_service.capture(db_session=s, item_in=capture)
        if details is not None:
            feedback_service.update_details(
                db_session=s, item=item, details=details, changed_by_user_id=captured_by_user_id
            )
        for reply in replies:
            feedback_service.attach_reply(
                db_session=s,
                team_id=team_id,
                channel_id=message.channel_id,
                thread_ts=message.ts,
                message_ts=reply["ts"],
                user_id=reply.get("user"),
                text=slack_io.message_text(reply),
            )
        _ = (item.account, item.replies)  # load before the session closes
        return Captured(
            item_id=item.id, created=created, thread_ts=message.thread_ts or message.ts, item=item
        )


def load_item(db: Database, *, team_id: str, item_id: int) -> FeedbackItem | None:
    """An item with its account and replies loaded, detached for rendering."""
    with db.session() as s:
        item = feedback_service.get(db_session=s, team_id=team_id, feedback_id=item_id)
        if item is not None:
            _ = (item.account, item.replies)  # load before the session closes
        return item
