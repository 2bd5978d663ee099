"""The collection tick: each due metric runs once per fire time across workers, failures reach the owner once."""

from __future__ import annotations

import sqlite3
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from slack_sdk import WebClient
from sqlalchemy import update

from bot.devkit.emulator import SlackEmulator
from bot.metrics import collector
from bot.metrics.collector import CLAIM_LEASE, next_run_after, run_collection_tick
from bot.metrics.points import Point, points_between
from storage.db import Database
from storage.models import FeedbackItem, Metric
from tests.helpers import unique

OWN_DATABASE = True  # the ticks tested here scan every workspace: the shared server must not run them too

T0 = datetime(2026, 3, 5, 9, 0, tzinfo=UTC)  # a Thursday, 09:00 UTC
DAILY_9 = "0 9 * * *"
SLOW_SQLITE = (
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000000000) "
    "SELECT '2026-03-01', count(*) FROM n"
)


@pytest.fixture
def emu() -> Iterator[SlackEmulator]:
    with SlackEmulator() as emulator:
        yield emulator


@pytest.fixture
def client(emu: SlackEmulator) -> WebClient:
    return WebClient(token=emu.bot_token, base_url=emu.url)


@pytest.fixture
def team(db: Database) -> Iterator[str]:
    """A workspace whose metrics are archived afterwards, so later ticks in the session never run them."""
    team_id = unique("TCOL")
    yield team_id
    with db.session() as s:
        s.execute(update(Metric).where(Metric.team_id == team_id).values(archived_at=datetime.now(UTC)))


@pytest.fixture
def warehouse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Path]:
    """A SQLite data source with daily values, reachable as PRODOPS_DATASOURCE_<name>."""
    path = tmp_path / "warehouse.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE daily (day TEXT PRIMARY KEY, value REAL)")
        conn.executemany("INSERT INTO daily VALUES (?, ?)", [("2026-03-01", 10), ("2026-03-02", 12)])
    conn.close()
    name = unique("wh").replace("-", "_").upper()
    monkeypatch.setenv(f"PRODOPS_DATASOURCE_{name}", f"sqlite:///{path}")
    return name, path


def _metric(db: Database, team: str, **columns: Any) -> int:
    values: dict[str, Any] = {
        "key": unique("m"), "name": "Feedback this week", "unit": "count", "direction": "up_is_good",
        "summary": "last", "period": "week", "source": "builtin", "source_config": {"name": "feedback_items"},
        "schedule_cron": DAILY_9, "schedule_timezone": "UTC", "next_run_at": T0, **columns,
    }  # fmt: skip
    with db.session() as s:
        metric = Metric(team_id=team, **values)
        s.add(metric)
        s.flush()
        return metric.id


def _get(db: Database, metric_id: int) -> Metric:
    with db.read() as s:
        metric = s.get(Metric, metric_id)
        assert metric is not None
        return metric


def _points(db: Database, metric: Metric) -> list[Point]:
    with db.read() as s:
        return points_between(db_session=s, team_id=metric.team_id, metric_id=metric.id)


def _dms(emu: SlackEmulator, user: str) -> list[str]:
    return [c.params["text"] for c in emu.calls("chat.postMessage") if c.params.get("channel") == user]


@pytest.fixture
def runs(monkeypatch: pytest.MonkeyPatch) -> Counter[int]:
    """How many times each metric's source ran (from any thread)."""
    counter: Counter[int] = Counter()
    lock = threading.Lock()
    original = collector._run_source

    def counting(db: Database, metric_id: int, **kwargs: Any) -> list[Point]:
        with lock:
            counter[metric_id] += 1
        return original(db, metric_id, **kwargs)

    monkeypatch.setattr(collector, "_run_source", counting)
    return counter


def test_a_due_builtin_runs_and_moves_to_the_next_fire_time(
    db: Database, client: WebClient, team: str, runs: Counter[int]
) -> None:
    with db.session() as s:
        s.add(FeedbackItem(team_id=team, channel_id="C0F", text="slow exports", captured_by_user_id="U0",
                           source="command", created_at=T0 - timedelta(days=1)))  # fmt: skip
    metric_id = _metric(db, team)
    not_yet = _metric(db, team, next_run_at=T0 + timedelta(minutes=5))
    now = T0 + timedelta(seconds=30)
    run_collection_tick(db=db, client=client, now=now)
    metric = _get(db, metric_id)
    assert (metric.last_run_at, metric.last_error) == (now, None)
    assert metric.next_run_at == T0 + timedelta(days=1)
    assert _points(db, metric) == [Point(datetime(2026, 3, 2, tzinfo=UTC), 1.0)]
    assert runs[metric_id] == 1 and runs[not_yet] == 0
    run_collection_tick(db=db, client=client, now=now + timedelta(minutes=1))
    assert runs[metric_id] == 1  # next_run_at is tomorrow now
    assert _get(db, not_yet).next_run_at == T0 + timedelta(minutes=5)


def test_two_workers_run_each_metric_once(
    db: Database, emu: SlackEmulator, team: str, runs: Counter[int]
) -> None:
    ids = [_metric(db, team) for _ in range(12)]
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            barrier.wait()
            run_collection_tick(
                db=db, client=WebClient(token=emu.bot_token, base_url=emu.url), now=T0 + timedelta(minutes=1)
            )
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert [runs[i] for i in ids] == [1] * 12
    assert all(_get(db, i).next_run_at == T0 + timedelta(days=1) for i in ids)


def test_catch_up_after_downtime_runs_once(
    db: Database, client: WebClient, team: str, runs: Counter[int]
) -> None:
    metric_id = _metric(db, team, next_run_at=T0 - timedelta(days=10))
    now = T0 + timedelta(hours=3)
    run_collection_tick(db=db, client=client, now=now)
    run_collection_tick(db=db, client=client, now=now + timedelta(minutes=1))
    assert runs[metric_id] == 1
    metric = _get(db, metric_id)
    assert metric.next_run_at == T0 + timedelta(days=1)  # the next future fire time, not the ten missed ones
    assert len(_points(db, metric)) == 1


def test_a_run_that_died_after_its_claim_is_retried_after_the_lease(
    db: Database, client: WebClient, team: str, runs: Counter[int]
) -> None:
    metric_id = _metric(db, team)
    claim = collector._claim(db, metric_id=metric_id, seen=T0, cron=DAILY_9, timezone="UTC", now=T0)
    assert claim is not None and claim.hold == T0 + CLAIM_LEASE  # ...and then the worker died
    run_collection_tick(db=db, client=client, now=T0 + CLAIM_LEASE - timedelta(seconds=1))
    assert runs[metric_id] == 0
    run_collection_tick(db=db, client=client, now=T0 + CLAIM_LEASE)
    assert runs[metric_id] == 1
    assert _get(db, metric_id).next_run_at == T0 + timedelta(days=1)


def test_next_run_is_dst_correct() -> None:
    london = {"cron": DAILY_9, "timezone": "Europe/London"}
    # BST ends at 02:00 on Sunday 25 October 2026: 09:00 local is 08:00 UTC before, 09:00 UTC after.
    saturday = datetime(2026, 10, 24, 8, 0, tzinfo=UTC)
    assert next_run_after(**london, after=saturday - timedelta(hours=1)) == saturday
    assert next_run_after(**london, after=saturday) == datetime(
        2026, 10, 25, 9, 0, tzinfo=UTC
    )  # strictly after
    assert next_run_after(**london, after=datetime(2026, 10, 25, 9, 0, tzinfo=UTC)) == datetime(
        2026, 10, 26, 9, 0, tzinfo=UTC
    )
    # ...and BST starts on Sunday 29 March 2026.
    assert next_run_after(**london, after=datetime(2026, 3, 28, 9, 0, tzinfo=UTC)) == datetime(
        2026, 3, 29, 8, 0, tzinfo=UTC
    )


def test_the_tick_schedules_across_the_clock_change(db: Database, client: WebClient, team: str) -> None:
    saturday = datetime(2026, 10, 24, 8, 0, tzinfo=UTC)  # 09:00 BST
    metric_id = _metric(db, team, schedule_timezone="Europe/London", next_run_at=saturday)
    run_collection_tick(db=db, client=client, now=saturday)
    assert _get(db, metric_id).next_run_at == datetime(2026, 10, 25, 9, 0, tzinfo=UTC)  # 09:00 GMT
    run_collection_tick(db=db, client=client, now=datetime(2026, 10, 25, 9, 0, 2, tzinfo=UTC))
    assert _get(db, metric_id).next_run_at == datetime(2026, 10, 26, 9, 0, tzinfo=UTC)


def test_a_missing_data_source_is_reported_to_the_owner_once(
    db: Database, emu: SlackEmulator, client: WebClient, team: str, warehouse: tuple[str, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    owner = emu.add_user(unique("owner"))["id"]
    missing = unique("gone").replace("-", "_").upper()
    monkeypatch.delenv(f"PRODOPS_DATASOURCE_{missing}", raising=False)
    metric_id = _metric(
        db, team, source="sql", owner_user_id=owner, name="Daily signups",
        source_config={"datasource": missing, "query": "SELECT day, value FROM daily"},
    )  # fmt: skip
    run_collection_tick(db=db, client=client, now=T0)
    metric = _get(db, metric_id)
    assert metric.last_error is not None and f"PRODOPS_DATASOURCE_{missing}" in metric.last_error
    dms = _dms(emu, owner)
    assert len(dms) == 1
    assert "Daily signups" in dms[0] and f"PRODOPS_DATASOURCE_{missing}" in dms[0]
    assert "What to do" in dms[0] and "Fri 06 Mar 09:00 UTC" in dms[0]

    run_collection_tick(db=db, client=client, now=T0 + timedelta(days=1))  # the same error: no second DM
    assert len(_dms(emu, owner)) == 1 and _get(db, metric_id).last_run_at == T0 + timedelta(days=1)

    name, _ = warehouse  # fixed: points arrive and the error is cleared
    with db.session() as s:
        s.execute(
            update(Metric)
            .where(Metric.id == metric_id)
            .values(source_config={"datasource": name, "query": "SELECT day, value FROM daily"})
        )
    run_collection_tick(db=db, client=client, now=T0 + timedelta(days=2))
    metric = _get(db, metric_id)
    assert metric.last_error is None and len(_points(db, metric)) == 2
    assert len(_dms(emu, owner)) == 1

    with db.session() as s:  # a different error is news
        s.execute(
            update(Metric)
            .where(Metric.id == metric_id)
            .values(source_config={"datasource": name, "query": "DELETE FROM daily"})
        )
    run_collection_tick(db=db, client=client, now=T0 + timedelta(days=3))
    dms = _dms(emu, owner)
    assert len(dms) == 2 and "queries must only read" in dms[1]


def test_failures_do_not_stop_the_tick(
    db: Database, emu: SlackEmulator, client: WebClient, team: str, warehouse: tuple[str, Path]
) -> None:
    name, path = warehouse
    owner = emu.add_user(unique("owner"))["id"]
    sql = {"source": "sql", "owner_user_id": owner}
    slow = _metric(db, team, **sql, source_config={"datasource": name, "query": SLOW_SQLITE})
    write = _metric(db, team, **sql, source_config={"datasource": name, "query": "DELETE FROM daily"})
    bad_cron = _metric(db, team, **sql, schedule_cron="every day at nine",
                       source_config={"datasource": name, "query": "SELECT day, value FROM daily"})  # fmt: skip
    good = _metric(db, team, source_config={"datasource": name, "query": "SELECT day, value FROM daily"},
                   source="sql", next_run_at=T0 + timedelta(seconds=1))  # fmt: skip
    builtin = _metric(db, team, next_run_at=T0 + timedelta(seconds=2))
    run_collection_tick(db=db, client=client, now=T0 + timedelta(minutes=1), sql_timeout_s=1)

    assert _get(db, slow).last_error == "the query took longer than 1 s and was stopped"
    assert _get(db, write).last_error == "the query tried to change data; queries must only read"
    broken = _get(db, bad_cron)
    assert broken.last_error is not None and "not a valid cron expression" in broken.last_error
    assert broken.next_run_at is None
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT count(*) FROM daily").fetchone() == (2,)
    conn.close()
    assert [_get(db, i).last_error for i in (good, builtin)] == [None, None]
    assert len(_points(db, _get(db, good))) == 2 and len(_points(db, _get(db, builtin))) == 1
    dms = _dms(emu, owner)
    assert len(dms) == 3 and any("won't run again until its schedule is fixed" in d for d in dms)
    assert all(_get(db, i).next_run_at == T0 + timedelta(days=1) for i in (slow, write, good, builtin))


def test_a_postgres_timeout_does_not_stop_the_tick(
    db: Database, client: WebClient, team: str, postgres_empty_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = unique("pg").replace("-", "_").upper()
    monkeypatch.setenv(f"PRODOPS_DATASOURCE_{name}", postgres_empty_url)
    slow = _metric(
        db, team, source="sql", source_config={"datasource": name, "query": "SELECT pg_sleep(5), 1"}
    )
    fine = _metric(db, team, source="sql", next_run_at=T0 + timedelta(seconds=1),
                   source_config={"datasource": name, "query": "SELECT date '2026-03-01', 7"})  # fmt: skip
    run_collection_tick(db=db, client=client, now=T0 + timedelta(minutes=1), sql_timeout_s=1)
    assert _get(db, slow).last_error == "the query took longer than 1 s and was stopped"
    assert _points(db, _get(db, fine)) == [Point(datetime(2026, 3, 1, tzinfo=UTC), 7.0)]


def test_a_slack_outage_does_not_undo_the_run(
    db: Database, emu: SlackEmulator, client: WebClient, team: str
) -> None:
    owner = emu.add_user(unique("owner"))["id"]
    metric_id = _metric(db, team, owner_user_id=owner, source_config={"name": "no_such_builtin"})
    emu.fail("chat.postMessage", status=500, times=10)
    run_collection_tick(db=db, client=WebClient(token=emu.bot_token, base_url=emu.url), now=T0)
    metric = _get(db, metric_id)
    assert metric.last_error == "“no_such_builtin” is not a builtin source"
    assert metric.next_run_at == T0 + timedelta(days=1)
