"""Shared fixtures: both databases (SQLite and Postgres), the Slack emulator, and the real server."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from bot.devkit.driver import SlackDriver
from bot.devkit.emulator import SlackEmulator
from bot.devkit.server_process import ServerProcess
from storage.db import Database
from storage.migrate import upgrade

POSTGRES_ADMIN_URL = os.environ.get(
    "PRODOPS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
SIGNING_SECRET = "test-signing-secret-0123456789abcdef"
BACKENDS = ["sqlite", "postgres"]

_postgres_problem: str | None = None

# Production workers yield the CPU to acks (PRODOPS_WORKER_NICE, default 10). In the suite the test process
# and the emulator are what they would yield to, so every server and worker the tests start (the demo's
# too) runs at normal priority; their timeouts assume it. tests/test_worker_priority.py checks the default.
os.environ.setdefault("PRODOPS_WORKER_NICE", "0")


def _postgres_unreachable() -> str | None:
    """Why Postgres cannot be used for tests, or None when it can."""
    global _postgres_problem
    if _postgres_problem is None:
        engine = create_engine(POSTGRES_ADMIN_URL, connect_args={"connect_timeout": 3})
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            _postgres_problem = ""
        except Exception as exc:  # any failure means: skip the Postgres half, loudly
            _postgres_problem = f"{exc.__class__.__name__}: {str(exc).splitlines()[0]}"
        finally:
            engine.dispose()
    return _postgres_problem or None


def pytest_report_header(config: pytest.Config) -> str:
    problem = _postgres_unreachable()
    safe = make_url(POSTGRES_ADMIN_URL).render_as_string(hide_password=True)
    if problem:
        return f"postgres: NOT REACHABLE at {safe} ({problem}) - the Postgres half of the suite is SKIPPED"
    return f"postgres: {safe} (tests run on SQLite and on Postgres)"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    problem = _postgres_unreachable()
    if problem:
        terminalreporter.write_line(
            f"WARNING: Postgres was not reachable ({problem}); every Postgres test was skipped. "
            "Set PRODOPS_TEST_POSTGRES_URL or start Postgres to run them.",
            yellow=True,
        )


@dataclass
class DatabaseTarget:
    """An empty database made for this test session."""

    backend: str
    url: str


def _create_database(backend: str, tmp_dir: Path) -> Iterator[DatabaseTarget]:
    if backend == "sqlite":
        yield DatabaseTarget("sqlite", f"sqlite:///{tmp_dir / f'prodops-{uuid.uuid4().hex[:8]}.db'}")
        return
    problem = _postgres_unreachable()
    if problem:
        pytest.skip(f"Postgres not reachable at {POSTGRES_ADMIN_URL}: {problem}")
    name = f"prodops_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    try:
        yield DatabaseTarget("postgres", url)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _migrated_database(backend: str, folder: Path) -> Iterator[str]:
    """A new database migrated to head; dropped when the generator closes."""
    gen = _create_database(backend, folder)
    target = next(gen)
    upgrade(target.url)
    yield target.url
    gen.close()


@pytest.fixture(params=BACKENDS, scope="session")
def backend(request: pytest.FixtureRequest) -> str:
    """Each test that uses a database runs once on SQLite and once on Postgres."""
    return str(request.param)


@pytest.fixture(scope="session")
def shared_db_url(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The session database, migrated to head, which the shared server (`stack`) also uses."""
    yield from _migrated_database(backend, tmp_path_factory.mktemp("db"))


@pytest.fixture(scope="session")
def shared_db(shared_db_url: str) -> Iterator[Database]:
    database = Database(shared_db_url)
    yield database
    database.dispose()


@pytest.fixture(scope="module")
def own_db_url(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A migrated database of the module's own, which no running server or scheduled tick touches."""
    yield from _migrated_database(backend, tmp_path_factory.mktemp("own-db"))


@pytest.fixture
def empty_db_url(backend: str, tmp_path: Path) -> Iterator[str]:
    """A brand-new, never-migrated database for this test."""
    gen = _create_database(backend, tmp_path)
    yield next(gen).url
    gen.close()


def _wants_own_database(request: pytest.FixtureRequest) -> bool:
    """Modules that set `OWN_DATABASE = True`: their ticks scan every workspace, or they compare whole tables
    before and after, so the shared server's sweepers and ticks must not work on the same rows meanwhile."""
    return bool(getattr(request.module, "OWN_DATABASE", False))


@pytest.fixture(scope="module")
def migrated_db_url(request: pytest.FixtureRequest, backend: str) -> str:
    """The database URL a test works on: the session's, or the module's own (see `_wants_own_database`).
    Naming `backend` makes every test that uses it run on both databases."""
    name = "own_db_url" if _wants_own_database(request) else "shared_db_url"
    return str(request.getfixturevalue(name))


@pytest.fixture(scope="module")
def db(request: pytest.FixtureRequest, backend: str) -> Iterator[Database]:
    """The database a test works on (tests isolate themselves by team, channel or message)."""
    if not _wants_own_database(request):
        yield request.getfixturevalue("shared_db")
        return
    database = Database(request.getfixturevalue("own_db_url"))
    yield database
    database.dispose()


@dataclass
class Stack:
    """The emulator, the real server talking to it, and a driver signing requests to the server."""

    emulator: SlackEmulator
    server: ServerProcess
    driver: SlackDriver
    db: Database
    db_url: str

    @property
    def team_id(self) -> str:
        return self.emulator.team_id


def server_env(emulator: SlackEmulator, db_url: str, **extra: str) -> dict[str, str]:
    """The contract's variables pointing at an emulator, plus test tuning."""
    return {
        "SLACK_BOT_TOKEN": emulator.bot_token,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_API_URL": emulator.url,
        "SLACK_APP_TOKEN": "",
        "DATABASE_URL": db_url,
        "WEB_CONCURRENCY": "2",
        "PRODOPS_INBOX_LEASE_SECONDS": "3",
        "PRODOPS_SETTINGS_CACHE_SECONDS": "0",  # tests change settings under the running server
        "PRODOPS_LOG_LEVEL": "INFO",
        # Every capture runs the similarity hook; loading the embeddings model in each worker takes longer
        # than the 3 s inbox lease above, so scenario tests use the light default backend.
        "PRODOPS_SIMILARITY_BACKEND": "tfidf",
        **extra,
    }


@pytest.fixture(scope="session")
def stack(
    shared_db_url: str, shared_db: Database, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """One emulator and one real gunicorn server per backend, shared by the scenario tests."""
    yield from run_stack(shared_db_url, shared_db, tmp_path_factory)


def run_stack(
    db_url: str, db: Database, tmp_path_factory: pytest.TempPathFactory, **extra: str
) -> Iterator[Stack]:
    """An emulator and the real server on `db_url` (with `extra` settings), stopped when the generator closes."""
    emulator = SlackEmulator().start()
    log = tmp_path_factory.mktemp("server") / "server.log"
    server = ServerProcess(server_env(emulator, db_url, **extra), log_path=log)
    try:
        server.start()
    except RuntimeError:
        emulator.stop()
        raise
    driver = SlackDriver(events_url=server.events_url, signing_secret=SIGNING_SECRET, emulator=emulator)
    yield Stack(emulator=emulator, server=server, driver=driver, db=db, db_url=db_url)
    server.stop()
    emulator.stop()


@pytest.fixture
def postgres_empty_url(tmp_path: Path) -> Iterator[str]:
    """A new Postgres database for tests that are about Postgres itself (skipped, loudly, without one)."""
    gen = _create_database("postgres", tmp_path)
    yield next(gen).url
    gen.close()
