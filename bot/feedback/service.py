"""Feedback service: plain functions over a Session; no Slack payloads here."""

from __future__ import annotations

from collections.abc import Iterator

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bot.feedback.schemas import FeedbackCapture
from storage.models import FeedbackItem


def get(*, db_session: Session, team_id: str, feedback_id: int) -> FeedbackItem | None:
    """Gets a feedback item by its id, within one workspace."""
    return db_session.scalar(
        select(FeedbackItem).where(FeedbackItem.team_id == team_id, FeedbackItem.id == feedback_id)
    )


def get_by_message(
    *, db_session: Session, team_id: str, channel_id: str, message_ts: str
) -> FeedbackItem | None:
    """Gets the feedback item captured from one Slack message, if any."""
    return db_session.scalar(
        select(FeedbackItem).where(
            FeedbackItem.team_id == team_id,
            FeedbackItem.channel_id == channel_id,
            FeedbackItem.message_ts == message_ts,
        )
    )


def _find_existing(*, db_session: Session, item_in: FeedbackCapture) -> FeedbackItem | None:
    """The item this capture would duplicate: same message, or same Slack delivery."""
    if item_in.message_ts is not None:
        return get_by_message(
            db_session=db_session,
            team_id=item_in.team_id,
            channel_id=item_in.channel_id,
            message_ts=item_in.message_ts,
        )
    if item_in.delivery_id is not None:
        return db_session.scalar(
            select(FeedbackItem).where(
                FeedbackItem.team_id == item_in.team_id, FeedbackItem.delivery_id == item_in.delivery_id
            )
        )
    return None


def capture(*, db_session: Session, item_in: FeedbackCapture) -> tuple[FeedbackItem, bool]:
    """Stores a feedback item; returns (item, created). A message already captured returns the existing item."""
    existing = _find_existing(db_session=db_session, item_in=item_in)
    if existing is not None:
        return existing, False
    item = FeedbackItem(**item_in.model_dump(mode="python"))
    try:
        with db_session.begin_nested():
            db_session.add(item)
    except IntegrityError:
        # Lost a race with a concurrent capture of the same message (two reactions at once).
        existing = _find_existing(db_session=db_session, item_in=item_in)
        if existing is None:
            raise
        return existing, False
    return item, True


def iter_items(
    *, db_session: Session, team_id: str | None = None, batch: int = 500
) -> Iterator[FeedbackItem]:
    """All feedback items in id order (one workspace when team_id is given), streamed in batches."""
    last_id = 0
    while True:
        query = select(FeedbackItem).where(FeedbackItem.id > last_id).order_by(FeedbackItem.id).limit(batch)
        if team_id is not None:
            query = query.where(FeedbackItem.team_id == team_id)
        rows = list(db_session.scalars(query))
        if not rows:
            return
        yield from rows
        last_id = rows[-1].id
