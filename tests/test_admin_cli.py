"""`prodops admins` manages the same admin list `/prodops admins` does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bot import admins, workspaces
from storage.db import Database
from tests.helpers import unique

ROOT = Path(__file__).resolve().parent.parent


def _cli(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", "admins", *args],
        env={**os.environ, "DATABASE_URL": db_url, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_admins_add_list_remove(migrated_db_url: str, db: Database) -> None:
    team = unique("T")
    with db.session() as s:
        workspaces.get_or_create(db_session=s, team_id=team)
    added = _cli(migrated_db_url, "add", "--team", team, "--user", "U0ADMIN1")
    assert added.returncode == 0, added.stderr
    with db.session() as s:
        assert admins.is_admin(db_session=s, team_id=team, user_id="U0ADMIN1", slack_owner_or_admin=False)
    assert _cli(migrated_db_url, "list", "--team", team).stdout.split() == ["U0ADMIN1"]
    assert _cli(migrated_db_url, "remove", "--team", team, "--user", "U0ADMIN1").returncode == 0
    with db.session() as s:
        assert not admins.is_admin(db_session=s, team_id=team, user_id="U0ADMIN1", slack_owner_or_admin=False)


def test_admins_add_refuses_a_workspace_prodops_does_not_know(migrated_db_url: str, db: Database) -> None:
    team = unique("T")
    result = _cli(migrated_db_url, "add", "--team", team, "--user", "U0ADMIN1")
    assert result.returncode == 2
    assert result.stderr.startswith(
        f"ProdOps: {team} is not a workspace ProdOps knows, so it will not add an admin there. The workspaces in "
        "this database: "
    )
    assert result.stderr.endswith("Check --team (the Slack team id, like T0123ABCD).\n")
    with db.session() as s:
        assert admins.list_admins(db_session=s, team_id=team) == []


def test_admins_add_needs_a_user_id(migrated_db_url: str) -> None:
    result = _cli(migrated_db_url, "add", "--team", "T1", "--user", "alice")
    assert result.returncode == 2
    assert "--user" in result.stderr and "Traceback" not in result.stderr
