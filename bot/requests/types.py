"""Request types: the YAML file format, its validation, and the services that store types per workspace.

File format (YAML)::

    calendar:                      # optional: the default for types without their own calendar
      timezone: Europe/London
      working_days: [mon, tue, wed, thu, fri]   # or numbers, Monday = 0
      start: "09:00"
      end: "17:30"                 # "00:00" or "24:00" means until midnight
      holidays: [2026-12-25, 2026-12-26]
    types:
      - name: Data pull            # 1-100 characters, unique per workspace (case-insensitively)
        description: Ad-hoc exports from the warehouse
        triage_channel: "#data-requests"   # a channel id (C0123ABC) or a #name, resolved through Slack
        owners: [U0123ABC]
        default_priority: normal   # urgent | high | normal | low
        fields:
          - {key: region, label: Region, kind: select, options: [EU, US], required: true}
        sla:                       # priorities left out have no targets; no `sla` at all: DEFAULT_SLA
          urgent: {first_response: 30m, resolution: 4h}
          high: {first_response: 2h, resolution: 2d}

Durations are business time: ``30m`` minutes, ``4h`` hours, ``2d`` business days, where one business day
is the calendar's working hours per day (09:00-17:30 makes ``1d`` = 8h30m); units combine (``1d4h``).
They are stored as minutes, so changing a calendar's hours later does not change existing targets.
A type without a triage channel has its requests triaged in the channel where they were asked.
"""

from __future__ import annotations

import difflib
import enum
import re
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any, NamedTuple
from zoneinfo import available_timezones

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bot.requests.calendar import MIDNIGHT, BusinessCalendar
from bot.requests.sla import Priority, SlaPolicy, SlaTarget
from bot.spec_files import read_yaml
from storage.models import RequestType

DEFAULT_TYPE_NAME = "General request"
DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?$")
DURATION_HINT = "a duration like 30m, 4h or 2d"
CHANNEL_ID = re.compile(r"^[CG][A-Z0-9]{6,}$")
CHANNEL_MENTION = re.compile(r"^<#([CG][A-Z0-9]+)(?:\|[^>]*)?>$")
CHANNEL_NAME = re.compile(r"^#?([a-z0-9][a-z0-9_-]{0,79})$")
USER_ID = re.compile(r"^<?@?([UW][A-Z0-9]{2,})(?:\|[^>]*)?>?$")
FIELD_KEY = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
WALL_TIME = re.compile(r"^(\d{1,2}):(\d{2})$")
DAY_NAMES = {name: i for i, name in enumerate(("mon", "tue", "wed", "thu", "fri", "sat", "sun"))}
NO_TARGET = {"", "none", "-", "no", "off"}


class FieldKind(enum.StrEnum):
    """What an extra field on the intake form asks for."""

    text = "text"
    select = "select"
    date = "date"
    user = "user"


# ---- durations ------------------------------------------------------------------------------------


def parse_duration(raw: str, *, day_minutes: int) -> int:
    """'30m', '4h', '2d', '1d4h' → minutes of business time, a day being `day_minutes` long."""
    match = DURATION.match(raw.strip().lower().replace(" ", ""))
    if match is None or not any(match.groups()):
        raise ValueError(f'"{raw}" is not {DURATION_HINT}')
    days, hours, minutes = (int(g or 0) for g in match.groups())
    return days * day_minutes + hours * 60 + minutes


def format_duration(minutes: int, *, day_minutes: int) -> str:
    """Minutes → '2d', '1d4h', '4h', '1h30m', '45m' (a day being `day_minutes` long)."""
    days, rest = divmod(minutes, day_minutes) if day_minutes > 0 else (0, minutes)
    hours, mins = divmod(rest, 60)
    text = (f"{days}d" if days else "") + (f"{hours}h" if hours else "") + (f"{mins}m" if mins else "")
    return text or "0m"


def day_minutes(calendar: BusinessCalendar) -> int:
    """Working minutes in one day of the calendar (wall clock; 00:00 as end means midnight)."""
    end = 24 * 60 if calendar.end == MIDNIGHT else calendar.end.hour * 60 + calendar.end.minute
    return end - (calendar.start.hour * 60 + calendar.start.minute)


# ---- the spec -------------------------------------------------------------------------------------


class FieldSpec(BaseModel):
    """One extra field on the intake form."""

    model_config = ConfigDict(extra="forbid")

    key: str
    label: str = Field(min_length=1, max_length=100)
    kind: FieldKind = FieldKind.text
    required: bool = False
    options: list[str] = []

    @field_validator("key")
    @classmethod
    def _slug(cls, value: str) -> str:
        if not FIELD_KEY.match(value):
            raise ValueError(
                f'"{value}" is not a key: use lowercase letters, digits and _ (start with a letter, max 40)'
            )
        return value

    @field_validator("options")
    @classmethod
    def _clean_options(cls, value: list[str]) -> list[str]:
        cleaned = [str(o).strip() for o in value]
        if any(not o or len(o) > 75 for o in cleaned):
            raise ValueError("each option must be 1-75 characters")
        if len({o.casefold() for o in cleaned}) != len(cleaned):
            raise ValueError("options must not repeat")
        return cleaned

    @model_validator(mode="after")
    def _options_iff_select(self) -> FieldSpec:
        if self.kind == FieldKind.select and not self.options:
            raise ValueError(f'field "{self.key}": a select field needs a non-empty list of options')
        if self.kind != FieldKind.select and self.options:
            raise ValueError(f'field "{self.key}": only select fields have options (this one is {self.kind})')
        return self


class SlaTargetSpec(BaseModel):
    """First-response and resolution targets of one priority, as written: '30m', '4h', '2d' or none."""

    model_config = ConfigDict(extra="forbid")

    first_response: str | None = None
    resolution: str | None = None

    @field_validator("first_response", "resolution", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> str | None:
        if value is None or value is False:
            return None
        text = str(value).strip().lower().replace(" ", "")
        if text in NO_TARGET:
            return None
        parse_duration(text, day_minutes=1)  # shape only; days are converted with the calendar
        return text


def _wall_time(value: Any) -> Any:
    """'9:00', '09:00', '24:00', and YAML 1.1's reading of unquoted 9:00 as 540 (base 60) → time."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):  # PyYAML turns unquoted 17:00 into 1020
        hours, minutes = divmod(value, 60)
        value = f"{hours}:{minutes:02d}"
    if isinstance(value, str):
        match = WALL_TIME.match(value.strip())
        if match is None:
            raise ValueError(f'"{value}" is not a time like 09:00')
        hours, minutes = int(match.group(1)), int(match.group(2))
        if (hours, minutes) == (24, 0):
            return MIDNIGHT
        if hours > 23 or minutes > 59:
            raise ValueError(f'"{value}" is not a time like 09:00')
        return time(hours, minutes)
    return value


class CalendarSpec(BaseModel):
    """Business hours as written in the file or the modal."""

    model_config = ConfigDict(extra="forbid")

    timezone: str = "UTC"
    working_days: list[int] = [0, 1, 2, 3, 4]
    start: time = time(9, 0)
    end: time = time(17, 0)
    holidays: list[date] = []

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        value = value.strip()
        if value not in _zones():
            close = difflib.get_close_matches(value, sorted(_zones()), n=1)
            hint = f' — did you mean "{close[0]}"?' if close else " — use an IANA name like Europe/London"
            raise ValueError(f'"{value}" is not a time zone{hint}')
        return value

    @field_validator("working_days", mode="before")
    @classmethod
    def _days(cls, value: Any) -> Any:
        if not isinstance(value, list):
            return value
        days: list[Any] = []
        for day in value:
            if isinstance(day, str) and day.strip()[:3].lower() in DAY_NAMES:
                days.append(DAY_NAMES[day.strip()[:3].lower()])
            elif isinstance(day, int) and not isinstance(day, bool) and 0 <= day <= 6:
                days.append(day)
            else:
                raise ValueError(f'"{day}" is not a weekday: use mon..sun or 0 (Monday) to 6 (Sunday)')
        if not days:
            raise ValueError("give at least one working day")
        return sorted(set(days))

    @field_validator("start", "end", mode="before")
    @classmethod
    def _times(cls, value: Any) -> Any:
        return _wall_time(value)

    @model_validator(mode="after")
    def _end_after_start(self) -> CalendarSpec:
        if self.end != MIDNIGHT and self.end <= self.start:
            raise ValueError(
                f"end ({self.end:%H:%M}) must be later than start ({self.start:%H:%M}); "
                "use 24:00 for midnight"
            )
        return self

    def business(self) -> BusinessCalendar:
        """The calendar the SLA clock runs on."""
        return BusinessCalendar(
            timezone=self.timezone,
            working_days=list(self.working_days),
            start=self.start,
            end=self.end,
            holidays=sorted(set(self.holidays)),
        )

    def to_json(self) -> dict[str, Any]:
        """The `request_types.calendar` column."""
        return {
            "timezone": self.timezone,
            "working_days": list(self.working_days),
            "start": f"{self.start:%H:%M}",
            "end": f"{self.end:%H:%M}",
            "holidays": [d.isoformat() for d in sorted(set(self.holidays))],
        }


_ZONES: set[str] = set()


def _zones() -> set[str]:
    if not _ZONES:
        _ZONES.update(available_timezones())
    return _ZONES


class RequestTypeSpec(BaseModel):
    """One request type as written in the YAML file (or read back from the modal / the database)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    description: str | None = Field(default=None, max_length=2000)
    # As written: a channel id, <#C…|name>, or a #name that the CLI / Slack layer resolves.
    triage_channel: str | None = None
    triage_channel_id: str | None = None
    owners: list[str] = []
    fields: list[FieldSpec] = []
    default_priority: Priority = Priority.normal
    sla: dict[Priority, SlaTargetSpec] = Field(default_factory=lambda: dict(DEFAULT_SLA))
    calendar: CalendarSpec = Field(default_factory=CalendarSpec)

    @field_validator("name", "description", mode="before")
    @classmethod
    def _strip(cls, value: Any) -> Any:
        return value.strip() if isinstance(value, str) else value

    @field_validator("description")
    @classmethod
    def _empty_is_none(cls, value: str | None) -> str | None:
        return value or None

    @field_validator("triage_channel")
    @classmethod
    def _channel_shape(cls, value: str | None) -> str | None:
        value = (value or "").strip() or None
        if value is None or CHANNEL_ID.match(value) or CHANNEL_MENTION.match(value):
            return value
        if not CHANNEL_NAME.match(value.lower()):
            raise ValueError(f'"{value}" is not a channel: give its id (C0123ABC) or its #name')
        return value

    @field_validator("owners", mode="before")
    @classmethod
    def _owner_ids(cls, value: Any) -> Any:
        if not isinstance(value, list):
            return value
        owners: list[str] = []
        for owner in value:
            match = USER_ID.match(str(owner).strip())
            if match is None:
                raise ValueError(
                    f'"{owner}" is not a Slack user id (like U0123ABC: profile → ⋮ → Copy member ID)'
                )
            if match.group(1) not in owners:
                owners.append(match.group(1))
        return owners

    @field_validator("sla", mode="before")
    @classmethod
    def _sla_none(cls, value: Any) -> Any:
        return {} if value is None else value

    @model_validator(mode="after")
    def _consistent(self) -> RequestTypeSpec:
        if self.triage_channel and self.triage_channel_id is None:
            if match := CHANNEL_MENTION.match(self.triage_channel):
                self.triage_channel_id = match.group(1)
            elif CHANNEL_ID.match(self.triage_channel):
                self.triage_channel_id = self.triage_channel
        keys = [f.key for f in self.fields]
        twice = sorted({k for k in keys if keys.count(k) > 1})
        if twice:
            raise ValueError(f"fields: each key must be used once ({', '.join(twice)} repeated)")
        minutes = self.sla_minutes()
        for priority, target in minutes.items():
            first, resolution = target["first_response_minutes"], target["resolution_minutes"]
            if first is not None and resolution is not None and resolution < first:
                written = self.sla[Priority(priority)]
                raise ValueError(
                    f"sla.{priority}: resolution ({written.resolution}) is shorter than "
                    f"first response ({written.first_response})"
                )
        return self

    @property
    def needs_channel_lookup(self) -> bool:
        """A #name that must be resolved to an id before the type can be saved."""
        return bool(self.triage_channel) and self.triage_channel_id is None

    def channel_name(self) -> str | None:
        """The #name to look up (without '#', lowercased), when it is not already an id."""
        if not self.needs_channel_lookup or self.triage_channel is None:
            return None
        return self.triage_channel.lstrip("#").lower()

    def sla_minutes(self) -> dict[str, dict[str, int | None]]:
        """The `request_types.sla` column: minutes of business time per priority ('d' by this calendar)."""
        day = day_minutes(self.calendar.business())

        def minutes(raw: str | None) -> int | None:
            return None if raw is None else parse_duration(raw, day_minutes=day)

        return {
            str(priority): {
                "first_response_minutes": minutes(self.sla[priority].first_response),
                "resolution_minutes": minutes(self.sla[priority].resolution),
            }
            for priority in Priority
            if priority in self.sla
        }

    def columns(self) -> dict[str, Any]:
        """What the spec stores on a `RequestType` row (the triage channel must be resolved first)."""
        if self.needs_channel_lookup:
            raise ValueError(f"triage channel {self.triage_channel} of {self.name!r} is not resolved yet")
        return {
            "name": self.name,
            "description": self.description,
            "triage_channel_id": self.triage_channel_id,
            "owners": list(self.owners),
            "fields": [f.model_dump(mode="json") for f in self.fields],
            "default_priority": str(self.default_priority),
            "sla": self.sla_minutes(),
            "calendar": self.calendar.to_json(),
        }


DEFAULT_SLA: dict[Priority, SlaTargetSpec] = {
    Priority.urgent: SlaTargetSpec(first_response="1h", resolution="8h"),
    Priority.high: SlaTargetSpec(first_response="4h", resolution="2d"),
    Priority.normal: SlaTargetSpec(first_response="1d", resolution="5d"),
    Priority.low: SlaTargetSpec(first_response="2d", resolution="10d"),
}

DEFAULT_TYPE = RequestTypeSpec(
    name=DEFAULT_TYPE_NAME,
    description="Anything that does not fit another type. Triaged in the channel where it was asked "
    "until an admin sets a triage channel.",
    default_priority=Priority.normal,
    sla=dict(DEFAULT_SLA),
    calendar=CalendarSpec(),  # Mon-Fri 09:00-17:00 UTC
)


# ---- loading the YAML file ------------------------------------------------------------------------


def _render_path(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for part in loc:
        if part == "[key]":
            continue
        if isinstance(part, int):
            parts.append(f" #{part + 1}")
        else:
            parts.append(("." if parts else "") + str(part))
    return "".join(parts)


def _friendly(error: Any) -> str:
    """Pydantic's error, phrased for the person editing the file."""
    kind, value = error["type"], error.get("input")
    ctx = error.get("ctx") or {}
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return "is not a known setting"
    if kind == "string_too_short":
        return "must not be empty"
    if kind == "string_too_long":
        return f"is too long (at most {ctx.get('max_length')} characters)"
    if kind == "enum":
        return f'"{value}" is not one of {ctx.get("expected", "the allowed values")}'
    if kind in ("date_parsing", "date_from_datetime_parsing", "date_type", "date_from_datetime_inexact"):
        return f'"{value}" is not a date like 2026-12-25'
    if kind in ("time_parsing", "time_type"):
        return f'"{value}" is not a time like 09:00'
    if kind == "bool_parsing" or kind == "bool_type":
        return f'"{value}" should be true or false'
    if kind == "list_type":
        return "should be a list"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return "should be a mapping of settings"
    if kind in ("string_type",):
        return f'"{value}" should be text'
    return str(error["msg"]).removeprefix("Value error, ")


def validation_messages(exc: ValidationError) -> list[tuple[str, str]]:
    """(field path, message) for every problem pydantic found."""
    found: list[tuple[str, str]] = []
    for error in exc.errors():
        pair = (_render_path(tuple(error["loc"])), _friendly(error))
        if pair not in found:
            found.append(pair)
    return found


def load_types_yaml(
    source: str | Path, *, filename: str | None = None
) -> tuple[list[RequestTypeSpec], list[str]]:
    """Parses and validates a types file (a Path, or YAML text); returns the specs and every problem found."""
    document, filename, problem = read_yaml(source, filename=filename, default_name="types.yml")
    if problem:
        return [], [problem]
    if not isinstance(document, dict) or not isinstance(document.get("types"), list):
        return [], [f"{filename}: expected a mapping with a list of types under `types:` (see the docs)"]
    errors = [
        f"{filename}: {key}: is not a known setting (use `types:` and optionally `calendar:`)"
        for key in document
        if key not in ("types", "calendar")
    ]
    shared_calendar: Any = document.get("calendar")
    if shared_calendar is not None:
        try:
            CalendarSpec.model_validate(shared_calendar)
        except ValidationError as exc:
            errors += [
                f"{filename}: calendar.{p or ''}".rstrip(".") + f": {m}" for p, m in validation_messages(exc)
            ]
            shared_calendar = None
    if not document["types"]:
        errors.append(f"{filename}: types: the list is empty")
    specs: list[RequestTypeSpec] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(document["types"], start=1):
        name = item.get("name") if isinstance(item, dict) else None
        label = f'type "{name}" (#{index})' if isinstance(name, str) and name.strip() else f"type #{index}"
        if not isinstance(item, dict):
            errors.append(f"{filename}: {label}: should be a mapping of settings (name, sla, …)")
            continue
        if shared_calendar is not None and "calendar" not in item:
            item = {**item, "calendar": shared_calendar}
        key = name.strip().casefold() if isinstance(name, str) else None
        if key and key in seen:
            errors.append(
                f'{filename}: {label}: name: "{name}" is also type #{seen[key]}; names must be unique'
            )
        elif key:
            seen[key] = index
        try:
            spec = RequestTypeSpec.model_validate(item)
        except ValidationError as exc:
            errors += [
                f"{filename}: {label}: {p + ': ' if p else ''}{m}" for p, m in validation_messages(exc)
            ]
            continue
        specs.append(spec)
    return (specs, errors) if not errors else ([], errors)


# ---- services -------------------------------------------------------------------------------------


class UpsertResult(NamedTuple):
    """Names of the types created and updated (the rest were already as in the file)."""

    created: list[str]
    updated: list[str]


def _team_types(db_session: Session, team_id: str) -> list[RequestType]:
    return list(db_session.scalars(select(RequestType).where(RequestType.team_id == team_id)))


def ensure_default_type(*, db_session: Session, team_id: str) -> RequestType:
    """The workspace's default type, created from DEFAULT_TYPE the first time."""
    existing = db_session.scalars(
        select(RequestType).where(RequestType.team_id == team_id, RequestType.is_default.is_(True))
    ).first()
    if existing is not None:
        return existing
    named = get_type_by_name(db_session=db_session, team_id=team_id, name=DEFAULT_TYPE_NAME)
    if named is not None:  # loaded from a file before the default was made: adopt it
        named.is_default = True
        named.archived_at = None
        return named
    try:
        with db_session.begin_nested():
            created = RequestType(team_id=team_id, is_default=True, **DEFAULT_TYPE.columns())
            db_session.add(created)
    except IntegrityError:  # another process made it at the same moment
        found = get_type_by_name(db_session=db_session, team_id=team_id, name=DEFAULT_TYPE_NAME)
        assert found is not None
        return found
    return created


def list_types(*, db_session: Session, team_id: str, include_archived: bool = False) -> list[RequestType]:
    """The workspace's types, the default first, then by name."""
    query = select(RequestType).where(RequestType.team_id == team_id)
    if not include_archived:
        query = query.where(RequestType.archived_at.is_(None))
    types = list(db_session.scalars(query))
    return sorted(types, key=lambda t: (not t.is_default, t.name.casefold()))


def get_type(*, db_session: Session, team_id: str, type_id: int) -> RequestType | None:
    """One type of this workspace by id (archived ones included), or None."""
    found = db_session.get(RequestType, type_id)
    return found if found is not None and found.team_id == team_id else None


def get_type_by_name(*, db_session: Session, team_id: str, name: str) -> RequestType | None:
    """One type by name, case-insensitively (archived ones included), or None."""
    key = name.strip().casefold()
    return next((t for t in _team_types(db_session, team_id) if t.name.casefold() == key), None)


def _differs(row: RequestType, columns: dict[str, Any]) -> bool:
    return row.archived_at is not None or any(getattr(row, k) != v for k, v in columns.items())


def _apply(row: RequestType, columns: dict[str, Any]) -> None:
    for key, value in columns.items():
        if getattr(row, key) != value:
            setattr(row, key, value)
    row.archived_at = None


def upsert_types(
    *, db_session: Session, team_id: str, specs: list[RequestTypeSpec], dry_run: bool = False
) -> UpsertResult:
    """Creates or updates types by name (an archived one comes back); the same file twice changes nothing."""
    by_name = {t.name.casefold(): t for t in _team_types(db_session, team_id)}
    created: list[str] = []
    updated: list[str] = []
    for spec in specs:
        columns = spec.columns()
        row = by_name.get(spec.name.casefold())
        if row is None:
            created.append(spec.name)
            if not dry_run:
                row = RequestType(team_id=team_id, **columns)
                db_session.add(row)
                by_name[spec.name.casefold()] = row
        elif _differs(row, columns):
            updated.append(spec.name)
            if not dry_run:
                _apply(row, columns)
    if not dry_run:
        db_session.flush()
    return UpsertResult(created=created, updated=updated)


class TypeNameTaken(ValueError):
    """Another type of the workspace already has this name."""


def save_type(
    *, db_session: Session, team_id: str, spec: RequestTypeSpec, type_id: int | None = None
) -> RequestType:
    """Creates a type (type_id None) or replaces one's settings; raises TypeNameTaken on a name clash."""
    clash = get_type_by_name(db_session=db_session, team_id=team_id, name=spec.name)
    if clash is not None and clash.id != type_id:
        raise TypeNameTaken(f'There already is a type called "{clash.name}".')
    columns = spec.columns()
    if type_id is None:
        row = RequestType(team_id=team_id, **columns)
        db_session.add(row)
    else:
        found = get_type(db_session=db_session, team_id=team_id, type_id=type_id)
        if found is None:
            raise LookupError(f"request type {type_id} does not exist")
        row = found
        for key, value in columns.items():
            if getattr(row, key) != value:
                setattr(row, key, value)
    db_session.flush()
    return row


def archive_type(*, db_session: Session, team_id: str, type_id: int) -> bool:
    """Hides a type from new requests (existing ones keep it); False when missing or already archived."""
    row = get_type(db_session=db_session, team_id=team_id, type_id=type_id)
    if row is None or row.archived_at is not None:
        return False
    if row.is_default:
        raise ValueError("The default type cannot be archived; it catches requests that fit no other type.")
    row.archived_at = datetime.now(UTC)
    return True


def calendar_spec_of(request_type: RequestType) -> CalendarSpec:
    """The stored calendar (the default Mon-Fri 09:00-17:00 UTC when none is stored)."""
    return CalendarSpec.model_validate(request_type.calendar or {})


def policy_for(request_type: RequestType) -> SlaPolicy:
    """The SLA policy of a type: its calendar and per-priority targets, from the JSON columns."""
    calendar = calendar_spec_of(request_type).business()
    targets: dict[Priority, SlaTarget] = {}
    for priority in Priority:
        stored = (request_type.sla or {}).get(str(priority))
        if not stored:
            continue
        first, resolution = stored.get("first_response_minutes"), stored.get("resolution_minutes")
        targets[priority] = SlaTarget(
            first_response=timedelta(minutes=first) if first else None,
            resolution=timedelta(minutes=resolution) if resolution else None,
        )
    return SlaPolicy(calendar=calendar, targets=targets)


def spec_from_type(request_type: RequestType) -> RequestTypeSpec:
    """The stored type as a spec (durations written back as 2d / 4h / 30m with its calendar's day)."""
    calendar = calendar_spec_of(request_type)
    day = day_minutes(calendar.business())
    sla: dict[Priority, SlaTargetSpec] = {}
    for priority in Priority:
        stored = (request_type.sla or {}).get(str(priority))
        if stored is None:
            continue
        first, resolution = stored.get("first_response_minutes"), stored.get("resolution_minutes")
        sla[priority] = SlaTargetSpec(
            first_response=format_duration(first, day_minutes=day) if first else None,
            resolution=format_duration(resolution, day_minutes=day) if resolution else None,
        )
    return RequestTypeSpec(
        name=request_type.name,
        description=request_type.description,
        triage_channel=request_type.triage_channel_id,
        triage_channel_id=request_type.triage_channel_id,
        owners=list(request_type.owners or []),
        fields=[FieldSpec.model_validate(f) for f in request_type.fields or []],
        default_priority=Priority(request_type.default_priority),
        sla=sla,
        calendar=calendar,
    )


def resolve_channel_names(specs: list[RequestTypeSpec], channel_ids: dict[str, str]) -> list[str]:
    """Fills triage_channel_id from a #name → id map; returns a problem for each name not in the map."""
    problems: list[str] = []
    for index, spec in enumerate(specs, start=1):
        name = spec.channel_name()
        if name is None:
            continue
        if name in channel_ids:
            spec.triage_channel_id = channel_ids[name]
        else:
            problems.append(
                f'type "{spec.name}" (#{index}): triage_channel: there is no channel called #{name} '
                "(or it is archived); check the name or give the channel id"
            )
    return problems
