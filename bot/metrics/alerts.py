"""Metric alerts: pure rule evaluation, and the tick that evaluates every new point exactly once.

What a rule judges: the value of the new point's period as of that point (the metric's summary over the
points of its period up to and including it; with one point per period, or summary `last`, that is the
point's own value), against the earlier periods' summarised values.

- above / below: that value against `threshold`.
- change: |value − previous| / |previous| × 100 > `threshold`, previous = the previous period's value (none,
  or 0: does not fire).
- anomaly: outside mean ± k·sd (sample standard deviation) of the periods with data among the `window` before
  it; at least 3 are needed; when sd is 0, any different value fires.

Which points a tick evaluates: those newer than the newest point already evaluated for the rule (its
`metric_alert_events`); a rule never evaluated starts from the metric's latest point only (no alert storm
over old history). Points recorded later with an older ts than that are not evaluated. Each point is
claimed by inserting its unique (alert_id, point_ts) event; a worker that loses the insert skips the point.
The cooldown is taken with a conditional update of `last_fired_at`, so two workers cannot both fire inside
one cooldown.

Sending: a firing queues its message in the one outbox (bot/outbox.py, idempotency key
``alert-event:<event id>``) in the same transaction as the event, held back until its chart is drawn
(outside the transaction) and attached. The tick then delivers due alert messages: a 429 or a 5xx storm
is retried like a digest (Retry-After, backoff, the history check before a retry), so an alert whose post
failed is posted later, once; a permanent error (channel_not_found …) is recorded on the outbox row. The
event's `message_ts` is set when the message is posted. A worker killed before attaching the chart leaves
the message to go out without it after the lease.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import cast

from slack_sdk import WebClient
from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from bot import outbox
from bot.metrics import messaging
from bot.metrics.chart import render_chart
from bot.metrics.points import Period, PeriodValue, Point, Summary, latest_point, summarise
from storage import claims
from storage.claims import LEASE
from storage.db import Database
from storage.models import Metric, MetricAlert, MetricAlertEvent, MetricPoint, SlackOutbox
from storage.types import utcnow

logger = logging.getLogger("prodops.metrics.alerts")

DEFAULT_WINDOW = 8
DEFAULT_K = 3.0
MIN_ANOMALY_PERIODS = 3
CHART_PERIODS = 12
TICK = timedelta(microseconds=1)


# ---- periods -------------------------------------------------------------------------------------------


def period_floor(ts: datetime, period: str) -> datetime:
    """The start (UTC) of the period holding ts: the day, the ISO week (Monday), or the month."""
    day = ts.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return day
    if period == "month":
        return day.replace(day=1)
    return day - timedelta(days=day.weekday())


def periods_back(start: datetime, period: str, count: int) -> datetime:
    """The start of the period `count` periods before the one starting at `start`."""
    if period == "day":
        return start - timedelta(days=count)
    if period == "month":
        months = start.year * 12 + start.month - 1 - count
        return start.replace(year=months // 12, month=months % 12 + 1, day=1)
    return start - timedelta(weeks=count)


def recent_periods(
    *, db_session: Session, metric: Metric, count: int, at: datetime | None = None
) -> list[PeriodValue]:
    """Up to `count` periods (oldest first) ending with the period of `at`, as of `at` (default: the latest point)."""
    if at is None:
        latest = latest_point(db_session=db_session, team_id=metric.team_id, metric_id=metric.id)
        if latest is None:
            return []
        at = latest.ts
    period = metric.period or "week"
    start = periods_back(period_floor(at, period), period, max(count - 1, 0))
    values = summarise(
        db_session=db_session,
        team_id=metric.team_id,
        metric_id=metric.id,
        period=cast(Period, period),
        summary=cast(Summary, metric.summary),
        start=start,
        end=at + TICK,
    )
    return values[-count:]


def metric_view(
    *, db_session: Session, metric: Metric, count: int, at: datetime | None = None
) -> messaging.MetricView:
    """A snapshot of a metric and its recent periods, safe to use after the session closes."""
    return messaging.MetricView(
        key=metric.key,
        name=metric.name,
        unit=metric.unit,
        direction=metric.direction,
        target=metric.target,
        period=metric.period or "week",
        summary=metric.summary,
        source=metric.source,
        periods=tuple(recent_periods(db_session=db_session, metric=metric, count=count, at=at)),
    )


# ---- rules ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AlertRule:
    """What evaluation needs of a rule and its metric."""

    kind: str  # above|below|change|anomaly
    threshold: float | None = None
    window: int | None = None
    k: float | None = None
    unit: str = "count"
    period: str = "week"


@dataclass(frozen=True)
class AlertDecision:
    """Whether the rule is met, and why (or why not)."""

    fires: bool
    reason: str


def rule_of(alert: MetricAlert, metric: Metric) -> AlertRule:
    """The rule of an alert row."""
    return AlertRule(
        kind=alert.kind,
        threshold=alert.threshold,
        window=alert.window,
        k=alert.k,
        unit=metric.unit,
        period=metric.period or "week",
    )


def describe(rule: AlertRule) -> str:
    """The rule in words."""
    return messaging.describe_rule(
        kind=rule.kind,
        threshold=rule.threshold,
        window=rule.window,
        k=rule.k,
        unit=rule.unit,
        period=rule.period,
    )


def evaluate(
    *, rule: AlertRule, history: Sequence[PeriodValue] | Sequence[float], value: float
) -> AlertDecision:
    """Judges `value` (the new period value) against the rule and the earlier periods (oldest first)."""
    earlier = [h.value if isinstance(h, PeriodValue) else float(h) for h in history]
    shown = messaging.format_value(value, rule.unit)
    noun = messaging.PERIOD_WORDS.get(rule.period, rule.period)
    if rule.kind in ("above", "below"):
        if rule.threshold is None:
            return AlertDecision(False, "the rule has no threshold")
        line = messaging.format_value(rule.threshold, rule.unit)
        met = value > rule.threshold if rule.kind == "above" else value < rule.threshold
        if met:
            return AlertDecision(True, f"{shown} is {rule.kind} {line}")
        return AlertDecision(False, f"{shown} is not {rule.kind} {line}")
    if rule.kind == "change":
        if rule.threshold is None:
            return AlertDecision(False, "the rule has no threshold")
        if not earlier:
            return AlertDecision(False, f"no previous {noun} to compare with")
        previous = earlier[-1]
        if previous == 0:
            return AlertDecision(False, f"the previous {noun} was 0, so a percent change is undefined")
        change = (value - previous) / abs(previous) * 100
        words = (
            f"{'up' if change > 0 else 'down'} {abs(change):.1f}% vs the previous {noun} "
            f"({messaging.format_value(previous, rule.unit)} → {shown})"
        )
        if abs(change) > rule.threshold:
            return AlertDecision(True, words)
        return AlertDecision(False, f"{words}, within {rule.threshold:g}%")
    if rule.kind == "anomaly":
        window = rule.window or DEFAULT_WINDOW
        k = DEFAULT_K if rule.k is None else rule.k
        trailing = earlier[-window:]
        if len(trailing) < MIN_ANOMALY_PERIODS:
            return AlertDecision(
                False,
                f"only {len(trailing)} earlier {noun}s; an anomaly needs at least {MIN_ANOMALY_PERIODS}",
            )
        mean = statistics.fmean(trailing)
        sd = statistics.stdev(trailing)
        low, high = mean - k * sd, mean + k * sd
        band = (
            f"the usual range over the last {len(trailing)} {noun}s is "
            f"{messaging.format_value(low, rule.unit)} – {messaging.format_value(high, rule.unit)}"
        )
        if sd == 0:
            if value != mean:
                return AlertDecision(
                    True, f"{shown} differs from a constant {messaging.format_value(mean, rule.unit)}"
                )
            return AlertDecision(False, f"{shown} equals a constant series")
        if value < low or value > high:
            sigmas = (value - mean) / sd
            return AlertDecision(True, f"{shown} is {sigmas:+.1f}σ from the mean; {band}")
        return AlertDecision(False, f"{shown} is within {k:g}σ; {band}")
    return AlertDecision(False, f"unknown rule kind {rule.kind!r}")


# ---- the tick ------------------------------------------------------------------------------------------


@dataclass
class AlertResult:
    """What one tick did."""

    evaluated: int = 0  # points claimed and evaluated by this worker
    fired: int = 0  # alerts that fired (queued in the outbox)
    cooling: int = 0  # met the rule but inside the cooldown
    skipped: int = 0  # points another worker had claimed
    delivery: outbox.OutboxResult | None = None  # what the delivery pass after evaluating did


@dataclass(frozen=True)
class _Firing:
    """An alert to send, read before the session closed."""

    event_id: int
    outbox_id: int
    channel_id: str
    view: messaging.MetricView
    value: float
    period_start: str
    rule_text: str
    reason: str


def _new_points(s: Session, alert_id: int, team_id: str, metric_id: int, batch: int) -> list[Point]:
    """Points of the metric newer than the newest one evaluated for this alert (or the latest one, first)."""
    last = s.scalar(select(func.max(MetricAlertEvent.point_ts)).where(MetricAlertEvent.alert_id == alert_id))
    if last is None:
        newest = latest_point(db_session=s, team_id=team_id, metric_id=metric_id)
        return [newest] if newest else []
    rows = s.execute(
        select(MetricPoint.ts, MetricPoint.value)
        .where(MetricPoint.team_id == team_id, MetricPoint.metric_id == metric_id, MetricPoint.ts > last)
        .order_by(MetricPoint.ts)
        .limit(batch)
    )
    return [Point(ts, value) for ts, value in rows]


def _claim(s: Session, alert: MetricAlert, point: Point, now: datetime) -> MetricAlertEvent | None:
    """Inserts the (alert, point) event; None when another worker already has it."""
    event = MetricAlertEvent(
        team_id=alert.team_id,
        alert_id=alert.id,
        point_ts=point.ts,
        value=point.value,
        fired=False,
        evaluated_at=now,
    )
    return event if claims.claim_by_insert(s, event) else None


def _take_cooldown(s: Session, alert_id: int, cooldown_minutes: int, now: datetime) -> bool:
    """Sets last_fired_at = now unless the alert fired within its cooldown; True when this call set it."""
    cutoff = now - timedelta(minutes=max(cooldown_minutes, 0))
    return claims.claim_row(
        s,
        MetricAlert,
        where=[
            MetricAlert.id == alert_id,
            or_(MetricAlert.last_fired_at.is_(None), MetricAlert.last_fired_at <= cutoff),
        ],
        seen={},
        values={"last_fired_at": now},
    )


def _evaluate_point(
    db: Database, alert_id: int, point: Point, now: datetime, result: AlertResult
) -> _Firing | None:
    """Claims and evaluates one point in one transaction; returns what to send when it fires."""
    with db.session() as s:
        alert = s.get(MetricAlert, alert_id)
        metric = s.get(Metric, alert.metric_id) if alert else None
        if alert is None or metric is None:
            return None
        event = _claim(s, alert, point, now)
        if event is None:
            result.skipped += 1
            return None
        result.evaluated += 1
        rule = rule_of(alert, metric)
        window = (rule.window or DEFAULT_WINDOW) if rule.kind == "anomaly" else 1
        periods = recent_periods(db_session=s, metric=metric, count=window + 1, at=point.ts)
        current = periods[-1]
        decision = evaluate(rule=rule, history=periods[:-1], value=current.value)
        logger.info(
            "alert %s on %s at %s: %s (%s)",
            alert.id,
            metric.key,
            point.ts.isoformat(),
            "met" if decision.fires else "not met",
            decision.reason,
        )
        if not decision.fires:
            return None
        if not _take_cooldown(s, alert.id, alert.cooldown_minutes, now):
            result.cooling += 1
            return None
        event.fired = True
        s.flush()
        view = metric_view(db_session=s, metric=metric, count=CHART_PERIODS, at=point.ts)
        rule_text = describe(rule)
        queued = outbox.enqueue(
            s,
            team_id=alert.team_id,
            kind=OUTBOX_KIND,
            key=f"alert-event:{event.id}",
            channel_id=alert.channel_id,
            text=messaging.alert_text(view=view, value=current.value, rule_text=rule_text),
            blocks=messaging.alert_blocks(view=view, value=current.value, period_start=current.period_start,
                                          rule_text=rule_text, reason=decision.reason),
            chart_name=f"{view.key}.png",
            chart_title=f"{view.name} — last {len(view.periods)} {view.period}s",
            now=now,
            not_before=now + LEASE,  # until the chart is attached (a worker killed first: sent without it)
        )  # fmt: skip
        assert queued is not None  # the event id is new, so is its key
        return _Firing(
            event_id=event.id,
            outbox_id=queued.id,
            channel_id=alert.channel_id,
            view=view,
            value=current.value,
            period_start=current.period_start,
            rule_text=rule_text,
            reason=decision.reason,
        )


OUTBOX_KIND = "alert"


def alert_chart(view: messaging.MetricView) -> bytes:
    """The chart posted in an alert's thread: the metric's recent periods."""
    return render_chart(title=view.name, values=list(view.periods), unit=view.unit, target=view.target)


def _record_message_ts(s: Session, row: SlackOutbox) -> None:
    """The alert's message is posted: its ts goes on the event (the key is ``alert-event:<id>``)."""
    event_id = int(row.idempotency_key.split(":", 1)[1])
    s.execute(
        update(MetricAlertEvent).where(MetricAlertEvent.id == event_id).values(message_ts=row.message_ts)
    )


def deliver_alerts(
    *, db: Database, client: WebClient, now: datetime | None = None, team_id: str | None = None
) -> outbox.OutboxResult:
    """Posts every due alert message (new ones, and retries of those Slack refused for now) once."""
    return outbox.deliver_outbox(
        db=db, client=client, kinds=(OUTBOX_KIND,), now=now, team_id=team_id, on_sent=_record_message_ts
    )


def run_alert_tick(
    *,
    db: Database,
    client: WebClient,
    now: datetime | None = None,
    team_id: str | None = None,
    batch: int = 500,
) -> AlertResult:
    """Evaluates every alert rule (of one workspace, when given) on its new points, and sends what fires."""
    now = now or utcnow()
    result = AlertResult()
    query = (
        select(MetricAlert.id, MetricAlert.team_id, MetricAlert.metric_id)
        .join(Metric, Metric.id == MetricAlert.metric_id)
        .where(Metric.archived_at.is_(None))
        .order_by(MetricAlert.id)
    )
    if team_id is not None:
        query = query.where(MetricAlert.team_id == team_id)
    with db.read() as s:
        alerts = list(s.execute(query).all())
    for alert_id, alert_team_id, metric_id in alerts:
        with db.read() as s:
            points = _new_points(s, alert_id, alert_team_id, metric_id, batch)
        for point in points:
            firing = _evaluate_point(db, alert_id, point, now, result)
            if firing is None:
                continue
            result.fired += 1
            try:
                png = alert_chart(firing.view)
            except Exception:  # the alert still goes out, without its chart
                logger.exception("alert %s: chart could not be drawn", alert_id)
                png = None
            if png is None or not outbox.attach_chart(db, outbox_id=firing.outbox_id, png=png, now=now):
                _release(db, firing.outbox_id, now)
    result.delivery = deliver_alerts(db=db, client=client, now=now, team_id=team_id)
    return result


def _release(db: Database, outbox_id: int, now: datetime) -> None:
    """Makes a queued alert due without a chart."""
    with db.session() as s:
        claims.claim_row(
            s,
            SlackOutbox,
            where=SlackOutbox.id == outbox_id,
            seen={SlackOutbox.status: "pending", SlackOutbox.attempts: 0},
            values={"next_attempt_at": now},
        )
