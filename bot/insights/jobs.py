"""Scheduled insight jobs (theme clustering, ship notices, account briefs)."""

from __future__ import annotations

from apscheduler.schedulers.base import BaseScheduler
from slack_sdk import WebClient

from bot.settings import Settings
from storage.db import Database


def add_insight_jobs(scheduler: BaseScheduler, db: Database, settings: Settings, client: WebClient) -> None:
    """Adds the insight jobs to `scheduler` (placeholder until the jobs land)."""
