"""Retention: what is older than a workspace's retention is deleted by the worker, in batches.

Deleted when older than `Workspace.retention_days` (by when it was created or received):
- feedback items, with their replies, text history, vectors, duplicate suggestions and ship notices;
- requests that are closed (done or declined), with their events and SLA notices — open work is kept
  until it is closed;
- delivered digests and other delivered messages in the outboxes (they quote feedback) and handled Slack payloads in the inbox.
Kept: metric points and alert evaluations (aggregate numbers, not what a person wrote), accounts,
themes, settings. Independently of any setting, handled inbox payloads (raw Slack bodies with message
text) are deleted after INBOX_KEEP; the inbox only needs them to recognise Slack's retries.

Two workers running this at once is harmless: each row is deleted once, each run records what it deleted.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import ColumnElement, CursorResult, Table, delete, select
from sqlalchemy.orm import Session

from bot import workspaces
from bot.security.purge import delete_in_batches
from bot.security.records import BATCH, record
from storage.db import Database
from storage.models import (
    Base,
    DigestOutbox,
    FeedbackItem,
    InboxEvent,
    InboxStatus,
    Request,
    RequestStatus,
    SlackOutbox,
    Workspace,
)
from storage.types import utcnow

logger = logging.getLogger("prodops.security")

MIN_DAYS = 30
MAX_DAYS = 3650
INBOX_KEEP = timedelta(days=30)
FINISHED_INBOX = (InboxStatus.done.value, InboxStatus.ignored.value, InboxStatus.dead.value)
CLOSED_REQUESTS = (RequestStatus.done.value, RequestStatus.declined.value)
DELIVERED_DIGESTS = ("sent", "skipped", "failed")
RETENTION = re.compile(r"^(\d{1,6})\s*d(ays?)?$")


class InvalidRetention(ValueError):
    """A retention setting that is not `<N>d` within bounds, or `off`; the message says what to type."""


def parse_retention(value: str) -> int | None:
    """`365d` → 365, `off` → None; anything else raises InvalidRetention."""
    text = value.strip().lower()
    if text in ("off", "none", "forever"):
        return None
    match = RETENTION.match(text)
    if match is None:
        raise InvalidRetention(
            f"“{value}” is not a retention. Give a number of days, e.g. `365d`, or `off` to keep everything."
        )
    days = int(match.group(1))
    if not MIN_DAYS <= days <= MAX_DAYS:
        raise InvalidRetention(
            f"Retention must be between {MIN_DAYS}d and {MAX_DAYS}d (10 years); {days}d is out of range. "
            "Use `off` to keep everything."
        )
    return days


def set_retention(*, db_session: Session, team_id: str, days: int | None) -> None:
    """Sets (or, with None, turns off) a workspace's retention."""
    workspaces.get_or_create(db_session=db_session, team_id=team_id).retention_days = days


def apply_retention(
    db: Database, team_id: str, days: int, *, now: datetime | None = None, batch: int = BATCH
) -> dict[str, int]:
    """Deletes what the workspace keeps longer than `days` (strictly older than now − days); returns counts.

    Records a DataRightsRecord(action="retention") when anything was deleted.
    """
    now = now or utcnow()
    cutoff = now - timedelta(days=days)
    counts: dict[str, int] = {}
    _delete_owned(
        db,
        _table(FeedbackItem),
        (FeedbackItem.team_id == team_id) & (FeedbackItem.created_at < cutoff),
        counts,
        batch,
    )
    _delete_owned(
        db,
        _table(Request),
        (Request.team_id == team_id) & (Request.created_at < cutoff) & Request.status.in_(CLOSED_REQUESTS),
        counts,
        batch,
    )
    _delete_owned(
        db,
        _table(DigestOutbox),
        (DigestOutbox.team_id == team_id)
        & (DigestOutbox.created_at < cutoff)
        & DigestOutbox.status.in_(DELIVERED_DIGESTS),
        counts,
        batch,
    )
    _delete_owned(
        db,
        _table(SlackOutbox),
        (SlackOutbox.team_id == team_id)
        & (SlackOutbox.created_at < cutoff)
        & SlackOutbox.status.in_(DELIVERED_DIGESTS),
        counts,
        batch,
    )
    inbox = delete_in_batches(
        db.inbox,
        _table(InboxEvent),
        (InboxEvent.team_id == team_id)
        & (InboxEvent.received_at < cutoff)
        & InboxEvent.status.in_(FINISHED_INBOX),
        batch=batch,
    )
    if inbox:
        counts[InboxEvent.__tablename__] = inbox
    if counts:
        with db.session() as s:
            record(
                db_session=s,
                team_id=team_id,
                action="retention",
                counts={"retention_days": days, "before": cutoff.isoformat(), "deleted": dict(counts)},
                requested_by="worker",
            )
        logger.info("retention %dd in %s: deleted %s", days, team_id, counts)
    return counts


def prune_inbox(db: Database, *, now: datetime | None = None, batch: int = BATCH) -> int:
    """Deletes handled inbox payloads older than INBOX_KEEP, in every workspace."""
    cutoff = (now or utcnow()) - INBOX_KEEP
    return delete_in_batches(
        db.inbox,
        _table(InboxEvent),
        (InboxEvent.received_at < cutoff) & InboxEvent.status.in_(FINISHED_INBOX),
        batch=batch,
    )


def run_retention_tick(
    db: Database, *, now: datetime | None = None, batch: int = BATCH
) -> dict[str, dict[str, int]]:
    """The worker's job: prune the inbox, then apply each workspace's retention; returns counts by team."""
    now = now or utcnow()
    pruned = prune_inbox(db, now=now, batch=batch)
    if pruned:
        logger.info("inbox: deleted %d handled payloads older than %d days", pruned, INBOX_KEEP.days)
    with db.read() as s:
        settings = s.execute(
            select(Workspace.team_id, Workspace.retention_days).where(Workspace.retention_days.is_not(None))
        ).all()
    done: dict[str, dict[str, int]] = {}
    for team_id, days in settings:
        if days is None:
            continue
        counts = apply_retention(db, team_id, days, now=now, batch=batch)
        if counts:
            done[team_id] = counts
    return done


def _table(model: type[Base]) -> Table:
    return cast(Table, model.__table__)


def _owned_children(table: Table) -> Iterator[tuple[Table, Any]]:
    """Tables whose rows belong to a row of `table` (a foreign key with ON DELETE CASCADE)."""
    for child in Base.metadata.sorted_tables:
        if child is table:
            continue
        for fk in child.foreign_keys:
            if fk.column.table is table and fk.ondelete == "CASCADE":
                yield child, fk.parent


def _delete_owned(
    db: Database, table: Table, where: ColumnElement[bool], counts: dict[str, int], batch: int
) -> None:
    """Deletes matching rows of `table` and the rows they own, `batch` parents per transaction."""
    (pk,) = table.primary_key.columns
    while True:
        with db.session() as s:
            ids = list(s.scalars(select(pk).where(where).limit(batch)))
            if not ids:
                return
            _delete_tree(s, table, pk.in_(ids), counts)


def _delete_tree(
    session: Session, table: Table, condition: ColumnElement[bool], counts: dict[str, int]
) -> None:
    """Deletes what rows matching `condition` own (children first), then the rows."""
    for child, fk_column in _owned_children(table):
        parents = select(*table.primary_key.columns).where(condition)
        _delete_tree(session, child, fk_column.in_(parents), counts)
    deleted = cast(CursorResult[Any], session.execute(delete(table).where(condition))).rowcount
    if deleted:
        counts[table.name] = counts.get(table.name, 0) + deleted
