"""Push-API tokens: made per workspace, shown once, stored only as a sha256 hash, revocable."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.models import ApiToken
from storage.types import utcnow

TOKEN_PREFIX = "prodops_"
RANDOM_CHARS = 32  # secrets.token_urlsafe(24) is 32 characters: 192 bits
SHOWN_PREFIX_CHARS = 12  # "prodops_" and four random characters, to recognise a token in lists
MAX_TOKEN_CHARS = 200
TOUCH_EVERY = timedelta(minutes=1)


def hash_token(plaintext: str) -> str:
    """The stored form of a token: sha256, hex."""
    return hashlib.sha256(plaintext.encode("utf-8")).hexdigest()


def looks_like_token(plaintext: str) -> bool:
    """Cheap shape check before any database work."""
    return plaintext.startswith(TOKEN_PREFIX) and len(plaintext) <= MAX_TOKEN_CHARS


def create_token(*, db_session: Session, team_id: str, name: str) -> tuple[ApiToken, str]:
    """A new token for the workspace: the row, and the plaintext (shown once, never stored)."""
    name = name.strip()
    if not name or len(name) > 100:
        raise ValueError("a token needs a name of 1-100 characters (what uses it, e.g. 'warehouse export')")
    plaintext = TOKEN_PREFIX + secrets.token_urlsafe(24)
    row = ApiToken(
        team_id=team_id, name=name, token_hash=hash_token(plaintext), prefix=plaintext[:SHOWN_PREFIX_CHARS]
    )
    db_session.add(row)
    db_session.flush()
    return row, plaintext


def find_token(*, db_session: Session, plaintext: str) -> ApiToken | None:
    """The token row for a plaintext (revoked ones included), or None."""
    if not looks_like_token(plaintext):
        return None
    return db_session.scalars(select(ApiToken).where(ApiToken.token_hash == hash_token(plaintext))).first()


def authenticate(*, db_session: Session, plaintext: str, now: datetime | None = None) -> ApiToken | None:
    """The live token for a plaintext, or None (unknown or revoked); notes its use at most once a minute."""
    row = find_token(db_session=db_session, plaintext=plaintext)
    if row is None or row.revoked_at is not None:
        return None
    now = now or utcnow()
    if row.last_used_at is None or now - row.last_used_at >= TOUCH_EVERY:
        row.last_used_at = now
    return row


def revoke_token(*, db_session: Session, team_id: str, token_id: int) -> bool:
    """Revokes a token of this workspace; False when there is none or it was already revoked."""
    row = db_session.get(ApiToken, token_id)
    if row is None or row.team_id != team_id or row.revoked_at is not None:
        return False
    row.revoked_at = utcnow()
    return True


def list_tokens(*, db_session: Session, team_id: str, include_revoked: bool = True) -> list[ApiToken]:
    """The workspace's tokens, oldest first."""
    query = select(ApiToken).where(ApiToken.team_id == team_id)
    if not include_revoked:
        query = query.where(ApiToken.revoked_at.is_(None))
    return list(db_session.scalars(query.order_by(ApiToken.id)))
