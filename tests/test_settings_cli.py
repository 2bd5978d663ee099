"""Configuration errors are one clear paragraph and exit code 2, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.settings import ConfigError, Settings, load_settings

CONTRACT_VARS = (
    "SLACK_BOT_TOKEN",
    "SLACK_SIGNING_SECRET",
    "SLACK_APP_TOKEN",
    "SLACK_API_URL",
    "DATABASE_URL",
    "PORT",
)


def _run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in CONTRACT_VARS and not k.startswith("PRODOPS_")}
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", *args],
        cwd=cwd,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({}, "SLACK_BOT_TOKEN"),
        ({"SLACK_BOT_TOKEN": "xoxb-1"}, "SLACK_SIGNING_SECRET"),
        ({"SLACK_BOT_TOKEN": "not-a-token", "SLACK_SIGNING_SECRET": "s"}, "SLACK_BOT_TOKEN"),
        ({"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s", "PORT": "abc"}, "PORT"),
        ({"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s", "PORT": "70000"}, "PORT"),
        (
            {"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s", "DATABASE_URL": "mysql://x"},
            "DATABASE_URL",
        ),
        (
            {"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s", "DATABASE_URL": "not a url"},
            "DATABASE_URL",
        ),
        (
            {"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s", "SLACK_API_URL": "ftp://x/"},
            "SLACK_API_URL",
        ),
        ({"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_APP_TOKEN": "xoxb-wrong-kind"}, "SLACK_APP_TOKEN"),
    ],
)
def test_serve_with_bad_settings_exits_2_naming_the_variable(tmp_path: Path, env: dict, named: str) -> None:
    result = _run(["serve"], tmp_path, **env)
    assert result.returncode == 2, result.stderr
    assert named in result.stderr
    assert "README.md#configuration" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert "xoxb-1" not in result.stderr  # tokens are never echoed back


def test_dotenv_file_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("SLACK_BOT_TOKEN=xoxb-1\nSLACK_SIGNING_SECRET=s\nPORT=not-a-port\n")
    result = _run(["serve"], tmp_path)
    assert result.returncode == 2
    assert "PORT" in result.stderr and "not-a-port" in result.stderr


def test_unreachable_database_is_explained(tmp_path: Path) -> None:
    result = _run(["migrate"], tmp_path, DATABASE_URL="postgresql://nobody@127.0.0.1:1/none")
    assert result.returncode == 2
    assert "could not reach the database" in result.stderr
    assert "Traceback" not in result.stderr


def test_migrate_creates_the_schema(tmp_path: Path) -> None:
    result = _run(["migrate"], tmp_path, DATABASE_URL=f"sqlite:///{tmp_path / 'p.db'}")
    assert result.returncode == 0, result.stderr
    assert "revision 0009" in result.stderr


def test_defaults_follow_the_contract(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    for var in CONTRACT_VARS:
        monkeypatch.delenv(var, raising=False)
    settings = Settings()
    assert settings.slack_api_url == "https://slack.com/api/"
    assert settings.database_url == "sqlite:///prodops.db"
    assert settings.port == 3000
    assert settings.socket_mode is False


def test_plain_postgres_url_uses_psycopg3(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:p%40ss@db:5432/prodops")
    monkeypatch.setenv("SLACK_API_URL", "http://127.0.0.1:9/api")
    settings = load_settings()
    assert settings.database_url == "postgresql+psycopg://u:p%40ss@db:5432/prodops"
    assert settings.slack_api_url.endswith("/api/")


def test_socket_mode_needs_no_signing_secret(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-1")
    monkeypatch.setenv("SLACK_APP_TOKEN", "xapp-1")
    monkeypatch.delenv("SLACK_SIGNING_SECRET", raising=False)
    settings = load_settings()
    assert settings.socket_mode
    settings.require_slack()  # does not raise
    monkeypatch.delenv("SLACK_APP_TOKEN")
    with pytest.raises(ConfigError, match="SLACK_SIGNING_SECRET"):
        load_settings().require_slack()


# ---- first-day mistakes: one paragraph that says what to do, exit 2 (issue 17) ---------------------------

PARAGRAPH_END = (
    ", in the environment or in a .env file next to where you run prodops. The configuration table is in "
    "README.md#configuration; the Slack app's scopes and commands are in manifest.yml.\n"
)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"PRODOPS_INBOX_MAX_ATTEMPTS": "lots"},
            "ProdOps configuration error: PRODOPS_INBOX_MAX_ATTEMPTS is malformed: Input should be a valid "
            "integer, unable to parse string as an integer (got 'lots'). Set PRODOPS_INBOX_MAX_ATTEMPTS to a "
            "whole number at least 1 (the default is 5)",
        ),
        (
            {"PRODOPS_SIMILARITY_BACKEND": "bert"},
            "ProdOps configuration error: PRODOPS_SIMILARITY_BACKEND is malformed: Input should be 'auto', "
            "'tfidf' or 'embeddings' (got 'bert'). Set PRODOPS_SIMILARITY_BACKEND to one of auto, tfidf, "
            "embeddings",
        ),
        (
            {"DATABASE_URL": "mysql://bob:hunter2-secret@db.internal/prodops"},
            "ProdOps configuration error: DATABASE_URL is malformed: only sqlite and postgresql are supported "
            "(got 'mysql://bob:***@db.internal/prodops'). Set DATABASE_URL to a SQLAlchemy URL such as "
            "sqlite:///prodops.db or postgresql+psycopg://user@host/db",
        ),
        (
            {"PRODOPS_SCHEDULER_IN_WEB": "maybe"},
            "ProdOps configuration error: PRODOPS_SCHEDULER_IN_WEB is malformed: Input should be a valid "
            "boolean, unable to interpret input (got 'maybe'). Set PRODOPS_SCHEDULER_IN_WEB to true or false "
            "(the default is false)",
        ),
    ],
    ids=["integer", "choice", "url-with-password", "boolean"],
)
def test_settings_errors_are_one_paragraph_with_the_fix(tmp_path: Path, env: dict, message: str) -> None:
    result = _run(["migrate"], tmp_path, **env)
    assert result.returncode == 2
    assert result.stderr == message + PARAGRAPH_END
    assert "hunter2-secret" not in result.stderr


def test_sqlite_file_in_a_missing_folder_is_named(tmp_path: Path) -> None:
    result = _run(["migrate"], tmp_path, DATABASE_URL="sqlite:///no/such/folder/prodops.db")
    assert result.returncode == 2
    assert result.stderr == (
        "ProdOps could not open the SQLite database at DATABASE_URL (sqlite:///no/such/folder/prodops.db): "
        f"the folder {tmp_path.resolve() / 'no/such/folder'} does not exist. Create it (mkdir -p), or set "
        "DATABASE_URL to a file in a folder that exists, e.g. sqlite:///prodops.db (see "
        "README.md#configuration).\n"
    )


def test_serve_with_a_token_slack_refuses_is_one_paragraph(tmp_path: Path) -> None:
    from bot.devkit.emulator import SlackEmulator

    emulator = SlackEmulator().start()
    try:
        env = {
            "SLACK_SIGNING_SECRET": "s",
            "SLACK_API_URL": emulator.url,
            "SLACK_BOT_TOKEN": "xoxb-not-this-one",
        }
        result = _run(["serve", "--bind", "127.0.0.1:0"], tmp_path, **env)
    finally:
        emulator.stop()
    assert result.returncode == 2
    assert result.stderr == (
        "ProdOps configuration error: Slack does not accept SLACK_BOT_TOKEN (auth.test answered invalid_auth). "
        "Copy the Bot User OAuth Token (xoxb-...) again from your Slack app's 'OAuth & Permissions' page "
        "(reinstall the app to the workspace first if it was removed or the token revoked) and set "
        "SLACK_BOT_TOKEN to it; see README.md#configuration.\n"
    )
    assert result.stdout == ""


def test_serve_when_slack_cannot_be_reached_is_one_paragraph(tmp_path: Path) -> None:
    env = {
        "SLACK_SIGNING_SECRET": "s",
        "SLACK_API_URL": "http://127.0.0.1:1/api/",
        "SLACK_BOT_TOKEN": "xoxb-1",
    }
    result = _run(["serve"], tmp_path, **env)
    assert result.returncode == 2
    assert result.stderr == (
        "ProdOps configuration error: could not reach Slack at SLACK_API_URL (http://127.0.0.1:1/api/) to "
        "check SLACK_BOT_TOKEN (URLError: [Errno 111] Connection refused). Check the network or proxy of this "
        "machine, or SLACK_API_URL if you set it; see README.md#configuration.\n"
    )


def test_keys_rotate_without_a_key_does_not_say_oauth_is_set(tmp_path: Path) -> None:
    result = _run(["keys", "rotate"], tmp_path, DATABASE_URL=f"sqlite:///{tmp_path / 'p.db'}")
    assert result.returncode == 2
    assert result.stderr.startswith(
        "ProdOps configuration error: PRODOPS_ENCRYPTION_KEY is not set; multi-workspace installs (when "
        "SLACK_CLIENT_ID and SLACK_CLIENT_SECRET are set) store every workspace's Slack tokens encrypted with "
        "it. Set PRODOPS_ENCRYPTION_KEY to one or more Fernet keys"
    )


def test_export_counts_read_as_words() -> None:
    from bot.cli import exported

    assert exported(0, "requests", "jsonl") == "Nothing to export: no requests."
    assert exported(1, "requests", "csv") == "Exported 1 request as csv."
    assert exported(1_200, "feedback", "jsonl") == "Exported 1,200 feedback items as jsonl."
