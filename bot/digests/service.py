"""Digest subscriptions: schedules as cron, validation, and create / update / delete / list / get."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.cron import CronTrigger
from pydantic import BaseModel, Field
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from bot.cron import WEEKDAYS, CronError, standard_crontab
from bot.digests.schemas import Cadence, DigestSections
from bot.metrics.collector import next_run_after
from storage.models import DigestSubscription

DEFAULT_NAME = "Product Ops digest"
CADENCES: tuple[Cadence, ...] = ("daily", "weekly", "monthly", "cron")
WEEKDAY_NAMES = dict(
    zip(WEEKDAYS, ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"), strict=True)
)
LAST_DAY = "last"
MIN_INTERVAL = timedelta(hours=1)  # a digest more often than hourly is noise
CRON_HINT = (
    "Five fields: minute hour day-of-month month day-of-week, e.g. `0 9 * * mon-fri` (weekdays 09:00)."
)
TIME = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


class SubscriptionSpec(BaseModel):
    """What a subscriber chooses: name, schedule (stored as cron), time zone, sections, skip-if-empty."""

    name: str = Field(default=DEFAULT_NAME, min_length=1, max_length=100)
    cadence: Cadence
    cron: str = Field(max_length=100)
    timezone: str = Field(default="UTC", max_length=64)
    sections: DigestSections = Field(default_factory=DigestSections)
    skip_if_empty: bool = False


class InvalidSchedule(ValueError):
    """The schedule cannot be used; `field` names the input at fault (time|weekday|day|cron|timezone)."""

    def __init__(self, message: str, field: str = "cron") -> None:
        super().__init__(message)
        self.field = field


def cron_for(
    *,
    cadence: Cadence,
    time: str | None,
    weekday: str | None = None,
    day: str | int | None = None,
    cron: str | None = None,
) -> str:
    """The cron a cadence is stored as: daily 09:00 → `0 9 * * *`, weekly → `0 9 * * mon`, monthly → `0 9 1 * *`."""
    if cadence == "cron":
        if not cron or not cron.strip():
            raise InvalidSchedule("Give a cron expression. " + CRON_HINT)
        return normalize_cron(cron)
    match = TIME.match(time or "")
    if match is None:
        raise InvalidSchedule("Pick a time, e.g. 09:00.", "time")
    minute, hour = int(match.group(2)), int(match.group(1))
    if cadence == "daily":
        return f"{minute} {hour} * * *"
    if cadence == "weekly":
        if weekday not in WEEKDAYS:
            raise InvalidSchedule("Pick the day of the week it goes out.", "weekday")
        return f"{minute} {hour} * * {weekday}"
    if cadence == "monthly":
        dom = str(day or "").strip().lower()
        if dom != LAST_DAY and not (dom.isdigit() and 1 <= int(dom) <= 28):
            raise InvalidSchedule("Pick the day of the month: 1–28, or the last day.", "day")
        return f"{minute} {hour} {int(dom) if dom.isdigit() else LAST_DAY} * *"
    raise InvalidSchedule(f"Unknown cadence {cadence!r}.")


def normalize_cron(expr: str) -> str:
    """The expression with numeric weekdays spelt as names, so they mean what standard cron means (1 = Monday)."""
    try:
        return standard_crontab(expr)
    except CronError as exc:
        raise InvalidSchedule(f"{exc}. " + CRON_HINT) from None


def validate_timezone(tz: str) -> str | None:
    """Why the time zone cannot be used, or None when it can."""
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        return f"“{tz}” is not a time zone; use an IANA name such as Europe/Berlin or America/New_York."
    return None


def validate_cron(expr: str, tz: str) -> str | None:
    """Why the schedule cannot be used (bad cron, never fires, more often than hourly), or None when it can."""
    problem = validate_timezone(tz)
    if problem:
        return problem
    try:
        trigger = CronTrigger.from_crontab(normalize_cron(expr), timezone=ZoneInfo(tz))
    except InvalidSchedule as exc:
        return str(exc)
    except ValueError as exc:
        return f"`{expr.strip()}` is not a valid cron expression ({exc}). " + CRON_HINT
    fire = trigger.get_next_fire_time(None, datetime.now(UTC))
    if fire is None:
        return f"`{expr.strip()}` never fires. " + CRON_HINT
    for _ in range(48):
        following = trigger.get_next_fire_time(fire, fire + timedelta(seconds=1))
        if following is None:
            break
        if following - fire < MIN_INTERVAL:
            return f"`{expr.strip()}` fires more often than hourly; digests go out at most once an hour."
        fire = following
    return None


def describe_schedule(*, cadence: str, cron: str, timezone: str) -> str:
    """In words: “Every Monday at 09:00 (Europe/Berlin)”; cron schedules as their expression."""
    fields = cron.split()
    if cadence != "cron" and len(fields) == 5 and fields[0].isdigit() and fields[1].isdigit():
        at = f"{int(fields[1]):02d}:{int(fields[0]):02d}"
        if cadence == "daily":
            return f"Every day at {at} ({timezone})"
        if cadence == "weekly":
            return f"Every {WEEKDAY_NAMES.get(fields[4], fields[4])} at {at} ({timezone})"
        if cadence == "monthly":
            day = "the last day" if fields[2] == LAST_DAY else f"day {fields[2]}"
            return f"Monthly on {day} at {at} ({timezone})"
    return f"Cron `{cron}` ({timezone})"


def _checked(spec: SubscriptionSpec) -> SubscriptionSpec:
    """The spec with its cron normalised; InvalidSchedule when it cannot be scheduled."""
    problem = validate_timezone(spec.timezone)
    if problem:
        raise InvalidSchedule(problem, "timezone")
    cron = normalize_cron(spec.cron)
    problem = validate_cron(cron, spec.timezone)
    if problem:
        raise InvalidSchedule(problem)
    return spec.model_copy(update={"cron": cron})


def create_subscription(
    *, db_session: Session, team_id: str, channel_id: str, spec: SubscriptionSpec, user_id: str, now: datetime
) -> DigestSubscription:
    """Subscribes a channel; next_run_at is the end of its first period."""
    spec = _checked(spec)
    row = DigestSubscription(
        team_id=team_id,
        channel_id=channel_id,
        name=spec.name,
        cadence=spec.cadence,
        cron=spec.cron,
        timezone=spec.timezone,
        sections=spec.sections.model_dump(mode="json", exclude_none=True),
        skip_if_empty=spec.skip_if_empty,
        created_by_user_id=user_id,
        next_run_at=next_run_after(cron=spec.cron, timezone=spec.timezone, after=now),
    )
    db_session.add(row)
    db_session.flush()
    return row


def update_subscription(
    *, db_session: Session, team_id: str, subscription_id: int, spec: SubscriptionSpec, now: datetime
) -> DigestSubscription | None:
    """Saves new settings; a paused subscription resumes. None when it no longer exists."""
    spec = _checked(spec)
    row = get_subscription(db_session=db_session, team_id=team_id, subscription_id=subscription_id)
    if row is None:
        return None
    rescheduled = (row.cron, row.timezone) != (spec.cron, spec.timezone)
    resumed = row.paused_at is not None
    row.name = spec.name
    row.cadence = spec.cadence
    row.cron = spec.cron
    row.timezone = spec.timezone
    row.sections = spec.sections.model_dump(mode="json", exclude_none=True)
    row.skip_if_empty = spec.skip_if_empty
    if resumed:
        # Periods while paused are not owed: start afresh, as a new subscription would.
        row.paused_at = None
        row.paused_reason = None
        row.last_period_end = None
    if rescheduled or resumed or row.next_run_at is None:
        row.next_run_at = next_run_after(cron=spec.cron, timezone=spec.timezone, after=now)
    db_session.flush()
    return row


def delete_subscription(*, db_session: Session, team_id: str, subscription_id: int) -> bool:
    """Unsubscribes (its undelivered digests go with it); False when it did not exist."""
    result = db_session.execute(
        delete(DigestSubscription).where(
            DigestSubscription.team_id == team_id, DigestSubscription.id == subscription_id
        )
    )
    return bool(getattr(result, "rowcount", 0))


def list_subscriptions(
    *, db_session: Session, team_id: str, channel_id: str | None = None
) -> list[DigestSubscription]:
    """The workspace's subscriptions (or one channel's), oldest first."""
    query = select(DigestSubscription).where(DigestSubscription.team_id == team_id)
    if channel_id is not None:
        query = query.where(DigestSubscription.channel_id == channel_id)
    return list(db_session.scalars(query.order_by(DigestSubscription.id)))


def get_subscription(*, db_session: Session, team_id: str, subscription_id: int) -> DigestSubscription | None:
    """One subscription of the workspace."""
    row = db_session.get(DigestSubscription, subscription_id)
    return row if row is not None and row.team_id == team_id else None


def may_manage(*, is_admin: bool, user_in_channel: bool) -> bool:
    """Admins manage any channel's digests; everyone else only those of channels they are in."""
    return is_admin or user_in_channel
