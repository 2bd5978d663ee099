"""What the data-rights tools share: hashed subjects, the record of what was done, the workspace's tables."""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterator
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, func, select
from sqlalchemy.orm import Session

from bot.settings import ConfigError, load_settings
from storage.db import Database
from storage.models import Base, DataRightsRecord, InboxEvent, Workspace

REMOVED_TEXT = "[removed at the person's request]"
USER_ID = re.compile(r"^[UW][A-Z0-9]{2,31}$")
# Batches small enough that one transaction never holds the write lock for long.
BATCH = 500


def pseudonym_key() -> bytes:
    """The secret that keys subject hashes and pseudonyms; it lives in the configuration, never in the database.

    The newest key of PRODOPS_ENCRYPTION_KEY, else SLACK_SIGNING_SECRET. Without a key anyone holding the
    workspace's member list (or a database dump) could hash every id and re-identify a forgotten person."""
    settings = load_settings()
    if settings.encryption_key and settings.encryption_key.get_secret_value().strip():
        return settings.encryption_key.get_secret_value().split(",")[0].strip().encode()
    if settings.slack_signing_secret:
        return settings.slack_signing_secret.encode()
    raise ConfigError(
        "Forgetting a person needs a secret to key their pseudonym: set PRODOPS_ENCRYPTION_KEY "
        "(`prodops keys generate`) or SLACK_SIGNING_SECRET, then run the command again. Nothing was changed."
    )


def subject_hash(team_id: str, user_id: str, key: bytes | None = None) -> str:
    """HMAC-SHA256 of `team:user` under `pseudonym_key()`: how a record names a person without naming them."""
    secret = key if key is not None else pseudonym_key()
    return hmac.new(secret, f"{team_id}:{user_id}".encode(), hashlib.sha256).hexdigest()


def pseudonym(team_id: str, user_id: str, key: bytes | None = None) -> str:
    """The stable stand-in for a forgotten person's id in this workspace, e.g. `U-3f2a9c81d0`."""
    return "U-" + subject_hash(team_id, user_id, key)[:10]


def record(
    *,
    db_session: Session,
    team_id: str,
    action: str,
    counts: dict[str, Any],
    requested_by: str | None,
    subject: str | None = None,
) -> DataRightsRecord:
    """Writes the record that `action` was done (never with raw content or the subject's id)."""
    row = DataRightsRecord(
        team_id=team_id, action=action, subject_hash=subject, requested_by=requested_by, counts=counts
    )
    db_session.add(row)
    db_session.flush()
    return row


def last_record(
    *, db_session: Session, team_id: str, action: str, subject: str | None = None
) -> DataRightsRecord | None:
    """The latest record of `action` in a workspace (for one subject when given)."""
    query = select(DataRightsRecord).where(
        DataRightsRecord.team_id == team_id, DataRightsRecord.action == action
    )
    if subject is not None:
        query = query.where(DataRightsRecord.subject_hash == subject)
    return db_session.scalars(query.order_by(DataRightsRecord.done_at.desc()).limit(1)).first()


def team_tables() -> list[Table]:
    """Every table with a `team_id`, dependents before what they depend on, `workspaces` last.

    `data_rights_records` is left out: it holds no content and no raw ids, and it is the proof of what
    was deleted.
    """
    ordered = [
        table
        for table in reversed(Base.metadata.sorted_tables)
        if "team_id" in table.c and table.name not in ("data_rights_records", "workspaces")
    ]
    return [*ordered, cast(Table, Workspace.__table__)]


def team_row_counts(db: Database, team_id: str) -> dict[str, int]:
    """How many rows each table holds for the workspace (tables with none are left out)."""
    counts: dict[str, int] = {}
    with db.read() as s:
        for table in team_tables():
            if table.name == InboxEvent.__tablename__ and db.inbox is not db:
                continue  # counted below, in the inbox's own database
            n = s.scalar(select(func.count()).select_from(table).where(table.c.team_id == team_id)) or 0
            if n:
                counts[table.name] = n
    if db.inbox is not db:
        with db.inbox.read() as s:
            n = (
                s.scalar(select(func.count()).select_from(InboxEvent).where(InboxEvent.team_id == team_id))
                or 0
            )
            if n:
                counts[InboxEvent.__tablename__] = n
    return counts


def known_teams(db: Database, limit: int = 10) -> list[str]:
    """Some workspaces in the database, for error messages that say what exists."""
    with db.read() as s:
        return list(s.scalars(select(Workspace.team_id).order_by(Workspace.team_id).limit(limit)))


def chunks(values: list[Any], size: int = BATCH) -> Iterator[list[Any]]:
    """`values` in lists of at most `size`."""
    for start in range(0, len(values), size):
        yield values[start : start + size]


def when(moment: datetime) -> str:
    """A record's time for people: 2026-11-23 14:05 UTC."""
    return moment.strftime("%Y-%m-%d %H:%M UTC")
