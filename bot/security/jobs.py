"""Scheduled data-rights jobs (retention, purging uninstalled workspaces)."""

from __future__ import annotations

from apscheduler.schedulers.base import BaseScheduler

from bot.settings import Settings
from storage.db import Database


def add_security_jobs(scheduler: BaseScheduler, db: Database, settings: Settings) -> None:
    """Adds the data-rights jobs to `scheduler` (placeholder until the jobs land)."""
