"""SLA clock for process requests: due dates, reminders, waiting pauses and remaining time, in business time."""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from bot.requests.calendar import BusinessCalendar, as_utc

TargetName = Literal["first_response", "resolution"]


class Priority(StrEnum):
    """Request priority, most pressing first."""

    urgent = "urgent"
    high = "high"
    normal = "normal"
    low = "low"


class SlaTarget(BaseModel):
    """Business-time targets for one priority; None means no target."""

    model_config = ConfigDict(frozen=True)

    first_response: timedelta | None = None
    resolution: timedelta | None = None

    @field_validator("first_response", "resolution")
    @classmethod
    def _positive(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and value <= timedelta(0):
            raise ValueError("an SLA target must be a positive duration (or None for no target)")
        return value


class SlaPolicy(BaseModel):
    """The SLA of one request type: its calendar and per-priority targets."""

    model_config = ConfigDict(frozen=True)

    calendar: BusinessCalendar
    targets: dict[Priority, SlaTarget]
    reminder_fraction: float = Field(default=0.75, gt=0, le=1)

    def target(self, priority: Priority, name: TargetName) -> timedelta | None:
        """The business-time target for ``priority``, or None when it has none (or the priority is absent)."""
        targets = self.targets.get(priority)
        return None if targets is None else getattr(targets, name)


def _due(policy: SlaPolicy, priority: Priority, started_at: datetime, name: TargetName) -> datetime | None:
    duration = policy.target(priority, name)
    return None if duration is None else policy.calendar.add_business_time(started_at, duration)


def first_response_due(policy: SlaPolicy, priority: Priority, created_at: datetime) -> datetime | None:
    """When the first response is due, or None without a first-response target."""
    return _due(policy, priority, created_at, "first_response")


def resolution_due(policy: SlaPolicy, priority: Priority, created_at: datetime) -> datetime | None:
    """When resolution is due (before any waiting pauses), or None without a resolution target."""
    return _due(policy, priority, created_at, "resolution")


def reminder_at(
    policy: SlaPolicy, priority: Priority, started_at: datetime, target: TargetName
) -> datetime | None:
    """The instant when ``reminder_fraction`` of the target's business time has elapsed, or None."""
    duration = policy.target(priority, target)
    if duration is None:
        return None
    return policy.calendar.add_business_time(started_at, duration * policy.reminder_fraction)


def resume_after_waiting(
    policy: SlaPolicy, due_at: datetime, waiting_since: datetime, resumed_at: datetime
) -> datetime:
    """Push ``due_at`` later by the business time spent waiting in ``[waiting_since, resumed_at)``."""
    if resumed_at < waiting_since:
        raise ValueError("resumed_at must not be before waiting_since")
    paused = policy.calendar.business_time_between(waiting_since, resumed_at)
    if not paused:
        return as_utc(due_at)
    return policy.calendar.add_business_time(due_at, paused)


def remaining(policy: SlaPolicy, due_at: datetime, now: datetime) -> timedelta:
    """Business time left until ``due_at``; negative (business time since due) once breached."""
    calendar = policy.calendar
    if as_utc(now) <= as_utc(due_at):
        return calendar.business_time_between(now, due_at)
    return -calendar.business_time_between(due_at, now)


def humanize(delta: timedelta, *, day: timedelta = timedelta(days=1)) -> str:
    """Render a duration concisely for a Slack card: "3d 4h", "2h 10m", "45m", "overdue by 1h 5m".

    Units are floored to whole minutes and at most two units are shown. ``day`` is the length of "1d";
    pass the calendar's working-day length (e.g. 8 hours) to count business days.
    """
    if delta < timedelta(0):
        return f"overdue by {humanize(-delta, day=day)}"
    if delta < timedelta(minutes=1):
        return "0m" if not delta else "<1m"
    days, rest = divmod(delta, day) if day > timedelta(0) else (0, delta)
    hours, rest = divmod(rest, timedelta(hours=1))
    minutes = rest // timedelta(minutes=1)
    if days:
        return f"{days}d {hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    return f"{minutes}m"
