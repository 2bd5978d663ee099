"""The queue worker: claims deliveries from the inbox and runs them through the same Bolt listeners.

One dispatcher thread claims due deliveries (as many as there are free slots) and hands them to a pool of
`PRODOPS_WORKER_CONCURRENCY` threads; each runs the listener to its end and settles the delivery: done,
ignored, queued again after a backoff, or dead after `PRODOPS_INBOX_MAX_ATTEMPTS`. The dispatcher sleeps
until woken: by Postgres NOTIFY (recorders notify on commit), by a finished delivery (it may unblock the
next one of its thread), or after `PRODOPS_WORKER_POLL_SECONDS` (SQLite, or a missed notification).
Further loops (the insight batches) run beside it on the same wake-ups.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta

from slack_bolt import App
from sqlalchemy import make_url

from bot import inbox
from bot.observability import record_delivery
from bot.settings import Settings
from bot.slack_app import Outcome, run_claimed
from storage import claims
from storage.db import Database
from storage.models import InboxStatus

logger = logging.getLogger("prodops.worker")

MAX_BACKOFF_SECONDS = 300.0


def worker_id() -> str:
    """This process's name in `claimed_by`: host and pid."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}"


def retry_delay(attempts: int, base: float) -> float:
    """Seconds before attempt `attempts + 1`: the shared backoff (`storage.claims.backoff`) from `base`,
    doubling per attempt, capped at 5 minutes, with up to 25 % jitter."""
    return claims.backoff(
        attempts, base=timedelta(seconds=base), cap=timedelta(seconds=MAX_BACKOFF_SECONDS), jitter=0.25
    ).total_seconds()


class Waker:
    """Wakes sleeping loops: `wake()` from any thread, or NOTIFY on Postgres (`listen`)."""

    def __init__(self) -> None:
        self._events: list[threading.Event] = []
        self._lock = threading.Lock()

    def event(self) -> threading.Event:
        """A new event that every wake-up sets (one per loop)."""
        event = threading.Event()
        with self._lock:
            self._events.append(event)
        return event

    def wake(self) -> None:
        """Wakes every loop."""
        with self._lock:
            for event in self._events:
                event.set()

    def listen(self, database_url: str, stop: threading.Event) -> None:
        """Postgres: LISTEN on the wake channel until `stop`, reconnecting after errors."""
        import psycopg

        conninfo = make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
        while not stop.is_set():
            try:
                with psycopg.connect(conninfo, autocommit=True) as conn:
                    conn.execute(f"LISTEN {inbox.WAKE_CHANNEL}")
                    self.wake()  # whatever arrived while not listening
                    while not stop.is_set():
                        for _ in conn.notifies(timeout=1.0, stop_after=1):
                            self.wake()
            except Exception as exc:  # the database restarting: poll meanwhile, listen again shortly
                logger.warning("worker: LISTEN connection lost (%s); reconnecting", exc.__class__.__name__)
                stop.wait(1.0)


@dataclass
class WorkerStats:
    """Counts since start, for logs and tests."""

    done: int = 0
    ignored: int = 0
    retried: int = 0
    dead: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, name: str) -> None:
        with self.lock:
            setattr(self, name, getattr(self, name) + 1)


class QueueWorker:
    """Drains the inbox with a pool of threads; `start()` returns, `stop()` finishes what is running."""

    def __init__(
        self,
        app: App,
        db: Database,
        settings: Settings,
        *,
        loops: list[tuple[str, Callable[[], int]]] | None = None,
        deliveries: bool = True,
    ) -> None:
        self.app = app
        self.db = db
        self.settings = settings
        self.id = worker_id()
        self.concurrency = settings.worker_concurrency
        self.waker = Waker()
        self.stats = WorkerStats()
        self._stop = threading.Event()
        self._slots = threading.Semaphore(self.concurrency)
        self._pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="delivery")
        self._threads: list[threading.Thread] = []
        self._loops = loops or []
        self._deliveries = deliveries
        self._running: dict[int, inbox.ClaimedDelivery] = {}
        self._running_lock = threading.Lock()

    def start(self) -> QueueWorker:
        """Starts the dispatcher, the extra loops and (Postgres) the NOTIFY listener."""
        if self._deliveries:
            self._spawn("inbox-dispatcher", self._dispatch_loop)
            self._spawn("inbox-heartbeat", self._heartbeat_loop)
        for name, drain in self._loops:
            self._spawn(name, functools.partial(self._drain_loop, drain))
        if self.db.backend == "postgresql":
            self._spawn("inbox-listen", lambda: self.waker.listen(self.db.url, self._stop))
        logger.info("worker %s: %s deliveries at a time", self.id, self.concurrency)
        return self

    def stop(self, timeout: float = 20.0) -> None:
        """Stops claiming, waits for running deliveries (unfinished ones are taken over after their lease)."""
        self._stop.set()
        self.waker.wake()
        for thread in self._threads:
            thread.join(timeout)
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _dispatch_loop(self) -> None:
        wake = self.waker.event()
        while not self._stop.is_set():
            wake.clear()
            try:
                claimed = self._claim()
            except Exception:
                logger.exception("worker: could not claim deliveries; trying again shortly")
                claimed = []
            if not claimed:
                wake.wait(self.settings.worker_poll_seconds)
                continue
            with self._running_lock:
                self._running.update({c.inbox_id: c for c in claimed})
            for delivery in claimed:
                self._pool.submit(self._run, delivery)
            # Wait for a free slot before claiming again (a finished delivery also wakes us).
            if not self._slots.acquire(timeout=self.settings.worker_poll_seconds):
                continue
            self._slots.release()

    def _claim(self) -> list[inbox.ClaimedDelivery]:
        free = 0
        while free < self.concurrency and self._slots.acquire(blocking=False):
            free += 1
        if not free:
            return []
        try:
            with self.db.inbox.read() as s:  # idle polls take no write lock (SQLite has one writer at a time)
                due = inbox.has_due_deliveries(db_session=s)
            if not due:
                for _ in range(free):
                    self._slots.release()
                return []
            with self.db.inbox.session() as s:
                claimed = inbox.claim_deliveries(
                    db_session=s,
                    worker_id=self.id,
                    lease_seconds=self.settings.inbox_lease_seconds,
                    max_attempts=self.settings.inbox_max_attempts,
                    limit=free,
                    skip_locked=self.db.backend == "postgresql",
                )
        except Exception:
            for _ in range(free):
                self._slots.release()
            raise
        for _ in range(free - len(claimed)):
            self._slots.release()
        return claimed

    def _run(self, claimed: inbox.ClaimedDelivery) -> None:
        started = time.monotonic()
        final = claimed.attempts >= self.settings.inbox_max_attempts
        try:
            outcome = run_claimed(self.app, claimed, final_attempt=final)
        except Exception as exc:  # Bolt itself failed (the error handler catches listener errors)
            logger.exception("worker: delivery %s crashed the dispatcher", claimed.delivery_id)
            outcome = Outcome(InboxStatus.failed, repr(exc)[:2000])
        try:
            settled_as = self._settle(claimed, outcome, final=final)
            record_delivery(claimed.kind, settled_as, time.monotonic() - started)
        except Exception:  # the lease runs out and another attempt is made
            logger.exception("worker: could not settle delivery %s", claimed.delivery_id)
        finally:
            with self._running_lock:
                self._running.pop(claimed.inbox_id, None)
            self._slots.release()
            self.waker.wake()  # the next delivery of this thread may be free now

    def _settle(self, claimed: inbox.ClaimedDelivery, outcome: Outcome, *, final: bool) -> str:
        """Records the outcome; returns it as counted: done, ignored, retried, dead, or taken_over."""
        retry_in = None
        status = outcome.status
        if status is InboxStatus.failed:
            if final:
                status = InboxStatus.dead
                logger.error(
                    "delivery %s failed %s times; dead (see `prodops inbox list --status dead`)",
                    claimed.delivery_id,
                    claimed.attempts,
                )
            else:
                retry_in = retry_delay(claimed.attempts, self.settings.inbox_retry_seconds)
        with self.db.inbox.session() as s:
            settled = inbox.settle_delivery(
                db_session=s, claimed=claimed, status=status, error=outcome.error, retry_in=retry_in
            )
        if not settled:
            logger.warning(
                "delivery %s was taken over by another worker (lease ran out)", claimed.delivery_id
            )
            return "taken_over"
        counted = "retried" if retry_in is not None else status.value
        self.stats.count(counted)
        return counted

    def _heartbeat_loop(self) -> None:
        """Renews running deliveries' leases every third of a lease, so only a dead worker's run out."""
        interval = self.settings.inbox_lease_seconds / 3
        while not self._stop.wait(interval):
            with self._running_lock:
                running = list(self._running.values())
            if not running:
                continue
            try:
                with self.db.inbox.session() as s:
                    inbox.extend_leases(
                        db_session=s,
                        claims=running,
                        worker_id=self.id,
                        lease_seconds=self.settings.inbox_lease_seconds,
                    )
            except Exception:  # the lease may run out; another worker then takes the delivery over
                logger.exception("worker: could not renew leases")

    def _drain_loop(self, drain: Callable[[], int]) -> None:
        """Runs `drain` (returns how much it did) until it finds nothing, then sleeps until woken."""
        wake = self.waker.event()
        while not self._stop.is_set():
            wake.clear()
            try:
                did = drain()
            except Exception:
                logger.exception("worker: %s failed; trying again shortly", threading.current_thread().name)
                did = 0
            if not did:
                wake.wait(self.settings.worker_poll_seconds)
