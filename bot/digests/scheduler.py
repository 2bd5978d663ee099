"""The digest tick: each subscription's period is rendered once and written to the outbox, whoever runs it.

Which subscriptions are due comes from one indexed range (``paused_at IS NULL AND next_run_at <= now``),
where ``next_run_at`` is the END of the next period to send. For each, the period is worked out from the
subscription's cron in its time zone: a worker that was down across several periods sends ONE digest, for
the latest complete period, and says how many it skipped (``DigestPeriod.missed``) instead of flooding the
channel.

The digest is rendered first, in a read-only session (no write lock is held while it renders). Then one
short transaction claims the period with a conditional update (``WHERE id = :id AND next_run_at = :seen``,
moving ``next_run_at`` to the next fire time strictly after ``now``) and inserts the outbox row. Both happen
or neither does: a worker killed before the commit leaves the subscription due, and one killed after it
leaves a ``pending`` outbox row that :func:`bot.digests.outbox.deliver_pending` delivers later. Two workers
racing over the same subscription both render, but only the one whose update matched writes the row (the
loser's render is wasted, nothing is sent twice); the unique ``(subscription_id, period_key)`` constraint
backs this up if a period is ever claimed again (e.g. a schedule edited back in time).

A render that raises is rolled back and retried on the next tick (the period is not lost). A schedule that
cannot be computed (bad cron or time zone) pauses the subscription and tells its creator.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Protocol, cast

from slack_sdk import WebClient
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bot.digests.schemas import DigestPeriod, RenderedDigest
from bot.metrics.collector import next_run_after
from bot.metrics.sources import SourceError, zone
from bot.slack_client import for_team
from storage import claims
from storage.db import Database
from storage.models import DigestOutbox, DigestSubscription, Workspace
from storage.types import utcnow

if TYPE_CHECKING:
    from bot.digests.outbox import DeliveryResult

logger = logging.getLogger("prodops.digests")

# How far back to look for a cron's previous fire time, shortest first (each covers DST's extra hour).
_LOOKBACKS = (
    timedelta(hours=1, minutes=1),
    timedelta(days=1, hours=2),
    timedelta(days=8),
    timedelta(days=33),
    timedelta(days=367),
    timedelta(days=366 * 4 + 1),
)


class Renderer(Protocol):
    """``bot.digests.render.build_digest``'s signature."""

    def __call__(
        self,
        *,
        db_session: Session,
        subscription: DigestSubscription,
        period: DigestPeriod,
        team_name: str | None = None,
        now: datetime,
    ) -> RenderedDigest: ...


@dataclass
class TickResult:
    """What one tick did (``delivery`` is what the delivery pass after it did, when it ran)."""

    due: int = 0
    claimed: int = 0  # periods this worker claimed and wrote to the outbox
    queued: int = 0  # outbox rows written as pending
    skipped_empty: int = 0  # outbox rows written as skipped (skip-if-empty and nothing happened)
    missed: int = 0  # periods skipped because the worker was down (summed over subscriptions)
    lost_claims: int = 0  # due, but another worker claimed it first
    duplicates: int = 0  # claimed, but the outbox already had this period
    errors: int = 0  # rendering (or the database) failed: rolled back, the period retried on the next tick
    paused: int = 0  # schedule could not be computed: paused, creator told
    delivery: DeliveryResult | None = field(default=None)


# ---- schedules and periods ------------------------------------------------------------------------


def next_fire(*, cron: str, timezone: str, after: datetime) -> datetime:
    """The cron's first fire time strictly after `after` (UTC), once per local wall-clock time.

    When clocks go back, APScheduler fires a time in the repeated hour twice (e.g. 01:30 EDT and 01:30
    EST); like cron, a digest fires only at the first of them.
    """
    tz = zone(timezone)
    fire = next_run_after(cron=cron, timezone=timezone, after=after)
    while fire.astimezone(tz).fold == 1:
        fire = next_run_after(cron=cron, timezone=timezone, after=fire)
    return fire


def previous_fire(*, cron: str, timezone: str, before: datetime) -> datetime | None:
    """The latest fire time of a crontab expression strictly before `before` (UTC), None when none in 4 years."""
    for lookback in _LOOKBACKS:
        fire = next_fire(cron=cron, timezone=timezone, after=before - lookback - timedelta(microseconds=1))
        if fire >= before:
            continue
        while (following := next_fire(cron=cron, timezone=timezone, after=fire)) < before:
            fire = following
        return fire
    return None


def period_for(subscription: DigestSubscription, fire_at: datetime, *, missed: int = 0) -> DigestPeriod:
    """The period a digest sent at `fire_at` covers: [previous fire time, fire_at) in the subscription's cron."""
    timezone = subscription.timezone or "UTC"
    end = _utc(fire_at)
    start = previous_fire(cron=subscription.cron, timezone=timezone, before=end)
    if start is None:  # a schedule that fires less than every 4 years: cover the last one
        start = subscription.last_period_end or end - _LOOKBACKS[-1]
    start_utc, end_utc = _utc(start), _utc(end)
    return DigestPeriod(
        start=start_utc,
        end=end_utc,
        label=period_label(start_utc, end_utc, timezone),
        key=f"{start_utc:%Y-%m-%dT%H:%MZ}/{end_utc:%Y-%m-%dT%H:%MZ}",
        missed=missed,
    )


def period_label(start: datetime, end: datetime, timezone: str) -> str:
    """How a period reads in its time zone: "Tue 24 Nov 2026", "Mon 23 – Sun 29 Nov 2026", "November 2026".

    A period is named by the local days it starts in: [start day, end day). Periods shorter than most of a
    day (hourly crons) also show their times.
    """
    tz = zone(timezone)
    local_start, local_end = start.astimezone(tz), end.astimezone(tz)
    first = local_start.date()
    last = max(first, local_end.date() - timedelta(days=1))
    if end - start < timedelta(hours=20):
        if local_start.date() == local_end.date() or (local_end.hour, local_end.minute) == (0, 0):
            return f"{_day(first)} {first:%b %Y}, {local_start:%H:%M}–{local_end:%H:%M}"
        return f"{_day(first)} {first:%b} {local_start:%H:%M} – {_full(local_end.date())} {local_end:%H:%M}"
    if first == last:
        return _full(first)
    if first.day == 1 and _next_month(first) == last + timedelta(days=1):
        return f"{first:%B %Y}"
    if first.year != last.year:
        return f"{_full(first)} – {_full(last)}"
    if first.month != last.month:
        return f"{_day(first)} {first:%b} – {_full(last)}"
    return f"{_day(first)} – {_full(last)}"


def _day(d: date) -> str:
    return f"{d:%a} {d.day}"


def _full(d: date) -> str:
    return f"{_day(d)} {d:%b %Y}"


def _next_month(d: date) -> date:
    return date(d.year + (d.month == 12), d.month % 12 + 1, 1)


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


@dataclass(frozen=True)
class Plan:
    """What a claim of a due subscription sends: the period ending at `end`, and the next fire after now."""

    period: DigestPeriod
    next_fire: datetime


def plan_claim(subscription: DigestSubscription, *, seen: datetime, now: datetime) -> Plan:
    """Catch-up: the latest complete period ending at or before `now`, and how many periods were skipped."""
    cron, timezone = subscription.cron, subscription.timezone or "UTC"
    end, missed = seen, 0
    following = next_fire(cron=cron, timezone=timezone, after=end)
    while following <= now:
        end, missed = following, missed + 1
        following = next_fire(cron=cron, timezone=timezone, after=end)
    return Plan(period_for(subscription, end, missed=missed), following)


# ---- the tick ---------------------------------------------------------------------------------------


def _default_renderer() -> Renderer:
    from bot.digests.render import build_digest  # imported late: the renderer is a separate module

    return cast(Renderer, build_digest)


def run_digest_tick(
    *,
    db: Database,
    client: WebClient,
    now: datetime | None = None,
    render: Renderer | Callable[..., RenderedDigest] | None = None,
    batch: int = 100,
    deliver: bool = True,
) -> TickResult:
    """Writes each due subscription's digest to the outbox once, then delivers pending outbox rows."""
    now = now or utcnow()
    renderer = cast(Renderer, render) if render is not None else _default_renderer()
    result = TickResult()
    with db.read() as s:
        due = list(
            s.execute(
                select(DigestSubscription.id, DigestSubscription.next_run_at)
                .where(DigestSubscription.paused_at.is_(None), DigestSubscription.next_run_at <= now)
                .order_by(DigestSubscription.next_run_at)
                .limit(batch)
            ).all()
        )
    for subscription_id, seen in due:
        result.due += 1
        if seen is None:  # not due (the range excludes it; here for the type checker)
            continue
        try:
            _run_one(db, client, renderer, subscription_id=subscription_id, seen=seen, now=now, result=result)
        except Exception:  # one broken subscription must not stop the others
            result.errors += 1
            logger.exception("digest %s: rendering failed; retried on the next tick", subscription_id)
    if deliver:
        from bot.digests.outbox import deliver_pending

        result.delivery = deliver_pending(db=db, client=client, now=now)
    return result


def _run_one(
    db: Database,
    client: WebClient,
    render: Renderer,
    *,
    subscription_id: int,
    seen: datetime,
    now: datetime,
    result: TickResult,
) -> None:
    with db.read() as s:
        subscription = s.get(DigestSubscription, subscription_id)
        if subscription is None or subscription.paused_at is not None or subscription.next_run_at != seen:
            result.lost_claims += 1
            return
        schedule_error: SourceError | None = None
        try:
            plan = plan_claim(subscription, seen=seen, now=now)
        except SourceError as exc:
            schedule_error = exc
        else:
            workspace = s.get(Workspace, subscription.team_id)
            rendered = render(
                db_session=s,
                subscription=subscription,
                period=plan.period,
                team_name=workspace.name if workspace else None,
                now=now,
            )
            team_id, channel_id = subscription.team_id, subscription.channel_id
            skip = bool(subscription.skip_if_empty and rendered.is_empty)
    if schedule_error is not None:  # the session is closed: the creator's DM is sent outside it
        _pause_for_schedule(db, client, subscription, seen=seen, error=schedule_error, now=now, result=result)
        return
    with db.session() as s:
        won = claims.claim_row(
            s,
            DigestSubscription,
            where=DigestSubscription.id == subscription_id,
            seen={DigestSubscription.next_run_at: seen, DigestSubscription.paused_at: None},
            values={"next_run_at": plan.next_fire, "last_period_end": plan.period.end},
        )
        if not won:
            result.lost_claims += 1
            return
        result.claimed += 1
        result.missed += plan.period.missed
        row = DigestOutbox(
            team_id=team_id,
            subscription_id=subscription_id,
            period_key=plan.period.key,
            channel_id=channel_id,
            text=rendered.text,
            blocks=rendered.blocks,
            chart_png=None if skip else rendered.chart_png,
            status="skipped" if skip else "pending",
            attempts=0,
            next_attempt_at=now,
        )
        try:
            with s.begin_nested():
                s.add(row)
        except IntegrityError:
            result.duplicates += 1
            logger.warning("digest %s: period %s already in the outbox", subscription_id, plan.period.key)
            return
    if skip:
        result.skipped_empty += 1
    else:
        result.queued += 1
    if plan.period.missed:
        logger.info(
            "digest %s: sent %s, skipped %d earlier period(s)",
            subscription_id,
            plan.period.key,
            plan.period.missed,
        )


def _pause_for_schedule(
    db: Database,
    client: WebClient,
    subscription: DigestSubscription,
    *,
    seen: datetime,
    error: SourceError,
    now: datetime,
    result: TickResult,
) -> None:
    reason = f"its schedule can't be worked out: {error.message}"
    with db.session() as s:
        won = claims.claim_row(
            s,
            DigestSubscription,
            where=DigestSubscription.id == subscription.id,
            seen={DigestSubscription.next_run_at: seen, DigestSubscription.paused_at: None},
            values={"paused_at": now, "paused_reason": reason},
        )
    if not won:
        result.lost_claims += 1
        return
    result.paused += 1
    logger.warning("digest %s paused: %s", subscription.id, reason)
    text = (
        f":warning: I paused the digest *{subscription.name}* for <#{subscription.channel_id}>: {reason}."
        + (f"\n*What to do:* {error.hint}" if error.hint else "")
        + "\nFix its schedule with `/digest edit`, which also resumes it."
    )
    try:
        for_team(client, subscription.team_id).chat_postMessage(
            channel=subscription.created_by_user_id, text=text
        )
    except Exception:  # Slack being down must not undo the pause; the reason stays on the subscription
        logger.exception("digest %s: could not DM %s", subscription.id, subscription.created_by_user_id)
