"""SLA clock: due dates, reminders, waiting pauses, remaining time and its rendering."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from bot.requests.calendar import ALWAYS_OPEN, BusinessCalendar
from bot.requests.sla import (
    Priority,
    SlaPolicy,
    SlaTarget,
    first_response_due,
    humanize,
    remaining,
    reminder_at,
    resolution_due,
    resume_after_waiting,
)

H = timedelta(hours=1)
M = timedelta(minutes=1)
OFFICE = BusinessCalendar()  # Mon-Fri 09:00-17:00 UTC
POLICY = SlaPolicy(
    calendar=OFFICE,
    targets={
        Priority.urgent: SlaTarget(first_response=30 * M, resolution=4 * H),
        Priority.high: SlaTarget(first_response=2 * H, resolution=16 * H),
        Priority.normal: SlaTarget(first_response=8 * H, resolution=None),
        Priority.low: SlaTarget(),
    },
)


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, micro: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, micro, tzinfo=UTC)


FRIDAY_4PM = utc(2024, 1, 12, 16)


# --- model --------------------------------------------------------------------------------------


def test_priority_values() -> None:
    assert [p.value for p in Priority] == ["urgent", "high", "normal", "low"]
    assert Priority("high") is Priority.high and Priority.high == "high"


def test_targets_must_be_positive() -> None:
    with pytest.raises(ValidationError, match="positive"):
        SlaTarget(first_response=timedelta(0))
    with pytest.raises(ValidationError, match="positive"):
        SlaTarget(resolution=-H)


@pytest.mark.parametrize("fraction", [0, -0.5, 1.5])
def test_reminder_fraction_is_validated(fraction: float) -> None:
    with pytest.raises(ValidationError):
        SlaPolicy(calendar=OFFICE, targets={}, reminder_fraction=fraction)


def test_policy_parses_from_plain_data() -> None:
    policy = SlaPolicy.model_validate(
        {
            "calendar": {"timezone": "Europe/Berlin", "holidays": ["2024-12-25"]},
            "targets": {"urgent": {"first_response": "PT30M", "resolution": 14400}},
        }
    )
    assert policy.target(Priority.urgent, "first_response") == 30 * M
    assert policy.target(Priority.urgent, "resolution") == 4 * H
    assert policy.target(Priority.low, "resolution") is None


# --- due dates and reminders ----------------------------------------------------------------------


def test_due_dates_run_in_business_time() -> None:
    assert first_response_due(POLICY, Priority.urgent, FRIDAY_4PM) == utc(2024, 1, 12, 16, 30)
    assert resolution_due(POLICY, Priority.urgent, FRIDAY_4PM) == utc(2024, 1, 15, 12)
    assert first_response_due(POLICY, Priority.high, FRIDAY_4PM) == utc(2024, 1, 15, 10)
    assert resolution_due(POLICY, Priority.high, FRIDAY_4PM) == utc(2024, 1, 16, 16)


def test_created_outside_hours_starts_at_next_opening() -> None:
    saturday = utc(2024, 1, 13, 10)
    assert first_response_due(POLICY, Priority.urgent, saturday) == utc(2024, 1, 15, 9, 30)


def test_due_exactly_at_closing() -> None:
    assert first_response_due(POLICY, Priority.normal, utc(2024, 1, 15, 9)) == utc(2024, 1, 15, 17)


def test_reminder_at_75_percent_in_business_time() -> None:
    assert reminder_at(POLICY, Priority.urgent, FRIDAY_4PM, "resolution") == utc(2024, 1, 15, 11)
    assert resolution_due(POLICY, Priority.urgent, FRIDAY_4PM) == utc(2024, 1, 15, 12)
    assert reminder_at(POLICY, Priority.high, FRIDAY_4PM, "first_response") == utc(2024, 1, 15, 9, 30)


def test_reminder_uses_the_policy_fraction() -> None:
    half = POLICY.model_copy(update={"reminder_fraction": 0.5})
    assert reminder_at(half, Priority.urgent, FRIDAY_4PM, "resolution") == utc(2024, 1, 15, 10)


def test_no_target_means_none_everywhere() -> None:
    for target in ("first_response", "resolution"):
        assert reminder_at(POLICY, Priority.low, FRIDAY_4PM, target) is None
    assert first_response_due(POLICY, Priority.low, FRIDAY_4PM) is None
    assert resolution_due(POLICY, Priority.low, FRIDAY_4PM) is None
    assert resolution_due(POLICY, Priority.normal, FRIDAY_4PM) is None
    assert reminder_at(POLICY, Priority.normal, FRIDAY_4PM, "resolution") is None


def test_priority_missing_from_targets_has_no_target() -> None:
    sparse = SlaPolicy(calendar=OFFICE, targets={Priority.urgent: SlaTarget(resolution=H)})
    assert resolution_due(sparse, Priority.low, FRIDAY_4PM) is None
    assert first_response_due(sparse, Priority.urgent, FRIDAY_4PM) is None


def test_always_open_policy_counts_wall_clock_time() -> None:
    policy = SlaPolicy(calendar=ALWAYS_OPEN, targets={Priority.urgent: SlaTarget(resolution=4 * H)})
    assert resolution_due(policy, Priority.urgent, FRIDAY_4PM) == utc(2024, 1, 12, 20)
    assert reminder_at(policy, Priority.urgent, FRIDAY_4PM, "resolution") == utc(2024, 1, 12, 19)


# --- waiting pauses -------------------------------------------------------------------------------


def test_waiting_within_a_day_pushes_due_by_the_pause() -> None:
    due = utc(2024, 1, 15, 14)
    pause = (utc(2024, 1, 15, 10), utc(2024, 1, 15, 11, 30))
    assert resume_after_waiting(POLICY, due, *pause) == utc(2024, 1, 15, 15, 30)
    late_due = utc(2024, 1, 15, 16)  # the pushed due date spills into Tuesday morning
    assert resume_after_waiting(POLICY, late_due, *pause) == utc(2024, 1, 16, 9, 30)


def test_waiting_over_a_night_only_counts_business_time() -> None:
    due = utc(2024, 1, 16, 12)  # Tue 12:00
    # Waiting Mon 16:00 -> Tue 10:00 is 2h of business time (1h Monday, 1h Tuesday).
    assert resume_after_waiting(POLICY, due, utc(2024, 1, 15, 16), utc(2024, 1, 16, 10)) == utc(
        2024, 1, 16, 14
    )


def test_waiting_over_a_weekend_only_counts_business_time() -> None:
    due = utc(2024, 1, 15, 12)  # Mon 12:00
    # Waiting Fri 15:00 -> Mon 11:00 is 4h of business time (2h Friday, 2h Monday).
    assert resume_after_waiting(POLICY, due, utc(2024, 1, 12, 15), utc(2024, 1, 15, 11)) == utc(
        2024, 1, 15, 16
    )


def test_waiting_entirely_outside_hours_changes_nothing() -> None:
    due = utc(2024, 1, 15, 17)  # due exactly at Monday's closing
    assert resume_after_waiting(POLICY, due, utc(2024, 1, 13, 9), utc(2024, 1, 14, 20)) == due


def test_waiting_past_the_due_date_keeps_remaining_time() -> None:
    due = utc(2024, 1, 15, 12)
    waiting_since, resumed_at = utc(2024, 1, 15, 10), utc(2024, 1, 16, 15)  # waits through the due date
    new_due = resume_after_waiting(POLICY, due, waiting_since, resumed_at)
    assert remaining(POLICY, new_due, resumed_at) == remaining(POLICY, due, waiting_since) == 2 * H
    assert new_due == utc(2024, 1, 16, 17)


def test_waiting_after_breach_keeps_the_overdue_amount() -> None:
    due = utc(2024, 1, 15, 12)
    waiting_since, resumed_at = utc(2024, 1, 15, 13), utc(2024, 1, 16, 10)
    new_due = resume_after_waiting(POLICY, due, waiting_since, resumed_at)
    assert remaining(POLICY, new_due, resumed_at) == -H


def test_resumed_before_waiting_is_rejected() -> None:
    with pytest.raises(ValueError, match="resumed_at"):
        resume_after_waiting(POLICY, FRIDAY_4PM, utc(2024, 1, 12, 10), utc(2024, 1, 12, 9))


@settings(max_examples=200, deadline=None)
@given(
    st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2024, 3, 1), timezones=st.just(UTC)),
    st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=10)),
    st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=10)),
)
def test_pause_preserves_remaining_business_time(
    waiting_since: datetime, wait: timedelta, due_in: timedelta
) -> None:
    due = OFFICE.add_business_time(waiting_since, due_in)
    resumed_at = waiting_since + wait
    new_due = resume_after_waiting(POLICY, due, waiting_since, resumed_at)
    assert new_due >= due
    assert remaining(POLICY, new_due, resumed_at) == remaining(POLICY, due, waiting_since)


# --- remaining and humanize -----------------------------------------------------------------------


def test_remaining_before_and_after_due() -> None:
    due = utc(2024, 1, 15, 12)
    assert remaining(POLICY, due, FRIDAY_4PM) == 4 * H
    assert remaining(POLICY, due, due) == timedelta(0)
    assert remaining(POLICY, due, utc(2024, 1, 16, 10, 5)) == -(6 * H + 5 * M)
    assert remaining(POLICY, due, utc(2024, 1, 15, 20)) == -5 * H  # after closing: overdue stays put


@pytest.mark.parametrize(
    ("delta", "text"),
    [
        (2 * H + 10 * M, "2h 10m"),
        (timedelta(days=3, hours=4, minutes=59), "3d 4h"),
        (45 * M, "45m"),
        (-(H + 5 * M), "overdue by 1h 5m"),
        (2 * H, "2h"),
        (timedelta(days=2), "2d"),
        (timedelta(0), "0m"),
        (timedelta(seconds=20), "<1m"),
        (-timedelta(seconds=20), "overdue by <1m"),
        (45 * M + timedelta(seconds=59), "45m"),
        (-timedelta(days=1, hours=3), "overdue by 1d 3h"),
    ],
)
def test_humanize(delta: timedelta, text: str) -> None:
    assert humanize(delta) == text


def test_humanize_in_working_days() -> None:
    assert humanize(27 * H, day=8 * H) == "3d 3h"
    assert humanize(-9 * H, day=8 * H) == "overdue by 1d 1h"
