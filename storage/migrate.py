"""Alembic, driven from code: `prodops migrate`, and `serve`/`demo` on start."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

import migrations
from storage.db import inbox_url

SCRIPT_LOCATION = str(Path(migrations.__file__).parent)


def alembic_config(url: str) -> Config:
    """An Alembic config pointing at our migrations and the given database."""
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    # ConfigParser treats % specially; URLs may carry percent-encoded passwords.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the database schema up to `revision` (head by default).

    A SQLite file's inbox lives in a file of its own (`storage.db.inbox_url`), with the same schema (one set
    of migrations for both; only `inbox_events` is used there). Deliveries recorded in the main file by an
    older version are moved over once both are at head.
    """
    command.upgrade(alembic_config(url), revision)
    separate = inbox_url(url)
    if separate is None:
        return
    command.upgrade(alembic_config(separate), revision)
    if revision == "head":
        move_inbox_rows(url, separate)


def move_inbox_rows(url: str, inbox: str) -> int:
    """Moves every `inbox_events` row of the main SQLite file into the inbox file; returns how many moved.

    Copy (skipping deliveries already there), commit, then delete what the inbox file has: a crash in
    between leaves copies that the next run skips, never a lost delivery.
    """
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from storage.models import InboxEvent

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            found = conn.exec_driver_sql("SELECT 1 FROM inbox_events LIMIT 1").first()
            conn.rollback()
            if not found:
                return 0
            # Ids are the inbox file's own; a delivery is the same one by (team_id, delivery_id).
            columns = ", ".join(c.name for c in InboxEvent.__table__.columns if c.name != "id")
            conn.exec_driver_sql("ATTACH DATABASE ? AS inbox_file", (make_url(inbox).database,))
            conn.commit()
            try:
                with conn.begin():
                    conn.execute(text(f"INSERT OR IGNORE INTO inbox_file.inbox_events ({columns}) "
                                      f"SELECT {columns} FROM main.inbox_events ORDER BY id"))  # fmt: skip
                with conn.begin():
                    moved = conn.execute(text(
                        "DELETE FROM main.inbox_events WHERE EXISTS (SELECT 1 FROM inbox_file.inbox_events f "
                        "WHERE f.team_id = main.inbox_events.team_id "
                        "AND f.delivery_id = main.inbox_events.delivery_id)"
                    )).rowcount  # fmt: skip
            finally:
                conn.exec_driver_sql("DETACH DATABASE inbox_file")
            return int(moved or 0)
    finally:
        engine.dispose()


def current_revision(url: str) -> str | None:
    """The revision the database is at, or None when it was never migrated."""
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import create_engine

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()
