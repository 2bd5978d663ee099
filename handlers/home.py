"""App Home and request reports: the Home tab, `/request list` and `/request stats`. Thin: parse → service → views."""

from __future__ import annotations

import json
import logging
import re
from datetime import timedelta
from typing import Any

from slack_bolt import Ack, App, BoltContext, Respond
from slack_sdk import WebClient
from sqlalchemy import select
from sqlalchemy.orm import Session, noload

from bot.requests import messaging, metrics, views
from bot.requests import service as requests_service
from bot.requests import types as request_types
from bot.requests.views import HOME_LIMIT, HOME_TRANSITIONS, ReportAction
from handlers import requests as requests_handlers
from handlers import slack_io
from storage.db import Database
from storage.models import FeedbackItem, RequestStatus
from storage.types import utcnow

logger = logging.getLogger("prodops.home")

PAGE_SIZE = 10
FEEDBACK_ON_HOME = 5
PERIOD = timedelta(days=7)
LIST_USAGE = (
    "Use `/request list` (open requests, overdue first), `/request list mine`, `/request list assigned`, "
    "`/request list overdue` or `/request list type <name>`. "
    "To open a request that starts with “list”, use `/request` on its own and type it in the form."
)


def register(app: App) -> None:
    """Binds the App Home and report listeners."""
    app.event("app_home_opened")(on_app_home_opened)
    app.action(re.compile(rf"^{ReportAction.list_page}_\d+$"))(on_list_page)
    for action_id in HOME_TRANSITIONS:
        app.action(action_id)(on_home_action)


# ---- App Home -----------------------------------------------------------------------------------------


def recent_captures(
    *, db_session: Session, team_id: str, user_id: str, limit: int = FEEDBACK_ON_HOME
) -> list[FeedbackItem]:
    """The newest feedback items this user captured (their own, so no visibility check)."""
    return list(
        db_session.scalars(
            select(FeedbackItem)
            .options(noload(FeedbackItem.replies))
            .where(
                FeedbackItem.team_id == team_id,
                FeedbackItem.captured_by_user_id == user_id,
                FeedbackItem.deleted_at.is_(None),
            )
            .order_by(FeedbackItem.created_at.desc(), FeedbackItem.id.desc())
            .limit(limit)
        ).unique()
    )


def _open_with_total(
    db_session: Session, team_id: str, query: metrics.RequestListQuery
) -> tuple[list[Any], int]:
    now = utcnow()
    shown, has_more = metrics.list_requests(
        db_session=db_session, team_id=team_id, query=query, now=now, page_size=HOME_LIMIT
    )
    total = (
        metrics.count_requests(db_session=db_session, team_id=team_id, query=query, now=now)
        if has_more
        else len(shown)
    )
    return shown, total


def publish_home(
    client: WebClient, db: Database, *, team_id: str, user_id: str, notice: str | None = None
) -> None:
    """Builds the user's Home tab from the database, then publishes it (no session held during the call)."""
    with db.read() as s:
        asked, asked_total = _open_with_total(s, team_id, metrics.RequestListQuery(requester_user_id=user_id))
        assigned, assigned_total = _open_with_total(
            s, team_id, metrics.RequestListQuery(assignee_user_id=user_id)
        )
        blocks = views.home_blocks(
            asked=asked,
            asked_total=asked_total,
            assigned=assigned,
            assigned_total=assigned_total,
            feedback=recent_captures(db_session=s, team_id=team_id, user_id=user_id),
            now=utcnow(),
            notice=notice,
        )
    client.views_publish(user_id=user_id, view=views.home_view(blocks))


def on_app_home_opened(event: dict[str, Any], context: BoltContext, client: WebClient) -> None:
    """The Home tab opened: publish it fresh (the Messages tab needs nothing)."""
    if event.get("tab") != "home" or not event.get("user"):
        return
    publish_home(client, context["db"], team_id=context.team_id or "", user_id=event["user"])


def on_home_action(ack: Ack, body: dict[str, Any], context: BoltContext, client: WebClient) -> None:
    """Start / Waiting / Done on the Home tab: the card's status change, then the tab and the card refresh."""
    ack()
    db: Database = context["db"]
    team_id, user_id = context.team_id or "", body["user"]["id"]
    action = body["actions"][0]
    to = HOME_TRANSITIONS[ReportAction(action["action_id"])]
    notice = change_status_from_home(
        client, db, team_id=team_id, user_id=user_id, request_id=int(action["value"]), to=to
    )
    publish_home(client, db, team_id=team_id, user_id=user_id, notice=notice)


def change_status_from_home(
    client: WebClient, db: Database, *, team_id: str, user_id: str, request_id: int, to: RequestStatus
) -> str | None:
    """Moves the request as the card's Status menu would; returns what went wrong for the user, or None."""
    with db.read() as s:
        request = requests_service.get(db_session=s, team_id=team_id, request_id=request_id)
        if request is None:
            return f"Request #{request_id} no longer exists."
        manages = requests_service.may_manage(request, requests_service.Actor(user_id))
    actor = requests_service.Actor(
        user_id, is_admin=not manages and slack_io.is_prodops_admin(client, db, team_id, user_id)
    )
    now = utcnow()
    with db.session() as s:
        request = requests_service.get(db_session=s, team_id=team_id, request_id=request_id)
        if request is None:
            return f"Request #{request_id} no longer exists."
        before = request.status
        try:
            requests_service.change_status(
                db_session=s,
                request=request,
                to=to,
                actor=actor,
                policy=request_types.policy_for(request.type),
                now=now,
            )
        except requests_service.RequestError as exc:
            return f"#{request_id}: {exc}"
        notice = messaging.status_notice_text(request, user_id, before, request.status)
        reply = request.reply_channel_id, request.reply_thread_ts
    requests_handlers.refresh_card_by_id(client, db, team_id=team_id, request_id=request_id)
    if reply[0] and reply[1]:
        client.chat_postMessage(channel=reply[0], thread_ts=reply[1], text=notice)
    return None


# ---- /request list ------------------------------------------------------------------------------------


def _list_choice(
    db_session: Session,
    *,
    team_id: str,
    user_id: str,
    word: str,
    type_name: str = "",
    type_id: int | None = None,
) -> tuple[metrics.RequestListQuery, str, dict[str, Any]] | str:
    """(query, title, paging state) for a filter word, or the problem to tell the user."""
    if word == "":
        return metrics.RequestListQuery(), "Open requests", {"filter": ""}
    if word == "mine":
        query = metrics.RequestListQuery(requester_user_id=user_id, open_only=False)
        return query, "Requests you asked for", {"filter": word}
    if word == "assigned":
        query = metrics.RequestListQuery(assignee_user_id=user_id, open_only=False)
        return query, "Requests assigned to you", {"filter": word}
    if word == "overdue":
        return metrics.RequestListQuery(overdue_only=True), "Overdue requests", {"filter": word}
    if word == "type" and (type_name or type_id is not None):
        found = (
            request_types.get_type(db_session=db_session, team_id=team_id, type_id=type_id)
            if type_id is not None
            else request_types.get_type_by_name(db_session=db_session, team_id=team_id, name=type_name)
        )
        if found is None:
            return f"No request type is called “{views.escape(type_name)}”. `/prodops types list` shows them."
        query = metrics.RequestListQuery(type_id=found.id, open_only=False)
        return query, f"Requests of type {views.escape(found.name)}", {"filter": word, "type_id": found.id}
    return LIST_USAGE


def answer_list(
    db: Database,
    respond: Respond,
    *,
    team_id: str,
    user_id: str,
    word: str,
    type_name: str = "",
    type_id: int | None = None,
    page: int = 1,
    replace: bool = False,
) -> None:
    """Responds (ephemerally) with one page of a request list."""
    now = utcnow()
    with db.read() as s:
        choice = _list_choice(
            s, team_id=team_id, user_id=user_id, word=word, type_name=type_name, type_id=type_id
        )
        if isinstance(choice, str):
            answer = "Unknown list filter", views.error_blocks(choice)
        else:
            query, title, state = choice
            found, has_more = metrics.list_requests(
                db_session=s, team_id=team_id, query=query, now=now, page=page, page_size=PAGE_SIZE
            )
            answer = (
                title,
                views.list_blocks(found, title=title, state=state, page=page, has_more=has_more, now=now),
            )
    respond(response_type="ephemeral", text=answer[0], blocks=answer[1], replace_original=replace)


def answer_list_command(db: Database, respond: Respond, *, team_id: str, user_id: str, args: str) -> None:
    """`/request list [mine|assigned|overdue|type <name>]`."""
    word, _, rest = args.strip().partition(" ")
    answer_list(db, respond, team_id=team_id, user_id=user_id, word=word.lower(), type_name=rest.strip())


def on_list_page(ack: Ack, body: dict[str, Any], context: BoltContext, respond: Respond) -> None:
    """Newer / Older in `/request list`: the same filter for whoever clicked, another page."""
    ack()
    state = json.loads(body["actions"][0]["value"])
    type_id = state.get("type_id")
    answer_list(
        context["db"],
        respond,
        team_id=context.team_id or "",
        user_id=body["user"]["id"],
        word=str(state.get("filter", "")),
        type_id=int(type_id) if type_id is not None else None,
        page=max(1, int(state.get("page", 1))),
        replace=True,
    )


# ---- /request stats -----------------------------------------------------------------------------------


def _stats_answer(db_session: Session, *, team_id: str, name: str) -> tuple[str, views.Blocks]:
    now = utcnow()
    request_type = None
    if name:
        request_type = request_types.get_type_by_name(db_session=db_session, team_id=team_id, name=name)
        if request_type is None:
            return "Unknown request type", views.error_blocks(
                f"No request type is called “{views.escape(name)}”. `/prodops types list` shows them; "
                "`/request stats` on its own covers every type."
            )
    type_id = request_type.id if request_type else None
    current = metrics.request_metrics(
        db_session=db_session, team_id=team_id, start=now - PERIOD, end=now, now=now, type_id=type_id
    )
    previous = metrics.request_metrics(
        db_session=db_session,
        team_id=team_id,
        start=now - 2 * PERIOD,
        end=now - PERIOD,
        now=now,
        type_id=type_id,
    )
    if request_type is None:
        return "Request stats", views.stats_blocks(
            current, previous, title="Request stats", day=views.DEFAULT_DAY
        )
    day = messaging.working_day(request_types.policy_for(request_type))
    title = f"Request stats: {views.escape(request_type.name)}"
    return title, views.stats_blocks(current, previous, title=title, day=day)


def answer_stats(db: Database, respond: Respond, *, team_id: str, args: str) -> None:
    """`/request stats [type name]`: the last 7 days against the 7 before, ephemeral."""
    with db.read() as s:
        text, blocks = _stats_answer(s, team_id=team_id, name=args.strip())
    respond(response_type="ephemeral", text=text, blocks=blocks)
