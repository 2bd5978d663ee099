"""Purging a workspace: every row in every table goes (in batches), other workspaces stay; one worker does it."""

from __future__ import annotations

import io
import threading
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from bot.cli import main
from bot.security.purge import PurgeInterrupted, PurgeResult, purge_team, run_purge_tick
from bot.security.records import team_row_counts
from storage.db import Database
from storage.models import Base, DataRightsRecord, Workspace
from storage.types import utcnow
from tests.test_forget import new_team, new_user, seed_workspace, team_rows

OWN_DATABASE = True  # whole tables are compared before and after: no shared server may touch them


def _rows_left(db: Database, team_id: str) -> dict[str, int]:
    """Rows with this team_id, per table of Base.metadata (all of them, not only the ones purge knows)."""
    left: dict[str, int] = {}
    with db.read() as s:
        for table in Base.metadata.sorted_tables:
            if "team_id" in table.c:
                n = s.scalar(select(func.count()).select_from(table).where(table.c.team_id == team_id)) or 0
                if n:
                    left[table.name] = n
    return left


def _uninstall(db: Database, team_id: str, *, purge_in: timedelta) -> None:
    with db.session() as s:
        workspace = s.get(Workspace, team_id)
        assert workspace is not None
        workspace.uninstalled_at = utcnow() - timedelta(days=31)
        workspace.purge_after = utcnow() + purge_in


def test_purge_removes_every_row_of_the_workspace(db: Database) -> None:
    user, other = new_user(), new_user()
    a = seed_workspace(db, new_team(), user, other)
    b = seed_workspace(db, new_team(), user, other)
    b_before = team_rows(db, b.team_id)
    expected = team_row_counts(db, a.team_id)
    assert len(expected) >= 25

    result = purge_team(db, a.team_id, requested_by="cli:test", batch=2)

    assert result.counts == expected
    assert _rows_left(db, a.team_id) == {"data_rights_records": 1}
    with db.read() as s:
        kept = s.scalars(select(DataRightsRecord).where(DataRightsRecord.team_id == a.team_id)).one()
    assert kept.action == "purge" and kept.counts == {"deleted": expected} and kept.requested_by == "cli:test"
    assert team_rows(db, b.team_id) == b_before


def test_the_worker_purges_only_what_is_due(db: Database) -> None:
    due, later, installed = (seed_workspace(db, new_team(), new_user(), new_user()) for _ in range(3))
    _uninstall(db, due.team_id, purge_in=-timedelta(seconds=1))
    _uninstall(db, later.team_id, purge_in=timedelta(days=1))
    before = {w.team_id: team_rows(db, w.team_id) for w in (later, installed)}

    results = run_purge_tick(db)

    assert due.team_id in [r.team_id for r in results]
    assert _rows_left(db, due.team_id) == {"data_rights_records": 1}
    for w in (later, installed):
        assert team_rows(db, w.team_id) == before[w.team_id]


def test_two_workers_purge_a_workspace_once(db: Database) -> None:
    due = seed_workspace(db, new_team(), new_user(), new_user())
    _uninstall(db, due.team_id, purge_in=-timedelta(seconds=1))
    start = threading.Barrier(2)
    results: list[list[PurgeResult]] = []

    def worker() -> None:
        start.wait()
        results.append([r for r in run_purge_tick(db, batch=3) if r.team_id == due.team_id])

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(len(r) for r in results) == [0, 1]
    assert _rows_left(db, due.team_id) == {"data_rights_records": 1}


def test_a_reinstall_stops_the_worker_purge(db: Database) -> None:
    w = seed_workspace(db, new_team(), new_user(), new_user())
    before = team_rows(db, w.team_id)  # installed: uninstalled_at is NULL
    with pytest.raises(PurgeInterrupted):
        purge_team(db, w.team_id, only_if_uninstalled=True)
    assert team_rows(db, w.team_id) == before


# ---- prodops purge -------------------------------------------------------------------------------------


@pytest.fixture
def cli_env(migrated_db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", migrated_db_url)
    monkeypatch.setenv("COLUMNS", "160")


def _run(monkeypatch: pytest.MonkeyPatch, *argv: str, answer: str = "") -> int:
    monkeypatch.setattr("sys.stdin", io.StringIO(answer))
    try:
        main(list(argv))
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


@pytest.mark.usefixtures("cli_env")
def test_prodops_purge(
    db: Database, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    w = seed_workspace(db, new_team(), new_user(), new_user())
    before = team_rows(db, w.team_id)

    assert _run(monkeypatch, "purge", "--team", w.team_id, "--yes") == 2
    assert "still installed" in capsys.readouterr().err and team_rows(db, w.team_id) == before

    _uninstall(db, w.team_id, purge_in=timedelta(days=30))
    before = team_rows(db, w.team_id)
    assert _run(monkeypatch, "purge", "--team", w.team_id, answer="n\n") == 1
    out = capsys.readouterr()
    assert "feedback_items" in out.out and "Delete all" in out.err and "Nothing was changed" in out.err
    assert team_rows(db, w.team_id) == before

    assert _run(monkeypatch, "purge", "--team", w.team_id, answer="y\n") == 0
    out = capsys.readouterr()
    assert f"Purged {w.team_id}" in out.out and "rows deleted" in out.out
    assert _rows_left(db, w.team_id) == {"data_rights_records": 1}

    assert _run(monkeypatch, "purge", "--team", w.team_id, "--yes") == 0
    assert "Nothing to purge" in capsys.readouterr().out


@pytest.mark.usefixtures("cli_env")
def test_prodops_purge_force_and_unknown(
    db: Database, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    w = seed_workspace(db, new_team(), new_user(), new_user())
    assert _run(monkeypatch, "purge", "--team", w.team_id, "--yes", "--force") == 0
    assert _rows_left(db, w.team_id) == {"data_rights_records": 1}
    capsys.readouterr()
    assert _run(monkeypatch, "purge", "--team", "TNOSUCHTEAM", "--yes") == 2
    err = capsys.readouterr().err
    assert "No workspace TNOSUCHTEAM" in err and "Traceback" not in err
