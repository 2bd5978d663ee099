"""A multi-workspace stack for tests: the emulator as Slack's OAuth side, and a real server with OAuth on."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from cryptography.fernet import Fernet
from sqlalchemy import select

from bot.devkit.driver import SlackDriver
from bot.devkit.emulator import SlackEmulator
from bot.devkit.server_process import ServerProcess, free_port
from bot.settings import Settings
from storage.db import Database
from storage.migrate import upgrade
from storage.models import slack_bots, slack_installations
from tests.conftest import SIGNING_SECRET, _create_database, server_env

CLIENT_ID = "1111.2222"
CLIENT_SECRET = "emulator-client-secret-0123456789"
USER_SCOPES = "users:read"


@dataclass
class Page:
    """One HTTP answer from the server or the emulator (redirects are not followed)."""

    status: int
    headers: dict[str, str]  # names in lower case
    body: str

    @property
    def location(self) -> str:
        return self.headers.get("location", "")


@dataclass
class OAuthStack:
    """An emulator with OAuth on, a server started with SLACK_CLIENT_ID/SECRET, and its own database."""

    emulator: SlackEmulator
    server: ServerProcess
    db: Database
    db_url: str
    key: str
    env: dict[str, str]
    drivers: dict[str, SlackDriver] = field(default_factory=dict)

    def settings(self, **overrides: str) -> Settings:
        """The server's settings, for calling the bot's code in-process against the same database."""
        values = {**self.env, **overrides}
        return Settings(**{k: v for k, v in values.items() if k in _ALIASES})  # type: ignore[arg-type]

    def driver(self, team_id: str) -> SlackDriver:
        """A driver that sends signed requests as Slack does for `team_id`."""
        if team_id not in self.drivers:
            self.drivers[team_id] = SlackDriver(
                events_url=self.server.events_url,
                signing_secret=SIGNING_SECRET,
                emulator=self.emulator,
                team_id=team_id,
            )
        return self.drivers[team_id]

    def add_team(self, team_id: str, name: str) -> None:
        """A workspace in the emulator (its static token is never given to the bot)."""
        self.emulator.add_team(team_id, name, name.lower().replace(" ", "-"), f"xoxb-static-{team_id}")

    def install(self, team_id: str, *, user: str | None = None) -> Page:
        """The whole browser dance: /slack/install → Slack's consent page → /slack/oauth_redirect."""
        start = get(self.server.base_url + "/slack/install")
        assert start.status == 302, start
        cookie = start.headers.get("set-cookie", "").split(";")[0]
        assert cookie.startswith("slack-app-oauth-state="), start.headers
        consent = get(start.location + f"&team={team_id}" + (f"&user={user}" if user else ""))
        assert consent.status == 302, consent
        return get(consent.location, cookie=cookie)

    def token_rows(self, team_id: str) -> list[dict]:
        """The raw stored token columns of a team (as in the database: ciphertext)."""
        rows = []
        with self.db.engine.connect() as conn:
            for table in (slack_installations, slack_bots):
                columns = [c for c in table.columns if c.name.endswith("_token")]
                for row in conn.execute(select(*columns).where(table.c.team_id == team_id)).mappings():
                    rows.append({"table": table.name, **row})
        return rows


_ALIASES = {f.alias for f in Settings.model_fields.values() if f.alias}


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


_opener = urllib.request.build_opener(_NoRedirect)


def get(url: str, *, cookie: str | None = None) -> Page:
    """GET without following redirects; error statuses are answers too."""
    request = urllib.request.Request(url, headers={"Cookie": cookie} if cookie else {})
    try:
        with _opener.open(request, timeout=15) as answer:
            return Page(
                answer.status, _lower(answer.headers.items()), answer.read().decode("utf-8", "replace")
            )
    except urllib.error.HTTPError as error:
        return Page(error.code, _lower(error.headers.items()), error.read().decode("utf-8", "replace"))


def _lower(items: Iterable[tuple[str, str]]) -> dict[str, str]:
    return {name.lower(): value for name, value in items}


def query_of(url: str) -> dict[str, str]:
    """The query parameters of a URL (first value of each)."""
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def oauth_stack(backend: str, tmp: Path, **extra_env: str) -> Iterator[OAuthStack]:
    """Starts an emulator (OAuth on) and a server in multi-workspace mode on a new database; stops both."""
    gen = _create_database(backend, tmp)
    target = next(gen)
    upgrade(target.url)
    db = Database(target.url)
    emulator = SlackEmulator().start()
    port = free_port()
    emulator.enable_oauth(
        CLIENT_ID, CLIENT_SECRET, redirect_uri=f"http://127.0.0.1:{port}/slack/oauth_redirect"
    )
    key = Fernet.generate_key().decode()
    env = server_env(
        emulator,
        target.url,
        SLACK_BOT_TOKEN="",
        SLACK_CLIENT_ID=CLIENT_ID,
        SLACK_CLIENT_SECRET=CLIENT_SECRET,
        SLACK_USER_SCOPES=USER_SCOPES,
        PRODOPS_ENCRYPTION_KEY=key,
        WEB_CONCURRENCY="1",
        PRODOPS_SIMILARITY_BACKEND="tfidf",  # no model download in these tests
        **extra_env,
    )
    server = ServerProcess(env, port=port, log_path=tmp / "oauth-server.log")
    try:
        server.start()
        yield OAuthStack(emulator=emulator, server=server, db=db, db_url=target.url, key=key, env=env)
    finally:
        server.stop()
        emulator.stop()
        db.dispose()
        gen.close()
