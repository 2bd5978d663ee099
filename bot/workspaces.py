"""Per-workspace settings (feedback emoji, …)."""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

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
