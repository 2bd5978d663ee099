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
    """The loops that run captured items' insights in batches beside the deliveries."""
    return []


def run_worker(settings: Settings, *, stop: threading.Event | None = None) -> None:
    """Runs until SIGTERM/SIGINT (or `stop`), then lets running deliveries finish."""
    configure_logging(settings.log_level)
    db = Database(settings.database_url)
    app = build_app(settings, db, role=WORKER)
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
    queue = QueueWorker(app, db, settings, loops=insight_loops(db, settings)).start()
    scheduler = BackgroundScheduler(daemon=True)
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
