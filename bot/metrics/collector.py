"""The metric collection tick: runs each due SQL or builtin metric once per scheduled time, whoever runs it.

Which metrics are due comes from one indexed range (``next_run_at <= now``). Each is claimed with a
conditional update (``WHERE id = :id AND next_run_at = :seen``); only the worker whose update matched runs
it, so two workers, or a restarted one, never run the same time twice. The claim moves ``next_run_at`` to
the next cron fire time strictly after ``now`` (a worker that was down for several periods runs once, not
once per missed period), or, when that is further away than a lease, to the end of the lease: a worker that
dies mid-run leaves the metric due again after the lease instead of skipping it, and a finished run moves
it on to the next fire time.

The source runs outside the claim's transaction (no session is held while a warehouse query runs or while
Slack is called). Points are upserted at their timestamps, so a repeated run replaces rather than adds. A
failure is stored in ``last_error`` and sent to the metric's owner in a DM once per distinct error.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from slack_sdk import WebClient
from sqlalchemy import select

from bot.cron import cron_trigger
from bot.metrics.builtin import run_builtin
from bot.metrics.points import Point, upsert_points
from bot.metrics.sources import DEFAULT_TIMEOUT_S, SourceError, datasource_url, run_sql_source, zone
from bot.slack_client import for_team
from storage import claims
from storage.db import Database
from storage.models import Metric
from storage.types import utcnow

logger = logging.getLogger("prodops.metrics")

PULLED_SOURCES = ("sql", "builtin")
CLAIM_LEASE = claims.LEASE * 2  # a warehouse query may run for minutes


@dataclass
class CollectionResult:
    """What one tick did."""

    due: int = 0
    ran: int = 0
    succeeded: int = 0
    failed: int = 0
    points: int = 0
    notified: int = 0
    lost_claims: int = 0  # due, but another worker claimed it first


@dataclass(frozen=True)
class _Claim:
    metric_id: int
    hold: datetime  # next_run_at while this worker runs it
    next_fire: datetime | None  # next_run_at once the run is done
    schedule_error: SourceError | None


def next_run_after(*, cron: str, timezone: str, after: datetime) -> datetime:
    """The first fire time of a crontab expression in a time zone strictly after `after`, as UTC."""
    tz = zone(timezone)
    try:
        trigger = cron_trigger(cron, tz)
    except ValueError as exc:
        raise SourceError(
            f"the schedule “{cron}” is not a valid cron expression ({exc})",
            hint="Use five fields: minute hour day-of-month month day-of-week, e.g. 0 9 * * 1 for Mondays 09:00.",
        ) from None
    fire = trigger.get_next_fire_time(None, after.astimezone(UTC) + timedelta(microseconds=1))
    if fire is None:
        raise SourceError(
            f"the schedule “{cron}” never fires again", hint="Give the metric a repeating schedule."
        )
    return fire.astimezone(UTC)


def run_collection_tick(
    *,
    db: Database,
    client: WebClient,
    now: datetime | None = None,
    batch: int = 100,
    sql_timeout_s: float = DEFAULT_TIMEOUT_S,
) -> CollectionResult:
    """Runs every due SQL and builtin metric once, stores its points, and tells owners about new errors."""
    now = now or utcnow()
    result = CollectionResult()
    with db.read() as s:
        due = list(
            s.execute(
                select(Metric.id, Metric.next_run_at, Metric.schedule_cron, Metric.schedule_timezone)
                .where(
                    Metric.next_run_at <= now,
                    Metric.source.in_(PULLED_SOURCES),
                    Metric.archived_at.is_(None),
                )
                .order_by(Metric.next_run_at)
                .limit(batch)
            ).all()
        )
    for metric_id, seen, cron, timezone in due:
        result.due += 1
        try:
            claim = _claim(db, metric_id=metric_id, seen=seen, cron=cron, timezone=timezone, now=now)
            if claim is None:
                result.lost_claims += 1
                continue
            result.ran += 1
            _collect(db, client, claim, now=now, sql_timeout_s=sql_timeout_s, result=result)
        except Exception:  # one broken metric must not stop the others
            result.failed += 1
            logger.exception("metric %s: collection failed", metric_id)
    return result


def _claim(
    db: Database,
    *,
    metric_id: int,
    seen: datetime | None,
    cron: str | None,
    timezone: str | None,
    now: datetime,
) -> _Claim | None:
    """Moves next_run_at on if it is still `seen`; None when another worker got there first."""
    schedule_error: SourceError | None = None
    next_fire: datetime | None = None
    if cron:
        try:
            next_fire = next_run_after(cron=cron, timezone=timezone or "UTC", after=now)
        except SourceError as exc:
            schedule_error = exc
    lease_end = now + CLAIM_LEASE
    hold = next_fire if next_fire is not None and next_fire <= lease_end else lease_end
    with db.session() as s:
        won = claims.claim_row(
            s,
            Metric,
            where=Metric.id == metric_id,
            seen={Metric.next_run_at: seen},
            values={"next_run_at": hold},
        )
    if not won:
        return None
    return _Claim(metric_id, hold, next_fire, schedule_error)


def _run_source(db: Database, metric_id: int, *, now: datetime, sql_timeout_s: float) -> list[Point]:
    """The metric's points; a SQL query runs with no session of ours open."""
    with db.read() as s:
        metric = s.get(Metric, metric_id)
        if metric is None:
            return []
        if metric.source == "builtin":
            return run_builtin(db_session=s, metric=metric, now=now)
        config: dict[str, Any] = dict(metric.source_config or {})
    datasource = str(config.get("datasource") or "").strip()
    if not datasource:
        raise SourceError(
            "the metric names no data source", hint='Set its data source, e.g. {"datasource": "WAREHOUSE"}.'
        )
    url = datasource_url(datasource)
    return run_sql_source(url=url, query=str(config.get("query") or ""), timeout_s=sql_timeout_s)


def _collect(
    db: Database,
    client: WebClient,
    claim: _Claim,
    *,
    now: datetime,
    sql_timeout_s: float,
    result: CollectionResult,
) -> None:
    points: list[Point] = []
    error: SourceError | None = claim.schedule_error
    if error is None:
        try:
            points = _run_source(db, claim.metric_id, now=now, sql_timeout_s=sql_timeout_s)
        except SourceError as exc:
            error = exc
        except Exception as exc:  # a bug, not the metric's fault: still recorded and reported
            logger.exception("metric %s: source raised", claim.metric_id)
            detail = (str(exc).strip().splitlines() or [""])[0]
            error = SourceError(
                f"unexpected error: {exc.__class__.__name__}: {detail}",
                hint="This looks like a problem in ProdOps itself; the worker's log has the details.",
            )
    with db.session() as s:
        metric = s.get(Metric, claim.metric_id)
        if metric is None:
            return
        previous_error = metric.last_error
        written = upsert_points(db_session=s, team_id=metric.team_id, metric_id=metric.id, points=points)
        metric.last_run_at = now
        metric.last_error = error.message if error else None
        s.flush()
        claims.claim_row(s, Metric, where=Metric.id == claim.metric_id, seen={Metric.next_run_at: claim.hold},
                         values={"next_run_at": claim.next_fire})  # fmt: skip
        notice = (
            _notice(metric, error, claim.next_fire) if error and error.message != previous_error else None
        )
        owner = metric.owner_user_id
        team_id = metric.team_id
    result.points += written
    if error is None:
        result.succeeded += 1
        return
    result.failed += 1
    logger.warning("metric %s: %s", claim.metric_id, error.message)
    if notice and owner:
        try:
            for_team(client, team_id).chat_postMessage(channel=owner, text=notice)
            result.notified += 1
        except Exception:  # Slack being down must not undo the run; the error stays in last_error
            logger.exception("metric %s: could not DM the owner %s", claim.metric_id, owner)


def _notice(metric: Metric, error: SourceError, next_fire: datetime | None) -> str:
    """The DM telling a metric's owner what failed and what to do."""
    lines = [f":warning: I couldn't collect the metric *{metric.name}* (`{metric.key}`): {error.message}."]
    if error.hint:
        lines.append(f"*What to do:* {error.hint}")
    if next_fire is not None:
        try:
            local = next_fire.astimezone(zone(metric.schedule_timezone or "UTC"))
        except SourceError:
            local = next_fire
        lines.append(
            f"I'll try again at {local:%a %d %b %H:%M} {local.tzname()}. "
            "I won't message you again about this error, only if it changes."
        )
    else:
        lines.append("It has no valid schedule, so it won't run again until its schedule is fixed.")
    return "\n".join(lines)
