"""The Slack Web API client, built from settings, with retries for work off the ack path.

Work outside a Slack request (scheduled jobs, the CLI) gets its client per workspace from `TeamClients`:
`clients.for_team(team_id)`. With SLACK_BOT_TOKEN that is the one token; with OAuth installs it is the
workspace's bot token from the encrypted installation store, refreshed when it rotates.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry import RetryHandler, RetryState
from slack_sdk.http_retry import default_retry_handlers as sdk_default_retry_handlers
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.web.slack_response import SlackResponse

from bot import observability
from bot.settings import Settings

if TYPE_CHECKING:
    from slack_sdk.oauth.installation_store import InstallationStore

    from storage.db import Database

logger = logging.getLogger("prodops.slack")


METHOD_NAME = re.compile(r"^[a-zA-Z]+(\.[a-zA-Z0-9_]+)+$")
ERROR_CODE = re.compile(r"^[a-z0-9_.]{1,64}$")


def api_method(url: str) -> str:
    """The Web API method of a request URL (…/api/chat.postMessage?… → chat.postMessage), else "other"."""
    name = urlsplit(url).path.rsplit("/", 1)[-1]
    return name if METHOD_NAME.match(name) else "other"


class SlackCallMeter(RetryHandler):
    """Counts every Web API attempt by method and HTTP status (and Slack's error code); never retries.

    slack_sdk asks each retry handler about every answer, and Bolt copies the app client's handlers into
    the client it builds for each request, so this sees the calls of listeners, jobs and the CLI alike.
    It must come first in the list: the SDK stops asking once a handler decides to retry.
    """

    def __init__(self) -> None:
        super().__init__(max_retry_count=0)

    def can_retry(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        if response is not None:
            status = str(response.status_code)
        else:
            status = "timeout" if isinstance(error, TimeoutError) else "network_error"
        body = response.body if response is not None and isinstance(response.body, dict) else {}
        code = body.get("error") if body.get("ok") is False else None
        error_code = (str(code) if ERROR_CODE.match(str(code)) else "other") if code else None
        observability.record_slack_response(api_method(request.url), status, error_code)
        return False


class MeteredRateLimitRetryHandler(RateLimitErrorRetryHandler):
    """slack_sdk's 429 handler (sleeps for Retry-After, then retries), recording the seconds it waited."""

    def prepare_for_next_attempt(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> None:
        started = time.monotonic()
        try:
            super().prepare_for_next_attempt(state=state, request=request, response=response, error=error)
        finally:
            observability.record_rate_limit_wait(api_method(request.url), time.monotonic() - started)


def metered(handlers: list[RetryHandler] | None) -> list[RetryHandler]:
    """`handlers` (None: slack_sdk's defaults) with a SlackCallMeter first, so every call is counted."""
    chosen = list(sdk_default_retry_handlers() if handlers is None else handlers)
    if any(isinstance(h, SlackCallMeter) for h in chosen):
        return chosen
    return [SlackCallMeter(), *chosen]


def default_retry_handlers() -> list[RetryHandler]:
    """Every call counted; connection errors and 5xx retried, 429 waited out (Retry-After)."""
    return [
        SlackCallMeter(),
        ConnectionErrorRetryHandler(max_retry_count=2),
        MeteredRateLimitRetryHandler(max_retry_count=3),
        ServerErrorRetryHandler(max_retry_count=2),
    ]


def build_client(settings: Settings, token: str | None = None) -> WebClient:
    """A WebClient on SLACK_API_URL that retries connection errors and 5xx, and honours 429 Retry-After.

    Without `token`: SLACK_BOT_TOKEN, or none in multi-workspace mode (see TeamClients).
    """
    return WebClient(
        token=token or (None if settings.multi_workspace else settings.slack_bot_token),
        base_url=settings.slack_api_url,
        timeout=15,
        retry_handlers=default_retry_handlers(),
    )


class WorkspaceNotInstalled(SlackApiError):
    """The app has no (valid) installation in this workspace: uninstalled, revoked, or never installed.

    A SlackApiError with error `invalid_auth`, as Slack answers for a revoked token, so every caller that
    already handles Slack's refusals handles this one too.
    """

    def __init__(self, team_id: str, reason: str = "ProdOps is not installed in this workspace") -> None:
        response = SlackResponse(
            client=None,
            http_verb="POST",
            api_url="",
            req_args={},
            data={"ok": False, "error": "invalid_auth", "team_id": team_id, "detail": reason},
            headers={},
            status_code=200,
        )
        super().__init__(f"{reason} ({team_id})", response)
        self.team_id = team_id


class TeamClients(WebClient):
    """The client for jobs and the CLI: `for_team(team_id)` is the WebClient of that workspace.

    Single-workspace mode: this object *is* the client of SLACK_BOT_TOKEN and `for_team` returns it, so code
    that calls `client.chat_postMessage(...)` directly keeps working. Multi-workspace mode: this object has no
    token; `for_team` returns a client that looks the workspace's token up (cached for a short while,
    rotated when it is about to expire) before every call, and raises `WorkspaceNotInstalled` (a
    SlackApiError, `invalid_auth`) when the workspace has no installation.
    """

    def __init__(
        self,
        *,
        token: str | None,
        base_url: str,
        timeout: int = 15,
        retry_handlers: list[RetryHandler] | None = None,
        tokens: InstallationTokens | None = None,
    ) -> None:
        super().__init__(
            token=token, base_url=base_url, timeout=timeout, retry_handlers=metered(retry_handlers)
        )
        self._tokens = tokens
        self._per_team: dict[str, _TeamClient] = {}
        self._lock = threading.Lock()

    @property
    def multi_workspace(self) -> bool:
        """True when tokens come from the installation store."""
        return self._tokens is not None

    def for_team(self, team_id: str) -> WebClient:
        """The WebClient that acts in `team_id` (this client itself in single-workspace mode)."""
        if self._tokens is None:
            return self
        with self._lock:
            client = self._per_team.get(team_id)
            if client is None:
                client = _TeamClient(
                    team_id,
                    self._tokens,
                    base_url=self.base_url,
                    timeout=self.timeout,
                    retry_handlers=list(self.retry_handlers),
                )
                self._per_team[team_id] = client
            return client

    def installed_team_ids(self) -> list[str]:
        """Every workspace the app can act in (single-workspace mode: none known without a call)."""
        return self._tokens.team_ids() if self._tokens is not None else []


class _TeamClient(WebClient):
    """A WebClient whose token is the workspace's current bot token, resolved before each call."""

    def __init__(self, team_id: str, tokens: InstallationTokens, **kwargs: Any) -> None:
        super().__init__(token=None, team_id=team_id, **kwargs)
        self._team = team_id
        self._tokens = tokens

    def api_call(self, api_method: str, **kwargs: Any) -> SlackResponse:
        """Resolves the token (may rotate it, or raise WorkspaceNotInstalled), then calls Slack."""
        token = self._tokens.bot_token(self._team)
        self.token = token
        try:
            return super().api_call(api_method, **kwargs)
        except SlackApiError as exc:
            if exc.response.get("error") in ("invalid_auth", "token_revoked", "account_inactive"):
                self._tokens.forget(self._team)  # look it up again next time (re-install, rotation)
            raise


class InstallationTokens:
    """Bot tokens by workspace from the installation store, cached briefly and rotated before expiry."""

    def __init__(
        self,
        store: InstallationStore,
        *,
        rotate: Callable[[Any], Any] | None,
        ttl_seconds: float,
        rotation_minutes: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self._rotate = rotate
        self.ttl = ttl_seconds
        self.rotation_minutes = rotation_minutes
        self._clock = clock
        self._cache: dict[str, tuple[float, str]] = {}
        self._lock = threading.Lock()

    def forget(self, team_id: str) -> None:
        """Drops a cached token."""
        with self._lock:
            self._cache.pop(team_id, None)

    def team_ids(self) -> list[str]:
        """Workspaces with a bot token in the store."""
        finder = getattr(self.store, "installed_team_ids", None)
        return list(finder()) if finder is not None else []

    def bot_token(self, team_id: str) -> str:
        """The workspace's usable bot token (WorkspaceNotInstalled when there is none)."""
        now = self._clock()
        with self._lock:
            cached = self._cache.get(team_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        token, expires_at = self._load(team_id)
        valid_for = self.ttl
        if expires_at is not None:
            # Never keep a token past the point where it should be rotated.
            left = expires_at.timestamp() - time.time() - self.rotation_minutes * 60
            valid_for = max(0.0, min(valid_for, left))
        with self._lock:
            self._cache[team_id] = (now + valid_for, token)
        return token

    def _load(self, team_id: str) -> tuple[str, datetime | None]:
        """Reads the installation (falling back to the bot row) and rotates its token when due."""
        from slack_sdk.oauth.installation_store import Installation

        installation: Installation | None = self.store.find_installation(enterprise_id=None, team_id=team_id)
        if installation is not None and installation.bot_token:
            if self._rotate is not None:
                refreshed = self._rotate(installation)
                if refreshed is not None:
                    installation = refreshed
            return str(installation.bot_token), _expiry(installation.bot_token_expires_at)
        bot = self.store.find_bot(enterprise_id=None, team_id=team_id)
        if bot is None or not bot.bot_token:
            raise WorkspaceNotInstalled(team_id)
        if self._rotate is not None:
            refreshed_bot = self._rotate(bot)
            if refreshed_bot is not None:
                bot = refreshed_bot
        return str(bot.bot_token), _expiry(bot.bot_token_expires_at)


def _expiry(epoch: int | None) -> datetime | None:
    return datetime.fromtimestamp(epoch, UTC) if epoch else None


def team_clients(
    settings: Settings, db: Database | None = None, *, retry_handlers: list[RetryHandler] | None = None
) -> TeamClients:
    """TeamClients from settings: the one SLACK_BOT_TOKEN, or (SLACK_CLIENT_ID set) the installation store.

    `retry_handlers=[]` gives clients without the SDK's retries (digest delivery retries itself); calls are
    counted for /metrics either way.
    """
    handlers = default_retry_handlers() if retry_handlers is None else retry_handlers
    if not settings.multi_workspace:
        return TeamClients(
            token=settings.slack_bot_token, base_url=settings.slack_api_url, retry_handlers=handlers
        )
    if db is None:
        raise ValueError("multi-workspace clients need the database (installation store)")
    from bot.security.oauth import installation_store

    store = installation_store(settings, db)
    rotator_client = WebClient(
        base_url=settings.slack_api_url, timeout=15, retry_handlers=default_retry_handlers()
    )
    tokens = InstallationTokens(
        store,
        rotate=_rotation(store, settings, rotator_client),
        ttl_seconds=settings.installation_cache_seconds,
        rotation_minutes=settings.token_rotation_minutes,
    )
    return TeamClients(token=None, base_url=settings.slack_api_url, retry_handlers=handlers, tokens=tokens)


def _rotation(store: Any, settings: Settings, client: WebClient) -> Callable[[Any], Any]:
    """Refreshes an expiring installation's or bot's tokens with slack_sdk's TokenRotator, and saves them."""
    from slack_sdk.oauth.installation_store import Bot, Installation
    from slack_sdk.oauth.token_rotation import TokenRotator

    rotator = TokenRotator(
        client_id=settings.slack_client_id or "",
        client_secret=settings.slack_client_secret or "",
        client=client,
    )
    minutes = settings.token_rotation_minutes

    def rotate(found: Installation | Bot) -> Installation | Bot | None:
        if isinstance(found, Installation):
            refreshed = rotator.perform_token_rotation(installation=found, minutes_before_expiration=minutes)
            if refreshed is not None:
                store.save(refreshed)
            return refreshed
        refreshed_bot = rotator.perform_bot_token_rotation(bot=found, minutes_before_expiration=minutes)
        if refreshed_bot is not None:
            store.save_bot(refreshed_bot)
        return refreshed_bot

    return rotate


def for_team(client: WebClient, team_id: str) -> WebClient:
    """The client that acts in `team_id`: TeamClients.for_team(team_id), or a plain WebClient itself."""
    return TeamClients.for_team(client, team_id) if isinstance(client, TeamClients) else client
