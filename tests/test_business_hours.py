"""Business calendar: validation, worked examples, DST days and the add/between invariants."""

from __future__ import annotations

import time as perf
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from bot.requests.calendar import ALWAYS_OPEN, BusinessCalendar

H = timedelta(hours=1)
OFFICE = BusinessCalendar()  # Mon-Fri 09:00-17:00 UTC
EVERY_DAY = [0, 1, 2, 3, 4, 5, 6]


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, micro: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, micro, tzinfo=UTC)


def local(zone: str, year: int, month: int, day: int, hour: int = 0) -> datetime:
    return datetime(year, month, day, hour, tzinfo=ZoneInfo(zone)).astimezone(UTC)


# --- validation -------------------------------------------------------------------------------


def test_defaults() -> None:
    assert OFFICE.timezone == "UTC"
    assert OFFICE.working_days == [0, 1, 2, 3, 4]
    assert (OFFICE.start, OFFICE.end) == (time(9), time(17))
    assert OFFICE.holidays == []
    assert not OFFICE.all_day


def test_unknown_timezone_has_a_clear_error() -> None:
    with pytest.raises(ValidationError, match="unknown time zone 'Mars/Olympus'"):
        BusinessCalendar(timezone="Mars/Olympus")
    with pytest.raises(ValidationError, match="unknown time zone"):
        BusinessCalendar(timezone="")


@pytest.mark.parametrize(
    ("days", "message"),
    [
        ([], "must not be empty"),
        ([0, 7], "0 \\(Monday\\) to 6"),
        ([-1], "0 \\(Monday\\)"),
        ([1, 1], "repeat"),
    ],
)
def test_working_days_are_validated(days: list[int], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        BusinessCalendar(working_days=days)


def test_working_days_are_sorted() -> None:
    assert BusinessCalendar(working_days=[4, 0, 2]).working_days == [0, 2, 4]


@pytest.mark.parametrize(("start", "end"), [(time(17), time(9)), (time(9), time(9))])
def test_end_must_follow_start(start: time, end: time) -> None:
    with pytest.raises(ValidationError, match="end must be later than start"):
        BusinessCalendar(start=start, end=end)


def test_midnight_end_means_until_midnight() -> None:
    evening = BusinessCalendar(start=time(18), end=time(0))
    assert evening.business_time_between(utc(2024, 1, 15), utc(2024, 1, 16)) == 6 * H
    assert evening.is_working_instant(utc(2024, 1, 15, 23, 59))
    assert not evening.is_working_instant(utc(2024, 1, 16, 0, 0))


def test_calendar_is_frozen() -> None:
    with pytest.raises(ValidationError):
        OFFICE.timezone = "Europe/Berlin"


def test_naive_datetimes_are_rejected() -> None:
    with pytest.raises(ValueError, match="naive datetime"):
        OFFICE.add_business_time(datetime(2024, 1, 15, 9), H)


def test_negative_duration_is_rejected() -> None:
    with pytest.raises(ValueError, match="negative"):
        OFFICE.add_business_time(utc(2024, 1, 15, 9), -H)


# --- worked examples (2024-01-12 is a Friday) -----------------------------------------------------


def test_friday_afternoon_plus_two_hours_is_monday_ten() -> None:
    assert OFFICE.add_business_time(utc(2024, 1, 12, 16), 2 * H) == utc(2024, 1, 15, 10)


def test_holiday_monday_moves_to_tuesday() -> None:
    calendar = BusinessCalendar(holidays=[date(2024, 1, 15)])
    assert calendar.add_business_time(utc(2024, 1, 12, 16), 2 * H) == utc(2024, 1, 16, 10)
    assert not calendar.is_working_instant(utc(2024, 1, 15, 12))


def test_start_on_saturday_counts_from_monday_opening() -> None:
    saturday = utc(2024, 1, 13, 11, 30)
    assert OFFICE.add_business_time(saturday, 90 * timedelta(minutes=1)) == utc(2024, 1, 15, 10, 30)
    assert OFFICE.add_business_time(saturday, timedelta(0)) == utc(2024, 1, 15, 9)


def test_three_business_days_are_24_hours() -> None:
    monday = utc(2024, 1, 15, 9)
    assert OFFICE.business_time_between(monday, utc(2024, 1, 18, 9)) == 24 * H
    assert OFFICE.add_business_time(monday, 24 * H) == utc(2024, 1, 17, 17)  # closing instant, not Thu 09:00


def test_ending_exactly_at_closing_returns_the_closing_instant() -> None:
    assert OFFICE.add_business_time(utc(2024, 1, 12, 16), H) == utc(2024, 1, 12, 17)
    assert not OFFICE.is_working_instant(utc(2024, 1, 12, 17))


def test_zero_duration() -> None:
    assert OFFICE.add_business_time(utc(2024, 1, 15, 10, 5), timedelta(0)) == utc(2024, 1, 15, 10, 5)
    assert OFFICE.add_business_time(utc(2024, 1, 15, 17), timedelta(0)) == utc(2024, 1, 16, 9)
    assert OFFICE.add_business_time(utc(2024, 1, 15, 7), timedelta(0)) == utc(2024, 1, 15, 9)


def test_opening_included_closing_excluded() -> None:
    assert OFFICE.is_working_instant(utc(2024, 1, 15, 9))
    assert OFFICE.is_working_instant(utc(2024, 1, 15, 16, 59, 59, 999999))
    assert not OFFICE.is_working_instant(utc(2024, 1, 15, 17))
    assert not OFFICE.is_working_instant(utc(2024, 1, 13, 12))


def test_next_opening() -> None:
    assert OFFICE.next_opening(utc(2024, 1, 15, 12)) == utc(2024, 1, 15, 12)  # already open
    assert OFFICE.next_opening(utc(2024, 1, 15, 17)) == utc(2024, 1, 16, 9)
    assert OFFICE.next_opening(utc(2024, 1, 12, 18)) == utc(2024, 1, 15, 9)
    assert OFFICE.next_opening(utc(2024, 1, 15, 3)) == utc(2024, 1, 15, 9)


def test_business_time_between_examples() -> None:
    assert OFFICE.business_time_between(utc(2024, 1, 12, 16), utc(2024, 1, 15, 10)) == 2 * H
    assert OFFICE.business_time_between(utc(2024, 1, 15, 10), utc(2024, 1, 15, 10)) == timedelta(0)
    assert OFFICE.business_time_between(utc(2024, 1, 15, 12), utc(2024, 1, 15, 10)) == timedelta(0)
    assert OFFICE.business_time_between(utc(2024, 1, 13), utc(2024, 1, 14)) == timedelta(0)


def test_berlin_calendar_with_utc_inputs() -> None:
    berlin = BusinessCalendar(timezone="Europe/Berlin")
    # Winter (CET, UTC+1): 09:00-17:00 local is 08:00-16:00 UTC.
    assert berlin.next_opening(utc(2024, 1, 15, 7)) == utc(2024, 1, 15, 8)
    assert berlin.add_business_time(utc(2024, 1, 15, 7), H) == utc(2024, 1, 15, 9)
    assert berlin.add_business_time(utc(2024, 1, 12, 15), 2 * H) == utc(2024, 1, 15, 9)
    # Summer (CEST, UTC+2): 07:00-15:00 UTC.
    assert berlin.is_working_instant(utc(2024, 7, 15, 7))
    assert not berlin.is_working_instant(utc(2024, 7, 15, 15))
    assert berlin.business_time_between(utc(2024, 7, 15), utc(2024, 7, 16)) == 8 * H
    # Non-UTC aware inputs are accepted and results come back in UTC.
    result = berlin.add_business_time(datetime(2024, 1, 15, 9, tzinfo=ZoneInfo("Europe/Berlin")), H)
    assert result == utc(2024, 1, 15, 9) and result.tzinfo is UTC


def test_always_open() -> None:
    assert ALWAYS_OPEN.all_day
    saturday_night = utc(2024, 1, 13, 23, 30)
    assert ALWAYS_OPEN.is_working_instant(saturday_night)
    assert ALWAYS_OPEN.next_opening(saturday_night) == saturday_night
    assert ALWAYS_OPEN.add_business_time(saturday_night, 3 * H) == utc(2024, 1, 14, 2, 30)
    assert ALWAYS_OPEN.business_time_between(utc(2024, 1, 1), utc(2024, 2, 1)) == timedelta(days=31)


def test_long_durations_are_fast() -> None:
    began = perf.perf_counter()
    monday = utc(2024, 1, 15, 9)
    far = OFFICE.add_business_time(monday, 52 * 40 * H)  # a year of working weeks
    assert far == utc(2025, 1, 10, 17)
    assert OFFICE.business_time_between(monday, far) == 52 * 40 * H
    assert perf.perf_counter() - began < 0.5


# --- DST -----------------------------------------------------------------------------------------

LONDON_ALL_DAY = BusinessCalendar(
    timezone="Europe/London", working_days=EVERY_DAY, start=time(0), end=time(0)
)
NEW_YORK_ALL_DAY = BusinessCalendar(
    timezone="America/New_York", working_days=EVERY_DAY, start=time(0), end=time(0)
)


@pytest.mark.parametrize(
    ("calendar", "zone", "day", "hours"),
    [
        (LONDON_ALL_DAY, "Europe/London", (2024, 3, 31), 23),
        (LONDON_ALL_DAY, "Europe/London", (2024, 10, 27), 25),
        (LONDON_ALL_DAY, "Europe/London", (2024, 6, 1), 24),
        (NEW_YORK_ALL_DAY, "America/New_York", (2024, 3, 10), 23),
        (NEW_YORK_ALL_DAY, "America/New_York", (2024, 11, 3), 25),
    ],
)
def test_all_day_calendar_on_dst_days_has_real_length(
    calendar: BusinessCalendar, zone: str, day: tuple[int, int, int], hours: int
) -> None:
    midnight = local(zone, *day)
    next_midnight = local(zone, *(date(*day) + timedelta(days=1)).timetuple()[:3])
    assert calendar.business_time_between(midnight, next_midnight) == hours * H
    assert calendar.add_business_time(midnight, hours * H) == next_midnight


@pytest.mark.parametrize(
    ("zone", "day"), [("Europe/London", (2024, 3, 31)), ("Europe/London", (2024, 10, 27))]
)
def test_office_hours_on_a_dst_sunday_are_still_eight_hours(zone: str, day: tuple[int, int, int]) -> None:
    calendar = BusinessCalendar(timezone=zone, working_days=EVERY_DAY)
    opens, closes = local(zone, *day, 9), local(zone, *day, 17)
    assert calendar.next_opening(local(zone, *day, 0)) == opens
    assert calendar.add_business_time(opens, 8 * H) == closes
    assert calendar.business_time_between(local(zone, *day), local(zone, *day, 23)) == 8 * H


def test_new_york_window_containing_the_shift() -> None:
    night = BusinessCalendar(timezone="America/New_York", working_days=EVERY_DAY, start=time(1), end=time(4))
    # Spring forward 2024-03-10 02:00 -> 03:00: 01:00 EST (06:00 UTC) to 04:00 EDT (08:00 UTC) is 2h.
    assert night.business_time_between(utc(2024, 3, 10), utc(2024, 3, 11)) == 2 * H
    assert night.add_business_time(utc(2024, 3, 10, 6), 2 * H) == utc(2024, 3, 10, 8)
    # Fall back 2024-11-03 02:00 -> 01:00: 01:00 EDT (05:00 UTC) to 04:00 EST (09:00 UTC) is 4h.
    assert night.business_time_between(utc(2024, 11, 3), utc(2024, 11, 4)) == 4 * H
    assert night.next_opening(utc(2024, 11, 3)) == utc(2024, 11, 3, 5)
    assert night.add_business_time(utc(2024, 11, 3, 5), 4 * H) == utc(2024, 11, 3, 9)


def test_london_friday_to_monday_across_spring_forward() -> None:
    london = BusinessCalendar(timezone="Europe/London")
    # Fri 2024-03-29 16:00 GMT + 2h -> Mon 2024-04-01 10:00 BST (09:00 UTC).
    assert london.add_business_time(utc(2024, 3, 29, 16), 2 * H) == utc(2024, 4, 1, 9)
    assert london.business_time_between(utc(2024, 3, 29, 16), utc(2024, 4, 1, 9)) == 2 * H


def test_new_york_friday_to_monday_across_fall_back() -> None:
    new_york = BusinessCalendar(timezone="America/New_York")
    # Fri 2024-11-01 16:00 EDT (20:00 UTC) + 2h -> Mon 2024-11-04 10:00 EST (15:00 UTC).
    assert new_york.add_business_time(utc(2024, 11, 1, 20), 2 * H) == utc(2024, 11, 4, 15)


def test_window_opening_inside_a_spring_forward_gap() -> None:
    # 01:30 does not exist in London on 2024-03-31; it resolves forward by the gap, to 02:30 BST.
    calendar = BusinessCalendar(timezone="Europe/London", working_days=[6], start=time(1, 30), end=time(3))
    assert calendar.next_opening(utc(2024, 3, 30, 23)) == utc(2024, 3, 31, 1, 30)
    assert calendar.business_time_between(utc(2024, 3, 30), utc(2024, 4, 1)) == timedelta(minutes=30)


def test_a_skipped_local_day_is_not_counted_twice() -> None:
    # Samoa skipped 2011-12-30 entirely (UTC-10 -> UTC+14); its two neighbours are 24h each.
    apia = BusinessCalendar(timezone="Pacific/Apia", working_days=EVERY_DAY, start=time(0), end=time(0))
    since, until = local("Pacific/Apia", 2011, 12, 29), local("Pacific/Apia", 2012, 1, 1)
    assert until - since == 48 * H
    assert apia.business_time_between(since, until) == 48 * H
    assert apia.add_business_time(since, 48 * H) == until


# --- invariants (property-based) ---------------------------------------------------------------

CALENDARS = [
    OFFICE,
    ALWAYS_OPEN,
    LONDON_ALL_DAY,
    BusinessCalendar(timezone="Europe/London", working_days=EVERY_DAY),
    BusinessCalendar(timezone="America/New_York", working_days=EVERY_DAY, start=time(1), end=time(4)),
    BusinessCalendar(
        timezone="Europe/Berlin",
        working_days=[0, 1, 2, 3],
        start=time(8, 30),
        end=time(0),
        holidays=[date(2024, 3, 31), date(2024, 4, 1), date(2024, 12, 24), date(2024, 12, 25)],
    ),
    BusinessCalendar(timezone="Australia/Lord_Howe", working_days=[5, 6], start=time(1, 45), end=time(2, 15)),
]
calendars = st.sampled_from(CALENDARS)
instants = st.datetimes(
    min_value=datetime(2023, 10, 1), max_value=datetime(2025, 4, 30), timezones=st.just(UTC)
)
durations = st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=40))


@settings(max_examples=300, deadline=None)
@given(calendars, instants, durations)
def test_between_undoes_add(calendar: BusinessCalendar, start: datetime, duration: timedelta) -> None:
    end = calendar.add_business_time(start, duration)
    assert end >= start
    assert calendar.business_time_between(start, end) == duration


@settings(max_examples=300, deadline=None)
@given(calendars, instants, durations, durations)
def test_add_is_monotonic(calendar: BusinessCalendar, start: datetime, a: timedelta, b: timedelta) -> None:
    small, large = sorted([a, b])
    assert calendar.add_business_time(start, small) <= calendar.add_business_time(start, large)


@settings(max_examples=300, deadline=None)
@given(calendars, instants, durations)
def test_result_is_working_or_a_closing_boundary(
    calendar: BusinessCalendar, start: datetime, duration: timedelta
) -> None:
    end = calendar.add_business_time(start, duration)
    tick = timedelta(microseconds=1)
    if duration:
        assert calendar.is_working_instant(end) or calendar.is_working_instant(end - tick)
    else:
        assert end == calendar.next_opening(start)
        assert calendar.is_working_instant(end)


@settings(max_examples=300, deadline=None)
@given(calendars, instants, instants, instants)
def test_between_is_additive(calendar: BusinessCalendar, a: datetime, b: datetime, c: datetime) -> None:
    a, b, c = sorted([a, b, c])
    between = calendar.business_time_between
    assert between(a, c) == between(a, b) + between(b, c)
    assert between(c, a) == timedelta(0)


@settings(max_examples=300, deadline=None)
@given(calendars, instants, instants)
def test_add_between_lands_no_later_than_end(calendar: BusinessCalendar, a: datetime, b: datetime) -> None:
    start, end = sorted([a, b])
    landed = calendar.add_business_time(start, calendar.business_time_between(start, end))
    assert landed <= calendar.next_opening(end)
    assert calendar.business_time_between(landed, end) == timedelta(0)
