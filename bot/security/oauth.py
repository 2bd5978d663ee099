"""Multi-workspace installs: Bolt's OAuth flow on our database, with every Slack token encrypted at rest.

The installation and state tables are slack_sdk's own (storage/models.py puts them on our metadata so the
Alembic migration creates them; token columns are TEXT to hold ciphertext). This module never creates
tables. Uninstalls and revoked tokens remove the tokens and start the workspace's grace period.
"""

from __future__ import annotations

import html
import logging
from datetime import timedelta
from typing import Any

from slack_bolt import App, BoltContext, BoltResponse
from slack_bolt.authorization.authorize import InstallationStoreAuthorize
from slack_bolt.oauth.callback_options import CallbackOptions, FailureArgs, SuccessArgs
from slack_bolt.oauth.oauth_settings import OAuthSettings
from slack_sdk import WebClient
from slack_sdk.oauth.installation_store import Bot, Installation
from slack_sdk.oauth.installation_store.sqlalchemy import SQLAlchemyInstallationStore
from slack_sdk.oauth.state_store.sqlalchemy import SQLAlchemyOAuthStateStore
from sqlalchemy import Table, select, update

from bot.security.crypto import SecretBox
from bot.settings import Settings
from bot.workspaces import get_or_create
from storage.db import Database
from storage.models import slack_bots, slack_installations, slack_oauth_states
from storage.types import utcnow

logger = logging.getLogger("prodops.oauth")

INSTALL_PATH = "/slack/install"
REDIRECT_PATH = "/slack/oauth_redirect"
STATE_EXPIRATION_SECONDS = 600
TOKEN_FIELDS = ("bot_token", "bot_refresh_token", "user_token", "user_refresh_token")
BOT_TOKEN_FIELDS = ("bot_token", "bot_refresh_token")


def token_columns(table: Table) -> list[str]:
    """The columns of an installation table that hold a Slack token (all end in _token)."""
    return [column.name for column in table.columns if column.name.endswith("_token")]


class EncryptedInstallationStore(SQLAlchemyInstallationStore):
    """slack_sdk's SQLAlchemy installation store on our tables; tokens are sealed on save, opened on find."""

    def __init__(self, *, client_id: str, db: Database, box: SecretBox) -> None:
        super().__init__(
            client_id=client_id, engine=db.engine, logger=logging.getLogger("prodops.oauth.store")
        )
        # Our tables (TEXT token columns, created by migration 0007) instead of the ones slack_sdk builds.
        self.installations = slack_installations
        self.bots = slack_bots
        self.box = box

    def create_tables(self) -> None:
        """The Alembic migration creates these tables; never at runtime."""
        raise RuntimeError("slack_installations and slack_bots are created by `prodops migrate`")

    def save(self, installation: Installation) -> None:
        """Stores an installation (and its bot) with every token encrypted."""
        sealed = Installation(**installation.to_dict_for_copying())
        for name in TOKEN_FIELDS:
            setattr(sealed, name, self.box.seal(getattr(sealed, name)))
        super().save(sealed)  # calls save_bot(sealed.to_bot()): already sealed, kept as is

    def save_bot(self, bot: Bot) -> None:
        """Stores a bot installation with its tokens encrypted."""
        sealed = Bot(**bot.to_dict_for_copying())
        for name in BOT_TOKEN_FIELDS:
            setattr(sealed, name, self.box.seal(getattr(sealed, name)))
        super().save_bot(sealed)

    def build_installation_entity(self, row: Any) -> Installation:  # type: ignore[override]
        """An installation read from a row, tokens decrypted."""
        installation = super().build_installation_entity(row)
        for name in TOKEN_FIELDS:
            setattr(installation, name, self.box.open(getattr(installation, name)))
        return installation

    def build_bot_entity(self, row: Any) -> Bot:  # type: ignore[override]
        """A bot read from a row, tokens decrypted."""
        bot = super().build_bot_entity(row)
        for name in BOT_TOKEN_FIELDS:
            setattr(bot, name, self.box.open(getattr(bot, name)))
        return bot

    def revoke_bot(self, *, enterprise_id: str | None, team_id: str | None) -> None:
        """Forgets the bot token everywhere it is kept: the bots rows and the installations' copies."""
        self.delete_bot(enterprise_id=enterprise_id, team_id=team_id)
        c = self.installations.c
        with self.engine.begin() as conn:
            conn.execute(
                update(self.installations)
                .where(c.client_id == self.client_id, c.enterprise_id == enterprise_id, c.team_id == team_id)
                .values(bot_token=None, bot_refresh_token=None, bot_token_expires_at=None)
            )

    def installed_team_ids(self) -> list[str]:
        """Teams with a bot token in the store."""
        c = self.bots.c
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(c.team_id).where(c.client_id == self.client_id, c.bot_token.is_not(None)).distinct()
            )
            return sorted(str(team) for (team,) in rows if team)


def encryption_box(settings: Settings) -> SecretBox:
    """The SecretBox for PRODOPS_ENCRYPTION_KEY (call settings.require_encryption_key() first for a clear error)."""
    secret = settings.encryption_key.get_secret_value() if settings.encryption_key else None
    return SecretBox.from_setting(secret)


def installation_store(settings: Settings, db: Database) -> EncryptedInstallationStore:
    """The encrypted installation store of this app (its rows are keyed by SLACK_CLIENT_ID)."""
    if not settings.slack_client_id:
        raise ValueError("the installation store needs SLACK_CLIENT_ID")
    return EncryptedInstallationStore(client_id=settings.slack_client_id, db=db, box=encryption_box(settings))


def oauth_settings(settings: Settings, db: Database, client: WebClient) -> OAuthSettings:
    """Bolt's OAuth settings: our stores, our pages, scopes from manifest.yml, rotation through `client`."""
    store = installation_store(settings, db)
    state_store = SQLAlchemyOAuthStateStore(
        expiration_seconds=STATE_EXPIRATION_SECONDS,
        engine=db.engine,
        table_name=slack_oauth_states.name,
        logger=logging.getLogger("prodops.oauth.state"),
    )
    oauth = OAuthSettings(
        client_id=settings.slack_client_id,
        client_secret=settings.slack_client_secret,
        scopes=settings.bot_scopes(),
        user_scopes=settings.user_scopes() or None,
        redirect_uri=settings.slack_redirect_uri,
        install_path=INSTALL_PATH,
        redirect_uri_path=REDIRECT_PATH,
        install_page_rendering_enabled=False,  # /slack/install goes straight to Slack's consent page
        authorization_url=settings.oauth_authorize_url,
        installation_store=store,
        token_rotation_expiration_minutes=settings.token_rotation_minutes,
        state_store=state_store,
        state_expiration_seconds=STATE_EXPIRATION_SECONDS,
        callback_options=CallbackOptions(
            success=lambda args: install_succeeded(args, db=db, settings=settings),
            failure=install_failed,
        ),
        logger=logging.getLogger("prodops.oauth.flow"),
    )
    # Bolt's default rotator talks to slack.com; ours goes to SLACK_API_URL like every other call.
    oauth.authorize = InstallationStoreAuthorize(
        logger=logging.getLogger("prodops.oauth.authorize"),
        installation_store=store,
        client_id=settings.slack_client_id,
        client_secret=settings.slack_client_secret,
        token_rotation_expiration_minutes=settings.token_rotation_minutes,
        # Caches auth.test answers by token; the token itself is still read from the store on every
        # request, so an uninstalled workspace is refused at once.
        cache_enabled=True,
        client=client,
    )
    return oauth


# ---- install pages ------------------------------------------------------------------------------

FAILURES: dict[str, tuple[str, str]] = {
    "access_denied": (
        "The install was cancelled in Slack.",
        "Nothing was installed. To try again, start over from the install link.",
    ),
    "invalid_browser": (
        "This browser did not start the install (its install cookie is missing or expired).",
        "Start over from the install link, in the same browser, and finish within 10 minutes.",
    ),
    "invalid_state": (
        "This install link has expired or was already used.",
        "Start over from the install link and finish within 10 minutes.",
    ),
    "missing_code": (
        "Slack did not send an authorization code.",
        "Start over from the install link; if it keeps happening, check the app's Redirect URL in Slack.",
    ),
    "invalid_code": (
        "Slack did not accept the authorization code (it may have been used already or have expired).",
        "Start over from the install link. If it keeps happening, check SLACK_CLIENT_ID and "
        "SLACK_CLIENT_SECRET on the server.",
    ),
    "storage_error": (
        "Slack approved the install, but ProdOps could not save it.",
        "Try again in a minute; if it keeps failing, the server's log says why (database or encryption key).",
    ),
}


def _page(title: str, paragraphs: list[str], *, link: tuple[str, str] | None = None) -> str:
    body = "".join(f"<p>{html.escape(p)}</p>" for p in paragraphs)
    if link is not None:
        body += f'<p><a href="{html.escape(link[0], quote=True)}">{html.escape(link[1])}</a></p>'
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title></head>"
        f'<body style="font-family: sans-serif; max-width: 40em; margin: 3em auto">'
        f"<h1>{html.escape(title)}</h1>{body}</body></html>"
    )


def _html(status: int, page: str, settings: OAuthSettings | None) -> BoltResponse:
    headers: dict[str, Any] = {"Content-Type": "text/html; charset=utf-8"}
    if settings is not None:  # the state cookie has done its job either way
        headers["Set-Cookie"] = [settings.state_utils.build_set_cookie_for_deletion()]
    return BoltResponse(status=status, body=page, headers=headers)


def install_succeeded(args: SuccessArgs, *, db: Database, settings: Settings) -> BoltResponse:
    """Records the workspace (a re-install ends its grace period) and says what to do next."""
    installation = args.installation
    team_id = installation.team_id or ""
    with db.session() as s:
        workspace = get_or_create(db_session=s, team_id=team_id)
        workspace.name = installation.team_name or workspace.name
        reinstalled = workspace.uninstalled_at is not None
        workspace.uninstalled_at = None
        workspace.purge_after = None
    logger.info("installed in %s%s", team_id, " (re-install: data kept)" if reinstalled else "")
    name = installation.team_name or team_id
    open_url = (
        f"slack://app?team={team_id}&id={installation.app_id}" if installation.app_id else "slack://open"
    )
    return _html(
        200,
        _page(
            f"ProdOps is installed in {name}",
            [
                f"ProdOps can now work in {name}."
                + (" Your workspace's earlier data was kept." if reinstalled else ""),
                "Next: invite the bot to the channels where feedback appears (/invite @ProdOps), react to a "
                "message with :bulb: to capture it, and type /prodops for help.",
            ],
            link=(open_url, "Open Slack"),
        ),
        args.settings,
    )


def install_failed(args: FailureArgs) -> BoltResponse:
    """Says why the install did not complete and what to do; the status is the one Bolt suggests."""
    what, todo = FAILURES.get(
        args.reason,
        (f"Slack reported an error: {args.reason}.", "Start over from the install link."),
    )
    logger.warning("install failed: %s", args.reason, exc_info=args.error)
    install = args.settings.install_path if args.settings else INSTALL_PATH
    return _html(
        args.suggested_status_code,
        _page(
            "ProdOps was not installed",
            [what, todo, f"(reason: {args.reason})"],
            link=(install, "Install again"),
        ),
        args.settings,
    )


# ---- uninstall and revocation -----------------------------------------------------------------


def mark_uninstalled(db: Database, team_id: str, *, grace_days: int) -> None:
    """Starts the workspace's grace period: its data is purged after `grace_days` unless it re-installs."""
    now = utcnow()
    with db.session() as s:
        workspace = get_or_create(db_session=s, team_id=team_id)
        if workspace.uninstalled_at is None:
            workspace.uninstalled_at = now
            workspace.purge_after = now + timedelta(days=grace_days)


def register_revocation_listeners(
    app: App, store: EncryptedInstallationStore, db: Database, settings: Settings
) -> None:
    """app_uninstalled drops every token of the team; tokens_revoked drops the revoked ones."""

    def app_uninstalled(context: BoltContext) -> None:
        team_id = context.team_id or ""
        # The grace period starts first: once the tokens are gone nothing else would ever purge the data.
        mark_uninstalled(db, team_id, grace_days=settings.purge_grace_days)
        store.delete_all(enterprise_id=context.enterprise_id, team_id=team_id)
        logger.info(
            "uninstalled from %s: tokens deleted, data kept %d days", team_id, settings.purge_grace_days
        )

    def tokens_revoked(event: dict[str, Any], context: BoltContext) -> None:
        team_id = context.team_id or ""
        tokens = event.get("tokens") or {}
        if tokens.get("bot"):
            mark_uninstalled(db, team_id, grace_days=settings.purge_grace_days)
        for user_id in tokens.get("oauth") or []:
            store.delete_installation(enterprise_id=context.enterprise_id, team_id=team_id, user_id=user_id)
        if tokens.get("bot"):
            store.revoke_bot(enterprise_id=context.enterprise_id, team_id=team_id)
        logger.info(
            "tokens revoked in %s: %d user token(s), bot: %s",
            team_id,
            len(tokens.get("oauth") or []),
            bool(tokens.get("bot")),
        )

    app.event("app_uninstalled")(app_uninstalled)
    app.event("tokens_revoked")(tokens_revoked)
