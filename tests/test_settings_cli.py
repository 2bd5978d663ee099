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
