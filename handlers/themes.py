"""Placeholder: filled in by the module's owner this session."""

from __future__ import annotations

from slack_bolt import App


def register(app: App) -> None:
    """Binds this module's listeners."""
