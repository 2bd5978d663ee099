"""What runs on every newly captured item: its vector, its theme, and the duplicate check.

Called by every capture path after the item is committed (and after Slack's ack). Each step has its own
transaction and any failure is logged and swallowed: the item is already saved and is confirmed anyway.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from bot.insights import duplicates, themes
from bot.insights import index as similarity_index
from bot.settings import Settings
from storage.db import Database
from storage.models import DuplicateSuggestion, FeedbackItem

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
    """Encodes and stores the item's vector, assigns its theme, checks for a duplicate; never raises.

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
    theme_id, theme_name = _assign_theme(db, index, team_id=team_id, item_id=item_id, vector=vector)
    duplicate = _check_duplicate(
        db, index, team_id=team_id, item_id=item_id, vector=vector, interactive=interactive
    )
    return CaptureInsights(theme_id=theme_id, theme_name=theme_name, duplicate=duplicate)


def _assign_theme(
    db: Database, index: similarity_index.TeamIndex, *, team_id: str, item_id: int, vector: np.ndarray
) -> tuple[int | None, str | None]:
    try:
        with db.session() as s:
            item = s.get(FeedbackItem, item_id)
            if item is None:
                return None, None
            theme = themes.assign_item(s, index=index, item=item, vector=vector)
            return (theme.id, theme.name) if theme is not None else (None, None)
    except Exception:
        logger.exception("could not assign a theme to feedback #%s (team %s)", item_id, team_id)
        return None, None


def _check_duplicate(
    db: Database,
    index: similarity_index.TeamIndex,
    *,
    team_id: str,
    item_id: int,
    vector: np.ndarray,
    interactive: bool,
) -> DuplicateNotice | None:
    try:
        with db.session() as s:
            item = s.get(FeedbackItem, item_id)
            if item is None:
                return None
            suggestion = duplicates.suggest(
                db_session=s, index=index, item=item, vector=vector, interactive=interactive
            )
            if suggestion is None:
                return None
            candidate = s.get(FeedbackItem, suggestion.candidate_id)
            return notice_for(suggestion, candidate) if candidate is not None else None
    except Exception:
        logger.exception("could not check feedback #%s (team %s) for duplicates", item_id, team_id)
        return None
