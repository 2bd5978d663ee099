"""Request metrics and listings: read-only queries for `/request stats`, `/request list`, App Home and digests.

Definitions (a period is the half-open interval ``[start, end)``; ``now`` is passed in, never read here):

- *opened*: requests created in the period.
- *closed*: requests done or declined whose ``resolved_at`` is in the period (a reopened request has no
  ``resolved_at`` until it is closed again).
- *open now* / *overdue now*: a snapshot at ``now``, whatever the period: open (new, in progress, waiting);
  overdue is new or in progress with ``due_at < now`` (a waiting request's resolution clock is paused).
- *time to first response*: business time, on the calendar of the request's type, from ``created_at`` to
  ``first_response_at``, for requests first answered in the period.
- *time to resolution*: business time from ``created_at`` to ``resolved_at`` (waiting included), for
  requests closed in the period.
- Percentiles use the nearest-rank method: p-th = the ⌈p·n/100⌉-th smallest of n values.
- *breach rate* = breached / judged, where *judged* counts the requests whose resolution target came due
  for judgement in the period: (a) closed in the period with a ``due_at``, breached when
  ``resolved_at > due_at``; and (b) still new or in progress whose ``due_at`` fell in
  ``[start, min(end, now))``, all breached. None when nothing was judged.

Counts are computed by the database (GROUP BY type and assignee); only the durations are computed in
Python, over the few columns of the requests answered or closed in the period.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, computed_field
from sqlalchemy import ColumnElement, and_, case, func, or_, select, union
from sqlalchemy.orm import Session

from bot.requests import types as request_types
from bot.requests.calendar import BusinessCalendar
from bot.requests.service import CLOSED_STATUSES, OPEN_STATUSES
from storage.models import Request, RequestStatus, RequestType

# Statuses whose resolution clock runs (a waiting request cannot become overdue).
CLOCK_RUNNING = (RequestStatus.new.value, RequestStatus.in_progress.value)


class Durations(BaseModel):
    """Percentiles of a set of business-time durations."""

    count: int = 0
    p50: timedelta | None = None
    p90: timedelta | None = None


class MetricsRow(BaseModel):
    """The metrics of one slice of requests (all, one type, or one assignee)."""

    opened: int = 0
    closed: int = 0
    open_now: int = 0
    overdue_now: int = 0
    judged: int = 0
    breached: int = 0
    first_response: Durations = Durations()
    resolution: Durations = Durations()

    @computed_field  # type: ignore[prop-decorator]
    @property
    def breach_rate(self) -> float | None:
        """Breached / judged (see the module docstring), or None when nothing was judged."""
        return self.breached / self.judged if self.judged else None


class TypeMetrics(MetricsRow):
    """Metrics of one request type."""

    type_id: int
    type_name: str


class AssigneeMetrics(MetricsRow):
    """Metrics of one assignee (None: unassigned)."""

    assignee_user_id: str | None


class RequestMetrics(BaseModel):
    """Metrics of a workspace's requests over a period, in total and per type and per assignee."""

    team_id: str
    start: datetime
    end: datetime
    now: datetime
    type_id: int | None = None
    assignee_user_id: str | None = None
    total: MetricsRow
    by_type: list[TypeMetrics]
    by_assignee: list[AssigneeMetrics]


def percentile(values: list[timedelta], p: int) -> timedelta | None:
    """The nearest-rank p-th percentile of `values` (any order), or None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-p * len(ordered) // 100))
    return ordered[rank - 1]


def _durations(values: list[timedelta]) -> Durations:
    return Durations(count=len(values), p50=percentile(values, 50), p90=percentile(values, 90))


def _count(condition: ColumnElement[bool]) -> ColumnElement[int]:
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


def _scope(team_id: str, type_id: int | None, assignee_user_id: str | None) -> list[ColumnElement[bool]]:
    conditions = [Request.team_id == team_id]
    if type_id is not None:
        conditions.append(Request.type_id == type_id)
    if assignee_user_id is not None:
        conditions.append(Request.assignee_user_id == assignee_user_id)
    return conditions


_COUNTS = ("opened", "closed", "open_now", "overdue_now", "judged", "breached")


def _ids_where(scope: list[Any], *alternatives: Any) -> Any:
    """Ids matching any alternative, as a UNION: each part is one index range, where an OR would scan the
    workspace's whole history (the cost must follow the period, not the history)."""
    return union(*(select(Request.id).where(*scope, alternative) for alternative in alternatives))


def request_metrics(
    *,
    db_session: Session,
    team_id: str,
    start: datetime,
    end: datetime,
    now: datetime,
    type_id: int | None = None,
    assignee_user_id: str | None = None,
) -> RequestMetrics:
    """Counts, business-time percentiles and breach rate of requests in `[start, end)` (module docstring)."""
    created_in = and_(Request.created_at >= start, Request.created_at < end)
    resolved_in = and_(
        Request.status.in_(CLOSED_STATUSES), Request.resolved_at >= start, Request.resolved_at < end
    )
    open_now = Request.status.in_(OPEN_STATUSES)
    overdue_now = and_(Request.status.in_(CLOCK_RUNNING), Request.due_at < now)
    past_due_in = and_(overdue_now, Request.due_at >= start, Request.due_at < min(end, now))
    judged_closed = and_(resolved_in, Request.due_at.is_not(None))
    scope = _scope(team_id, type_id, assignee_user_id)
    counts = (
        select(
            Request.type_id,
            Request.assignee_user_id,
            _count(created_in).label("opened"),
            _count(resolved_in).label("closed"),
            _count(open_now).label("open_now"),
            _count(overdue_now).label("overdue_now"),
            _count(or_(judged_closed, past_due_in)).label("judged"),
            _count(or_(and_(judged_closed, Request.resolved_at > Request.due_at), past_due_in)).label(
                "breached"
            ),
        )
        .where(Request.id.in_(_ids_where(scope, created_in, resolved_in, open_now)))
        .group_by(Request.type_id, Request.assignee_user_id)
    )
    count_rows = db_session.execute(counts).all()

    responded_in = and_(Request.first_response_at >= start, Request.first_response_at < end)
    timing = select(
        Request.type_id,
        Request.assignee_user_id,
        Request.created_at,
        Request.first_response_at,
        Request.resolved_at,
        Request.status,
    ).where(Request.id.in_(_ids_where(scope, responded_in, resolved_in)))
    timing_rows = db_session.execute(timing).all()

    types = {t.id: t for t in db_session.scalars(select(RequestType).where(RequestType.team_id == team_id))}
    calendars: dict[int, BusinessCalendar] = {}

    def calendar(of_type: int) -> BusinessCalendar:
        if of_type not in calendars:
            calendars[of_type] = request_types.policy_for(types[of_type]).calendar
        return calendars[of_type]

    first: dict[tuple[int, str | None], list[timedelta]] = defaultdict(list)
    resolution: dict[tuple[int, str | None], list[timedelta]] = defaultdict(list)
    for row in timing_rows:
        key = (row.type_id, row.assignee_user_id)
        cal = calendar(row.type_id)
        if row.first_response_at is not None and start <= row.first_response_at < end:
            first[key].append(cal.business_time_between(row.created_at, row.first_response_at))
        if row.status in CLOSED_STATUSES and row.resolved_at is not None and start <= row.resolved_at < end:
            resolution[key].append(cal.business_time_between(row.created_at, row.resolved_at))

    groups = {
        (row.type_id, row.assignee_user_id): {k: int(getattr(row, k)) for k in _COUNTS} for row in count_rows
    }
    for key in (*first, *resolution):
        groups.setdefault(key, dict.fromkeys(_COUNTS, 0))

    def rollup(keys: Iterable[tuple[int, str | None]]) -> dict[str, Any]:
        chosen = list(keys)
        summed: dict[str, Any] = {k: sum(groups[g][k] for g in chosen) for k in _COUNTS}
        summed["first_response"] = _durations([d for g in chosen for d in first.get(g, [])])
        summed["resolution"] = _durations([d for g in chosen for d in resolution.get(g, [])])
        return summed

    type_ids = sorted({g[0] for g in groups}, key=lambda t: (types[t].name.casefold(), t))
    assignees = sorted({g[1] for g in groups}, key=lambda a: (a is None, a or ""))
    return RequestMetrics(
        team_id=team_id,
        start=start,
        end=end,
        now=now,
        type_id=type_id,
        assignee_user_id=assignee_user_id,
        total=MetricsRow(**rollup(groups)),
        by_type=[
            TypeMetrics(type_id=t, type_name=types[t].name, **rollup(g for g in groups if g[0] == t))
            for t in type_ids
        ],
        by_assignee=[
            AssigneeMetrics(assignee_user_id=a, **rollup(g for g in groups if g[1] == a)) for a in assignees
        ],
    )


# ---- listings ---------------------------------------------------------------------------------------


class RequestListQuery(BaseModel):
    """Filters of `/request list` and App Home; open requests first (overdue first), then recently closed."""

    requester_user_id: str | None = None
    assignee_user_id: str | None = None
    type_id: int | None = None
    open_only: bool = True
    overdue_only: bool = False


def _overdue(now: datetime) -> ColumnElement[bool]:
    return and_(Request.status.in_(CLOCK_RUNNING), Request.due_at < now)


def _filters(team_id: str, query: RequestListQuery, now: datetime) -> list[ColumnElement[bool]]:
    conditions = _scope(team_id, query.type_id, query.assignee_user_id)
    if query.requester_user_id is not None:
        conditions.append(Request.requester_user_id == query.requester_user_id)
    if query.overdue_only:
        conditions.append(_overdue(now))
    elif query.open_only:
        conditions.append(Request.status.in_(OPEN_STATUSES))
    return conditions


def list_requests(
    *,
    db_session: Session,
    team_id: str,
    query: RequestListQuery,
    now: datetime,
    page: int = 1,
    page_size: int = 10,
) -> tuple[list[Request], bool]:
    """One page of requests: overdue, then other open ones by due date, then closed, newest first."""
    is_open = Request.status.in_(OPEN_STATUSES)
    rank = case((_overdue(now), 0), (is_open, 1), else_=2)
    open_due = case((is_open, Request.due_at), else_=None)
    stmt = (
        select(Request)
        .where(*_filters(team_id, query, now))
        .order_by(rank, open_due.is_(None), open_due, Request.resolved_at.desc(), Request.id.desc())
    )
    rows = list(db_session.scalars(stmt.offset((max(page, 1) - 1) * page_size).limit(page_size + 1)).unique())
    return rows[:page_size], len(rows) > page_size


def count_requests(*, db_session: Session, team_id: str, query: RequestListQuery, now: datetime) -> int:
    """How many requests match the query (for "and N more")."""
    stmt = select(func.count(Request.id)).where(*_filters(team_id, query, now))
    return int(db_session.scalar(stmt) or 0)
