"""Scheduled jobs, added to whichever APScheduler scheduler runs them (worker, or in-process in serve).

Every job claims its work in the database, so any number of processes may run them side by side.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from apscheduler.schedulers.base import BaseScheduler

from bot.settings import Settings
from storage.db import Database


def _every(
    scheduler: BaseScheduler, job_id: str, seconds: float, func: Callable[[], Any], *, at_start: bool = False
) -> None:
    """One interval job, never overlapping itself; `at_start` runs it as soon as the scheduler starts too."""
    scheduler.add_job(
        func,
        "interval",
        seconds=seconds,
        id=job_id,
        max_instances=1,
        coalesce=True,
        **({"next_run_time": datetime.now(UTC)} if at_start else {}),
    )


def add_scheduled_jobs(scheduler: BaseScheduler, db: Database, settings: Settings) -> None:
    """SLA reminders, metric pulls and alerts, and digests.

    Each job acts in many workspaces: it gets a `TeamClients` (bot/slack_client.py) and calls Slack with
    `clients.for_team(row.team_id)` — the one SLACK_BOT_TOKEN, or in multi-workspace mode that workspace's
    token from the encrypted installation store. Digests are delivered with clients without the SDK's own
    retries: every retry goes through the outbox, which first checks whether Slack already has the message,
    so a digest is never posted twice.
    """
    from bot.digests.scheduler import run_digest_tick
    from bot.insights.jobs import add_insight_jobs
    from bot.metrics.alerts import run_alert_tick
    from bot.metrics.collector import run_collection_tick
    from bot.requests.sla_job import run_sla_tick
    from bot.security.jobs import add_security_jobs
    from bot.slack_client import team_clients

    clients = team_clients(settings, db)
    digest_clients = team_clients(settings, db, retry_handlers=[])
    _every(scheduler, "sla-tick", settings.sla_tick_seconds, lambda: run_sla_tick(db=db, client=clients))
    _every(
        scheduler,
        "metrics-tick",
        settings.metrics_tick_seconds,
        lambda: run_collection_tick(db=db, client=clients),
    )
    _every(
        scheduler,
        "metric-alert-tick",
        settings.metrics_tick_seconds,
        lambda: run_alert_tick(db=db, client=clients),
    )
    _every(
        scheduler,
        "digest-tick",
        settings.digest_tick_seconds,
        lambda: run_digest_tick(db=db, client=digest_clients),
        at_start=True,  # deliver at once what a crash left in the outbox
    )
    # A TeamClients is a WebClient: in single-workspace mode it works as before; for multi-workspace
    # installs, call `clients.for_team(team_id)` (or bot.slack_client.for_team(clients, team_id)).
    add_insight_jobs(scheduler, db, settings, clients)
    add_security_jobs(scheduler, db, settings)
