"""`prodops worker`: drains the inbox (Events API deliveries, interactions to retry) and runs scheduled work.

The queue worker (bot/queue_worker.py) runs deliveries through the same listeners the web process has;
APScheduler drives the scheduled jobs, whose database rows are the source of truth. Claims in the database
make any number of workers safe side by side, and beside `prodops serve`.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable

from apscheduler.schedulers.background import BackgroundScheduler

from bot.jobs import add_scheduled_jobs
from bot.logs import configure_logging
from bot.queue_worker import QueueWorker
from bot.server import PARENT_PID_ENV
from bot.settings import Settings
from bot.slack_app import WORKER, build_app
from storage.db import Database

logger = logging.getLogger("prodops.worker")


def insight_loops(db: Database, settings: Settings) -> list[tuple[str, Callable[[], int]]]:
    """The loop that runs captured items' insights in batches beside the deliveries (bot/insights/batch.py)."""
    from bot.insights.batch import has_due_insight_tasks, run_insight_batch
    from bot.queue_worker import worker_id
    from bot.slack_client import team_clients

    clients = team_clients(settings, db)
    me = worker_id()

    def drain() -> int:
        if not has_due_insight_tasks(db):  # a read: idle polls take no write lock
            return 0
        return run_insight_batch(db=db, clients=clients, settings=settings, worker_id=me)

    return [("insight-batches", drain)]


def _limit_torch_threads(settings: Settings) -> None:
    """Batches encode fastest with one torch thread per process on a small machine (PRODOPS_TORCH_THREADS)."""
    if settings.similarity_backend == "tfidf":
        return
    try:
        import torch
    except ImportError:  # the light install: TF-IDF only
        return
    torch.set_num_threads(settings.torch_threads)


def _lower_priority(settings: Settings) -> None:
    """Queued work yields the CPU to acks (PRODOPS_WORKER_NICE): a capture flood must not starve the web."""
    if settings.worker_nice <= 0 or not hasattr(os, "nice"):
        return
    current = os.nice(0)
    if current < settings.worker_nice:
        os.nice(settings.worker_nice - current)


def run_worker(settings: Settings, *, stop: threading.Event | None = None) -> None:
    """Runs until SIGTERM/SIGINT (or `stop`), then lets running deliveries finish."""
    configure_logging(settings.log_level)
    _lower_priority(settings)
    db = Database(settings.database_url)
    app = build_app(settings, db, role=WORKER)
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
    if settings.worker_metrics_port:
        from bot.observability import start_worker_metrics_server

        start_worker_metrics_server(settings.worker_metrics_port, db=db, settings=settings)
    loops: list[tuple[str, Callable[[], int]]] = []
    if "insights" in settings.worker_runs:
        from bot.insights.similarity import warm_up

        _limit_torch_threads(settings)
        warm_up(settings)  # the embeddings model, when that backend is in use: here, never in web processes
        loops = insight_loops(db, settings)
    queue = QueueWorker(app, db, settings, loops=loops, deliveries="inbox" in settings.worker_runs).start()
    scheduler = BackgroundScheduler(daemon=True)
    if "inbox" in settings.worker_runs:  # the themes job among them loads the model too
        add_scheduled_jobs(scheduler, db, settings)
    scheduler.start()
    logger.info("worker started: inbox queue, %s", ", ".join(job.id for job in scheduler.get_jobs()))
    parent = int(os.environ.get(PARENT_PID_ENV) or 0)
    try:
        while not stop.wait(1.0):
            if parent and os.getppid() != parent:  # `prodops serve` is gone: do not linger as an orphan
                logger.warning("worker: the serving process %s is gone; stopping", parent)
                break
    finally:
        logger.info("worker stopping: finishing running deliveries")
        scheduler.shutdown(wait=False)
        queue.stop()
        db.dispose()
