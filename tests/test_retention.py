"""Retention: exactly what is older than the workspace's retention goes, in batches; the rest stays."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, func, select

from bot.security.retention import (
    INBOX_KEEP,
    InvalidRetention,
    apply_retention,
    parse_retention,
    prune_inbox,
    run_retention_tick,
)
from storage.db import Database
from storage.models import (
    DataRightsRecord,
    DigestOutbox,
    FeedbackItem,
    FeedbackReply,
    InboxEvent,
    MetricPoint,
    Request,
    RequestEvent,
    ShipNotice,
    SlaNotice,
    Workspace,
)
from storage.types import utcnow
from tests.conftest import Stack
from tests.helpers import unique, wait_for
from tests.test_forget import new_team, new_user, seed_workspace, team_rows

OWN_DATABASE = True  # the retention tick scans every workspace: no shared server may touch these rows
DAYS = 30


def test_parse_retention() -> None:
    assert parse_retention("365d") == 365
    assert parse_retention(" 30d ") == 30 and parse_retention("3650days") == 3650
    assert parse_retention("off") is None
    for bad, says in [("29d", "between 30d and 3650d"), ("3651d", "between"), ("1y", "number of days"),
                      ("abc", "number of days"), ("-5d", "number of days"), ("", "number of days")]:  # fmt: skip
        with pytest.raises(InvalidRetention) as error:
            parse_retention(bad)
        assert says in str(error.value)


def _count(db: Database, model: Any, team_id: str, *where: Any) -> int:
    with (db.inbox if model is InboxEvent else db).read() as s:
        return s.scalar(select(func.count()).select_from(model).where(model.team_id == team_id, *where)) or 0


def test_retention_deletes_exactly_what_is_older(db: Database) -> None:
    now = utcnow()
    cutoff = now - timedelta(days=DAYS)
    old = seed_workspace(db, new_team(), new_user(), new_user(), created_at=cutoff - timedelta(seconds=1))
    team = old.team_id  # the same workspace again, exactly at the line
    seed_workspace(db, team, new_user(), new_user(), created_at=cutoff, with_workspace=False)
    with db.session() as s:
        s.get(Workspace, team).retention_days = DAYS  # type: ignore[union-attr]
    other = seed_workspace(db, new_team(), new_user(), new_user(), created_at=cutoff - timedelta(days=400))
    other_before = team_rows(db, other.team_id)
    before = {m.__tablename__: _count(db, m, team) for m in (FeedbackItem, Request, DigestOutbox, InboxEvent)}

    counts = apply_retention(db, team, DAYS, now=now)

    # From the old seed: 3 items, the closed request (not the open ones), the 2 sent digests, the 2 handled payloads.
    assert counts["feedback_items"] == 3 and counts["requests"] == 1
    assert counts["digest_outbox"] == 2 and counts["inbox_events"] == 2
    assert counts["feedback_replies"] == 2 and counts["ship_notices"] == 3
    assert _count(db, FeedbackItem, team) == before["feedback_items"] - 3
    with db.read() as s:
        assert (
            s.scalar(select(func.min(FeedbackItem.created_at)).where(FeedbackItem.team_id == team)) == cutoff
        )
        open_old = s.scalars(
            select(Request.status).where(Request.team_id == team, Request.created_at < cutoff)
        )
        assert sorted(open_old) == ["in_progress", "new"]  # open work is kept
        assert (
            s.scalar(
                select(func.count())
                .select_from(FeedbackReply)
                .where(FeedbackReply.feedback_id == old.ids["item"])
            )
            == 0
        )
        record = s.scalars(
            select(DataRightsRecord).where(
                DataRightsRecord.team_id == team, DataRightsRecord.action == "retention"
            )
        ).one()
    with db.inbox.read() as s:
        assert s.scalars(select(InboxEvent.status).where(InboxEvent.team_id == team,
                                                          InboxEvent.received_at < cutoff)).all() == ["pending"]  # fmt: skip
    assert record.counts["deleted"] == counts and record.counts["retention_days"] == DAYS
    # metric points are aggregates: kept (checked above)
    assert _count(db, RequestEvent, team) == 4 and _count(db, SlaNotice, team) == 2
    assert _count(db, MetricPoint, team) == 2 and _count(db, DigestOutbox, team) == 2
    assert team_rows(db, other.team_id) == other_before  # a workspace without retention is untouched

    assert apply_retention(db, team, DAYS, now=now) == {}  # nothing more; no second record
    assert _count(db, DataRightsRecord, team) == 1


def test_retention_works_in_batches(db: Database) -> None:
    now = utcnow()
    team = new_team()
    with db.session() as s:
        s.add(Workspace(team_id=team, retention_days=DAYS))
        for n in range(7):
            item = FeedbackItem(team_id=team, channel_id="C1", text=f"old {n}", captured_by_user_id="U1",
                                source="command", created_at=now - timedelta(days=DAYS + 1))  # fmt: skip
            s.add(item)
            s.flush()
            s.add(ShipNotice(team_id=team, item_id=item.id, target_kind="reporter", target="U1", message="m",
                             requested_by_user_id="U2"))  # fmt: skip
        s.add(
            FeedbackItem(
                team_id=team, channel_id="C1", text="new", captured_by_user_id="U1", source="command"
            )
        )
    statements: list[str] = []

    def count_deletes(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("DELETE FROM FEEDBACK_ITEMS"):
            statements.append(statement)

    event.listen(db.engine, "before_cursor_execute", count_deletes)
    try:
        counts = apply_retention(db, team, DAYS, now=now, batch=3)
    finally:
        event.remove(db.engine, "before_cursor_execute", count_deletes)
    assert counts == {"feedback_items": 7, "ship_notices": 7}
    assert len(statements) == 3  # 3 + 3 + 1, each in its own transaction
    assert _count(db, FeedbackItem, team) == 1


def test_the_tick_applies_each_workspace_and_prunes_old_payloads(db: Database) -> None:
    now = utcnow()
    with_retention, without = new_team(), new_team()
    with db.session() as s:
        s.add_all([Workspace(team_id=with_retention, retention_days=DAYS), Workspace(team_id=without)])
        for team in (with_retention, without):
            s.add(FeedbackItem(team_id=team, channel_id="C1", text="old", captured_by_user_id="U1", source="command",
                               created_at=now - timedelta(days=DAYS + 1)))  # fmt: skip
    with db.inbox.session() as s:
        for team in (with_retention, without):
            for n, (status, age) in enumerate([("done", INBOX_KEEP + timedelta(hours=1)), ("dead", INBOX_KEEP * 2),
                                               ("failed", INBOX_KEEP * 2), ("done", INBOX_KEEP - timedelta(hours=1))]):  # fmt: skip
                s.add(InboxEvent(team_id=team, delivery_id=f"E{n}", kind="event:message", body={"n": n},
                                 status=status, lease_until=now, received_at=now - age))  # fmt: skip
    done = run_retention_tick(db, now=now)
    assert done[with_retention] == {"feedback_items": 1}  # its old payloads went with the inbox pruning
    assert without not in done and _count(db, FeedbackItem, without) == 1
    for team in (with_retention, without):
        with db.inbox.read() as s:
            kept = s.scalars(
                select(InboxEvent.status).where(InboxEvent.team_id == team).order_by(InboxEvent.id)
            ).all()
        assert kept == ["failed", "done"]  # unhandled payloads wait for the sweeper; recent ones stay
    assert prune_inbox(db, now=now) == 0


# ---- /prodops config retention through the real server ----------------------------------------------


def _answers(stack: Stack, since: int) -> list[str]:
    return [json.dumps(p, ensure_ascii=False) for p in stack.emulator.response_url_posts()[since:]]


def _say(stack: Stack, user: str, channel: str, text: str) -> str:
    since = len(stack.emulator.response_url_posts())
    assert stack.driver.command("/prodops", text, user=user, channel=channel).status == 200
    return wait_for(lambda: _answers(stack, since), what=f"answer to /prodops {text}")[0]


def _retention(stack: Stack) -> int | None:
    with stack.db.read() as s:
        workspace = s.get(Workspace, stack.team_id)
        return workspace.retention_days if workspace else None


def test_config_retention_through_slack(stack: Stack) -> None:
    admin = stack.emulator.add_user(unique("admin"), is_admin=True)["id"]
    member = stack.emulator.add_user(unique("member"))["id"]
    channel = stack.emulator.add_channel(unique("ops"), members=[admin, member])["id"]
    start = _retention(stack)
    try:
        assert "Only ProdOps admins can change the retention" in _say(
            stack, member, channel, "config retention 365d"
        )
        assert _retention(stack) == start
        assert "between 30d and 3650d" in _say(stack, admin, channel, "config retention 5d")
        assert "number of days" in _say(stack, admin, channel, "config retention forever-ish")
        assert _retention(stack) == start  # bad input changes nothing

        assert "Retention is now 365 days" in _say(stack, admin, channel, "config retention 365d")
        assert _retention(stack) == 365
        assert "*365 days*" in _say(stack, member, channel, "config")  # everyone may look
        assert "Retention is off" in _say(stack, admin, channel, "config retention off")
        assert _retention(stack) is None
    finally:
        with stack.db.session() as s:
            workspace = s.get(Workspace, stack.team_id)
            if workspace is not None:
                workspace.retention_days = start
