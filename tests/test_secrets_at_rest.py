"""Secrets at rest: a database dump holds no usable Slack token; keys rotate; a missing key stops startup."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from slack_sdk.oauth.installation_store import Installation
from sqlalchemy import MetaData, select

from bot.metrics.tokens import create_token
from bot.security.crypto import SEALED_PREFIX, SecretBox, UnreadableSecret, rotate_tokens
from bot.security.oauth import EncryptedInstallationStore
from bot.security.oauth_cli import register_oauth_parser
from bot.settings import ConfigError
from storage.db import Database
from storage.migrate import upgrade
from storage.models import slack_bots, slack_installations
from tests.conftest import Stack
from tests.helpers import items_in_channel, unique, wait_for
from tests.oauth_support import OAuthStack, oauth_stack

SLACK_TOKEN = re.compile(r"xox[bpea]-")


@pytest.fixture(scope="module")
def oauth(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OAuthStack]:
    yield from oauth_stack(backend, tmp_path_factory.mktemp("secrets"))


def dump_database(db: Database) -> str:
    """Every row of every table as text (SQLite: iterdump; Postgres: a SELECT of each reflected table)."""
    if db.backend == "sqlite":
        raw = db.engine.raw_connection()
        try:
            return "\n".join(raw.driver_connection.iterdump())  # type: ignore[union-attr]
        finally:
            raw.close()
    metadata = MetaData()
    metadata.reflect(db.engine)
    lines = []
    with db.engine.connect() as conn:
        for table in metadata.sorted_tables:
            for row in conn.execute(select(table)):
                lines.append(f"{table.name}: {tuple(row)!r}")
    return "\n".join(lines)


def _team(oauth: OAuthStack, name: str) -> str:
    team_id = "T" + unique("").strip("-").upper()[:9]
    oauth.add_team(team_id, name)
    return team_id


def test_dump_after_installs_and_commands_has_no_plaintext_token(oauth: OAuthStack) -> None:
    emu = oauth.emulator
    teams = [_team(oauth, "Wayne Enterprises"), _team(oauth, "Stark Industries")]
    for team_id in teams:
        owner = emu.add_user(unique("owner"), team_id=team_id, is_admin=True)
        assert oauth.install(team_id, user=owner["id"]).status == 200
        channel = emu.add_channel(unique("feedback"), members=[owner["id"]], team_id=team_id)
        message = emu.post_message(channel["id"], owner["id"], "The export drops a column", team_id=team_id)
        driver = oauth.driver(team_id)
        assert driver.react(user=owner["id"], channel=channel["id"], ts=message["ts"]).status == 200
        assert (
            driver.command(
                "/feedback", "Search is slow on big accounts", user=owner["id"], channel=channel["id"]
            ).status
            == 200
        )
        assert driver.command("/prodops", "status", user=owner["id"], channel=channel["id"]).status == 200
        wait_for(
            lambda c=channel["id"]: len(items_in_channel(oauth.db, c)) == 2, what=f"two items in {team_id}"
        )
    with oauth.db.session() as s:
        _, api_token = create_token(db_session=s, team_id=teams[0], name="pipeline")
    issued = [t["token"] for t in emu.issued_tokens()]
    assert any(t.startswith("xoxb-") for t in issued) and any(t.startswith("xoxp-") for t in issued)

    dump = dump_database(oauth.db)

    assert not SLACK_TOKEN.search(dump), SLACK_TOKEN.search(dump)
    assert not [t for t in issued if t in dump]
    assert api_token not in dump  # push-API tokens are kept as a sha256 hash only
    assert dump.count(SEALED_PREFIX) >= 6  # 2 teams x (installation bot + user token, bot row)
    # ...and the bot still reads its tokens: a new capture in each team is confirmed with that team's token.
    for team_id in teams:
        owner_id = next(u for u in emu.issued_tokens(team_id, kind="user"))["user_id"]
        channel = emu.add_channel(unique("more"), members=[owner_id], team_id=team_id)
        message = emu.post_message(channel["id"], owner_id, "Dark mode please", team_id=team_id)
        oauth.driver(team_id).react(user=owner_id, channel=channel["id"], ts=message["ts"])
        posts = wait_for(
            lambda c=channel["id"]: [
                p for p in emu.calls("chat.postMessage") if p.params.get("channel") == c
            ],
            what="confirmation",
        )
        assert posts[0].token == emu.issued_tokens(team_id, kind="bot")[-1]["token"]
    assert oauth.server.log_path is not None
    log = oauth.server.log_path.read_text(errors="replace")
    assert "installed in" in log and not SLACK_TOKEN.search(log)  # nor in the server's log


def test_single_workspace_scenario_database_has_no_token(stack: Stack) -> None:
    """The shared scenario stack (SLACK_BOT_TOKEN mode) never writes its token to the database."""
    dump = dump_database(stack.db)

    assert stack.emulator.bot_token not in dump
    assert not SLACK_TOKEN.search(dump), SLACK_TOKEN.search(dump)


@pytest.fixture
def fresh_db(empty_db_url: str) -> Iterator[Database]:
    upgrade(empty_db_url)
    database = Database(empty_db_url)
    yield database
    database.dispose()


def _raw_tokens(db: Database) -> list[str]:
    values = []
    with db.engine.connect() as conn:
        for table in (slack_installations, slack_bots):
            columns = [c for c in table.columns if c.name.endswith("_token")]
            for row in conn.execute(select(*columns)):
                values += [v for v in row if v]
    return sorted(values)


def _install(store: EncryptedInstallationStore, team_id: str) -> None:
    store.save(
        Installation(
            app_id="A1",
            team_id=team_id,
            team_name=team_id,
            bot_token=f"xoxb-{team_id}-secret",
            bot_id="B1",
            bot_user_id="U0BOT",
            bot_scopes="chat:write",
            bot_refresh_token=f"xoxe-1-{team_id}-refresh",
            bot_token_expires_in=3600,
            user_id="U1",
            user_token=f"xoxp-{team_id}-secret",
            user_scopes="users:read",
        )
    )


def test_key_rotation_new_key_first_rotate_then_drop_the_old(fresh_db: Database) -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    store = EncryptedInstallationStore(client_id="C1", db=fresh_db, box=SecretBox.from_setting(old))
    _install(store, "T1")
    with fresh_db.engine.begin() as conn:  # a bot row written before encryption was turned on
        conn.execute(
            slack_bots.insert().values(
                client_id="C1",
                app_id="A1",
                team_id="T2",
                bot_user_id="U0BOT",
                bot_id="B2",
                bot_token="xoxb-legacy",
            )
        )
    before = _raw_tokens(fresh_db)
    assert "xoxb-legacy" in before and all(v.startswith(SEALED_PREFIX) for v in before if v != "xoxb-legacy")

    result = rotate_tokens(fresh_db, SecretBox.from_setting(f"{new},{old}"))

    assert result.tokens == len(before) and result.were_plaintext == 1
    after = _raw_tokens(fresh_db)
    assert all(v.startswith(SEALED_PREFIX) for v in after) and not set(after) & set(before)
    only_new = EncryptedInstallationStore(client_id="C1", db=fresh_db, box=SecretBox.from_setting(new))
    found = only_new.find_installation(enterprise_id=None, team_id="T1")
    assert found is not None
    assert (found.bot_token, found.user_token, found.bot_refresh_token) == (
        "xoxb-T1-secret",
        "xoxp-T1-secret",
        "xoxe-1-T1-refresh",
    )
    legacy = only_new.find_bot(enterprise_id=None, team_id="T2")
    assert legacy is not None and legacy.bot_token == "xoxb-legacy"
    only_old = EncryptedInstallationStore(client_id="C1", db=fresh_db, box=SecretBox.from_setting(old))
    with pytest.raises(UnreadableSecret, match="not in PRODOPS_ENCRYPTION_KEY"):
        only_old.find_installation(enterprise_id=None, team_id="T1")


def test_rotating_with_a_wrong_key_changes_nothing_and_says_why(
    fresh_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    right, wrong = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    _install(EncryptedInstallationStore(client_id="C1", db=fresh_db, box=SecretBox.from_setting(right)), "T1")
    before = _raw_tokens(fresh_db)
    parser = argparse.ArgumentParser()
    register_oauth_parser(parser.add_subparsers())
    monkeypatch.setenv("DATABASE_URL", fresh_db.engine.url.render_as_string(hide_password=False))

    monkeypatch.setenv("PRODOPS_ENCRYPTION_KEY", wrong)
    args = parser.parse_args(["keys", "rotate"])
    with pytest.raises(ConfigError) as refused:
        args.run(args)

    assert "nothing was re-encrypted" in str(
        refused.value
    ) and "Put the key it was encrypted with back" in str(refused.value)
    assert wrong not in str(refused.value)
    assert _raw_tokens(fresh_db) == before
    monkeypatch.setenv("PRODOPS_ENCRYPTION_KEY", "not-a-fernet-key")
    with pytest.raises(ConfigError, match="is not a valid Fernet key"):
        args.run(args)


def _serve(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "PRODOPS_", "DATABASE_URL"))}
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", "serve"],
        cwd=tmp_path,
        env={
            **clean,
            "SLACK_CLIENT_ID": "1.2",
            "SLACK_CLIENT_SECRET": "shh",
            "SLACK_SIGNING_SECRET": "s",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("key", "says"),
    [
        (None, "PRODOPS_ENCRYPTION_KEY is not set"),
        ("not-a-fernet-key", "PRODOPS_ENCRYPTION_KEY is not a valid Fernet key"),
        (f"{Fernet.generate_key().decode()},short", "key 2 of 2"),
    ],
    ids=["missing", "malformed", "second-of-two-malformed"],  # stable ids: no key material in test names
)
def test_multi_workspace_startup_refuses_a_missing_or_bad_key(
    tmp_path: Path, key: str | None, says: str
) -> None:
    result = _serve(tmp_path, **({"PRODOPS_ENCRYPTION_KEY": key} if key else {}))

    assert result.returncode == 2, result.stderr
    assert says in result.stderr
    assert "prodops keys generate" in result.stderr and "SLACK_CLIENT_ID" in result.stderr
    assert "Traceback" not in result.stderr
    if key:
        assert key.split(",")[-1] not in result.stderr  # the key is never echoed


def test_half_an_oauth_configuration_is_refused(tmp_path: Path) -> None:
    result = _serve(tmp_path, SLACK_CLIENT_SECRET="", PRODOPS_ENCRYPTION_KEY=Fernet.generate_key().decode())

    assert result.returncode == 2
    assert "SLACK_CLIENT_SECRET is not set while SLACK_CLIENT_ID is" in result.stderr
