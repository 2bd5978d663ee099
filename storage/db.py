"""Engine and session factory. Callers open and commit sessions: `with db.session() as s: ...`."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

READ_ONLY = "prodops_read_only"
WRITER_WAIT_SECONDS = 30.0  # as PRAGMA busy_timeout
RETRY_SECONDS = 15.0  # fine-grained retries of BEGIN IMMEDIATE before SQLite's busy handler takes over
INBOX_SUFFIX = "-inbox"


def inbox_url(url: str) -> str | None:
    """Where the inbox lives when it is not in the main database: for a SQLite file, a file of its own
    beside it (`prodops.db` -> `prodops-inbox.db`). SQLite has one write lock per file: with the inbox in
    the main file, every ack waited behind the workers' transactions. None: the inbox is in the main
    database (Postgres locks rows, not the database; an in-memory SQLite database has no file)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database or ""
    if not database or database == ":memory:" or database.startswith("file:") or "mode=memory" in url:
        return None
    path = Path(database)
    return parsed.set(
        database=str(path.with_name(f"{path.stem}{INBOX_SUFFIX}{path.suffix}"))
    ).render_as_string(hide_password=False)


def make_engine(url: str, **kwargs: Any) -> Engine:
    """Create an engine tuned for the backend: SQLite in WAL with write-ahead locking, Postgres pooled."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, **kwargs)
        _tune_sqlite(engine)
        return engine
    connect_args = {"connect_timeout": 5}
    return create_engine(url, pool_pre_ping=True, connect_args=connect_args, **kwargs)


def _tune_sqlite(engine: Engine) -> None:
    """WAL for concurrent readers; BEGIN IMMEDIATE so two writers queue instead of failing with 'locked'.

    SQLite's own busy handler waits by sleeping (1, 2, 5 … 100 ms) and retrying, so writers contending for
    the one write lock slept while it was free (the worker spent a quarter of its time there): BEGIN
    IMMEDIATE is retried every 0.2–2 ms instead (`_begin_immediate`), between threads and processes alike.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={int(WRITER_WAIT_SECONDS * 1000)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Readers need no write lock (WAL gives them a snapshot); writers take it up front.
        if conn.get_execution_options().get(READ_ONLY):
            conn.exec_driver_sql("BEGIN")
            return
        _begin_immediate(conn)


def _begin_immediate(conn: Any) -> None:
    """BEGIN IMMEDIATE, retried every 0.2–2 ms while another connection (thread or process) holds the write lock.

    SQLite's busy handler sleeps 1, 2, 5 … 100 ms between tries; a writer of another process that commits
    often (a worker settling deliveries) then keeps a waiting ack asleep while the lock is free most of the
    time. Past RETRY_SECONDS the busy handler takes over again, so a stuck writer still ends in an error.
    """
    cursor = conn.connection.dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA busy_timeout=0")
        deadline, pause = time.monotonic() + RETRY_SECONDS, 0.0002
        while time.monotonic() < deadline:
            try:
                cursor.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
            time.sleep(pause)
            pause = min(pause * 1.5, 0.002)
    finally:
        cursor.execute(f"PRAGMA busy_timeout={int(WRITER_WAIT_SECONDS * 1000)}")
        cursor.close()
    conn.exec_driver_sql("BEGIN IMMEDIATE")  # waits the busy timeout, then raises SQLAlchemy's error


class Database:
    """One engine and its session factory."""

    def __init__(self, url: str, **engine_kwargs: Any) -> None:
        self.url = url
        self._engine_kwargs = engine_kwargs
        self.engine = make_engine(url, **engine_kwargs)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._read_engine = self.engine.execution_options(**{READ_ONLY: True})
        self._read_sessions = sessionmaker(self._read_engine, expire_on_commit=False)

    @property
    def backend(self) -> str:
        """'sqlite' or 'postgresql'."""
        return self.engine.dialect.name

    @cached_property
    def inbox(self) -> Database:
        """The database that holds the inbox (`inbox_events`): this one, or a SQLite file of its own
        (see `inbox_url`). Open inbox sessions on it: `with db.inbox.session() as s: ...`."""
        separate = inbox_url(self.url)
        return self if separate is None else Database(separate, **self._engine_kwargs)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session committed on success and rolled back on error."""
        with self._sessions() as s, s.begin():
            yield s

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A session for reads only: on SQLite it takes no write lock (do not write through it)."""
        with self._read_sessions() as s, s.begin():
            yield s

    def ping(self) -> None:
        """One round-trip to the database; raises when it is unreachable."""
        with self._read_engine.connect() as conn:
            conn.execute(text("SELECT 1")).scalar_one()

    def dispose(self) -> None:
        """Close pooled connections (after fork, at shutdown)."""
        self.engine.dispose()
        inbox = self.__dict__.get("inbox")
        if inbox is not None and inbox is not self:
            inbox.dispose()
