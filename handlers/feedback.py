"""Feedback listeners: the feedback reaction and `/feedback`. Thin: parse → service → Block Kit."""

from __future__ import annotations

import json
import logging
import re
from typing import Any, Protocol

from slack_bolt import Ack, App, BoltContext, Respond
from slack_sdk import WebClient

from bot import workspaces
from bot.accounts import service as accounts_service
from bot.feedback import messaging
from bot.feedback import service as feedback_service
from bot.feedback.ids import FeedbackAction
from bot.feedback.schemas import MAX_TEXT, FeedbackCapture, ListQuery
from bot.insights.batch import InsightMode, awaits_thread_confirmation, enqueue_insights
from handlers import feedback_modal as feedback_modal
from handlers import requests as requests_handlers
from handlers import slack_io
from handlers.capture import capture_message, load_item, post_thread_confirmation, show_privately_after_answer
from storage.db import Database
from storage.models import FeedbackSource

logger = logging.getLogger("prodops.feedback")

INLINE_CUSTOMER = re.compile(r"^\s*([^:\n]{1,60}?)\s*:\s+(\S.*)$", re.DOTALL)
PAGE_SIZE = 10


class Subcommand(Protocol):
    """A `/feedback <word> …` handler registered by another module (themes, trends, ship); it must ack."""

    def __call__(
        self,
        *,
        ack: Ack,
        command: dict[str, Any],
        context: BoltContext,
        client: WebClient,
        respond: Respond,
        args: str,
    ) -> None: ...


# `/feedback <word>` handlers added by other modules' register() (handlers/themes.py, handlers/insights.py).
SUBCOMMANDS: dict[str, Subcommand] = {}


def register(app: App) -> None:
    """Binds the feedback listeners."""
    app.event("reaction_added")(on_reaction_added)
    app.command("/feedback")(on_feedback_command)
    app.action(re.compile(rf"^{FeedbackAction.list_page}_\d+$"))(on_list_page)
    feedback_modal.register(app)


def on_reaction_added(event: dict[str, Any], context: BoltContext, client: WebClient) -> None:
    """The feedback emoji captures the message as feedback; the request emoji opens a request from it."""
    db: Database = context["db"]
    item = event.get("item") or {}
    if item.get("type") != "message":
        return
    team_id, channel_id, ts = context.team_id or "", item["channel"], item["ts"]
    reactions = context["workspace_cache"].reactions(team_id)
    reaction = workspaces.normalise_emoji(event.get("reaction", ""))
    if reaction == reactions.request_emoji and reaction != reactions.feedback_emoji:
        requests_handlers.open_from_reaction(client, db, team_id=team_id, event=event)
        return
    emoji = reactions.feedback_emoji
    if reaction != emoji:
        return
    with db.read() as s:
        existing = feedback_service.get_by_message(
            db_session=s, team_id=team_id, channel_id=channel_id, message_ts=ts
        )
        unconfirmed = existing is not None and awaits_thread_confirmation(
            db_session=s, team_id=team_id, item_id=existing.id
        )
    if existing is not None:
        # Already captured: another reaction adds nothing — unless this is the capture's own replay after
        # it died before confirming (deliveries of one message run in order, so no capture is mid-way).
        if unconfirmed:
            item = load_item(db, team_id=team_id, item_id=existing.id)
            if item is not None:
                post_thread_confirmation(
                    client,
                    db,
                    team_id=team_id,
                    channel_id=channel_id,
                    thread_ts=item.thread_ts or item.message_ts or ts,
                    item=item,
                    emoji=emoji,
                )
        return

    message = slack_io.fetch_message(client, channel_id=channel_id, ts=ts)
    if message is None:
        logger.info("reacted message %s/%s is gone; nothing captured", channel_id, ts)
        return
    if message.user_id is None and event.get("item_user"):
        message = slack_io.SlackMessage(**{**message.__dict__, "user_id": event["item_user"]})
    captured = capture_message(
        client,
        db,
        team_id=team_id,
        message=message,
        captured_by_user_id=event["user"],
        source=FeedbackSource.reaction,
        show=InsightMode.thread,  # the confirmation below is updated once the insights have run
        emoji=emoji,
    )
    if captured.created:
        post_thread_confirmation(
            client,
            db,
            team_id=team_id,
            channel_id=channel_id,
            thread_ts=captured.thread_ts,
            item=captured.item,
            emoji=emoji,
        )


def on_feedback_command(
    ack: Ack, command: dict[str, Any], context: BoltContext, client: WebClient, respond: Respond
) -> None:
    """`/feedback <text>` saves an item; `help`; `list …`; bare `/feedback` opens the form."""
    db: Database = context["db"]
    team_id = context.team_id or command["team_id"]
    text = (command.get("text") or "").strip()
    word = text.split(maxsplit=1)[0].lower() if text else ""
    if word == "help":
        emoji = context["workspace_cache"].feedback_emoji(team_id)
        ack(
            response_type="ephemeral",
            blocks=messaging.feedback_help_blocks(emoji),
            text="How to use /feedback",
        )
        return
    if not text:
        ack()
        feedback_modal.open_for_command(client, db, command=command, team_id=team_id)
        return
    if word == "list":
        ack()
        _answer_list(client, db, respond, team_id=team_id, user_id=command["user_id"], args=text[4:].strip())
        return
    if word in SUBCOMMANDS:
        SUBCOMMANDS[word](
            ack=ack,
            command=command,
            context=context,
            client=client,
            respond=respond,
            args=text[len(word) :].strip(),
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
    _save_typed_feedback(client, db, respond, command=command, team_id=team_id, text=text)


def _save_typed_feedback(
    client: WebClient, db: Database, respond: Respond, *, command: dict[str, Any], team_id: str, text: str
) -> None:
    channel_id = command["channel_id"]
    visibility = slack_io.conversation_visibility(client, channel_id)
    note = None
    with db.session() as s:
        account_id, body = None, text
        if match := INLINE_CUSTOMER.match(text):
            named, rest = match.group(1), match.group(2)
            account = accounts_service.get_by_name(db_session=s, team_id=team_id, name=named)
            if account is not None:
                account_id, body = account.id, rest.strip()
            elif len(named.split()) <= 4:
                note = (
                    f"No account is called “{named}”, so this was saved without a customer. "
                    "Use *Edit details* to pick one or create it."
                )
        capture = FeedbackCapture(
            team_id=team_id,
            channel_id=channel_id,
            text=body,
            author_user_id=command["user_id"],
            captured_by_user_id=command["user_id"],
            source=FeedbackSource.command,
            visibility=visibility,
            account_id=account_id,
            delivery_id=command.get("trigger_id"),
        )
        stored, created = feedback_service.capture(db_session=s, item_in=capture)
        if created:  # shown after the answer, below
            enqueue_insights(
                db_session=s,
                team_id=team_id,
                item_id=stored.id,
                mode=InsightMode.held,
                channel_id=channel_id,
                user_id=command["user_id"],
            )
        s.flush()
        s.refresh(stored)
    respond(
        response_type="ephemeral",
        text=messaging.command_confirmation_text(stored),
        blocks=messaging.command_confirmation_blocks(stored, note),
    )
    # No thread for typed feedback: a duplicate link or question follows the answer, to the capturer only.
    if created:
        show_privately_after_answer(
            client, db, team_id=team_id, item_id=stored.id, channel_id=channel_id, user_id=command["user_id"]
        )


def parse_list_args(args: str, user_id: str) -> tuple[ListQuery, str, str | None]:
    """`mine` | `customer <name>` | `tag <tag>` → (query, title, customer name to look up)."""
    words = args.split(maxsplit=1)
    head = words[0].lower() if words else ""
    rest = words[1].strip() if len(words) > 1 else ""
    if head == "mine":
        return ListQuery(mine_user_id=user_id), "Feedback you captured or wrote", None
    if head == "customer" and rest:
        return ListQuery(), f"Feedback from {rest}", rest
    if head == "tag" and rest:
        tag = feedback_service.clean_tag(rest)
        return ListQuery(tag=tag), f"Feedback tagged `{tag}`", None
    return ListQuery(), "Recent feedback", None


def _answer_list(
    client: WebClient, db: Database, respond: Respond, *, team_id: str, user_id: str, args: str, page: int = 1
) -> None:
    query, title, customer = parse_list_args(args, user_id)
    if args and args.split()[0].lower() not in ("mine", "customer", "tag"):
        respond(
            response_type="ephemeral",
            text="Unknown list filter",
            blocks=messaging.error_blocks(
                "Use `/feedback list`, `/feedback list mine`, `/feedback list customer <name>` "
                "or `/feedback list tag <tag>`."
            ),
        )
        return
    with db.session() as s:
        if customer is not None:
            accounts = accounts_service.search(db_session=s, team_id=team_id, query=customer, limit=50)
            if not accounts:
                respond(
                    response_type="ephemeral",
                    text="No such customer",
                    blocks=messaging.error_blocks(
                        f"No account matches “{customer}”. Check the spelling, or import accounts with "
                        "`prodops import accounts FILE.csv`."
                    ),
                )
                return
            query = query.model_copy(update={"account_ids": [a.id for a in accounts]})
        private = feedback_service.private_channels_with_items(db_session=s, team_id=team_id)
    visible = slack_io.channels_user_is_in(client, user_id, private)
    _respond_page(db, respond, team_id=team_id, query=query, title=title, visible=visible, page=page)


def _respond_page(
    db: Database,
    respond: Respond,
    *,
    team_id: str,
    query: ListQuery,
    title: str,
    visible: set[str],
    page: int,
    replace: bool = False,
) -> None:
    with db.session() as s:
        items, has_more = feedback_service.list_items(
            db_session=s,
            team_id=team_id,
            query=query,
            visible_private_channels=visible,
            page=page,
            page_size=PAGE_SIZE,
        )
        blocks = messaging.list_blocks(items, title=title, query=query, page=page, has_more=has_more)
    state_title = {"title": title}
    blocks = [_with_title(b, state_title) for b in blocks]
    respond(response_type="ephemeral", text=title, blocks=blocks, replace_original=replace)


def _with_title(block: dict[str, Any], extra: dict[str, str]) -> dict[str, Any]:
    """Carries the list's title in its paging buttons so the next page keeps it."""
    if block.get("type") != "actions":
        return block
    for element in block["elements"]:
        element["value"] = json.dumps({**json.loads(element["value"]), **extra})
    return block


def on_list_page(
    ack: Ack, body: dict[str, Any], context: BoltContext, client: WebClient, respond: Respond
) -> None:
    """Older / Newer in `/feedback list`: the same filters, another page, checked again for visibility."""
    ack()
    db: Database = context["db"]
    team_id, user_id = context.team_id or "", body["user"]["id"]
    state = json.loads(body["actions"][0]["value"])
    page = max(1, int(state.pop("page", 1)))
    title = str(state.pop("title", "Recent feedback"))
    query = ListQuery.model_validate(state)
    if query.mine_user_id and query.mine_user_id != user_id:
        query = query.model_copy(update={"mine_user_id": user_id})
    with db.session() as s:
        private = feedback_service.private_channels_with_items(db_session=s, team_id=team_id)
    visible = slack_io.channels_user_is_in(client, user_id, private)
    _respond_page(
        db, respond, team_id=team_id, query=query, title=title, visible=visible, page=page, replace=True
    )
