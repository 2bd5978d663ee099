"""Business calendars: working hours in a local time zone, and exact arithmetic on working time.

Rules (all instants are aware datetimes; results are in UTC):

- Each working day that is not a holiday has one working window ``[start, end)`` in local wall-clock
  time, converted to real instants with ``zoneinfo``; so a window that contains a DST shift has its
  real length (a 00:00-24:00 window on a 23-hour day is 23 hours of working time).
- ``end == time(0, 0)`` means "until midnight" (24:00), which is how a 24x7 calendar is written:
  see ``ALWAYS_OPEN``. Any other ``end`` must be later than ``start`` on the same day.
- Local wall times that do not exist (spring forward) or occur twice (fall back) are resolved as
  PEP 495 does with ``fold=0``: a skipped time moves forward by the gap, a repeated time is its first
  occurrence.
- Windows are half-open: the opening instant is working time, the closing instant is not.
- ``add_business_time`` returns the closing instant when the duration runs out exactly at closing
  (not the next opening); a zero duration returns ``start`` when it is working, else the next opening.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

MIDNIGHT = time(0, 0)
_DAY = timedelta(days=1)
_ZERO = timedelta(0)


def as_utc(at: datetime) -> datetime:
    """Return an aware datetime converted to UTC; naive datetimes are rejected."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"naive datetime {at.isoformat()}: pass an aware (UTC) datetime")
    return at.astimezone(UTC)


class BusinessCalendar(BaseModel):
    """Working hours of one team: time zone, working weekdays, daily opening hours and holidays."""

    model_config = ConfigDict(frozen=True)

    timezone: str = "UTC"
    working_days: list[int] = [0, 1, 2, 3, 4]
    start: time = time(9, 0)
    end: time = time(17, 0)
    holidays: list[date] = []

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {value!r}: use an IANA name such as 'Europe/Berlin'"
            ) from None
        return value

    @field_validator("working_days")
    @classmethod
    def _valid_days(cls, value: list[int]) -> list[int]:
        if not value:
            raise ValueError("working_days must not be empty")
        if any(day < 0 or day > 6 for day in value):
            raise ValueError("working_days must be weekday numbers 0 (Monday) to 6 (Sunday)")
        if len(set(value)) != len(value):
            raise ValueError("working_days must not repeat a day")
        return sorted(value)

    @field_validator("start", "end")
    @classmethod
    def _wall_time(cls, value: time) -> time:
        if value.tzinfo is not None:
            raise ValueError("opening hours are local wall-clock times without a time zone")
        return value

    @model_validator(mode="after")
    def _end_after_start(self) -> BusinessCalendar:
        if self.end != MIDNIGHT and self.end <= self.start:
            raise ValueError("end must be later than start on the same day (or 00:00 for midnight)")
        return self

    @property
    def all_day(self) -> bool:
        """Whether each working day is open from midnight to midnight."""
        return self.start == MIDNIGHT and self.end == MIDNIGHT

    def _window(self, day: date, zone: ZoneInfo) -> tuple[datetime, datetime] | None:
        opens = datetime.combine(day, self.start, tzinfo=zone).astimezone(UTC)
        closing_day = day + _DAY if self.end == MIDNIGHT else day
        closes = datetime.combine(closing_day, self.end, tzinfo=zone).astimezone(UTC)
        return (opens, closes) if closes > opens else None

    def windows(self, since: datetime) -> Iterator[tuple[datetime, datetime]]:
        """Yield disjoint working windows (UTC opening, UTC closing) in time order, starting just before ``since``."""
        zone = ZoneInfo(self.timezone)
        holidays = frozenset(self.holidays)
        days = frozenset(self.working_days)
        day = as_utc(since).astimezone(zone).date() - 2 * _DAY
        last_close = datetime.min.replace(tzinfo=UTC)
        while True:
            if day.weekday() in days and day not in holidays:
                window = self._window(day, zone)
                # Clip so windows never overlap, even where a zone skips a whole local day.
                if window is not None and window[1] > last_close:
                    yield max(window[0], last_close), window[1]
                    last_close = window[1]
            day += _DAY

    def is_working_instant(self, at: datetime) -> bool:
        """Whether ``at`` falls inside working hours (opening included, closing excluded)."""
        at = as_utc(at)
        for opens, closes in self.windows(at):
            if opens > at:
                return False
            if at < closes:
                return True
        raise AssertionError("unreachable: windows() never ends")

    def next_opening(self, at: datetime) -> datetime:
        """The first working instant at or after ``at``: ``at`` itself when open, else the next opening."""
        at = as_utc(at)
        for opens, closes in self.windows(at):
            if closes > at:
                return max(opens, at)
        raise AssertionError("unreachable: windows() never ends")

    def add_business_time(self, start: datetime, duration: timedelta) -> datetime:
        """The instant when ``duration`` of working time has elapsed after ``start``."""
        if duration < _ZERO:
            raise ValueError("duration must not be negative")
        current = as_utc(start)
        left = duration
        for opens, closes in self.windows(current):
            if closes <= current:
                continue
            current = max(current, opens)
            available = closes - current
            if left <= available:
                return current + left
            left -= available
            current = closes
        raise AssertionError("unreachable: windows() never ends")

    def business_time_between(self, start: datetime, end: datetime) -> timedelta:
        """Working time in ``[start, end)``; zero when ``end <= start``."""
        start, end = as_utc(start), as_utc(end)
        total = _ZERO
        if end <= start:
            return total
        for opens, closes in self.windows(start):
            if opens >= end:
                break
            low, high = max(opens, start), min(closes, end)
            if high > low:
                total += high - low
        return total


ALWAYS_OPEN = BusinessCalendar(working_days=[0, 1, 2, 3, 4, 5, 6], start=MIDNIGHT, end=MIDNIGHT)
"""A 24x7 calendar in UTC, for request types without business hours."""
