"""Insights in batches, on SQLite and Postgres: captures through the real server are confirmed at once and
queued; one batch encodes them with one encoder call per workspace, then the confirmation is updated in
place (theme, duplicate link), watched channels stay silent, typed feedback is prompted privately; tasks
are claimed exactly once by concurrent workers, taken over after a killed worker's lease, retried without
posting twice, and given up after too many attempts."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, update

from bot import workspaces
from bot.devkit.emulator import SlackEmulator
from bot.insights import batch, themes
from bot.insights.batch import (
    InsightMode,
    TaskStatus,
    enqueue_insights,
    has_due_insight_tasks,
    run_insight_batch,
)
from bot.insights.index import forget_cached
from bot.settings import Settings
from bot.slack_client import TeamClients
from storage.db import Database
from storage.models import DuplicateSuggestion, FeedbackItem, FeedbackVector, InsightTask, Workspace
from storage.types import utcnow
from tests.conftest import Stack, run_stack
from tests.helpers import drain_insights, items_in_channel, open_insight_tasks, unique, wait_for

TFIDF = Settings(PRODOPS_SIMILARITY_BACKEND="tfidf")
# These tests run the batches themselves: their server's worker runs deliveries only (PRODOPS_WORKER_QUEUES).
OWN_DATABASE = True


@pytest.fixture(scope="module")
def stack(own_db_url: str, db: Database, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A real server and emulator of this module's own, whose worker leaves the insight tasks to the tests."""
    yield from run_stack(own_db_url, db, tmp_path_factory, PRODOPS_WORKER_QUEUES="inbox")


SLOW = 60.0
UNREACHABLE = TeamClients(token="xoxb-unused", base_url="http://127.0.0.1:9/")  # any Slack call fails


def _clients(emulator: SlackEmulator) -> TeamClients:
    return TeamClients(token=emulator.bot_token, base_url=emulator.url)


def _tasks(db: Database, item_ids: list[int]) -> dict[int, InsightTask]:
    with db.read() as s:
        rows = s.scalars(select(InsightTask).where(InsightTask.item_id.in_(item_ids)))
        return {t.item_id: t for t in rows}


def _item(db: Database, item_id: int) -> FeedbackItem:
    with db.read() as s:
        found = s.get(FeedbackItem, item_id)
        assert found is not None
        return found


def _queue_items(
    db: Database, team_id: str, texts: list[str], *, mode: InsightMode = InsightMode.silent, **where: Any
) -> list[int]:
    """Items stored with their insight tasks in one transaction, as a capture does."""
    ids = []
    with db.session() as s:
        for text in texts:
            item = FeedbackItem(
                team_id=team_id, channel_id=where.get("channel_id", "C0BATCH"), text=text, source="command",
                captured_by_user_id=where.get("user_id", "U0BATCH"),
            )  # fmt: skip
            s.add(item)
            s.flush()
            enqueue_insights(db_session=s, team_id=team_id, item_id=item.id, mode=mode, **where)
            ids.append(item.id)
    return ids


SENTENCES = [
    "Invoices exported to CSV lose the VAT column for Belgian customers",
    "Calendar sync with Outlook duplicates recurring meetings twice a week",
    "Please let admins sign in with Okta instead of passwords",
    "The Android app drains the battery while idle overnight",
    "Bulk editing user roles would save our support leads hours",
    "Push notifications arrive an hour late on iPads in kiosk mode",
]


def _texts(n: int, marker: str) -> list[str]:
    """`n` feedback texts on unrelated topics (a marker of the test in each)."""
    return [f"{SENTENCES[i % len(SENTENCES)]} ({marker}-{i})" for i in range(n)]


def _set_bands(db: Database, team_id: str, link: float | None, ask: float | None) -> None:
    with db.session() as s:
        workspace = workspaces.get_or_create(db_session=s, team_id=team_id)
        workspace.duplicate_link_threshold, workspace.duplicate_ask_threshold = link, ask


@pytest.fixture
def team(db: Database) -> Any:
    team_id = unique("TBAT")
    with db.session() as s:
        s.add(Workspace(team_id=team_id))
    yield team_id
    forget_cached(db, team_id)


# -- through the real server -----------------------------------------------------------------------------------


def _people(stack: Stack) -> tuple[str, str, str]:
    emu = stack.emulator
    author, pm = emu.add_user(unique("cust"))["id"], emu.add_user(unique("pm"))["id"]
    channel = emu.add_channel(unique("batch"), members=[author, pm])["id"]
    return author, pm, channel


def _react(stack: Stack, channel: str, author: str, pm: str, text: str) -> tuple[str, str]:
    """A message reacted to; returns (message ts, confirmation ts) once the confirmation is posted."""
    message = stack.emulator.post_message(channel, author, text)
    stack.driver.react(user=pm, channel=channel, ts=message["ts"])
    reply = wait_for(
        lambda: [r for r in stack.emulator.replies(channel, message["ts"]) if r.get("bot_id")],
        timeout=SLOW,
        what="confirmation",
    )[0]
    return message["ts"], reply["ts"]


def _updates(stack: Stack, channel: str, ts: str) -> list[dict[str, Any]]:
    return [
        c.params
        for c in stack.emulator.calls("chat.update")
        if c.params.get("channel") == channel and c.params.get("ts") == ts
    ]


def _blocks(params: dict[str, Any]) -> str:
    blocks = params.get("blocks")
    return blocks if isinstance(blocks, str) else json.dumps(blocks, ensure_ascii=False)


def test_captures_are_encoded_in_one_batch_per_workspace_and_confirmations_updated(
    stack: Stack, team: str
) -> None:
    drain_insights(stack.db, stack.emulator)  # nothing of other tests left in the queue
    author, pm, channel = _people(stack)
    marker = unique("flood")
    texts = _texts(4, marker)
    texts.append(texts[1])  # the fifth repeats the second, word for word
    _set_bands(stack.db, stack.team_id, 0.97, 0.9)  # only a repeat is linked; nothing is asked
    try:
        confirmations = [_react(stack, channel, author, pm, t) for t in texts]
        _run_the_flood(stack, team, channel, confirmations)
    finally:
        _set_bands(stack.db, stack.team_id, None, None)


def _run_the_flood(stack: Stack, team: str, channel: str, confirmations: list[tuple[str, str]]) -> None:
    items = {i.message_ts: i for i in items_in_channel(stack.db, channel)}
    ids = [items[ts].id for ts, _ in confirmations]
    # Confirmed at once, before any insights ran: queued, and told where the confirmation is.
    wait_for(lambda: all(t.message_ts for t in _tasks(stack.db, ids).values()), what="confirmations on tasks")
    assert {t.status for t in _tasks(stack.db, ids).values()} == {"queued"}
    with stack.db.read() as s:
        assert (
            s.scalar(
                select(func.count()).select_from(FeedbackVector).where(FeedbackVector.feedback_id.in_(ids))
            )
            == 0
        )
    other = _queue_items(
        stack.db, team, _texts(3, unique("other"))
    )  # another workspace's captures, waiting too
    assert open_insight_tasks(stack.db) == 8 and has_due_insight_tasks(stack.db)

    before = (batch.stats.batches, batch.stats.items)
    assert run_insight_batch(db=stack.db, clients=_clients(stack.emulator), settings=TFIDF) == 8
    assert (batch.stats.batches - before[0], batch.stats.items - before[1]) == (
        2,
        8,
    )  # one encode per workspace
    assert not has_due_insight_tasks(stack.db)
    assert {t.status for t in _tasks(stack.db, ids + other).values()} == {"done"}
    with stack.db.read() as s:
        stored = s.scalar(
            select(func.count())
            .select_from(FeedbackVector)
            .where(FeedbackVector.feedback_id.in_(ids + other))
        )
    assert stored == 8

    # The repeat points at the earlier capture (as if captured one at a time), never the other way round.
    first, repeat = _item(stack.db, ids[1]), _item(stack.db, ids[4])
    assert repeat.duplicate_of_id == first.id and first.duplicate_of_id is None
    update_params = _updates(stack, channel, confirmations[4][1])
    assert len(update_params) == 1
    shown = _blocks(update_params[0])
    assert "Looks like a duplicate of" in shown and f"#{first.id}" in shown and "dup_undo" in shown
    assert f"Saved as feedback *#{repeat.id}*" in shown  # the confirmation itself, kept
    with stack.db.read() as s:
        suggestion = s.scalar(select(DuplicateSuggestion).where(DuplicateSuggestion.item_id == repeat.id))
    assert suggestion is not None and (suggestion.prompt_channel_id, suggestion.prompt_ts) == (
        channel,
        confirmations[4][1],
    )
    assert "Looks like a duplicate" not in "".join(
        _blocks(p) for p in _updates(stack, channel, confirmations[1][1])
    )


def test_the_confirmation_shows_the_theme_the_item_joined(stack: Stack) -> None:
    author, pm, channel = _people(stack)
    words = f"{unique('kiosk')} the self-service kiosk prints receipts with the wrong store address"
    members = _queue_items(stack.db, stack.team_id, [words, words + " again", "Again: " + words])
    drain_insights(stack.db, stack.emulator, item_ids=members)
    with stack.db.session() as s:
        theme = themes.create(s, team_id=stack.team_id, name=unique("Kiosk receipts"), user_id=pm)
        themes.move_items(s, team_id=stack.team_id, item_ids=members, target_id=theme.id)
        theme_id, theme_name = theme.id, theme.name

    _, confirmation = _react(stack, channel, author, pm, words + " today")
    item = items_in_channel(stack.db, channel)[0]
    drain_insights(stack.db, stack.emulator, item_ids=[item.id])

    assert _item(stack.db, item.id).theme_id == theme_id
    shown = _blocks(wait_for(lambda: _updates(stack, channel, confirmation), what="confirmation updated")[-1])
    assert f"Theme: *{theme_name}*" in shown and f"#{item.id}" in shown


def test_watched_channels_link_silently(stack: Stack) -> None:
    emu = stack.emulator
    author, admin = emu.add_user(unique("cust"))["id"], emu.add_user(unique("admin"), is_admin=True)["id"]
    channel = emu.add_channel(unique("watched"), members=[author, admin])["id"]
    stack.driver.command("/prodops", f"watch <#{channel}>", user=admin, channel=channel)
    wait_for(
        lambda: channel in workspaces.SettingsCache(stack.db, ttl=0).watched_channels(stack.team_id),
        what="watched",
    )
    words = f"{unique('tram')} the tram timetable widget shows yesterday's departures after midnight"
    _set_bands(stack.db, stack.team_id, 0.97, 0.35)
    try:
        stack.driver.say(user=author, channel=channel, text=words)
        first = wait_for(lambda: items_in_channel(stack.db, channel), what="first item")[0]
        drain_insights(stack.db, stack.emulator, item_ids=[first.id])
        stack.driver.say(user=author, channel=channel, text=words)
        both = wait_for(
            lambda: len(items_in_channel(stack.db, channel)) == 2 and items_in_channel(stack.db, channel)
        )
        second = next(i for i in both if i.id != first.id)
        wait_for(lambda: emu.message(channel, second.message_ts).get("reactions"), what="the quiet mark")
        posted_before = len(emu.calls())
        drain_insights(stack.db, stack.emulator, item_ids=[second.id])
    finally:
        _set_bands(stack.db, stack.team_id, None, None)
    assert _item(stack.db, second.id).duplicate_of_id == first.id  # linked ...
    writes = [c for c in emu.calls()[posted_before:] if c.method.startswith("chat.")]
    assert writes == []  # ... and nothing said about it in the channel
    assert _tasks(stack.db, [second.id])[second.id].mode == "silent"


# -- the queue itself ------------------------------------------------------------------------------------------


def test_two_concurrent_workers_run_each_task_exactly_once(db: Database, team: str) -> None:
    ids = _queue_items(db, team, _texts(40, unique("race")))
    start = threading.Barrier(2)
    finished: list[int] = []
    errors: list[BaseException] = []

    def worker(name: str) -> None:
        own = Database(db.url)  # a process of its own: its own connections
        try:
            start.wait()
            done = 0
            while open_insight_tasks(own, ids):
                done += run_insight_batch(
                    db=own, clients=UNREACHABLE, settings=TFIDF, limit=6, worker_id=name
                )
            finished.append(done)
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            own.dispose()

    threads = [threading.Thread(target=worker, args=(f"w{n}",)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=SLOW)
    assert not errors and sum(finished) == 40
    tasks = _tasks(db, ids)
    assert {(t.status, t.attempts) for t in tasks.values()} == {
        ("done", 1)
    }  # each claimed once, by one worker
    with db.read() as s:
        assert (
            s.scalar(
                select(func.count()).select_from(FeedbackVector).where(FeedbackVector.feedback_id.in_(ids))
            )
            == 40
        )


CLAIM_AND_HANG = """
import sys, time
from bot.insights.batch import _claim
from storage.db import Database
claimed = _claim(Database(sys.argv[1]), limit=64)
print(len(claimed), flush=True)
time.sleep(120)
"""


def test_a_killed_workers_tasks_are_taken_over_after_the_lease(
    db: Database, team: str, caplog: pytest.LogCaptureFixture
) -> None:
    ids = _queue_items(db, team, _texts(5, unique("killed")))
    worker = subprocess.Popen(
        [sys.executable, "-c", CLAIM_AND_HANG, db.url],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    try:
        assert worker.stdout is not None
        assert int(worker.stdout.readline()) == 5
    finally:
        worker.kill()  # SIGKILL in the middle of its batch
        worker.wait()
    assert {t.status for t in _tasks(db, ids).values()} == {"pending"}
    assert run_insight_batch(db=db, clients=UNREACHABLE, settings=TFIDF) == 0  # its lease still runs
    worn = ids[0]
    with db.session() as s:  # time passes: the lease runs out (one task has used up its attempts)
        s.execute(
            update(InsightTask)
            .where(InsightTask.item_id.in_(ids))
            .values(lease_until=utcnow() - timedelta(seconds=1))
        )
        s.execute(update(InsightTask).where(InsightTask.item_id == worn).values(attempts=batch.MAX_ATTEMPTS))
    with caplog.at_level(logging.ERROR, logger="prodops.insights.batch"):
        assert run_insight_batch(db=db, clients=UNREACHABLE, settings=TFIDF) == 4
    tasks = _tasks(db, ids)
    assert tasks[worn].status == "dead" and f"feedback #{worn}" in caplog.text and "gave up" in caplog.text
    assert {(tasks[i].status, tasks[i].attempts) for i in ids[1:]} == {("done", 2)}
    with db.read() as s:
        assert s.get(FeedbackItem, worn) is not None  # never lost: saved, without insights


def test_a_thread_task_waits_for_its_confirmation_then_runs_anyway(db: Database, team: str) -> None:
    _set_bands(db, team, 0.99, 0.98)  # nothing to show: no Slack call is made (one would fail here)
    waiting, posted = _queue_items(
        db, team, _texts(2, unique("ts")), mode=InsightMode.thread, channel_id="C0X"
    )
    assert not has_due_insight_tasks(db)
    due_at = batch.next_insight_due_at(db)  # a worker may sleep until then
    assert due_at is not None and utcnow() < due_at <= utcnow() + batch.THREAD_WAIT
    assert run_insight_batch(db=db, clients=UNREACHABLE, settings=TFIDF) == 0  # both wait for their ts
    with db.session() as s:
        batch.set_confirmation(
            db_session=s, team_id=team, item_id=posted, channel_id="C0X", message_ts="1.0001"
        )
        s.execute(  # the other one's poster died: after THREAD_WAIT its insights run without an update
            update(InsightTask)
            .where(InsightTask.item_id == waiting)
            .values(created_at=utcnow() - batch.THREAD_WAIT - timedelta(seconds=1))
        )
    # No theme and no duplicate to show: neither confirmation is touched.
    assert run_insight_batch(db=db, clients=UNREACHABLE, settings=TFIDF) == 2
    assert {t.status for t in _tasks(db, [waiting, posted]).values()} == {TaskStatus.done.value}


def test_a_retried_private_task_neither_posts_twice_nor_suggests_twice(db: Database, team: str) -> None:
    with SlackEmulator(team_id=team) as emu:
        user = emu.add_user(unique("typist"))["id"]
        channel = emu.add_channel(unique("typed"), members=[user])["id"]
        words = f"{unique('lift')} the lift booking page times out when two removals overlap"
        _set_bands(db, team, 0.97, 0.35)
        # Private items match in their own channel: both are captured there.
        first = _queue_items(db, team, [words], channel_id=channel)[0]
        drain_insights(db, emu, item_ids=[first], settings=TFIDF)
        private = InsightMode.private
        second = _queue_items(db, team, [words], mode=private, channel_id=channel, user_id=user)[0]
        drain_insights(db, emu, item_ids=[second], settings=TFIDF)
        prompts = emu.ephemerals(channel, user=user)
        assert len(prompts) == 1 and f"#{first}" in json.dumps(prompts[0], ensure_ascii=False)

        with db.session() as s:  # the worker died after showing it, before it could mark the task done
            s.execute(
                update(InsightTask)
                .where(InsightTask.item_id == second)
                .values(status="pending", lease_until=utcnow() - timedelta(seconds=1))
            )
        assert run_insight_batch(db=db, clients=_clients(emu), settings=TFIDF) == 1
        assert len(emu.ephemerals(channel, user=user)) == 1
        assert emu.calls("chat.postMessage") == []  # no DM either
    with db.read() as s:
        suggestions = list(
            s.scalars(select(DuplicateSuggestion).where(DuplicateSuggestion.item_id == second))
        )
    assert [(x.status, x.candidate_id, x.prompt_channel_id) for x in suggestions] == [
        ("linked", first, channel)
    ]
    assert _tasks(db, [second])[second].attempts == 2


def test_enqueue_is_idempotent_per_item(db: Database, team: str) -> None:
    (item_id,) = _queue_items(db, team, ["once"])
    with db.session() as s:
        enqueue_insights(db_session=s, team_id=team, item_id=item_id, mode=InsightMode.private, user_id="U1")
    (task,) = _tasks(db, [item_id]).values()
    assert task.mode == "silent" and task.user_id is None  # the first capture's task stands
