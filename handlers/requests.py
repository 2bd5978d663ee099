"""Request intake and triage: `/request`, the shortcut, the ticket reaction, the card's buttons, first responses."""

from __future__ import annotations

import logging
import re
from datetime import datetime
from typing import Any

from slack_bolt import Ack, App, BoltContext, Respond
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot import admins
from bot.requests import messaging
from bot.requests import service as requests_service
from bot.requests import types as request_types
from bot.requests.ids import RequestAction, RequestBlock, RequestCallback
from bot.requests.modal import IntakeSource, read_intake, request_modal
from bot.requests.schemas import RequestCreate, title_from_text
from handlers import home, slack_io
from storage.db import Database
from storage.models import Request, RequestPriority, RequestStatus
from storage.types import utcnow

logger = logging.getLogger("prodops.requests")

HELP = (
    "*Track a request*\n"
    "• `/request` opens the form (pick a type; its fields appear).\n"
    "• `/request <what you need>` opens a request of the default type at once.\n"
    "• Message menu (⋮) → *Create request*, or react with :ticket:, turns a message into a request.\n"
    "• `/request list` — open requests, overdue first; `/request list mine`, `/request list assigned`, "
    "`/request list overdue`, `/request list type <name>`.\n"
    "• `/request stats [type]` — the last 7 days against the 7 before.\n"
    "• The app's *Home* tab shows your requests, those assigned to you, and your recent feedback.\n"
    "You'll get updates in the thread where you asked (or in a DM)."
)


def register(app: App) -> None:
    """Binds the request listeners."""
    app.command("/request")(on_request_command)
    app.shortcut(RequestCallback.shortcut)(on_request_shortcut)
    app.action(RequestAction.type)(on_type_changed)
    app.view(RequestCallback.modal)(on_intake_submit)
    app.action(RequestAction.assign_me)(on_card_action)
    app.action(RequestAction.assign_user)(on_card_action)
    app.action(RequestAction.set_priority)(on_card_action)
    app.action(RequestAction.set_status)(on_card_action)


# --- intake -------------------------------------------------------------------------------------------


def _open_modal(
    client: WebClient,
    db: Database,
    *,
    team_id: str,
    trigger_id: str,
    source: IntakeSource,
    title: str,
    details: str,
) -> None:
    with db.session() as s:
        default = request_types.ensure_default_type(db_session=s, team_id=team_id)
        types = request_types.list_types(db_session=s, team_id=team_id)
        view = request_modal(types=types, selected=default, source=source, title=title, details=details)
    client.views_open(trigger_id=trigger_id, view=view)


def on_request_command(
    ack: Ack, command: dict[str, Any], context: BoltContext, client: WebClient, respond: Respond
) -> None:
    """`/request` opens the form; `/request <text>` opens a default-type request; `/request help`."""
    text = (command.get("text") or "").strip()
    if text.lower() == "help":
        ack(
            response_type="ephemeral",
            text=HELP,
            blocks=[{"type": "section", "text": {"type": "mrkdwn", "text": HELP}}],
        )
        return
    ack()
    db: Database = context["db"]
    team_id = context.team_id or command["team_id"]
    word, rest = (text.split(maxsplit=1) + ["", ""])[:2]
    if word.lower() == "list":
        home.answer_list_command(db, respond, team_id=team_id, user_id=command["user_id"], args=rest)
        return
    if word.lower() == "stats":
        home.answer_stats(db, respond, team_id=team_id, args=rest)
        return
    source = IntakeSource(
        channel_id=command["channel_id"], source="command", response_url=command.get("response_url")
    )
    if not text:
        _open_modal(
            client, db, team_id=team_id, trigger_id=command["trigger_id"], source=source, title="", details=""
        )
        return
    with db.session() as s:
        default = request_types.ensure_default_type(db_session=s, team_id=team_id)
        type_id = default.id
    request_in = RequestCreate(
        team_id=team_id,
        type_id=type_id,
        title=title_from_text(text, limit=255),
        details=text if len(text) > 120 else None,
        requester_user_id=command["user_id"],
        channel_id=command["channel_id"],
        source="command",
        delivery_id=command.get("trigger_id"),
    )
    open_and_publish(client, db, request_in)


def on_request_shortcut(ack: Ack, shortcut: dict[str, Any], context: BoltContext, client: WebClient) -> None:
    """Message menu → Create request: the form, prefilled from the message."""
    ack()
    db: Database = context["db"]
    message = shortcut["message"]
    channel_id = shortcut["channel"]["id"]
    text = slack_io.message_text(message)
    source = IntakeSource(
        channel_id=channel_id,
        source="shortcut",
        message_ts=message["ts"],
        permalink=slack_io.permalink(client, channel_id=channel_id, ts=message["ts"]),
        response_url=shortcut.get("response_url"),
    )
    _open_modal(
        client,
        db,
        team_id=context.team_id or "",
        trigger_id=shortcut["trigger_id"],
        source=source,
        title=title_from_text(text),
        details=text,
    )


def open_from_reaction(client: WebClient, db: Database, *, team_id: str, event: dict[str, Any]) -> None:
    """Reacting with the request emoji opens a default-type request from the message."""
    item = event["item"]
    with db.read() as s:
        if requests_service.get_by_message(
            db_session=s, team_id=team_id, channel_id=item["channel"], message_ts=item["ts"]
        ):
            return  # one request per message
    message = slack_io.fetch_message(client, channel_id=item["channel"], ts=item["ts"])
    if message is None:
        return
    with db.session() as s:
        type_id = request_types.ensure_default_type(db_session=s, team_id=team_id).id
    request_in = RequestCreate(
        team_id=team_id,
        type_id=type_id,
        title=title_from_text(message.text),
        details=message.text,
        requester_user_id=message.user_id or event["user"],
        channel_id=item["channel"],
        message_ts=item["ts"],
        permalink=slack_io.permalink(client, channel_id=item["channel"], ts=item["ts"]),
        reply_channel_id=item["channel"],
        reply_thread_ts=message.thread_ts or item["ts"],
        source="reaction",
    )
    open_and_publish(client, db, request_in)


def on_type_changed(ack: Ack, body: dict[str, Any], context: BoltContext, client: WebClient) -> None:
    """Another type picked in the form: re-render it with that type's fields (`views.update`)."""
    ack()
    db: Database = context["db"]
    view = body["view"]
    type_id = int(body["actions"][0]["selected_option"]["value"])
    values = view["state"]["values"]
    title = (values.get(RequestBlock.summary, {}).get(RequestAction.summary) or {}).get("value") or ""
    details = (values.get(RequestBlock.details, {}).get(RequestAction.details) or {}).get("value") or ""
    with db.read() as s:
        types = request_types.list_types(db_session=s, team_id=context.team_id or "")
        selected = next((t for t in types if t.id == type_id), None)
        if selected is None:
            return
        updated = request_modal(
            types=types,
            selected=selected,
            source=IntakeSource.load(view.get("private_metadata", "")),
            title=title,
            details=details,
        )
    client.views_update(view_id=view["id"], hash=view.get("hash"), view=updated)


def on_intake_submit(
    ack: Ack, body: dict[str, Any], view: dict[str, Any], context: BoltContext, client: WebClient
) -> None:
    """Validates inline (nothing lost), then opens the request after the form closes."""
    db: Database = context["db"]
    team_id = context.team_id or ""
    values = view["state"]["values"]
    chosen = (values.get(RequestBlock.type, {}).get(RequestAction.type, {}).get("selected_option") or {}).get(
        "value"
    )
    with db.read() as s:
        request_type = (
            request_types.get_type(db_session=s, team_id=team_id, type_id=int(chosen))
            if chosen and chosen.isdigit()
            else None
        )
        submission = read_intake(values, request_type)
    if submission.errors:
        ack(response_action="errors", errors=submission.errors)
        return
    ack()
    assert request_type is not None
    source = IntakeSource.load(view.get("private_metadata", ""))
    user_id = body["user"]["id"]
    request_in = RequestCreate(
        team_id=team_id,
        type_id=request_type.id,
        title=submission.title,
        details=submission.details,
        field_values=dict(submission.field_values),
        priority=RequestPriority(submission.priority) if submission.priority else None,
        requester_user_id=user_id,
        channel_id=source.channel_id,
        message_ts=source.message_ts,
        permalink=source.permalink,
        reply_channel_id=source.channel_id if source.message_ts else None,
        reply_thread_ts=source.message_ts,
        source=source.source,
        delivery_id=None if source.message_ts else body.get("trigger_id") or view.get("id"),
    )
    open_and_publish(client, db, request_in)


def open_and_publish(client: WebClient, db: Database, request_in: RequestCreate) -> int:
    """Opens the request, posts its triage card, and confirms to the requester; returns its id."""
    now = utcnow()
    with db.session() as s:
        request_type = request_types.get_type(
            db_session=s, team_id=request_in.team_id, type_id=request_in.type_id
        )
        assert request_type is not None
        policy = request_types.policy_for(request_type)
        request, created = requests_service.open_request(
            db_session=s, request_in=request_in, request_type=request_type, policy=policy, now=now
        )
        request_id = request.id
        card = messaging.triage_card_blocks(request, policy, now), messaging.card_text(request)
        confirmation = messaging.requester_confirmation_blocks(request, policy, now)
        triage_channel = request.triage_channel_id
    if not created:
        return request_id
    triage_ts = _post_card(client, triage_channel, card)
    reply_channel, reply_ts = _confirm_to_requester(client, request_in, confirmation)
    with db.session() as s:
        stored = requests_service.get(db_session=s, team_id=request_in.team_id, request_id=request_id)
        assert stored is not None
        stored.triage_ts = triage_ts
        if stored.triage_ts is None:
            stored.triage_channel_id = None
        stored.reply_channel_id, stored.reply_thread_ts = reply_channel, reply_ts
    return request_id


def _post_card(client: WebClient, channel: str | None, card: tuple[list[dict[str, Any]], str]) -> str | None:
    if not channel:
        return None
    try:
        return str(
            client.chat_postMessage(channel=channel, blocks=card[0], text=card[1], unfurl_links=False)["ts"]
        )
    except SlackApiError as exc:
        logger.warning("could not post the triage card in %s: %s", channel, exc.response.get("error"))
        return None


def _confirm_to_requester(
    client: WebClient, request_in: RequestCreate, blocks: list[dict[str, Any]]
) -> tuple[str | None, str | None]:
    """In the thread where they asked, else in a DM; returns where, so later notices follow."""
    text = "Your request is open"
    if request_in.reply_channel_id and request_in.reply_thread_ts:
        try:
            client.chat_postMessage(
                channel=request_in.reply_channel_id,
                thread_ts=request_in.reply_thread_ts,
                text=text,
                blocks=blocks,
            )
            return request_in.reply_channel_id, request_in.reply_thread_ts
        except SlackApiError as exc:
            logger.info("no thread reply for the requester (%s); sending a DM", exc.response.get("error"))
    posted = client.chat_postMessage(channel=request_in.requester_user_id, text=text, blocks=blocks)
    return str(posted["channel"]), str(posted["ts"])


# --- triage -------------------------------------------------------------------------------------------

CARD_BLOCK = re.compile(r"^rq_card_(\d+)$")


def on_card_action(ack: Ack, body: dict[str, Any], context: BoltContext, client: WebClient) -> None:
    """Assign to me / Assign… / Priority / Status on the triage card; the card is updated in place."""
    ack()
    db: Database = context["db"]
    team_id = context.team_id or ""
    action = body["actions"][0]
    user_id = body["user"]["id"]
    match = CARD_BLOCK.match(action.get("block_id", ""))
    request_id = int(action["value"]) if action.get("value") else int(match.group(1)) if match else None
    if request_id is None:
        return
    now = utcnow()
    with db.session() as s:
        request = requests_service.get(db_session=s, team_id=team_id, request_id=request_id)
        if request is None:
            return
        actor = requests_service.Actor(user_id, is_admin=_is_admin(client, db, team_id, user_id, request))
        policy = request_types.policy_for(request.type)
        status_before = request.status
        try:
            _apply(s, request, action, actor, policy, now)
        except requests_service.RequestError as exc:
            _tell_actor(client, body, str(exc))
            return
        card = messaging.triage_card_blocks(request, policy, now), messaging.card_text(request)
        notice = (
            messaging.status_notice_text(request, user_id, status_before, request.status)
            if request.status != status_before
            else None
        )
        where = (
            request.triage_channel_id,
            request.triage_ts,
            request.reply_channel_id,
            request.reply_thread_ts,
        )
    _refresh_card(client, where[0], where[1], card)
    if notice and where[2] and where[3]:
        client.chat_postMessage(channel=where[2], thread_ts=where[3], text=notice)


def _apply(
    db_session: Any,
    request: Request,
    action: dict[str, Any],
    actor: requests_service.Actor,
    policy: Any,
    now: datetime,
) -> Any:
    action_id = action["action_id"]
    if action_id == RequestAction.assign_me:
        return requests_service.assign(
            db_session=db_session, request=request, assignee_user_id=actor.user_id, actor=actor, now=now
        )
    if action_id == RequestAction.assign_user:
        return requests_service.assign(
            db_session=db_session,
            request=request,
            assignee_user_id=action["selected_user"],
            actor=actor,
            now=now,
        )
    value = action["selected_option"]["value"]
    if action_id == RequestAction.set_priority:
        return requests_service.set_priority(
            db_session=db_session,
            request=request,
            priority=RequestPriority(value),
            actor=actor,
            policy=policy,
            now=now,
        )
    return requests_service.change_status(
        db_session=db_session, request=request, to=RequestStatus(value), actor=actor, policy=policy, now=now
    )


def _is_admin(client: WebClient, db: Database, team_id: str, user_id: str, request: Request) -> bool:
    """Admin rights matter only when the person is neither assignee nor owner (saves a users.info call)."""
    if requests_service.may_manage(request, requests_service.Actor(user_id)):
        return False
    with db.read() as s:
        if admins.is_admin(db_session=s, team_id=team_id, user_id=user_id, slack_owner_or_admin=False):
            return True
    return slack_io.is_slack_owner_or_admin(client, user_id)


def _refresh_card(
    client: WebClient, channel: str | None, ts: str | None, card: tuple[list[dict[str, Any]], str]
) -> None:
    if channel and ts:
        client.chat_update(channel=channel, ts=ts, blocks=card[0], text=card[1])


def refresh_card_by_id(client: WebClient, db: Database, *, team_id: str, request_id: int) -> None:
    """Re-renders a request's triage card from the database (after a change made elsewhere, e.g. App Home)."""
    now = utcnow()
    with db.read() as s:
        request = requests_service.get(db_session=s, team_id=team_id, request_id=request_id)
        if request is None:
            return
        policy = request_types.policy_for(request.type)
        card = messaging.triage_card_blocks(request, policy, now), messaging.card_text(request)
        channel, ts = request.triage_channel_id, request.triage_ts
    _refresh_card(client, channel, ts, card)


def _tell_actor(client: WebClient, body: dict[str, Any], text: str) -> None:
    channel = (body.get("channel") or {}).get("id") or (body.get("container") or {}).get("channel_id")
    if channel:
        client.chat_postEphemeral(channel=channel, user=body["user"]["id"], text=f":warning: {text}")


# --- first response from thread replies ---------------------------------------------------------------


def note_thread_reply(client: WebClient, db: Database, *, team_id: str, event: dict[str, Any]) -> None:
    """A reply in a request's triage thread or requester thread by someone else is its first response."""
    user_id = event.get("user")
    if not user_id or event.get("bot_id"):
        return
    now = utcnow()
    with db.session() as s:
        request = requests_service.find_by_thread(
            db_session=s, team_id=team_id, channel_id=event["channel"], thread_ts=event["thread_ts"]
        )
        if request is None or not requests_service.record_first_response(
            db_session=s, request=request, user_id=user_id, now=now
        ):
            return
        policy = request_types.policy_for(request.type)
        card = messaging.triage_card_blocks(request, policy, now), messaging.card_text(request)
        channel, ts = request.triage_channel_id, request.triage_ts
    _refresh_card(client, channel, ts, card)
