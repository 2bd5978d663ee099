"""`prodops worker`: APScheduler drives the scheduled work; the database row is the source of truth."""

from __future__ import annotations

import logging

from apscheduler.schedulers.blocking import BlockingScheduler

from bot.jobs import add_inbox_sweeper, add_scheduled_jobs
from bot.logs import configure_logging
from bot.settings import Settings
from bot.slack_app import build_app
from storage.db import Database

logger = logging.getLogger("prodops.worker")


def run_worker(settings: Settings) -> None:
    """Runs scheduled jobs until stopped. Claims in the DB make it safe beside `serve` and other workers."""
    configure_logging(settings.log_level)
    db = Database(settings.database_url)
    app = build_app(settings, db)
    scheduler = BlockingScheduler()
    add_inbox_sweeper(scheduler, app, db, settings)
    add_scheduled_jobs(scheduler, db, settings)
    logger.info("worker started: %s", ", ".join(job.id for job in scheduler.get_jobs()))
    try:
        scheduler.start()
    finally:
        db.dispose()
