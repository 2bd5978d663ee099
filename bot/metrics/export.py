"""Metric exports: definitions and points as rows for `bot.export.write_rows` (JSON lines or CSV)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from sqlalchemy import select

from storage.db import Database
from storage.models import Metric, MetricPoint

METRIC_FIELDS = [
    "team_id", "key", "name", "unit", "direction", "target", "summary", "period", "source", "schedule_cron",
    "schedule_timezone", "owner_user_id", "created_at",
]  # fmt: skip
POINT_FIELDS = ["team_id", "metric_key", "ts", "value"]


def metric_rows(db: Database, team_id: str | None = None, batch: int = 500) -> Iterable[dict[str, Any]]:
    """Metric definitions (archived ones included), in id order."""
    last_id = 0
    while True:
        with db.read() as s:
            query = select(Metric).where(Metric.id > last_id).order_by(Metric.id).limit(batch)
            if team_id is not None:
                query = query.where(Metric.team_id == team_id)
            rows = list(s.scalars(query))
            shaped = [{f: getattr(m, f) for f in METRIC_FIELDS} for m in rows]
        if not rows:
            return
        yield from shaped
        last_id = rows[-1].id


def _points(
    db: Database, team_id: str | None, metric_key: str | None, batch: int
) -> Iterator[dict[str, Any]]:
    last_id = 0
    while True:
        with db.read() as s:
            query = (
                select(MetricPoint.id, MetricPoint.team_id, Metric.key, MetricPoint.ts, MetricPoint.value)
                .join(Metric, Metric.id == MetricPoint.metric_id)
                .where(MetricPoint.id > last_id)
                .order_by(MetricPoint.id)
                .limit(batch)
            )
            if team_id is not None:
                query = query.where(MetricPoint.team_id == team_id)
            if metric_key is not None:
                query = query.where(Metric.key == metric_key)
            rows = s.execute(query).all()
        if not rows:
            return
        for _id, team, key, ts, value in rows:
            yield {"team_id": team, "metric_key": key, "ts": ts, "value": value}
        last_id = rows[-1][0]


def point_rows(
    db: Database, team_id: str | None = None, metric_key: str | None = None, batch: int = 1000
) -> Iterable[dict[str, Any]]:
    """Metric points (metric key, ts, value), in the order they were first written; LookupError for an unknown key."""
    if metric_key is not None:
        with db.read() as s:
            query = select(Metric.id).where(Metric.key == metric_key)
            if team_id is not None:
                query = query.where(Metric.team_id == team_id)
            if s.scalar(query.limit(1)) is None:
                raise LookupError(f"no metric with key {metric_key!r}")
    return _points(db, team_id, metric_key, batch)


EXPORTS = {
    "metrics": (metric_rows, METRIC_FIELDS),
    "points": (point_rows, POINT_FIELDS),
}
