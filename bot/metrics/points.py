"""Metric points: idempotent upserts, range reads, and period summaries computed in SQL."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, cast

from sqlalchemy import Table, and_, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from storage.models import MetricPoint
from storage.types import utcnow

Period = Literal["day", "week", "month"]
Summary = Literal["last", "sum", "avg", "max", "min"]


@dataclass(frozen=True)
class Point:
    """A value at a time (aware UTC)."""

    ts: datetime
    value: float


def upsert_points(*, db_session: Session, team_id: str, metric_id: int, points: Sequence[Point]) -> int:
    """Writes points; a point at an existing (metric, ts) replaces its value. Returns how many were written."""
    if not points:
        return 0
    table = cast(Table, MetricPoint.__table__)
    now = utcnow()
    latest: dict[datetime, float] = {}
    for point in points:  # the same ts twice in one batch: the last one wins, as it would one by one
        latest[point.ts] = point.value
    rows = [
        {
            "team_id": team_id,
            "metric_id": metric_id,
            "ts": ts,
            "value": value,
            "created_at": now,
            "updated_at": now,
        }
        for ts, value in latest.items()
    ]
    dialect = db_session.get_bind().dialect.name
    insert = pg_insert(table) if dialect == "postgresql" else sqlite_insert(table)
    stmt: Any = insert.on_conflict_do_update(
        index_elements=["metric_id", "ts"],
        set_={"value": insert.excluded.value, "updated_at": insert.excluded.updated_at},
    )
    db_session.connection().execute(stmt, rows)
    return len(rows)


def points_between(
    *,
    db_session: Session,
    team_id: str,
    metric_id: int,
    start: datetime | None = None,
    end: datetime | None = None,
) -> list[Point]:
    """Points in [start, end), oldest first (an index range on (metric_id, ts))."""
    query = select(MetricPoint.ts, MetricPoint.value).where(
        MetricPoint.team_id == team_id, MetricPoint.metric_id == metric_id
    )
    if start is not None:
        query = query.where(MetricPoint.ts >= start)
    if end is not None:
        query = query.where(MetricPoint.ts < end)
    return [Point(ts, value) for ts, value in db_session.execute(query.order_by(MetricPoint.ts))]


def latest_point(*, db_session: Session, team_id: str, metric_id: int) -> Point | None:
    """The newest point of a metric."""
    row = db_session.execute(
        select(MetricPoint.ts, MetricPoint.value)
        .where(MetricPoint.team_id == team_id, MetricPoint.metric_id == metric_id)
        .order_by(MetricPoint.ts.desc())
        .limit(1)
    ).first()
    return Point(row[0], row[1]) if row else None


def _bucket(dialect: str, period: Period) -> Any:
    """SQL that maps a point's ts to the start of its period (UTC), as text the same on both backends."""
    ts = MetricPoint.ts
    if dialect == "postgresql":
        truncated = func.date_trunc(period, func.timezone("UTC", ts))
        return func.to_char(truncated, "YYYY-MM-DD")
    if period == "day":
        return func.strftime("%Y-%m-%d", ts)
    if period == "month":
        return func.strftime("%Y-%m-01", ts)
    # ISO weeks start on Monday: the coming Sunday (or today, on a Sunday), then back six days.
    return func.date(ts, "weekday 0", "-6 days")


@dataclass(frozen=True)
class PeriodValue:
    """A period's start (YYYY-MM-DD, UTC) and its summarised value."""

    period_start: str
    value: float
    points: int


def summarise(
    *,
    db_session: Session,
    team_id: str,
    metric_id: int,
    period: Period,
    summary: Summary,
    start: datetime | None = None,
    end: datetime | None = None,
) -> list[PeriodValue]:
    """One value per period, computed in SQL: sum/avg/max/min directly; last = the value at the latest ts."""
    dialect = db_session.get_bind().dialect.name
    bucket = _bucket(dialect, period).label("bucket")
    where = [MetricPoint.team_id == team_id, MetricPoint.metric_id == metric_id]
    if start is not None:
        where.append(MetricPoint.ts >= start)
    if end is not None:
        where.append(MetricPoint.ts < end)
    if summary != "last":
        aggregated = {
            "sum": func.sum(MetricPoint.value),
            "avg": func.avg(MetricPoint.value),
            "max": func.max(MetricPoint.value),
            "min": func.min(MetricPoint.value),
        }[summary]
        rows = db_session.execute(
            select(bucket, aggregated, func.count()).where(*where).group_by(bucket).order_by(bucket)
        )
        return [PeriodValue(str(b), float(v), int(n)) for b, v, n in rows]
    inner = (
        select(bucket, func.max(MetricPoint.ts).label("last_ts"), func.count().label("n"))
        .where(*where)
        .group_by(bucket)
        .subquery()
    )
    rows = db_session.execute(
        select(inner.c.bucket, MetricPoint.value, inner.c.n)
        .join(MetricPoint, and_(MetricPoint.metric_id == metric_id, MetricPoint.ts == inner.c.last_ts))
        .order_by(inner.c.bucket)
    )
    return [PeriodValue(str(b), float(v), int(n)) for b, v, n in rows]
