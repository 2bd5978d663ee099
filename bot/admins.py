"""Who may run admin-only commands: Slack workspace owners and admins, plus users added by hand."""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from storage.models import WorkspaceAdmin


def is_admin(*, db_session: Session, team_id: str, user_id: str, slack_owner_or_admin: bool) -> bool:
    """The one admin rule: a Slack owner/admin (from `users.info`), or on the workspace's ProdOps admin list."""
    if slack_owner_or_admin:
        return True
    return db_session.get(WorkspaceAdmin, (team_id, user_id)) is not None


def add(*, db_session: Session, team_id: str, user_id: str, added_by_user_id: str | None) -> bool:
    """Adds a ProdOps admin; False when they already were one."""
    if db_session.get(WorkspaceAdmin, (team_id, user_id)) is not None:
        return False
    try:
        with db_session.begin_nested():
            db_session.add(
                WorkspaceAdmin(team_id=team_id, user_id=user_id, added_by_user_id=added_by_user_id)
            )
    except IntegrityError:
        return False
    return True


def remove(*, db_session: Session, team_id: str, user_id: str) -> bool:
    """Removes a ProdOps admin; False when they were not on the list."""
    result = db_session.execute(
        delete(WorkspaceAdmin).where(WorkspaceAdmin.team_id == team_id, WorkspaceAdmin.user_id == user_id)
    )
    return bool(getattr(result, "rowcount", 0))


def list_admins(*, db_session: Session, team_id: str) -> list[str]:
    """User ids on the workspace's ProdOps admin list (Slack owners and admins are not listed)."""
    return list(
        db_session.scalars(
            select(WorkspaceAdmin.user_id)
            .where(WorkspaceAdmin.team_id == team_id)
            .order_by(WorkspaceAdmin.created_at)
        )
    )
