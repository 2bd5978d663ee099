"""Capturing a Slack message as feedback: the Slack reads around the service call, shared by every mode."""

from __future__ import annotations

from dataclasses import dataclass

from slack_sdk import WebClient

from bot.feedback import messaging
from bot.feedback import service as feedback_service
from bot.feedback.schemas import MAX_TEXT, FeedbackCapture, FeedbackDetails
from bot.insights import capture_hook, duplicates
from bot.insights.batch import InsightMode, enqueue_insights, set_confirmation, show_privately_instead
from bot.insights.capture_hook import DuplicateNotice
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
    show: InsightMode = InsightMode.thread,
    emoji: str | None = None,
) -> Captured:
    """Stores a Slack message as an item (once per message), with permalink, visibility and existing replies.

    A new item's insights (vector, theme, duplicate check) are queued with it, to be shown as `show` says:
    in the thread confirmation (posted by the caller, see `post_thread_confirmation`), privately to the
    capturer, or not at all (watched channels: a duplicate is only linked, never asked about).
    """
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
        if created:
            enqueue_insights(
                db_session=s,
                team_id=team_id,
                item_id=item.id,
                mode=show,
                channel_id=message.channel_id,
                user_id=captured_by_user_id,
                emoji=emoji,
            )
        _ = (item.account, item.replies)  # load before the session closes
        return Captured(
            item_id=item.id, created=created, thread_ts=message.thread_ts or message.ts, item=item
        )


def load_item(db: Database, *, team_id: str, item_id: int) -> FeedbackItem | None:
    """An item with its account and replies loaded, detached for rendering."""
    with db.read() as s:
        item = feedback_service.get(db_session=s, team_id=team_id, feedback_id=item_id)
        if item is not None:
            _ = (item.account, item.replies)  # load before the session closes
        return item


def post_thread_confirmation(
    client: WebClient,
    db: Database,
    *,
    team_id: str,
    channel_id: str,
    thread_ts: str,
    item: FeedbackItem,
    emoji: str,
) -> str | None:
    """Confirms a new item in the message's thread at once and tells its queued insights where the
    confirmation is, so they update it in place (theme, duplicate link or question); returns its ts."""
    posted = client.chat_postMessage(
        channel=channel_id,
        thread_ts=thread_ts,
        text=messaging.feedback_confirmation_text(item),
        blocks=messaging.feedback_confirmation_blocks(item, emoji),
        unfurl_links=False,
    )
    ts = posted.get("ts")
    if ts:
        with db.session() as s:
            set_confirmation(
                db_session=s,
                team_id=team_id,
                item_id=item.id,
                channel_id=posted.get("channel") or channel_id,
                message_ts=ts,
            )
    return ts


def show_privately_after_answer(
    client: WebClient, db: Database, *, team_id: str, item_id: int, channel_id: str, user_id: str
) -> None:
    """After the answer to a capture without a thread (typed, the form) was sent: its duplicate link or
    question follows, to the capturer only — shown by the worker when its insights finish, or now if they
    already have (an ephemeral message in the channel, or a DM)."""
    with db.session() as s:
        handed = show_privately_instead(
            db_session=s, team_id=team_id, item_id=item_id, channel_id=channel_id, user_id=user_id
        )
    if handed:
        return
    duplicate = capture_hook.load_notice(db, team_id=team_id, item_id=item_id, unshown_only=True)
    capture_hook.show_privately(
        client,
        db,
        team_id=team_id,
        item_id=item_id,
        channel_id=channel_id,
        user_id=user_id,
        duplicate=duplicate,
    )


def remember_prompt(
    db: Database, *, team_id: str, duplicate: DuplicateNotice | None, channel_id: str, ts: str | None
) -> None:
    """Records where a duplicate link or question was shown (ts None: in an ephemeral answer)."""
    if duplicate is None:
        return
    with db.session() as s:
        duplicates.record_prompt(
            db_session=s, team_id=team_id, suggestion_id=duplicate.suggestion_id, channel_id=channel_id, ts=ts
        )
