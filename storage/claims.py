"""Claiming due rows exactly once across processes: conditional updates, leases, attempts and backoff.

Every job that does scheduled or queued work (digests, ship notices, SLA notices, metric pulls and alerts,
account briefs, purges, the inbox) claims its rows here, so there is one way to do it and one set of
defaults.

* :func:`claim_row` — the conditional update. ``UPDATE … SET … WHERE <key> AND <column> = :seen …``: only
  the caller whose update matched what it read wins. Works the same on SQLite and Postgres.
* :func:`claim_by_insert` — a claim that is a unique row (a notice, an evaluated point): the insert that
  does not hit the unique constraint wins.
* :class:`Queue` and :func:`claim_due` — a leased work queue (status, attempts, and one time column that is
  "not before" while a row waits and "lease until" while it is claimed). Due rows are claimed with
  ``FOR UPDATE SKIP LOCKED`` on Postgres (one statement pair, concurrent workers take different rows) and
  with a per-row conditional update elsewhere; a row whose lease ran out is taken over, with its attempt
  counted; one past ``max_attempts`` is marked dead instead. :func:`settle` records an outcome only while
  the claim is still held (same status and attempts), so a worker that lost its lease cannot overwrite the
  one that took over.
* :func:`claim_batch` — for queues drained in bulk (the inbox, insight tasks): up to N due rows claimed
  with one ``UPDATE … RETURNING`` in the caller's transaction (``SKIP LOCKED`` candidates on Postgres).
* :func:`backoff` — exponential, capped, with optional jitter.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import ColumnElement, CursorResult, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import InstrumentedAttribute, Session

from storage.db import Database

LEASE = timedelta(minutes=5)  # how long a claim is held before another worker may take it over
MAX_ATTEMPTS = 8  # attempts (claims that reached the work) before a row is given up on
BACKOFF_BASE = timedelta(minutes=1)
BACKOFF_CAP = timedelta(hours=1)


def backoff(
    attempts: int,
    *,
    base: timedelta = BACKOFF_BASE,
    cap: timedelta = BACKOFF_CAP,
    jitter: float = 0.0,
    rng: random.Random | None = None,
) -> timedelta:
    """The wait after the n-th failed attempt: base · 2^(n−1), at most `cap`, plus up to `jitter` of it.

    `jitter` (0–1) spreads retries of many rows that failed together: the wait is drawn from
    [delay, delay · (1 + jitter)], still never above `cap`.
    """
    if not 0.0 <= jitter <= 1.0:
        raise ValueError(f"jitter must be between 0 and 1, not {jitter}")
    delay = min(base * (2 ** max(0, attempts - 1)), cap)
    if jitter:
        delay = min(delay * (1 + (rng or random).uniform(0.0, jitter)), cap)
    return delay


def _matches(column: InstrumentedAttribute[Any], seen: Any) -> ColumnElement[bool]:
    return column.is_(None) if seen is None else column == seen


def claim_row(
    s: Session,
    model: type[Any],
    *,
    where: ColumnElement[bool] | Sequence[ColumnElement[bool]],
    seen: Mapping[InstrumentedAttribute[Any], Any],
    values: Mapping[str, Any],
) -> bool:
    """Sets `values` on the row `where` selects if its `seen` columns still hold what was read; True if won.

    `seen` maps columns to the values read before (None matches NULL). Exactly one of several callers
    that read the same values wins; the others get False and must not do the work.
    """
    conditions = [where] if isinstance(where, ColumnElement) else list(where)
    conditions += [_matches(column, value) for column, value in seen.items()]
    result = s.execute(
        update(model).where(*conditions).values(**values).execution_options(synchronize_session=False)
    )
    return cast(CursorResult[Any], result).rowcount == 1


def claim_by_insert(s: Session, row: Any) -> bool:
    """Inserts `row` (whose unique constraint is the claim); False when another caller already has it."""
    try:
        with s.begin_nested():
            s.add(row)
    except IntegrityError:
        return False
    return True


@dataclass(frozen=True)
class Queue:
    """A table used as a leased work queue: which columns hold the id, status, attempts and due time.

    `due_at` is the earliest next try while a row waits (a status in `waiting`). `lease_until` is the end
    of the lease while it is `claimed`; without it, `due_at` holds the lease's end too (one column).
    """

    model: type[Any]
    id: InstrumentedAttribute[Any]
    status: InstrumentedAttribute[Any]
    attempts: InstrumentedAttribute[Any]
    due_at: InstrumentedAttribute[Any]
    lease_until: InstrumentedAttribute[Any] | None = None
    waiting: tuple[str, ...] = ("pending",)
    claimed: str = "sending"
    dead: str = "dead"

    @property
    def lease_column(self) -> InstrumentedAttribute[Any]:
        """The column that holds the end of a claim's lease."""
        return self.lease_until if self.lease_until is not None else self.due_at

    def is_due(self, now: datetime) -> ColumnElement[bool]:
        """Waiting and due, or claimed with the lease run out."""
        return or_(
            self.status.in_(self.waiting) & (self.due_at <= now),
            (self.status == self.claimed) & (self.lease_column <= now),
        )

    def claim_values(self, attempts: int, now: datetime, lease: timedelta) -> dict[str, Any]:
        """What a claim sets: the claimed status, the attempt counted, the lease started."""
        return {
            self.status.key: self.claimed,
            self.attempts.key: attempts + 1,
            self.lease_column.key: now + lease,
        }


@dataclass(frozen=True)
class Claim:
    """One row this caller holds: `attempts` includes this claim; `taken_over` when a lease had run out."""

    id: Any
    attempts: int
    taken_over: bool = False


@dataclass
class ClaimBatch:
    """What one :func:`claim_due` call got."""

    claims: list[Claim]
    due: int = 0  # rows that were due when read
    lost: int = 0  # due, but another worker claimed them first
    dead: list[Any] | None = None  # ids marked dead (past max_attempts)


def claim_due(
    db: Database,
    queue: Queue,
    *,
    now: datetime,
    lease: timedelta = LEASE,
    limit: int = 50,
    where: Sequence[ColumnElement[bool]] = (),
    max_attempts: int | None = None,
    skip_locked: bool = True,
    also: Mapping[str, Any] | None = None,
    order_by: Sequence[Any] | None = None,
) -> ClaimBatch:
    """Claims up to `limit` due rows (waiting and due, or claimed with the lease run out), each exactly once.

    A claim sets the claimed status, counts the attempt and starts the lease (`due_at = now + lease`).
    `also` adds values to every claim (e.g. which worker holds it); `order_by` replaces (due time, id). With `max_attempts`, a due row that has
    already had that many attempts is marked `queue.dead` instead.
    Postgres with `skip_locked`: ``SELECT … FOR UPDATE SKIP LOCKED`` and the updates in one transaction.
    Otherwise: read, then one conditional update per row on what was read (status, due time, attempts).
    """
    conditions = [queue.is_due(now), *where]
    query = (
        select(queue.id, queue.status, queue.lease_column, queue.due_at, queue.attempts)
        .where(*conditions)
        .order_by(*(order_by if order_by is not None else (queue.due_at, queue.id)))
        .limit(limit)
    )
    batch = ClaimBatch(claims=[], dead=[])
    if skip_locked and db.backend == "postgresql":
        with db.session() as s:
            rows = s.execute(query.with_for_update(skip_locked=True)).all()
            for row_id, status, _lease, _due, attempts in rows:
                batch.due += 1
                _claim_locked(s, queue, batch, row_id, status, attempts, now, lease, max_attempts, also)
        return batch
    with db.read() as s:
        rows = s.execute(query).all()
    for row_id, status, seen_lease, seen_due, attempts in rows:
        batch.due += 1
        with db.session() as s:
            seen_columns = {queue.status: status, queue.attempts: attempts,
                            queue.lease_column if status == queue.claimed else queue.due_at:
                                seen_lease if status == queue.claimed else seen_due}  # fmt: skip
            if max_attempts is not None and attempts >= max_attempts:
                if claim_row(s, queue.model, where=queue.id == row_id, seen=seen_columns,
                             values={queue.status.key: queue.dead}):  # fmt: skip
                    cast(list[Any], batch.dead).append(row_id)
                else:
                    batch.lost += 1
                continue
            values = {**queue.claim_values(attempts, now, lease), **(also or {})}
            if claim_row(s, queue.model, where=queue.id == row_id, seen=seen_columns, values=values):
                batch.claims.append(Claim(row_id, attempts + 1, taken_over=status == queue.claimed))
            else:
                batch.lost += 1
    return batch


def claim_batch(
    s: Session,
    queue: Queue,
    *,
    due: ColumnElement[bool],
    now: datetime,
    lease: timedelta,
    limit: int,
    max_attempts: int,
    returning: Sequence[Any],
    where: Sequence[ColumnElement[bool]] = (),
    also: Mapping[str, Any] | None = None,
    dead_also: Mapping[str, Any] | None = None,
    dead_where: Sequence[ColumnElement[bool]] = (),
    dead_returning: Sequence[Any] = (),
    skip_locked: bool = False,
) -> tuple[list[Any], list[Any]]:
    """Claims up to `limit` due rows in the caller's transaction with one UPDATE … RETURNING; returns the
    claimed rows (`returning` columns) and the rows marked dead (`dead_returning`).

    For queues drained in bulk (the inbox, insight tasks): `due` is the queue's own "may be claimed now"
    (it may say more than `Queue.is_due`, e.g. the inbox's failed rows); `where` narrows the candidates
    (e.g. the inbox's per-thread order). Candidates are read oldest id first — ``FOR UPDATE SKIP LOCKED``
    with `skip_locked` on Postgres, so workers take different rows; SQLite's write transaction is exclusive
    — and the update checks `due` again. One that already had `max_attempts` (and matches `dead_where`) is
    marked `queue.dead` instead. A claim sets the claimed status, counts the attempt in SQL and starts the
    lease.
    """
    candidates = select(queue.id).where(due, *where).order_by(queue.id).limit(limit)
    if skip_locked:
        candidates = candidates.with_for_update(skip_locked=True)
    ids = list(s.scalars(candidates))
    if not ids:
        return [], []
    dead: list[Any] = []
    worn = (
        update(queue.model)
        .where(queue.id.in_(ids), due, queue.attempts >= max_attempts, *dead_where)
        .values({queue.status.key: queue.dead, **(dead_also or {})})
        .execution_options(synchronize_session=False)
    )
    if dead_returning:
        dead = list(s.execute(worn.returning(*dead_returning)).all())
    else:
        s.execute(worn)
    claimed = s.execute(
        update(queue.model)
        .where(queue.id.in_(ids), due)
        .values(
            {
                queue.status.key: queue.claimed,
                queue.attempts.key: queue.attempts + 1,
                queue.lease_column.key: now + lease,
                **(also or {}),
            }
        )
        .returning(*returning)
        .execution_options(synchronize_session=False)
    ).all()
    return list(claimed), dead


def _claim_locked(
    s: Session,
    queue: Queue,
    batch: ClaimBatch,
    row_id: Any,
    status: str,
    attempts: int,
    now: datetime,
    lease: timedelta,
    max_attempts: int | None,
    also: Mapping[str, Any] | None,
) -> None:
    """The row is locked by this transaction: claim it (or mark it dead) unconditionally."""
    if max_attempts is not None and attempts >= max_attempts:
        s.execute(update(queue.model).where(queue.id == row_id).values({queue.status.key: queue.dead}))
        cast(list[Any], batch.dead).append(row_id)
        return
    s.execute(
        update(queue.model)
        .where(queue.id == row_id)
        .values({**queue.claim_values(attempts, now, lease), **(also or {})})
        .execution_options(synchronize_session=False)
    )
    batch.claims.append(Claim(row_id, attempts + 1, taken_over=status == queue.claimed))


def claim_one(
    db: Database, queue: Queue, *, row_id: Any, status: str, seen_at: datetime, attempts: int, now: datetime,
    lease: timedelta = LEASE,
) -> Claim | None:  # fmt: skip
    """Claims one row read as due, if it is still as read (status, `seen_at`, attempts); None if lost.

    `seen_at` is the due time read (the lease's end for a claimed row).
    """
    column = queue.lease_column if status == queue.claimed else queue.due_at
    with db.session() as s:
        won = claim_row(
            s,
            queue.model,
            where=queue.id == row_id,
            seen={queue.status: status, column: seen_at, queue.attempts: attempts},
            values=queue.claim_values(attempts, now, lease),
        )
    return Claim(row_id, attempts + 1, taken_over=status == queue.claimed) if won else None


def settle(db: Database, queue: Queue, claim: Claim, **values: Any) -> bool:
    """Records an outcome on a claimed row if this caller still holds it (status claimed, same attempts)."""
    with db.session() as s:
        return settle_in(s, queue, claim, **values)


def settle_in(s: Session, queue: Queue, claim: Claim, **values: Any) -> bool:
    """:func:`settle` inside the caller's transaction."""
    return claim_row(
        s,
        queue.model,
        where=queue.id == claim.id,
        seen={queue.status: queue.claimed, queue.attempts: claim.attempts},
        values=values,
    )
