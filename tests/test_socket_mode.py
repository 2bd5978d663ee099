"""The real bot, end to end, in Socket Mode: `prodops serve` with SLACK_APP_TOKEN against the emulator."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import select

from bot.devkit.driver import SlackDriver
from bot.devkit.emulator import SlackEmulator
from bot.devkit.server_process import ServerProcess
from storage.db import Database
from storage.models import FeedbackItem

T = TypeVar("T")


def wait_for(check: Callable[[], T], timeout: float = 10.0, what: str = "condition") -> T:
    """Poll until check() is truthy and return it, or fail naming what was awaited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def start_socket_mode_server(emu: SlackEmulator, database_url: str, tmp_path: Path) -> ServerProcess:
    """Spawn `python -m bot.cli serve` in Socket Mode (ServerProcess.start() would wait for /healthz)."""
    server = ServerProcess(
        {
            "SLACK_BOT_TOKEN": emu.bot_token,
            "SLACK_APP_TOKEN": emu.app_token,
            "SLACK_API_URL": emu.url,
            "SLACK_SIGNING_SECRET": "",
            "DATABASE_URL": database_url,
            "PRODOPS_LOG_LEVEL": "DEBUG",
        },
        command=[sys.executable, "-m", "bot.cli", "serve"],
        log_path=tmp_path / "server.log",
        cwd=tmp_path,  # no stray .env from the developer's checkout
    )
    server.process = subprocess.Popen(
        server.command,
        env=server.env,
        cwd=server.cwd,
        stdout=server.log_path.open("ab"),  # type: ignore[union-attr]
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return server


@dataclass
class Stack:
    emu: SlackEmulator
    server: ServerProcess
    db: Database
    driver: SlackDriver

    def items(self) -> list[FeedbackItem]:
        with self.db.session() as s:
            return list(s.scalars(select(FeedbackItem).order_by(FeedbackItem.id)))

    def wait_for_socket(self, accepted: int = 1) -> None:
        deadline = time.monotonic() + 45
        while True:
            if self.server.process is not None and self.server.process.poll() is not None:
                raise AssertionError(f"server exited: {self.server.log_tail()}")
            try:
                self.emu.wait_for_socket(timeout=0.5, accepted=accepted)
                return
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"no Socket Mode connection; log: {self.server.log_tail()}"
                    ) from None


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    database_url = f"sqlite:///{tmp_path / 'prodops.db'}"
    with SlackEmulator() as emu:
        server = start_socket_mode_server(emu, database_url, tmp_path)
        db = Database(database_url)
        try:
            driver = SlackDriver(events_url="", signing_secret="unused", emulator=emu, api_app_id=emu.app_id)
            yield Stack(emu, server, db, driver)
        finally:
            server.kill()
            db.dispose()


def seed(emu: SlackEmulator) -> dict[str, Any]:
    alice, bob = emu.add_user("alice"), emu.add_user("bob")
    channel = emu.add_channel("support", members=[alice["id"], bob["id"]])
    message = emu.post_message(channel["id"], alice["id"], "Exporting to CSV times out for big accounts")
    return {"alice": alice, "bob": bob, "channel": channel, "message": message}


def test_reaction_and_slash_command_over_socket_mode(stack: Stack) -> None:
    emu, driver = stack.emu, stack.driver
    cast = seed(emu)
    channel_id, ts, bob = cast["channel"]["id"], cast["message"]["ts"], cast["bob"]["id"]
    stack.wait_for_socket()
    assert emu.calls("apps.connections.open")[0].token == emu.app_token

    # :bulb: on Alice's message -> one feedback item and a thread reply.
    emu.add_reaction(channel_id, ts, bob, "bulb")
    event = driver.reaction_added_event(user=bob, reaction="bulb", channel=channel_id, ts=ts)
    envelope_id = emu.push_event(event, event_id="Ev0SOCKMODE01")
    ack = emu.wait_for_ack(envelope_id, timeout=10)
    assert ack["payload"] is None and ack["latency"] < 5, stack.server.log_tail()
    items = wait_for(lambda: stack.items(), what="a feedback item")
    assert [(i.source, i.channel_id, i.message_ts) for i in items] == [("reaction", channel_id, ts)]
    assert items[0].text == cast["message"]["text"] and items[0].captured_by_user_id == bob
    replies = wait_for(lambda: emu.replies(channel_id, ts), what="the bot's thread reply")
    assert len(replies) == 1 and replies[0]["user"] == emu.bot_user_id
    assert {c.token for c in emu.calls() if c.method != "apps.connections.open"} == {emu.bot_token}

    # Slack retries the same event (same event_id): acked, but nothing new happens.
    retry_id = emu.push_event(event, event_id="Ev0SOCKMODE01", retry_attempt=1, retry_reason="timeout")
    emu.wait_for_ack(retry_id, timeout=10)
    time.sleep(0.5)  # the duplicate is dropped before the ack, so nothing can follow it; be generous anyway
    assert len(stack.items()) == 1 and len(emu.replies(channel_id, ts)) == 1

    # /feedback some text -> an item with source "command", confirmed through the response_url.
    fields = driver.slash_command(
        command="/feedback",
        text="Initech wants Slack alerts when an export fails",
        user="alice",
        channel=channel_id,
    )
    command_ack = emu.wait_for_ack(emu.push_envelope("slash_commands", fields), timeout=10)
    assert command_ack["type"] == "slash_commands" and command_ack["latency"] < 5
    posts = wait_for(lambda: emu.response_url_posts(driver.response_key(fields)), what="the /feedback answer")
    assert posts[0]["response_type"] == "ephemeral" and "saved" in posts[0]["text"]
    items = stack.items()
    assert [i.source for i in items] == ["reaction", "command"]
    assert items[1].text == "Initech wants Slack alerts when an export fails"
    assert items[1].author_user_id == cast["alice"]["id"]

    # `/feedback help` is answered in the ack itself: the envelope's response payload.
    fields = driver.slash_command(command="/feedback", text="help", user="alice", channel=channel_id)
    help_ack = emu.wait_for_ack(emu.push_envelope("slash_commands", fields), timeout=10)
    assert help_ack["payload"]["response_type"] == "ephemeral" and help_ack["payload"]["blocks"]
    assert len(stack.items()) == 2
    assert "Traceback" not in stack.server.log_tail(400)


def test_the_bot_reconnects_when_slack_asks_for_a_refresh(stack: Stack) -> None:
    emu, driver = stack.emu, stack.driver
    cast = seed(emu)
    channel_id, ts, bob = cast["channel"]["id"], cast["message"]["ts"], cast["bob"]["id"]
    stack.wait_for_socket()
    assert emu.request_disconnect() == 1
    stack.wait_for_socket(accepted=2)

    emu.add_reaction(channel_id, ts, bob, "bulb")
    event = driver.reaction_added_event(user=bob, reaction="bulb", channel=channel_id, ts=ts)
    ack = emu.wait_for_ack(emu.push_event(event), timeout=15)
    assert ack["connection_id"] == emu.socket_history()[-1]["id"]
    assert wait_for(lambda: stack.items(), what="a feedback item")[0].source == "reaction"
    assert len(emu.calls("apps.connections.open")) == 2


def test_sigterm_stops_the_socket_mode_server(stack: Stack) -> None:
    stack.wait_for_socket()
    process = stack.server.process
    assert process is not None
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=8)
    except subprocess.TimeoutExpired:
        pytest.fail("`prodops serve` in Socket Mode ignored SIGTERM for 8s")
    wait_for(lambda: emu_closed(stack.emu), what="the connection to end")


def emu_closed(emu: SlackEmulator) -> bool:
    return all(c["closed_at"] for c in emu.socket_history())
