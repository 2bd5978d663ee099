"""`/prodops types`: the list (everyone), Edit / Archive / New type buttons and the type modal (admins)."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt import Ack, App, BoltContext, Respond
from slack_sdk import WebClient
from slack_sdk.webhook import WebhookClient
from sqlalchemy.exc import IntegrityError

from bot.admin_messaging import notice_blocks, refusal_blocks
from bot.requests import types as types_service
from bot.requests.types_modal import (
    ModalMeta,
    TypesAction,
    TypesBlock,
    TypesCallback,
    read_type_submission,
    type_modal,
    types_list_blocks,
)
from bot.workspaces import SettingsCache
from handlers import slack_io
from storage.db import Database

logger = logging.getLogger("prodops.request_types")


def register(app: App) -> None:
    """Binds the list's buttons and the type modal."""
    app.action(TypesAction.edit)(on_edit_button)
    app.action(TypesAction.new)(on_new_button)
    app.action(TypesAction.archive)(on_archive_button)
    app.view(TypesCallback.modal)(on_modal_submit)


def list_blocks(db: Database, *, team_id: str, can_edit: bool) -> list[dict[str, Any]]:
    """The workspace's types (the default one made on first use) as the `/prodops types` answer."""
    with db.session() as s:
        types_service.ensure_default_type(db_session=s, team_id=team_id)
        rows = types_service.list_types(db_session=s, team_id=team_id)
        listed = [(row.id, types_service.spec_from_type(row), row.is_default) for row in rows]
    return types_list_blocks(listed, can_edit=can_edit)


def types_subcommand(
    *, client: WebClient, db: Database, team_id: str, user_id: str, args: list[str], cache: SettingsCache
) -> list[dict[str, Any]]:
    """`/prodops types`: everyone sees the list; admins also get Edit / Archive / New type buttons."""
    if args and args[0].lower() not in ("list", "ls"):
        return notice_blocks(
            "Use `/prodops types` to see the request types (admins can edit them from there).", ok=False
        )
    return list_blocks(db, team_id=team_id, can_edit=slack_io.is_prodops_admin(client, db, team_id, user_id))


def _tell(response_url: str | None, text: str, blocks: list[dict[str, Any]], *, replace: bool) -> None:
    """Answers through the response URL of the `/prodops types` message (replacing the list when asked)."""
    if not response_url:
        return
    try:
        WebhookClient(response_url).send(
            text=text, blocks=blocks, response_type="ephemeral", replace_original=replace
        )
    except OSError as exc:
        logger.warning("could not answer through the response URL: %s", exc)


def _type_id(body: dict[str, Any]) -> int | None:
    try:
        return int(body["actions"][0]["value"])
    except (KeyError, IndexError, ValueError):
        return None


def on_edit_button(ack: Ack, body: dict[str, Any], context: BoltContext, client: WebClient) -> None:
    """*Edit* next to a type: the modal, prefilled."""
    ack()
    db: Database = context["db"]
    team_id = context.team_id or ""
    user_id = body["user"]["id"]
    response_url = body.get("response_url")
    if not slack_io.is_prodops_admin(client, db, team_id, user_id):
        _tell(
            response_url,
            "Only admins can edit request types",
            refusal_blocks("edit request types"),
            replace=False,
        )
        return
    type_id = _type_id(body)
    with db.read() as s:
        row = types_service.get_type(db_session=s, team_id=team_id, type_id=type_id) if type_id else None
        spec = types_service.spec_from_type(row) if row is not None else None
    if spec is None:
        _tell(
            response_url,
            "That type no longer exists",
            notice_blocks("That type no longer exists.", ok=False),
            replace=False,
        )
        return
    view = type_modal(spec=spec, meta=ModalMeta(type_id=type_id, response_url=response_url))
    client.views_open(trigger_id=body["trigger_id"], view=view)


def on_new_button(ack: Ack, body: dict[str, Any], context: BoltContext, client: WebClient) -> None:
    """*New type*: the modal, with the default type's SLAs and hours to start from."""
    ack()
    db: Database = context["db"]
    team_id = context.team_id or ""
    response_url = body.get("response_url")
    if not slack_io.is_prodops_admin(client, db, team_id, body["user"]["id"]):
        _tell(
            response_url,
            "Only admins can add request types",
            refusal_blocks("add request types"),
            replace=False,
        )
        return
    client.views_open(
        trigger_id=body["trigger_id"], view=type_modal(spec=None, meta=ModalMeta(response_url=response_url))
    )


def on_archive_button(
    ack: Ack, body: dict[str, Any], context: BoltContext, client: WebClient, respond: Respond
) -> None:
    """*Archive* (after Slack's confirm): the type is no longer offered; the list is refreshed."""
    ack()
    db: Database = context["db"]
    team_id = context.team_id or ""
    if not slack_io.is_prodops_admin(client, db, team_id, body["user"]["id"]):
        respond(replace_original=False, blocks=refusal_blocks("archive request types"), text="Not allowed")
        return
    type_id = _type_id(body)
    try:
        with db.session() as s:
            archived = bool(type_id) and types_service.archive_type(
                db_session=s, team_id=team_id, type_id=type_id or 0
            )
    except ValueError as exc:
        respond(replace_original=False, blocks=notice_blocks(str(exc), ok=False), text=str(exc))
        return
    note = "Type archived." if archived else "That type was already archived."
    blocks = notice_blocks(note) + list_blocks(db, team_id=team_id, can_edit=True)
    respond(replace_original=True, blocks=blocks, text=note)


def on_modal_submit(
    ack: Ack, body: dict[str, Any], view: dict[str, Any], context: BoltContext, client: WebClient
) -> None:
    """Validates inline (errors keep the form open, nothing lost), saves, then refreshes the list."""
    db: Database = context["db"]
    team_id = context.team_id or ""
    user_id = body["user"]["id"]
    meta = ModalMeta.load(view.get("private_metadata", ""))
    if not slack_io.is_prodops_admin(client, db, team_id, user_id):
        ack(
            response_action="errors",
            errors={TypesBlock.name: "Only ProdOps admins can change request types."},
        )
        return
    with db.read() as s:
        row = (
            types_service.get_type(db_session=s, team_id=team_id, type_id=meta.type_id)
            if meta.type_id is not None
            else None
        )
        if meta.type_id is not None and row is None:
            ack(response_action="errors", errors={TypesBlock.name: "This type was deleted meanwhile."})
            return
        fields = types_service.spec_from_type(row).fields if row is not None else []
        submission = read_type_submission(view["state"]["values"], fields=fields)
        errors = dict(submission.errors)
        if submission.spec is not None:
            clash = types_service.get_type_by_name(db_session=s, team_id=team_id, name=submission.spec.name)
            if clash is not None and clash.id != meta.type_id:
                errors[TypesBlock.name] = f"There already is a type called “{clash.name}”."
    if errors or submission.spec is None:
        ack(response_action="errors", errors=errors)
        return
    ack()
    try:
        with db.session() as s:
            saved = types_service.save_type(
                db_session=s, team_id=team_id, spec=submission.spec, type_id=meta.type_id
            )
            name = saved.name
    except (types_service.TypeNameTaken, IntegrityError, LookupError):
        note = f"“{submission.spec.name}” was not saved: another admin changed the types at the same moment."
        _tell(meta.response_url, note, notice_blocks(note + " Try again.", ok=False), replace=False)
        return
    note = f"Saved request type “{name}”." if meta.type_id is not None else f"Created request type “{name}”."
    blocks = notice_blocks(note) + list_blocks(db, team_id=team_id, can_edit=True)
    _tell(meta.response_url, note, blocks, replace=True)
