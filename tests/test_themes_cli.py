"""`prodops themes …`: list, create, rename, accept, dismiss, merge, split, move, recluster; unknown themes
and bad item lists exit 2 with a clear message and change nothing."""

from __future__ import annotations

import pytest

from bot.cli import main
from bot.insights import themes
from storage.db import Database
from storage.models import Theme, Workspace
from tests.helpers import unique
from tests.themes_data import GROUPS, add_items, items_of, themes_of


@pytest.fixture
def cli(migrated_db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("DATABASE_URL", migrated_db_url)
    monkeypatch.delenv("SLACK_BOT_TOKEN", raising=False)
    monkeypatch.setenv("PRODOPS_SIMILARITY_BACKEND", "tfidf")  # as add_items() below

    def run(*argv: str) -> tuple[int, str, str]:
        code = 0
        try:
            main(["themes", *argv])
        except SystemExit as exc:
            code = int(exc.code or 0)
        out, err = capsys.readouterr()
        return code, out, err

    return run


def _team(db: Database) -> str:
    team = unique("T")
    with db.session() as s:
        s.add(Workspace(team_id=team))
    return team


def _snapshot(db: Database, team: str) -> tuple[list[tuple], list[tuple]]:
    return (
        [(t.id, t.name, t.status, t.merged_into_id, t.name_source) for t in themes_of(db, team)],
        sorted((i.id, i.theme_id, i.theme_source) for i in items_of(db, team).values()),
    )


def test_theme_commands(cli, db: Database) -> None:  # type: ignore[no-untyped-def]
    team = _team(db)
    sso = add_items(db, team, GROUPS["sso"])
    export = add_items(db, team, GROUPS["export"])

    code, out, err = cli("recluster", "--team", team)
    assert code == 0, err
    assert "2 proposal(s)" in out
    proposals = [t for t in themes_of(db, team) if t.status == "proposed"]
    assert len(proposals) == 2
    sso_theme = next(t for t in proposals if items_of(db, team)[sso[0]].theme_id == t.id)
    export_theme = next(t for t in proposals if t.id != sso_theme.id)

    code, out, _ = cli("list", "--team", team)
    assert code == 0 and sso_theme.name in out and "proposed" in out and "0 unsorted" in out

    assert cli("rename", f"#{sso_theme.id}", "Single sign-on", "--team", team)[0] == 0
    assert cli("accept", "single sign-on", "--team", team)[0] == 0
    code, out, _ = cli("create", "Exports", "--team", team, "--description", "CSV and Excel")
    assert code == 0 and "Created theme" in out
    assert cli("merge", str(export_theme.id), "--into", "Exports", "--team", team)[0] == 0
    exports = next(t for t in themes_of(db, team) if t.name == "Exports")
    code, out, _ = cli(
        "split", "Exports", "--items", f"{export[0]},{export[1]}", "--name", "CSV columns", "--team", team
    )
    assert code == 0 and "new theme" in out
    assert cli("move", "--items", f"#{sso[0]}", "--to", "unsorted", "--team", team)[0] == 0

    by_name = {t.name: t for t in themes_of(db, team)}
    assert by_name["Single sign-on"].status == "active" and by_name["Single sign-on"].name_source == "human"
    assert by_name[export_theme.name].status == "merged"
    assert by_name[export_theme.name].merged_into_id == exports.id
    items = items_of(db, team)
    assert items[export[0]].theme_id == by_name["CSV columns"].id
    assert items[sso[0]].theme_id is None and items[sso[0]].theme_source == "human"
    code, out, _ = cli("list", "--team", team, "--all")
    assert "merged → #" in out and "1 unsorted" in out


def test_unknown_theme_or_items_exit_2_and_change_nothing(cli, db: Database) -> None:  # type: ignore[no-untyped-def]
    team = _team(db)
    ids = add_items(db, team, GROUPS["mobile"][:3], vectors=False)
    with db.session() as s:
        theme = themes.create(s, team_id=team, name="Mobile crashes", user_id=None)
        themes.move_items(s, team_id=team, item_ids=ids, target_id=theme.id)
    before = _snapshot(db, team)

    for argv, needle in [
        (("rename", "Mobile crash", "New name"), "Did you mean 'Mobile crashes'"),
        (("accept", "#999999"), "No theme is called '#999999'"),
        (("merge", "Mobile crashes", "--into", "Nope"), "No theme is called 'Nope'"),
        (("move", "--items", "1,x", "--to", "Mobile crashes"), "--items '1,x'"),
        (("move", "--items", "999999", "--to", "Mobile crashes"), "No feedback item #999999"),
        (("dismiss", "Mobile crashes"), "only proposals"),
    ]:
        code, out, err = cli(*argv, "--team", team)
        assert code == 2, (argv, out, err)
        assert needle in " ".join(err.split()), (argv, err)
        assert "Nothing was changed" in " ".join(err.split()) and "Traceback" not in err
    assert _snapshot(db, team) == before
    assert all(isinstance(t, Theme) for t in themes_of(db, team))
