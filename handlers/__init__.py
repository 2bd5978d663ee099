"""Slack listeners, one module per capability; `register(app)` binds them all."""

from __future__ import annotations

from slack_bolt import App

from handlers import (
    admin,
    digests,
    feedback,
    home,
    metrics,
    metrics_define,
    monitoring,
    request_types,
    requests,
)


def register(app: App) -> None:
    """Registers every ProdOps listener on the Bolt app."""
    feedback.register(app)
    monitoring.register(app)
    admin.register(app)
    requests.register(app)
    request_types.register(app)
    metrics.register(app)
    metrics_define.register(app)
    digests.register(app)
    home.register(app)
