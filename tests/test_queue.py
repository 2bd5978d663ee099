"""The work queue: the web process records and acks events, workers claim and run them (issue: web answers,
workers work). Through the real server, the real `prodops worker` process and the emulator, on both databases."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from bot import inbox
from bot.devkit.driver import SlackDriver
from bot.devkit.emulator import SlackEmulator
from bot.devkit.server_process import ServerProcess
from storage.db import Database
from storage.migrate import upgrade
from storage.models import InboxEvent, InboxStatus
from tests.conftest import SIGNING_SECRET, server_env
from tests.helpers import inbox_rows, items_in_channel, wait_for

ROOT = Path(__file__).resolve().parent.parent


def _event_body(n: int, *, channel: str = "C1", ts: str | None = None, thread_ts: str | None = None) -> dict:
    event: dict = {"type": "message", "channel": channel, "user": "U1", "text": f"m{n}", "ts": ts or f"{n}.0"}
    if thread_ts:
        event["thread_ts"] = thread_ts
    return {"type": "event_callback", "team_id": "TQ", "event_id": f"Ev{n:06d}", "event": event}


def _record(db: Database, body: dict) -> int:
    delivery = inbox.identify_delivery(body)
    assert delivery is not None and delivery.queued
    with db.inbox.session() as s:
        inbox_id = inbox.record_delivery(db_session=s, delivery=delivery, body=body, lease_seconds=60)
    assert inbox_id is not None
    return inbox_id


def _claim(
    db: Database, *, limit: int = 50, worker: str = "w1", lease: float = 60
) -> list[inbox.ClaimedDelivery]:
    with db.inbox.session() as s:
        return inbox.claim_deliveries(
            db_session=s,
            worker_id=worker,
            lease_seconds=lease,
            max_attempts=3,
            limit=limit,
            skip_locked=db.backend == "postgresql",
        )


def test_order_key_follows_the_thread() -> None:
    team = "T1"
    top = {"type": "message", "channel": "C1", "ts": "1.0"}
    reply = {"type": "message", "channel": "C1", "ts": "2.0", "thread_ts": "1.0"}
    edit = {"type": "message", "subtype": "message_changed", "channel": "C1", "message": {"ts": "1.0"}}
    edit_reply = {
        "type": "message",
        "subtype": "message_changed",
        "channel": "C1",
        "message": {"ts": "2.0", "thread_ts": "1.0"},
    }
    deleted = {"type": "message", "subtype": "message_deleted", "channel": "C1", "deleted_ts": "1.0"}
    reaction = {"type": "reaction_added", "item": {"type": "message", "channel": "C1", "ts": "1.0"}}
    keys = {inbox.order_key(team, e) for e in (top, reply, edit, edit_reply, deleted, reaction)}
    assert keys == {"T1:C1:1.0"}
    assert inbox.order_key(team, {"type": "app_home_opened", "user": "U1"}) is None
    assert inbox.order_key(team, {"type": "reaction_added", "item": "junk"}) is None


def test_a_later_delivery_of_a_thread_waits_for_the_earlier_one(own_db: Database) -> None:
    parent = _record(own_db, _event_body(1, ts="100.0"))
    reply = _record(own_db, _event_body(2, ts="101.0", thread_ts="100.0"))
    other = _record(own_db, _event_body(3, ts="200.0"))

    first = _claim(own_db)
    assert [c.inbox_id for c in first] == [parent, other]  # the reply waits behind its parent
    assert _claim(own_db) == []
    with own_db.inbox.session() as s:
        assert inbox.settle_delivery(db_session=s, claimed=first[0], status=InboxStatus.done)
    second = _claim(own_db)
    assert [c.inbox_id for c in second] == [reply]
    assert second[0].attempts == 1 and second[0].body["event"]["thread_ts"] == "100.0"


def test_claims_are_exactly_once_across_racing_workers(own_db: Database) -> None:
    ids = {_record(own_db, _event_body(1000 + n, ts=f"{1000 + n}.0")) for n in range(120)}
    claimed: list[int] = []
    lock = threading.Lock()

    def work(name: str) -> None:
        while True:
            batch = _claim(own_db, limit=7, worker=name)
            if not batch:
                return
            with lock:
                claimed.extend(c.inbox_id for c in batch)

    threads = [threading.Thread(target=work, args=(f"w{n}",)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(claimed) == sorted(ids)  # every delivery once: none twice, none missed


def test_a_stale_claim_is_taken_over_and_the_old_worker_cannot_settle_it(own_db: Database) -> None:
    inbox_id = _record(own_db, _event_body(5000, ts="5000.0"))
    [old] = _claim(own_db, worker="dead-worker", lease=0.05)
    time.sleep(0.1)
    [new] = _claim(own_db, worker="live-worker")
    assert (new.inbox_id, new.attempts) == (inbox_id, 2)
    with own_db.inbox.session() as s:
        assert not inbox.settle_delivery(db_session=s, claimed=old, status=InboxStatus.done)
        assert inbox.settle_delivery(db_session=s, claimed=new, status=InboxStatus.done)
    [row] = inbox_rows(own_db, "Ev005000")
    assert (row.status, row.attempts, row.claimed_by) == ("done", 2, None)


def test_a_failed_delivery_waits_for_its_backoff(own_db: Database) -> None:
    _record(own_db, _event_body(6000, ts="6000.0"))
    [claimed] = _claim(own_db)
    with own_db.inbox.session() as s:
        inbox.settle_delivery(
            db_session=s, claimed=claimed, status=InboxStatus.failed, error="boom", retry_in=0.5
        )
    assert _claim(own_db) == []
    time.sleep(0.6)
    [again] = _claim(own_db)
    assert again.attempts == 2


@pytest.fixture
def own_db(empty_db_url: str):
    upgrade(empty_db_url)
    database = Database(empty_db_url)
    yield database
    database.dispose()


# --- through the real processes ---------------------------------------------------------------------------


def _server(emu: SlackEmulator, db_url: str, log: Path, **extra: str) -> ServerProcess:
    return ServerProcess(server_env(emu, db_url, **extra), log_path=log, cwd=ROOT)


def _worker(emu: SlackEmulator, db_url: str, log: Path, **extra: str) -> ServerProcess:
    """`prodops worker` on its own (it has no HTTP port; `start` is not used)."""
    return ServerProcess(
        server_env(emu, db_url, **extra),
        command=[sys.executable, "-m", "bot.cli", "worker"],
        log_path=log,
        cwd=ROOT,
    )


def _popen(proc: ServerProcess) -> ServerProcess:
    import subprocess

    proc._log_file = open(proc.log_path, "ab")  # noqa: SIM115
    proc.process = subprocess.Popen(
        proc.command,
        env=proc.env,
        cwd=proc.cwd,
        stdout=proc._log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return proc


def test_web_alone_acks_and_records_events_and_a_worker_runs_them(empty_db_url: str, tmp_path: Path) -> None:
    upgrade(empty_db_url)
    db = Database(empty_db_url)
    with SlackEmulator() as emu:
        user = emu.add_user("dana")
        channel = emu.add_channel("feedback", members=[user["id"]])
        message = emu.post_message(channel["id"], user["id"], "Exports time out on big boards")
        web = _server(emu, empty_db_url, tmp_path / "web.log", PRODOPS_SERVE_WORKER="false").start()
        worker = None
        try:
            driver = SlackDriver(events_url=web.events_url, signing_secret=SIGNING_SECRET, emulator=emu)
            response = driver.react(user=user["id"], channel=channel["id"], ts=message["ts"])
            assert response.status == 200
            [row] = wait_for(lambda: inbox_rows(db, _last_event_id(db)), what="inbox row")
            time.sleep(1.0)
            # Recorded and acknowledged; nothing ran: no item, no Web API call for it.
            assert (row.status, row.attempts, row.kind) == ("queued", 0, "event:reaction_added")
            assert row.order_key == f"{emu.team_id}:{channel['id']}:{message['ts']}"
            assert items_in_channel(db, channel["id"]) == []
            assert emu.calls("chat.postMessage") == []

            worker = _popen(_worker(emu, empty_db_url, tmp_path / "worker.log"))
            items = wait_for(
                lambda: items_in_channel(db, channel["id"]), timeout=20, what="item from the worker"
            )
            assert [i.text for i in items] == ["Exports time out on big boards"]
            wait_for(lambda: emu.replies(channel["id"], message["ts"]), what="confirmation from the worker")
            done = wait_for(
                lambda: [r for r in inbox_rows(db, row.delivery_id) if r.status == "done"], what="done"
            )
            assert done[0].attempts == 1
        finally:
            web.stop()
            if worker is not None:
                worker.stop()
            db.dispose()


def _last_event_id(db: Database) -> str:
    with db.inbox.read() as s:
        return s.scalar(select(InboxEvent.delivery_id).order_by(InboxEvent.id.desc()).limit(1)) or "none"


def test_a_delivery_that_fails_every_attempt_is_dead_and_the_person_is_told_once(
    empty_db_url: str, tmp_path: Path
) -> None:
    upgrade(empty_db_url)
    db = Database(empty_db_url)
    with SlackEmulator() as emu:
        user = emu.add_user("erin")
        channel = emu.add_channel("feedback", members=[user["id"]])
        message = emu.post_message(channel["id"], user["id"], "Gantt view loses dependencies")
        emu.fail("conversations.history", status=200, error="fatal_error", times=10)
        server = _server(
            emu,
            empty_db_url,
            tmp_path / "s.log",
            PRODOPS_INBOX_MAX_ATTEMPTS="3",
            PRODOPS_INBOX_RETRY_SECONDS="0.2",
        ).start()
        try:
            driver = SlackDriver(events_url=server.events_url, signing_secret=SIGNING_SECRET, emulator=emu)
            event = driver.event_callback(
                driver.reaction_added_event(
                    user=user["id"], reaction="bulb", channel=channel["id"], ts=message["ts"]
                )
            )
            assert driver.send_event(event).status == 200
            dead = wait_for(
                lambda: [r for r in inbox_rows(db, event["event_id"]) if r.status == InboxStatus.dead.value],
                timeout=20,
                what="dead delivery",
            )
            assert dead[0].attempts == 3 and "fatal_error" in (dead[0].last_error or "")
            apologies = wait_for(
                lambda: emu.ephemerals(channel=channel["id"], user=user["id"]), what="apology"
            )
            time.sleep(0.5)
            assert len(emu.ephemerals(channel=channel["id"], user=user["id"])) == 1
            assert event["event_id"] in str(apologies[0]) and "Traceback" not in str(apologies[0])
            assert items_in_channel(db, channel["id"]) == []
        finally:
            server.stop()
            db.dispose()


def test_a_killed_worker_is_restarted_and_every_delivery_is_handled_exactly_once(
    empty_db_url: str, tmp_path: Path
) -> None:
    """SIGKILL the worker that `serve` supervises in the middle of a batch: serve starts a new one, which takes
    the dead worker's claims over after their lease; every message is captured and confirmed once."""
    upgrade(empty_db_url)
    db = Database(empty_db_url)
    with SlackEmulator() as emu:
        user = emu.add_user("fay")
        channel = emu.add_channel("feedback", members=[user["id"]])
        messages = [
            emu.post_message(channel["id"], user["id"], f"Idea number {n} for reports") for n in range(24)
        ]
        server = _server(emu, empty_db_url, tmp_path / "s.log", PRODOPS_INBOX_LEASE_SECONDS="2").start()
        try:
            driver = SlackDriver(events_url=server.events_url, signing_secret=SIGNING_SECRET, emulator=emu)
            emu.delay("conversations.history", 0.3, times=24)  # every capture takes a while
            for message in messages:
                assert driver.react(user=user["id"], channel=channel["id"], ts=message["ts"]).status == 200

            def claimed_pid() -> int | None:
                with db.inbox.read() as s:
                    owner = s.scalar(
                        select(InboxEvent.claimed_by).where(InboxEvent.status == "pending").limit(1)
                    )
                return int(owner.rsplit(":", 1)[1]) if owner else None

            victim = wait_for(claimed_pid, what="a worker holding claims")
            os.kill(victim, signal.SIGKILL)

            def settled() -> int:
                with db.inbox.read() as s:
                    return (
                        s.scalar(
                            select(func.count()).select_from(InboxEvent).where(InboxEvent.status == "done")
                        )
                        or 0
                    )

            wait_for(lambda: settled() == 24, timeout=60, what="every delivery done")
            # Done after the kill: serve started a new worker; the log says so.
            assert server.log_tail().count("worker process") >= 2
            time.sleep(1.0)
            items = items_in_channel(db, channel["id"])
            assert sorted(i.message_ts for i in items) == sorted(m["ts"] for m in messages)
            for message in messages:
                assert len(emu.replies(channel["id"], message["ts"])) == 1, "one confirmation per message"
            with db.inbox.read() as s:
                attempts = list(s.scalars(select(InboxEvent.attempts)))
            assert max(attempts) >= 2  # some were taken over from the killed worker
        finally:
            server.stop()
            db.dispose()


def test_postgres_workers_wake_on_notify_not_on_the_poll(postgres_empty_url: str, tmp_path: Path) -> None:
    """With a 30 s poll, a delivery is still handled within seconds: the recorder's NOTIFY wakes the worker."""
    upgrade(postgres_empty_url)
    db = Database(postgres_empty_url)
    with SlackEmulator() as emu:
        user = emu.add_user("gus")
        channel = emu.add_channel("feedback", members=[user["id"]])
        server = _server(
            emu, postgres_empty_url, tmp_path / "s.log", PRODOPS_WORKER_POLL_SECONDS="30"
        ).start()
        try:
            driver = SlackDriver(events_url=server.events_url, signing_secret=SIGNING_SECRET, emulator=emu)
            time.sleep(2.0)  # the worker has started and is listening
            for n in range(3):
                message = emu.post_message(channel["id"], user["id"], f"Calendar sync drops events {n}")
                started = time.monotonic()
                driver.react(user=user["id"], channel=channel["id"], ts=message["ts"])
                wait_for(
                    lambda m=message: emu.replies(channel["id"], m["ts"]), timeout=10, what="confirmation"
                )
                assert time.monotonic() - started < 5.0
        finally:
            server.stop()
            db.dispose()


def test_metrics_of_serve_add_up_the_worker_it_supervises(empty_db_url: str, tmp_path: Path) -> None:
    """`prodops serve` prepares one metrics directory for its web processes and its worker: the worker's
    delivery counters and the Slack calls it made show on the web endpoint's /metrics."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    upgrade(empty_db_url)
    db = Database(empty_db_url)
    with SlackEmulator() as emu:
        user = emu.add_user("hal")
        channel = emu.add_channel("feedback", members=[user["id"]])
        message = emu.post_message(channel["id"], user["id"], "Board filters reset after reload")
        server = _server(emu, empty_db_url, tmp_path / "s.log").start()
        try:
            driver = SlackDriver(events_url=server.events_url, signing_secret=SIGNING_SECRET, emulator=emu)
            driver.react(user=user["id"], channel=channel["id"], ts=message["ts"])
            wait_for(lambda: emu.replies(channel["id"], message["ts"]), timeout=20, what="confirmation")

            def samples() -> dict[tuple[str, tuple], float]:
                with urllib.request.urlopen(server.base_url + "/metrics", timeout=5) as response:
                    text = response.read().decode()
                return {
                    (s.name, tuple(sorted(s.labels.items()))): s.value
                    for family in text_string_to_metric_families(text)
                    for s in family.samples
                }

            key = ("prodops_inbox_deliveries_total", (("kind", "event:reaction_added"), ("outcome", "done")))
            found = wait_for(lambda: samples().get(key), what="the worker's delivery counter on /metrics")
            assert found == 1.0
            posted = [
                v
                for (name, labels), v in samples().items()
                if name == "prodops_slack_api_requests_total" and ("method", "chat.postMessage") in labels
            ]
            assert sum(posted) >= 1  # the worker's confirmation, counted in the worker process
        finally:
            server.stop()
            db.dispose()


def test_a_running_delivery_keeps_its_lease_and_is_not_run_twice(empty_db_url: str, tmp_path: Path) -> None:
    """A listener slower than the lease: the worker's heartbeat renews it, so nobody takes it over."""
    upgrade(empty_db_url)
    db = Database(empty_db_url)
    with SlackEmulator() as emu:
        user = emu.add_user("ivy")
        channel = emu.add_channel("feedback", members=[user["id"]])
        message = emu.post_message(channel["id"], user["id"], "Mobile app forgets my filters")
        server = _server(emu, empty_db_url, tmp_path / "s.log", PRODOPS_INBOX_LEASE_SECONDS="1.5").start()
        try:
            driver = SlackDriver(events_url=server.events_url, signing_secret=SIGNING_SECRET, emulator=emu)
            emu.delay("conversations.history", 5.0)  # three leases long
            event = driver.event_callback(
                driver.reaction_added_event(
                    user=user["id"], reaction="bulb", channel=channel["id"], ts=message["ts"]
                )
            )
            driver.send_event(event)
            done = wait_for(
                lambda: [r for r in inbox_rows(db, event["event_id"]) if r.status == "done"],
                timeout=30,
                what="done",
            )
            assert done[0].attempts == 1
            assert len(emu.calls("conversations.history")) == 1
            assert len(emu.replies(channel["id"], message["ts"])) == 1
        finally:
            server.stop()
            db.dispose()


def test_a_capture_that_died_before_its_confirmation_confirms_on_its_retry(stack) -> None:
    """The item was stored, then posting the confirmation failed: the retried delivery finds the item and
    posts the confirmation it never got (once), instead of treating the message as already handled."""
    emu = stack.emulator
    user = emu.add_user("jo")
    channel = emu.add_channel("feedback-retry", members=[user["id"]])
    message = emu.post_message(channel["id"], user["id"], "Timeline zoom resets on every refresh")
    emu.fail("chat.postMessage", status=200, error="fatal_error", times=1)
    event = stack.driver.event_callback(
        stack.driver.reaction_added_event(
            user=user["id"], reaction="bulb", channel=channel["id"], ts=message["ts"]
        )
    )
    stack.driver.send_event(event)
    done = wait_for(
        lambda: [r for r in inbox_rows(stack.db, event["event_id"]) if r.status == "done"],
        timeout=30,
        what="done",
    )
    assert done[0].attempts == 2
    assert len(items_in_channel(stack.db, channel["id"])) == 1
    replies = wait_for(lambda: emu.replies(channel["id"], message["ts"]), what="confirmation on the retry")
    time.sleep(1.0)
    assert len(emu.replies(channel["id"], message["ts"])) == len(replies) == 1
