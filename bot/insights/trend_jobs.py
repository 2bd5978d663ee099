"""Scheduled jobs for closing the loop and account briefs; `bot/jobs.py` adds them to the scheduler.

Both claim their work in the database (a conditional update per notice or subscription), so any number of
processes may run them side by side.
"""

from __future__ import annotations

from datetime import UTC, datetime

from apscheduler.schedulers.base import BaseScheduler
from slack_sdk import WebClient

from bot.accounts.brief import run_brief_tick
from bot.insights.ship_delivery import deliver_ship_notices
from bot.settings import Settings
from bot.slack_client import team_clients
from storage.db import Database

SHIP_TICK_SECONDS = 10
BRIEF_TICK_SECONDS = 300


def add_trend_jobs(scheduler: BaseScheduler, db: Database, settings: Settings, client: WebClient) -> None:
    """Ship notice delivery (every few seconds, at start too) and the monthly account brief tick.

    `client` is the jobs' TeamClients (each row is sent with its workspace's client). Ship notices go through
    clients without the SDK's retries (like the digest outbox): a 429 is waited out by the notice's own
    next_attempt_at, never by a worker thread sleeping, and a retry checks the thread first.
    """
    ship_client = team_clients(settings, db, retry_handlers=[])
    scheduler.add_job(
        lambda: deliver_ship_notices(db=db, client=ship_client),
        "interval",
        seconds=SHIP_TICK_SECONDS,
        id="ship-notice-tick",
        max_instances=1,
        coalesce=True,
        next_run_time=datetime.now(UTC),
    )
    scheduler.add_job(
        lambda: run_brief_tick(db=db, client=client),
        "interval",
        seconds=BRIEF_TICK_SECONDS,
        id="account-brief-tick",
        max_instances=1,
        coalesce=True,
    )
