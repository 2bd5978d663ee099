"""Small test helpers."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import select

from storage.db import Database
from storage.models import FeedbackItem, InboxEvent

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
    with db.session() as s:
        return list(s.scalars(select(InboxEvent).where(InboxEvent.delivery_id == delivery_id)))
