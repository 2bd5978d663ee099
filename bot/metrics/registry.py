"""Metric definitions: the YAML file format, its validation, and the services that store metrics per workspace.

File format (YAML)::

    metrics:
      - key: weekly_signups          # slug: lowercase letters, digits, _; 2-64 characters; unique per workspace
        name: Weekly signups
        description: New accounts that finished onboarding
        unit: count                  # count | percent | currency | duration | ratio
        direction: up_is_good        # up_is_good | down_is_good
        target: 250                  # optional
        summary: sum                 # last | sum | avg | max | min: how the points of a period are summarised
        period: week                 # day | week | month (default week)
        owner: U0123ABC              # optional Slack user id
        source: sql                  # manual | push | sql | builtin
        sql: {datasource: WAREHOUSE, query: "select ..."}   # sql only: PRODOPS_DATASOURCE_WAREHOUSE holds the URL
        schedule: {cron: "0 6 * * mon", timezone: Europe/London}   # required for sql and builtin, not allowed otherwise
        alerts:
          - {kind: below, threshold: 200, channel: C0123ABC}
          - {kind: change, threshold: 20, channel: C0123ABC, cooldown: 1d}   # ±20 % vs the previous period
          - {kind: anomaly, window: 8, k: 3, channel: C0123ABC}              # 3 σ off the trailing 8 periods

A builtin metric names one of BUILTINS instead: ``builtin: {name: requests_opened, params: {...}}``.
Manual and push metrics get their points from people (`/metric`) and the push API, never on a schedule.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from zoneinfo import available_timezones

from apscheduler.triggers.cron import CronTrigger
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.cron import cron_trigger
from bot.spec_files import read_yaml
from storage.models import Metric, MetricAlert
from storage.types import utcnow

KEY = re.compile(r"^[a-z][a-z0-9_]{1,63}$")
KEY_HINT = "use 2-64 lowercase letters, digits and _, starting with a letter (e.g. weekly_signups)"
DATASOURCE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,39}$")
DATASOURCE_ENV_PREFIX = "PRODOPS_DATASOURCE_"
USER_ID = re.compile(r"^<?@?([UW][A-Z0-9]{2,})(?:\|[^>]*)?>?$")
CHANNEL_ID = re.compile(r"^<?#?([CG][A-Z0-9]{6,})(?:\|[^>]*)?>?$")
COOLDOWN = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?$")
DEFAULT_COOLDOWN_MINUTES = 1440
MAX_QUERY_CHARS = 20_000

Unit = Literal["count", "percent", "currency", "duration", "ratio"]
Direction = Literal["up_is_good", "down_is_good"]
Summary = Literal["last", "sum", "avg", "max", "min"]
Period = Literal["day", "week", "month"]
Source = Literal["manual", "push", "sql", "builtin"]
AlertKind = Literal["above", "below", "change", "anomaly"]
Builtin = Literal[
    "feedback_items",
    "requests_opened",
    "requests_closed",
    "requests_open",
    "requests_overdue",
    "sla_breach_rate",
    "time_to_first_response",
]
SCHEDULED_SOURCES = ("sql", "builtin")


def datasource_env(name: str) -> str:
    """The environment variable that holds a datasource's database URL: PRODOPS_DATASOURCE_<NAME>."""
    return DATASOURCE_ENV_PREFIX + name.upper()


# ---- the spec -------------------------------------------------------------------------------------


_ZONES: set[str] = set()


def _zones() -> set[str]:
    if not _ZONES:
        _ZONES.update(available_timezones())
    return _ZONES


def _finite(value: float | None) -> float | None:
    if value is not None and not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


class SqlSourceSpec(BaseModel):
    """`sql:` — a read-only query against a named datasource."""

    model_config = ConfigDict(extra="forbid")

    datasource: str
    query: str = Field(min_length=1, max_length=MAX_QUERY_CHARS)

    @field_validator("datasource")
    @classmethod
    def _name(cls, value: str) -> str:
        value = value.strip()
        if not DATASOURCE.match(value):
            raise ValueError(
                f'"{value}" is not a datasource name: use letters, digits and _ (its URL goes in '
                f"{DATASOURCE_ENV_PREFIX}<NAME>)"
            )
        return value.upper()

    @field_validator("query")
    @classmethod
    def _query(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("must not be empty")
        return value


class BuiltinSourceSpec(BaseModel):
    """`builtin:` — a number ProdOps computes from its own data."""

    model_config = ConfigDict(extra="forbid")

    name: Builtin
    params: dict[str, Any] = {}


class ScheduleSpec(BaseModel):
    """`schedule:` — when a pulled metric is collected: a 5-field cron expression in a time zone."""

    model_config = ConfigDict(extra="forbid")

    cron: str
    timezone: str = "UTC"

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        value = value.strip()
        if value not in _zones():
            close = difflib.get_close_matches(value, sorted(_zones()), n=1)
            hint = f' — did you mean "{close[0]}"?' if close else " — use an IANA name like Europe/London"
            raise ValueError(f'"{value}" is not a time zone{hint}')
        return value

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        value = " ".join(value.split())
        try:
            cron_trigger(value, "UTC")
        except ValueError as exc:
            raise ValueError(
                f'"{value}" is not a 5-field cron expression like "0 6 * * mon" ({exc})'
            ) from None
        return value

    @model_validator(mode="after")
    def _fires(self) -> ScheduleSpec:
        if self.trigger().get_next_fire_time(None, utcnow()) is None:
            raise ValueError(f'cron: "{self.cron}" never fires')
        return self

    def trigger(self) -> CronTrigger:
        """The APScheduler trigger (DST-aware in its time zone)."""
        return cron_trigger(self.cron, self.timezone)


def next_run(*, cron: str, timezone: str, now: datetime) -> datetime | None:
    """The first fire time after `now` (aware UTC), computed in the schedule's zone so DST is right."""
    fire = cron_trigger(cron, timezone).get_next_fire_time(None, now)
    return fire.astimezone(UTC) if fire is not None else None


def parse_cooldown(raw: Any) -> int:
    """Minutes from 90 (minutes), "30m", "6h", "1d", "1d12h" (calendar time)."""
    if isinstance(raw, bool):
        raise ValueError(f'"{raw}" is not a cooldown: give minutes or a duration like 30m, 6h or 1d')
    if isinstance(raw, int):
        minutes = raw
    else:
        match = COOLDOWN.match(str(raw).strip().lower().replace(" ", ""))
        if match is None or not any(match.groups()):
            raise ValueError(f'"{raw}" is not a cooldown: give minutes or a duration like 30m, 6h or 1d')
        days, hours, mins = (int(g or 0) for g in match.groups())
        minutes = days * 1440 + hours * 60 + mins
    if not 0 <= minutes <= 60 * 24 * 366:
        raise ValueError(f"{raw} is out of range (0 to 366 days)")
    return minutes


class AlertSpec(BaseModel):
    """One alert rule: above/below a line, a change vs the previous period (percent), or an anomaly."""

    model_config = ConfigDict(extra="forbid")

    kind: AlertKind
    threshold: float | None = None
    window: int | None = Field(default=None, ge=3, le=520)
    k: float | None = Field(default=None, gt=0, le=100)
    channel: str
    cooldown: int = DEFAULT_COOLDOWN_MINUTES  # minutes

    @field_validator("threshold", "k")
    @classmethod
    def _finite_numbers(cls, value: float | None) -> float | None:
        return _finite(value)

    @field_validator("channel", mode="before")
    @classmethod
    def _channel(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        match = CHANNEL_ID.match(value.strip())
        if match is None:
            raise ValueError(
                f'"{value}" is not a channel id (like C0123ABC: channel details → About → Channel ID)'
            )
        return match.group(1)

    @field_validator("cooldown", mode="before")
    @classmethod
    def _cooldown(cls, value: Any) -> Any:
        return DEFAULT_COOLDOWN_MINUTES if value is None else parse_cooldown(value)

    @model_validator(mode="after")
    def _fits_kind(self) -> AlertSpec:
        if self.kind in ("above", "below", "change"):
            if self.threshold is None:
                what = "the percent change that fires it" if self.kind == "change" else "the line"
                article = "an" if self.kind == "above" else "a"
                raise ValueError(f"threshold: {article} {self.kind} alert needs a threshold ({what})")
            if self.window is not None or self.k is not None:
                raise ValueError(f"window and k are for anomaly alerts, not {self.kind}")
            if self.kind == "change" and self.threshold <= 0:
                raise ValueError("threshold: a change alert's threshold is a percent above 0 (e.g. 20)")
        else:
            if self.threshold is not None:
                raise ValueError("threshold: anomaly alerts use window and k, not a threshold")
            self.window = 8 if self.window is None else self.window
            self.k = 3.0 if self.k is None else self.k
        return self

    def identity(self) -> tuple[Any, ...]:
        """What makes two rules the same rule (a stored alert matching it is kept, with its history)."""
        return (self.kind, self.threshold, self.window, self.k, self.channel, self.cooldown)


class MetricSpec(BaseModel):
    """One metric as written in the YAML file or the define modal."""

    model_config = ConfigDict(extra="forbid")

    key: str
    name: str = Field(min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=2000)
    unit: Unit
    direction: Direction = "up_is_good"
    target: float | None = None
    summary: Summary
    period: Period = "week"
    owner: str | None = None
    source: Source
    sql: SqlSourceSpec | None = None
    builtin: BuiltinSourceSpec | None = None
    schedule: ScheduleSpec | None = None
    alerts: list[AlertSpec] = []

    @field_validator("key")
    @classmethod
    def _slug(cls, value: str) -> str:
        value = value.strip()
        if not KEY.match(value):
            raise ValueError(f'"{value}" is not a metric key: {KEY_HINT}')
        return value

    @field_validator("name", "description", mode="before")
    @classmethod
    def _strip(cls, value: Any) -> Any:
        return value.strip() if isinstance(value, str) else value

    @field_validator("description")
    @classmethod
    def _empty_is_none(cls, value: str | None) -> str | None:
        return value or None

    @field_validator("target")
    @classmethod
    def _finite_target(cls, value: float | None) -> float | None:
        return _finite(value)

    @field_validator("owner", mode="before")
    @classmethod
    def _owner(cls, value: Any) -> Any:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        match = USER_ID.match(str(value).strip())
        if match is None:
            raise ValueError(
                f'"{value}" is not a Slack user id (like U0123ABC: profile → ⋮ → Copy member ID)'
            )
        return match.group(1)

    @model_validator(mode="after")
    def _source_settings(self) -> MetricSpec:
        problems = source_problems(
            self.source,
            sql=self.sql is not None,
            builtin=self.builtin is not None,
            schedule=self.schedule is not None,
        )
        if problems:
            raise ValueError(problems[0])  # load_metrics_yaml lists the others too
        return self

    def source_config(self) -> dict[str, Any]:
        """The `metrics.source_config` column."""
        if self.sql is not None:
            return self.sql.model_dump()
        if self.builtin is not None:
            return self.builtin.model_dump()
        return {}

    def columns(self) -> dict[str, Any]:
        """What the spec stores on a `Metric` row (next_run_at is the service's job)."""
        return {
            "name": self.name,
            "description": self.description,
            "unit": self.unit,
            "direction": self.direction,
            "target": self.target,
            "summary": self.summary,
            "period": self.period,
            "owner_user_id": self.owner,
            "source": self.source,
            "source_config": self.source_config(),
            "schedule_cron": self.schedule.cron if self.schedule else None,
            "schedule_timezone": self.schedule.timezone if self.schedule else "UTC",
        }


# ---- loading the YAML file ------------------------------------------------------------------------


def _render_path(loc: tuple[int | str, ...]) -> str:
    """('alerts', 1, 'threshold') → 'alerts #2.threshold' (items counted from 1, as people do)."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f" #{part + 1}"
        elif part in ("[key]",) or str(part).startswith("function-"):
            continue
        else:
            text += ("." if text else "") + str(part)
    return text


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
    if kind == "literal_error":
        return f'"{value}" is not one of {ctx.get("expected", "the allowed values")}'
    if kind in ("float_parsing", "float_type", "int_parsing", "int_type", "int_from_float"):
        return (
            f'"{value}" is not a number' if kind.startswith("float") else f'"{value}" is not a whole number'
        )
    if kind == "finite_number":
        return "must be a finite number"
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        return str(error["msg"]).replace("Input should be", "should be")
    if kind == "list_type":
        return "should be a list"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return "should be a mapping of settings"
    if kind == "string_type":
        return f'"{value}" should be text'
    return str(error["msg"]).removeprefix("Value error, ")


def validation_messages(exc: ValidationError) -> list[tuple[str, str]]:
    """(field path, message) for every problem pydantic found; a message naming its own field moves it there."""
    found: list[tuple[str, str]] = []
    for error in exc.errors():
        path, message = _render_path(tuple(error["loc"])), _friendly(error)
        own = re.match(r"^([a-z_]+): (.+)$", message, flags=re.DOTALL)
        if own and error["type"] == "value_error":  # a model-level check naming its field: report it there
            path = f"{path}.{own.group(1)}" if path else own.group(1)
            message = own.group(2)
        if (path, message) not in found:
            found.append((path, message))
    return found


def source_problems(source: Any, *, sql: bool, builtin: bool, schedule: bool) -> list[str]:
    """Every way the source's own settings (sql, builtin, schedule) do not fit the source."""
    problems = []
    if source == "sql" and not sql:
        problems.append("sql: a sql metric needs `sql: {datasource: NAME, query: ...}`")
    if source == "builtin" and not builtin:
        problems.append("builtin: a builtin metric needs `builtin: {name: ...}`")
    if source != "sql" and sql:
        problems.append(f"sql: only sql metrics have a query (this one's source is {source})")
    if source != "builtin" and builtin:
        problems.append(f"builtin: only builtin metrics name a builtin (this one's source is {source})")
    if source in SCHEDULED_SOURCES and not schedule:
        problems.append(
            f'schedule: a {source} metric is pulled on a schedule: add `schedule: {{cron: "0 6 * * *", '
            "timezone: Europe/London}`"
        )
    if source in ("manual", "push") and schedule:
        problems.append(
            f"schedule: {source} metrics get their points from "
            f"{'people (/metric)' if source == 'manual' else 'the push API'}, not on a schedule; "
            "remove the schedule"
        )
    return problems


def load_metrics_yaml(
    source: str | Path, *, filename: str | None = None
) -> tuple[list[MetricSpec], list[str]]:
    """Parses and validates a metrics file (a Path, or YAML text); returns the specs, or no specs and every problem."""
    document, filename, problem = read_yaml(source, filename=filename, default_name="metrics.yml")
    if problem:
        return [], [problem]
    if not isinstance(document, dict) or not isinstance(document.get("metrics"), list):
        return [], [f"{filename}: expected a mapping with a list of metrics under `metrics:`"]
    errors = [
        f"{filename}: {key}: is not a known setting (use `metrics:`)" for key in document if key != "metrics"
    ]
    if not document["metrics"]:
        errors.append(f"{filename}: metrics: the list is empty")
    specs: list[MetricSpec] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(document["metrics"], start=1):
        key = item.get("key") if isinstance(item, dict) else None
        label = f'metric "{key}" (#{index})' if isinstance(key, str) and key.strip() else f"metric #{index}"
        if not isinstance(item, dict):
            errors.append(f"{filename}: {label}: should be a mapping of settings (key, name, unit, …)")
            continue
        if isinstance(key, str) and key.strip() in seen:
            errors.append(
                f'{filename}: {label}: key: "{key}" is also metric #{seen[key.strip()]}; keys must be unique'
            )
        elif isinstance(key, str):
            seen[key.strip()] = index
        found: list[str] = []
        try:
            specs.append(MetricSpec.model_validate(item))
        except ValidationError as exc:
            found = [f"{p + ': ' if p else ''}{m}" for p, m in validation_messages(exc)]
        # The source rules run only once every field is valid; check them here too, so all come at once.
        raw_source = item.get("source")
        has = {name: item.get(name) is not None for name in ("sql", "builtin", "schedule")}
        found += (
            [p for p in source_problems(raw_source, **has) if p not in found]
            if isinstance(raw_source, str)
            else []
        )
        errors += [f"{filename}: {label}: {problem}" for problem in found]
    return (specs, errors) if not errors else ([], errors)


# ---- services -------------------------------------------------------------------------------------


@dataclass
class UpsertResult:
    """Keys of the metrics created and updated (the rest were already as in the file)."""

    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)


def get_metric(*, db_session: Session, team_id: str, key: str) -> Metric | None:
    """One metric of this workspace by key (archived ones included), or None."""
    return db_session.scalars(select(Metric).where(Metric.team_id == team_id, Metric.key == key)).first()


def list_metrics(*, db_session: Session, team_id: str, include_archived: bool = False) -> list[Metric]:
    """The workspace's metrics by key."""
    query = select(Metric).where(Metric.team_id == team_id)
    if not include_archived:
        query = query.where(Metric.archived_at.is_(None))
    return list(db_session.scalars(query.order_by(Metric.key)))


def list_alerts(*, db_session: Session, team_id: str, metric_id: int) -> list[MetricAlert]:
    """A metric's alert rules, oldest first."""
    return list(
        db_session.scalars(
            select(MetricAlert)
            .where(MetricAlert.team_id == team_id, MetricAlert.metric_id == metric_id)
            .order_by(MetricAlert.id)
        )
    )


def _alert_identity(row: MetricAlert) -> tuple[Any, ...]:
    return (row.kind, row.threshold, row.window, row.k, row.channel_id, row.cooldown_minutes)


def _sync_alerts(
    db_session: Session, *, team_id: str, metric: Metric, alerts: list[AlertSpec], dry_run: bool
) -> bool:
    """Makes the metric's rules match the file: matching rules are kept (with their history), others go."""
    existing = list_alerts(db_session=db_session, team_id=team_id, metric_id=metric.id) if metric.id else []
    unmatched = list(existing)
    to_add: list[AlertSpec] = []
    for spec in alerts:
        match = next((row for row in unmatched if _alert_identity(row) == spec.identity()), None)
        if match is not None:
            unmatched.remove(match)
        else:
            to_add.append(spec)
    if dry_run or (not unmatched and not to_add):
        return bool(unmatched or to_add)
    for row in unmatched:
        db_session.delete(row)
    for spec in to_add:
        db_session.add(
            MetricAlert(
                team_id=team_id,
                metric_id=metric.id,
                kind=spec.kind,
                threshold=spec.threshold,
                window=spec.window,
                k=spec.k,
                channel_id=spec.channel,
                cooldown_minutes=spec.cooldown,
                created_by_user_id=metric.owner_user_id,
            )
        )
    return True


def _schedule_changed(row: Metric, columns: dict[str, Any]) -> bool:
    return (row.schedule_cron, row.schedule_timezone) != (
        columns["schedule_cron"],
        columns["schedule_timezone"],
    )


def _next_run_at(columns: dict[str, Any], now: datetime) -> datetime | None:
    if columns["schedule_cron"] is None:
        return None
    return next_run(cron=columns["schedule_cron"], timezone=columns["schedule_timezone"], now=now)


def upsert_metrics(
    *,
    db_session: Session,
    team_id: str,
    specs: list[MetricSpec],
    dry_run: bool = False,
    now: datetime | None = None,
) -> UpsertResult:
    """Creates or updates metrics by key (an archived one comes back); the same file twice changes nothing.

    Alerts are replaced to match the file. `next_run_at` is computed for scheduled metrics when they are new,
    revived, or their schedule changed; metrics not in the file are left alone.
    """
    now = now or utcnow()
    by_key = {m.key: m for m in list_metrics(db_session=db_session, team_id=team_id, include_archived=True)}
    result = UpsertResult()
    for spec in specs:
        columns = spec.columns()
        row = by_key.get(spec.key)
        if row is None:
            result.created.append(spec.key)
            if dry_run:
                continue
            row = Metric(team_id=team_id, key=spec.key, next_run_at=_next_run_at(columns, now), **columns)
            db_session.add(row)
            db_session.flush()
            by_key[spec.key] = row
            _sync_alerts(db_session, team_id=team_id, metric=row, alerts=spec.alerts, dry_run=False)
            continue
        revived = row.archived_at is not None
        reschedule = (
            revived
            or _schedule_changed(row, columns)
            or (columns["schedule_cron"] is not None and row.next_run_at is None)
        )
        changed = revived or reschedule or any(getattr(row, k) != v for k, v in columns.items())
        alerts_changed = _sync_alerts(
            db_session, team_id=team_id, metric=row, alerts=spec.alerts, dry_run=dry_run
        )
        (result.updated if changed or alerts_changed else result.unchanged).append(spec.key)
        if dry_run or not changed:
            continue
        for name, value in columns.items():
            if getattr(row, name) != value:
                setattr(row, name, value)
        if reschedule:
            row.next_run_at = _next_run_at(columns, now)
        row.archived_at = None
    if not dry_run:
        db_session.flush()
    return result


class MetricKeyTaken(ValueError):
    """Another metric of the workspace already has this key."""


def create_metric(
    *, db_session: Session, team_id: str, spec: MetricSpec, now: datetime | None = None
) -> Metric:
    """Creates one metric (the define modal); raises MetricKeyTaken when the key is used, even by an archived one."""
    existing = get_metric(db_session=db_session, team_id=team_id, key=spec.key)
    if existing is not None:
        state = " (archived)" if existing.archived_at is not None else ""
        raise MetricKeyTaken(f"There already is a metric `{spec.key}`{state}; pick another key.")
    columns = spec.columns()
    row = Metric(team_id=team_id, key=spec.key, next_run_at=_next_run_at(columns, now or utcnow()), **columns)
    db_session.add(row)
    db_session.flush()
    _sync_alerts(db_session, team_id=team_id, metric=row, alerts=spec.alerts, dry_run=False)
    return row


def archive_metric(*, db_session: Session, team_id: str, key: str) -> bool:
    """Hides a metric and stops its schedule (points and alerts are kept); False when missing or archived."""
    row = get_metric(db_session=db_session, team_id=team_id, key=key)
    if row is None or row.archived_at is not None:
        return False
    row.archived_at = utcnow()
    row.next_run_at = None
    return True
