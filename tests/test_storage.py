"""Storage: migrations agree with the models, claims happen once, health reflects the database."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from wsgiref.util import setup_testing_defaults

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, select, text
from sqlalchemy.engine import make_url

from bot import inbox
from bot.web import ProdOpsWSGI
from storage.db import Database, inbox_url, make_engine
from storage.migrate import alembic_config, current_revision, move_inbox_rows, upgrade
from storage.models import Base, InboxEvent, InboxStatus, Workspace
from storage.types import utcnow
from tests.helpers import unique


def test_migrations_match_models(empty_db_url: str) -> None:
    upgrade(empty_db_url)
    engine = make_engine(empty_db_url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()
    assert diff == [], f"models and migrations disagree; run alembic revision --autogenerate: {diff}"


def test_every_table_has_team_id(empty_db_url: str) -> None:
    upgrade(empty_db_url)
    engine = make_engine(empty_db_url)
    try:
        inspector = inspect(engine)
        # An OAuth state is issued before anyone has picked a workspace, so it cannot carry one.
        tables = [
            t for t in inspector.get_table_names() if t not in {"alembic_version", "slack_oauth_states"}
        ]
        assert tables, "no tables were created"
        for table in tables:
            assert "team_id" in {c["name"] for c in inspector.get_columns(table)}, table
    finally:
        engine.dispose()


def test_downgrade_to_base_and_back(empty_db_url: str) -> None:
    upgrade(empty_db_url)
    command.downgrade(alembic_config(empty_db_url), "base")
    assert current_revision(empty_db_url) is None
    upgrade(empty_db_url)
    assert (
        current_revision(empty_db_url)
        == ScriptDirectory.from_config(alembic_config(empty_db_url)).get_current_head()
    )


def test_0002_keeps_privacy_of_existing_items(empty_db_url: str) -> None:
    upgrade(empty_db_url, "0001")
    engine = make_engine(empty_db_url)
    insert = text(
        "INSERT INTO feedback_items (team_id, channel_id, message_ts, text, captured_by_user_id, source, tags,"
        " is_private, created_at, updated_at) VALUES ('T1', :channel, :ts, 'x', 'U1', 'reaction', '[]',"
        " :private, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
    )
    with engine.begin() as conn:
        conn.execute(insert, {"channel": "C1", "ts": "1.1", "private": False})
        conn.execute(insert, {"channel": "C2", "ts": "1.2", "private": True})
        conn.execute(insert, {"channel": "D3", "ts": "1.3", "private": True})
    upgrade(empty_db_url, "0002")
    with engine.connect() as conn:
        rows = dict(conn.execute(text("SELECT channel_id, visibility FROM feedback_items")).all())
    assert rows == {"C1": "public", "C2": "private", "D3": "dm"}
    command.downgrade(alembic_config(empty_db_url), "0001")
    with engine.connect() as conn:
        back = dict(conn.execute(text("SELECT channel_id, is_private FROM feedback_items")).all())
    engine.dispose()
    assert {k: bool(v) for k, v in back.items()} == {"C1": False, "C2": True, "D3": True}


@pytest.fixture
def private_db(empty_db_url: str) -> Iterator[Database]:
    """A migrated database no server is sweeping (the shared one has a live server claiming stale rows)."""
    upgrade(empty_db_url)
    database = Database(empty_db_url)
    yield database
    database.dispose()


def test_stale_deliveries_are_claimed_exactly_once(private_db: Database) -> None:
    db = private_db
    team = unique("T")
    with db.session() as s:
        for i in range(40):
            s.add(
                InboxEvent(
                    team_id=team,
                    delivery_id=f"Ev{i}",
                    kind="event:reaction_added",
                    body={"i": i},
                    lease_until=utcnow() - timedelta(seconds=5),
                )
            )
    claims: dict[str, list[int]] = {"a": [], "b": []}
    barrier = threading.Barrier(2)

    def claim(name: str) -> None:
        barrier.wait()
        for _ in range(10):
            with db.session() as s:
                rows = inbox.claim_stale_deliveries(db_session=s, lease_seconds=60, max_attempts=5, limit=7)
                claims[name] += [r.id for r in rows if r.team_id == team]

    threads = [threading.Thread(target=claim, args=(n,)) for n in claims]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(claims["a"]).isdisjoint(claims["b"])
    assert len(claims["a"]) + len(claims["b"]) == 40
    with db.session() as s:
        attempts = set(s.scalars(select(InboxEvent.attempts).where(InboxEvent.team_id == team)))
    assert attempts == {2}


def test_delivery_past_max_attempts_is_marked_dead(private_db: Database) -> None:
    db = private_db
    team = unique("T")
    with db.session() as s:
        s.add(
            InboxEvent(
                team_id=team,
                delivery_id="EvDead",
                kind="event:x",
                body={},
                attempts=3,
                status=InboxStatus.failed.value,
                lease_until=utcnow() - timedelta(seconds=1),
            )
        )
    with db.session() as s:
        claimed = inbox.claim_stale_deliveries(db_session=s, lease_seconds=60, max_attempts=3)
        assert all(r.team_id != team for r in claimed)
    with db.session() as s:
        status = s.scalar(select(InboxEvent.status).where(InboxEvent.team_id == team))
    assert status == InboxStatus.dead.value


def test_a_recorded_delivery_cannot_be_recorded_twice(db: Database) -> None:
    delivery = inbox.Delivery(unique("T"), "EvSame", "event:reaction_added")
    with db.session() as s:
        first = inbox.record_delivery(db_session=s, delivery=delivery, body={}, lease_seconds=10)
    with db.session() as s:
        second = inbox.record_delivery(db_session=s, delivery=delivery, body={}, lease_seconds=10)
    assert first is not None and second is None


def _health(wsgi: ProdOpsWSGI) -> tuple[str, bytes]:
    environ: dict = {"PATH_INFO": "/healthz", "REQUEST_METHOD": "GET"}
    setup_testing_defaults(environ)
    seen: list[str] = []
    body = b"".join(wsgi(environ, lambda status, headers: seen.append(status)))
    return seen[0], body


def test_health_is_503_when_sqlite_file_cannot_be_opened(tmp_path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'no-such-dir' / 'prodops.db'}")
    status, body = _health(ProdOpsWSGI(None, db))
    assert status.startswith("503")
    assert b"unreachable" in body


def test_health_follows_postgres_going_away_and_back(postgres_empty_url: str) -> None:
    empty_db_url = postgres_empty_url
    name = make_url(empty_db_url).database
    admin = create_engine(make_url(empty_db_url).set(database="postgres"), isolation_level="AUTOCOMMIT")
    db = Database(empty_db_url)
    wsgi = ProdOpsWSGI(None, db)
    try:
        assert _health(wsgi)[0].startswith("200")
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
            conn.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"), {"n": name}
            )
        assert _health(wsgi)[0].startswith("503")
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
        assert _health(wsgi)[0].startswith("200")
    finally:
        db.dispose()
        admin.dispose()


# ---- the inbox's own database -------------------------------------------------------------------------------


def test_the_inbox_lives_in_a_file_of_its_own_only_for_a_sqlite_file(tmp_path) -> None:
    assert inbox_url(f"sqlite:///{tmp_path}/prodops.db") == f"sqlite:///{tmp_path}/prodops-inbox.db"
    assert inbox_url("sqlite:///relative/prodops.db") == "sqlite:///relative/prodops-inbox.db"
    for shared in (
        "sqlite://",
        "sqlite:///:memory:",
        "postgresql+psycopg://postgres:pw@127.0.0.1:5432/prodops",
    ):
        assert inbox_url(shared) is None
        db = Database(shared)
        try:
            assert db.inbox is db  # Postgres locks rows, not the database: one database for everything
        finally:
            db.dispose()


def test_deliveries_an_older_version_recorded_are_moved_to_the_inbox_file_once(tmp_path) -> None:
    url = f"sqlite:///{tmp_path}/prodops.db"
    command.upgrade(alembic_config(url), "head")  # an older version: the inbox in the main file
    old = create_engine(url)
    row = (
        "INSERT INTO inbox_events (team_id, delivery_id, kind, body, status, attempts, lease_until, "
        "received_at) VALUES (:team, :delivery, 'event:message', :body, :status, 0, :now, :now)"
    )
    with old.begin() as conn:
        for n, status in enumerate(["queued", "failed", "dead", "done"]):
            conn.execute(
                text(row),
                {
                    "team": "T1",
                    "delivery": f"Ev{n}",
                    "body": f'{{"n": {n}}}',
                    "status": status,
                    "now": utcnow(),
                },
            )
    old.dispose()
    db = Database(url)
    try:
        upgrade(url)
        with db.inbox.read() as s:
            moved = {r.delivery_id: (r.status, r.body) for r in s.scalars(select(InboxEvent))}
        assert moved == {
            "Ev0": ("queued", {"n": 0}),
            "Ev1": ("failed", {"n": 1}),
            "Ev2": ("dead", {"n": 2}),
            "Ev3": ("done", {"n": 3}),
        }
        with db.read() as s:
            assert s.scalar(text("SELECT count(*) FROM inbox_events")) == 0
        # A delivery recorded in both (a crash between copy and delete): kept once, nothing else touched.
        with db.engine.begin() as conn:
            conn.execute(
                text(row),
                {"team": "T1", "delivery": "Ev0", "body": "{}", "status": "queued", "now": utcnow()},
            )
        assert move_inbox_rows(url, db.inbox.url) == 1
        assert move_inbox_rows(url, db.inbox.url) == 0
        with db.inbox.read() as s:
            assert s.scalar(text("SELECT count(*) FROM inbox_events WHERE delivery_id = 'Ev0'")) == 1
            assert s.scalar(select(InboxEvent.body).where(InboxEvent.delivery_id == "Ev0")) == {"n": 0}
    finally:
        db.dispose()


def test_recording_a_delivery_does_not_wait_for_the_main_files_write_lock(tmp_path) -> None:
    """The point of the inbox file: an ack never queues behind a worker's transaction in the main file."""
    from bot.inbox_writer import InboxWriter

    url = f"sqlite:///{tmp_path}/prodops.db"
    upgrade(url)
    db = Database(url)
    writer = InboxWriter(db.inbox, lease_seconds=60)
    held, release = threading.Event(), threading.Event()

    def hold_main_write_lock() -> None:
        with db.session() as s:  # BEGIN IMMEDIATE on the main file
            s.execute(text("UPDATE workspaces SET team_id = team_id"))
            held.set()
            release.wait(30)

    holder = threading.Thread(target=hold_main_write_lock)
    holder.start()
    try:
        assert held.wait(10)
        delivery = inbox.Delivery("T1", "EvWhileLocked", "event:message", queued=True)
        assert isinstance(writer.record(delivery, {"n": 1}, timeout=10), int)  # would wait 30 s in one file
        assert not release.is_set() and holder.is_alive()  # the main file was locked all along
    finally:
        release.set()
        holder.join()
        writer.close()
        db.dispose()
    with db.inbox.read() as s:
        assert (
            s.scalar(select(InboxEvent.status).where(InboxEvent.delivery_id == "EvWhileLocked")) == "queued"
        )


def test_writers_of_one_process_take_turns_and_a_failed_one_lets_the_next_in(tmp_path) -> None:
    url = f"sqlite:///{tmp_path}/prodops.db"
    upgrade(url)
    db = Database(url)
    errors: list[BaseException] = []

    def write(n: int) -> None:
        try:
            for i in range(25):
                with db.session() as s:
                    s.add(Workspace(team_id=f"T{n}-{i}"))
        except BaseException as exc:  # pragma: no cover - the assertion below shows it
            errors.append(exc)

    try:
        # One fails inside its write transaction: the lock must be given back.
        with pytest.raises(Exception, match="nosuchtable"), db.session() as s:
            s.execute(text("INSERT INTO nosuchtable VALUES (1)"))
        threads = [threading.Thread(target=write, args=(n,)) for n in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert errors == [] and not any(t.is_alive() for t in threads)
        with db.read() as s:
            assert s.scalar(text("SELECT count(*) FROM workspaces WHERE team_id LIKE 'T%-%'")) == 150
    finally:
        db.dispose()


def test_a_writer_waits_for_another_process_and_then_writes(tmp_path) -> None:
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path}/prodops.db"
    upgrade(url)
    db = Database(url)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sqlite3, sys, time; c = sqlite3.connect(sys.argv[1], isolation_level=None); "
            "c.execute('BEGIN IMMEDIATE'); print('held', flush=True); time.sleep(0.5); c.execute('COMMIT')",
            str(tmp_path / "prodops.db"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with db.session() as s:  # retried until the other process commits, then written
            s.add(Workspace(team_id="TAFTER"))
        assert holder.wait(10) == 0
        with db.read() as s:
            assert s.scalar(text("SELECT count(*) FROM workspaces WHERE team_id = 'TAFTER'")) == 1
            assert s.scalar(text("PRAGMA busy_timeout")) == 30000  # restored for everything else
    finally:
        holder.kill()
        db.dispose()
