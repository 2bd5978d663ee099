"""The SLA tick: reminders at 75% and escalations at breach, once each, across restarts and two workers."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from slack_sdk import WebClient
from sqlalchemy import func, or_, select

from bot.devkit.emulator import SlackEmulator
from bot.requests import service as requests_service
from bot.requests import types as request_types
from bot.requests.schemas import RequestCreate
from bot.requests.sla_job import run_sla_tick
from storage.db import Database
from storage.models import Request, RequestStatus, RequestType, SlackOutbox, SlaNotice
from tests.helpers import unique

OWN_DATABASE = True  # the ticks tested here scan every workspace: the shared server must not run them too

MONDAY_10 = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)  # a Monday


@pytest.fixture
def emu() -> Iterator[SlackEmulator]:
    with SlackEmulator() as emulator:
        yield emulator


def _type(db: Database, team: str, owners: list[str], triage: str) -> int:
    with db.session() as s:
        row = RequestType(
            team_id=team,
            name=unique("Data pull"),
            triage_channel_id=triage,
            owners=owners,
            fields=[],
            default_priority="normal",
            # normal: first response 4h, resolution 16h (two 8h days), Mon–Fri 09:00–17:00 UTC
            sla={"normal": {"first_response_minutes": 240, "resolution_minutes": 960}},
            calendar={"timezone": "UTC", "working_days": [0, 1, 2, 3, 4], "start": "09:00", "end": "17:00"},
        )
        s.add(row)
        s.flush()
        return row.id


def _open(db: Database, team: str, type_id: int, requester: str, channel: str, at: datetime) -> int:
    with db.session() as s:
        request_type = s.get(RequestType, type_id)
        assert request_type is not None
        request, _ = requests_service.open_request(
            db_session=s,
            request_in=RequestCreate(
                team_id=team, type_id=type_id, title="Churn numbers by segment", requester_user_id=requester,
                channel_id=channel, source="command",
            ),
            request_type=request_type,
            policy=request_types.policy_for(request_type),
            now=at,
        )  # fmt: skip
        return request.id


def _notices(db: Database, request_id: int) -> list[tuple[str, str]]:
    with db.read() as s:
        rows = s.execute(
            select(SlaNotice.target, SlaNotice.kind).where(
                SlaNotice.request_id == request_id, SlaNotice.sent_at.is_not(None)
            )
        ).all()
    return sorted((t, k) for t, k in rows)


def _setup(db: Database, emu: SlackEmulator):
    owner, requester = emu.add_user(unique("owner"))["id"], emu.add_user(unique("req"))["id"]
    triage = emu.add_channel(unique("triage"), members=[owner])["id"]
    team = emu.team_id
    type_id = _type(db, team, [owner], triage)
    client = WebClient(token=emu.bot_token, base_url=emu.url)
    return team, type_id, owner, requester, triage, client


def test_due_times_are_in_business_hours(db: Database, emu: SlackEmulator) -> None:
    team, type_id, _, requester, triage, _ = _setup(db, emu)
    friday_16 = datetime(2026, 12, 4, 16, 0, tzinfo=UTC)
    request_id = _open(db, team, type_id, requester, triage, friday_16)
    with db.read() as s:
        request = s.get(Request, request_id)
        assert request is not None
        assert request.first_response_remind_at == datetime(
            2026, 12, 7, 11, 0, tzinfo=UTC
        )  # 3h of 4h: Mon 11:00
        assert request.first_response_due_at == datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
        assert request.due_at == datetime(2026, 12, 8, 16, 0, tzinfo=UTC)  # 16 business hours
        assert request.sla_next_check_at == request.first_response_remind_at


def test_reminder_then_escalation_each_once(db: Database, emu: SlackEmulator) -> None:
    team, type_id, owner, requester, triage, client = _setup(db, emu)
    request_id = _open(db, team, type_id, requester, triage, MONDAY_10)

    assert run_sla_tick(db=db, client=client, now=MONDAY_10 + timedelta(hours=2)).reminders == 0
    first = run_sla_tick(db=db, client=client, now=MONDAY_10 + timedelta(hours=3))
    again = run_sla_tick(db=db, client=client, now=MONDAY_10 + timedelta(hours=3, minutes=30))
    assert (first.reminders, again.reminders) == (1, 0)
    dms = [c for c in emu.calls("chat.postMessage") if c.params.get("channel") == owner]
    assert len(dms) == 1 and "first response" in dms[0].params["text"]

    breach = run_sla_tick(db=db, client=client, now=MONDAY_10 + timedelta(hours=4, minutes=1))
    assert breach.escalations == 1
    assert run_sla_tick(db=db, client=client, now=MONDAY_10 + timedelta(hours=5)).escalations == 0
    in_triage = [c for c in emu.calls("chat.postMessage") if c.params.get("channel") == triage]
    assert len(in_triage) == 1 and "SLA breached" in in_triage[0].params["text"]
    assert _notices(db, request_id) == [("first_response", "escalation"), ("first_response", "reminder")]


def test_a_worker_down_past_the_breach_sends_only_the_escalation(db: Database, emu: SlackEmulator) -> None:
    team, type_id, _, requester, triage, client = _setup(db, emu)
    request_id = _open(db, team, type_id, requester, triage, MONDAY_10)
    run_sla_tick(db=db, client=client, now=MONDAY_10 + timedelta(days=3))
    assert _notices(db, request_id) == [
        ("first_response", "escalation"),
        ("resolution", "escalation"),
    ]


def test_first_response_stops_its_clock(db: Database, emu: SlackEmulator) -> None:
    team, type_id, owner, requester, triage, client = _setup(db, emu)
    request_id = _open(db, team, type_id, requester, triage, MONDAY_10)
    with db.session() as s:
        request = s.get(Request, request_id)
        assert request is not None
        requests_service.assign(
            db_session=s, request=request, assignee_user_id=owner, actor=requests_service.Actor(owner),
            now=MONDAY_10 + timedelta(hours=1),
        )  # fmt: skip
    run_sla_tick(db=db, client=client, now=MONDAY_10 + timedelta(hours=5))
    assert _notices(db, request_id) == []  # no first-response notices; resolution not due yet


def test_waiting_pauses_the_resolution_clock(db: Database, emu: SlackEmulator) -> None:
    team, type_id, owner, requester, triage, client = _setup(db, emu)
    request_id = _open(db, team, type_id, requester, triage, MONDAY_10)
    actor = requests_service.Actor(owner)
    with db.session() as s:
        request = s.get(Request, request_id)
        assert request is not None
        policy = request_types.policy_for(request.type)
        requests_service.assign(
            db_session=s, request=request, assignee_user_id=owner, actor=actor, now=MONDAY_10
        )
        requests_service.change_status(
            db_session=s, request=request, to=RequestStatus.waiting, actor=actor, policy=policy,
            now=MONDAY_10 + timedelta(hours=1),
        )  # fmt: skip
        original_due = request.due_at
    # Waiting across the original due time: nothing fires.
    run_sla_tick(db=db, client=client, now=MONDAY_10 + timedelta(days=2))
    assert _notices(db, request_id) == []
    with db.session() as s:
        request = s.get(Request, request_id)
        assert request is not None
        requests_service.change_status(
            db_session=s, request=request, to=RequestStatus.in_progress, actor=actor, policy=policy,
            now=MONDAY_10 + timedelta(days=2),
        )  # fmt: skip
        assert original_due is not None and request.due_at is not None
        # Waited Mon 11:00 → Wed 10:00: 6h + 8h + 1h = 15 business hours; the due time moves by exactly that.
        waited = policy.calendar.business_time_between(
            MONDAY_10 + timedelta(hours=1), MONDAY_10 + timedelta(days=2)
        )
        assert waited == timedelta(hours=15)
        assert request.due_at == policy.calendar.add_business_time(original_due, waited)
        assert request.due_at == datetime(2026, 12, 3, 17, 0, tzinfo=UTC)


@pytest.mark.parametrize("workers", [2])
def test_two_workers_send_each_notice_once(db: Database, emu: SlackEmulator, workers: int) -> None:
    team, type_id, owner, requester, triage, client = _setup(db, emu)
    ids = [_open(db, team, type_id, requester, triage, MONDAY_10) for _ in range(20)]
    barrier = threading.Barrier(workers)

    def worker() -> None:
        barrier.wait()
        run_sla_tick(
            db=db, client=WebClient(token=emu.bot_token, base_url=emu.url), now=MONDAY_10 + timedelta(hours=3)
        )

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with db.read() as s:
        sent = s.scalar(select(func.count()).select_from(SlaNotice).where(SlaNotice.request_id.in_(ids)))
    assert sent == 20
    dms = [c for c in emu.calls("chat.postMessage") if c.params.get("channel") == owner]
    assert len(dms) == 20


def _outbox(db: Database, team: str, request_id: int) -> list[SlackOutbox]:
    """The request's SLA messages (keys ``sla:<notice id>:<channel>``)."""
    with db.read() as s:
        notices = list(s.scalars(select(SlaNotice.id).where(SlaNotice.request_id == request_id)))
        keys = [SlackOutbox.idempotency_key.startswith(f"sla:{n}:") for n in notices]
        return list(
            s.scalars(
                select(SlackOutbox)
                .where(SlackOutbox.team_id == team, SlackOutbox.kind == "sla", or_(*keys))
                .order_by(SlackOutbox.id)
            )
        )


def test_a_reminder_slack_refused_is_retried_and_sent_once(db: Database, emu: SlackEmulator) -> None:
    """A 500, then a 429: the reminder is not lost (it was only logged before) and arrives once."""
    team, type_id, owner, requester, triage, client = _setup(db, emu)
    request_id = _open(db, team, type_id, requester, triage, MONDAY_10)
    emu.fail("chat.postMessage", status=500)
    now = MONDAY_10 + timedelta(hours=3)
    first = run_sla_tick(db=db, client=client, now=now)
    assert first.reminders == 1 and first.delivery is not None and first.delivery.retried == 1
    assert _notices(db, request_id) == [("first_response", "reminder")]  # handed to the outbox: never again
    [row] = _outbox(db, team, request_id)
    assert (row.status, row.attempts, row.channel_id) == ("pending", 1, owner)
    emu.fail("chat.postMessage", status=429, retry_after=1)
    limited = run_sla_tick(db=db, client=client, now=row.next_attempt_at)
    assert limited.delivery is not None and limited.delivery.rate_limited == 1 and limited.reminders == 0
    [row] = _outbox(db, team, request_id)
    done = run_sla_tick(db=db, client=client, now=row.next_attempt_at)
    assert done.delivery is not None and done.delivery.sent == 1
    posted = [
        c for c in emu.calls("chat.postMessage") if c.params.get("channel") == owner and c.http_status == 200
    ]
    assert len(posted) == 1 and "first response" in posted[0].params["text"]
    [row] = _outbox(db, team, request_id)
    assert (row.status, row.attempts, row.message_ts) == ("sent", 2, posted[0].response["ts"])
    later = run_sla_tick(db=db, client=client, now=now + timedelta(minutes=30))
    assert later.reminders == 0 and later.delivery is not None and later.delivery.due == 0
