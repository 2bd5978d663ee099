"""Metric alerts: exact rule math, each rule firing once at the right point, cooldowns, and two workers."""

from __future__ import annotations

import json
import math
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from slack_sdk import WebClient
from sqlalchemy import select

from bot.devkit.emulator import SlackEmulator
from bot.metrics.alerts import AlertRule, evaluate, period_floor, periods_back, run_alert_tick
from bot.metrics.points import PeriodValue, Point, upsert_points
from storage.db import Database
from storage.models import Metric, MetricAlert, MetricAlertEvent, SlackOutbox
from tests.helpers import unique

OWN_DATABASE = True  # the ticks tested here scan every workspace: the shared server must not run them too

DAY1 = datetime(2026, 11, 2, tzinfo=UTC)  # a Monday
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def emu() -> Iterator[SlackEmulator]:
    """An emulator with its own workspace id, so ticks scoped to it see only this test's alerts."""
    with SlackEmulator(team_id=f"T{uuid.uuid4().hex[:10].upper()}") as emulator:
        yield emulator


def _client(emu: SlackEmulator) -> WebClient:
    return WebClient(token=emu.bot_token, base_url=emu.url)


def _metric(db: Database, team: str, *, period: str = "day", summary: str = "last", **extra: object) -> int:
    with db.session() as s:
        metric = Metric(team_id=team, key=unique("m").replace("-", "_"), name="Daily signups", unit="count",
                        direction="up_is_good", summary=summary, period=period, source="push", **extra)  # fmt: skip
        s.add(metric)
        s.flush()
        return metric.id


def _alert(db: Database, team: str, metric_id: int, channel: str, kind: str, **extra: object) -> int:
    with db.session() as s:
        alert = MetricAlert(team_id=team, metric_id=metric_id, kind=kind, channel_id=channel, **extra)
        s.add(alert)
        s.flush()
        return alert.id


def _push(db: Database, team: str, metric_id: int, *points: tuple[int, float]) -> None:
    """Points at 00:00 UTC of DAY1 + n days."""
    with db.session() as s:
        upsert_points(
            db_session=s,
            team_id=team,
            metric_id=metric_id,
            points=[Point(DAY1 + timedelta(days=n), v) for n, v in points],
        )


def _events(db: Database, alert_id: int) -> list[tuple[datetime, bool]]:
    with db.read() as s:
        rows = s.execute(
            select(MetricAlertEvent.point_ts, MetricAlertEvent.fired)
            .where(MetricAlertEvent.alert_id == alert_id)
            .order_by(MetricAlertEvent.point_ts)
        ).all()
    return [(ts, fired) for ts, fired in rows]


def _fired_days(db: Database, alert_id: int) -> list[int]:
    return [(ts - DAY1).days for ts, fired in _events(db, alert_id) if fired]


def _posts(emu: SlackEmulator, channel: str) -> list[dict]:
    return [c.params for c in emu.calls("chat.postMessage") if c.params.get("channel") == channel]


def _setup(db: Database, emu: SlackEmulator) -> tuple[str, str]:
    team = emu.team_id
    channel = emu.add_channel(unique("metrics"))["id"]
    return team, channel


# ---- pure rule math ------------------------------------------------------------------------------------


def test_above_and_below_compare_the_new_value() -> None:
    above, below = AlertRule("above", threshold=100), AlertRule("below", threshold=100)
    assert evaluate(rule=above, history=[], value=100.5).fires
    assert not evaluate(rule=above, history=[], value=100).fires  # strictly above
    assert evaluate(rule=below, history=[], value=99).fires
    assert not evaluate(rule=below, history=[], value=100).fires
    assert evaluate(rule=above, history=[], value=150).reason == "150 is above 100"
    assert not evaluate(rule=AlertRule("above"), history=[], value=1e9).fires


def test_change_is_percent_of_the_previous_period() -> None:
    rule = AlertRule("change", threshold=20, period="week")
    history = [PeriodValue("2026-11-02", 50, 1), PeriodValue("2026-11-09", 100, 3)]
    assert not evaluate(rule=rule, history=history, value=120).fires  # exactly 20%: not more
    up = evaluate(rule=rule, history=history, value=121)
    assert up.fires and up.reason == "up 21.0% vs the previous week (100 → 121)"
    assert evaluate(rule=rule, history=history, value=79).fires  # down 21%
    assert evaluate(rule=rule, history=[-100.0], value=-130).fires  # |previous| in the denominator
    none = evaluate(rule=rule, history=[], value=500)
    assert not none.fires and "no previous week" in none.reason
    zero = evaluate(rule=rule, history=[0.0], value=500)
    assert not zero.fires and "was 0" in zero.reason


def test_anomaly_uses_mean_and_sample_sd_of_the_window() -> None:
    # Trailing window of 5: 10, 12, 14, 12, 12 → mean 12, sample sd √2; k = 2 → 12 ± 2.828…
    rule = AlertRule("anomaly", window=5, k=2)
    history = [1000.0, 10, 12, 14, 12, 12]  # 1000 is outside the window
    high = 12 + 2 * math.sqrt(2)
    assert not evaluate(rule=rule, history=history, value=14.82).fires
    assert evaluate(rule=rule, history=history, value=14.83).fires
    assert not evaluate(rule=rule, history=history, value=9.18).fires
    assert evaluate(rule=rule, history=history, value=9.17).fires
    assert not evaluate(rule=rule, history=history, value=high - 1e-9).fires
    fired = evaluate(rule=rule, history=history, value=16)
    assert fired.reason.startswith("16 is +2.8σ from the mean")


def test_anomaly_needs_three_periods_and_a_flat_series_fires_on_any_change() -> None:
    rule = AlertRule("anomaly", window=8, k=3)
    short = evaluate(rule=rule, history=[1.0, 2.0], value=100)
    assert not short.fires and "at least 3" in short.reason
    assert not evaluate(rule=rule, history=[5.0, 5.0, 5.0], value=5).fires
    assert evaluate(rule=rule, history=[5.0, 5.0, 5.0], value=5.01).fires
    assert evaluate(rule=AlertRule("anomaly"), history=[1.0, 2.0, 3.0, 2.0], value=2.5).fires is False


def test_period_floor_and_back() -> None:
    wednesday = datetime(2026, 11, 4, 15, 30, tzinfo=UTC)
    assert period_floor(wednesday, "day") == datetime(2026, 11, 4, tzinfo=UTC)
    assert period_floor(wednesday, "week") == datetime(2026, 11, 2, tzinfo=UTC)
    assert period_floor(wednesday, "month") == datetime(2026, 11, 1, tzinfo=UTC)
    assert periods_back(datetime(2026, 2, 1, tzinfo=UTC), "month", 3) == datetime(2025, 11, 1, tzinfo=UTC)
    assert periods_back(datetime(2026, 11, 2, tzinfo=UTC), "week", 2) == datetime(2026, 10, 19, tzinfo=UTC)


# ---- the tick on both databases -------------------------------------------------------------------------


def test_threshold_fires_once_with_message_and_chart_then_cools_down(
    db: Database, emu: SlackEmulator
) -> None:
    team, channel = _setup(db, emu)
    metric_id = _metric(db, team, target=110.0)
    alert_id = _alert(db, team, metric_id, channel, "above", threshold=100, cooldown_minutes=24 * 60)
    client = _client(emu)

    _push(db, team, metric_id, (0, 50), (1, 80))
    first = run_alert_tick(db=db, client=client, team_id=team, now=DAY1 + timedelta(days=1, hours=9))
    assert (first.evaluated, first.fired) == (1, 0)  # a new rule starts from the latest point only
    assert [(ts - DAY1).days for ts, _ in _events(db, alert_id)] == [1]

    _push(db, team, metric_id, (2, 120))
    fired_at = DAY1 + timedelta(days=2, hours=9)
    result = run_alert_tick(db=db, client=client, team_id=team, now=fired_at)
    assert (result.evaluated, result.fired) == (1, 1)
    post = _posts(emu, channel)[0]
    text = json.dumps(post["blocks"])
    assert "Daily signups" in text and "*120*" in text and "above 100" in text
    assert "On target" in text and "/metric " in text
    files = emu.files()
    assert len(files) == 1 and files[0]["name"].endswith(".png")
    content = emu.file_content(files[0]["id"])
    assert content is not None and content.startswith(PNG_SIGNATURE)
    thread = emu.replies(channel, _events_message_ts(db, alert_id))
    assert any(m.get("files") for m in thread)  # the chart is in the alert's thread
    assert len(emu.calls("files.completeUploadExternal")) == 1

    again = run_alert_tick(db=db, client=client, team_id=team, now=fired_at + timedelta(minutes=5))
    assert (again.evaluated, again.fired) == (0, 0)  # nothing new: the point is never evaluated twice

    _push(db, team, metric_id, (3, 130))
    cooling = run_alert_tick(db=db, client=client, team_id=team, now=fired_at + timedelta(hours=23))
    assert (cooling.evaluated, cooling.fired, cooling.cooling) == (1, 0, 1)

    _push(db, team, metric_id, (4, 90), (5, 140))
    later = run_alert_tick(db=db, client=client, team_id=team, now=fired_at + timedelta(hours=24))
    assert (later.evaluated, later.fired) == (2, 1)
    assert _fired_days(db, alert_id) == [2, 5]
    assert len(_posts(emu, channel)) == 2
    with db.read() as s:
        alert = s.get(MetricAlert, alert_id)
        assert alert is not None and alert.last_fired_at == fired_at + timedelta(hours=24)


def _events_message_ts(db: Database, alert_id: int) -> str:
    with db.read() as s:
        ts = s.scalar(
            select(MetricAlertEvent.message_ts).where(
                MetricAlertEvent.alert_id == alert_id, MetricAlertEvent.fired.is_(True)
            )
        )
    assert ts
    return ts


def test_each_rule_fires_at_the_right_point(db: Database, emu: SlackEmulator) -> None:
    team, channel = _setup(db, emu)
    metric_id = _metric(db, team)
    rules = {
        "above": _alert(db, team, metric_id, channel, "above", threshold=30, cooldown_minutes=0),
        "below": _alert(db, team, metric_id, channel, "below", threshold=8, cooldown_minutes=0),
        "change": _alert(db, team, metric_id, channel, "change", threshold=50, cooldown_minutes=0),
        "anomaly": _alert(db, team, metric_id, channel, "anomaly", window=4, k=2, cooldown_minutes=0),
    }
    client = _client(emu)
    series = [10, 11, 10, 11, 10, 16, 24, 7, 40, 10]
    for day, value in enumerate(series):  # one point a day, one tick after each
        _push(db, team, metric_id, (day, value))
        run_alert_tick(db=db, client=client, team_id=team, now=DAY1 + timedelta(days=day, hours=1))
    # day 5: 16 vs window (11,10,11,10) mean 10.5 sd .577 → anomaly; +60% → change. day 6: 24 (+50%: no change)
    # but outside (10,11,10,16); day 7: 7 → below, -70.8% change, inside (11,10,16,24): mean 15.25, sd 6.40
    # → band 2.5–28.0: no anomaly. day 8: 40 → above, +471% change, anomaly. day 9: 10 → -75% change.
    assert _fired_days(db, rules["above"]) == [8]
    assert _fired_days(db, rules["below"]) == [7]
    assert _fired_days(db, rules["change"]) == [5, 7, 8, 9]
    assert _fired_days(db, rules["anomaly"]) == [5, 6, 8]
    for alert_id in rules.values():
        assert len(_events(db, alert_id)) == len(series)  # every point evaluated exactly once per rule
    assert len(_posts(emu, channel)) == 1 + 1 + 4 + 3


def test_period_rules_judge_the_summarised_period(db: Database, emu: SlackEmulator) -> None:
    team, channel = _setup(db, emu)
    metric_id = _metric(db, team, period="week", summary="sum")
    alert_id = _alert(db, team, metric_id, channel, "above", threshold=100, cooldown_minutes=0)
    client = _client(emu)
    _push(db, team, metric_id, (0, 40))
    run_alert_tick(db=db, client=client, team_id=team, now=DAY1 + timedelta(hours=1))
    _push(db, team, metric_id, (1, 40), (2, 30))  # the week so far: 80, then 110
    run_alert_tick(db=db, client=client, team_id=team, now=DAY1 + timedelta(days=2, hours=1))
    _push(db, team, metric_id, (7, 60))  # a new week: 60
    run_alert_tick(db=db, client=client, team_id=team, now=DAY1 + timedelta(days=7, hours=1))
    assert _fired_days(db, alert_id) == [2]
    assert "*110*" in json.dumps(_posts(emu, channel)[0]["blocks"])


def test_a_failed_post_still_counts_the_point_once(db: Database, emu: SlackEmulator) -> None:
    team, channel = _setup(db, emu)
    metric_id = _metric(db, team)
    alert_id = _alert(db, team, metric_id, channel, "above", threshold=1, cooldown_minutes=0)
    _push(db, team, metric_id, (0, 5))
    emu.fail("chat.postMessage", status=200, error="channel_not_found")
    result = run_alert_tick(db=db, client=_client(emu), team_id=team, now=DAY1 + timedelta(hours=1))
    assert result.fired == 1 and emu.files() == []
    assert _events(db, alert_id) == [(DAY1, True)]


@pytest.mark.parametrize("workers", [2])
def test_two_workers_send_one_message_per_point(db: Database, emu: SlackEmulator, workers: int) -> None:
    team, channel = _setup(db, emu)
    metric_ids = [_metric(db, team) for _ in range(3)]
    alert_ids = [
        _alert(db, team, metric_id, channel, "above", threshold=0, cooldown_minutes=0)
        for metric_id in metric_ids
    ]
    cooled = _alert(db, team, metric_ids[0], channel, "above", threshold=0, cooldown_minutes=60)
    for metric_id in metric_ids:
        _push(db, team, metric_id, (0, 1))
    run_alert_tick(db=db, client=_client(emu), team_id=team, now=DAY1)  # baseline: one point each
    emu.reset_calls()
    for metric_id in metric_ids:
        _push(db, team, metric_id, *[(day, float(day)) for day in range(1, 9)])
    now = DAY1 + timedelta(days=9)
    barrier = threading.Barrier(workers)
    results = []

    def worker() -> None:
        barrier.wait()
        results.append(run_alert_tick(db=db, client=_client(emu), team_id=team, now=now))

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for alert_id in [*alert_ids, cooled]:
        assert [(ts - DAY1).days for ts, _ in _events(db, alert_id)] == list(range(9))
    assert sum(r.evaluated for r in results) == 4 * 8
    assert sum(r.fired for r in results) == 3 * 8 + 1  # the cooled-down rule fires once inside its hour
    assert len(_fired_days(db, cooled)) == 2  # the baseline point and one new one
    assert len(_posts(emu, channel)) == 3 * 8 + 1
    assert len(emu.calls("files.completeUploadExternal")) == 3 * 8 + 1


# ---- delivery through the outbox ---------------------------------------------------------------------------


def _outbox(db: Database, team: str) -> list[SlackOutbox]:
    with db.read() as s:
        return list(
            s.scalars(select(SlackOutbox).where(SlackOutbox.team_id == team, SlackOutbox.kind == "alert"))
        )


def test_an_alert_slack_refused_for_now_is_retried_and_posted_exactly_once(
    db: Database, emu: SlackEmulator
) -> None:
    """A 429 and 5xx storm (and a post Slack made but answered with a 500) then success: one alert message."""
    team, channel = _setup(db, emu)
    metric_id = _metric(db, team)
    alert_id = _alert(db, team, metric_id, channel, "above", threshold=1, cooldown_minutes=0)
    _push(db, team, metric_id, (0, 5))
    client = _client(emu)
    emu.fail("chat.postMessage", status=429, retry_after=3)
    now = DAY1 + timedelta(hours=1)
    first = run_alert_tick(db=db, client=client, team_id=team, now=now)
    assert first.fired == 1 and first.delivery is not None and first.delivery.rate_limited == 1
    [row] = _outbox(db, team)
    assert (row.status, row.attempts) == ("pending", 0) and row.next_attempt_at >= now + timedelta(seconds=3)
    assert _posts(emu, channel)[0] and emu.messages(channel) == []  # tried, refused, nothing posted
    # Slack posts the retry but a proxy answers 502; then it is down a while (503s on every call).
    later = row.next_attempt_at
    emu.fail("chat.postMessage", status=502)
    run_alert_tick(db=db, client=client, team_id=team, now=later)
    assert [r.status for r in _outbox(db, team)] == ["pending"]
    client.chat_postMessage(channel=channel, text="(what Slack had stored)",
                            metadata={"event_type": "prodops_outbox", "event_payload": {"outbox_id": row.id}})  # fmt: skip
    for _ in range(3):
        emu.fail("*", status=503)
        later = _outbox(db, team)[0].next_attempt_at
        storm = run_alert_tick(db=db, client=client, team_id=team, now=later)
        assert storm.delivery is not None and storm.delivery.retried == 1 and storm.evaluated == 0
    final = run_alert_tick(db=db, client=client, team_id=team, now=_outbox(db, team)[0].next_attempt_at)
    assert final.delivery is not None and (final.delivery.sent, final.delivery.recovered) == (1, 1)
    bot_messages = [m for m in emu.messages(channel) if m.get("bot_id")]
    assert len(bot_messages) == 1  # found in history: not posted again
    [row] = _outbox(db, team)
    assert (row.status, row.message_ts, row.attempts) == ("sent", bot_messages[0]["ts"], 5)
    assert _events_message_ts(db, alert_id) == bot_messages[0]["ts"]
    assert len(emu.files()) == 1  # the chart, in the message's thread
    after = run_alert_tick(db=db, client=client, team_id=team, now=later + timedelta(hours=2))
    assert after.delivery is not None and after.delivery.due == 0


def test_an_alert_storm_then_success_posts_one_message(db: Database, emu: SlackEmulator) -> None:
    """Only 429s and 5xx (nothing posted) for a while, then Slack recovers: one message and one chart."""
    team, channel = _setup(db, emu)
    metric_id = _metric(db, team)
    alert_id = _alert(db, team, metric_id, channel, "above", threshold=1, cooldown_minutes=0)
    _push(db, team, metric_id, (0, 5))
    client = _client(emu)
    now = DAY1 + timedelta(hours=1)
    for status in (429, 500, 429, 503, 502):
        emu.fail("*", status=status, retry_after=1)
        run_alert_tick(db=db, client=client, team_id=team, now=now)
        now = max(now, _outbox(db, team)[0].next_attempt_at)
    assert emu.messages(channel) == []
    done = run_alert_tick(db=db, client=client, team_id=team, now=now)
    assert done.delivery is not None and done.delivery.sent == 1
    assert len(emu.messages(channel)) == 1 and len(emu.files()) == 1
    assert (
        _fired_days(db, alert_id) == [0]
        and _events_message_ts(db, alert_id) == emu.messages(channel)[0]["ts"]
    )
    [row] = _outbox(db, team)
    assert (row.status, row.attempts) == ("sent", 4)  # three 5xx counted, the two 429s given back


def test_a_permanent_error_fails_the_alert_message_with_its_reason(db: Database, emu: SlackEmulator) -> None:
    team, channel = _setup(db, emu)
    metric_id = _metric(db, team)
    _alert(db, team, metric_id, channel, "above", threshold=1, cooldown_minutes=0)
    _push(db, team, metric_id, (0, 5))
    emu.fail("chat.postMessage", status=200, error="not_in_channel")
    result = run_alert_tick(db=db, client=_client(emu), team_id=team, now=DAY1 + timedelta(hours=1))
    assert result.delivery is not None and result.delivery.failed == 1
    [row] = _outbox(db, team)
    assert (row.status, row.last_error) == ("failed", "not_in_channel")
    later = run_alert_tick(db=db, client=_client(emu), team_id=team, now=DAY1 + timedelta(days=1))
    assert later.delivery is not None and later.delivery.due == 0 and len(emu.calls("chat.postMessage")) == 1
