"""Capturing a Slack message as feedback: the Slack reads around the service call, shared by every mode."""

from __future__ import annotations

from dataclasses import dataclass, field

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.feedback import messaging
from bot.feedback import service as feedback_service
from bot.feedback.schemas import MAX_TEXT, FeedbackCapture, FeedbackDetails
from bot.insights import duplicates
from bot.insights.capture_hook import CaptureInsights, DuplicateNotice, on_item_captured
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
    insights: CaptureInsights = field(default_factory=CaptureInsights)  # theme and duplicate, when created


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
    run_insights: bool = True,
) -> Captured:
    """Stores a Slack message as an item (once per message), with permalink, visibility and existing replies.

    A new item then goes through the insights hook (vector, theme, duplicate check); in watched channels
    (`source` channel) a duplicate is only linked silently, never asked about. `run_insights` False leaves
    the hook to the caller (when a Slack call with a short deadline must come first).
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
        _ = (item.account, item.replies)  # load before the session closes
        captured = Captured(
            item_id=item.id, created=created, thread_ts=message.thread_ts or message.ts, item=item
        )
    if created and run_insights:
        captured.insights = on_item_captured(
            db, team_id=team_id, item_id=captured.item_id, interactive=source != FeedbackSource.channel
        )
    return captured


def load_item(db: Database, *, team_id: str, item_id: int) -> FeedbackItem | None:
    """An item with its account and replies loaded, detached for rendering."""
    with db.session() as s:
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
    interactive: bool = True,
) -> DuplicateNotice | None:
    """Confirms a new item in the message's thread at once, then runs the insights hook on it and, when it
    found a duplicate, updates the confirmation in place with the link (and *Undo*) or the question."""
    posted = client.chat_postMessage(
        channel=channel_id,
        thread_ts=thread_ts,
        text=messaging.feedback_confirmation_text(item),
        blocks=messaging.feedback_confirmation_blocks(item, emoji),
        unfurl_links=False,
    )
    duplicate = on_item_captured(db, team_id=team_id, item_id=item.id, interactive=interactive).duplicate
    if duplicate is not None and posted.get("ts"):
        client.chat_update(
            channel=posted.get("channel") or channel_id,
            ts=posted["ts"],
            text=messaging.feedback_confirmation_text(item, duplicate),
            blocks=messaging.feedback_confirmation_blocks(item, emoji, duplicate),
        )
        remember_prompt(db, team_id=team_id, duplicate=duplicate, channel_id=channel_id, ts=posted["ts"])
    return duplicate


def show_duplicate_privately(
    client: WebClient, db: Database, *, team_id: str, channel_id: str, user_id: str, item: FeedbackItem
) -> DuplicateNotice | None:
    """For items without a thread (typed with `/feedback` or in the form), after the answer was sent: runs
    the insights hook and shows a duplicate link or question to the capturer only — an ephemeral message in
    the channel, or a DM when the bot cannot post there. A decision replaces that message."""
    duplicate = on_item_captured(db, team_id=team_id, item_id=item.id).duplicate
    if duplicate is None:
        return None
    text = messaging.command_confirmation_text(item, duplicate)
    blocks = messaging.duplicate_blocks(duplicate)
    try:
        client.chat_postEphemeral(channel=channel_id, user=user_id, text=text, blocks=blocks)
        remember_prompt(db, team_id=team_id, duplicate=duplicate, channel_id=channel_id, ts=None)
    except SlackApiError:  # not a channel the bot can post in (e.g. a DM between people): a DM instead
        posted = client.chat_postMessage(channel=user_id, text=text, blocks=blocks, unfurl_links=False)
        remember_prompt(
            db,
            team_id=team_id,
            duplicate=duplicate,
            channel_id=posted.get("channel") or user_id,
            ts=posted.get("ts"),
        )
    return duplicate


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
