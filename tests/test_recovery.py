"""A delivery acknowledged but not processed (the server was killed) is processed when it starts again."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from bot import inbox
from bot.devkit.driver import SlackDriver
from bot.devkit.emulator import SlackEmulator
from bot.devkit.server_process import ServerProcess, free_port
from storage.db import Database
from storage.migrate import upgrade
from storage.models import InboxStatus
from tests.conftest import SIGNING_SECRET, server_env
from tests.helpers import inbox_rows, items_in_channel, wait_for

ROOT = Path(__file__).resolve().parent.parent


def _app_py(emulator: SlackEmulator, db_url: str, port: int, log: Path) -> ServerProcess:
    """`python app.py`, configured only through the environment, as an operator would run it."""
    return ServerProcess(
        server_env(emulator, db_url), port=port, command=[sys.executable, "app.py"], log_path=log, cwd=ROOT
    )


def test_killed_mid_event_is_processed_after_restart(empty_db_url: str, tmp_path: Path) -> None:
    upgrade(empty_db_url)
    db = Database(empty_db_url)
    with SlackEmulator() as emu:
        user = emu.add_user("carol")
        channel = emu.add_channel("feedback", members=[user["id"]])
        message = emu.post_message(channel["id"], user["id"], "Bulk edit would save us hours")
        first = _app_py(emu, empty_db_url, port=free_port(), log=tmp_path / "a.log").start()
        driver = SlackDriver(events_url=first.events_url, signing_secret=SIGNING_SECRET, emulator=emu)
        emu.delay("conversations.history", 6.0)  # hold the handler mid-flight

        event = driver.event_callback(
            driver.reaction_added_event(
                user=user["id"], reaction="bulb", channel=channel["id"], ts=message["ts"]
            )
        )
        started = time.monotonic()
        response = driver.send_event(event)
        ack_seconds = time.monotonic() - started
        assert response.status == 200
        assert ack_seconds < 2.0, "the ack must not wait for the Web API"
        # Recorded, then claimed by the worker that `serve` runs beside the web process.
        row = wait_for(
            lambda: [r for r in inbox_rows(db, event["event_id"]) if r.status == InboxStatus.pending.value],
            what="inbox row claimed",
        )[0]
        assert row.claimed_by and row.attempts == 1
        time.sleep(0.5)  # the handler is now waiting on conversations.history
        first.kill()  # web and worker die before the handler finishes
        assert items_in_channel(db, channel["id"]) == []

        second = _app_py(emu, empty_db_url, port=first.port, log=tmp_path / "b.log").start()
        try:
            items = wait_for(
                lambda: items_in_channel(db, channel["id"]), timeout=20, what="item after restart"
            )
            assert len(items) == 1 and items[0].text == "Bulk edit would save us hours"
            wait_for(lambda: emu.replies(channel["id"], message["ts"]), what="confirmation after restart")
            done = wait_for(
                lambda: [r for r in inbox_rows(db, event["event_id"]) if r.status == InboxStatus.done.value],
                what="inbox row done",
            )
            assert done[0].attempts == 2
            time.sleep(1.0)
            assert len(emu.replies(channel["id"], message["ts"])) == 1
        finally:
            second.stop()
            db.dispose()


def test_worker_replays_a_delivery_no_server_finished(empty_db_url: str, tmp_path: Path) -> None:
    """`prodops worker` alone (no web server running) finishes a delivery that was recorded but never handled."""
    upgrade(empty_db_url)
    db = Database(empty_db_url)
    with SlackEmulator() as emu:
        user = emu.add_user("dave")
        channel = emu.add_channel("feedback", members=[user["id"]])
        message = emu.post_message(channel["id"], user["id"], "Dark mode for the dashboard, please")
        driver = SlackDriver(
            events_url="http://127.0.0.1:9/unused", signing_secret=SIGNING_SECRET, emulator=emu
        )
        body = driver.event_callback(
            driver.reaction_added_event(
                user=user["id"], reaction="bulb", channel=channel["id"], ts=message["ts"]
            )
        )
        with db.session() as s:  # as if a server recorded it and died at once
            delivery = inbox.identify_delivery(body)
            assert delivery is not None
            inbox.record_delivery(db_session=s, delivery=delivery, body=body, lease_seconds=0.01)
        log = (tmp_path / "worker.log").open("wb")
        worker = subprocess.Popen(
            [sys.executable, "-m", "bot.cli", "worker"],
            env={**os.environ, **server_env(emu, empty_db_url)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            items = wait_for(
                lambda: items_in_channel(db, channel["id"]), timeout=20, what="item from the worker"
            )
            assert items[0].text == "Dark mode for the dashboard, please"
            wait_for(lambda: emu.replies(channel["id"], message["ts"]), what="confirmation from the worker")
        finally:
            worker.terminate()
            worker.wait(timeout=10)
            log.close()
            db.dispose()
