"""Metric sources: read-only SQL with timeouts (SQLite files and Postgres), manual records, and builtins."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url

from bot.metrics.builtin import BUILTINS, period_start, run_builtin
from bot.metrics.points import Point, points_between, upsert_points
from bot.metrics.sources import (
    SourceError,
    datasource_url,
    record_manual,
    run_sql_source,
    to_utc,
)
from storage.db import Database
from storage.models import FeedbackItem, Metric, Request, RequestType, Theme
from tests.helpers import unique

DAYS = [("2026-03-01", 10.0), ("2026-03-02", 12.5), ("2026-03-03", 9.0), ("2026-03-04", 14.0)]
SLOW_SQLITE = (
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000000000) "
    "SELECT '2026-03-01', count(*) FROM n"
)


def _points(rows: list[tuple[str, float]]) -> list[Point]:
    return [Point(datetime.fromisoformat(d).replace(tzinfo=UTC), v) for d, v in rows]


@pytest.fixture
def sqlite_file(tmp_path: Path) -> Path:
    """A SQLite file (in a directory whose name needs URI escaping) with a table of daily values."""
    folder = tmp_path / "data dir #1 50%"
    folder.mkdir()
    path = folder / "warehouse.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE daily (day TEXT PRIMARY KEY, value REAL)")
        conn.executemany("INSERT INTO daily VALUES (?, ?)", DAYS)
    conn.close()
    return path


def _sqlite_rows(path: Path) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT * FROM daily ORDER BY day").fetchall()
    finally:
        conn.close()


# ---- data sources and rows --------------------------------------------------------------------------


def test_datasource_url_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRODOPS_DATASOURCE_WAREHOUSE", "sqlite:////tmp/w.db")
    assert datasource_url("warehouse") == "sqlite:////tmp/w.db"
    monkeypatch.delenv("PRODOPS_DATASOURCE_WAREHOUSE")
    with pytest.raises(SourceError) as missing:
        datasource_url("Warehouse")
    assert "PRODOPS_DATASOURCE_WAREHOUSE" in missing.value.message
    assert missing.value.hint and "PRODOPS_DATASOURCE_WAREHOUSE" in missing.value.hint
    with pytest.raises(SourceError, match="not a valid data source name"):
        datasource_url("ware house; rm")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (date(2026, 3, 1), datetime(2026, 3, 1, tzinfo=UTC)),
        (datetime(2026, 3, 1, 10, 30), datetime(2026, 3, 1, 10, 30, tzinfo=UTC)),
        (datetime(2026, 3, 1, 10, tzinfo=timezone(timedelta(hours=2))), datetime(2026, 3, 1, 8, tzinfo=UTC)),
        ("2026-03-01", datetime(2026, 3, 1, tzinfo=UTC)),
        ("2026-03-01T10:00:00Z", datetime(2026, 3, 1, 10, tzinfo=UTC)),
        ("2026-03-01 10:00:00-05:00", datetime(2026, 3, 1, 15, tzinfo=UTC)),
        (1772323200, datetime(2026, 3, 1, tzinfo=UTC)),
        (Decimal("1772323200.5"), datetime(2026, 3, 1, 0, 0, 0, 500000, tzinfo=UTC)),
    ],
)
def test_timestamps_become_aware_utc(raw: Any, expected: datetime) -> None:
    assert to_utc(raw) == expected


def test_sqlite_file_reads_points(sqlite_file: Path) -> None:
    points = run_sql_source(
        url=f"sqlite:///{sqlite_file}", query="SELECT day, value FROM daily ORDER BY day;"
    )
    assert points == _points(DAYS)
    epoch = run_sql_source(url=f"sqlite:///{sqlite_file}", query="SELECT 1772323200, 3")
    assert epoch == [Point(datetime(2026, 3, 1, tzinfo=UTC), 3.0)]
    assert run_sql_source(url=f"sqlite:///{sqlite_file}", query="SELECT day, value FROM daily WHERE 0") == []


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("SELECT day, value, 1 FROM daily", "row 1 has 3 columns"),
        ("SELECT day, NULL FROM daily", "row 1: the value is empty"),
        (
            "SELECT day, CASE WHEN day = '2026-03-03' THEN 'lots' ELSE value END FROM daily ORDER BY day",
            "row 3: the value 'lots' is not a number",
        ),  # fmt: skip
        ("SELECT day, 1e999 FROM daily", "row 1: the value inf is not a finite number"),
        ("SELECT 'yesterday', value FROM daily", "row 1: the timestamp 'yesterday' is not an ISO 8601"),
        ("SELECT NULL, value FROM daily", "row 1: the timestamp is empty"),
    ],
)
def test_bad_rows_say_which_row_and_why(sqlite_file: Path, query: str, expected: str) -> None:
    with pytest.raises(SourceError) as error:
        run_sql_source(url=f"sqlite:///{sqlite_file}", query=query)
    assert expected in error.value.message


def test_rows_are_capped(sqlite_file: Path) -> None:
    with pytest.raises(SourceError, match="more than 3 rows"):
        run_sql_source(url=f"sqlite:///{sqlite_file}", query="SELECT day, value FROM daily", max_rows=3)
    assert len(run_sql_source(url=f"sqlite:///{sqlite_file}", query="SELECT * FROM daily", max_rows=4)) == 4


def test_sqlite_slow_query_times_out(sqlite_file: Path) -> None:
    started = time.monotonic()
    with pytest.raises(SourceError) as error:
        run_sql_source(url=f"sqlite:///{sqlite_file}", query=SLOW_SQLITE, timeout_s=1)
    assert time.monotonic() - started < 5
    assert error.value.message == "the query took longer than 1 s and was stopped"


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("DELETE FROM daily", "queries must only read"),
        ("CREATE TABLE stolen (x)", "queries must only read"),
        ("UPDATE daily SET value = 0", "queries must only read"),
        ("ATTACH DATABASE '{dir}/other.db' AS other", "queries must only read"),
        ("VACUUM INTO '{dir}/copy.db'", "queries must only read"),
        ("PRAGMA query_only = OFF", "queries must only read"),
        ("SELECT day, value FROM daily; DELETE FROM daily", "more than one statement"),
    ],
)
def test_sqlite_writes_are_refused(sqlite_file: Path, query: str, expected: str) -> None:
    before = sorted(p.name for p in sqlite_file.parent.iterdir())
    with pytest.raises(SourceError) as error:
        run_sql_source(url=f"sqlite:///{sqlite_file}", query=query.format(dir=sqlite_file.parent))
    assert expected in error.value.message
    assert _sqlite_rows(sqlite_file) == DAYS
    assert sorted(p.name for p in sqlite_file.parent.iterdir()) == before


def test_unusable_urls_are_explained(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="could not open the SQLite file"):
        run_sql_source(url=f"sqlite:///{tmp_path / 'missing.db'}", query="SELECT 1, 2")
    assert not (tmp_path / "missing.db").exists()  # read-only mode never creates it
    with pytest.raises(SourceError, match="in-memory"):
        run_sql_source(url="sqlite://", query="SELECT 1, 2")
    with pytest.raises(SourceError, match="mysql data sources are not supported"):
        run_sql_source(url="mysql://u@h/db", query="SELECT 1, 2")
    with pytest.raises(SourceError, match="not a valid SQLAlchemy URL"):
        run_sql_source(url="not a url", query="SELECT 1, 2")


# ---- Postgres ---------------------------------------------------------------------------------------


@pytest.fixture
def pg_source(postgres_empty_url: str) -> Iterator[str]:
    """A fresh Postgres database with a table of daily values."""
    engine = create_engine(postgres_empty_url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE daily (day date PRIMARY KEY, at timestamptz, value numeric)"))
        for day, value in DAYS:
            conn.execute(
                text("INSERT INTO daily VALUES (:d, :d, :v)"), {"d": date.fromisoformat(day), "v": value}
            )
    yield postgres_empty_url
    engine.dispose()


def _pg_rows(url: str) -> list[tuple[Any, ...]]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text("SELECT day, value FROM daily ORDER BY day"))]
    finally:
        engine.dispose()


def test_postgres_reads_points(pg_source: str) -> None:
    expected = _points(DAYS)
    assert run_sql_source(url=pg_source, query="SELECT day, value FROM daily ORDER BY day") == expected
    assert run_sql_source(url=pg_source, query="SELECT at, value FROM daily ORDER BY at") == expected
    like = "SELECT day, value FROM daily WHERE to_char(day, 'YYYY') LIKE '20%' ORDER BY day"
    assert run_sql_source(url=pg_source, query=like) == expected
    plain = make_url(pg_source).set(drivername="postgresql").render_as_string(hide_password=False)
    assert run_sql_source(url=plain, query="SELECT day, value FROM daily ORDER BY day") == expected


def test_postgres_slow_query_times_out(pg_source: str) -> None:
    started = time.monotonic()
    with pytest.raises(SourceError) as error:
        run_sql_source(url=pg_source, query="SELECT now(), 1 FROM pg_sleep(5)", timeout_s=1)
    assert time.monotonic() - started < 4
    assert error.value.message == "the query took longer than 1 s and was stopped"


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("DELETE FROM daily", "queries must only read"),
        ("CREATE TABLE stolen (x int)", "queries must only read"),
        (
            "WITH gone AS (DELETE FROM daily RETURNING day, value) SELECT * FROM gone",
            "queries must only read",
        ),
        ("SELECT day, value FROM daily; DELETE FROM daily", "more than one statement"),
        ("COMMIT; DELETE FROM daily", "more than one statement"),
        ("SELECT day, nope FROM daily", 'the query failed: column "nope" does not exist'),
    ],
)
def test_postgres_writes_are_refused(pg_source: str, query: str, expected: str) -> None:
    with pytest.raises(SourceError) as error:
        run_sql_source(url=pg_source, query=query)
    assert expected in error.value.message
    assert [(d.isoformat(), float(v)) for d, v in _pg_rows(pg_source)] == DAYS


def test_postgres_unreachable_is_explained() -> None:
    with pytest.raises(SourceError, match="could not connect to the data source"):
        run_sql_source(url="postgresql+psycopg://nobody@127.0.0.1:1/none", query="SELECT 1, 2", timeout_s=2)


# ---- manual records ---------------------------------------------------------------------------------


def _metric(db: Database, team: str, **columns: Any) -> int:
    values: dict[str, Any] = {
        "key": unique("m"), "name": "Metric", "unit": "count", "direction": "up_is_good", "summary": "last",
        "period": "week", "source": "manual", "schedule_timezone": "UTC", **columns,
    }  # fmt: skip
    with db.session() as s:
        metric = Metric(team_id=team, **values)
        s.add(metric)
        s.flush()
        return metric.id


def test_record_manual_at_local_midnight_or_now(db: Database) -> None:
    team = unique("T")
    metric_id = _metric(db, team, schedule_timezone="Europe/London")
    now = datetime(2026, 7, 3, 15, 30, tzinfo=UTC)
    with db.session() as s:
        metric = s.get(Metric, metric_id)
        assert metric is not None
        summer = record_manual(db_session=s, metric=metric, value=42, day=date(2026, 7, 1), now=now)
        winter = record_manual(db_session=s, metric=metric, value=7.5, day=date(2026, 1, 5), now=now)
        today = record_manual(db_session=s, metric=metric, value=3, day=None, now=now)
        again = record_manual(db_session=s, metric=metric, value=43, day=date(2026, 7, 1), now=now)
    assert summer.ts == datetime(2026, 6, 30, 23, 0, tzinfo=UTC)  # 00:00 BST
    assert winter.ts == datetime(2026, 1, 5, 0, 0, tzinfo=UTC)  # 00:00 GMT
    assert today == Point(now, 3.0) and again == Point(summer.ts, 43.0)
    with db.read() as s:
        assert points_between(db_session=s, team_id=team, metric_id=metric_id) == [winter, again, today]


def test_record_manual_refuses_other_sources_and_bad_values(db: Database) -> None:
    team = unique("T")
    pulled = _metric(db, team, source="sql", source_config={"datasource": "W", "query": "SELECT 1, 1"})
    manual = _metric(db, team)
    now = datetime(2026, 7, 3, tzinfo=UTC)
    with db.session() as s:
        metric = s.get(Metric, pulled)
        assert metric is not None
        with pytest.raises(SourceError) as error:
            record_manual(db_session=s, metric=metric, value=1, day=None, now=now)
        assert f"{metric.key} gets its numbers from its sql source" in error.value.message
        other = s.get(Metric, manual)
        assert other is not None
        with pytest.raises(SourceError, match="not a finite number"):
            record_manual(db_session=s, metric=other, value=float("nan"), day=None, now=now)
    with db.read() as s:
        assert points_between(db_session=s, team_id=team, metric_id=pulled) == []


# ---- builtins ---------------------------------------------------------------------------------------

ALWAYS = {"timezone": "UTC", "working_days": [0, 1, 2, 3, 4, 5, 6], "start": "00:00", "end": "00:00"}
OFFICE = {"timezone": "UTC", "working_days": [0, 1, 2, 3, 4], "start": "09:00", "end": "17:00"}
WEEK = datetime(2026, 3, 2, tzinfo=UTC)  # a Monday
NOW = datetime(2026, 3, 6, 12, 0, tzinfo=UTC)  # the Friday after


def at(day: int, hour: int = 0, minute: int = 0, month: int = 3) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=UTC)


def test_period_start() -> None:
    now = datetime(2026, 3, 5, 17, 45, tzinfo=UTC)  # a Thursday
    assert period_start(now, "day") == datetime(2026, 3, 5, tzinfo=UTC)
    assert period_start(now, "week") == datetime(2026, 3, 2, tzinfo=UTC)
    assert period_start(now, "month") == datetime(2026, 3, 1, tzinfo=UTC)
    assert period_start(datetime(2026, 3, 2, tzinfo=UTC), "week") == datetime(2026, 3, 2, tzinfo=UTC)


def _feedback(
    db: Database, team: str, created_at: datetime, theme: str | None = None, **columns: Any
) -> None:
    with db.session() as s:
        if theme is not None:  # one theme per name: "Billing" and "billing" are two themes matched alike
            found = s.scalar(select(Theme).where(Theme.team_id == team, Theme.name == theme))
            columns["theme"] = found or Theme(team_id=team, name=theme, status="active", keywords=[])
        s.add(
            FeedbackItem(
                team_id=team, channel_id="C0FEED", text="feedback", captured_by_user_id="UCAP",
                source="command", created_at=created_at, **columns,
            )
        )  # fmt: skip


def _builtin(db: Database, team: str, name: str, period: str = "week", **params: Any) -> list[Point]:
    metric_id = _metric(
        db, team, source="builtin", period=period, source_config={"name": name, "params": params}
    )
    with db.read() as s:
        metric = s.get(Metric, metric_id)
        assert metric is not None
        return run_builtin(db_session=s, metric=metric, now=NOW)


def test_feedback_items_builtin(db: Database) -> None:
    team = unique("TFB")
    _feedback(db, team, at(1, 23, 59))  # the week before (but this month)
    _feedback(db, team, at(2))  # the week's first instant
    _feedback(db, team, at(3, 10), theme="Billing")
    _feedback(db, team, at(4, 10), theme="billing")
    _feedback(db, team, at(4, 11), theme="Billing", deleted_at=at(4, 12))  # deleted: never counted
    _feedback(db, team, at(6, 10))  # today, before now
    _feedback(db, team, at(6, 13))  # after now
    _feedback(db, unique("TOTHER"), at(3, 10))  # another workspace
    assert _builtin(db, team, "feedback_items") == [Point(WEEK, 4.0)]
    assert _builtin(db, team, "feedback_items", theme="BILLING") == [Point(WEEK, 2.0)]
    assert _builtin(db, team, "feedback_items", period="day") == [Point(at(6), 1.0)]
    assert _builtin(db, team, "feedback_items", period="month") == [Point(at(1), 5.0)]
    assert _builtin(db, unique("TEMPTY"), "feedback_items") == [Point(WEEK, 0.0)]


def test_the_period_before_is_completed_when_a_run_wrote_part_of_it(db: Database) -> None:
    team = unique("TTAIL")
    metric_id = _metric(db, team, source="builtin", period="day", source_config={"name": "feedback_items"})
    _feedback(db, team, at(5, 10))

    def run(now: datetime) -> list[Point]:
        with db.session() as s:
            metric = s.get(Metric, metric_id)
            assert metric is not None
            points = run_builtin(db_session=s, metric=metric, now=now)
            upsert_points(db_session=s, team_id=team, metric_id=metric_id, points=points)
            return points

    assert run(at(5, 12)) == [Point(at(5), 1.0)]  # Thursday at noon: no earlier run, nothing before
    _feedback(db, team, at(5, 18))  # Thursday evening, after the day's last run: the tail
    _feedback(db, team, at(6, 9))
    assert run(at(6, 12)) == [Point(at(5), 2.0), Point(at(6), 1.0)]  # Thursday completed, Friday so far
    with db.read() as s:
        stored = points_between(db_session=s, team_id=team, metric_id=metric_id)
    assert stored == [Point(at(5), 2.0), Point(at(6), 1.0)]
    # A snapshot describes the moment of its run: the day before is never rewritten.
    snapshot = _metric(db, team, source="builtin", period="day", source_config={"name": "requests_open"})
    with db.session() as s:
        upsert_points(db_session=s, team_id=team, metric_id=snapshot, points=[Point(at(5), 7.0)])
        metric = s.get(Metric, snapshot)
        assert metric is not None
        assert run_builtin(db_session=s, metric=metric, now=at(6, 12)) == [Point(at(6), 0.0)]


def _type(db: Database, team: str, name: str, calendar: dict[str, Any]) -> int:
    with db.session() as s:
        row = RequestType(team_id=team, name=name, owners=[], fields=[], sla={}, calendar=calendar)
        s.add(row)
        s.flush()
        return row.id


def _request(db: Database, team: str, type_id: int, **columns: Any) -> None:
    values: dict[str, Any] = {
        "title": unique("request"), "requester_user_id": "UASKER", "channel_id": "C0REQ", "source": "command",
        "status": "new", "priority": "normal", **columns,
    }  # fmt: skip
    with db.session() as s:
        s.add(Request(team_id=team, type_id=type_id, **values))


@pytest.fixture
def requests_team(db: Database) -> str:
    """The week of Monday 2 March 2026, seen on Friday 6 March at 12:00."""
    team = unique("TREQ")
    a = _type(db, team, "Always on", ALWAYS)
    b = _type(db, team, "Office hours", OFFICE)
    # answered in 30m, done 2h after its due time: breached
    _request(db, team, a, status="done", created_at=at(2, 10), first_response_at=at(2, 10, 30),
             resolved_at=at(2, 14), due_at=at(2, 12))  # fmt: skip
    # answered in 1h, done on time
    _request(db, team, a, status="done", created_at=at(3, 9), first_response_at=at(3, 10),
             resolved_at=at(3, 11), due_at=at(3, 13))  # fmt: skip
    # answered in 3h, in progress past its due time: overdue now, breached in the period
    _request(db, team, a, status="in_progress", created_at=at(4, 9), first_response_at=at(4, 12),
             due_at=at(5, 9))  # fmt: skip
    # waiting past its due time: open, not overdue, not judged
    _request(db, team, a, status="waiting", created_at=at(3, 12), due_at=at(4))
    # all before the period
    _request(db, team, a, status="done", created_at=at(20, month=2), first_response_at=at(20, 1, month=2),
             resolved_at=at(21, month=2), due_at=at(22, month=2))  # fmt: skip
    # office hours: Thu 16:00 → answered Fri 10:00 = 2 business hours; due next week
    _request(db, team, b, status="in_progress", created_at=at(5, 16), first_response_at=at(6, 10),
             due_at=at(10, 9))  # fmt: skip
    other = unique("TOTHER")
    _request(db, other, _type(db, other, "Always on", ALWAYS), created_at=at(3, 9), due_at=at(3, 10))
    return team


@pytest.mark.parametrize(
    ("name", "params", "expected"),
    [
        ("requests_opened", {}, 5.0),
        ("requests_closed", {}, 2.0),
        ("requests_open", {}, 3.0),
        ("requests_overdue", {}, 1.0),
        ("sla_breach_rate", {}, 2 / 3),
        ("time_to_first_response", {}, 1.0),  # of 0.5h, 1h, 2h, 3h: the nearest-rank median
        ("requests_opened", {"type": "office HOURS"}, 1.0),
        ("time_to_first_response", {"type": "Office hours"}, 2.0),
        ("requests_overdue", {"type": "Office hours"}, 0.0),
        ("sla_breach_rate", {"type": "Office hours"}, None),  # nothing judged: no point
    ],
)
def test_request_builtins(
    db: Database, requests_team: str, name: str, params: dict[str, Any], expected: float | None
) -> None:
    points = _builtin(db, requests_team, name, **params)
    if expected is None:
        assert points == []
    else:
        assert [p.ts for p in points] == [WEEK] and points[0].value == pytest.approx(expected)


def test_builtin_config_errors(db: Database, requests_team: str) -> None:
    with pytest.raises(SourceError, match="no request type named “Nope”"):
        _builtin(db, requests_team, "requests_opened", type="Nope")
    with pytest.raises(SourceError) as unknown:
        _builtin(db, requests_team, "requests_reopened")
    assert unknown.value.hint is not None and all(name in unknown.value.hint for name in BUILTINS)
