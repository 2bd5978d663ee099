"""Insights in batches: a capture queues a task with its item; a worker encodes due tasks per workspace in one
batch, assigns themes, checks duplicates and shows the outcome where the capture was confirmed.

A task is claimed exactly once across processes (conditional UPDATE; `FOR UPDATE SKIP LOCKED` on Postgres)
with a lease; a worker that dies leaves it to be taken over when the lease runs out. Every step can run
again (vectors are upserted, a placed item keeps its theme, `duplicates.suggest` returns what it decided,
a private prompt is claimed before it is posted), so a retried task never posts twice.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

import numpy as np
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from sqlalchemy import CursorResult, and_, func, or_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from bot.insights import capture_hook
from bot.insights import index as similarity_index
from bot.settings import Settings
from bot.slack_client import for_team
from storage import claims
from storage.db import Database
from storage.models import FeedbackItem, InsightTask
from storage.types import utcnow

logger = logging.getLogger("prodops.insights.batch")

NOTIFY_CHANNEL = "prodops_work"  # a worker LISTENing here wakes as soon as a capture commits
LEASE = timedelta(minutes=2)  # a claimed task not finished by then is taken over (its worker died)
MAX_ATTEMPTS = 5
# A failed task waits 2 s, 4 s, 8 s … (at most 5 minutes) before its next attempt (`storage.claims.backoff`).
BACKOFF_BASE, BACKOFF_CAP = timedelta(seconds=2), timedelta(minutes=5)
# A thread task waits this long for its confirmation's ts (set just after chat.postMessage returns); then its
# insights run anyway, and the confirmation is updated only if the ts arrives before the task finishes.
THREAD_WAIT = timedelta(seconds=5)
# Slack refusals a retry cannot fix: the insights are saved, the confirmation just stays as it was.
UNSHOWABLE_ERRORS = {
    "channel_not_found",
    "not_in_channel",
    "is_archived",
    "message_not_found",
    "cant_update_message",
    "edit_window_closed",
    "user_not_found",
    "user_not_in_channel",
    "invalid_auth",
    "account_inactive",
    "token_revoked",
    "missing_scope",
    "restricted_action",
}


class InsightMode(enum.StrEnum):
    """Where the outcome of a task is shown."""

    thread = "thread"  # update the confirmation in the message's thread (channel_id, message_ts)
    private = "private"  # an ephemeral message to user_id in channel_id (a DM when the bot cannot post there)
    silent = "silent"  # watched channels: link above the link band, never ask, show nothing
    # The capture's own answer (a command's reply, a form's submission) is still to come: it hands the outcome
    # over to `private` when it has been sent (`show_privately_instead`), or shows it itself if it is known.
    held = "held"


class TaskStatus(enum.StrEnum):
    """Lifecycle of an insight task."""

    queued = "queued"  # waiting (from available_at)
    pending = "pending"  # claimed (lease running)
    done = "done"
    dead = "dead"  # gave up after MAX_ATTEMPTS; the item is saved, without insights


@dataclass
class BatchStats:
    """Process-wide counters of the batch encoder (for logs and metrics)."""

    batches: int = 0  # encoder calls, one per workspace per batch
    items: int = 0  # items encoded in them
    encode_seconds: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def record(self, items: int, seconds: float) -> None:
        """Counts one batch of `items` encoded in `seconds`."""
        with self._lock:
            self.batches += 1
            self.items += items
            self.encode_seconds += seconds


stats = BatchStats()


@dataclass(frozen=True)
class _Task:
    id: int
    team_id: str
    item_id: int
    attempts: int
    mode: str  # as claimed (only held and thread tasks change mode later: to private)


@dataclass
class _Outcome:
    finished: int = 0
    failed: list[tuple[_Task, str]] = field(default_factory=list)


# -- queueing ------------------------------------------------------------------------------------------------


def enqueue_insights(
    *,
    db_session: Session,
    team_id: str,
    item_id: int,
    mode: InsightMode | str,
    channel_id: str | None = None,
    message_ts: str | None = None,
    user_id: str | None = None,
    emoji: str | None = None,
) -> None:
    """Queues insights for a newly captured item, in the transaction that stores it (once per item)."""
    values = {
        "team_id": team_id,
        "item_id": item_id,
        "status": TaskStatus.queued.value,
        "attempts": 0,
        "available_at": utcnow(),
        "created_at": utcnow(),
        "mode": InsightMode(mode).value,
        "channel_id": channel_id,
        "message_ts": message_ts,
        "user_id": user_id,
        "emoji": emoji,
    }
    dialect = postgresql if _is_postgres(db_session) else sqlite
    db_session.execute(
        dialect.insert(InsightTask)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["team_id", "item_id"])
    )
    _notify(db_session)


def set_confirmation(
    *, db_session: Session, team_id: str, item_id: int, channel_id: str, message_ts: str
) -> None:
    """Where the thread confirmation was posted: a task waiting for it becomes due at once."""
    db_session.execute(
        update(InsightTask)
        .where(InsightTask.team_id == team_id, InsightTask.item_id == item_id)
        .values(channel_id=channel_id, message_ts=message_ts)
    )
    _notify(db_session)


def awaits_thread_confirmation(*, db_session: Session, team_id: str, item_id: int) -> bool:
    """Whether the item's thread confirmation was never posted (its capture died between storing the item and
    posting), so a replay of the capture posts it."""
    return (
        db_session.scalar(
            select(InsightTask.id).where(
                InsightTask.team_id == team_id,
                InsightTask.item_id == item_id,
                InsightTask.mode == InsightMode.thread.value,
                InsightTask.message_ts.is_(None),
            )
        )
        is not None
    )


def show_privately_instead(
    *, db_session: Session, team_id: str, item_id: int, channel_id: str, user_id: str, held_only: bool = False
) -> bool:
    """An unfinished held task (or one whose thread confirmation could not be posted, unless `held_only`) shows
    its outcome to the capturer instead; False when there is no such task, e.g. it has finished (its outcome
    is in the database, to be shown now)."""
    modes = [InsightMode.held.value] if held_only else [InsightMode.held.value, InsightMode.thread.value]
    result = db_session.execute(
        update(InsightTask)
        .where(
            InsightTask.team_id == team_id,
            InsightTask.item_id == item_id,
            InsightTask.status.in_([TaskStatus.queued.value, TaskStatus.pending.value]),
            InsightTask.mode.in_(modes),
        )
        .values(mode=InsightMode.private.value, channel_id=channel_id, user_id=user_id, message_ts=None)
    )
    _notify(db_session)
    return cast(CursorResult[Any], result).rowcount == 1


def has_due_insight_tasks(db: Database) -> bool:
    """True when a task is ready to be claimed (cheap: one indexed query)."""
    with db.read() as s:
        return s.scalar(select(InsightTask.id).where(_due(utcnow())).limit(1)) is not None


def next_insight_due_at(db: Database) -> datetime | None:
    """When the next task becomes claimable (None: nothing queued or claimed), so a worker can sleep until
    then; a NOTIFY or a new capture may of course come first."""
    with db.read() as s:
        queued = s.execute(
            select(InsightTask.available_at, InsightTask.mode, InsightTask.message_ts, InsightTask.created_at)
            .where(InsightTask.status == TaskStatus.queued.value)
            .order_by(InsightTask.available_at)
            .limit(50)
        ).all()
        lease = s.scalar(
            select(func.min(InsightTask.lease_until)).where(InsightTask.status == TaskStatus.pending.value)
        )
    times = [
        max(available, created + THREAD_WAIT)
        if mode == InsightMode.thread.value and ts is None
        else available
        for available, mode, ts, created in queued
    ]
    if lease is not None:
        times.append(lease)
    return min(times) if times else None


def _is_postgres(db_session: Session) -> bool:
    return db_session.get_bind().dialect.name == "postgresql"


def _notify(db_session: Session) -> None:
    if _is_postgres(db_session):  # delivered when the transaction commits, never before
        db_session.execute(text("SELECT pg_notify(:channel, 'insights')"), {"channel": NOTIFY_CHANNEL})


def _due(now: datetime) -> Any:
    """Claimable: queued and available (a thread task only once its confirmation is posted, or it waited long
    enough), or claimed by a worker whose lease ran out."""
    waiting_for_ts = and_(
        InsightTask.mode == InsightMode.thread.value,
        InsightTask.message_ts.is_(None),
        InsightTask.created_at > now - THREAD_WAIT,
    )
    return or_(
        and_(InsightTask.status == TaskStatus.queued.value, InsightTask.available_at <= now, ~waiting_for_ts),
        and_(InsightTask.status == TaskStatus.pending.value, InsightTask.lease_until < now),
    )


# -- running a batch -----------------------------------------------------------------------------------------


def run_insight_batch(
    *, db: Database, clients: WebClient, settings: Settings, limit: int = 64, worker_id: str = "worker"
) -> int:
    """Claims up to `limit` due tasks, encodes them in one batch per workspace, assigns themes, checks
    duplicates (items in order of id) and shows each outcome; returns how many tasks it finished."""
    tasks = _claim(db, limit=limit)
    if not tasks:
        return 0
    by_team: dict[str, list[_Task]] = defaultdict(list)
    for task in tasks:
        by_team[task.team_id].append(task)
    finished = 0
    for team_id, team_tasks in by_team.items():
        outcome = _run_team(db, for_team(clients, team_id), settings, team_id, team_tasks)
        for task, error in outcome.failed:
            _fail(db, task, error)
        finished += outcome.finished
    logger.debug("%s finished %d of %d insight tasks", worker_id, finished, len(tasks))
    return finished


# Insight tasks as a leased work queue (storage/claims.py): queued until `available_at`, claimed ("pending")
# until `lease_until`.
INSIGHT_QUEUE = claims.Queue(
    model=InsightTask,
    id=InsightTask.id,
    status=InsightTask.status,
    attempts=InsightTask.attempts,
    due_at=InsightTask.available_at,
    lease_until=InsightTask.lease_until,
    waiting=(TaskStatus.queued.value,),
    claimed=TaskStatus.pending.value,
    dead=TaskStatus.dead.value,
)


def _claim(db: Database, *, limit: int) -> list[_Task]:
    """Takes due tasks exactly once: on Postgres the rows are locked (others skip them), on SQLite the write
    transaction is exclusive; the UPDATE checks the state again either way."""
    now = utcnow()
    with db.session() as s:
        rows, worn = claims.claim_batch(
            s,
            INSIGHT_QUEUE,
            due=_due(now),
            now=now,
            lease=LEASE,
            limit=limit,
            max_attempts=MAX_ATTEMPTS,
            dead_also={"finished_at": now, "lease_until": None},
            dead_returning=(InsightTask.item_id, InsightTask.team_id),
            returning=(
                InsightTask.id,
                InsightTask.team_id,
                InsightTask.item_id,
                InsightTask.attempts,
                InsightTask.mode,
            ),
            skip_locked=_is_postgres(s),
        )
    for item_id, team_id in worn:  # taken over too often (its workers keep dying on it): given up
        logger.error(
            "insights for feedback #%s (team %s) gave up after %d attempts", item_id, team_id, MAX_ATTEMPTS
        )
    return sorted((_Task(*row) for row in rows), key=lambda t: t.item_id)


def _run_team(
    db: Database, client: WebClient, settings: Settings, team_id: str, tasks: list[_Task]
) -> _Outcome:
    outcome = _Outcome()
    try:
        index = similarity_index.get_index(db, team_id, settings=settings)
        # Read and encode without the write lock (SQLite has one, and the model takes a while); then a short
        # write transaction stores the vectors.
        with db.read() as s:
            texts = dict(
                s.execute(
                    select(FeedbackItem.id, FeedbackItem.text).where(
                        FeedbackItem.team_id == team_id,
                        FeedbackItem.id.in_([t.item_id for t in tasks]),
                        FeedbackItem.deleted_at.is_(None),
                    )
                ).all()
            )
            live = [t for t in tasks if t.item_id in texts]
            started = time.perf_counter()
            vectors = index.encode_many(s, [texts[t.item_id] for t in live])
        if live:
            with db.session() as s:
                index.store_many(s, [t.item_id for t in live], vectors)
            stats.record(len(live), time.perf_counter() - started)
    except Exception as exc:
        for n, task in enumerate(tasks):  # one traceback for the batch, one line per item
            log = logger.exception if n == 0 else logger.error
            log("could not encode feedback #%s (team %s); will retry", task.item_id, team_id)
            outcome.failed.append((task, repr(exc)))
        return outcome
    logger.info("team %s: encoded %d item(s) in one batch", team_id, len(live))
    for task in tasks:
        if task.item_id not in texts:  # deleted before its insights ran: nothing to do
            outcome.finished += _finish(db, task, None, None)
    later = {t.item_id for t in live}
    for task, vector in zip(live, vectors, strict=True):
        later.discard(task.item_id)
        try:
            outcome.finished += _insights_and_show(db, client, index, task, vector, hidden=set(later))
        except Exception as exc:
            logger.exception("insights for feedback #%s (team %s) failed; will retry", task.item_id, team_id)
            outcome.failed.append((task, repr(exc)))
    return outcome


def _insights_and_show(
    db: Database,
    client: WebClient,
    index: similarity_index.TeamIndex,
    task: _Task,
    vector: np.ndarray,
    *,
    hidden: set[int],
) -> int:
    """Theme and duplicate check for one item (the batch's later items hidden from it, as if it had been
    captured alone), then its outcome shown where its task says; the show is repeated if the place changed."""
    insights = capture_hook.insights_for(
        db,
        _EarlierItems(index, hidden),  # type: ignore[arg-type]
        team_id=task.team_id,
        item_id=task.item_id,
        vector=vector,
        interactive=task.mode != InsightMode.silent.value,
    )
    if task.mode == InsightMode.silent.value:  # shown nowhere, and never moved elsewhere
        return _finish(db, task, None, None)
    for _ in range(3):
        with db.read() as s:
            row = s.get(InsightTask, task.id)
            if row is None:  # the item was removed meanwhile (the task cascades with it)
                return 1
            place = (row.mode, row.channel_id, row.message_ts, row.user_id, row.emoji)
        error = _show(db, client, task, insights, *place)
        if _finish(db, task, place, error):
            return 1
    return 0  # the place kept changing: the lease runs out and the task is shown again


def _show(
    db: Database,
    client: WebClient,
    task: _Task,
    insights: capture_hook.CaptureInsights,
    mode: str,
    channel_id: str | None,
    message_ts: str | None,
    user_id: str | None,
    emoji: str | None,
) -> str | None:
    """Shows the outcome; returns why it could not be shown when a retry would not help (else raises)."""
    try:
        if mode == InsightMode.thread.value and channel_id and message_ts:
            capture_hook.show_in_thread(
                client,
                db,
                team_id=task.team_id,
                item_id=task.item_id,
                channel_id=channel_id,
                ts=message_ts,
                emoji=emoji or "bulb",
                insights=insights,
            )
        elif mode == InsightMode.private.value and channel_id and user_id:
            capture_hook.show_privately(
                client,
                db,
                team_id=task.team_id,
                item_id=task.item_id,
                channel_id=channel_id,
                user_id=user_id,
                duplicate=insights.duplicate,
            )
    except SlackApiError as exc:
        error = str(exc.response.get("error"))
        if error not in UNSHOWABLE_ERRORS:
            raise
        logger.info("feedback #%s: insights saved, not shown (%s)", task.item_id, error)
        return error
    return None


def _finish(db: Database, task: _Task, place: tuple[Any, ...] | None, error: str | None) -> int:
    """Marks the task done if it is still ours (this claim: status and attempts as claimed) and its place is
    the one the outcome was shown in."""
    conditions = [InsightTask.id == task.id]
    if place is not None:
        mode, channel_id, message_ts, user_id, _ = place
        conditions += [
            InsightTask.mode == mode,
            _same(InsightTask.channel_id, channel_id),
            _same(InsightTask.message_ts, message_ts),
            _same(InsightTask.user_id, user_id),
        ]
    with db.session() as s:
        return int(
            claims.claim_row(
                s,
                InsightTask,
                where=conditions,
                seen=_held(task),
                values={
                    "status": TaskStatus.done.value,
                    "finished_at": utcnow(),
                    "lease_until": None,
                    "last_error": error,
                },
            )
        )


def _held(task: _Task) -> dict[Any, Any]:
    """What a task row holds while this claim is current (a lease taken over moves `attempts` on)."""
    return {InsightTask.status: TaskStatus.pending.value, InsightTask.attempts: task.attempts}


def _same(column: Any, value: str | None) -> Any:
    return column.is_(None) if value is None else column == value


def _fail(db: Database, task: _Task, error: str) -> None:
    """Back to the queue after a pause that grows with each attempt; dead after MAX_ATTEMPTS."""
    now = utcnow()
    dead = task.attempts >= MAX_ATTEMPTS
    values: dict[str, Any] = {"last_error": error[:2000], "lease_until": None}
    if dead:
        values |= {"status": TaskStatus.dead.value, "finished_at": now}
        logger.error(
            "insights for feedback #%s (team %s) gave up after %d attempts: %s",
            task.item_id,
            task.team_id,
            task.attempts,
            error,
        )
    else:
        pause = claims.backoff(task.attempts, base=BACKOFF_BASE, cap=BACKOFF_CAP, jitter=0.25)
        values |= {"status": TaskStatus.queued.value, "available_at": now + pause}
    with db.session() as s:
        claims.claim_row(s, InsightTask, where=InsightTask.id == task.id, seen=_held(task), values=values)


class _EarlierItems:
    """The index as one item of a batch sees it: the items after it in the batch are hidden, so a duplicate
    always points at the earlier capture, as when items are captured one at a time."""

    def __init__(self, index: similarity_index.TeamIndex, hidden: set[int]) -> None:
        self._index = index
        self._hidden = hidden
        self.encoder = index.encoder
        self.team_id = index.team_id

    def nearest_items(
        self,
        vector: np.ndarray,
        *,
        k: int = 5,
        exclude_ids: Sequence[int] = (),
        since: datetime | None = None,
    ) -> list[similarity_index.Neighbour]:
        return self._index.nearest_items(vector, k=k, exclude_ids=[*exclude_ids, *self._hidden], since=since)

    def nearest_theme(self, vector: np.ndarray) -> similarity_index.ThemeNeighbour | None:
        return self._index.nearest_theme(vector)

    def __getattr__(self, name: str) -> Any:
        """Everything else (vectors of given ids, text cleaning, themes' members) is the index's own."""
        return getattr(self._index, name)
