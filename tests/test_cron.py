"""Cron as people write it: 1 is Monday (APScheduler 3 alone would read Tuesday)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bot.cron import CronError, cron_trigger, standard_crontab

SUNDAY = datetime(2026, 11, 29, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("expr", "weekday"),
    [
        ("0 9 * * 1", "Mon"),
        ("0 9 * * 0", "Sun"),
        ("0 9 * * 7", "Sun"),
        ("0 9 * * 5", "Fri"),
        ("0 9 * * fri", "Fri"),
    ],
)
def test_numeric_weekdays_follow_standard_cron(expr: str, weekday: str) -> None:
    fire = cron_trigger(expr, "UTC").get_next_fire_time(None, SUNDAY)
    assert fire is not None and fire.strftime("%a") == weekday


def test_ranges_lists_and_steps() -> None:
    assert standard_crontab("0 9 * * 1-5") == "0 9 * * mon,tue,wed,thu,fri"
    assert standard_crontab("0 9 * * 0,6") == "0 9 * * sat,sun"
    assert standard_crontab("0 9 * * */2") == "0 9 * * tue,thu,sat,sun"
    assert standard_crontab("0 9 * * 0-6") == "0 9 * * *"
    assert standard_crontab("*/15 * 1 * *") == "*/15 * 1 * *"


@pytest.mark.parametrize("expr", ["0 9 * *", "0 9 * * 8", "0 9 * * 1-9", "0 9 * * 5-1"])
def test_bad_expressions_are_refused(expr: str) -> None:
    with pytest.raises(CronError):
        standard_crontab(expr)
