"""The capture / edit modal: message shortcut, Edit details button, bare `/feedback`, submission, option search."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt import Ack, App, BoltContext
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.webhook import WebhookClient

from bot.accounts import service as accounts_service
from bot.feedback import messaging
from bot.feedback import service as feedback_service
from bot.feedback.ids import NEW_OPTION_PREFIX, FeedbackAction, FeedbackBlock, FeedbackCallback
from bot.feedback.modal import ModalSource, Prefill, account_option, feedback_modal, read_submission
from bot.feedback.schemas import MAX_TEXT, FeedbackCapture
from bot.insights.batch import InsightMode, enqueue_insights, show_privately_instead
from bot.insights.capture_hook import DuplicateNotice, load_notice
from handlers import slack_io
from handlers.capture import (
    capture_message,
    load_item,
    post_thread_confirmation,
    remember_prompt,
    show_privately_after_answer,
)
from storage.db import Database
from storage.models import FeedbackSource

logger = logging.getLogger("prodops.feedback.modal")

INVITE_HINT = (
    "I'm not in <#{channel}>, so I can't reply in its threads or follow them. Type `/invite @ProdOps` there."
)


def register(app: App) -> None:
    """Binds the modal's listeners."""
    app.shortcut(FeedbackCallback.capture_shortcut)(on_capture_shortcut)
    app.action(FeedbackAction.edit)(on_edit_button)
    app.view(FeedbackCallback.modal)(on_modal_submit)
    app.options(FeedbackAction.customer)(on_customer_options)
    app.options(FeedbackAction.tags)(on_tag_options)


def _origin(channel_id: str, author: str | None, permalink: str | None) -> str:
    where = f"<{permalink}|message> in <#{channel_id}>" if permalink else f"<#{channel_id}>"
    return f"From a {where}" + (f" by <@{author}>" if author else "")


def _prefill_from_item(db: Database, team_id: str, item_id: int) -> tuple[Prefill, Any]:
    item = load_item(db, team_id=team_id, item_id=item_id)
    if item is None:
        return Prefill(), None
    return (
        Prefill(
            text=item.text,
            account=item.account,
            kind=item.kind,
            tags=list(item.tags or []),
            importance=item.importance,
            note=item.note,
        ),
        item,
    )


def on_capture_shortcut(ack: Ack, shortcut: dict[str, Any], context: BoltContext, client: WebClient) -> None:
    """Message menu → Capture feedback: the form, prefilled; a message already captured opens its item."""
    ack()
    db: Database = context["db"]
    team_id = context.team_id or ""
    channel_id = shortcut["channel"]["id"]
    message = shortcut["message"]
    ts = message["ts"]
    with db.session() as s:
        existing = feedback_service.get_by_message(
            db_session=s, team_id=team_id, channel_id=channel_id, message_ts=ts
        )
        existing_id = existing.id if existing else None
    text = slack_io.message_text(message)
    source = ModalSource(
        channel_id=channel_id,
        source=FeedbackSource.shortcut,
        item_id=existing_id,
        message_ts=ts,
        thread_ts=message.get("thread_ts") if message.get("thread_ts") != ts else None,
        author_user_id=message.get("user"),
        response_url=shortcut.get("response_url"),
    )
    if existing_id is None and len(text) > MAX_TEXT:
        text = text[:MAX_TEXT]
    if existing_id is not None:
        prefill, item = _prefill_from_item(db, team_id, existing_id)
        source.permalink = item.permalink if item else None
    else:
        prefill = Prefill(text=text)
        source.permalink = slack_io.permalink(client, channel_id=channel_id, ts=ts)
        if len(text) > 3000:
            # Too long for a text input: capture it now, whole, and let the form edit the details.
            captured = capture_message(
                client,
                db,
                team_id=team_id,
                message=slack_io.SlackMessage(
                    channel_id=channel_id,
                    ts=ts,
                    thread_ts=source.thread_ts,
                    user_id=source.author_user_id,
                    text=text,
                    reply_count=int(message.get("reply_count") or 0),
                ),
                captured_by_user_id=shortcut["user"]["id"],
                source=FeedbackSource.shortcut,
                show=InsightMode.held,  # its link or question is shown when the form is submitted
            )
            source.item_id = captured.item_id
    view = feedback_modal(
        source=source, prefill=prefill, origin=_origin(channel_id, source.author_user_id, source.permalink)
    )
    client.views_open(trigger_id=shortcut["trigger_id"], view=view)


def on_edit_button(ack: Ack, body: dict[str, Any], context: BoltContext, client: WebClient) -> None:
    """*Edit details* under a confirmation: the same form, prefilled from the item."""
    ack()
    db: Database = context["db"]
    team_id = context.team_id or ""
    item_id = int(body["actions"][0]["value"])
    prefill, item = _prefill_from_item(db, team_id, item_id)
    if item is None:
        _tell(body.get("response_url"), f"Feedback #{item_id} no longer exists.")
        return
    source = ModalSource(
        channel_id=item.channel_id,
        source=item.source,
        item_id=item.id,
        message_ts=item.message_ts,
        permalink=item.permalink,
        author_user_id=item.author_user_id,
        response_url=body.get("response_url"),
    )
    view = feedback_modal(
        source=source, prefill=prefill, origin=_origin(item.channel_id, item.author_user_id, item.permalink)
    )
    client.views_open(trigger_id=body["trigger_id"], view=view)


def open_for_command(client: WebClient, db: Database, *, command: dict[str, Any], team_id: str) -> None:
    """Bare `/feedback`: an empty form for feedback typed by hand."""
    source = ModalSource(
        channel_id=command["channel_id"],
        source=FeedbackSource.command,
        author_user_id=command["user_id"],
        response_url=command.get("response_url"),
    )
    view = feedback_modal(source=source, prefill=Prefill(), origin=None)
    client.views_open(trigger_id=command["trigger_id"], view=view)


def on_modal_submit(
    ack: Ack, body: dict[str, Any], view: dict[str, Any], context: BoltContext, client: WebClient
) -> None:
    """Validates inline (errors keep the form open, nothing lost), then saves after closing the form."""
    db: Database = context["db"]
    team_id = context.team_id or ""
    user_id = body["user"]["id"]
    source = ModalSource.load(view.get("private_metadata", ""))
    submission = read_submission(view["state"]["values"])
    errors = dict(submission.errors)
    with db.session() as s:
        if submission.account_id is not None and not accounts_service.get(
            db_session=s, team_id=team_id, account_id=submission.account_id
        ):
            errors[FeedbackBlock.customer] = "That account no longer exists; search again and pick another."
    if submission.new_account_name and len(submission.new_account_name) > 255:
        errors[FeedbackBlock.customer] = "Account names can be at most 255 characters."
    if errors:
        ack(response_action="errors", errors=errors)
        return
    ack()
    details = submission.details
    with db.session() as s:
        if submission.new_account_name:
            account, _ = accounts_service.get_or_create(
                db_session=s, team_id=team_id, name=submission.new_account_name
            )
            details = details.model_copy(update={"account_id": account.id})
        if source.item_id is not None:
            item = feedback_service.get(db_session=s, team_id=team_id, feedback_id=source.item_id)
            if item is None:
                _tell(
                    source.response_url,
                    f"Feedback #{source.item_id} was removed before your changes were saved.",
                )
                return
            feedback_service.update_details(
                db_session=s, item=item, details=details, changed_by_user_id=user_id
            )
            item_id, created = item.id, False
    emoji = context["workspace_cache"].feedback_emoji(team_id)
    if source.item_id is None:
        item_id, created, duplicate = _create_from_form(
            client,
            db,
            team_id=team_id,
            user_id=user_id,
            source=source,
            details=details,
            body=body,
            emoji=emoji,
        )
    elif _hand_over(db, team_id=team_id, item_id=item_id, channel_id=source.channel_id, user_id=user_id):
        duplicate = None  # a long message captured when the form opened: its insights are still running
    else:  # an edit; or the details of a long message captured when the form opened: show a link not yet shown
        duplicate = load_notice(db, team_id=team_id, item_id=item_id, unshown_only=True)
    stored = load_item(db, team_id=team_id, item_id=item_id)
    assert stored is not None
    if created and source.message_ts:
        try:  # confirmed at once, then updated with the theme and a duplicate link or question
            post_thread_confirmation(
                client,
                db,
                team_id=team_id,
                channel_id=source.channel_id,
                thread_ts=source.thread_ts or source.message_ts,
                item=stored,
                emoji=emoji,
            )
        except SlackApiError as exc:
            if exc.response.get("error") not in ("not_in_channel", "channel_not_found"):
                raise
            invite = INVITE_HINT.format(channel=source.channel_id)
            _tell(source.response_url, None, messaging.command_confirmation_blocks(stored, invite))
            # No thread to update: a duplicate link or question comes to the capturer privately.
            show_privately_after_answer(
                client, db, team_id=team_id, item_id=stored.id, channel_id=source.channel_id, user_id=user_id
            )
        return  # the thread confirmation (or the invite hint) is the answer
    verb = "saved" if created else "updated"
    _tell(
        source.response_url,
        f"Feedback #{stored.id} {verb}.",
        messaging.command_confirmation_blocks(stored, None, duplicate),
    )
    if duplicate is not None and source.response_url:  # a link not shown before is in this answer now
        remember_prompt(db, team_id=team_id, duplicate=duplicate, channel_id=source.channel_id, ts=None)
    if created:  # typed in the form: a duplicate link or question follows, to the capturer only
        show_privately_after_answer(
            client, db, team_id=team_id, item_id=stored.id, channel_id=source.channel_id, user_id=user_id
        )


def _hand_over(db: Database, *, team_id: str, item_id: int, channel_id: str, user_id: str) -> bool:
    """A held task (the form was opened on a long message) shows its outcome privately once it finishes."""
    with db.session() as s:
        return show_privately_instead(
            db_session=s,
            team_id=team_id,
            item_id=item_id,
            channel_id=channel_id,
            user_id=user_id,
            held_only=True,
        )


def _create_from_form(
    client: WebClient,
    db: Database,
    *,
    team_id: str,
    user_id: str,
    source: ModalSource,
    details: Any,
    body: dict[str, Any],
    emoji: str,
) -> tuple[int, bool, DuplicateNotice | None]:
    """A new item from the form (from the message it points at, or typed by hand), its insights queued."""
    if source.message_ts:
        captured = capture_message(
            client,
            db,
            team_id=team_id,
            message=slack_io.SlackMessage(
                channel_id=source.channel_id,
                ts=source.message_ts,
                thread_ts=source.thread_ts,
                user_id=source.author_user_id,
                text=details.text or "",
            ),
            captured_by_user_id=user_id,
            source=FeedbackSource.shortcut,
            details=details,
            show=InsightMode.thread,  # the confirmation posted by on_modal_submit is updated
            emoji=emoji,
        )
        return captured.item_id, captured.created, None
    capture = FeedbackCapture(
        team_id=team_id,
        channel_id=source.channel_id,
        text=details.text or "",
        author_user_id=source.author_user_id,
        captured_by_user_id=user_id,
        source=FeedbackSource.command,
        visibility=slack_io.conversation_visibility(client, source.channel_id),
        delivery_id=body.get("trigger_id") or body["view"]["id"],
    )
    with db.session() as s:
        item, created = feedback_service.capture(db_session=s, item_in=capture)
        feedback_service.update_details(db_session=s, item=item, details=details, changed_by_user_id=user_id)
        item_id = item.id
        if created:  # shown after the answer (on_modal_submit)
            enqueue_insights(
                db_session=s,
                team_id=team_id,
                item_id=item_id,
                mode=InsightMode.held,
                channel_id=source.channel_id,
                user_id=user_id,
            )
    if not created:  # a replayed submission: show what the first one found
        return item_id, False, load_notice(db, team_id=team_id, item_id=item_id)
    return item_id, True, None


def _tell(response_url: str | None, text: str | None, blocks: list[dict[str, Any]] | None = None) -> None:
    """An ephemeral note to the person, through the response URL they came with."""
    if not response_url:
        return
    try:
        WebhookClient(response_url).send(
            text=text or "Feedback saved", blocks=blocks, response_type="ephemeral", replace_original=False
        )
    except OSError as exc:
        logger.warning("could not answer through the response URL: %s", exc)


def on_customer_options(ack: Ack, payload: dict[str, Any], context: BoltContext) -> None:
    """Customer search as you type: matching accounts, then “New account” for what was typed."""
    db: Database = context["db"]
    query = (payload.get("value") or "").strip()
    with db.session() as s:
        accounts = accounts_service.search(db_session=s, team_id=context.team_id or "", query=query, limit=20)
        options = [account_option(a) for a in accounts]
        exact = any(a.name_key == accounts_service.name_key(query) for a in accounts)
    if query and not exact:
        options.append(
            {
                "text": {"type": "plain_text", "text": f"➕ New account “{query[:60]}”"},
                "value": NEW_OPTION_PREFIX + query[:140],
            }
        )
    ack(options=options)


def on_tag_options(ack: Ack, payload: dict[str, Any], context: BoltContext) -> None:
    """Tag search as you type: the workspace's tags, then a new tag made of what was typed."""
    db: Database = context["db"]
    query = (payload.get("value") or "").strip()
    with db.session() as s:
        tags = feedback_service.search_tags(
            db_session=s, team_id=context.team_id or "", query=query, limit=50
        )
    options = [{"text": {"type": "plain_text", "text": t}, "value": t} for t in tags]
    cleaned = feedback_service.clean_tag(query)
    if cleaned and cleaned not in tags:
        options.append(
            {
                "text": {"type": "plain_text", "text": f"➕ New tag “{cleaned}”"},
                "value": NEW_OPTION_PREFIX + cleaned,
            }
        )
    ack(options=options)
