"""Scheduled jobs, added to whichever APScheduler scheduler runs them (worker, or in-process in serve)."""

from __future__ import annotations

from datetime import UTC, datetime

from apscheduler.schedulers.base import BaseScheduler
from slack_bolt import App

from bot.settings import Settings
from bot.slack_app import replay_stale_deliveries
from storage.db import Database


def add_inbox_sweeper(scheduler: BaseScheduler, app: App, db: Database, settings: Settings) -> None:
    """Replays unfinished deliveries at once (after a crash) and every PRODOPS_INBOX_SWEEP_SECONDS."""
    scheduler.add_job(
        replay_stale_deliveries,
        "interval",
        args=(app, db, settings),
        seconds=settings.inbox_sweep_seconds,
        next_run_time=datetime.now(UTC),
        id="inbox-sweeper",
        max_instances=1,
        coalesce=True,
    )


def add_sla_tick(scheduler: BaseScheduler, db: Database, settings: Settings) -> None:
    """Request SLA reminders and escalations every PRODOPS_SLA_TICK_SECONDS (claims make repeats harmless)."""
    from bot.requests.sla_job import run_sla_tick
    from bot.slack_client import build_client

    client = build_client(settings)
    scheduler.add_job(
        lambda: run_sla_tick(db=db, client=client),
        "interval",
        seconds=settings.sla_tick_seconds,
        id="sla-tick",
        max_instances=1,
        coalesce=True,
    )


def add_metrics_tick(scheduler: BaseScheduler, db: Database, settings: Settings) -> None:
    """Collects due SQL and builtin metrics every PRODOPS_METRICS_TICK_SECONDS (claims make repeats harmless)."""
    from bot.metrics.collector import run_collection_tick
    from bot.slack_client import build_client

    client = build_client(settings)
    scheduler.add_job(
        lambda: run_collection_tick(db=db, client=client),
        "interval",
        seconds=settings.metrics_tick_seconds,
        id="metrics-tick",
        max_instances=1,
        coalesce=True,
    )


def add_metric_alert_tick(scheduler: BaseScheduler, db: Database, settings: Settings) -> None:
    """Metric alerts on new points every PRODOPS_METRICS_TICK_SECONDS (claims make repeats harmless)."""
    from bot.metrics.alerts import run_alert_tick
    from bot.slack_client import build_client

    client = build_client(settings)
    scheduler.add_job(
        lambda: run_alert_tick(db=db, client=client),
        "interval",
        seconds=settings.metrics_tick_seconds,
        id="metric-alert-tick",
        max_instances=1,
        coalesce=True,
    )


def add_digest_tick(scheduler: BaseScheduler, db: Database, settings: Settings) -> None:
    """Digests every PRODOPS_DIGEST_TICK_SECONDS: due periods rendered into the outbox, then delivered.

    Delivery uses a client without the SDK's own retries: every retry goes through the outbox, which first
    checks whether Slack already has the message, so a digest is never posted twice.
    """
    from bot.digests.outbox import delivery_client
    from bot.digests.scheduler import run_digest_tick

    client = delivery_client(settings.slack_bot_token or "", settings.slack_api_url, timeout=15)
    scheduler.add_job(
        lambda: run_digest_tick(db=db, client=client),
        "interval",
        seconds=settings.digest_tick_seconds,
        next_run_time=datetime.now(UTC),  # at start: deliver what a crash left in the outbox
        id="digest-tick",
        max_instances=1,
        coalesce=True,
    )
