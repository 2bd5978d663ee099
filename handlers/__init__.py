"""Slack listeners, one module per capability; `register(app)` binds them all."""

from __future__ import annotations

from slack_bolt import App

from handlers import (
    accounts,
    admin,
    digests,
    duplicates,
    feedback,
    home,
    insights,
    metrics,
    metrics_define,
    monitoring,
    request_types,
    requests,
    themes,
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
    themes.register(app)
    duplicates.register(app)
    insights.register(app)
    accounts.register(app)
