"""`prodops demo`: the real server on SQLite, the bundled Slack emulator, a short scenario over signed HTTP."""

from __future__ import annotations

import io
import secrets
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from bot.devkit.driver import SlackDriver
from bot.devkit.emulator import SlackEmulator
from bot.devkit.server_process import ServerProcess
from bot.export import EXPORTS, write_rows
from storage.db import Database

EXPECTED_ITEMS = 3  # two reactions (one of them delivered twice) and one /feedback


def run_demo(database_url: str | None = None, console: Console | None = None) -> int:
    """Runs the scenario; returns the process exit code (0 when the bot did what it should)."""
    console = console or Console()
    workdir = Path(tempfile.mkdtemp(prefix="prodops-demo-"))
    database_url = database_url or f"sqlite:///{workdir / 'prodops-demo.db'}"
    secret = secrets.token_hex(16)
    with SlackEmulator(team_name="Acme Corp", team_domain="acme") as emu:
        cast = _seed_workspace(emu)
        server = ServerProcess(
            {
                "SLACK_BOT_TOKEN": emu.bot_token,
                "SLACK_SIGNING_SECRET": secret,
                "SLACK_API_URL": emu.url,
                "SLACK_APP_TOKEN": "",
                "DATABASE_URL": database_url,
                "WEB_CONCURRENCY": "1",
            },
            log_path=workdir / "server.log",
        )
        with console.status("Starting the ProdOps server (migrating the database)…"):
            try:
                server.start(timeout=60)
            except RuntimeError as exc:
                console.print(f"[red]The server did not start.[/] {exc}")
                return 1
        try:
            console.print(
                f"[green]✓[/] Server up at {server.base_url} · emulator at {emu.url} · {database_url}"
            )
            driver = SlackDriver(events_url=server.events_url, signing_secret=secret, emulator=emu)
            _play_scenario(console, driver, emu, cast)
            ok = _wait(lambda: _bot_posts_count(emu, cast) >= EXPECTED_ITEMS, timeout=30)
            _show_bot_posts(console, emu, cast)
            count = _show_export(console, Database(database_url))
        finally:
            server.stop()
    console.print(f"Server log: {workdir / 'server.log'}")
    if not ok or count != EXPECTED_ITEMS:
        console.print(f"[red]✗ Expected {EXPECTED_ITEMS} feedback items and replies, got {count}.[/]")
        return 1
    console.print(
        f"[bold green]✓ Demo finished: {count} feedback items captured, the duplicate delivery ignored.[/]"
    )
    return 0


def _seed_workspace(emu: SlackEmulator) -> dict[str, Any]:
    """A small workspace: three people, two channels, a few customer conversations."""
    alice = emu.add_user("alice", real_name="Alice Support")
    bob = emu.add_user("bob", real_name="Bob PM")
    carol = emu.add_user("carol", real_name="Carol Sales")
    members = [alice["id"], bob["id"], carol["id"]]
    support = emu.add_channel("support", members=members)
    sales = emu.add_channel("sales-calls", members=members)
    messages = {
        "csv": emu.post_message(
            support["id"],
            alice["id"],
            "Acme says the CSV export drops the last column when a field has a comma.",
        ),
        "thanks": emu.post_message(support["id"], bob["id"], "Thanks, looking into it!"),
        "sso": emu.post_message(
            sales["id"], carol["id"], "Globex call recap: they will not renew without SSO via Okta."
        ),
    }
    return {
        "alice": alice,
        "bob": bob,
        "carol": carol,
        "support": support,
        "sales": sales,
        "messages": messages,
    }


def _play_scenario(console: Console, driver: SlackDriver, emu: SlackEmulator, cast: dict[str, Any]) -> None:
    """Reactions, a duplicate delivery, a /feedback — each a signed POST to /slack/events."""
    msgs, bob, carol = cast["messages"], cast["bob"]["id"], cast["carol"]["id"]
    steps: list[tuple[str, Callable[[], Any]]] = [
        ("Bob reacts :bulb: to Alice's CSV message in #support",
         lambda: driver.react(user=bob, channel=cast["support"]["id"], ts=msgs["csv"]["ts"])),
        ("Carol reacts :eyes: to the same message (not the feedback emoji)",
         lambda: driver.react(user=carol, channel=cast["support"]["id"], ts=msgs["csv"]["ts"], reaction="eyes")),
    ]  # fmt: skip
    sso_event = driver.event_callback(
        driver.reaction_added_event(
            user=bob, reaction="bulb", channel=cast["sales"]["id"], ts=msgs["sso"]["ts"]
        )
    )
    steps += [
        ("Bob reacts :bulb: to Carol's SSO recap in #sales-calls", lambda: driver.send_event(sso_event)),
        ("Slack retries that same event (X-Slack-Retry-Num: 1)", lambda: driver.send_event(sso_event, retry_num=1)),
        ("Carol types /feedback in #sales-calls",
         lambda: driver.command("/feedback", "Initech wants Slack alerts when an export fails", user=carol,
                                channel=cast["sales"]["id"])),
    ]  # fmt: skip
    table = Table(title="Scenario (signed HTTP to /slack/events)", show_lines=False)
    table.add_column("step")
    table.add_column("HTTP", justify="right")
    table.add_column("ack ms", justify="right")
    for label, action in steps:
        started = time.perf_counter()
        response = action()
        table.add_row(label, str(response.status), f"{(time.perf_counter() - started) * 1000:.0f}")
        time.sleep(0.2)
    console.print(table)


def _wait(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def _bot_posts_count(emu: SlackEmulator, cast: dict[str, Any]) -> int:
    threads = [
        (cast["support"]["id"], cast["messages"]["csv"]["ts"]),
        (cast["sales"]["id"], cast["messages"]["sso"]["ts"]),
    ]
    replies = sum(1 for channel, ts in threads for m in emu.replies(channel, ts) if m.get("bot_id"))
    return replies + len(emu.response_url_posts())


def _blocks_text(message: dict[str, Any]) -> str:
    """The readable text of a Block Kit message, as a person would see it."""
    parts = []
    for block in message.get("blocks") or []:
        if block.get("type") == "section":
            parts.append(block["text"]["text"])
        elif block.get("type") == "context":
            parts.extend(e.get("text", "") for e in block.get("elements", []))
    return "\n".join(parts) or message.get("text", "")


def _show_bot_posts(console: Console, emu: SlackEmulator, cast: dict[str, Any]) -> None:
    for channel in (cast["support"], cast["sales"]):
        for message in emu.messages(channel["id"]):
            for reply in emu.replies(channel["id"], message["ts"]):
                if reply.get("bot_id"):
                    title = f"#{channel['name']} · thread of “{message['text'][:50]}…”"
                    console.print(Panel(_blocks_text(reply), title=title, title_align="left"))
    for post in emu.response_url_posts():
        console.print(
            Panel(_blocks_text(post), title="/feedback · only visible to Carol", title_align="left")
        )


def _show_export(console: Console, db: Database) -> int:
    rows, fields = EXPORTS["feedback"]
    out = io.StringIO()
    count = write_rows(rows(db), fields, "jsonl", out)
    db.dispose()
    console.print("[bold]prodops export feedback --format jsonl[/]")
    sys.stdout.write(out.getvalue())
    sys.stdout.flush()
    return count
