"""Channel monitoring: which channels an admin has opted in."""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from storage.models import WatchedChannel


def is_watched(*, db_session: Session, team_id: str, channel_id: str) -> bool:
    """True when messages in this channel become feedback."""
    return db_session.get(WatchedChannel, (team_id, channel_id)) is not None


def watch(*, db_session: Session, team_id: str, channel_id: str, user_id: str) -> bool:
    """Opts a channel in; False when it already was."""
    if is_watched(db_session=db_session, team_id=team_id, channel_id=channel_id):
        return False
    try:
        with db_session.begin_nested():
            db_session.add(WatchedChannel(team_id=team_id, channel_id=channel_id, added_by_user_id=user_id))
    except IntegrityError:
        return False
    return True


def unwatch(*, db_session: Session, team_id: str, channel_id: str) -> bool:
    """Opts a channel out; False when it was not watched."""
    result = db_session.execute(
        delete(WatchedChannel).where(
            WatchedChannel.team_id == team_id, WatchedChannel.channel_id == channel_id
        )
    )
    return bool(getattr(result, "rowcount", 0))


def watched_channels(*, db_session: Session, team_id: str) -> list[str]:
    """Channel ids being watched, oldest first."""
    return list(
        db_session.scalars(
            select(WatchedChannel.channel_id)
            .where(WatchedChannel.team_id == team_id)
            .order_by(WatchedChannel.created_at)
        )
    )
