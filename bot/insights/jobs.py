"""Scheduled insight jobs (theme clustering; ship notices and account briefs as they land).

Each entry of `insight_jobs` is one interval job; every job claims its work in the database, so any number
of processes may run them side by side.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from apscheduler.schedulers.base import BaseScheduler
from slack_sdk import WebClient

from bot.settings import Settings
from storage.db import Database


@dataclass(frozen=True)
class InsightJob:
    """An interval job: its scheduler id, how often, and what it runs."""

    job_id: str
    seconds: float
    run: Callable[[], Any]


def insight_jobs(db: Database, settings: Settings, client: WebClient) -> list[InsightJob]:
    """The insight jobs to schedule (add new ones here)."""
    from bot.insights.themes_job import run_themes_tick

    return [
        InsightJob(
            "themes-tick", settings.themes_tick_seconds, lambda: run_themes_tick(db=db, settings=settings)
        )
    ]


def add_insight_jobs(scheduler: BaseScheduler, db: Database, settings: Settings, client: WebClient) -> None:
    """Adds the insight jobs to `scheduler`, each never overlapping itself, then ship notices and briefs."""
    from bot.insights.trend_jobs import add_trend_jobs

    add_trend_jobs(scheduler, db, settings, client)
    for job in insight_jobs(db, settings, client):
        scheduler.add_job(
            job.run, "interval", seconds=job.seconds, id=job.job_id, max_instances=1, coalesce=True
        )
