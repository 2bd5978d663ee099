"""`/feedback themes` and its buttons and modals. Thin: parse → bot.insights.themes → Block Kit.

Anyone may see the list; only ProdOps admins may accept, dismiss, rename, merge, split or move. Items
are quoted only when public or from the channel where the list was asked for.
"""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt import Ack, App, BoltContext, Respond
from slack_sdk import WebClient
from slack_sdk.webhook import WebhookClient

from bot.admin_messaging import refusal_blocks
from bot.feedback.messaging import error_blocks
from bot.insights import theme_messaging as messaging
from bot.insights import themes
from bot.insights.theme_messaging import ButtonValue, ModalMeta, ThemeAction, ThemeBlock, ThemeCallback
from handlers import feedback, slack_io
from storage.db import Database

logger = logging.getLogger("prodops.themes")

USAGE = "Use `/feedback themes` to see the themes, proposals and how many items are unsorted."


def register(app: App) -> None:
    """Adds `themes` to `/feedback` and binds the list's buttons and the modals."""
    feedback.SUBCOMMANDS["themes"] = on_themes
    app.action(ThemeAction.accept.value)(on_accept)
    app.action(ThemeAction.dismiss.value)(on_dismiss)
    app.action(ThemeAction.rename.value)(on_rename_button)
    app.action(ThemeAction.manage.value)(on_manage)
    app.view(ThemeCallback.rename.value)(on_rename_submit)
    app.view(ThemeCallback.merge.value)(on_merge_submit)
    app.view(ThemeCallback.move.value)(on_move_submit)


def list_blocks(
    db: Database, *, team_id: str, can_manage: bool, channel_id: str | None, notice: str | None = None
) -> tuple[str, list[dict[str, Any]]]:
    """(text, blocks) of the themes list."""
    with db.read() as s:
        overview = themes.overview(s, team_id=team_id)
    blocks = messaging.theme_list_blocks(
        overview, can_manage=can_manage, channel_id=channel_id, notice=notice
    )
    return messaging.theme_list_text(overview), blocks


def on_themes(
    *, ack: Ack, command: dict[str, Any], context: BoltContext, client: WebClient, respond: Respond, args: str
) -> None:
    """The ephemeral list: active themes with counts, proposals (with buttons for admins), unsorted count."""
    if args.strip():
        ack(response_type="ephemeral", text="Unknown option", blocks=error_blocks(USAGE))
        return
    ack()
    db: Database = context["db"]
    team_id = context.team_id or command["team_id"]
    can_manage = slack_io.is_prodops_admin(client, db, team_id, command["user_id"])
    text, blocks = list_blocks(db, team_id=team_id, can_manage=can_manage, channel_id=command["channel_id"])
    respond(response_type="ephemeral", text=text, blocks=blocks)


def _tell(response_url: str | None, text: str, blocks: list[dict[str, Any]], *, replace: bool) -> None:
    """Answers through the list's response URL (replacing the list when asked)."""
    if not response_url:
        return
    try:
        WebhookClient(response_url).send(
            text=text, blocks=blocks, response_type="ephemeral", replace_original=replace
        )
    except OSError as exc:
        logger.warning("could not answer through the response URL: %s", exc)


def _refused(respond: Respond, what: str) -> None:
    respond(
        replace_original=False, response_type="ephemeral", text="Only admins", blocks=refusal_blocks(what)
    )


def _decide(
    body: dict[str, Any], context: BoltContext, client: WebClient, respond: Respond, verb: str
) -> None:
    db: Database = context["db"]
    team_id = context.team_id or ""
    if not slack_io.is_prodops_admin(client, db, team_id, body["user"]["id"]):
        _refused(respond, f"{verb} proposed themes")
        return
    value = ButtonValue.load(body["actions"][0]["value"])
    try:
        with db.session() as s:
            theme = (themes.accept if verb == "accept" else themes.dismiss)(
                s, team_id=team_id, theme_id=value.theme_id
            )
            name = theme.name
    except themes.ThemeError as exc:
        respond(
            replace_original=False, response_type="ephemeral", text=str(exc), blocks=error_blocks(str(exc))
        )
        return
    done = (
        f"Accepted “{name}”: new feedback like it joins it from now on."
        if verb == "accept"
        else f"Dismissed “{name}”: its items will not be proposed again."
    )
    text, blocks = list_blocks(db, team_id=team_id, can_manage=True, channel_id=value.channel_id, notice=done)
    respond(replace_original=True, response_type="ephemeral", text=text, blocks=blocks)


def on_accept(
    ack: Ack, body: dict[str, Any], context: BoltContext, client: WebClient, respond: Respond
) -> None:
    """*Accept* on a proposal: it becomes an active theme."""
    ack()
    _decide(body, context, client, respond, "accept")


def on_dismiss(
    ack: Ack, body: dict[str, Any], context: BoltContext, client: WebClient, respond: Respond
) -> None:
    """*Dismiss* on a proposal: turned down, its items never proposed again."""
    ack()
    _decide(body, context, client, respond, "dismiss")


def on_rename_button(
    ack: Ack, body: dict[str, Any], context: BoltContext, client: WebClient, respond: Respond
) -> None:
    """*Rename…* on a proposal."""
    ack()
    value = ButtonValue.load(body["actions"][0]["value"])
    _open_modal(body, context, client, respond, "rename", value.theme_id, value.channel_id)


def on_manage(
    ack: Ack, body: dict[str, Any], context: BoltContext, client: WebClient, respond: Respond
) -> None:
    """The ⋯ menu of a theme: Rename… / Merge into… / Move or split items…"""
    ack()
    verb, theme_id, channel_id = body["actions"][0]["selected_option"]["value"].split(":", 2)
    _open_modal(body, context, client, respond, verb, int(theme_id), channel_id or None)


def _open_modal(
    body: dict[str, Any],
    context: BoltContext,
    client: WebClient,
    respond: Respond,
    verb: str,
    theme_id: int,
    channel_id: str | None,
) -> None:
    db: Database = context["db"]
    team_id = context.team_id or ""
    if not slack_io.is_prodops_admin(client, db, team_id, body["user"]["id"]):
        _refused(respond, "rename, merge or move themes")
        return
    meta = ModalMeta(theme_id=theme_id, channel_id=channel_id, response_url=body.get("response_url"))
    with db.read() as s:
        all_open = themes.summaries(s, team_id=team_id)
        source = next((t for t in all_open if t.id == theme_id), None)
        if source is None:
            problem = "That theme was merged, dismissed or replaced meanwhile. Run `/feedback themes` again."
            respond(
                replace_original=False, response_type="ephemeral", text=problem, blocks=error_blocks(problem)
            )
            return
        others = [t for t in all_open if t.id != theme_id]
        if verb == "rename":
            view = messaging.rename_modal(name=source.name, description=source.description, meta=meta)
        elif verb == "merge":
            if not others:
                problem = "There is no other theme to merge into yet."
                respond(
                    replace_original=False,
                    response_type="ephemeral",
                    text=problem,
                    blocks=error_blocks(problem),
                )
                return
            view = messaging.merge_modal(source=source, targets=others, meta=meta)
        else:
            items = themes.latest_items(s, team_id=team_id, theme_id=theme_id, channel_id=channel_id)
            if not items:
                problem = (
                    f"“{source.name}” has no items that can be shown in this channel (they come from private "
                    "channels or DMs). Run `/feedback themes` there, or use `prodops themes move`."
                )
                respond(
                    replace_original=False,
                    response_type="ephemeral",
                    text=problem,
                    blocks=error_blocks(problem),
                )
                return
            hidden = themes.hidden_count(s, team_id=team_id, theme_id=theme_id, channel_id=channel_id)
            view = messaging.move_modal(source=source, items=items, targets=others, meta=meta, hidden=hidden)
    client.views_open(trigger_id=body["trigger_id"], view=view)


def _value(view: dict[str, Any], block: ThemeBlock, action: ThemeAction) -> dict[str, Any]:
    return dict(view["state"]["values"].get(block.value, {}).get(action.value) or {})


def _after_submit(db: Database, team_id: str, meta: ModalMeta, notice: str) -> None:
    text, blocks = list_blocks(
        db, team_id=team_id, can_manage=True, channel_id=meta.channel_id, notice=notice
    )
    _tell(meta.response_url, text, blocks, replace=True)


def _admin_or_error(
    ack: Ack, client: WebClient, db: Database, team_id: str, user_id: str, block: ThemeBlock
) -> bool:
    if slack_io.is_prodops_admin(client, db, team_id, user_id):
        return True
    ack(response_action="errors", errors={block.value: "Only ProdOps admins can change themes."})
    return False


def on_rename_submit(
    ack: Ack, body: dict[str, Any], view: dict[str, Any], context: BoltContext, client: WebClient
) -> None:
    """Saves a person's name (and description); errors keep the form open."""
    db: Database = context["db"]
    team_id = context.team_id or ""
    meta = ModalMeta.load(view.get("private_metadata", ""))
    if not _admin_or_error(ack, client, db, team_id, body["user"]["id"], ThemeBlock.name):
        return
    name = _value(view, ThemeBlock.name, ThemeAction.name).get("value") or ""
    description = _value(view, ThemeBlock.description, ThemeAction.description).get("value")
    try:
        with db.session() as s:
            before = themes.get(s, team_id=team_id, theme_id=meta.theme_id)
            old_description = before.description if before else None
            theme = themes.rename(s, team_id=team_id, theme_id=meta.theme_id, name=name)
            if (description or None) != old_description:
                themes.describe(s, team_id=team_id, theme_id=theme.id, description=description or "")
            saved = theme.name
    except themes.ThemeError as exc:
        ack(response_action="errors", errors={ThemeBlock.name.value: str(exc)[:150]})
        return
    ack()
    _after_submit(db, team_id, meta, f"Renamed to “{saved}”. The theme job will keep that name.")


def on_merge_submit(
    ack: Ack, body: dict[str, Any], view: dict[str, Any], context: BoltContext, client: WebClient
) -> None:
    """Merges the theme into the one picked."""
    db: Database = context["db"]
    team_id = context.team_id or ""
    meta = ModalMeta.load(view.get("private_metadata", ""))
    if not _admin_or_error(ack, client, db, team_id, body["user"]["id"], ThemeBlock.target):
        return
    picked = (_value(view, ThemeBlock.target, ThemeAction.target).get("selected_option") or {}).get("value")
    if not picked:
        ack(response_action="errors", errors={ThemeBlock.target.value: "Pick the theme to merge into."})
        return
    try:
        with db.session() as s:
            source = themes.get(s, team_id=team_id, theme_id=meta.theme_id)
            source_name = source.name if source else f"#{meta.theme_id}"
            target = themes.merge(s, team_id=team_id, source_id=meta.theme_id, target_id=int(picked))
            target_name = target.name
    except themes.ThemeError as exc:
        ack(response_action="errors", errors={ThemeBlock.target.value: str(exc)[:150]})
        return
    ack()
    _after_submit(db, team_id, meta, f"Merged “{source_name}” into “{target_name}”.")


def on_move_submit(
    ack: Ack, body: dict[str, Any], view: dict[str, Any], context: BoltContext, client: WebClient
) -> None:
    """Moves the checked items to a new theme (split), another theme, or unsorted."""
    db: Database = context["db"]
    team_id = context.team_id or ""
    user_id = body["user"]["id"]
    meta = ModalMeta.load(view.get("private_metadata", ""))
    if not _admin_or_error(ack, client, db, team_id, user_id, ThemeBlock.items):
        return
    chosen = [
        int(o["value"])
        for o in _value(view, ThemeBlock.items, ThemeAction.items).get("selected_options") or []
    ]
    new_name = (_value(view, ThemeBlock.new_name, ThemeAction.new_name).get("value") or "").strip()
    picked = (_value(view, ThemeBlock.target, ThemeAction.target).get("selected_option") or {}).get("value")
    if not chosen:
        ack(response_action="errors", errors={ThemeBlock.items.value: "Check the items to move."})
        return
    if bool(new_name) == bool(picked):
        problem = "Name a new theme, or pick where the items go — one of the two."
        ack(response_action="errors", errors={ThemeBlock.target.value: problem})
        return
    try:
        with db.session() as s:
            if new_name:
                new = themes.split(
                    s,
                    team_id=team_id,
                    theme_id=meta.theme_id,
                    item_ids=chosen,
                    name=new_name,
                    user_id=user_id,
                )
                notice = f"Moved {len(chosen)} item(s) into the new theme “{new.name}”."
            else:
                target_id = None if picked == messaging.UNSORTED else int(str(picked))
                themes.move_items(s, team_id=team_id, item_ids=chosen, target_id=target_id)
                target = themes.get(s, team_id=team_id, theme_id=target_id) if target_id else None
                notice = f"Moved {len(chosen)} item(s) to " + (f"“{target.name}”." if target else "unsorted.")
    except themes.ThemeError as exc:
        block = ThemeBlock.new_name if new_name else ThemeBlock.target
        ack(response_action="errors", errors={block.value: str(exc)[:150]})
        return
    ack()
    _after_submit(db, team_id, meta, notice)
