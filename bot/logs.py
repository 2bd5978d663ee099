"""Logging: one format for every process, and secrets never written out."""

from __future__ import annotations

import logging
import re

SECRET_PATTERN = re.compile(r"\b(xox[abpersc]-[A-Za-z0-9-]+|xapp-[A-Za-z0-9-]+)")


class RedactSecrets(logging.Filter):
    """Replaces Slack tokens in log records with a placeholder."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if SECRET_PATTERN.search(message):
            record.msg = SECRET_PATTERN.sub("[redacted-token]", message)
            record.args = None
        return True


def configure_logging(level: str = "INFO") -> None:
    """Configure the root logger once per process."""
    root = logging.getLogger()
    if getattr(root, "_prodops_configured", False):
        root.setLevel(level.upper())
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"))
    handler.addFilter(RedactSecrets())
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("apscheduler").setLevel(logging.WARNING)  # a line per tick is noise
    if level.upper() != "DEBUG":
        # Bolt logs whole request bodies (message text) at INFO when a signature is wrong; text is DEBUG-only.
        logging.getLogger("slack_bolt").setLevel(logging.WARNING)
    root._prodops_configured = True  # type: ignore[attr-defined]
