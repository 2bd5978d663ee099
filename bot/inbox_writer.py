"""Group commit for the inbox: many concurrent deliveries recorded in one transaction.

Recording a delivery must be durable before the ack, but one transaction per request makes every request
wait for the database's write lock (SQLite) or a round trip (Postgres). One writer thread per process
takes whatever is waiting, inserts it in a single statement, commits once, and wakes the waiters.
Marking deliveries finished rides along in the same transactions; if the process dies before such a
mark is committed, the sweeper replays the delivery, and the handlers are idempotent.
"""

from __future__ import annotations

import logging
import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import timedelta
from functools import lru_cache
from typing import Any, cast

from sqlalchemy import Table, bindparam, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from bot.inbox import Delivery, wake_workers
from storage.db import Database
from storage.models import InboxEvent, InboxStatus
from storage.types import utcnow

logger = logging.getLogger("prodops.inbox")

MAX_BATCH = 500


@dataclass
class _Record:
    delivery: Delivery
    body: dict[str, Any]
    result: Future[int | None] = field(default_factory=Future)


@dataclass
class _Finish:
    inbox_id: int
    status: InboxStatus
    error: str | None = None


class InboxWriter:
    """Records deliveries (blocking until committed) and finishes them (asynchronously), in batches."""

    def __init__(self, db: Database, *, lease_seconds: float, flush_interval: float = 0.05) -> None:
        self.db = db
        self.lease_seconds = lease_seconds
        self.flush_interval = flush_interval
        self._queue: queue.Queue[_Record | _Finish | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="inbox-writer", daemon=True)
        self._stopped = threading.Event()
        self._thread.start()

    def record(self, delivery: Delivery, body: dict[str, Any], timeout: float = 10.0) -> int | None:
        """Records a delivery; returns its inbox id, or None when it was already recorded (a retry)."""
        item = _Record(delivery, body)
        self._queue.put(item)
        return item.result.result(timeout=timeout)

    def finish(self, inbox_id: int, status: InboxStatus = InboxStatus.done, error: str | None = None) -> None:
        """Marks a delivery finished in the next batch (does not wait)."""
        self._queue.put(_Finish(inbox_id, status, error))

    def close(self, timeout: float = 5.0) -> None:
        """Writes what is queued, then stops the thread."""
        if not self._stopped.is_set():
            self._queue.put(None)
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stopped.is_set():
            try:
                first = self._queue.get(timeout=self.flush_interval)
            except queue.Empty:
                continue
            batch = [first]
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if any(item is None for item in batch):
                self._stopped.set()
            work = [item for item in batch if item is not None]
            if work:
                self._write(work)

    def _write(self, batch: list[_Record | _Finish]) -> None:
        records = [b for b in batch if isinstance(b, _Record)]
        finishes = [b for b in batch if isinstance(b, _Finish)]
        try:
            ids = self._commit(records, finishes)
        except Exception as exc:  # the waiters must hear about it, whatever it was
            logger.error("inbox batch of %s failed: %s", len(batch), exc)
            for record in records:
                record.result.set_exception(exc)
            return
        for record in records:
            key = (record.delivery.team_id, record.delivery.delivery_id)
            record.result.set_result(ids.pop(key, None))  # popped: a duplicate in the same batch gets None

    def _commit(self, records: list[_Record], finishes: list[_Finish]) -> dict[tuple[str, str], int]:
        ids: dict[tuple[str, str], int] = {}
        now = utcnow()
        rows: dict[tuple[str, str], dict[str, Any]] = {}
        for record in records:
            key = (record.delivery.team_id, record.delivery.delivery_id)
            rows.setdefault(
                key,
                {
                    "team_id": record.delivery.team_id,
                    "delivery_id": record.delivery.delivery_id,
                    "kind": record.delivery.kind,
                    "body": record.body,
                    # Events wait for a worker; interactions are handled here, under a lease, right away.
                    "status": (InboxStatus.queued if record.delivery.queued else InboxStatus.pending).value,
                    "attempts": 0 if record.delivery.queued else 1,
                    "lease_until": now
                    if record.delivery.queued
                    else now + timedelta(seconds=self.lease_seconds),
                    "available_at": now,
                    "order_key": record.delivery.order_key,
                    "received_at": now,
                },
            )
        with self.db.session() as s:
            conn = s.connection()
            if rows:
                # executemany of one cached statement; ON CONFLICT skips retries, RETURNING names the new rows
                returned = conn.execute(_insert_statement(self.db.backend), list(rows.values()))
                ids = {(team, delivery): inbox_id for inbox_id, team, delivery in returned}
                if ids and any(record.delivery.queued for record in records):
                    wake_workers(db_session=s)  # delivered to listening workers at commit
            if finishes:  # one executemany UPDATE by primary key
                conn.execute(
                    _finish_statement(),
                    [
                        {
                            "b_id": f.inbox_id,
                            "status": f.status.value,
                            "finished_at": now,
                            "last_error": f.error,
                        }
                        for f in finishes
                    ],
                )
        return ids


@lru_cache(maxsize=4)
def _insert_statement(backend: str) -> Any:
    """INSERT … ON CONFLICT (team_id, delivery_id) DO NOTHING RETURNING id, team_id, delivery_id."""
    table = cast(Table, InboxEvent.__table__)
    if backend == "postgresql":
        stmt: Any = pg_insert(table).on_conflict_do_nothing(index_elements=["team_id", "delivery_id"])
    elif backend == "sqlite":
        stmt = sqlite_insert(table).on_conflict_do_nothing(index_elements=["team_id", "delivery_id"])
    else:
        raise RuntimeError(f"the inbox needs SQLite or Postgres, not {backend}")
    return stmt.returning(table.c.id, table.c.team_id, table.c.delivery_id)


@lru_cache(maxsize=1)
def _finish_statement() -> Any:
    """UPDATE one inbox row's status (used as an executemany)."""
    table = cast(Table, InboxEvent.__table__)
    return (
        update(table)
        .where(table.c.id == bindparam("b_id"))
        .values(
            status=bindparam("status"),
            finished_at=bindparam("finished_at"),
            last_error=bindparam("last_error"),
        )
    )
