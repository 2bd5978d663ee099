"""Configuration read from the environment or `.env` (names fixed by the contract: the README's Configuration table)."""

from __future__ import annotations

import sys
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

README_CONFIG = "README.md#configuration"
MANIFEST_PATH = Path(__file__).resolve().parent.parent / "manifest.yml"

# What to tell a person for each variable when it is missing or wrong.
HINTS: dict[str, str] = {
    "SLACK_BOT_TOKEN": "the bot token (xoxb-...) from your Slack app's 'OAuth & Permissions' page",
    "SLACK_SIGNING_SECRET": "the signing secret from your Slack app's 'Basic Information' page",
    "SLACK_APP_TOKEN": "an app-level token (xapp-...) with connections:write, only for Socket Mode",
    "SLACK_API_URL": "the Slack Web API base URL, e.g. https://slack.com/api/ (must end with /)",
    "DATABASE_URL": "a SQLAlchemy URL such as sqlite:///prodops.db or postgresql+psycopg://user@host/db",
    "PORT": "the HTTP port to listen on, a number between 1 and 65535",
    "SLACK_CLIENT_ID": "the Client ID from your Slack app's 'Basic Information' page (multi-workspace installs)",
    "SLACK_CLIENT_SECRET": "the Client Secret from your Slack app's 'Basic Information' page",
    "PRODOPS_ENCRYPTION_KEY": (
        "one or more Fernet keys, comma-separated, newest first (the first encrypts the stored Slack "
        "tokens, every one decrypts). Generate one with `prodops keys generate` or "
        'python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"'
    ),
    "SLACK_SCOPES": "the bot scopes to request, comma-separated (default: oauth_config.scopes.bot in manifest.yml)",
}


class ConfigError(Exception):
    """A setting is missing or malformed; the message tells the user how to fix it."""


class Settings(BaseSettings):
    """ProdOps settings. Contract names first, then PRODOPS_* tuning knobs."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    slack_bot_token: str | None = Field(default=None, alias="SLACK_BOT_TOKEN")
    slack_signing_secret: str | None = Field(default=None, alias="SLACK_SIGNING_SECRET")
    slack_app_token: str | None = Field(default=None, alias="SLACK_APP_TOKEN")
    slack_client_id: str | None = Field(default=None, alias="SLACK_CLIENT_ID")
    slack_client_secret: str | None = Field(default=None, alias="SLACK_CLIENT_SECRET")
    slack_api_url: str = Field(default="https://slack.com/api/", alias="SLACK_API_URL")
    database_url: str = Field(default="sqlite:///prodops.db", alias="DATABASE_URL")
    port: int = Field(default=3000, alias="PORT", ge=1, le=65535)

    # Tuning (not part of the contract; safe defaults).
    # Unset: 1 process on SQLite (one writer; threads share it), 2 on Postgres.
    web_concurrency: int | None = Field(default=None, alias="WEB_CONCURRENCY", ge=1, le=64)
    web_threads: int = Field(default=8, alias="PRODOPS_WEB_THREADS", ge=1, le=256)
    inbox_lease_seconds: float = Field(default=120.0, alias="PRODOPS_INBOX_LEASE_SECONDS", gt=0)
    inbox_max_attempts: int = Field(default=5, alias="PRODOPS_INBOX_MAX_ATTEMPTS", ge=1)
    digest_tick_seconds: float = Field(default=60.0, alias="PRODOPS_DIGEST_TICK_SECONDS", gt=0)
    metrics_tick_seconds: float = Field(default=60.0, alias="PRODOPS_METRICS_TICK_SECONDS", gt=0)
    sla_tick_seconds: float = Field(default=60.0, alias="PRODOPS_SLA_TICK_SECONDS", gt=0)
    # How often the worker looks for themes to propose (read with the rest: `.env`, validated).
    themes_tick_seconds: float = Field(default=3600.0, alias="PRODOPS_THEMES_TICK_SECONDS", gt=0)
    # Scheduled jobs run in the worker process (which `prodops serve` starts); True runs them in web too.
    scheduler_in_web: bool = Field(default=False, alias="PRODOPS_SCHEDULER_IN_WEB")
    # `prodops serve` starts and supervises one `prodops worker` process; false when workers run apart.
    serve_worker: bool = Field(default=True, alias="PRODOPS_SERVE_WORKER")
    # Queue workers: deliveries handled at once per worker process; idle wake-up when no NOTIFY arrives.
    # What a worker process runs: "inbox" (deliveries, scheduled jobs) and/or "insights" (the batches that
    # load the similarity model). Split them to keep delivery workers small.
    worker_queues: str = Field(default="inbox,insights", alias="PRODOPS_WORKER_QUEUES")
    # Threads torch may use to encode in one worker process; 1 measured best on small machines (scale out
    # with worker processes instead).
    torch_threads: int = Field(default=1, alias="PRODOPS_TORCH_THREADS", ge=1, le=64)
    # Workers run at this CPU niceness (0-19): on a machine shared with web processes the acks get the CPU
    # first and queued work takes what is left; 0 gives workers the same priority as web processes.
    worker_nice: int = Field(default=10, alias="PRODOPS_WORKER_NICE", ge=0, le=19)
    worker_concurrency: int = Field(default=4, alias="PRODOPS_WORKER_CONCURRENCY", ge=1, le=64)
    worker_poll_seconds: float = Field(default=0.1, alias="PRODOPS_WORKER_POLL_SECONDS", gt=0, le=60)
    # First retry of a failed delivery after this many seconds, doubling per attempt (capped at 5 minutes).
    inbox_retry_seconds: float = Field(default=2.0, alias="PRODOPS_INBOX_RETRY_SECONDS", gt=0)
    settings_cache_seconds: float = Field(default=10.0, alias="PRODOPS_SETTINGS_CACHE_SECONDS", ge=0)
    log_level: str = Field(default="INFO", alias="PRODOPS_LOG_LEVEL")
    # Feedback similarity: "auto" (embeddings when the extra is installed, else tfidf), "tfidf", "embeddings".
    similarity_backend: Literal["auto", "tfidf", "embeddings"] = Field(
        default="auto", alias="PRODOPS_SIMILARITY_BACKEND"
    )
    # Sentence-embeddings model: a name the installed model package knows, or a local directory.
    embeddings_model: str = Field(default="all-MiniLM-L6-v2", alias="PRODOPS_EMBEDDINGS_MODEL")
    # GET /metrics: when set, scrapers must send `Authorization: Bearer <token>`.
    metrics_token: SecretStr | None = Field(default=None, alias="PRODOPS_METRICS_TOKEN")
    # `prodops worker` also serves /metrics on this port (unset: it does not listen).
    worker_metrics_port: int | None = Field(default=None, alias="PRODOPS_WORKER_METRICS_PORT", ge=1, le=65535)

    # Multi-workspace installs (OAuth): on when SLACK_CLIENT_ID and SLACK_CLIENT_SECRET are both set.
    encryption_key: SecretStr | None = Field(default=None, alias="PRODOPS_ENCRYPTION_KEY")
    slack_scopes: str | None = Field(default=None, alias="SLACK_SCOPES")
    slack_user_scopes: str | None = Field(default=None, alias="SLACK_USER_SCOPES")
    slack_redirect_uri: str | None = Field(default=None, alias="SLACK_REDIRECT_URI")
    # Minutes before a rotating token expires that it is refreshed (Bolt's default).
    token_rotation_minutes: int = Field(default=120, alias="PRODOPS_TOKEN_ROTATION_MINUTES", ge=1, le=720)
    # How long a worker reuses a workspace's token read from the installation store.
    installation_cache_seconds: float = Field(default=60.0, alias="PRODOPS_INSTALLATION_CACHE_SECONDS", ge=0)
    # Days a workspace's data is kept after the app is uninstalled, before the worker purges it.
    purge_grace_days: int = Field(default=30, alias="PRODOPS_PURGE_GRACE_DAYS", ge=0)

    @field_validator("worker_queues")
    @classmethod
    def _known_queues(cls, value: str) -> str:
        parts = {part.strip() for part in value.split(",") if part.strip()}
        if not parts or not parts <= {"inbox", "insights"}:
            raise ValueError("it takes inbox, insights, or both as 'inbox,insights'")
        return value

    @field_validator("slack_api_url")
    @classmethod
    def _api_url_shape(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value if value.endswith("/") else value + "/"

    @field_validator("database_url")
    @classmethod
    def _database_url_shape(cls, value: str) -> str:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            url = make_url(value)
        except ArgumentError as exc:
            raise ValueError("is not a SQLAlchemy URL") from exc
        if url.get_backend_name() not in ("sqlite", "postgresql"):
            raise ValueError("only sqlite and postgresql are supported")
        if url.get_backend_name() == "postgresql" and url.drivername == "postgresql":
            # Plain postgresql:// would pick psycopg2; we ship psycopg 3.
            value = url.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
        return value

    @field_validator("slack_bot_token")
    @classmethod
    def _bot_token_shape(cls, value: str | None) -> str | None:
        if value and not value.startswith("xox"):
            raise ValueError("should start with xoxb- (a bot token)")
        return value

    @field_validator("slack_app_token")
    @classmethod
    def _app_token_shape(cls, value: str | None) -> str | None:
        if value and not value.startswith("xapp-"):
            raise ValueError("should start with xapp- (an app-level token)")
        return value

    @property
    def worker_runs(self) -> set[str]:
        """The queues PRODOPS_WORKER_QUEUES names."""
        return {part.strip() for part in self.worker_queues.split(",") if part.strip()}

    @property
    def effective_web_concurrency(self) -> int:
        """Web worker processes: WEB_CONCURRENCY, else 1 on SQLite (a single writer) and 2 on Postgres."""
        if self.web_concurrency is not None:
            return self.web_concurrency
        return 1 if self.database_url.startswith("sqlite") else 2

    @property
    def socket_mode(self) -> bool:
        """True when an app-level token is set: connect over Socket Mode instead of HTTP."""
        return bool(self.slack_app_token)

    @property
    def multi_workspace(self) -> bool:
        """True when OAuth credentials are set: installs go through /slack/install, tokens live in the DB."""
        return bool(self.slack_client_id and self.slack_client_secret)

    @property
    def oauth_authorize_url(self) -> str:
        """Slack's authorize page, next to the Web API (slack.com/api/ → slack.com/oauth/v2/authorize)."""
        base = self.slack_api_url.removesuffix("/").removesuffix("/api")
        return f"{base}/oauth/v2/authorize"

    def bot_scopes(self) -> list[str]:
        """SLACK_SCOPES, else the bot scopes in manifest.yml (ConfigError when neither is there)."""
        return self._scopes(self.slack_scopes, "bot", required=True)

    def user_scopes(self) -> list[str]:
        """SLACK_USER_SCOPES, else the user scopes in manifest.yml (usually none)."""
        return self._scopes(self.slack_user_scopes, "user", required=False)

    def _scopes(self, given: str | None, kind: str, *, required: bool) -> list[str]:
        if given is not None:
            return [scope.strip() for scope in given.split(",") if scope.strip()]
        try:
            import yaml

            manifest = yaml.safe_load(MANIFEST_PATH.read_text(encoding="utf-8")) or {}
        except (OSError, ValueError) as exc:
            if not required:
                return []
            raise ConfigError(
                _explain("SLACK_SCOPES", f"is not set and {MANIFEST_PATH} cannot be read ({exc})")
            ) from None
        scopes = ((manifest.get("oauth_config") or {}).get("scopes") or {}).get(kind) or []
        return [str(scope) for scope in scopes]

    def require_encryption_key(self) -> None:
        """Raise ConfigError unless PRODOPS_ENCRYPTION_KEY holds valid Fernet keys (never echoing them)."""
        from bot.security.crypto import EncryptionKeyError, parse_keys

        try:
            parse_keys(self.encryption_key.get_secret_value() if self.encryption_key else None)
        except EncryptionKeyError as exc:
            raise ConfigError(
                _explain(
                    "PRODOPS_ENCRYPTION_KEY",
                    f"{exc}; multi-workspace installs "
                    f"({'SLACK_CLIENT_ID and SLACK_CLIENT_SECRET are set' if self.multi_workspace else 'when SLACK_CLIENT_ID and SLACK_CLIENT_SECRET are set'}) "
                    "store every workspace's Slack tokens encrypted with it",
                )
            ) from None

    def require_slack(self) -> None:
        """Raise ConfigError unless the settings needed to talk to Slack are present."""
        if self.slack_client_id or self.slack_client_secret:
            self._require_oauth()
            return
        missing = ["SLACK_BOT_TOKEN"] if not self.slack_bot_token else []
        if not self.socket_mode and not self.slack_signing_secret:
            missing.append("SLACK_SIGNING_SECRET")
        if missing:
            raise ConfigError(_explain(missing[0], "is not set", more=missing[1:]))

    def _require_oauth(self) -> None:
        """Multi-workspace mode: both OAuth credentials, the signing secret, HTTP mode and an encryption key."""
        half = "SLACK_CLIENT_SECRET" if self.slack_client_id else "SLACK_CLIENT_ID"
        if not self.multi_workspace:
            other = "SLACK_CLIENT_ID" if half == "SLACK_CLIENT_SECRET" else "SLACK_CLIENT_SECRET"
            raise ConfigError(
                _explain(half, f"is not set while {other} is (multi-workspace installs need both)")
            )
        if self.socket_mode:
            raise ConfigError(
                _explain(
                    "SLACK_APP_TOKEN",
                    "is set together with SLACK_CLIENT_ID: multi-workspace installs need HTTP mode for the "
                    "/slack/install and /slack/oauth_redirect pages. Unset SLACK_APP_TOKEN (and give Slack "
                    "your public URL) or unset the OAuth credentials",
                )
            )
        if not self.slack_signing_secret:
            raise ConfigError(_explain("SLACK_SIGNING_SECRET", "is not set"))
        self.require_encryption_key()
        if not self.bot_scopes():
            raise ConfigError(_explain("SLACK_SCOPES", "is empty and manifest.yml lists no bot scopes"))


def _explain(variable: str, problem: str, more: list[str] | None = None, hint: str | None = None) -> str:
    """One paragraph: which variable, what is wrong, what to do next."""
    hint = hint or HINTS.get(variable) or _field_hint(variable)
    also = f" ({', '.join(more)} also missing.)" if more else ""
    return (
        f"ProdOps configuration error: {variable} {problem}.{also} Set {variable} to {hint}, "
        f"in the environment or in a .env file next to where you run prodops. "
        f"The configuration table is in {README_CONFIG}; the Slack app's scopes and commands are in "
        f"manifest.yml."
    )


def _field_hint(variable: str) -> str:
    """What a tuning variable takes, read from its declaration (type, bounds, choices)."""
    field = next((f for f in Settings.model_fields.values() if f.alias == variable), None)
    if field is None:
        return "a valid value (see the configuration table)"
    annotation = field.annotation
    if get_origin(annotation) is Literal:
        return "one of " + ", ".join(str(choice) for choice in get_args(annotation))
    inner = [arg for arg in get_args(annotation) if arg is not type(None)]
    base = inner[0] if len(inner) == 1 else annotation  # `int | None` reads as int
    kinds: dict[Any, str] = {int: "a whole number", float: "a number", bool: "true or false"}
    kind = kinds.get(base, "a value")
    bounds = []
    for rule in field.metadata:
        for name, word in (("ge", "at least"), ("gt", "more than"), ("le", "at most"), ("lt", "less than")):
            if getattr(rule, name, None) is not None:
                bounds.append(f"{word} {getattr(rule, name)}")
    default = (
        "unset" if field.default is None else str(field.default).lower() if base is bool else field.default
    )
    return f"{kind}{' ' + ' and '.join(bounds) if bounds else ''} (the default is {default})"


def _shown(alias: str, given: Any) -> str:
    """The rejected value, for the message: never a token or secret, and a URL without its password."""
    if not isinstance(given, str | int) or isinstance(given, bool):
        return ""
    if any(word in alias for word in ("TOKEN", "SECRET", "KEY", "PASSWORD")):
        return ""
    text = str(given)
    if "://" in text:
        scheme, _, rest = text.partition("://")
        credentials, at, host = rest.rpartition("@")
        if at and ":" in credentials:
            text = f"{scheme}://{credentials.split(':', 1)[0]}:***@{host}"
    return f" (got {text!r})"


def load_settings() -> Settings:
    """Read settings, turning validation errors into a ConfigError with a readable message."""
    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = first.get("loc") or ("?",)
        field = str(loc[0])
        alias = next(
            (f.alias for name, f in Settings.model_fields.items() if name == field or f.alias == field),
            field,
        )
        message = str(first.get("msg") or "").removeprefix("Value error, ")
        shown = _shown(str(alias), first.get("input"))
        raise ConfigError(_explain(str(alias), f"is malformed: {message}{shown}")) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Process-wide settings (cached)."""
    return load_settings()


def exit_on_config_error(exc: ConfigError) -> None:
    """Print the one-paragraph message and exit with status 2 (no traceback)."""
    print(str(exc), file=sys.stderr)
    raise SystemExit(2)
