"""What the `prodops` subcommands share: migrating with a clear error, the Slack client, picking the workspace."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from bot.settings import ConfigError, Settings

if TYPE_CHECKING:
    from slack_sdk import WebClient

    from storage.db import Database

TEAM_ID_MAX = 32


def migrate(settings: Settings) -> None:
    """Upgrades the schema; an unreachable database is a ConfigError naming DATABASE_URL."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import OperationalError

    from storage.migrate import upgrade

    url = make_url(settings.database_url)
    where = url.render_as_string(hide_password=True)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        folder = Path(url.database).expanduser().resolve().parent
        if not folder.is_dir():
            raise ConfigError(
                f"ProdOps could not open the SQLite database at DATABASE_URL ({where}): the folder {folder} "
                "does not exist. Create it (mkdir -p), or set DATABASE_URL to a file in a folder that exists, "
                "e.g. sqlite:///prodops.db (see README.md#configuration)."
            )
    try:
        upgrade(settings.database_url)
    except OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise ConfigError(
            f"ProdOps could not reach the database at DATABASE_URL ({where}): {reason}. Check that the "
            "database server is running and that DATABASE_URL is right (see README.md#configuration)."
        ) from None


def slack_client(settings: Settings) -> WebClient:
    """The Web API client from settings."""
    from bot.slack_client import build_client

    return build_client(settings)


TOKEN_REFUSED = ("invalid_auth", "not_authed", "account_inactive", "token_revoked", "token_expired")


def check_bot_token(settings: Settings) -> None:
    """auth.test with SLACK_BOT_TOKEN before serving: a wrong or unreachable token is one paragraph and
    exit 2 here, instead of every web worker failing to boot on Bolt's own check."""
    from slack_sdk.errors import SlackApiError

    if settings.multi_workspace or not settings.slack_bot_token:
        return  # tokens come from the installation store, checked per workspace
    try:
        slack_client(settings).auth_test()
    except SlackApiError as exc:
        error = str(exc.response.get("error") or "an error")
        if error in TOKEN_REFUSED:
            raise ConfigError(
                f"ProdOps configuration error: Slack does not accept SLACK_BOT_TOKEN (auth.test answered "
                f"{error}). Copy the Bot User OAuth Token (xoxb-...) again from your Slack app's 'OAuth & "
                "Permissions' page (reinstall the app to the workspace first if it was removed or the token "
                "revoked) and set SLACK_BOT_TOKEN to it; see README.md#configuration."
            ) from None
        raise slack_problem(exc, "auth.test", scopes="any bot token") from None
    except OSError as exc:
        raise ConfigError(
            f"ProdOps configuration error: could not reach Slack at SLACK_API_URL ({settings.slack_api_url}) "
            f"to check SLACK_BOT_TOKEN ({exc.__class__.__name__}: {getattr(exc, 'reason', exc)}). Check the "
            "network or proxy of this machine, or SLACK_API_URL if you set it; see README.md#configuration."
        ) from None


def can_look_up(settings: Settings) -> bool:
    """Whether CLI look-ups in Slack are possible: a bot token, or (multi-workspace) the installation store."""
    return bool(settings.slack_bot_token) or settings.multi_workspace


def workspace_client(settings: Settings, db: Database, team_id: str) -> WebClient:
    """The client that looks things up in `team_id`: SLACK_BOT_TOKEN's, or in multi-workspace mode the
    workspace's own installation (decrypted from the database with PRODOPS_ENCRYPTION_KEY)."""
    if settings.slack_bot_token or not settings.multi_workspace:
        return slack_client(settings)
    from bot.slack_client import team_clients

    settings.require_encryption_key()
    return team_clients(settings, db).for_team(team_id)


def slack_problem(exc: Exception, method: str, *, scopes: str) -> ConfigError:
    """A Slack failure that is about the setup (bad token, missing scope, unreachable), not the input."""
    from slack_sdk.errors import SlackApiError

    from bot.slack_client import WorkspaceNotInstalled

    if isinstance(exc, WorkspaceNotInstalled):
        return ConfigError(
            f"ProdOps: {exc.response.get('team_id') or 'that workspace'} has no installation of the app, so "
            f"{method} cannot be called there. Install it (open /slack/install on your ProdOps server), or "
            "check --team."
        )
    if isinstance(exc, SlackApiError):
        needed = exc.response.get("needed")
        scope = f" (the token needs the {needed} scope)" if needed else ""
        return ConfigError(
            f"ProdOps configuration error: Slack refused {method} with {exc.response.get('error')}{scope}. "
            f"Check SLACK_BOT_TOKEN ({scopes}) and SLACK_API_URL; see README.md#configuration."
        )
    return ConfigError(
        f"ProdOps configuration error: could not reach Slack for {method} ({exc.__class__.__name__}: {exc}). "
        "Check SLACK_API_URL and your network; see README.md#configuration."
    )


def team_arg(team: str) -> str:
    """A --team value, checked."""
    if not team.strip() or len(team.strip()) > TEAM_ID_MAX:
        raise ConfigError(f"ProdOps: --team {team!r} is not a Slack team id (like T0123ABC).")
    return team.strip()


def known_team(settings: Settings, db: Database, team: str, *, doing: str) -> str:
    """--team, checked against the workspaces ProdOps knows (in the database, or SLACK_BOT_TOKEN's); a
    ConfigError listing them otherwise, so a typo does not make a workspace that exists nowhere else."""
    from bot.security.records import known_teams
    from storage.models import Workspace

    team_id = team_arg(team)
    with db.read() as session:
        if session.get(Workspace, team_id) is not None:
            return team_id
    single = bool(settings.slack_bot_token) and not settings.multi_workspace
    if single and token_team(slack_client(settings), scopes="any bot token") == team_id:
        return team_id  # the bot's own workspace, before its first event made its row
    teams = known_teams(db)
    listed = (
        f"The workspaces in this database: {', '.join(teams)}."
        if teams
        else "This database has no workspace yet: install the app, or start `prodops serve` and use it once."
    )
    raise ConfigError(
        f"ProdOps: {team_id} is not a workspace ProdOps knows, so it will not {doing}. {listed} Check --team "
        "(the Slack team id, like T0123ABCD)."
    )


def token_team(client: WebClient, *, scopes: str) -> str:
    """The workspace of the bot token (auth.test)."""
    from slack_sdk.errors import SlackApiError

    try:
        return str(client.auth_test()["team_id"])
    except (SlackApiError, OSError) as exc:
        raise slack_problem(exc, "auth.test", scopes=scopes) from None


def only_workspace(db: Database, *, question: str) -> str:
    """The one workspace in the database, or a ConfigError asking `question` and saying to pass --team."""
    from sqlalchemy import select

    from storage.models import Workspace

    with db.read() as session:
        teams = list(session.scalars(select(Workspace.team_id).limit(2)))
    if len(teams) == 1:
        return teams[0]
    found = "no workspace" if not teams else "several workspaces"
    raise ConfigError(
        f"ProdOps: {question} SLACK_BOT_TOKEN is not set and the database has {found}. "
        "Pass --team T0123ABC (the Slack team id), or set SLACK_BOT_TOKEN."
    )


def pick_team(team: str | None, *, client: WebClient | None, db: Database, question: str, scopes: str) -> str:
    """--team; else the bot token's workspace; else the only workspace in the database."""
    if team is not None:
        return team_arg(team)
    if client is not None:
        return token_team(client, scopes=scopes)
    return only_workspace(db, question=question)
