"""`/digest`: subscribe, list, edit, unsubscribe, preview and send; the subscription modal; the digest buttons.

Rule (bot/digests/service.may_manage): ProdOps admins manage any channel's digests, everyone else those of the
channels they are in (asked with `conversations.members`). No database session is held across a Slack call.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from slack_bolt import Ack, App, BoltContext, Respond
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.webhook import WebhookClient
from sqlalchemy import select

from bot import admins
from bot.admin_messaging import notice_blocks
from bot.digests import service
from bot.digests.modal import (
    DigestAction,
    DigestBlock,
    DigestCallback,
    DigestForm,
    ModalMeta,
    SubscriptionSummary,
    form_from_subscription,
    help_blocks,
    list_blocks,
    preview_blocks,
    read_submission,
    subscription_blocks,
    subscription_modal,
    summarise,
    text_blocks,
)
from bot.digests.render import build_digest
from bot.digests.scheduler import period_for
from bot.digests.schemas import RenderedDigest
from bot.metrics.collector import next_run_after
from handlers import slack_io
from storage.db import Database
from storage.models import Metric, RequestType
from storage.types import utcnow

logger = logging.getLogger("prodops.digests")

Blocks = list[dict[str, Any]]
NOT_ALLOWED = (
    "You can manage the digests of channels you are in; this one is in <#{channel}>, which you are not in. "
    "ProdOps admins can manage any channel's digests."
)
NOT_ALLOWED_SHORT = "You can only manage the digests of channels you are in (ProdOps admins: any channel)."


def register(app: App) -> None:
    """Binds `/digest`, the subscription modal and the digest buttons."""
    app.command("/digest")(on_digest_command)
    app.view(DigestCallback.modal)(on_modal_submit)
    app.action(DigestAction.manage)(on_manage_button)
    app.action(DigestAction.preview)(on_preview_button)
    app.action(DigestAction.unsubscribe)(on_unsubscribe_button)


# ---- who may do what --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Person:
    """What ProdOps knows about the user asking: admin or not, and their Slack time zone."""

    user_id: str
    is_admin: bool
    timezone: str | None


def _person(client: WebClient, db: Database, *, team_id: str, user_id: str) -> Person:
    """One `users.info` gives both the Slack admin flag and the time zone."""
    with db.read() as s:
        listed = admins.is_admin(db_session=s, team_id=team_id, user_id=user_id, slack_owner_or_admin=False)
    try:
        user = client.users_info(user=user_id)["user"]
    except SlackApiError as exc:
        logger.warning("users.info failed for %s: %s", user_id, exc.response.get("error"))
        user = {}
    slack_admin = bool(user.get("is_owner") or user.get("is_admin") or user.get("is_primary_owner"))
    return Person(user_id=user_id, is_admin=listed or slack_admin, timezone=user.get("tz") or None)


def _may_manage(client: WebClient, person: Person, channel_id: str) -> bool:
    in_channel = not person.is_admin and channel_id in slack_io.channels_user_is_in(
        client, person.user_id, [channel_id]
    )
    return service.may_manage(is_admin=person.is_admin, user_in_channel=in_channel)


# ---- answering --------------------------------------------------------------------------------------


def _say(respond: Respond, text: str, blocks: Blocks | None = None) -> None:
    respond(response_type="ephemeral", replace_original=False, text=text, blocks=blocks or text_blocks(text))


def _tell(
    client: WebClient, *, response_url: str | None, channel_id: str, user_id: str, text: str, blocks: Blocks
) -> None:
    """Answers through a response URL when there is one, else as an ephemeral message in the channel."""
    try:
        if response_url:
            WebhookClient(response_url).send(
                text=text, blocks=blocks, response_type="ephemeral", replace_original=False
            )
        else:
            client.chat_postEphemeral(channel=channel_id, user=user_id, text=text, blocks=blocks)
    except (OSError, SlackApiError) as exc:
        logger.warning("could not answer %s: %s", user_id, exc)


# ---- the command ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ask:
    """One `/digest` invocation: who, where, and how to answer."""

    client: WebClient
    db: Database
    respond: Respond
    team_id: str
    user_id: str
    channel_id: str
    trigger_id: str
    response_url: str | None


def on_digest_command(
    ack: Ack, command: dict[str, Any], context: BoltContext, client: WebClient, respond: Respond
) -> None:
    """`/digest subscribe | list [all] | edit [id] | unsubscribe [id] | preview [id] | send [id] | help`."""
    words = (command.get("text") or "").split()
    head = words[0].lower() if words else "help"
    if head not in SUBCOMMANDS:
        intro = "" if head == "help" else f"I don't know `/digest {' '.join(words)}`.\n\n"
        ack(
            response_type="ephemeral",
            text="/digest help",
            blocks=text_blocks(intro) + help_blocks() if intro else help_blocks(),
        )
        return
    ack()
    ask = Ask(
        client=client,
        db=context["db"],
        respond=respond,
        team_id=context.team_id or command["team_id"],
        user_id=command["user_id"],
        channel_id=command["channel_id"],
        trigger_id=command["trigger_id"],
        response_url=command.get("response_url"),
    )
    SUBCOMMANDS[head](ask, words[1:])


def _metric_choices(db: Database, team_id: str) -> list[tuple[str, str]]:
    with db.read() as s:
        rows = s.execute(
            select(Metric.key, Metric.name)
            .where(Metric.team_id == team_id, Metric.archived_at.is_(None))
            .order_by(Metric.key)
        )
        return [(key, f"{name} ({key})") for key, name in rows]


def _request_type_names(db: Database, team_id: str) -> list[str]:
    with db.read() as s:
        return list(
            s.scalars(
                select(RequestType.name)
                .where(RequestType.team_id == team_id, RequestType.archived_at.is_(None))
                .order_by(RequestType.name)
            )
        )


def _open_modal(
    client: WebClient, db: Database, *, trigger_id: str, team_id: str, form: DigestForm, meta: ModalMeta
) -> None:
    view = subscription_modal(
        form=form,
        meta=meta,
        metrics=_metric_choices(db, team_id),
        request_types=_request_type_names(db, team_id),
    )
    client.views_open(trigger_id=trigger_id, view=view)


def _subscribe(ask: Ask, args: list[str]) -> None:
    person = _person(ask.client, ask.db, team_id=ask.team_id, user_id=ask.user_id)
    if not _may_manage(ask.client, person, ask.channel_id):
        _say(ask.respond, NOT_ALLOWED.format(channel=ask.channel_id))
        return
    if not slack_io.bot_is_member(ask.client, ask.channel_id):
        _say(
            ask.respond,
            f"I'm not in <#{ask.channel_id}>, so I couldn't post its digest. Type `/invite @ProdOps` here, "
            "then `/digest subscribe` again.",
        )
        return
    form = DigestForm(timezone=person.timezone or "UTC")
    meta = ModalMeta(channel_id=ask.channel_id, response_url=ask.response_url)
    _open_modal(ask.client, ask.db, trigger_id=ask.trigger_id, team_id=ask.team_id, form=form, meta=meta)


def _list(ask: Ask, args: list[str]) -> None:
    everywhere = bool(args) and args[0].lower() == "all"
    if everywhere and not _person(ask.client, ask.db, team_id=ask.team_id, user_id=ask.user_id).is_admin:
        _say(
            ask.respond,
            "Only ProdOps admins can list every channel's digests; `/digest list` shows this channel's.",
        )
        return
    with ask.db.read() as s:
        rows = service.list_subscriptions(
            db_session=s, team_id=ask.team_id, channel_id=None if everywhere else ask.channel_id
        )
        items = [summarise(row) for row in rows]
    blocks = list_blocks(items, channel_id=None if everywhere else ask.channel_id)
    _say(ask.respond, f"{len(items)} digests", blocks)


@dataclass(frozen=True)
class Target:
    """The subscription a subcommand or button is about."""

    id: int
    channel_id: str
    name: str


def _target(ask: Ask, args: list[str], verb: str) -> Target | None:
    """The subscription named by id, or the channel's only one; otherwise says what to do and returns None."""
    raw = args[0].lstrip("#") if args else ""
    named: Target | None = None
    items: list[SubscriptionSummary] = []
    with ask.db.read() as s:
        if args:
            row = (
                service.get_subscription(db_session=s, team_id=ask.team_id, subscription_id=int(raw))
                if raw.isdigit()
                else None
            )
            named = Target(id=row.id, channel_id=row.channel_id, name=row.name) if row is not None else None
        else:
            rows = service.list_subscriptions(db_session=s, team_id=ask.team_id, channel_id=ask.channel_id)
            items = [summarise(row) for row in rows]
    if args:
        if named is None:
            _say(ask.respond, f"There is no digest `{args[0]}`. `/digest list` shows this channel's.")
        return named
    if len(items) == 1:
        return Target(id=items[0].id, channel_id=items[0].channel_id, name=items[0].name)
    if not items:
        _say(ask.respond, f"<#{ask.channel_id}> has no digests. `/digest subscribe` sets one up.")
    else:
        ids = ", ".join(f"`{item.id}` ({item.name})" for item in items)
        _say(
            ask.respond,
            f"<#{ask.channel_id}> has {len(items)} digests: {ids}. Say which: `/digest {verb} {items[0].id}`.",
        )
    return None


def _allowed(ask: Ask, target: Target) -> bool:
    person = _person(ask.client, ask.db, team_id=ask.team_id, user_id=ask.user_id)
    if _may_manage(ask.client, person, target.channel_id):
        return True
    _say(ask.respond, NOT_ALLOWED.format(channel=target.channel_id))
    return False


def _edit(ask: Ask, args: list[str]) -> None:
    target = _target(ask, args, "edit")
    if target is None or not _allowed(ask, target):
        return
    open_edit(ask.client, ask.db, team_id=ask.team_id, subscription_id=target.id, trigger_id=ask.trigger_id,
              response_url=ask.response_url, respond=ask.respond)  # fmt: skip


def open_edit(
    client: WebClient,
    db: Database,
    *,
    team_id: str,
    subscription_id: int,
    trigger_id: str,
    response_url: str | None,
    respond: Respond,
) -> None:
    """The modal prefilled with the subscription's settings (checked for permission by the caller)."""
    with db.read() as s:
        row = service.get_subscription(db_session=s, team_id=team_id, subscription_id=subscription_id)
        form = form_from_subscription(row) if row is not None else None
        channel_id = row.channel_id if row is not None else ""
    if form is None:
        _say(respond, "That digest no longer exists.")
        return
    meta = ModalMeta(channel_id=channel_id, subscription_id=subscription_id, response_url=response_url)
    _open_modal(client, db, trigger_id=trigger_id, team_id=team_id, form=form, meta=meta)


def _unsubscribe(ask: Ask, args: list[str]) -> None:
    target = _target(ask, args, "unsubscribe")
    if target is None or not _allowed(ask, target):
        return
    unsubscribe(ask.db, ask.respond, team_id=ask.team_id, user_id=ask.user_id, target=target)


def unsubscribe(db: Database, respond: Respond, *, team_id: str, user_id: str, target: Target) -> None:
    """Deletes the subscription and says so."""
    with db.session() as s:
        removed = service.delete_subscription(db_session=s, team_id=team_id, subscription_id=target.id)
    if not removed:
        _say(respond, "That digest was already gone.")
        return
    logger.info("digest %s in %s unsubscribed by %s", target.id, target.channel_id, user_id)
    text = f"Unsubscribed: <#{target.channel_id}> no longer gets *{target.name}* (`{target.id}`)."
    _say(respond, text, notice_blocks(text))


# ---- preview and send -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rendered:
    """A digest rendered now, for the current period up to now."""

    digest: RenderedDigest
    name: str
    channel_id: str
    label: str


def render_now(db: Database, *, team_id: str, subscription_id: int, now: datetime) -> Rendered | None:
    """Renders the period that contains `now`, cut at `now` (None when the subscription is gone)."""
    with db.read() as s:
        row = service.get_subscription(db_session=s, team_id=team_id, subscription_id=subscription_id)
        if row is None:
            return None
        fire_at = next_run_after(cron=row.cron, timezone=row.timezone, after=now)
        period = period_for(row, fire_at)
        period = replace(period, end=min(period.end, now), label=f"{period.label} (so far)")
        digest = build_digest(db_session=s, subscription=row, period=period, team_name=None, now=now)
        return Rendered(digest=digest, name=row.name, channel_id=row.channel_id, label=period.label)


def _render_or_say(
    ask_respond: Respond, db: Database, *, team_id: str, subscription_id: int
) -> Rendered | None:
    rendered = render_now(db, team_id=team_id, subscription_id=subscription_id, now=utcnow())
    if rendered is None:
        _say(ask_respond, "That digest no longer exists.")
    return rendered


def preview(db: Database, respond: Respond, *, team_id: str, subscription_id: int) -> None:
    """Shows the digest so far to the asker only, with a Block Kit Builder link."""
    rendered = _render_or_say(respond, db, team_id=team_id, subscription_id=subscription_id)
    if rendered is None:
        return
    blocks = preview_blocks(rendered.digest.blocks, name=rendered.name, label=rendered.label)
    respond(response_type="ephemeral", replace_original=False, text=rendered.digest.text, blocks=blocks)


def _preview(ask: Ask, args: list[str]) -> None:
    target = _target(ask, args, "preview")
    if target is None or not _allowed(ask, target):
        return
    preview(ask.db, ask.respond, team_id=ask.team_id, subscription_id=target.id)


def _send(ask: Ask, args: list[str]) -> None:
    target = _target(ask, args, "send")
    if target is None or not _allowed(ask, target):
        return
    rendered = _render_or_say(ask.respond, ask.db, team_id=ask.team_id, subscription_id=target.id)
    if rendered is None:
        return
    digest = rendered.digest
    try:
        posted = ask.client.chat_postMessage(
            channel=rendered.channel_id, text=digest.text, blocks=digest.blocks
        )
    except SlackApiError as exc:
        error = exc.response.get("error")
        logger.info("digest %s not sent to %s: %s", target.id, rendered.channel_id, error)
        _say(
            ask.respond,
            f"I couldn't post in <#{rendered.channel_id}> (`{error}`). Invite me to it and try again.",
        )
        return
    if digest.chart_png:
        try:
            ask.client.files_upload_v2(
                channel=rendered.channel_id,
                thread_ts=posted["ts"],
                file=digest.chart_png,
                filename="digest.png",
                title=f"{rendered.name} — {rendered.label}",
            )
        except SlackApiError as exc:
            logger.warning("digest %s chart not uploaded: %s", target.id, exc.response.get("error"))
    logger.info(
        "digest %s sent to %s by %s outside its schedule", target.id, rendered.channel_id, ask.user_id
    )
    text = (
        f"Sent *{rendered.name}* for {rendered.label} to <#{rendered.channel_id}>. Its schedule is unchanged."
    )
    _say(ask.respond, text, notice_blocks(text))


SUBCOMMANDS = {
    "subscribe": _subscribe,
    "list": _list,
    "ls": _list,
    "edit": _edit,
    "unsubscribe": _unsubscribe,
    "preview": _preview,
    "send": _send,
}


# ---- the modal --------------------------------------------------------------------------------------


def on_modal_submit(
    ack: Ack, body: dict[str, Any], view: dict[str, Any], context: BoltContext, client: WebClient
) -> None:
    """Validates inline (errors keep the form open), saves, then confirms with the subscription's summary."""
    db: Database = context["db"]
    team_id = context.team_id or ""
    user_id = body["user"]["id"]
    meta = ModalMeta.load(view.get("private_metadata", ""))
    person = _person(client, db, team_id=team_id, user_id=user_id)
    if not _may_manage(client, person, meta.channel_id):
        ack(response_action="errors", errors={DigestBlock.name: NOT_ALLOWED_SHORT})
        return
    metric_keys = {key for key, _ in _metric_choices(db, team_id)}
    submission = read_submission(view["state"]["values"], metric_keys=metric_keys)
    if submission.spec is None:
        ack(response_action="errors", errors=submission.errors)
        return
    now = utcnow()
    resumed = False
    try:
        with db.session() as s:
            if meta.subscription_id is None:
                row = service.create_subscription(db_session=s, team_id=team_id, channel_id=meta.channel_id,
                                                  spec=submission.spec, user_id=user_id, now=now)  # fmt: skip
            else:
                before = service.get_subscription(
                    db_session=s, team_id=team_id, subscription_id=meta.subscription_id
                )
                resumed = before is not None and before.paused_at is not None
                updated = service.update_subscription(db_session=s, team_id=team_id,
                                                      subscription_id=meta.subscription_id, spec=submission.spec, now=now)  # fmt: skip
                if updated is None:
                    ack(
                        response_action="errors",
                        errors={DigestBlock.name: "This digest was deleted meanwhile."},
                    )
                    return
                row = updated
            summary = summarise(row)
    except service.InvalidSchedule as exc:
        block = {"timezone": DigestBlock.timezone}.get(exc.field, DigestBlock.cron)
        ack(response_action="errors", errors={block: str(exc)})
        return
    ack()
    logger.info("digest %s in %s saved by %s", summary.id, summary.channel_id, user_id)
    _confirm(
        client, meta, user_id=user_id, summary=summary, created=meta.subscription_id is None, resumed=resumed
    )


def _confirm(
    client: WebClient,
    meta: ModalMeta,
    *,
    user_id: str,
    summary: SubscriptionSummary,
    created: bool,
    resumed: bool,
) -> None:
    if created:
        text = f"Subscribed <#{summary.channel_id}> to *{summary.name}*."
    elif resumed:
        text = f"Saved and resumed *{summary.name}*."
    else:
        text = f"Saved *{summary.name}*."
    blocks = notice_blocks(text) + subscription_blocks(summary, with_channel=False)
    _tell(
        client,
        response_url=meta.response_url,
        channel_id=meta.channel_id,
        user_id=user_id,
        text=text,
        blocks=blocks,
    )


# ---- buttons (the list's, and the footer of every digest) ---------------------------------------------


def _button_ask(
    body: dict[str, Any], context: BoltContext, client: WebClient, respond: Respond
) -> tuple[Ask, int | None]:
    channel_id = (
        (body.get("channel") or {}).get("id") or (body.get("container") or {}).get("channel_id") or ""
    )
    ask = Ask(
        client=client,
        db=context["db"],
        respond=respond,
        team_id=context.team_id or "",
        user_id=body["user"]["id"],
        channel_id=channel_id,
        trigger_id=body.get("trigger_id", ""),
        response_url=body.get("response_url"),
    )
    try:
        return ask, int(body["actions"][0]["value"])
    except (KeyError, IndexError, ValueError):
        return ask, None


def _button_target(ask: Ask, subscription_id: int | None) -> Target | None:
    target = _target(ask, [str(subscription_id)], "edit") if subscription_id is not None else None
    return target if target is not None and _allowed(ask, target) else None


def on_manage_button(
    ack: Ack, body: dict[str, Any], context: BoltContext, client: WebClient, respond: Respond
) -> None:
    """*Manage* in a digest's footer, or *Edit* in the list: the edit modal."""
    ack()
    ask, subscription_id = _button_ask(body, context, client, respond)
    target = _button_target(ask, subscription_id)
    if target is None:
        return
    open_edit(client, ask.db, team_id=ask.team_id, subscription_id=target.id, trigger_id=ask.trigger_id,
              response_url=ask.response_url, respond=respond)  # fmt: skip


def on_preview_button(
    ack: Ack, body: dict[str, Any], context: BoltContext, client: WebClient, respond: Respond
) -> None:
    """*Preview* in the list."""
    ack()
    ask, subscription_id = _button_ask(body, context, client, respond)
    target = _button_target(ask, subscription_id)
    if target is not None:
        preview(ask.db, respond, team_id=ask.team_id, subscription_id=target.id)


def on_unsubscribe_button(
    ack: Ack, body: dict[str, Any], context: BoltContext, client: WebClient, respond: Respond
) -> None:
    """*Unsubscribe* in the list (after Slack's confirm)."""
    ack()
    ask, subscription_id = _button_ask(body, context, client, respond)
    target = _button_target(ask, subscription_id)
    if target is not None:
        unsubscribe(ask.db, respond, team_id=ask.team_id, user_id=ask.user_id, target=target)
