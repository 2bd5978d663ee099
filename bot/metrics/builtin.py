"""Builtin metric sources: numbers computed from the bot's own tables, one point per run.

A metric's config is ``{"name": "<builtin>", "params": {...}}``. Each run computes the value for the current
period (the metric's ``period``: day, week from Monday, or month; in UTC) up to ``now`` and writes it at the
period's start, so later runs in the same period replace it with a fresher value. The period before is
computed again over its whole length when a run wrote a point for it, so its tail (what arrived after the
period's last run) is counted; snapshots (``requests_open``, ``requests_overdue``) are not, as they describe
the moment of their run.

- ``feedback_items``: feedback captured in the period (deleted items excluded); ``params.theme`` narrows it.
- ``requests_opened`` / ``requests_closed``: requests created / closed in the period.
- ``requests_open`` / ``requests_overdue``: a snapshot at ``now``.
- ``sla_breach_rate``: breached / judged in the period, a fraction 0-1 (no point when nothing was judged).
- ``time_to_first_response``: the median business time to a first response in the period, in hours (no point
  when nothing was answered).

Request builtins take ``params.type`` (a request type name) and reuse `bot.requests.metrics` for their
definitions. Everything is scoped to the metric's workspace.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bot.metrics.points import Point, points_between
from bot.metrics.sources import SourceError
from bot.requests import types as request_types
from bot.requests.metrics import MetricsRow, request_metrics
from storage.models import FeedbackItem, Metric, Theme

REQUEST_BUILTINS: dict[str, Callable[[MetricsRow], float | None]] = {
    "requests_opened": lambda row: float(row.opened),
    "requests_closed": lambda row: float(row.closed),
    "requests_open": lambda row: float(row.open_now),
    "requests_overdue": lambda row: float(row.overdue_now),
    "sla_breach_rate": lambda row: row.breach_rate,
    "time_to_first_response": lambda row: (
        row.first_response.p50 / timedelta(hours=1) if row.first_response.p50 is not None else None
    ),
}
BUILTINS = ("feedback_items", *REQUEST_BUILTINS)


def period_start(now: datetime, period: str) -> datetime:
    """The start (UTC) of the day, week (Monday) or month that contains `now`."""
    day = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return day
    if period == "week":
        return day - timedelta(days=day.weekday())
    if period == "month":
        return day.replace(day=1)
    raise SourceError(f"the period {period!r} is not one of day, week, month")


def _config(metric: Metric) -> tuple[str, dict[str, Any]]:
    config = metric.source_config or {}
    name = str(config.get("name") or "").strip()
    params = config.get("params") or {}
    if name not in BUILTINS:
        raise SourceError(
            f"“{name}” is not a builtin source" if name else "the metric names no builtin source",
            hint="Use one of: " + ", ".join(BUILTINS) + ".",
        )
    if not isinstance(params, dict):
        raise SourceError("the builtin source's params must be a mapping", hint='e.g. {"type": "Data pull"}')
    return name, params


def _feedback_items(
    db_session: Session, team_id: str, start: datetime, now: datetime, params: dict[str, Any]
) -> float:
    query = select(func.count(FeedbackItem.id)).where(
        FeedbackItem.team_id == team_id,
        FeedbackItem.deleted_at.is_(None),
        FeedbackItem.created_at >= start,
        FeedbackItem.created_at < now,
    )
    theme = str(params.get("theme") or "").strip()
    if theme:
        query = query.join(Theme, Theme.id == FeedbackItem.theme_id).where(
            Theme.team_id == team_id, func.lower(Theme.name) == theme.lower()
        )
    return float(db_session.scalar(query) or 0)


SNAPSHOTS = frozenset({"requests_open", "requests_overdue"})


def run_builtin(*, db_session: Session, metric: Metric, now: datetime) -> list[Point]:
    """The builtin's value for the period containing `now`, as a point at the period's start (none when there
    is no value), after the completed value of the period before when a run wrote a partial one."""
    name, params = _config(metric)
    period = metric.period or "week"
    start = period_start(now, period)
    type_id = None if name == "feedback_items" else _type_id(db_session, metric, params)
    windows = [(start, now)]
    if name not in SNAPSHOTS:
        previous = period_start(start - timedelta(microseconds=1), period)
        if points_between(
            db_session=db_session, team_id=metric.team_id, metric_id=metric.id, start=previous, end=start
        ):
            windows.insert(0, (previous, start))
    points = []
    for window_start, window_end in windows:
        value = _value(db_session, metric.team_id, name, params, type_id, window_start, window_end)
        if value is not None:
            points.append(Point(window_start, value))
    return points


def _type_id(db_session: Session, metric: Metric, params: dict[str, Any]) -> int | None:
    type_name = str(params.get("type") or "").strip()
    if not type_name:
        return None
    request_type = request_types.get_type_by_name(
        db_session=db_session, team_id=metric.team_id, name=type_name
    )
    if request_type is None:
        raise SourceError(
            f"there is no request type named “{type_name}”",
            hint="Check the type's name with /prodops types, or remove the type from the metric.",
        )
    return request_type.id


def _value(
    db_session: Session,
    team_id: str,
    name: str,
    params: dict[str, Any],
    type_id: int | None,
    start: datetime,
    end: datetime,
) -> float | None:
    """The builtin over ``[start, end)``, judged as of ``end``."""
    if name == "feedback_items":
        return _feedback_items(db_session, team_id, start, end, params)
    row = request_metrics(
        db_session=db_session, team_id=team_id, start=start, end=end, now=end, type_id=type_id
    ).total
    value = REQUEST_BUILTINS[name](row)
    return None if value is None else float(value)
