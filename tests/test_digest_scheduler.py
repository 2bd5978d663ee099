"""The digest tick: periods in the subscription's cron and time zone, one digest per period across workers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from slack_sdk import WebClient
from sqlalchemy import delete, select

from bot.devkit.emulator import SlackEmulator
from bot.digests.outbox import delivery_client
from bot.digests.scheduler import next_fire, period_for, period_label, plan_claim, run_digest_tick
from bot.digests.schemas import DigestPeriod, RenderedDigest
from storage.db import Database
from storage.models import DigestOutbox, DigestSubscription
from tests.helpers import unique

OWN_DATABASE = True  # the ticks tested here scan every workspace: the shared server must not run them too

REPO = Path(__file__).resolve().parent.parent
# Dates before the session's real "now", so subscriptions other tests create at real time are never due here.
T0 = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)  # a Monday, 09:00 UTC
WEEKLY = "0 9 * * mon"
DAILY = "0 9 * * *"
MONTHLY = "0 9 1 * *"


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


@dataclass
class Sub:
    """The parts of a subscription that the schedule functions read."""

    cron: str
    timezone: str = "UTC"
    last_period_end: datetime | None = None


def period(cron: str, tz: str, end: datetime) -> DigestPeriod:
    return period_for(Sub(cron, tz), end)  # type: ignore[arg-type]


def fires(cron: str, tz: str, after: datetime, n: int) -> list[datetime]:
    out: list[datetime] = []
    for _ in range(n):
        after = next_fire(cron=cron, timezone=tz, after=after)
        out.append(after)
    return out


# ---- schedules, labels and DST ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cron", "tz", "end", "key", "label"),
    [
        (DAILY, "UTC", utc(2026, 11, 25, 9), "2026-11-24T09:00Z/2026-11-25T09:00Z", "Tue 24 Nov 2026"),
        (WEEKLY, "UTC", utc(2026, 11, 30, 9), "2026-11-23T09:00Z/2026-11-30T09:00Z", "Mon 23 – Sun 29 Nov 2026"),
        (MONTHLY, "UTC", utc(2026, 12, 1, 9), "2026-11-01T09:00Z/2026-12-01T09:00Z", "November 2026"),
        (WEEKLY, "UTC", utc(2026, 11, 2, 9), "2026-10-26T09:00Z/2026-11-02T09:00Z", "Mon 26 Oct – Sun 1 Nov 2026"),
        (WEEKLY, "UTC", utc(2027, 1, 4, 9), "2026-12-28T09:00Z/2027-01-04T09:00Z", "Mon 28 Dec 2026 – Sun 3 Jan 2027"),
        ("0 0 * * mon", "UTC", utc(2026, 11, 30), "2026-11-23T00:00Z/2026-11-30T00:00Z", "Mon 23 – Sun 29 Nov 2026"),
        ("0 9 * * mon-fri", "UTC", utc(2026, 11, 30, 9), "2026-11-27T09:00Z/2026-11-30T09:00Z", "Fri 27 – Sun 29 Nov 2026"),
        ("0 * * * *", "UTC", utc(2026, 11, 24, 10), "2026-11-24T09:00Z/2026-11-24T10:00Z", "Tue 24 Nov 2026, 09:00–10:00"),
        ("0 9 * * *", "Asia/Tokyo", utc(2026, 11, 25, 0), "2026-11-24T00:00Z/2026-11-25T00:00Z", "Tue 24 Nov 2026"),
    ],
)  # fmt: skip
def test_periods_and_labels(cron: str, tz: str, end: datetime, key: str, label: str) -> None:
    p = period(cron, tz, end)
    assert (p.key, p.label, p.missed) == (key, label, 0)
    assert p.end == end and p.start.tzinfo is not None


def test_london_clocks_go_back_on_the_last_sunday_of_october() -> None:
    tz = "Europe/London"  # 25 Oct 2026 02:00 BST -> 01:00 GMT
    assert fires(DAILY, tz, utc(2026, 10, 23, 12), 3) == [
        utc(2026, 10, 24, 8),
        utc(2026, 10, 25, 9),
        utc(2026, 10, 26, 9),
    ]
    day = period(DAILY, tz, utc(2026, 10, 25, 9))
    assert (day.start, day.label, day.end - day.start) == (
        utc(2026, 10, 24, 8),
        "Sat 24 Oct 2026",
        timedelta(hours=25),
    )
    week = period(WEEKLY, tz, utc(2026, 10, 26, 9))
    assert (week.start, week.label) == (utc(2026, 10, 19, 8), "Mon 19 – Sun 25 Oct 2026")
    assert fires(WEEKLY, tz, utc(2026, 10, 20), 2) == [utc(2026, 10, 26, 9), utc(2026, 11, 2, 9)]
    month = period(MONTHLY, tz, utc(2026, 11, 1, 9))
    assert (month.key, month.label) == ("2026-10-01T08:00Z/2026-11-01T09:00Z", "October 2026")
    # The repeated hour fires once, like cron: 01:00 BST, then (not 01:00 GMT) 02:00 GMT.
    assert fires("0 * * * *", tz, utc(2026, 10, 24, 23, 30), 3) == [
        utc(2026, 10, 25, 0),
        utc(2026, 10, 25, 2),
        utc(2026, 10, 25, 3),
    ]
    hour = period("0 * * * *", tz, utc(2026, 10, 25, 2))
    assert hour.label == "Sun 25 Oct 2026, 01:00–02:00"


def test_new_york_clocks_go_back_on_the_first_sunday_of_november() -> None:
    tz = "America/New_York"  # 1 Nov 2026 02:00 EDT -> 01:00 EST
    assert fires(DAILY, tz, utc(2026, 10, 30, 18), 3) == [
        utc(2026, 10, 31, 13),
        utc(2026, 11, 1, 14),
        utc(2026, 11, 2, 14),
    ]
    week = period(WEEKLY, tz, utc(2026, 11, 2, 14))
    assert (week.key, week.label) == ("2026-10-26T13:00Z/2026-11-02T14:00Z", "Mon 26 Oct – Sun 1 Nov 2026")
    assert week.end - week.start == timedelta(days=7, hours=1)
    month = period(MONTHLY, tz, utc(2026, 11, 1, 14))
    assert (month.key, month.label) == ("2026-10-01T13:00Z/2026-11-01T14:00Z", "October 2026")
    # 01:30 happens twice on 1 Nov (EDT, then EST): a daily 01:30 digest fires once that day.
    assert fires("30 1 * * *", tz, utc(2026, 10, 31), 3) == [
        utc(2026, 10, 31, 5, 30),
        utc(2026, 11, 1, 5, 30),
        utc(2026, 11, 2, 6, 30),
    ]
    day = period("30 1 * * *", tz, utc(2026, 11, 2, 6, 30))
    assert (day.start, day.label) == (utc(2026, 11, 1, 5, 30), "Sun 1 Nov 2026")
    # Weekdays-only cron across the change: Friday to Monday.
    weekdays = period("0 9 * * mon-fri", tz, utc(2026, 11, 2, 14))
    assert (weekdays.start, weekdays.label) == (utc(2026, 10, 30, 13), "Fri 30 Oct – Sun 1 Nov 2026")


def test_clocks_going_forward() -> None:
    london = period(DAILY, "Europe/London", utc(2026, 3, 29, 8))  # 29 Mar 2026: 01:00 GMT -> 02:00 BST
    assert (london.start, london.end - london.start) == (utc(2026, 3, 28, 9), timedelta(hours=23))
    assert london.label == "Sat 28 Mar 2026"
    new_york = fires(
        "30 2 * * *", "America/New_York", utc(2026, 3, 7, 12), 2
    )  # 02:30 does not exist on 8 Mar
    assert new_york == [utc(2026, 3, 8, 7, 30), utc(2026, 3, 9, 6, 30)]


def test_label_for_a_period_in_another_zone() -> None:
    assert period_label(utc(2026, 11, 23, 9), utc(2026, 11, 30, 9), "UTC") == "Mon 23 – Sun 29 Nov 2026"
    # 23:00 UTC Sunday is already Monday in Tokyo.
    assert (
        period_label(utc(2026, 11, 22, 23), utc(2026, 11, 29, 23), "Asia/Tokyo") == "Mon 23 – Sun 29 Nov 2026"
    )


def test_catch_up_plans_one_digest_for_the_latest_period() -> None:
    sub = Sub(WEEKLY)
    plan = plan_claim(sub, seen=utc(2026, 11, 2, 9), now=utc(2026, 11, 25, 12))  # type: ignore[arg-type]
    assert plan.period.key == "2026-11-16T09:00Z/2026-11-23T09:00Z"
    assert plan.period.missed == 3  # the weeks ending 2, 9 and 16 Nov were not sent
    assert plan.next_fire == utc(2026, 11, 30, 9)
    on_time = plan_claim(sub, seen=utc(2026, 11, 23, 9), now=utc(2026, 11, 23, 9) + timedelta(seconds=5))  # type: ignore[arg-type]
    assert (on_time.period.key, on_time.period.missed, on_time.next_fire) == (
        "2026-11-16T09:00Z/2026-11-23T09:00Z",
        0,
        utc(2026, 11, 30, 9),
    )


# ---- the tick against a database -------------------------------------------------------------------------


@dataclass
class StubRenderer:
    """Stands in for bot.digests.render.build_digest: fixed blocks, records what it was asked for."""

    empty: bool = False
    chart: bytes | None = None
    fail: bool = False
    calls: list[tuple[int, DigestPeriod]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(
        self,
        *,
        db_session: Any,
        subscription: DigestSubscription,
        period: DigestPeriod,
        team_name: str | None = None,
        now: datetime,
    ) -> RenderedDigest:
        with self.lock:
            self.calls.append((subscription.id, period))
        if self.fail:
            raise RuntimeError("renderer bug")
        text = f"{subscription.name}: {period.label}" + (
            f" ({period.missed} missed)" if period.missed else ""
        )
        blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]
        return RenderedDigest(text=text, blocks=blocks, chart_png=self.chart, is_empty=self.empty)


@pytest.fixture
def emu() -> Iterator[SlackEmulator]:
    with SlackEmulator() as emulator:
        yield emulator


@pytest.fixture
def client(emu: SlackEmulator) -> WebClient:
    return delivery_client(emu.bot_token, emu.url)


@pytest.fixture
def team(db: Database) -> Iterator[str]:
    """A workspace whose digests are deleted afterwards, so later ticks in the session never see them."""
    team_id = unique("TDG")
    yield team_id
    with db.session() as s:
        s.execute(delete(DigestOutbox).where(DigestOutbox.team_id == team_id))
        s.execute(delete(DigestSubscription).where(DigestSubscription.team_id == team_id))


def add_sub(db: Database, team: str, channel: str, *, creator: str = "U0CREATOR", **columns: Any) -> int:
    values: dict[str, Any] = {
        "name": "Weekly digest", "cadence": "weekly", "cron": WEEKLY, "timezone": "UTC", "sections": {},
        "skip_if_empty": False, "next_run_at": T0, **columns,
    }  # fmt: skip
    with db.session() as s:
        row = DigestSubscription(team_id=team, channel_id=channel, created_by_user_id=creator, **values)
        s.add(row)
        s.flush()
        return row.id


def sub_row(db: Database, sub_id: int) -> DigestSubscription:
    with db.read() as s:
        row = s.get(DigestSubscription, sub_id)
        assert row is not None
        return row


def outbox_rows(db: Database, team: str) -> list[DigestOutbox]:
    with db.read() as s:
        return list(
            s.scalars(select(DigestOutbox).where(DigestOutbox.team_id == team).order_by(DigestOutbox.id))
        )


def test_tick_writes_and_delivers_each_period_once(
    db: Database, emu: SlackEmulator, client: WebClient, team: str
) -> None:
    channel = emu.add_channel(unique("digest"))["id"]
    sub_id = add_sub(db, team, channel)
    render = StubRenderer()
    early = run_digest_tick(db=db, client=client, now=T0 - timedelta(seconds=1), render=render)
    assert early.claimed == 0 and render.calls == []

    result = run_digest_tick(db=db, client=client, now=T0 + timedelta(seconds=5), render=render)
    assert (result.claimed, result.queued, result.missed) == (1, 1, 0)
    assert result.delivery is not None and result.delivery.sent == 1
    [(rendered_for, p)] = render.calls
    assert rendered_for == sub_id and p.key == "2026-05-25T09:00Z/2026-06-01T09:00Z"
    assert p.label == "Mon 25 – Sun 31 May 2026"
    [message] = emu.messages(channel)
    assert message["text"] == "Weekly digest: Mon 25 – Sun 31 May 2026"
    assert message["metadata"]["event_payload"]["period_key"] == p.key
    [row] = outbox_rows(db, team)
    assert (row.status, row.message_ts, row.attempts, row.period_key) == ("sent", message["ts"], 1, p.key)
    sub = sub_row(db, sub_id)
    assert sub.next_run_at == T0 + timedelta(days=7) and sub.last_period_end == T0

    again = run_digest_tick(db=db, client=client, now=T0 + timedelta(minutes=5), render=render)
    assert again.claimed == 0 and len(render.calls) == 1 and len(emu.messages(channel)) == 1


def test_catch_up_after_downtime_sends_one_digest(
    db: Database, emu: SlackEmulator, client: WebClient, team: str
) -> None:
    channel = emu.add_channel(unique("digest"))["id"]
    sub_id = add_sub(db, team, channel)
    render = StubRenderer()
    now = T0 + timedelta(days=21, hours=3)  # down for three weeks: periods ending T0, T0+7d, T0+14d, T0+21d
    result = run_digest_tick(db=db, client=client, now=now, render=render)
    assert (result.claimed, result.missed) == (1, 3)
    [(_, p)] = render.calls
    assert (p.start, p.end, p.missed) == (T0 + timedelta(days=14), T0 + timedelta(days=21), 3)
    [message] = emu.messages(channel)
    assert message["text"] == "Weekly digest: Mon 15 – Sun 21 Jun 2026 (3 missed)"
    assert sub_row(db, sub_id).next_run_at == T0 + timedelta(days=28)
    assert len(outbox_rows(db, team)) == 1


def test_skip_if_empty(db: Database, emu: SlackEmulator, client: WebClient, team: str) -> None:
    quiet = emu.add_channel(unique("quiet"))["id"]
    always = emu.add_channel(unique("always"))["id"]
    add_sub(db, team, quiet, skip_if_empty=True)
    add_sub(db, team, always, skip_if_empty=False)
    result = run_digest_tick(db=db, client=client, now=T0, render=StubRenderer(empty=True, chart=b"png"))
    assert (result.claimed, result.skipped_empty, result.queued) == (2, 1, 1)
    assert emu.messages(quiet) == [] and len(emu.messages(always)) == 1
    by_channel = {r.channel_id: r for r in outbox_rows(db, team)}
    assert (by_channel[quiet].status, by_channel[quiet].message_ts) == ("skipped", None)
    assert by_channel[always].status == "sent"
    # The quiet one still moved on to its next period.
    assert (
        run_digest_tick(db=db, client=client, now=T0 + timedelta(hours=1), render=StubRenderer()).claimed == 0
    )


def test_render_error_leaves_the_period_due(
    db: Database, emu: SlackEmulator, client: WebClient, team: str
) -> None:
    channel = emu.add_channel(unique("digest"))["id"]
    sub_id = add_sub(db, team, channel)
    failing = run_digest_tick(db=db, client=client, now=T0, render=StubRenderer(fail=True))
    assert (failing.errors, failing.claimed) == (1, 0)
    assert sub_row(db, sub_id).next_run_at == T0 and outbox_rows(db, team) == []
    ok = run_digest_tick(db=db, client=client, now=T0 + timedelta(minutes=1), render=StubRenderer())
    assert ok.claimed == 1 and len(emu.messages(channel)) == 1


def test_unusable_schedule_pauses_and_tells_the_creator(
    db: Database, emu: SlackEmulator, client: WebClient, team: str
) -> None:
    channel = emu.add_channel(unique("digest"))["id"]
    creator = emu.add_user(unique("alice"))["id"]
    sub_id = add_sub(db, team, channel, creator=creator, timezone="Mars/Olympus_Mons")
    result = run_digest_tick(db=db, client=client, now=T0, render=StubRenderer())
    assert (result.paused, result.claimed) == (1, 0)
    sub = sub_row(db, sub_id)
    assert sub.paused_at == T0 and "Mars/Olympus_Mons" in (sub.paused_reason or "")
    [dm] = emu.messages(creator)
    assert "paused" in dm["text"] and "/digest edit" in dm["text"]
    assert run_digest_tick(db=db, client=client, now=T0 + timedelta(days=1), render=StubRenderer()).due == 0


def test_a_period_claimed_again_is_not_sent_again(
    db: Database, emu: SlackEmulator, client: WebClient, team: str
) -> None:
    """E.g. a schedule edited back in time: the outbox's unique (subscription, period) keeps it to one."""
    channel = emu.add_channel(unique("digest"))["id"]
    sub_id = add_sub(db, team, channel)
    assert run_digest_tick(db=db, client=client, now=T0, render=StubRenderer()).claimed == 1
    with db.session() as s:
        row = s.get(DigestSubscription, sub_id)
        assert row is not None
        row.next_run_at = T0
    again = run_digest_tick(db=db, client=client, now=T0 + timedelta(minutes=1), render=StubRenderer())
    assert (again.claimed, again.duplicates) == (1, 1)
    assert len(emu.messages(channel)) == 1 and len(outbox_rows(db, team)) == 1


def test_paused_subscriptions_are_not_due(
    db: Database, emu: SlackEmulator, client: WebClient, team: str
) -> None:
    channel = emu.add_channel(unique("digest"))["id"]
    add_sub(db, team, channel, paused_at=T0 - timedelta(days=1), paused_reason="paused by a person")
    assert run_digest_tick(db=db, client=client, now=T0, render=StubRenderer()).due == 0
    assert emu.messages(channel) == []


def test_two_threads_racing_send_each_digest_once(
    db: Database, emu: SlackEmulator, client: WebClient, team: str
) -> None:
    channels = [emu.add_channel(unique("race"))["id"] for _ in range(40)]
    for channel in channels:
        add_sub(db, team, channel)
    render = StubRenderer()
    start = threading.Barrier(2)
    results: list[Any] = []

    def worker() -> None:
        start.wait()
        for _ in range(3):
            results.append(run_digest_tick(db=db, client=client, now=T0, render=render, batch=15))

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sum(r.claimed for r in results) == 40
    assert sum(r.delivery.sent for r in results if r.delivery) == 40
    assert [len(emu.messages(c)) for c in channels] == [1] * 40
    assert Counter(r.status for r in outbox_rows(db, team)) == {"sent": 40}


WORKER = textwrap.dedent(
    """
    import json, sys, time
    from datetime import datetime
    from bot.digests.outbox import delivery_client
    from bot.digests.scheduler import run_digest_tick
    from bot.digests.schemas import RenderedDigest
    from storage.db import Database

    url, api, token, now_iso, start_at = sys.argv[1:6]

    def render(*, db_session, subscription, period, team_name=None, now):
        text = f"{subscription.name}: {period.label}"
        return RenderedDigest(text=text, blocks=[{"type": "section", "text": {"type": "mrkdwn", "text": text}}],
                              chart_png=None, is_empty=False)

    db = Database(url)
    client = delivery_client(token, api)
    now = datetime.fromisoformat(now_iso)
    time.sleep(max(0.0, float(start_at) - time.time()))
    totals = {"claimed": 0, "lost_claims": 0, "sent": 0, "delivery_lost": 0}
    for _ in range(30):
        r = run_digest_tick(db=db, client=client, now=now, render=render, batch=40)
        totals["claimed"] += r.claimed
        totals["lost_claims"] += r.lost_claims
        totals["sent"] += r.delivery.sent
        totals["delivery_lost"] += r.delivery.lost_claims
        if r.due == 0 and r.delivery.due == 0:
            break
    print(json.dumps(totals))
    """
)


def test_two_worker_processes_send_200_digests_exactly_once(
    db: Database, emu: SlackEmulator, team: str
) -> None:
    channels = [emu.add_channel(unique("proc"))["id"] for _ in range(200)]
    for channel in channels:
        add_sub(db, team, channel)
    start_at = time.time() + 3  # both have imported everything by then, and start together
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    args = [db.url, emu.url, emu.bot_token, T0.isoformat(), str(start_at)]
    procs = [
        subprocess.Popen([sys.executable, "-c", WORKER, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]  # fmt: skip
    totals = []
    for proc in procs:
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err[-3000:]
        totals.append(json.loads(out.strip().splitlines()[-1]))
    assert sum(t["claimed"] for t in totals) == 200, totals
    assert sum(t["sent"] for t in totals) == 200, totals
    assert [len(emu.messages(c)) for c in channels] == [1] * 200
    assert len(emu.calls("chat.postMessage")) == 200
    assert Counter(r.status for r in outbox_rows(db, team)) == {"sent": 200}


def test_the_real_renderer_is_used_by_default(
    db: Database, emu: SlackEmulator, client: WebClient, team: str
) -> None:
    channel = emu.add_channel(unique("digest"))["id"]
    add_sub(db, team, channel, sections={"feedback": {"top": 3}, "requests": {}})
    result = run_digest_tick(db=db, client=client, now=T0)
    assert (result.claimed, result.errors) == (1, 0)
    assert result.delivery is not None and result.delivery.sent == 1
    [message] = emu.messages(channel)
    assert message["blocks"] and message["metadata"]["event_type"] == "prodops_digest"
