"""Scheduled data-rights jobs: retention (and inbox pruning) hourly, purging uninstalled workspaces."""

from __future__ import annotations

from apscheduler.schedulers.base import BaseScheduler

from bot.jobs import _every
from bot.security.purge import run_purge_tick
from bot.security.retention import run_retention_tick
from bot.settings import Settings
from storage.db import Database

RETENTION_EVERY_SECONDS = 3600
PURGE_EVERY_SECONDS = 600


def add_security_jobs(scheduler: BaseScheduler, db: Database, settings: Settings) -> None:
    """Adds the retention and purge ticks; both claim or repeat safely, so every process may run them."""
    _every(scheduler, "retention-tick", RETENTION_EVERY_SECONDS, lambda: run_retention_tick(db))
    _every(scheduler, "purge-tick", PURGE_EVERY_SECONDS, lambda: run_purge_tick(db))
