"""Metric points: upserts replace, ranges read back, period summaries are computed in SQL the same everywhere."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.metrics.points import Point, latest_point, points_between, summarise, upsert_points
from storage.db import Database
from storage.models import Metric
from tests.helpers import unique


def _metric(db: Database, team: str) -> int:
    with db.session() as s:
        metric = Metric(team_id=team, key=unique("m"), name="Signups", unit="count", direction="up_is_good",
                        summary="sum", source="push")  # fmt: skip
        s.add(metric)
        s.flush()
        return metric.id


def test_upsert_replaces_and_never_duplicates(db: Database) -> None:
    team = unique("T")
    metric_id = _metric(db, team)
    t = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
    with db.session() as s:
        assert (
            upsert_points(
                db_session=s, team_id=team, metric_id=metric_id, points=[Point(t, 1.0), Point(t, 2.0)]
            )
            == 1
        )
    with db.session() as s:
        upsert_points(
            db_session=s,
            team_id=team,
            metric_id=metric_id,
            points=[Point(t, 5.0), Point(t + timedelta(days=1), 7.0)],
        )
    with db.read() as s:
        assert points_between(db_session=s, team_id=team, metric_id=metric_id) == [
            Point(t, 5.0), Point(t + timedelta(days=1), 7.0)
        ]  # fmt: skip
        assert latest_point(db_session=s, team_id=team, metric_id=metric_id) == Point(
            t + timedelta(days=1), 7.0
        )
        assert points_between(db_session=s, team_id="other", metric_id=metric_id) == []


@pytest.mark.parametrize(
    ("period", "summary", "expected"),
    [
        (
            "day",
            "sum",
            [
                ("2026-11-01", 1.0),
                ("2026-11-02", 5.0),
                ("2026-11-08", 4.0),
                ("2026-11-09", 8.0),
                ("2026-12-01", 16.0),
            ],
        ),
        (
            "week",
            "sum",
            [("2026-10-26", 1.0), ("2026-11-02", 9.0), ("2026-11-09", 8.0), ("2026-11-30", 16.0)],
        ),
        (
            "week",
            "last",
            [("2026-10-26", 1.0), ("2026-11-02", 4.0), ("2026-11-09", 8.0), ("2026-11-30", 16.0)],
        ),
        (
            "week",
            "max",
            [("2026-10-26", 1.0), ("2026-11-02", 4.0), ("2026-11-09", 8.0), ("2026-11-30", 16.0)],
        ),
        (
            "week",
            "min",
            [("2026-10-26", 1.0), ("2026-11-02", 2.0), ("2026-11-09", 8.0), ("2026-11-30", 16.0)],
        ),
        ("month", "avg", [("2026-11-01", 18.0 / 5), ("2026-12-01", 16.0)]),
    ],
)
def test_period_summaries(db: Database, period: str, summary: str, expected: list[tuple[str, float]]) -> None:
    team = unique("T")
    metric_id = _metric(db, team)
    # Sun 1 Nov (week of Mon 26 Oct), Mon 2 Nov ×2, Sun 8 Nov (same ISO week as 2 Nov), Mon 9 Nov, Tue 1 Dec.
    stamps = [
        (datetime(2026, 11, 1, 12, tzinfo=UTC), 1.0),
        (datetime(2026, 11, 2, 8, tzinfo=UTC), 2.0),
        (datetime(2026, 11, 2, 20, tzinfo=UTC), 3.0),
        (datetime(2026, 11, 8, 23, 59, tzinfo=UTC), 4.0),
        (datetime(2026, 11, 9, 0, 0, tzinfo=UTC), 8.0),
        (datetime(2026, 12, 1, 0, 0, tzinfo=UTC), 16.0),
    ]
    with db.session() as s:
        upsert_points(
            db_session=s, team_id=team, metric_id=metric_id, points=[Point(t, v) for t, v in stamps]
        )
    with db.read() as s:
        got = summarise(db_session=s, team_id=team, metric_id=metric_id, period=period, summary=summary)  # type: ignore[arg-type]
    assert [(p.period_start, pytest.approx(p.value)) for p in got] == expected
