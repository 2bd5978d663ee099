"""CLI look-ups in Slack on a multi-workspace install: no SLACK_BOT_TOKEN, each workspace's own installation.

`prodops types load` (triage channels by #name) and `prodops import accounts` (owners by email) call Slack in
the workspace named by --team, with the token stored (encrypted) when that workspace installed the app.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from bot.cli import main
from storage.models import Account, RequestType
from tests.helpers import unique
from tests.oauth_support import OAuthStack, oauth_stack


@pytest.fixture(scope="module")
def oauth(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OAuthStack]:
    yield from oauth_stack(backend, tmp_path_factory.mktemp("cli-oauth"))


@pytest.fixture
def cli(oauth: OAuthStack, monkeypatch: pytest.MonkeyPatch) -> OAuthStack:
    """The CLI's environment: the server's multi-workspace settings (no bot token), its database."""
    for name, value in oauth.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("SLACK_BOT_TOKEN", raising=False)
    return oauth


def _run(*argv: str) -> int:
    try:
        main(list(argv))
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def _installed_team(oauth: OAuthStack, name: str) -> str:
    team_id = "T" + unique("").strip("-").upper()[:9]
    oauth.add_team(team_id, unique(name))
    assert oauth.install(team_id).status == 200
    return team_id


def test_types_load_resolves_channel_names_in_the_named_workspace(
    cli: OAuthStack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = _installed_team(cli, "Acme"), _installed_team(cli, "Globex")
    # The same channel name in both workspaces: only --team says which one is meant.
    in_a = cli.emulator.add_channel("data-requests", team_id=a)
    cli.emulator.add_channel("data-requests", team_id=b)
    file = tmp_path / "types.yml"
    file.write_text("types:\n  - {name: Data pull, triage_channel: '#data-requests'}\n", encoding="utf-8")
    before = len(cli.emulator.calls("conversations.list"))

    assert _run("types", "load", str(file), "--team", a) == 0, capsys.readouterr().err

    assert f"into {a}: 1 created" in capsys.readouterr().out
    with cli.db.read() as s:
        row = s.scalars(
            select(RequestType).where(RequestType.team_id == a, RequestType.name == "Data pull")
        ).one()
        assert row.triage_channel_id == in_a["id"]
        assert not s.scalars(select(RequestType).where(RequestType.team_id == b)).all()
    [call] = cli.emulator.calls("conversations.list")[before:]
    issued = cli.emulator.issued_tokens(a, kind="bot")
    assert call.token == issued[-1]["token"]  # workspace A's installation token, decrypted from the database


def test_import_accounts_resolves_owner_emails_with_the_workspace_token(
    cli: OAuthStack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    team = _installed_team(cli, "Initech")
    owner = cli.emulator.add_user(unique("ann"), email="ann@initech.test", team_id=team)
    csv = tmp_path / "accounts.csv"
    csv.write_text("name,arr,owner\nInitrode,120000,ann@initech.test\n", encoding="utf-8")

    assert _run("import", "accounts", str(csv), "--team", team) == 0, capsys.readouterr().err

    assert f"into {team}: 1 created" in capsys.readouterr().out
    with cli.db.read() as s:
        account = s.scalars(select(Account).where(Account.team_id == team)).one()
    assert account.owner_user_id == owner["id"]


def test_a_workspace_without_installation_or_a_missing_key_is_a_clear_error(
    cli: OAuthStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stranger = "T" + unique("").strip("-").upper()[:9]
    cli.add_team(stranger, unique("Hooli"))  # exists in Slack, never installed the app
    cli.emulator.add_channel("data-requests", team_id=stranger)
    file = tmp_path / "types.yml"
    file.write_text("types:\n  - {name: Ops, triage_channel: '#data-requests'}\n", encoding="utf-8")

    assert _run("types", "load", str(file), "--team", stranger) == 2
    err = capsys.readouterr().err
    assert f"{stranger} has no installation of the app" in err and "/slack/install" in err

    installed = _installed_team(cli, "Soylent")
    monkeypatch.delenv("PRODOPS_ENCRYPTION_KEY")
    assert _run("types", "load", str(file), "--team", installed) == 2
    assert "PRODOPS_ENCRYPTION_KEY" in capsys.readouterr().err
    with cli.db.read() as s:
        assert not s.scalars(select(RequestType).where(RequestType.team_id.in_([stranger, installed]))).all()
