"""`/metric` over signed HTTP through the real server: view, list, record, share, define, help, and errors."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import select

from bot.devkit.driver import SlackDriver
from bot.metrics.points import Point, upsert_points
from storage.models import Metric, MetricPoint
from storage.types import utcnow
from tests.conftest import Stack
from tests.helpers import unique, wait_for

MONDAY = datetime(2026, 8, 31, tzinfo=UTC)  # a Monday; weeks of 2026-08-31 … 2026-11-02


def _key() -> str:
    return unique("m").replace("-", "_")


def _metric(stack: Stack, *, name: str, unit: str = "count", direction: str = "up_is_good",
            target: float | None = None, source: str = "push", period: str = "week") -> str:  # fmt: skip
    key = _key()
    with stack.db.session() as s:
        s.add(Metric(team_id=stack.team_id, key=key, name=name, unit=unit, direction=direction, target=target,
                     summary="last", period=period, source=source))  # fmt: skip
    return key


def _weekly(stack: Stack, key: str, values: list[float]) -> None:
    with stack.db.session() as s:
        metric = s.scalar(select(Metric).where(Metric.team_id == stack.team_id, Metric.key == key))
        assert metric is not None
        points = [Point(MONDAY + timedelta(weeks=i, days=2), v) for i, v in enumerate(values)]
        upsert_points(db_session=s, team_id=stack.team_id, metric_id=metric.id, points=points)


def _people(stack: Stack) -> tuple[str, str]:
    user = stack.emulator.add_user(unique("pm"))["id"]
    channel = stack.emulator.add_channel(unique("metrics"), members=[user])["id"]
    return user, channel


def _ask(stack: Stack, text: str, *, user: str, channel: str) -> dict[str, Any]:
    """Sends `/metric <text>` and returns the answer posted to its response_url."""
    fields = stack.driver.slash_command(command="/metric", text=text, user=user, channel=channel)
    assert stack.driver.send_form(fields).status == 200
    key = SlackDriver.response_key(fields)
    answer = wait_for(lambda: stack.emulator.response_url_posts(key), what=f"/metric {text}")[0]
    assert answer["response_type"] == "ephemeral"
    return answer


def _text(answer: dict[str, Any]) -> str:
    return answer["text"] + json.dumps(answer.get("blocks", []), ensure_ascii=False)


def test_help_is_the_immediate_answer(stack: Stack) -> None:
    user, channel = _people(stack)
    for text in ("help", ""):
        response = stack.driver.command("/metric", text, user=user, channel=channel)
        assert response.status == 200
        body = response.json()
        assert body["response_type"] == "ephemeral" and "/metric record <key> <value>" in body["text"]


def test_one_metric_shows_value_change_target_and_the_last_eight_periods(stack: Stack) -> None:
    user, channel = _people(stack)
    key = _metric(stack, name="Activation rate", unit="percent", target=40)
    _weekly(stack, key, [20, 21, 25, 28, 30, 31, 33, 36, 38, 41.5])

    answer = _text(_ask(stack, key, user=user, channel=channel))

    assert "*Activation rate* — *41.5%* (week of 2026-11-02)" in answer
    assert ":chart_with_upwards_trend: +3.5 pts vs the previous week (38%) — good" in answer
    assert ":white_check_mark: On target (≥ 40%)" in answer
    assert "2026-11-02  41.5%" in answer and "2026-09-14    25%" in answer
    assert "2026-09-07" not in answer  # only the last 8 periods
    assert f"/metric {key} share" in answer


def test_bad_moves_are_red_and_missing_metrics_are_named(stack: Stack) -> None:
    user, channel = _people(stack)
    key = _metric(
        stack, name="Time to first response", unit="duration", direction="down_is_good", target=3600
    )
    _weekly(stack, key, [3000, 7200])
    answer = _text(_ask(stack, key.upper(), user=user, channel=channel))
    assert (
        "*2h*" in answer
        and ":small_red_triangle: +1h 10m (+140.0%) vs the previous week (50m)" in answer
        and "— bad" in answer
    )
    assert ":warning: Above target (1h)" in answer

    empty = _metric(stack, name="Churn", source="manual")
    assert "no data yet" in _text(_ask(stack, empty, user=user, channel=channel))
    assert "There is no metric `nope_nope`" in _text(_ask(stack, "nope_nope", user=user, channel=channel))
    assert "I don't know `/metric nope_nope twice`" in _text(
        _ask(stack, "nope_nope twice", user=user, channel=channel)
    )


def test_list_shows_latest_value_target_and_source(stack: Stack) -> None:
    user, channel = _people(stack)
    revenue = _metric(stack, name="Net revenue", unit="currency", target=1_500_000)
    nps = _metric(stack, name="NPS", source="manual")
    _weekly(stack, revenue, [1_000_000, 1_250_000])

    answer = _text(_ask(stack, "list", user=user, channel=channel))

    assert f"`{revenue}` *Net revenue* — $1.25M · target $1.5M · push" in answer
    assert f"`{nps}` *NPS* — — · target — · manual" in answer


def _points(stack: Stack, key: str) -> list[tuple[datetime, float]]:
    with stack.db.read() as s:
        rows = s.execute(
            select(MetricPoint.ts, MetricPoint.value)
            .join(Metric, Metric.id == MetricPoint.metric_id)
            .where(Metric.team_id == stack.team_id, Metric.key == key)
            .order_by(MetricPoint.ts)
        ).all()
    return [(ts, value) for ts, value in rows]


def test_record_writes_a_manual_value_and_confirms(stack: Stack) -> None:
    user, channel = _people(stack)
    key = _metric(stack, name="NPS", source="manual", target=40)

    first = _text(_ask(stack, f"record {key} 38 2026-11-16", user=user, channel=channel))
    assert ":white_check_mark: Recorded *NPS* = *38* for 2026-11-16." in first
    again = _text(
        _ask(stack, f"record {key} 42.5 2026-11-16", user=user, channel=channel)
    )  # same day: replaced
    assert "*42.5*" in again
    assert _points(stack, key) == [(datetime(2026, 11, 16, tzinfo=UTC), 42.5)]

    before = utcnow()
    _ask(stack, f"record {key} 1,234", user=user, channel=channel)  # no date: now
    latest_ts, latest_value = _points(stack, key)[-1]
    assert latest_value == 1234 and before - timedelta(seconds=1) <= latest_ts <= utcnow()


def test_record_errors_are_clear(stack: Stack) -> None:
    user, channel = _people(stack)
    manual = _metric(stack, name="CSAT", unit="percent", source="manual")
    pushed = _metric(stack, name="Signups", source="push")
    tomorrow = (date.today() + timedelta(days=2)).isoformat()

    def ask(text: str) -> str:
        return _text(_ask(stack, text, user=user, channel=channel))

    assert "There is no metric `missing_one`" in ask("record missing_one 5")
    assert "`lots` isn't a number" in ask(f"record {manual} lots")
    assert "`2026-13-01` isn't a date; use YYYY-MM-DD" in ask(f"record {manual} 5 2026-13-01")
    assert "`2026/11/01` isn't a date" in ask(f"record {manual} 5 2026/11/01")
    assert "is in the future" in ask(f"record {manual} 5 {tomorrow}")
    assert "gets its numbers from its *push* source" in ask(f"record {pushed} 5")
    assert "Use `/metric record <key> <value> [YYYY-MM-DD]`" in ask("record")
    assert "Use `/metric record" in ask(f"record {manual}")
    assert _points(stack, manual) == [] and _points(stack, pushed) == []
    assert "*12.5%*" in ask(f"record {manual} 12.5% 2026-11-02")


def test_share_posts_the_summary_and_chart_to_the_channel(stack: Stack) -> None:
    user, channel = _people(stack)
    key = _metric(stack, name="Weekly active accounts", target=500)
    _weekly(stack, key, [410, 430, 470, 520])
    uploads = len(stack.emulator.calls("files.completeUploadExternal"))

    answer = _text(_ask(stack, f"{key} share", user=user, channel=channel))

    assert f"Shared *Weekly active accounts* with its chart in <#{channel}>" in answer
    assert len(stack.emulator.calls("files.completeUploadExternal")) == uploads + 1
    shared = [m for m in stack.emulator.messages(channel) if m.get("files")]
    assert len(shared) == 1
    assert "*Weekly active accounts* — *520*" in shared[0]["text"] and f"<@{user}>" in shared[0]["text"]
    file = shared[0]["files"][0]
    assert file["name"] == f"{key}.png"
    content = stack.emulator.file_content(file["id"])
    assert content is not None and content.startswith(b"\x89PNG\r\n\x1a\n")

    outside = stack.emulator.add_channel(unique("no-bot"), members=[user], bot_is_member=False)["id"]
    refused = _text(_ask(stack, f"{key} share", user=user, channel=outside))
    assert "I couldn't post in this channel (`not_in_channel`)" in refused
    empty = _metric(stack, name="Empty")
    assert "has no values yet" in _text(_ask(stack, f"{empty} share", user=user, channel=channel))


def test_define_opens_the_modal_for_admins_only(stack: Stack) -> None:
    user, channel = _people(stack)
    assert "Only ProdOps admins can define metrics" in _text(
        _ask(stack, "define", user=user, channel=channel)
    )
    admin = stack.emulator.add_user(unique("admin"), is_admin=True)["id"]
    opened = len(stack.emulator.calls("views.open"))
    stack.driver.command("/metric", "define", user=admin, channel=channel)
    wait_for(lambda: stack.emulator.calls("views.open")[opened:], what="define modal")
