"""What runs on every newly captured item — its vector, its theme, the duplicate check — and how the outcome
is shown: an update of the thread confirmation, or a private prompt to the capturer.

Capture paths queue this (`bot.insights.batch`); a worker runs it in batches. Each step has its own
transaction and may run again for the same item without changing what it decided the first time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from sqlalchemy import update

from bot.feedback import messaging
from bot.insights import duplicates, themes
from bot.insights import index as similarity_index
from bot.settings import Settings
from storage.db import Database
from storage.models import DuplicateSuggestion, FeedbackItem, Theme, ThemeStatus

logger = logging.getLogger("prodops.insights.capture")


@dataclass(frozen=True)
class DuplicateNotice:
    """What a confirmation says about a duplicate: linked (with Undo) or a question (Merge / Not a duplicate)."""

    suggestion_id: int
    status: str  # a duplicates.SuggestionStatus value
    candidate_id: int
    candidate_permalink: str | None
    candidate_text: str
    score: float
    decided_by_user_id: str | None = None


@dataclass(frozen=True)
class CaptureInsights:
    """The outcome of the hook for the confirmation (all None when nothing applies or the hook failed)."""

    theme_id: int | None = None
    theme_name: str | None = None
    duplicate: DuplicateNotice | None = None


def notice_for(suggestion: DuplicateSuggestion, candidate: FeedbackItem) -> DuplicateNotice:
    """The confirmation's view of a suggestion and the item it points at."""
    return DuplicateNotice(
        suggestion_id=suggestion.id,
        status=suggestion.status,
        candidate_id=candidate.id,
        candidate_permalink=candidate.permalink,
        candidate_text=candidate.text,
        score=suggestion.score,
        decided_by_user_id=suggestion.decided_by_user_id,
    )


def load_notice(
    db: Database, *, team_id: str, item_id: int, unshown_only: bool = False
) -> DuplicateNotice | None:
    """The duplicate notice of an item captured earlier (for confirmations shown later, e.g. after a form).

    `unshown_only`: only a link or question that no confirmation has shown yet (e.g. linked silently).
    """
    with db.read() as s:
        suggestion = duplicates.suggestion_for_item(db_session=s, team_id=team_id, item_id=item_id)
        if suggestion is None:
            return None
        if unshown_only and (
            suggestion.prompt_channel_id is not None
            or suggestion.status not in (*duplicates.LINKED_STATES, duplicates.SuggestionStatus.asked.value)
        ):
            return None
        candidate = s.get(FeedbackItem, suggestion.candidate_id)
        return notice_for(suggestion, candidate) if candidate is not None else None


def on_item_captured(
    db: Database, *, team_id: str, item_id: int, interactive: bool = True, settings: Settings | None = None
) -> CaptureInsights:
    """Runs the insights of one item now, in this process (the CLI, tests); never raises.

    `interactive` False (watched channels, where the confirmation is a reaction): link silently above the
    link threshold, never ask.
    """
    try:
        index = similarity_index.get_index(db, team_id, settings=settings)
        with db.session() as s:
            item = s.get(FeedbackItem, item_id)
            if item is None or item.team_id != team_id:
                return CaptureInsights()
            vector = index.add(s, item.id, item.text)
    except Exception:
        logger.exception("could not encode feedback #%s (team %s); saved without insights", item_id, team_id)
        return CaptureInsights()
    try:
        return insights_for(
            db, index, team_id=team_id, item_id=item_id, vector=vector, interactive=interactive
        )
    except Exception:
        logger.exception("could not assign a theme or check feedback #%s (team %s)", item_id, team_id)
        return CaptureInsights()


def insights_for(
    db: Database,
    index: similarity_index.TeamIndex,
    *,
    team_id: str,
    item_id: int,
    vector: np.ndarray,
    interactive: bool,
) -> CaptureInsights:
    """Assigns the theme of an encoded item, then checks it for a duplicate (a link may move its theme)."""
    with db.session() as s:
        item = s.get(FeedbackItem, item_id)
        if item is None or item.team_id != team_id:
            return CaptureInsights()
        if item.theme_id is None:  # placed already: by an earlier attempt, a link, or a person
            themes.assign_item(s, index=index, item=item, vector=vector)
        suggestion = duplicates.suggest(
            db_session=s, index=index, item=item, vector=vector, interactive=interactive
        )
        candidate = s.get(FeedbackItem, suggestion.candidate_id) if suggestion is not None else None
        duplicate = notice_for(suggestion, candidate) if suggestion is not None and candidate else None
        theme = s.get(Theme, item.theme_id) if item.theme_id is not None else None
        if theme is None or theme.status != ThemeStatus.active.value:
            return CaptureInsights(duplicate=duplicate)
        return CaptureInsights(theme_id=theme.id, theme_name=theme.name, duplicate=duplicate)


# -- showing the outcome ------------------------------------------------------------------------------------


def _load_item(db: Database, team_id: str, item_id: int) -> FeedbackItem | None:
    with db.read() as s:
        item = s.get(FeedbackItem, item_id)
        if item is None or item.team_id != team_id:
            return None
        _ = item.account  # load before the session closes
        return item


def show_in_thread(
    client: WebClient,
    db: Database,
    *,
    team_id: str,
    item_id: int,
    channel_id: str,
    ts: str,
    emoji: str,
    insights: CaptureInsights,
) -> None:
    """Updates the thread confirmation in place with the item's theme and the duplicate link (with *Undo*) or
    question; leaves it as it is when there is neither."""
    duplicate = insights.duplicate
    if duplicate is None and insights.theme_name is None:
        return
    item = _load_item(db, team_id, item_id)
    if item is None:
        return
    client.chat_update(
        channel=channel_id,
        ts=ts,
        text=messaging.feedback_confirmation_text(item, duplicate),
        blocks=messaging.feedback_confirmation_blocks(item, emoji, duplicate, theme_name=insights.theme_name),
    )
    if duplicate is not None:
        with db.session() as s:
            duplicates.record_prompt(
                db_session=s,
                team_id=team_id,
                suggestion_id=duplicate.suggestion_id,
                channel_id=channel_id,
                ts=ts,
            )


def show_privately(
    client: WebClient,
    db: Database,
    *,
    team_id: str,
    item_id: int,
    channel_id: str,
    user_id: str,
    duplicate: DuplicateNotice | None,
) -> None:
    """For items without a thread (typed with `/feedback` or in the form): a duplicate link or question to
    the capturer only — an ephemeral message in the channel, or a DM when the bot cannot post there. Shown
    once: the prompt's place is claimed before it is posted. A decision replaces that message."""
    if duplicate is None or not _claim_prompt(db, team_id, duplicate.suggestion_id, channel_id):
        return
    item = _load_item(db, team_id, item_id)
    if item is None:
        return
    text = messaging.command_confirmation_text(item, duplicate)
    blocks = messaging.duplicate_blocks(duplicate)
    try:
        try:
            client.chat_postEphemeral(channel=channel_id, user=user_id, text=text, blocks=blocks)
            return
        except SlackApiError:  # not a channel the bot can post in (e.g. a DM between people): a DM instead
            posted = client.chat_postMessage(channel=user_id, text=text, blocks=blocks, unfurl_links=False)
    except Exception:
        _release_prompt(db, team_id, duplicate.suggestion_id)  # not shown: a retry may show it
        raise
    with db.session() as s:
        duplicates.record_prompt(
            db_session=s,
            team_id=team_id,
            suggestion_id=duplicate.suggestion_id,
            channel_id=posted.get("channel") or user_id,
            ts=posted.get("ts"),
        )


def _claim_prompt(db: Database, team_id: str, suggestion_id: int, channel_id: str) -> bool:
    """Records that the prompt is being shown in `channel_id`; False when it was shown already."""
    with db.session() as s:
        result = s.execute(
            update(DuplicateSuggestion)
            .where(
                DuplicateSuggestion.team_id == team_id,
                DuplicateSuggestion.id == suggestion_id,
                DuplicateSuggestion.prompt_channel_id.is_(None),
            )
            .values(prompt_channel_id=channel_id, prompt_ts=None)
        )
        return bool(getattr(result, "rowcount", 0))


def _release_prompt(db: Database, team_id: str, suggestion_id: int) -> None:
    with db.session() as s:
        s.execute(
            update(DuplicateSuggestion)
            .where(DuplicateSuggestion.team_id == team_id, DuplicateSuggestion.id == suggestion_id)
            .values(prompt_channel_id=None, prompt_ts=None)
        )
