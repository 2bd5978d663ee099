"""The web process never loads the similarity model, with the embeddings backend configured.

Interactive payloads (commands, buttons, the form) still run in the web process; the insights of what they
capture are queued for a worker. Proved twice, without mocks: the web's own code in a fresh interpreter
(its `sys.modules` and index cache read after captures, a duplicate's Undo, `/prodops duplicates` and
`/feedback themes`), and the real gunicorn server, whose processes' memory maps must hold no torch library.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

from bot.devkit.driver import SlackDriver
from bot.devkit.emulator import SlackEmulator
from bot.devkit.server_process import ServerProcess
from bot.insights.similarity import embeddings_available
from storage.db import Database
from tests.conftest import SIGNING_SECRET, server_env
from tests.helpers import drain_insights, items_in_channel, unique, wait_for

MODEL_MODULES = ("sentence_transformers", "torch", "transformers")
OWN_DATABASE = True  # typed feedback is keyed by its trigger id, which each new driver counts from 1 again

WEB_PROCESS = """
import json, sys, threading
from wsgiref.simple_server import WSGIRequestHandler, make_server

from bot.settings import Settings
from bot.slack_app import build_app
from bot.web import ProdOpsWSGI
from storage.db import Database


class Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass


settings = Settings()
db = Database(settings.database_url)
server = make_server("127.0.0.1", 0, ProdOpsWSGI(build_app(settings, db), db), handler_class=Quiet)
threading.Thread(target=server.serve_forever, daemon=True).start()
print(json.dumps({"port": server.server_port}), flush=True)
for _ in sys.stdin:
    from bot.insights import index
    loaded = sorted(m for m in sys.argv[1:] if m in sys.modules)
    indexes = sum(len(per_db) for per_db in index._cache.values())
    print(json.dumps({"modules": loaded, "indexes": indexes}), flush=True)
"""


def _ask(process: subprocess.Popen[str]) -> dict[str, Any]:
    stdin, stdout = process.stdin, process.stdout
    assert stdin is not None and stdout is not None
    stdin.write("report\n")
    stdin.flush()
    return dict(json.loads(stdout.readline()))


def _env(emulator: SlackEmulator, db_url: str) -> dict[str, str]:
    return {
        **os.environ,
        **server_env(emulator, db_url, PRODOPS_SIMILARITY_BACKEND="embeddings"),
        "PYTHONPATH": os.getcwd(),
    }


def test_the_web_code_captures_and_decides_without_loading_the_model(migrated_db_url: str) -> None:
    assert embeddings_available(), "the embeddings extra must be installed for this test to mean anything"
    db = Database(migrated_db_url)
    with SlackEmulator(team_id="T0WEBCODE") as emu:
        web = subprocess.Popen(
            [sys.executable, "-c", WEB_PROCESS, *MODEL_MODULES],
            env=_env(emu, migrated_db_url),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            stdout: IO[str] | None = web.stdout
            assert stdout is not None
            port = json.loads(stdout.readline())["port"]
            driver = SlackDriver(
                events_url=f"http://127.0.0.1:{port}/slack/events",
                signing_secret=SIGNING_SECRET,
                emulator=emu,
            )
            _capture_and_decide(driver, emu, db)
            assert _ask(web) == {"modules": [], "indexes": 0}
        finally:
            web.kill()
            web.wait()
            db.dispose()


def _capture_and_decide(driver: SlackDriver, emu: SlackEmulator, db: Database) -> None:
    user = emu.add_user(unique("pm"), is_admin=True)["id"]
    channel = emu.add_channel(unique("web"), members=[user])["id"]
    words = f"{unique('ferry')} ferry ticket refunds take three weeks for gift card payments"
    driver.command("/feedback", words, user=user, channel=channel)
    # Generous waits: three processes (this one, the real server's worker, the web) may be loading torch at
    # once on a loaded CI machine; what this test checks is which process maps the model, not speed.
    first = wait_for(lambda: items_in_channel(db, channel), timeout=60, what="typed item")[0]
    drain_insights(db, emu, item_ids=[first.id])  # the worker's part, in this (test) process
    driver.command("/feedback", words, user=user, channel=channel)
    wait_for(lambda: len(items_in_channel(db, channel)) == 2, timeout=60, what="second item")
    drain_insights(db, emu, item_ids=[i.id for i in items_in_channel(db, channel)])
    prompt = wait_for(
        lambda: [e for e in emu.ephemerals(channel, user=user) if "dup_" in json.dumps(e)],
        timeout=60,  # the real server's worker may claim the task first and load the model for it
        what="duplicate prompt",
    )[0]
    button = next(
        e
        for b in prompt["blocks"]
        if b.get("type") == "actions"
        for e in b["elements"]
        if "dup_" in e["action_id"]
    )
    ts = emu.next_ts()
    clicked = driver.block_actions(
        user=user,
        actions=[{**button, "block_id": "dup", "type": "button"}],
        channel=channel,
        message={"ts": ts, "blocks": prompt["blocks"]},
        container={"type": "message", "message_ts": ts, "channel_id": channel, "is_ephemeral": True},
    )
    assert driver.send_interaction(clicked).status == 200
    wait_for(lambda: emu.response_url_posts(driver.response_key(clicked)), timeout=60, what="decision shown")
    for command, text in (("/prodops", "duplicates"), ("/feedback", "themes")):
        asked = driver.command(command, text, user=user, channel=channel)
        wait_for(
            lambda asked=asked: asked.body or emu.response_url_posts(asked.response_key),
            timeout=60,
            what=command,
        )


def _process_group(leader: int) -> list[int]:
    """The pids of a process group (gunicorn's master and its workers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:  # gone meanwhile
                continue
            if int(fields[2]) == leader:
                found.append(int(entry.name))
    return found


def _maps_torch(pid: int) -> bool:
    try:
        return any("torch" in line for line in Path(f"/proc/{pid}/maps").read_text().splitlines())
    except OSError:
        return False


def test_the_real_server_never_maps_torch(migrated_db_url: str, tmp_path: Path) -> None:
    assert embeddings_available()
    db = Database(migrated_db_url)
    with SlackEmulator(team_id="T0WEBSERVE") as emu:
        env = server_env(emu, migrated_db_url, PRODOPS_SIMILARITY_BACKEND="embeddings")
        server = ServerProcess({**env, "PYTHONPATH": os.getcwd()}, log_path=tmp_path / "server.log")
        server.start(timeout=60)
        try:
            driver = SlackDriver(events_url=server.events_url, signing_secret=SIGNING_SECRET, emulator=emu)
            _capture_and_decide(driver, emu, db)
            time.sleep(3)  # a model loading in the background would be mapped by now
            assert server.process is not None
            pids = _process_group(server.process.pid)
            worker = [
                pid for pid in pids if b"bot.cli\x00worker" in Path(f"/proc/{pid}/cmdline").read_bytes()
            ]
            web = [pid for pid in pids if pid not in worker]
            assert len(web) >= 3 and len(worker) == 1  # supervisor, gunicorn's master and its web processes
            assert [pid for pid in web if _maps_torch(pid)] == []
            # The worker ran the insights, so it has the model: the check does see it where it is.
            assert wait_for(lambda: _maps_torch(worker[0]), timeout=30, what="the model in the worker")
        finally:
            server.stop()
            db.dispose()
