"""Feedback service: plain functions over a Session; no Slack payloads here."""

from __future__ import annotations

from collections.abc import Iterator

from sqlalchemy import String, cast, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bot.feedback.schemas import FeedbackCapture, FeedbackDetails, ListQuery
from storage.models import FeedbackItem, FeedbackReply, FeedbackTextVersion, Tag, Visibility
from storage.types import utcnow


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
    item = FeedbackItem(**item_in.model_dump(mode="python"))
    try:
        # Insert first: new messages are the common case; the unique constraints catch the rest.
        with db_session.begin_nested():
            db_session.add(item)
    except IntegrityError:
        # Already captured (another mode, a replay, or a concurrent reaction): that item wins.
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


def update_details(
    *, db_session: Session, item: FeedbackItem, details: FeedbackDetails, changed_by_user_id: str
) -> FeedbackItem:
    """Applies what a person entered in the modal; a changed text keeps the old one in the history."""
    if details.text is not None and details.text != item.text:
        db_session.add(
            FeedbackTextVersion(
                team_id=item.team_id,
                feedback_id=item.id,
                text=item.text,
                reason="edited",
                changed_by_user_id=changed_by_user_id,
            )
        )
        item.text = details.text
    item.account_id = details.account_id
    item.kind = details.kind.value if details.kind else None
    item.importance = details.importance.value if details.importance else None
    item.note = details.note
    item.tags = ensure_tags(db_session=db_session, team_id=item.team_id, names=details.tags)
    db_session.flush()
    return item


def record_slack_edit(
    *, db_session: Session, team_id: str, channel_id: str, message_ts: str, new_text: str
) -> FeedbackItem | None:
    """Follows an edit made in Slack (`message_changed`): new text on the item, old text in the history."""
    item = get_by_message(
        db_session=db_session, team_id=team_id, channel_id=channel_id, message_ts=message_ts
    )
    if item is not None:
        if new_text.strip() and new_text != item.text:
            db_session.add(
                FeedbackTextVersion(
                    team_id=team_id, feedback_id=item.id, text=item.text, reason="message_changed"
                )
            )
            item.text = new_text
        return item
    reply = db_session.scalar(
        select(FeedbackReply)
        .join(FeedbackItem, FeedbackItem.id == FeedbackReply.feedback_id)
        .where(
            FeedbackReply.team_id == team_id,
            FeedbackReply.message_ts == message_ts,
            FeedbackItem.channel_id == channel_id,
        )
    )
    if reply is not None:
        reply.text = new_text
    return None


def mark_deleted(
    *, db_session: Session, team_id: str, channel_id: str, message_ts: str
) -> FeedbackItem | None:
    """Follows a deletion in Slack (`message_deleted`): the item stays, marked deleted."""
    item = get_by_message(
        db_session=db_session, team_id=team_id, channel_id=channel_id, message_ts=message_ts
    )
    if item is not None and item.deleted_at is None:
        item.deleted_at = utcnow()
    return item


def attach_reply(
    *,
    db_session: Session,
    team_id: str,
    channel_id: str,
    thread_ts: str,
    message_ts: str,
    user_id: str | None,
    text: str,
) -> FeedbackItem | None:
    """Adds a thread reply to the conversation of the item captured from the thread's parent, if any."""
    item = get_by_message(db_session=db_session, team_id=team_id, channel_id=channel_id, message_ts=thread_ts)
    if item is None:
        return None
    exists = db_session.scalar(
        select(FeedbackReply.id).where(
            FeedbackReply.team_id == team_id,
            FeedbackReply.feedback_id == item.id,
            FeedbackReply.message_ts == message_ts,
        )
    )
    if exists is None:
        try:
            with db_session.begin_nested():
                db_session.add(
                    FeedbackReply(
                        team_id=team_id,
                        feedback_id=item.id,
                        message_ts=message_ts,
                        user_id=user_id,
                        text=text,
                    )
                )
        except IntegrityError:
            pass  # a concurrent delivery of the same reply won
    return item


def ensure_tags(*, db_session: Session, team_id: str, names: list[str]) -> list[str]:
    """Adds new tags to the workspace's vocabulary; returns the cleaned, de-duplicated names."""
    cleaned = list(dict.fromkeys(n for n in (clean_tag(name) for name in names) if n))
    if not cleaned:
        return []
    known = set(db_session.scalars(select(Tag.name).where(Tag.team_id == team_id, Tag.name.in_(cleaned))))
    for name in cleaned:
        if name not in known:
            try:
                with db_session.begin_nested():
                    db_session.add(Tag(team_id=team_id, name=name))
            except IntegrityError:
                pass
    return cleaned


def clean_tag(name: str) -> str:
    """`  Billing Issues ` → `billing-issues` (64 characters at most)."""
    return "-".join(name.strip().lower().replace("#", "").split())[:64]


def search_tags(*, db_session: Session, team_id: str, query: str, limit: int = 50) -> list[str]:
    """Tag names containing `query`, alphabetical."""
    stmt = select(Tag.name).where(Tag.team_id == team_id)
    if query.strip():
        stmt = stmt.where(Tag.name.contains(clean_tag(query), autoescape=True))
    return list(db_session.scalars(stmt.order_by(Tag.name).limit(limit)))


def private_channels_with_items(*, db_session: Session, team_id: str) -> list[str]:
    """Channels (private or DM) that have items, for the membership check before listing."""
    return list(
        db_session.scalars(
            select(FeedbackItem.channel_id)
            .where(FeedbackItem.team_id == team_id, FeedbackItem.visibility != Visibility.public.value)
            .distinct()
        )
    )


def list_items(
    *,
    db_session: Session,
    team_id: str,
    query: ListQuery,
    visible_private_channels: set[str],
    page: int = 1,
    page_size: int = 10,
) -> tuple[list[FeedbackItem], bool]:
    """One page of items, newest first, that this reader may see; returns (items, has_more)."""
    stmt = select(FeedbackItem).where(
        FeedbackItem.team_id == team_id,
        FeedbackItem.deleted_at.is_(None),
        or_(
            FeedbackItem.visibility == Visibility.public.value,
            FeedbackItem.channel_id.in_(sorted(visible_private_channels)),
        ),
    )
    if query.mine_user_id:
        stmt = stmt.where(
            or_(
                FeedbackItem.captured_by_user_id == query.mine_user_id,
                FeedbackItem.author_user_id == query.mine_user_id,
            )
        )
    if query.account_ids is not None:
        stmt = stmt.where(FeedbackItem.account_id.in_(query.account_ids))
    if query.tag:
        # Tags are a JSON list of cleaned names (no quotes inside), so its text contains "tag" exactly
        # when the list does — the same test on SQLite and Postgres.
        stmt = stmt.where(
            cast(FeedbackItem.tags, String).contains(f'"{clean_tag(query.tag)}"', autoescape=True)
        )
    rows = list(
        db_session.scalars(
            stmt.order_by(FeedbackItem.created_at.desc(), FeedbackItem.id.desc())
            .offset((page - 1) * page_size)
            .limit(page_size + 1)
        ).unique()
    )
    return rows[:page_size], len(rows) > page_size
