"""Small test helpers."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, TypeVar

from sqlalchemy import func, select

from bot.insights.batch import TaskStatus, run_insight_batch
from bot.settings import Settings
from bot.slack_client import TeamClients
from storage.db import Database
from storage.models import FeedbackItem, InboxEvent, InsightTask

if TYPE_CHECKING:
    from bot.devkit.emulator import SlackEmulator

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.05, what: str = "") -> T:
    """Polls until predicate() is truthy and returns its value; fails the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


def unique(prefix: str) -> str:
    """A short unique name, so tests sharing one server never see each other's data."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def items_in_channel(db: Database, channel_id: str) -> list[FeedbackItem]:
    """Feedback items captured in one channel."""
    with db.session() as s:
        return list(s.scalars(select(FeedbackItem).where(FeedbackItem.channel_id == channel_id)))


def inbox_rows(db: Database, delivery_id: str) -> list[InboxEvent]:
    """Inbox rows for one delivery id."""
    with db.inbox.read() as s:
        return list(s.scalars(select(InboxEvent).where(InboxEvent.delivery_id == delivery_id)))


def open_insight_tasks(db: Database, item_ids: Collection[int] | None = None) -> int:
    """Insight tasks not finished yet (of `item_ids`, or all)."""
    query = select(func.count()).select_from(InsightTask)
    query = query.where(InsightTask.status.in_([TaskStatus.queued.value, TaskStatus.pending.value]))
    if item_ids is not None:
        query = query.where(InsightTask.item_id.in_(list(item_ids)))
    with db.read() as s:
        return int(s.scalar(query) or 0)


def drain_insights(
    db: Database,
    emulator: SlackEmulator,
    *,
    item_ids: Collection[int] | None = None,
    settings: Settings | None = None,
    timeout: float = 30.0,
) -> int:
    """Does the worker's insights job here: runs batches until the tasks of `item_ids` (or all) have finished
    (whoever finished them); returns how many this call finished."""
    clients = TeamClients(token=emulator.bot_token, base_url=emulator.url)
    settings = settings or Settings(PRODOPS_SIMILARITY_BACKEND="tfidf")
    deadline = time.monotonic() + timeout
    finished = 0
    while True:
        finished += run_insight_batch(db=db, clients=clients, settings=settings, worker_id="tests")
        if not open_insight_tasks(db, item_ids):
            return finished
        if time.monotonic() > deadline:
            raise AssertionError(f"insight tasks still open after {timeout}s")
        time.sleep(0.05)
