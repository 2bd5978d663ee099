"""Per-workspace settings (feedback emoji, …)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from storage.db import Database
from storage.models import WatchedChannel, Workspace


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


@dataclass(frozen=True)
class ReactionSettings:
    """The emoji that mean something in a workspace."""

    feedback_emoji: str = "bulb"
    request_emoji: str = "ticket"

    def acts_on(self, reaction: str) -> bool:
        """True when a reaction with this emoji can have an effect."""
        return normalise_emoji(reaction) in (self.feedback_emoji, self.request_emoji)


class SettingsCache:
    """Per-process cache of a workspace's reaction settings, so most reactions cost no query.

    A change made in another process is seen after at most `ttl` seconds (PRODOPS_SETTINGS_CACHE_SECONDS).
    """

    def __init__(self, db: Database, ttl: float) -> None:
        self.db = db
        self.ttl = ttl
        self._lock = threading.Lock()
        self._settings: dict[str, tuple[float, ReactionSettings]] = {}
        self._watched: dict[str, tuple[float, frozenset[str]]] = {}

    def reactions(self, team_id: str) -> ReactionSettings:
        """The workspace's reaction settings, from the cache while fresh."""
        now = time.monotonic()
        with self._lock:
            cached = self._settings.get(team_id)
        if cached is not None and now - cached[0] < self.ttl:
            return cached[1]
        with self.db.read() as s:
            workspace = s.get(Workspace, team_id)
            found = (
                ReactionSettings(workspace.feedback_emoji, workspace.request_emoji)
                if workspace
                else ReactionSettings()
            )
        with self._lock:
            self._settings[team_id] = (now, found)
        return found

    def watched_channels(self, team_id: str) -> frozenset[str]:
        """The workspace's watched channels, from the cache while fresh."""
        now = time.monotonic()
        with self._lock:
            cached = self._watched.get(team_id)
        if cached is not None and now - cached[0] < self.ttl:
            return cached[1]
        with self.db.read() as s:
            found = frozenset(
                s.scalars(select(WatchedChannel.channel_id).where(WatchedChannel.team_id == team_id))
            )
        with self._lock:
            self._watched[team_id] = (now, found)
        return found

    def feedback_emoji(self, team_id: str) -> str:
        """The workspace's feedback emoji."""
        return self.reactions(team_id).feedback_emoji

    def forget(self, team_id: str) -> None:
        """Drops a workspace's cached settings (after this process changed them)."""
        with self._lock:
            self._settings.pop(team_id, None)
            self._watched.pop(team_id, None)
