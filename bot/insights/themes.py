"""Themes: named groups of feedback items. Assignment at capture, and the decisions people make about them.

Rules every function keeps: all reads and writes are scoped to one workspace (`team_id`); a name or a
placement set by a person (`name_source` / `theme_source` "human") is never changed by the clustering job;
every change of membership or status bumps the workspace's insights version so each process's index reloads.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
from sqlalchemy import and_, case, func, or_, select, update
from sqlalchemy.orm import Session

from bot.insights import index as similarity_index
from bot.insights.index import TeamIndex
from storage.models import FeedbackItem, Theme, ThemeStatus, Visibility
from storage.types import utcnow

HUMAN = "human"
AUTO = "auto"
JOB = "job"
MAX_NAME = 80
MAX_DESCRIPTION = 2000
# Themes that hold items and can be chosen as a target (merged and dismissed ones are history).
OPEN_STATUSES = (ThemeStatus.active.value, ThemeStatus.proposed.value)


class ThemeError(Exception):
    """A theme decision that cannot be made as asked; the message says what to do instead."""


class ThemeNotFound(ThemeError):
    """No theme of the workspace matches the reference."""


@dataclass(frozen=True)
class ThemeSummary:
    """A theme with its live item counts (for lists and exports)."""

    id: int
    name: str
    description: str | None
    status: str
    keywords: list[str]
    name_source: str
    merged_into_id: int | None
    items: int
    this_week: int
    created_at: datetime


@dataclass(frozen=True)
class ThemeOverview:
    """What `/feedback themes` and `prodops themes list` show."""

    active: list[ThemeSummary]
    proposed: list[ThemeSummary]
    unsorted: int


# -- assignment at capture ---------------------------------------------------------------------------------


def assign_item(
    session: Session, *, index: TeamIndex, item: FeedbackItem, vector: np.ndarray
) -> Theme | None:
    """Puts a new item in its nearest active theme when the similarity clears the threshold; else unsorted.

    An item a person placed (theme_source "human") keeps its place. Returns the theme, or None (unsorted).
    """
    if item.theme_source == HUMAN:
        return item.theme
    nearest = index.nearest_theme(vector)
    if nearest is None or nearest.score < index.encoder.theme_threshold:
        return None
    theme = session.get(Theme, nearest.theme_id)
    # The index may lag a decision made a moment ago in another process: check the row itself.
    if theme is None or theme.team_id != item.team_id or theme.status != ThemeStatus.active.value:
        return None
    item.theme_id = theme.id
    item.theme_source = AUTO
    item.theme_similarity = float(nearest.score)
    session.flush()
    similarity_index.bump_version(session, item.team_id)
    return theme


# -- looking themes up -------------------------------------------------------------------------------------


def get(session: Session, *, team_id: str, theme_id: int) -> Theme | None:
    """A theme by id, within one workspace."""
    return session.scalar(select(Theme).where(Theme.team_id == team_id, Theme.id == theme_id))


def find(session: Session, *, team_id: str, ref: str) -> Theme:
    """A theme by `12`, `#12` or its name (any case); raises ThemeNotFound naming close names."""
    ref = ref.strip()
    if match := re.fullmatch(r"#?(\d+)", ref):
        theme = get(session, team_id=team_id, theme_id=int(match.group(1)))
        if theme is not None:
            return theme
    themes = list(session.scalars(select(Theme).where(Theme.team_id == team_id).order_by(Theme.id)))
    named = [t for t in themes if _key(t.name) == _key(ref)]
    if named:
        # A name reused after a merge or dismissal means the open theme.
        return next((t for t in named if t.status in OPEN_STATUSES), named[-1])
    names = {_key(t.name): t.name for t in themes if t.status in OPEN_STATUSES}
    close = [names[k] for k in difflib.get_close_matches(_key(ref), list(names), n=3)]
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ThemeNotFound(f"No theme is called {ref!r} (or has that number).{hint}")


def _key(name: str) -> str:
    return " ".join(name.lower().split())


def _clean_name(name: str) -> str:
    cleaned = " ".join(name.split())
    if not cleaned:
        raise ThemeError("A theme needs a name.")
    if len(cleaned) > MAX_NAME:
        raise ThemeError(f"That name is {len(cleaned)} characters; keep it to {MAX_NAME}.")
    return cleaned


def _check_name_free(session: Session, *, team_id: str, name: str, except_id: int | None = None) -> None:
    clash = session.scalar(
        select(Theme.id).where(
            Theme.team_id == team_id,
            Theme.status.in_(OPEN_STATUSES),
            func.lower(Theme.name) == name.lower(),
            Theme.id != (except_id or 0),
        )
    )
    if clash is not None:
        raise ThemeError(f"Theme #{clash} is already called {name!r}; pick another name, or merge the two.")


def _open_theme(session: Session, *, team_id: str, theme_id: int) -> Theme:
    theme = get(session, team_id=team_id, theme_id=theme_id)
    if theme is None:
        raise ThemeNotFound(f"Theme #{theme_id} does not exist in this workspace.")
    if theme.status not in OPEN_STATUSES:
        where = f" into #{theme.merged_into_id}" if theme.merged_into_id else ""
        raise ThemeError(f"Theme #{theme.id} “{theme.name}” was {theme.status}{where}; it cannot be changed.")
    return theme


# -- decisions by people -----------------------------------------------------------------------------------


def create(
    session: Session, *, team_id: str, name: str, user_id: str | None, description: str | None = None
) -> Theme:
    """A theme a person made: active at once, its name theirs."""
    name = _clean_name(name)
    _check_name_free(session, team_id=team_id, name=name)
    theme = Theme(
        team_id=team_id,
        name=name,
        description=(description or "").strip()[:MAX_DESCRIPTION] or None,
        status=ThemeStatus.active.value,
        keywords=[],
        name_source=HUMAN,
        created_by_user_id=user_id,
    )
    session.add(theme)
    session.flush()
    similarity_index.bump_version(session, team_id)
    return theme


def rename(session: Session, *, team_id: str, theme_id: int, name: str) -> Theme:
    """A person's name for the theme; the clustering job never changes it again."""
    theme = _open_theme(session, team_id=team_id, theme_id=theme_id)
    name = _clean_name(name)
    _check_name_free(session, team_id=team_id, name=name, except_id=theme.id)
    theme.name = name
    theme.name_source = HUMAN
    session.flush()
    similarity_index.bump_version(session, team_id)
    return theme


def describe(session: Session, *, team_id: str, theme_id: int, description: str) -> Theme:
    """A person's description. Like a rename, it makes the theme's label theirs (a proposal is then kept)."""
    theme = _open_theme(session, team_id=team_id, theme_id=theme_id)
    theme.description = description.strip()[:MAX_DESCRIPTION] or None
    theme.name_source = HUMAN
    session.flush()
    return theme


def accept(session: Session, *, team_id: str, theme_id: int) -> Theme:
    """A proposal becomes an active theme: new items are assigned to it from now on."""
    theme = _open_theme(session, team_id=team_id, theme_id=theme_id)
    if theme.status == ThemeStatus.active.value:
        return theme
    theme.status = ThemeStatus.active.value
    session.flush()
    similarity_index.bump_version(session, team_id)
    return theme


def dismiss(session: Session, *, team_id: str, theme_id: int) -> Theme:
    """Turns a proposal down. Its items stay with it as the record, so the job never proposes them again."""
    theme = _open_theme(session, team_id=team_id, theme_id=theme_id)
    if theme.status != ThemeStatus.proposed.value:
        raise ThemeError(
            f"Theme #{theme.id} “{theme.name}” is active; only proposals can be dismissed. "
            "Merge it into another theme instead."
        )
    theme.status = ThemeStatus.dismissed.value
    session.flush()
    similarity_index.bump_version(session, team_id)
    return theme


def merge(session: Session, *, team_id: str, source_id: int, target_id: int) -> Theme:
    """Moves every item of `source` into `target` and marks `source` merged into it; returns the target."""
    if source_id == target_id:
        raise ThemeError("A theme cannot be merged into itself; pick another target.")
    source = _open_theme(session, team_id=team_id, theme_id=source_id)
    target = _open_theme(session, team_id=team_id, theme_id=target_id)
    session.execute(
        update(FeedbackItem)
        .where(FeedbackItem.team_id == team_id, FeedbackItem.theme_id == source.id)
        .values(theme_id=target.id)
        .execution_options(synchronize_session=False)
    )
    # Themes merged into the source earlier now point at the final target.
    session.execute(
        update(Theme)
        .where(Theme.team_id == team_id, Theme.merged_into_id == source.id)
        .values(merged_into_id=target.id)
        .execution_options(synchronize_session=False)
    )
    source.status = ThemeStatus.merged.value
    source.merged_into_id = target.id
    target.status = ThemeStatus.active.value  # a person merging into a proposal has accepted it
    session.flush()
    session.expire_all()
    similarity_index.bump_version(session, team_id)
    return target


def move_items(
    session: Session, *, team_id: str, item_ids: Sequence[int], target_id: int | None
) -> list[FeedbackItem]:
    """A person places items in a theme (or, `target_id` None, leaves them unsorted); the job never moves
    them again."""
    if not item_ids:
        raise ThemeError("Pick at least one item to move.")
    if target_id is not None:
        _open_theme(session, team_id=team_id, theme_id=target_id)
    items = list(
        session.scalars(
            select(FeedbackItem).where(FeedbackItem.team_id == team_id, FeedbackItem.id.in_(list(item_ids)))
        ).unique()
    )
    missing = sorted(set(item_ids) - {i.id for i in items})
    if missing:
        raise ThemeError(f"No feedback item #{', #'.join(map(str, missing))} in this workspace.")
    for item in items:
        item.theme_id = target_id
        item.theme_source = HUMAN
        item.theme_similarity = None
    session.flush()
    session.expire_all()
    similarity_index.bump_version(session, team_id)
    return items


def split(
    session: Session, *, team_id: str, theme_id: int, item_ids: Sequence[int], name: str, user_id: str | None
) -> Theme:
    """Moves chosen items of a theme into a new theme named by a person; returns the new theme."""
    theme = _open_theme(session, team_id=team_id, theme_id=theme_id)
    if not item_ids:
        raise ThemeError("Pick the items that go to the new theme.")
    members = set(
        session.scalars(
            select(FeedbackItem.id).where(
                FeedbackItem.team_id == team_id,
                FeedbackItem.theme_id == theme.id,
                FeedbackItem.id.in_(item_ids),
            )
        )
    )
    strangers = sorted(set(item_ids) - members)
    if strangers:
        raise ThemeError(
            f"Item #{', #'.join(map(str, strangers))} is not in theme #{theme.id} “{theme.name}”."
        )
    new = create(session, team_id=team_id, name=name, user_id=user_id)
    move_items(session, team_id=team_id, item_ids=list(item_ids), target_id=new.id)
    return new


# -- reading -----------------------------------------------------------------------------------------------


def _live(team_id: str) -> list[object]:
    return [FeedbackItem.team_id == team_id, FeedbackItem.deleted_at.is_(None)]


def summaries(
    session: Session, *, team_id: str, statuses: Sequence[str] = OPEN_STATUSES, now: datetime | None = None
) -> list[ThemeSummary]:
    """Themes of the given statuses with their live item counts (total and last 7 days), biggest first."""
    week_ago = (now or utcnow()) - timedelta(days=7)
    counts = (
        select(
            FeedbackItem.theme_id.label("theme_id"),
            func.count().label("item_count"),
            func.sum(case((FeedbackItem.created_at >= week_ago, 1), else_=0)).label("this_week"),
        )
        .where(*_live(team_id), FeedbackItem.theme_id.is_not(None))  # type: ignore[arg-type]
        .group_by(FeedbackItem.theme_id)
        .subquery()
    )
    rows = session.execute(
        select(Theme, counts.c.item_count, counts.c.this_week)
        .outerjoin(counts, counts.c.theme_id == Theme.id)
        .where(Theme.team_id == team_id, Theme.status.in_(list(statuses)))
    ).all()
    result = [
        ThemeSummary(
            id=t.id,
            name=t.name,
            description=t.description,
            status=t.status,
            keywords=list(t.keywords or []),
            name_source=t.name_source,
            merged_into_id=t.merged_into_id,
            items=int(items or 0),
            this_week=int(week or 0),
            created_at=t.created_at,
        )
        for t, items, week in rows
    ]
    return sorted(result, key=lambda s: (-s.items, s.id))


def unsorted_count(session: Session, *, team_id: str) -> int:
    """Live items in no active theme and no proposal."""
    in_open = select(Theme.id).where(Theme.team_id == team_id, Theme.status.in_(OPEN_STATUSES))
    return int(
        session.scalar(
            select(func.count())
            .select_from(FeedbackItem)
            .where(
                *_live(team_id),  # type: ignore[arg-type]
                or_(FeedbackItem.theme_id.is_(None), FeedbackItem.theme_id.not_in(in_open)),
            )
        )
        or 0
    )


def overview(session: Session, *, team_id: str) -> ThemeOverview:
    """Active themes, proposals and the unsorted count."""
    all_open = summaries(session, team_id=team_id)
    return ThemeOverview(
        active=[t for t in all_open if t.status == ThemeStatus.active.value],
        proposed=[t for t in all_open if t.status == ThemeStatus.proposed.value],
        unsorted=unsorted_count(session, team_id=team_id),
    )


def latest_items(
    session: Session, *, team_id: str, theme_id: int | None, channel_id: str | None, limit: int = 10
) -> list[FeedbackItem]:
    """A theme's newest live items that may be shown in `channel_id`: public ones, or ones from there.

    `channel_id` None (the command line) shows every item.
    """
    stmt = select(FeedbackItem).where(*_live(team_id))  # type: ignore[arg-type]
    stmt = stmt.where(
        FeedbackItem.theme_id == theme_id if theme_id is not None else FeedbackItem.theme_id.is_(None)
    )
    if channel_id is not None:
        stmt = stmt.where(
            or_(FeedbackItem.visibility == Visibility.public.value, FeedbackItem.channel_id == channel_id)
        )
    return list(
        session.scalars(
            stmt.order_by(FeedbackItem.created_at.desc(), FeedbackItem.id.desc()).limit(limit)
        ).unique()
    )


def member_ids(session: Session, *, team_id: str, theme_id: int) -> set[int]:
    """Ids of a theme's live items."""
    return set(
        session.scalars(select(FeedbackItem.id).where(*_live(team_id), FeedbackItem.theme_id == theme_id))  # type: ignore[arg-type]
    )


def human_placed_in(session: Session, *, team_id: str, theme_ids: Sequence[int]) -> set[int]:
    """Which of these themes hold at least one item a person placed."""
    if not theme_ids:
        return set()
    return set(
        session.scalars(
            select(FeedbackItem.theme_id)
            .where(
                and_(
                    FeedbackItem.team_id == team_id,
                    FeedbackItem.theme_id.in_(list(theme_ids)),
                    FeedbackItem.theme_source == HUMAN,
                )
            )
            .distinct()
        )
    )


def hidden_count(session: Session, *, team_id: str, theme_id: int, channel_id: str | None) -> int:
    """How many of a theme's live items may not be shown in `channel_id` (private, from elsewhere)."""
    if channel_id is None:
        return 0
    return int(
        session.scalar(
            select(func.count())
            .select_from(FeedbackItem)
            .where(
                *_live(team_id),  # type: ignore[arg-type]
                FeedbackItem.theme_id == theme_id,
                FeedbackItem.visibility != Visibility.public.value,
                FeedbackItem.channel_id != channel_id,
            )
        )
        or 0
    )
