"""`prodops inbox list|retry|drop` change exactly the deliveries asked for, on both databases."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from bot.inbox_admin import DROPPED_REASON, queue_summary
from storage.db import Database
from storage.models import InboxEvent
from storage.types import utcnow
from tests.helpers import unique
from tests.queue_rows import add_delivery, add_insight_task, deliveries

ROOT = Path(__file__).resolve().parent.parent
OWN_DATABASE = True  # `--dead` without --team acts on every workspace: no other test's rows here


def _cli(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", "inbox", *args],
        env={**os.environ, "DATABASE_URL": db_url, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )


def _queue(db: Database, team: str) -> dict[str, int]:
    """A workspace with one delivery of each kind of trouble, and one finished."""
    return {
        "dead": add_delivery(db, team_id=team, status="dead", attempts=5, last_error="SlackApiError: boom"),
        "dead2": add_delivery(db, team_id=team, status="dead", attempts=5, last_error="TimeoutError"),
        "failed": add_delivery(db, team_id=team, status="failed", attempts=2, last_error="KeyError: 'x'"),
        "queued": add_delivery(db, team_id=team, status="queued", attempts=0),
        "pending": add_delivery(db, team_id=team, status="pending", claimed_by="worker-7@host"),
        "done": add_delivery(db, team_id=team, status="done"),
    }


def _changed(before: dict[int, dict], after: dict[int, dict]) -> set[int]:
    assert set(before) == set(after), "rows must never be deleted"
    return {i for i in before if before[i] != after[i]}


def test_list_shows_a_workspace_s_deliveries_newest_first(migrated_db_url: str, db: Database) -> None:
    team, other = unique("T"), unique("T")
    ids = _queue(db, team)
    add_delivery(db, team_id=other, status="dead")

    listed = _cli(migrated_db_url, "list", "--team", team)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split()[:4] == ["id", "team", "kind", "status"] and "claimed by" in lines[0]
    shown = [int(line.split()[0]) for line in lines[1:] if line.strip()]
    assert shown == sorted(ids.values(), reverse=True)
    assert other not in listed.stdout
    assert "worker-7@host" in listed.stdout and "SlackApiError: boom" in listed.stdout

    dead = _cli(migrated_db_url, "list", "--team", team, "--status", "dead", "--limit", "1")
    assert dead.returncode == 0, dead.stderr
    rows = [line for line in dead.stdout.splitlines()[1:] if line.strip()]
    assert [int(r.split()[0]) for r in rows] == [ids["dead2"]]
    assert "dead" in rows[0] and "5" in rows[0].split()

    none = _cli(migrated_db_url, "list", "--team", unique("T"))
    assert none.returncode == 0 and none.stdout == "" and "No deliveries" in none.stderr


def test_retry_by_id_queues_only_dead_or_failed_ones_with_attempts_reset(
    migrated_db_url: str, db: Database
) -> None:
    team = unique("T")
    ids = _queue(db, team)
    before = deliveries(db, team)

    result = _cli(migrated_db_url, "retry", str(ids["dead"]), str(ids["failed"]), str(ids["done"]))
    assert result.returncode == 0, result.stderr
    assert "2 deliveries queued again" in result.stdout
    assert f"{ids['done']} (done)" in result.stderr  # left alone, and said so

    after = deliveries(db, team)
    assert _changed(before, after) == {ids["dead"], ids["failed"]}
    for key in ("dead", "failed"):
        row = after[ids[key]]
        assert (row["status"], row["attempts"], row["claimed_by"], row["finished_at"]) == (
            "queued",
            0,
            None,
            None,
        )
        assert row["available_at"] <= utcnow()  # a worker may take it at once
        assert row["last_error"] == before[ids[key]]["last_error"]  # why it failed stays on the record


def test_retry_dead_is_scoped_to_the_team(migrated_db_url: str, db: Database) -> None:
    team, other = unique("T"), unique("T")
    ids = _queue(db, team)
    other_dead = add_delivery(db, team_id=other, status="dead")
    before, before_other = deliveries(db, team), deliveries(db, other)

    result = _cli(migrated_db_url, "retry", "--dead", "--team", team)
    assert result.returncode == 0, result.stderr
    assert f"2 dead deliveries in {team} queued again" in result.stdout

    assert _changed(before, deliveries(db, team)) == {ids["dead"], ids["dead2"]}  # not failed, not others
    assert deliveries(db, other) == before_other
    assert deliveries(db, other)[other_dead]["status"] == "dead"


def test_drop_keeps_the_row_as_ignored_and_never_takes_one_in_progress(
    migrated_db_url: str, db: Database
) -> None:
    team = unique("T")
    ids = _queue(db, team)
    before = deliveries(db, team)

    result = _cli(migrated_db_url, "drop", str(ids["queued"]), str(ids["dead"]), str(ids["pending"]))
    assert result.returncode == 0, result.stderr
    assert "2 deliveries dropped" in result.stdout
    assert f"{ids['pending']} (pending)" in result.stderr

    after = deliveries(db, team)
    assert _changed(before, after) == {ids["queued"], ids["dead"]}
    for key in ("queued", "dead"):
        assert after[ids[key]]["status"] == "ignored"
        assert after[ids[key]]["last_error"] == DROPPED_REASON
        assert after[ids[key]]["finished_at"] is not None

    rest = _cli(migrated_db_url, "drop", "--dead", "--team", team)
    assert rest.returncode == 0, rest.stderr
    assert f"1 dead delivery in {team} dropped: {ids['dead2']}." in rest.stdout
    assert _changed(after, deliveries(db, team)) == {ids["dead2"]}


@pytest.mark.parametrize("action", ["retry", "drop"])
def test_unknown_ids_change_nothing_and_exit_2(migrated_db_url: str, db: Database, action: str) -> None:
    team, other = unique("T"), unique("T")
    ids = _queue(db, team)
    elsewhere = add_delivery(db, team_id=other, status="dead")
    before = deliveries(db, team)

    missing = _cli(migrated_db_url, action, str(ids["dead"]), "999999999")
    assert missing.returncode == 2
    message = missing.stderr.strip()
    assert len(message.splitlines()) == 1 and "999999999" in message and "prodops inbox list" in message
    assert "nothing was changed" in message and "Traceback" not in message

    wrong_team = _cli(migrated_db_url, action, str(elsewhere), "--team", team)
    assert wrong_team.returncode == 2 and f"in workspace {team}" in wrong_team.stderr
    assert f"--team {team}" in wrong_team.stderr

    assert deliveries(db, team) == before
    assert deliveries(db, other)[elsewhere]["status"] == "dead"


@pytest.mark.parametrize(
    "args",
    [
        ["retry"],
        ["drop", "--dead", "12"],
        ["retry", "abc"],
        ["list", "--limit", "0"],
        ["list", "--status", "x"],
    ],
    ids=["nothing", "ids-and-dead", "not-a-number", "limit-0", "bad-status"],
)
def test_bad_arguments_exit_2_without_a_traceback(migrated_db_url: str, args: list[str]) -> None:
    result = _cli(migrated_db_url, *args)
    assert result.returncode == 2
    assert result.stderr.strip() and "Traceback" not in result.stderr


def test_queue_summary_counts_one_workspace(db: Database) -> None:
    team = unique("T")
    ids = _queue(db, team)
    add_delivery(db, team_id=team, status="queued", received_ago=timedelta(minutes=10))
    add_insight_task(db, team_id=team)
    add_insight_task(db, team_id=team, status="pending")
    add_insight_task(db, team_id=team, status="done")
    add_delivery(db, team_id=unique("T"), status="dead")

    summary = queue_summary(db=db, team_id=team)
    assert (summary.waiting, summary.in_progress, summary.dead) == (3, 1, 2)  # 2 queued + 1 failed
    assert summary.insights_waiting == 2
    age = summary.oldest_waiting_age(utcnow())
    assert age is not None and 600 <= age < 700

    with db.inbox.read() as s:
        own = s.get(InboxEvent, ids["pending"])
        assert own is not None
    without = queue_summary(db=db, team_id=team, exclude_delivery_id=own.delivery_id)
    assert (without.in_progress, without.waiting, without.dead) == (0, 3, 2)  # the asking command left out
