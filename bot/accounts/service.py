"""Accounts service: look-ups and creation, always within one workspace."""

from __future__ import annotations

import re

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from storage.models import Account

_SPACES = re.compile(r"\s+")


def name_key(name: str) -> str:
    """The comparable form of an account name: trimmed, spaces collapsed, case-folded."""
    return _SPACES.sub(" ", name).strip().casefold()


def normalise_domain(domain: str | None) -> str | None:
    """`https://www.Acme.com/` → `acme.com`; empty → None."""
    if not domain or not domain.strip():
        return None
    value = domain.strip().lower()
    value = re.sub(r"^[a-z]+://", "", value).split("/", 1)[0]
    return value.removeprefix("www.") or None


def get(*, db_session: Session, team_id: str, account_id: int) -> Account | None:
    """Gets an account by id."""
    return db_session.scalar(select(Account).where(Account.team_id == team_id, Account.id == account_id))


def get_by_name(*, db_session: Session, team_id: str, name: str) -> Account | None:
    """Gets the account with this name (any case and spacing)."""
    return db_session.scalar(
        select(Account).where(Account.team_id == team_id, Account.name_key == name_key(name))
    )


def search(*, db_session: Session, team_id: str, query: str, limit: int = 20) -> list[Account]:
    """Accounts whose name or domain contains `query`, names starting with it first, biggest ARR next."""
    needle = name_key(query)
    if not needle:
        return list(
            db_session.scalars(
                select(Account)
                .where(Account.team_id == team_id)
                .order_by(Account.arr.desc().nulls_last(), Account.name_key)
                .limit(limit)
            )
        )
    like = f"%{needle.replace('%', '').replace('_', '')}%"
    rows = db_session.scalars(
        select(Account)
        .where(Account.team_id == team_id, or_(Account.name_key.like(like), Account.domain.like(like)))
        .order_by(Account.arr.desc().nulls_last(), Account.name_key)
        .limit(limit * 3)
    ).all()
    ranked = sorted(rows, key=lambda a: (not a.name_key.startswith(needle), a.name_key != needle))
    return ranked[:limit]


def get_or_create(*, db_session: Session, team_id: str, name: str) -> tuple[Account, bool]:
    """Gets the account with this name, or creates a bare one (the modal's "new account")."""
    clean = _SPACES.sub(" ", name).strip()
    if not clean:
        raise ValueError("an account needs a name")
    existing = get_by_name(db_session=db_session, team_id=team_id, name=clean)
    if existing is not None:
        return existing, False
    account = Account(team_id=team_id, name=clean[:255], name_key=name_key(clean)[:255])
    try:
        with db_session.begin_nested():
            db_session.add(account)
    except IntegrityError:
        found = get_by_name(db_session=db_session, team_id=team_id, name=clean)
        if found is None:
            raise
        return found, False
    return account, True
