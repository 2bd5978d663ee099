"""Logging: one format for every process, and secrets never written out.

Every handler the process has when logging is configured (ours on the root logger, and gunicorn's) gets
a filter that scrubs, from the message, the traceback and the stack of each record:
- anything shaped like a secret: Slack tokens (xoxb-, xoxp-, xoxe-, xapp-, …) and ProdOps API tokens
  (prodops_…);
- the exact values of the configured secrets: every environment (or `.env`) variable whose name says it
  is one (…_SECRET, …_TOKEN, …_KEY, …_KEYS, …_PASSWORD: the signing secret, the client secret, the
  encryption key(s)), the password in any URL-valued variable (DATABASE_URL, PRODOPS_DATASOURCE_*), and
  any value given to `register_secret`.
Tracebacks of pydantic validation errors leave out the rejected input (it is what someone typed).
Message text (what people wrote in Slack) is logged only at DEBUG: below WARNING, Bolt's records (which
dump request bodies) are dropped unless PRODOPS_LOG_LEVEL=DEBUG. Bodies that fail the signature check are
refused before Bolt sees them (bot/web.py), so they are not logged at any level.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import unquote

SECRET_PATTERN = re.compile(
    r"\b(xoxe\.xox[a-z]-[A-Za-z0-9-]+|xox[abpersc]-[A-Za-z0-9-]+|xapp-[A-Za-z0-9-]+"
    r"|prodops_[A-Za-z0-9_-]{24,})"
)
SECRET_NAME = re.compile(r"(SECRET|TOKEN|_KEY|_KEYS|PASSWORD)$", re.IGNORECASE)
URL_PASSWORD = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:([^@\s]+)@")
MIN_SECRET_CHARS = 8  # shorter values ("1", "dev") would scrub ordinary words out of every line
REDACTED_TOKEN = "[redacted-token]"
REDACTED_SECRET = "[redacted-secret]"

_secrets: set[str] = set()
_secrets_lock = threading.Lock()
_exact: re.Pattern[str] | None = None


def register_secret(value: str | None) -> None:
    """Adds a value that must never be logged (e.g. a token read from the installation store)."""
    global _exact
    if not value or len(value) < MIN_SECRET_CHARS:
        return
    with _secrets_lock:
        if value in _secrets:
            return
        _secrets.add(value)
        # Longest first, so a secret that contains another is scrubbed whole.
        ordered = sorted(_secrets, key=len, reverse=True)
        _exact = re.compile("|".join(re.escape(v) for v in ordered))


def secrets_in(values: Mapping[str, str | None]) -> list[str]:
    """The values of the variables whose names say they hold secrets, and the passwords in URLs."""
    found: list[str] = []
    for name, value in values.items():
        if not value:
            continue
        if SECRET_NAME.search(name):
            found.append(value)
            # A list of keys (key rotation): each one on its own, too.
            found.extend(part.strip() for part in value.split(",") if part.strip() != value)
        elif match := URL_PASSWORD.match(value):
            found.append(match.group(1))
            found.append(unquote(match.group(1)))  # logged URLs may show it decoded
    return [v for v in found if v]


def register_configured_secrets(env_file: str | None = ".env") -> None:
    """Registers the secrets of this process's configuration (environment and `.env`)."""
    values: dict[str, str | None] = dict(os.environ)
    if env_file and os.path.exists(env_file):
        from dotenv import dotenv_values

        values = {**dotenv_values(env_file), **values}
    for value in secrets_in(values):
        register_secret(value)


def redact(text: str) -> str:
    """The text with every known secret and every token-shaped string replaced."""
    exact = _exact
    if exact is not None:
        text = exact.sub(REDACTED_SECRET, text)
    return SECRET_PATTERN.sub(REDACTED_TOKEN, text)


def _needs_redaction(text: str) -> bool:
    exact = _exact
    return bool(SECRET_PATTERN.search(text) or (exact is not None and exact.search(text)))


def format_exception(exc_info: Any) -> str:
    """A traceback as logging prints it, without the input pydantic copies into its errors (people's text)."""
    text = logging.Formatter().formatException(exc_info)
    from pydantic import ValidationError

    seen: set[int] = set()
    error = exc_info[1] if isinstance(exc_info, tuple) else None
    while isinstance(error, BaseException) and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, ValidationError):
            problems = "\n".join(
                f"{'.'.join(str(part) for part in e['loc']) or '(value)'}: {e['msg']} [type={e['type']}]"
                for e in error.errors(include_input=False, include_url=False, include_context=False)
            )
            text = text.replace(
                str(error), f"{error.error_count()} validation errors for {error.title}\n{problems}"
            )
        error = error.__cause__ or error.__context__
    return text


class RedactSecrets(logging.Filter):
    """Scrubs secrets from a record's message, traceback and stack before any handler formats it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if _needs_redaction(message):
            record.msg = redact(message)
            record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = format_exception(record.exc_info)
        if record.exc_text and _needs_redaction(record.exc_text):
            record.exc_text = redact(record.exc_text)
        if record.stack_info and _needs_redaction(record.stack_info):
            record.stack_info = redact(record.stack_info)
        return True


class QuietBolt(logging.Filter):
    """Bolt's records below WARNING only at DEBUG, and not its warning that ProdOps gives it a client.

    Bolt's loggers copy the root logger's level when they are made (`slack_bolt.logger`), so the level of
    the `slack_bolt` logger does not reach them; this filter on the handlers does, for every Bolt logger.
    """

    def __init__(self) -> None:
        super().__init__()
        self.debug = False

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("slack_bolt"):
            return True
        if self.debug:
            return True
        if record.levelno < logging.WARNING:
            return False
        # ProdOps builds the client from its settings (retries, SLACK_API_URL); Bolt also sees
        # SLACK_BOT_TOKEN in the environment and warns at every start that it is unused, which it is meant to be.
        return not str(record.msg).startswith(BOLT_CLIENT_WARNING)


BOLT_CLIENT_WARNING = "As you gave `client` as well, `token` will be unused"
_FILTER = RedactSecrets()
_QUIET_BOLT = QuietBolt()


def protect_handlers(handlers: Iterable[logging.Handler]) -> None:
    """Adds the redacting filter to each handler (once)."""
    for handler in handlers:
        if _QUIET_BOLT not in handler.filters:
            handler.addFilter(_QUIET_BOLT)
        if _FILTER not in handler.filters:
            handler.addFilter(_FILTER)


def protect_all_handlers() -> None:
    """Adds the redacting filter to every handler of every logger that exists now (gunicorn's included)."""
    protect_handlers(logging.getLogger().handlers)
    for existing in list(logging.Logger.manager.loggerDict.values()):
        if isinstance(existing, logging.Logger):
            protect_handlers(existing.handlers)


def protect_command_line() -> None:
    """For CLI subcommands that do not configure logging: Python's last-resort handler (warnings and errors
    to stderr when no handler is set) scrubs secrets too."""
    register_configured_secrets()
    if logging.lastResort is not None:
        protect_handlers([logging.lastResort])


def configure_logging(level: str = "INFO") -> None:
    """Configure the root logger once per process."""
    register_configured_secrets()
    root = logging.getLogger()
    _QUIET_BOLT.debug = level.upper() == "DEBUG"
    if getattr(root, "_prodops_configured", False):
        root.setLevel(level.upper())
        protect_all_handlers()
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"))
    root.handlers[:] = [handler]
    protect_all_handlers()
    root.setLevel(level.upper())
    logging.getLogger("apscheduler").setLevel(logging.WARNING)  # a line per tick is noise
    root._prodops_configured = True  # type: ignore[attr-defined]
