"""Per-workspace settings (feedback emoji, …)."""

from __future__ import annotations

import threading
import time

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from storage.db import Database
from storage.models import Workspace


def get_or_create(*, db_session: Session, team_id: str) -> Workspace:
    """Gets a workspace's settings row, creating it with defaults on first sight."""
    workspace = db_session.get(Workspace, team_id)
    if workspace is not None:
        return workspace
    try:
        with db_session.begin_nested():
            workspace = Workspace(team_id=team_id, feedback_emoji="bulb", request_emoji="ticket")
            db_session.add(workspace)
    except IntegrityError:
        workspace = db_session.get(Workspace, team_id)
        assert workspace is not None
    return workspace


def normalise_emoji(name: str) -> str:
    """`:bulb::skin-tone-2:` or `bulb::skin-tone-2` → `bulb`: a reaction counts whatever the skin tone."""
    return name.strip(":").split("::", 1)[0].lower()


class SettingsCache:
    """Per-process cache of a workspace's feedback emoji: a reaction that is not it costs no query.

    A change made in another process is seen after at most `ttl` seconds (PRODOPS_SETTINGS_CACHE_SECONDS).
    """

    def __init__(self, db: Database, ttl: float) -> None:
        self.db = db
        self.ttl = ttl
        self._lock = threading.Lock()
        self._emoji: dict[str, tuple[float, str]] = {}

    def feedback_emoji(self, team_id: str) -> str:
        """The workspace's feedback emoji, from the cache while it is fresh."""
        now = time.monotonic()
        with self._lock:
            cached = self._emoji.get(team_id)
        if cached is not None and now - cached[0] < self.ttl:
            return cached[1]
        with self.db.read() as s:
            workspace = s.get(Workspace, team_id)
            emoji = workspace.feedback_emoji if workspace else "bulb"
        with self._lock:
            self._emoji[team_id] = (now, emoji)
        return emoji

    def forget(self, team_id: str) -> None:
        """Drops a workspace's cached settings (after this process changed them)."""
        with self._lock:
            self._emoji.pop(team_id, None)
