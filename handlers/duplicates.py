"""Duplicate suggestions in Slack: *Undo*, *Merge*, *Not a duplicate*, and `/prodops duplicates [link ask]`."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from slack_bolt import Ack, App, BoltContext, Respond
from slack_sdk import WebClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from bot import workspaces
from bot.admin_messaging import notice_blocks, refusal_blocks
from bot.feedback import messaging
from bot.feedback.messaging import DuplicateAction
from bot.insights import duplicates
from bot.insights.capture_hook import DuplicateNotice, notice_for
from bot.insights.similarity import Encoder, encoder_for_backend, make_encoder
from bot.settings import get_settings
from bot.workspaces import SettingsCache
from handlers import admin, slack_io
from storage.db import Database
from storage.models import FeedbackItem, SimilarityModel

logger = logging.getLogger("prodops.duplicates")

Decide = Callable[..., duplicates.Decision]
VERBS = {
    DuplicateAction.undo: "undo this link",
    DuplicateAction.merge: "merge these",
    DuplicateAction.reject: "answer this",
}
OUTCOMES = {
    "linked": "linked as a duplicate",
    "asked": "still open",
    "merged": "merged",
    "rejected": "marked as not a duplicate",
    "undone": "undone",
}


def register(app: App) -> None:
    """Binds the duplicate buttons and adds `/prodops duplicates`."""
    app.action(DuplicateAction.undo)(on_undo)
    app.action(DuplicateAction.merge)(on_merge)
    app.action(DuplicateAction.reject)(on_reject)
    admin.SUBCOMMANDS["duplicates"] = duplicates_subcommand


def on_undo(
    ack: Ack, body: dict[str, Any], context: BoltContext, client: WebClient, respond: Respond
) -> None:
    """*Undo* under an automatic link: the item goes back to exactly what it was."""
    _decide(ack, body, context, client, respond, action=DuplicateAction.undo, decide=duplicates.undo)


def on_merge(
    ack: Ack, body: dict[str, Any], context: BoltContext, client: WebClient, respond: Respond
) -> None:
    """*Merge*: the new item becomes a duplicate of the one it was compared with."""
    _decide(ack, body, context, client, respond, action=DuplicateAction.merge, decide=duplicates.merge)


def on_reject(
    ack: Ack, body: dict[str, Any], context: BoltContext, client: WebClient, respond: Respond
) -> None:
    """*Not a duplicate*: recorded; the pair is never suggested again."""
    _decide(ack, body, context, client, respond, action=DuplicateAction.reject, decide=duplicates.reject)


def _tell(respond: Respond, text: str) -> None:
    respond(
        response_type="ephemeral", replace_original=False, text=text, blocks=notice_blocks(text, ok=False)
    )


def _decide(
    ack: Ack,
    body: dict[str, Any],
    context: BoltContext,
    client: WebClient,
    respond: Respond,
    *,
    action: DuplicateAction,
    decide: Decide,
) -> None:
    ack()
    db: Database = context["db"]
    team_id, user_id = context.team_id or "", body["user"]["id"]
    suggestion_id = int(body["actions"][0]["value"])
    with db.read() as s:
        suggestion = duplicates.get(db_session=s, team_id=team_id, suggestion_id=suggestion_id)
        item = s.get(FeedbackItem, suggestion.item_id) if suggestion is not None else None
        capturer = item.captured_by_user_id if item is not None else None
    if suggestion is None or item is None:
        _tell(respond, "That feedback no longer exists, so there is nothing to decide.")
        return
    if user_id != capturer and not slack_io.is_prodops_admin(client, db, team_id, user_id):
        _tell(
            respond,
            f"Only <@{capturer}>, who captured feedback #{item.id}, or a ProdOps admin can {VERBS[action]}.",
        )
        return
    with db.session() as s:
        decision = decide(db_session=s, team_id=team_id, suggestion_id=suggestion_id, user_id=user_id)
        notice = _notice(s, decision.suggestion)
        prompt = (decision.suggestion.prompt_channel_id, decision.suggestion.prompt_ts)
    if notice is None:
        _tell(respond, "The feedback this was compared with no longer exists.")
        return
    if not decision.changed:  # a second click, or two people at once: the first decision stands
        who = f" by <@{notice.decided_by_user_id}>" if notice.decided_by_user_id else ""
        _tell(
            respond, f"Already decided: {OUTCOMES.get(notice.status, notice.status)}{who}. Nothing changed."
        )
        return
    _update_prompt(
        client, db, respond, body=body, team_id=team_id, item_id=item.id, notice=notice, prompt=prompt
    )


def _notice(session: Session, suggestion: Any) -> DuplicateNotice | None:
    candidate = session.get(FeedbackItem, suggestion.candidate_id)
    return notice_for(suggestion, candidate) if candidate is not None else None


def _update_prompt(
    client: WebClient,
    db: Database,
    respond: Respond,
    *,
    body: dict[str, Any],
    team_id: str,
    item_id: int,
    notice: DuplicateNotice,
    prompt: tuple[str | None, str | None],
) -> None:
    """Shows the outcome and who decided where the question (or link) was, without its buttons."""
    container = body.get("container") or {}
    message = body.get("message") or {}
    if message.get("blocks"):
        blocks = messaging.replace_duplicate_blocks(message["blocks"], notice)
    else:  # ephemeral messages come without their blocks: rebuild the answer from the item
        with db.read() as s:
            item = s.get(FeedbackItem, item_id)
            assert item is not None
            _ = item.account
            blocks = messaging.command_confirmation_blocks(item, None, notice)
    channel_id, ts = prompt
    if not ts and not container.get("is_ephemeral"):
        channel_id, ts = container.get("channel_id") or channel_id, container.get("message_ts")
    text = f"Feedback #{item_id}: {OUTCOMES.get(notice.status, notice.status)}"
    if channel_id and ts:
        client.chat_update(channel=channel_id, ts=ts, text=text, blocks=blocks)
    else:
        respond(replace_original=True, text=text, blocks=blocks)


# ---- /prodops duplicates ---------------------------------------------------------------------------------


def _parse_score(word: str) -> float | None:
    """`0.9`, `.9` or `90%` → 0.9; None when it is not a number."""
    try:
        return float(word[:-1]) / 100 if word.endswith("%") else float(word)
    except ValueError:
        return None


def _fitted_encoder(db: Database, team_id: str) -> Encoder:
    """The workspace's encoder as last fitted, for its default bands: no index is built and no model loaded
    (this runs in the web process, which never encodes)."""
    with db.read() as s:
        model = s.scalars(
            select(SimilarityModel)
            .where(SimilarityModel.team_id == team_id)
            .order_by(SimilarityModel.version.desc())
            .limit(1)
        ).first()
        backend, state = (model.backend, model.state) if model is not None else (None, None)
    settings = get_settings()
    if backend is None:
        return make_encoder(settings)  # what the first capture will fit
    encoder = encoder_for_backend(backend, settings)
    if state is not None:
        encoder.load_state(state)
    return encoder


def duplicates_subcommand(
    *, client: WebClient, db: Database, team_id: str, user_id: str, args: list[str], cache: SettingsCache
) -> list[dict[str, Any]]:
    """`/prodops duplicates` shows the bands; `/prodops duplicates <link> <ask>` or `default` sets them (admins)."""
    encoder = _fitted_encoder(db, team_id)
    if not args:
        with db.read() as s:
            bands = duplicates.thresholds(
                db_session=s,
                team_id=team_id,
                default_link=encoder.link_threshold,
                default_ask=encoder.ask_threshold,
            )
        return messaging.duplicate_settings_blocks(bands, backend=encoder.name)
    usage = (
        "Use `/prodops duplicates <link> <ask>` with 0 < ask < link ≤ 1, e.g. `/prodops duplicates 0.9 0.75`, "
        "or `/prodops duplicates default` for the backend's defaults."
    )
    reset = len(args) == 1 and args[0].lower() in ("default", "defaults", "reset")
    if not reset and len(args) != 2:
        return notice_blocks(usage, ok=False)
    link = ask = None
    if not reset:
        link, ask = _parse_score(args[0]), _parse_score(args[1])
        if link is None or ask is None:
            return notice_blocks(f"“{' '.join(args)}” are not two numbers. {usage}", ok=False)
        if problem := duplicates.validate_thresholds(link, ask):
            return notice_blocks(f"{problem} {usage}", ok=False)
    if not slack_io.is_prodops_admin(client, db, team_id, user_id):
        return refusal_blocks("change the duplicate thresholds")
    with db.session() as s:
        workspace = workspaces.get_or_create(db_session=s, team_id=team_id)
        duplicates.set_thresholds(db_session=s, workspace=workspace, link=link, ask=ask)
    if reset:
        return notice_blocks(
            f"Duplicate thresholds are back to the {encoder.name} defaults: link at "
            f"{encoder.link_threshold:.2f}, ask from {encoder.ask_threshold:.2f}."
        )
    assert link is not None and ask is not None
    return notice_blocks(
        f"Duplicate thresholds set: new feedback scoring at least {link:.2f} against a recent item is linked "
        f"as a duplicate; from {ask:.2f} the person who captured it is asked. "
        "`/prodops duplicates default` goes back to the backend's defaults."
    )
