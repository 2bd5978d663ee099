"""What a digest shows, read from the database: small, session-free dataclasses for `bot.digests.render`.

Every query is scoped by ``team_id`` and by the period (on the indexed ``metric_points (metric_id, ts)``,
``feedback_items (team_id, created_at)`` and ``requests (team_id, status, due_at)``), and aggregates in SQL:
the cost follows the length of the period (and the chart's few periods), never the whole history.

Windows: the digest covers ``[period.start, period.end)``; the *previous* window is the one of the same
length just before it (``[start - length, start)``), and the metric chart shows ``CHART_WINDOWS`` such
windows ending with the digest's own. (A monthly digest's previous window is therefore "the previous 30
or 31 days", not exactly the previous calendar month.)
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy import ColumnElement, Text, and_, case, cast, func, or_, select
from sqlalchemy.orm import Session

from bot.digests.schemas import DigestPeriod
from bot.insights.trends import is_rising, originals_first
from bot.requests import types as request_types
from bot.requests.calendar import BusinessCalendar
from bot.requests.metrics import CLOCK_RUNNING, percentile, request_metrics
from storage.models import (
    Account,
    FeedbackItem,
    Metric,
    MetricPoint,
    Request,
    RequestType,
    Theme,
    ThemeStatus,
    Visibility,
)

CHART_WINDOWS = 8  # periods of the digest's length drawn on the chart (the digest's own is the last)
EXAMPLES_PER_THEME = 2
QUOTE_CHARS = 400  # read at most this much of a quoted item (the renderer shortens it further)
OLDEST_OVERDUE = 3
UNSORTED = "Unsorted"


def windows(period: DigestPeriod, count: int) -> list[tuple[datetime, datetime]]:
    """`count` consecutive windows of the period's length, oldest first, the last one being the period."""
    length = period.end - period.start
    return [(period.end - (i + 1) * length, period.end - i * length) for i in reversed(range(count))]


# ---- metrics -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricSeries:
    """A metric and its summarised value in each chart window (None: no point in that window)."""

    key: str
    name: str
    unit: str
    direction: str
    target: float | None
    summary: str
    window_starts: tuple[datetime, ...]  # oldest first; the last window is the digest's period
    values: tuple[float | None, ...]

    @property
    def current(self) -> float | None:
        """The value over the digest's period."""
        return self.values[-1] if self.values else None

    @property
    def previous(self) -> float | None:
        """The value over the window just before it."""
        return self.values[-2] if len(self.values) >= 2 else None

    @property
    def has_data(self) -> bool:
        """Whether any chart window has a value."""
        return any(v is not None for v in self.values)


@dataclass(frozen=True)
class MetricsData:
    """The selected metrics, in the subscription's order, and the keys that match no active metric."""

    series: list[MetricSeries]
    unknown: list[str]


def _summarised(summary: str, row: Any) -> float:
    value = {
        "sum": row.total,
        "avg": row.mean,
        "max": row.high,
        "min": row.low,
    }.get(summary, row.last_value)  # "last" (and anything unexpected): the value at the latest ts
    return float(value)


def gather_metrics(
    *,
    db_session: Session,
    team_id: str,
    keys: Sequence[str],
    period: DigestPeriod,
    count: int = CHART_WINDOWS,
) -> MetricsData:
    """Each metric summarised (per its `summary`) over `count` windows ending with the period: one query."""
    wanted = list(dict.fromkeys(keys))
    found = (
        {
            m.key: m
            for m in db_session.scalars(
                select(Metric).where(
                    Metric.team_id == team_id, Metric.key.in_(wanted), Metric.archived_at.is_(None)
                )
            )
        }
        if wanted
        else {}
    )
    metrics = [found[k] for k in wanted if k in found]
    spans = windows(period, count)
    values: dict[int, list[float | None]] = {m.id: [None] * count for m in metrics}
    if metrics:
        # The window of each point, newest first so the first match wins; computed in a subquery so the
        # GROUP BY names a plain column (Postgres would not match two renderings of a CASE with parameters).
        index = case(
            *(
                (MetricPoint.ts >= span_start, i)
                for i, (span_start, _end) in reversed(list(enumerate(spans)))
            ),
            else_=0,
        )
        points = (
            select(MetricPoint.metric_id, MetricPoint.ts, MetricPoint.value, index.label("window"))
            .where(
                MetricPoint.team_id == team_id,
                MetricPoint.metric_id.in_(list(values)),
                MetricPoint.ts >= spans[0][0],
                MetricPoint.ts < period.end,
            )
            .subquery()
        )
        grouped = (
            select(
                points.c.metric_id,
                points.c.window,
                func.max(points.c.ts).label("last_ts"),
                func.sum(points.c.value).label("total"),
                func.avg(points.c.value).label("mean"),
                func.max(points.c.value).label("high"),
                func.min(points.c.value).label("low"),
            )
            .group_by(points.c.metric_id, points.c.window)
            .subquery()
        )
        rows = db_session.execute(
            select(grouped, MetricPoint.value.label("last_value")).join(
                MetricPoint,
                and_(MetricPoint.metric_id == grouped.c.metric_id, MetricPoint.ts == grouped.c.last_ts),
            )
        )
        summaries = {m.id: m.summary for m in metrics}
        for row in rows:
            values[row.metric_id][int(row.window)] = _summarised(summaries[row.metric_id], row)
    starts = tuple(s for s, _e in spans)
    return MetricsData(
        series=[
            MetricSeries(
                key=m.key,
                name=m.name,
                unit=m.unit,
                direction=m.direction,
                target=m.target,
                summary=m.summary,
                window_starts=starts,
                values=tuple(values[m.id]),
            )
            for m in metrics
        ],
        unknown=[k for k in wanted if k not in found],
    )


# ---- feedback ------------------------------------------------------------------------------------------

GroupKind = Literal["theme", "tag", "unsorted"]


@dataclass(frozen=True)
class FeedbackExample:
    """A quotable item: public, or from the channel the digest is posted to."""

    text: str
    permalink: str | None
    customer: str | None


@dataclass(frozen=True)
class ThemeStat:
    """One theme (or fallback group) in the period, against the previous window."""

    kind: GroupKind
    name: str
    count: int  # items in the period, private ones included
    previous_count: int
    accounts: int  # distinct accounts in the period
    arr: Decimal  # the sum of those accounts' ARR
    previous_arr: Decimal
    examples: tuple[FeedbackExample, ...] = ()

    @property
    def rising(self) -> bool:
        """An accepted theme growing past the minimum, by the same rule as `/feedback trends`."""
        return self.kind == "theme" and is_rising(self.count, self.previous_count)


@dataclass(frozen=True)
class FeedbackData:
    """The top themes of the period (ranked), with how many more there were."""

    themes: list[ThemeStat]
    more: int  # themes with items in the period beyond the top ones
    items: int  # items in the period (all visibilities)
    previous_items: int


@dataclass
class _Tally:
    count: int = 0
    accounts: dict[int, Decimal] = field(default_factory=dict)

    @property
    def arr(self) -> Decimal:
        return sum(self.accounts.values(), Decimal(0))


def _tags(raw: str | None) -> list[str]:
    try:
        parsed = json.loads(raw) if raw else []
    except ValueError:
        return []
    return [str(t) for t in parsed if str(t).strip()] if isinstance(parsed, list) else []


def _theme_join(team_id: str) -> ColumnElement[bool]:
    """An item's accepted theme (proposals waiting for a person do not group the digest)."""
    return and_(
        Theme.id == FeedbackItem.theme_id, Theme.team_id == team_id, Theme.status == ThemeStatus.active.value
    )


def _grouper(rows: Iterable[Any]) -> dict[str, tuple[GroupKind, str]]:
    """Maps each distinct tag list (as stored) of unthemed items to its group.

    Themes are the item's accepted theme. An item without one is grouped under its tag that is the most common among the unthemed items of
    both windows (ties: alphabetical), and an item without tags under "Unsorted".
    """
    frequency: Counter[str] = Counter()
    tag_lists: dict[str, list[str]] = {}
    for row in rows:
        if row.theme:
            continue
        tags = tag_lists.setdefault(row.tags, _tags(row.tags))
        for tag in set(tags):
            frequency[tag] += row.n
    groups: dict[str, tuple[GroupKind, str]] = {}
    for raw, tags in tag_lists.items():
        if tags:
            best = min(set(tags), key=lambda t: (-frequency[t], t.casefold(), t))
            groups[raw] = ("tag", best)
        else:
            groups[raw] = ("unsorted", UNSORTED)
    return groups


def gather_feedback(
    *,
    db_session: Session,
    team_id: str,
    channel_id: str,
    period: DigestPeriod,
    by: Literal["count", "arr"] = "count",
    top: int = 5,
) -> FeedbackData:
    """Themes ranked by items or ARR: one grouped query for both windows, one for the examples to quote.

    Counts and ARR include every item that is not deleted; the examples are only items that are public or
    come from `channel_id` (where the digest is posted), so a private conversation is never quoted elsewhere.
    """
    (previous_start, _), (start, end) = windows(period, 2)
    theme_key = func.coalesce(Theme.name, "")
    tags_key = case((theme_key == "", func.coalesce(cast(FeedbackItem.tags, Text), "")), else_="")
    in_scope = [
        FeedbackItem.team_id == team_id,
        FeedbackItem.created_at >= previous_start,
        FeedbackItem.created_at < end,
        FeedbackItem.deleted_at.is_(None),
    ]
    account_join = and_(Account.id == FeedbackItem.account_id, Account.team_id == team_id)
    items = (
        select(
            theme_key.label("theme"),
            tags_key.label("tags"),
            FeedbackItem.account_id,
            Account.arr,
            case((FeedbackItem.created_at >= start, 1), else_=0).label("current"),
        )
        .outerjoin(Account, account_join)
        .outerjoin(Theme, _theme_join(team_id))
        .where(*in_scope)
        .subquery()
    )
    rows = db_session.execute(
        select(
            items.c.theme,
            items.c.tags,
            items.c.account_id,
            items.c.arr,
            items.c.current,
            func.count().label("n"),
        ).group_by(items.c.theme, items.c.tags, items.c.account_id, items.c.arr, items.c.current)
    ).all()
    fallback = _grouper(rows)

    def group_of(theme: str, tags: str) -> tuple[GroupKind, str]:
        return ("theme", theme) if theme else fallback[tags]

    tallies: dict[tuple[GroupKind, str], tuple[_Tally, _Tally]] = defaultdict(lambda: (_Tally(), _Tally()))
    totals = [0, 0]  # previous, current
    partitions: dict[tuple[GroupKind, str], set[tuple[str, str]]] = defaultdict(set)
    for row in rows:
        group = group_of(row.theme, row.tags)
        tally = tallies[group][int(row.current)]
        tally.count += row.n
        totals[int(row.current)] += row.n
        if row.account_id is not None:
            tally.accounts[row.account_id] = Decimal(row.arr or 0)
        if row.current:
            partitions[group].add((row.theme, row.tags))

    present = [g for g, (_prev, cur) in tallies.items() if cur.count]
    if by == "arr":
        present.sort(
            key=lambda g: (-tallies[g][1].arr, -tallies[g][1].count, g[0] != "theme", g[1].casefold())
        )
    else:
        present.sort(
            key=lambda g: (-tallies[g][1].count, -tallies[g][1].arr, g[0] != "theme", g[1].casefold())
        )
    chosen = present[:top]

    examples = _examples(
        db_session=db_session,
        team_id=team_id,
        channel_id=channel_id,
        start=start,
        end=end,
        partitions={p for g in chosen for p in partitions[g]},
    )
    quoted: dict[tuple[GroupKind, str], list[tuple[Any, FeedbackExample]]] = defaultdict(list)
    for theme, tags, order, example in examples:
        quoted[group_of(theme, tags)].append((order, example))

    themes = []
    for group in chosen:
        previous, current = tallies[group]
        picks = [e for _o, e in sorted(quoted[group], key=lambda pair: pair[0])[:EXAMPLES_PER_THEME]]
        themes.append(
            ThemeStat(
                kind=group[0],
                name=group[1],
                count=current.count,
                previous_count=previous.count,
                accounts=len(current.accounts),
                arr=current.arr,
                previous_arr=previous.arr,
                examples=tuple(picks),
            )
        )
    return FeedbackData(
        themes=themes, more=len(present) - len(chosen), items=totals[1], previous_items=totals[0]
    )


def _examples(
    *,
    db_session: Session,
    team_id: str,
    channel_id: str,
    start: datetime,
    end: datetime,
    partitions: set[tuple[str, str]],
) -> list[tuple[str, str, tuple[Any, ...], FeedbackExample]]:
    """Up to two quotable items per (theme, tag list) partition: originals before linked duplicates, then the
    biggest account's first, then the newest."""
    if not partitions:
        return []
    themes = sorted({theme for theme, _tags in partitions if theme})
    tag_lists = sorted({tags for theme, tags in partitions if not theme})
    theme_key = func.coalesce(Theme.name, "")
    tags_key = case((theme_key == "", func.coalesce(cast(FeedbackItem.tags, Text), "")), else_="")
    arr = func.coalesce(Account.arr, -1)
    belongs: list[ColumnElement[bool]] = []
    if themes:
        belongs.append(theme_key.in_(themes))
    if tag_lists:
        belongs.append(and_(theme_key == "", tags_key.in_(tag_lists)))
    ranked = (
        select(
            theme_key.label("theme"),
            tags_key.label("tags"),
            func.substr(FeedbackItem.text, 1, QUOTE_CHARS).label("text"),
            FeedbackItem.permalink,
            FeedbackItem.created_at,
            FeedbackItem.id,
            Account.name.label("customer"),
            arr.label("arr"),
            func.row_number()
            .over(
                partition_by=[theme_key, tags_key],
                # Originals before linked duplicates, so an item and its duplicate are not both quoted.
                order_by=[
                    originals_first(),
                    arr.desc(),
                    FeedbackItem.created_at.desc(),
                    FeedbackItem.id.desc(),
                ],
            )
            .label("rank"),
        )
        .outerjoin(Account, and_(Account.id == FeedbackItem.account_id, Account.team_id == team_id))
        .outerjoin(Theme, _theme_join(team_id))
        .where(
            FeedbackItem.team_id == team_id,
            FeedbackItem.created_at >= start,
            FeedbackItem.created_at < end,
            FeedbackItem.deleted_at.is_(None),
            # Privacy: quote only public items, or items from the channel this digest is posted to.
            or_(FeedbackItem.visibility == Visibility.public.value, FeedbackItem.channel_id == channel_id),
            or_(*belongs),
        )
        .subquery()
    )
    rows = db_session.execute(select(ranked).where(ranked.c.rank <= EXAMPLES_PER_THEME)).all()
    return [
        (
            row.theme,
            row.tags,
            (-float(row.arr), -row.created_at.timestamp(), -row.id),
            FeedbackExample(text=row.text, permalink=row.permalink, customer=row.customer),
        )
        for row in rows
    ]


# ---- requests ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OverdueRequest:
    """An overdue request, with a link to where it is handled."""

    id: int
    title: str
    type_name: str
    due_at: datetime
    link: str | None


@dataclass(frozen=True)
class RequestsData:
    """The request queue over the period (opened, closed, p50, breaches) and now (open, overdue)."""

    types: list[str]  # the selected types' names (empty: all types)
    unknown_types: list[str]
    opened: int = 0
    closed: int = 0
    open_now: int = 0
    overdue_now: int = 0
    judged: int = 0
    breached: int = 0
    first_response_p50: timedelta | None = None
    first_responses: int = 0
    oldest_overdue: tuple[OverdueRequest, ...] = ()

    @property
    def breach_rate(self) -> float | None:
        """Breached / judged (see `bot.requests.metrics`), or None when nothing was judged."""
        return self.breached / self.judged if self.judged else None


def _request_link(triage_channel_id: str | None, permalink: str | None) -> str | None:
    if triage_channel_id:
        return f"https://slack.com/app_redirect?channel={triage_channel_id}"
    return permalink


def _first_response_p50(
    db_session: Session, team_id: str, chosen: Sequence[RequestType], start: datetime, end: datetime
) -> tuple[int, timedelta | None]:
    """Business-time p50 of first responses in the period over several types (percentiles do not add up)."""
    by_id = {t.id: t for t in chosen}
    calendars: dict[int, BusinessCalendar] = {}
    durations = []
    for type_id, created_at, answered_at in db_session.execute(
        select(Request.type_id, Request.created_at, Request.first_response_at).where(
            Request.team_id == team_id,
            Request.type_id.in_(list(by_id)),
            Request.first_response_at >= start,
            Request.first_response_at < end,
        )
    ):
        if answered_at is None:
            continue
        if type_id not in calendars:
            calendars[type_id] = request_types.policy_for(by_id[type_id]).calendar
        durations.append(calendars[type_id].business_time_between(created_at, answered_at))
    return len(durations), percentile(durations, 50)


def gather_requests(
    *, db_session: Session, team_id: str, type_names: Sequence[str], period: DigestPeriod, now: datetime
) -> RequestsData:
    """Request metrics of the period for the named types (all when none), and the oldest overdue requests."""
    all_types = list(db_session.scalars(select(RequestType).where(RequestType.team_id == team_id)))
    by_name = {t.name.casefold(): t for t in all_types}
    wanted = list(dict.fromkeys(n.strip() for n in type_names if n.strip()))
    chosen = [by_name[n.casefold()] for n in wanted if n.casefold() in by_name]
    chosen = list({t.id: t for t in chosen}.values())
    unknown = [n for n in wanted if n.casefold() not in by_name]
    if wanted and not chosen:
        return RequestsData(types=[], unknown_types=unknown)
    start, end = period.start, period.end
    single = chosen[0].id if len(chosen) == 1 else None
    report = request_metrics(
        db_session=db_session, team_id=team_id, start=start, end=end, now=now, type_id=single
    )
    if len(chosen) > 1:
        ids = {t.id for t in chosen}
        rows = [row for row in report.by_type if row.type_id in ids]
        counts = {
            k: sum(getattr(r, k) for r in rows) for k in ("opened", "closed", "open_now", "overdue_now")
        }
        judged, breached = sum(r.judged for r in rows), sum(r.breached for r in rows)
        responses, p50 = _first_response_p50(db_session, team_id, chosen, start, end)
    else:
        total = report.total
        counts = {k: getattr(total, k) for k in ("opened", "closed", "open_now", "overdue_now")}
        judged, breached = total.judged, total.breached
        responses, p50 = total.first_response.count, total.first_response.p50
    overdue = select(
        Request.id,
        Request.title,
        Request.due_at,
        Request.triage_channel_id,
        Request.permalink,
        RequestType.name,
    ).join(RequestType, RequestType.id == Request.type_id)
    overdue = overdue.where(
        Request.team_id == team_id, Request.status.in_(CLOCK_RUNNING), Request.due_at < now
    )
    if chosen:
        overdue = overdue.where(Request.type_id.in_([t.id for t in chosen]))
    oldest = tuple(
        OverdueRequest(id=rid, title=title, type_name=type_name, due_at=due, link=_request_link(triage, link))
        for rid, title, due, triage, link, type_name in db_session.execute(
            overdue.order_by(Request.due_at, Request.id).limit(OLDEST_OVERDUE)
        )
        if due is not None
    )
    return RequestsData(
        types=[t.name for t in chosen],
        unknown_types=unknown,
        judged=judged,
        breached=breached,
        first_response_p50=p50,
        first_responses=responses,
        oldest_overdue=oldest,
        **counts,
    )
