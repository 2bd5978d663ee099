"""Purging a workspace: every row it has, in every table, in batches; the worker does it after the grace period.

The app's uninstall handler sets `Workspace.uninstalled_at` and `purge_after` (and a re-install clears
them). The worker claims a due workspace with a conditional update that moves `purge_after` forward by
a lease, so two workers never purge the same workspace at once and a worker that died mid-purge is
replaced once the lease has passed. What is kept: one `DataRightsRecord(action="purge")` with the counts
(and earlier data-rights records, which hold neither content nor raw ids).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from sqlalchemy import ColumnElement, CursorResult, Table, delete, select, tuple_
from sqlalchemy.orm import Session

from bot.security.records import BATCH, record, team_tables
from storage import claims
from storage.db import Database
from storage.models import InboxEvent, Workspace
from storage.types import utcnow

logger = logging.getLogger("prodops.security")

# A claimed purge that has not finished after this long is taken over by another worker (a purge of a big
# workspace takes longer than the default claims.LEASE).
PURGE_LEASE = claims.LEASE * 6


class PurgeInterrupted(RuntimeError):
    """The workspace was re-installed while it was being purged; what was left stays."""


@dataclass
class PurgeResult:
    """What a purge deleted, per table."""

    team_id: str
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def delete_in_batches(
    db: Database,
    table: Table,
    where: ColumnElement[bool],
    *,
    batch: int = BATCH,
    still_wanted: Callable[[Session], bool] | None = None,
) -> int:
    """Deletes the rows of `table` matching `where`, `batch` rows per transaction; returns how many.

    `still_wanted` is asked before every batch; False stops with PurgeInterrupted.
    """
    pk = list(table.primary_key.columns)
    total = 0
    while True:
        with db.session() as s:
            keys = s.execute(select(*pk).where(where).limit(batch)).all()
            if not keys:
                return total
            if still_wanted is not None and not still_wanted(s):
                raise PurgeInterrupted(f"stopped purging {table.name}: the workspace is installed again")
            if len(pk) == 1:
                condition: ColumnElement[bool] = pk[0].in_([k[0] for k in keys])
            else:
                condition = tuple_(*pk).in_([tuple(k) for k in keys])
            total += cast(CursorResult[Any], s.execute(delete(table).where(condition))).rowcount


def purge_team(
    db: Database,
    team_id: str,
    *,
    requested_by: str | None = None,
    batch: int = BATCH,
    only_if_uninstalled: bool = False,
) -> PurgeResult:
    """Deletes every row of the workspace in every table (FK-safe order, in batches) and records it.

    With `only_if_uninstalled` (the worker) it stops as soon as the workspace is installed again.
    """
    still_wanted = _still_uninstalled(team_id) if only_if_uninstalled else None
    result = PurgeResult(team_id)
    for table in team_tables():
        where = table.c.team_id == team_id
        if only_if_uninstalled and table.name == Workspace.__tablename__:
            where = where & table.c.uninstalled_at.is_not(None)
        target, wanted = db, still_wanted
        if table.name == InboxEvent.__tablename__ and db.inbox is not db:
            # The inbox has a database of its own (a SQLite file); whether to go on is asked of the main one.
            target = db.inbox
            wanted = None if still_wanted is None else _asked_of(db, still_wanted)
        deleted = delete_in_batches(target, table, where, batch=batch, still_wanted=wanted)
        if deleted:
            result.counts[table.name] = deleted
    with db.session() as s:
        record(
            db_session=s,
            team_id=team_id,
            action="purge",
            counts={"deleted": dict(result.counts)},
            requested_by=requested_by,
        )
    logger.info("purged workspace %s: %d rows", team_id, result.total)
    return result


def _asked_of(db: Database, check: Callable[[Session], bool]) -> Callable[[Session], bool]:
    """`check`, run in a session of `db` whatever session it is handed."""

    def asked(_session: Session) -> bool:
        with db.read() as s:
            return check(s)

    return asked


def _still_uninstalled(team_id: str) -> Callable[[Session], bool]:
    def check(session: Session) -> bool:
        uninstalled = session.execute(
            select(Workspace.uninstalled_at).where(Workspace.team_id == team_id)
        ).first()
        return uninstalled is not None and uninstalled[0] is not None

    return check


def claim_due_purges(db: Database, *, now: datetime | None = None) -> list[str]:
    """Claims workspaces whose grace period has passed; each is claimed by exactly one caller."""
    now = now or utcnow()
    with db.read() as s:
        due = s.execute(
            select(Workspace.team_id, Workspace.purge_after).where(
                Workspace.uninstalled_at.is_not(None),
                Workspace.purge_after.is_not(None),
                Workspace.purge_after <= now,
            )
        ).all()
    claimed: list[str] = []
    for team_id, seen in due:
        with db.session() as s:
            won = claims.claim_row(
                s,
                Workspace,
                where=[Workspace.team_id == team_id, Workspace.uninstalled_at.is_not(None)],
                seen={Workspace.purge_after: seen},
                values={"purge_after": now + PURGE_LEASE},
            )
        if won:
            claimed.append(team_id)
    return claimed


def run_purge_tick(db: Database, *, now: datetime | None = None, batch: int = BATCH) -> list[PurgeResult]:
    """The worker's job: purge every uninstalled workspace whose grace period has passed."""
    done: list[PurgeResult] = []
    for team_id in claim_due_purges(db, now=now):
        try:
            done.append(purge_team(db, team_id, requested_by="worker", batch=batch, only_if_uninstalled=True))
        except PurgeInterrupted as exc:
            logger.info("workspace %s: %s", team_id, exc)
    return done
