"""Request metrics on a hand-built set of requests at fixed times, and `/request stats` / `/request list` over HTTP."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bot.requests import metrics
from storage.db import Database
from storage.models import Request, RequestType
from tests.conftest import Stack
from tests.helpers import unique, wait_for

H = timedelta(hours=1)
M = timedelta(minutes=1)
ALWAYS = {"timezone": "UTC", "working_days": [0, 1, 2, 3, 4, 5, 6], "start": "00:00", "end": "00:00"}
OFFICE = {"timezone": "UTC", "working_days": [0, 1, 2, 3, 4], "start": "09:00", "end": "17:00"}
START = datetime(2026, 3, 2, tzinfo=UTC)  # a Monday
END = datetime(2026, 3, 9, tzinfo=UTC)
NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def at(day: int, hour: int = 0, minute: int = 0, month: int = 3) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=UTC)


def _type(db: Database, team_id: str, name: str, calendar: dict[str, Any]) -> int:
    with db.session() as s:
        row = RequestType(team_id=team_id, name=name, owners=[], fields=[], sla={}, calendar=calendar)
        s.add(row)
        s.flush()
        return row.id


def _request(db: Database, team_id: str, type_id: int, **columns: Any) -> int:
    values: dict[str, Any] = {
        "title": unique("request"),
        "requester_user_id": "UASKER",
        "channel_id": "C0METRICS",
        "source": "command",
        "status": "new",
        "priority": "normal",
        **columns,
    }
    with db.session() as s:
        row = Request(team_id=team_id, type_id=type_id, **values)
        s.add(row)
        s.flush()
        return row.id


@pytest.fixture
def scenario(db: Database) -> tuple[str, int, int]:
    """Type A runs 24x7, type B Mon-Fri 09:00-17:00 UTC; the period is the week of Monday 2 March 2026."""
    team = unique("TMET")
    a = _type(db, team, "Always on", ALWAYS)
    b = _type(db, team, "Office hours", OFFICE)
    add = lambda type_id, **kw: _request(db, team, type_id, **kw)  # noqa: E731
    # a1: answered in 30m, done in 4h, 2h after its due time (breached).
    add(a, assignee_user_id="U1", status="done", created_at=at(2, 10), first_response_at=at(2, 10, 30),
        resolved_at=at(2, 14), due_at=at(2, 12))  # fmt: skip
    # a2: answered in 1h, done in 2h, on time.
    add(a, assignee_user_id="U1", status="done", created_at=at(3, 9), first_response_at=at(3, 10),
        resolved_at=at(3, 11), due_at=at(3, 13))  # fmt: skip
    # a3: answered in 2h, declined after 8h, no due time (not judged).
    add(a, assignee_user_id="U2", status="declined", created_at=at(4, 9), first_response_at=at(4, 11),
        resolved_at=at(4, 17))  # fmt: skip
    # a4: answered in 4h, still in progress, due on Friday: overdue now and breached in the period.
    add(a, assignee_user_id="U2", status="in_progress", created_at=at(5, 9), first_response_at=at(5, 13),
        due_at=at(6, 9))  # fmt: skip
    # a5: unanswered, unassigned, due after now.
    add(a, status="new", created_at=at(6, 9), due_at=at(11, 9))
    # a6: waiting with a past due time: open, but neither overdue nor judged.
    add(a, assignee_user_id="U1", status="waiting", created_at=at(7, 10), due_at=at(8))
    # a7: opened in February, answered then, done in the period 11 days later, late.
    add(a, assignee_user_id="U2", status="done", created_at=at(20, 9, month=2),
        first_response_at=at(20, 10, month=2), resolved_at=at(3, 9), due_at=at(21, month=2))  # fmt: skip
    # a8: opened in the period, answered and closed after it.
    add(a, assignee_user_id="U1", status="done", created_at=at(8, 10), first_response_at=at(9, 9),
        resolved_at=at(9, 10), due_at=at(10))  # fmt: skip
    # a9: all of it before the period.
    add(a, assignee_user_id="U1", status="done", created_at=at(1, month=2), first_response_at=at(1, 1, month=2),
        resolved_at=at(2, month=2), due_at=at(1, 2, month=2))  # fmt: skip
    # b1: Thu 16:00 → answered Fri 10:00 (2h of office time), done Sat (9h of office time), due Fri 17:00.
    add(b, assignee_user_id="U1", status="done", created_at=at(5, 16), first_response_at=at(6, 10),
        resolved_at=at(7, 12), due_at=at(6, 17))  # fmt: skip
    # b2: Mon 08:00 → answered 09:30 (30m of office time), in progress, due later.
    add(b, assignee_user_id="U3", status="in_progress", created_at=at(2, 8), first_response_at=at(2, 9, 30),
        due_at=at(20, 9))  # fmt: skip
    return team, a, b


def _metrics(db: Database, team: str, **kw: Any) -> metrics.RequestMetrics:
    with db.read() as s:
        return metrics.request_metrics(db_session=s, team_id=team, start=START, end=END, now=NOW, **kw)


def _row(row: metrics.MetricsRow) -> tuple[Any, ...]:
    return (
        row.opened,
        row.closed,
        row.open_now,
        row.overdue_now,
        row.judged,
        row.breached,
        row.breach_rate,
        row.first_response.p50,
        row.first_response.p90,
        row.resolution.p50,
        row.resolution.p90,
    )


def test_totals_percentiles_and_breach_rate(db: Database, scenario: tuple[str, int, int]) -> None:
    team, _, _ = scenario
    found = _metrics(db, team)

    # first responses: 30m 30m 1h 2h 2h 4h; resolutions: 2h 4h 8h 9h 264h (nearest rank).
    assert _row(found.total) == (9, 5, 4, 1, 5, 4, 0.8, 1 * H, 4 * H, 8 * H, 264 * H)
    assert (found.total.first_response.count, found.total.resolution.count) == (6, 5)


def test_split_per_type_and_per_assignee(db: Database, scenario: tuple[str, int, int]) -> None:
    team, a, b = scenario
    found = _metrics(db, team)

    assert [(t.type_id, t.type_name) for t in found.by_type] == [(a, "Always on"), (b, "Office hours")]
    assert _row(found.by_type[0]) == (7, 4, 3, 1, 4, 3, 0.75, 1 * H, 4 * H, 4 * H, 264 * H)
    assert _row(found.by_type[1]) == (2, 1, 1, 0, 1, 1, 1.0, 30 * M, 2 * H, 9 * H, 9 * H)
    by_assignee = {row.assignee_user_id: _row(row) for row in found.by_assignee}
    assert [row.assignee_user_id for row in found.by_assignee] == ["U1", "U2", "U3", None]
    assert by_assignee["U1"] == (5, 3, 1, 0, 3, 2, 2 / 3, 1 * H, 2 * H, 4 * H, 9 * H)
    assert by_assignee["U2"] == (2, 2, 1, 1, 2, 2, 1.0, 2 * H, 4 * H, 8 * H, 264 * H)
    assert by_assignee["U3"] == (1, 0, 1, 0, 0, 0, None, 30 * M, 30 * M, None, None)
    assert by_assignee[None] == (1, 0, 1, 0, 0, 0, None, None, None, None, None)


def test_filters_by_type_and_assignee(db: Database, scenario: tuple[str, int, int]) -> None:
    team, a, b = scenario
    whole = _metrics(db, team)

    only_b = _metrics(db, team, type_id=b)
    assert _row(only_b.total) == _row(whole.by_type[1])
    assert [t.type_id for t in only_b.by_type] == [b]
    only_u2 = _metrics(db, team, assignee_user_id="U2")
    assert _row(only_u2.total) == _row(next(r for r in whole.by_assignee if r.assignee_user_id == "U2"))
    assert [t.type_id for t in only_u2.by_type] == [a]


def test_empty_period_has_no_rates(db: Database, scenario: tuple[str, int, int]) -> None:
    team, _, _ = scenario
    with db.read() as s:
        found = metrics.request_metrics(
            db_session=s, team_id=team, start=at(1, month=1), end=at(8, month=1), now=NOW
        )
    # Nothing happened in January, but the open requests are open now.
    assert _row(found.total) == (0, 0, 4, 1, 0, 0, None, None, None, None, None)
    assert found.model_dump()["total"]["breach_rate"] is None


def test_percentile_is_nearest_rank() -> None:
    values = [timedelta(minutes=m) for m in range(30, 0, -1)]
    assert metrics.percentile(values, 90) == timedelta(minutes=27)
    assert metrics.percentile(values, 50) == timedelta(minutes=15)
    assert metrics.percentile([H], 90) == H
    assert metrics.percentile([], 50) is None


def test_listing_orders_overdue_first_then_due_then_closed(
    db: Database, scenario: tuple[str, int, int]
) -> None:
    team, _, b = scenario

    def titles_of(query: metrics.RequestListQuery, **kw: Any) -> tuple[list[tuple[str, Any]], bool]:
        with db.read() as s:
            found, more = metrics.list_requests(db_session=s, team_id=team, query=query, now=NOW, **kw)
            return [(r.status, r.due_at) for r in found], more

    open_page, more = titles_of(metrics.RequestListQuery(), page_size=3)
    assert open_page == [("in_progress", at(6, 9)), ("waiting", at(8)), ("new", at(11, 9))] and more
    assert titles_of(metrics.RequestListQuery(), page=2, page_size=3) == ([("in_progress", at(20, 9))], False)
    mine, _ = titles_of(metrics.RequestListQuery(assignee_user_id="U1", open_only=False))
    # open first, then closed by resolution time, newest first: a8, b1, a2, a1, a9.
    assert mine == [("waiting", at(8)), ("done", at(10)), ("done", at(6, 17)), ("done", at(3, 13)),
                    ("done", at(2, 12)), ("done", at(1, 2, month=2))]  # fmt: skip
    overdue, _ = titles_of(metrics.RequestListQuery(overdue_only=True))
    assert overdue == [("in_progress", at(6, 9))]
    with db.read() as s:
        assert (
            metrics.count_requests(db_session=s, team_id=team, query=metrics.RequestListQuery(), now=NOW) == 4
        )
        typed = metrics.RequestListQuery(type_id=b, open_only=False)
        assert metrics.count_requests(db_session=s, team_id=team, query=typed, now=NOW) == 2


# ---- over HTTP --------------------------------------------------------------------------------------------


def _command(stack: Stack, text: str, user: str, channel: str) -> list[dict[str, Any]]:
    payload = stack.driver.slash_command(command="/request", text=text, user=user, channel=channel)
    assert stack.driver.send_form(payload).status == 200
    key = stack.driver.response_key(payload)
    return wait_for(lambda: stack.emulator.response_url_posts(key), what=f"answer to /request {text}")


def _texts(blocks: list[dict[str, Any]]) -> str:
    return json.dumps(blocks, ensure_ascii=False)


def test_request_stats_compares_two_weeks(stack: Stack) -> None:
    emu = stack.emulator
    user = emu.add_user(unique("lead"))["id"]
    channel = emu.add_channel(unique("ops"), members=[user])["id"]
    name = unique("Aaa stats")
    type_id = _type(stack.db, stack.team_id, name, ALWAYS)
    now = datetime.now(UTC)
    add = lambda **kw: _request(stack.db, stack.team_id, type_id, **kw)  # noqa: E731
    d3, d2, d10 = now - timedelta(days=3), now - timedelta(days=2), now - timedelta(days=10)
    add(status="done", created_at=d3, first_response_at=d3 + H, resolved_at=d3 + 5 * H, due_at=d3 + 4 * H)
    add(
        status="done", created_at=d2, first_response_at=d2 + 30 * M, resolved_at=d2 + 3 * H, due_at=d2 + 8 * H
    )
    add(status="in_progress", created_at=now - timedelta(days=1), due_at=now - H)
    add(status="done", created_at=d10, first_response_at=d10 + 2 * H, resolved_at=d10 + 24 * H,
        due_at=d10 + 12 * H)  # fmt: skip

    answer = _command(stack, f"stats {name.upper()}", user, channel)[0]

    assert answer["response_type"] == "ephemeral"
    fields = [f["text"] for f in answer["blocks"][1]["fields"]]
    assert fields == [
        "*Opened*\n3  _(before: 1)_",
        "*Closed*\n2  _(before: 1)_",
        "*Open now*\n1",
        "*Overdue now*\n1",
        "*First response p50 / p90*\n30m / 1h  _(before: 2h / 2h)_",
        "*Resolution p50 / p90*\n3h / 5h  _(before: 1d / 1d)_",
        "*SLA breach rate*\n67% (2 of 3)  _(before: 100% (1 of 1))_",
    ]
    assert name in answer["text"]

    everything = _command(stack, "stats", user, channel)[0]
    assert "Per type" in _texts(everything["blocks"])
    assert f"*{name}*: opened 3 · closed 2 · open 1 · overdue 1" in _texts(everything["blocks"])

    unknown = _command(stack, "stats No such type", user, channel)[0]
    assert "No request type is called" in _texts(unknown["blocks"])


def test_request_list_pages_and_filters(stack: Stack) -> None:
    emu = stack.emulator
    asker, worker = emu.add_user(unique("asker"))["id"], emu.add_user(unique("worker"))["id"]
    channel = emu.add_channel(unique("ops"), members=[asker, worker])["id"]
    triage = emu.add_channel(unique("triage"), members=[worker])["id"]
    name = unique("Listed")
    type_id = _type(stack.db, stack.team_id, name, ALWAYS)
    now = datetime.now(UTC)
    ids = [
        _request(stack.db, stack.team_id, type_id, requester_user_id=asker, channel_id=channel,
                 created_at=now - timedelta(hours=20 - i), due_at=now + timedelta(days=i + 1),
                 triage_channel_id=triage, triage_ts=f"1700000000.{i:06d}", title=f"Thing {i}")
        for i in range(12)
    ]  # fmt: skip
    late = _request(stack.db, stack.team_id, type_id, requester_user_id=asker, assignee_user_id=worker,
                    status="in_progress", created_at=now - timedelta(days=2), due_at=now - H,
                    title="Late <thing> & co")  # fmt: skip

    page1 = _command(stack, "list mine", asker, channel)[0]
    text = _texts(page1["blocks"])
    assert page1["response_type"] == "ephemeral" and "Requests you asked for" in text
    sections = [b for b in page1["blocks"] if b["type"] == "section"][1:]
    assert len(sections) == 10
    assert sections[0]["text"]["text"].startswith(f"*#{late} Late &lt;thing&gt; &amp; co*")
    assert f"<@{worker}>" in sections[0]["text"]["text"] and "In progress" in sections[0]["text"]["text"]
    assert f"<https://slack.com/app_redirect?channel={triage}|#{ids[0]} Thing 0>" in text
    buttons = page1["blocks"][-1]["elements"]
    assert [b["text"]["text"] for b in buttons] == ["Older →"]

    click = stack.driver.block_actions(
        user=asker,
        actions=[{k: buttons[0][k] for k in ("type", "action_id", "value")}],
        channel=channel,
        message={"ts": stack.driver.new_ts(), "blocks": page1["blocks"]},
    )
    assert stack.driver.send_interaction(click).status == 200
    page2 = wait_for(
        lambda: stack.emulator.response_url_posts(stack.driver.response_key(click)), what="page 2"
    )[0]
    assert page2["replace_original"] is True and "page 2" in _texts(page2["blocks"])
    assert [b["text"]["text"] for b in page2["blocks"][-1]["elements"]] == ["← Newer"]
    assert f"#{ids[11]} Thing 11" in _texts(page2["blocks"])
    assert len([b for b in page2["blocks"] if b["type"] == "section"]) == 1 + 3

    assigned = _texts(_command(stack, "list assigned", worker, channel)[0]["blocks"])
    assert f"#{late} " in assigned and "Thing 0" not in assigned
    typed = _texts(_command(stack, f"list type {name}", worker, channel)[0]["blocks"])
    assert f"Requests of type {name}" in typed and f"#{late} " in typed
    nothing = _texts(_command(stack, "list mine", worker, channel)[0]["blocks"])
    assert "Nothing here" in nothing
    wrong = _texts(_command(stack, "list everything please", worker, channel)[0]["blocks"])
    assert "Use `/request list`" in wrong
