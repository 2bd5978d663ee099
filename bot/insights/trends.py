"""Theme trends: per accepted theme and period, how many items, accounts and ARR, against the period before.

Cost. The numbers come from ONE grouped query over the two windows (``[previous_start, end)``, a range of the
``feedback_items (team_id, created_at)`` index): items are grouped by (theme, window, account) in the
database, and those groups by (theme, window) with the accounts' ARR summed once per account. Python only
sees one row per theme and window. First/last seen (over the theme's whole history) and the quoted example
are read for the themes shown only (``themes.id`` index, and one window-function query over the same range).

Rules.
* Only ``active`` themes group items; an item without one (or whose theme is still a proposal, merged away
  or dismissed) is counted as *unsorted*, apart. Deleted items are not counted; duplicates are (each is a
  customer asking).
* Windows: the period is ``[start, end)``; the previous window is the one of the same length just before it.
  ``/feedback trends`` uses the last 7 (week) or 30 (month) days ending now.
* Rising: at least ``min_count`` items this period and more than the period before; rising themes come
  first (largest growth first), the rest by count, then ARR.
* Examples (privacy: README, How it works): only an item that is public, or that comes from ``channel_id`` (where the
  answer is shown), is ever quoted or linked.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Literal

from sqlalchemy import ColumnElement, and_, case, func, or_, select
from sqlalchemy.orm import Session

from storage.models import Account, FeedbackItem, Theme, ThemeStatus, Visibility
from storage.types import utcnow

TrendPeriod = Literal["week", "month"]
PERIOD_DAYS: dict[str, int] = {"week": 7, "month": 30}
MIN_RISING_COUNT = 3
QUOTE_CHARS = 300


def is_rising(count: int, previous_count: int, min_count: int = MIN_RISING_COUNT) -> bool:
    """A theme is rising when it has at least `min_count` items this period and more than the period before
    (the rule `/feedback trends` and the digest share)."""
    return count >= min_count and count > previous_count


def originals_first() -> ColumnElement[int]:
    """An ordering key putting items that are not linked duplicates first (0) and duplicates after (1): the
    original says it as well, and was said first, so quotes pick it."""
    return case((FeedbackItem.duplicate_of_id.is_(None), 0), else_=1)


@dataclass(frozen=True)
class TrendExample:
    """One item of a theme that may be shown where the answer is read."""

    item_id: int
    text: str
    permalink: str | None
    customer: str | None


@dataclass(frozen=True)
class ThemeTrend:
    """One theme over the period, against the previous window."""

    theme_id: int
    name: str
    count: int
    previous_count: int
    accounts: int  # distinct accounts this period
    arr: Decimal  # sum of those accounts' ARR
    previous_accounts: int
    previous_arr: Decimal
    first_seen: datetime | None = None  # over the theme's whole history
    last_seen: datetime | None = None
    rising: bool = False
    example: TrendExample | None = None
    shipped_at: datetime | None = None  # marked shipped (`/feedback ship`)

    @property
    def change(self) -> int:
        """Items this period minus items the period before."""
        return self.count - self.previous_count

    @property
    def change_pct(self) -> float | None:
        """Relative change in items; None when the period before had none."""
        return self.change / self.previous_count * 100 if self.previous_count else None


@dataclass(frozen=True)
class TrendReport:
    """Trends of every active theme with items in either window, ranked, plus the unsorted items."""

    start: datetime
    end: datetime
    previous_start: datetime
    themes: list[ThemeTrend]
    unsorted: int = 0
    previous_unsorted: int = 0
    total: int = 0
    previous_total: int = 0
    min_count: int = MIN_RISING_COUNT

    @property
    def rising(self) -> list[ThemeTrend]:
        """The rising themes, largest growth first."""
        return [t for t in self.themes if t.rising]


@dataclass
class _Window:
    count: int = 0
    accounts: int = 0
    arr: Decimal = field(default_factory=lambda: Decimal(0))


def window_for(period: TrendPeriod, now: datetime | None = None) -> tuple[datetime, datetime]:
    """The period ending now: the last 7 days (week) or 30 days (month)."""
    end = now or utcnow()
    return end - timedelta(days=PERIOD_DAYS[period]), end


def _active_theme(team_id: str) -> ColumnElement[bool]:
    return and_(
        Theme.id == FeedbackItem.theme_id, Theme.team_id == team_id, Theme.status == ThemeStatus.active.value
    )


def theme_trends(
    *,
    db_session: Session,
    team_id: str,
    start: datetime,
    end: datetime,
    channel_id: str | None = None,
    top: int | None = 10,
    min_count: int = MIN_RISING_COUNT,
    with_examples: bool = True,
) -> TrendReport:
    """Trends of the active themes over ``[start, end)`` against the window before (`/feedback trends`; the
    digest groups items its own way, unthemed ones by tag, and marks rising themes with `is_rising`).

    ``top`` keeps the first themes of the ranking (None: all); examples are picked for those only, and only
    among items that are public or come from ``channel_id``.
    """
    previous_start = start - (end - start)
    # The window is computed in a subquery so GROUP BY names a plain column (Postgres would not match two
    # renderings of a CASE with parameters).
    in_window = (
        select(
            Theme.id.label("theme_id"),
            case((FeedbackItem.created_at >= start, 1), else_=0).label("current"),
            FeedbackItem.account_id.label("account_id"),
        )
        .select_from(FeedbackItem)
        .outerjoin(Theme, _active_theme(team_id))
        .where(
            FeedbackItem.team_id == team_id,
            FeedbackItem.created_at >= previous_start,
            FeedbackItem.created_at < end,
            FeedbackItem.deleted_at.is_(None),
        )
        .subquery()
    )
    per_account = (
        select(in_window.c.theme_id, in_window.c.current, in_window.c.account_id, func.count().label("n"))
        .group_by(in_window.c.theme_id, in_window.c.current, in_window.c.account_id)
        .subquery()
    )
    rows = db_session.execute(
        select(
            per_account.c.theme_id,
            per_account.c.current,
            func.sum(per_account.c.n).label("items"),
            func.count(per_account.c.account_id).label("accounts"),
            func.coalesce(func.sum(Account.arr), 0).label("arr"),
        )
        .select_from(per_account)
        .outerjoin(Account, and_(Account.id == per_account.c.account_id, Account.team_id == team_id))
        .group_by(per_account.c.theme_id, per_account.c.current)
    ).all()

    windows: dict[int, tuple[_Window, _Window]] = {}
    unsorted, totals = [0, 0], [0, 0]
    for row in rows:
        which, items = int(row.current), int(row.items)
        totals[which] += items
        if row.theme_id is None:
            unsorted[which] += items
            continue
        pair = windows.setdefault(int(row.theme_id), (_Window(), _Window()))
        pair[which].count, pair[which].accounts, pair[which].arr = items, int(row.accounts), Decimal(row.arr)

    names = {
        theme_id: (name, shipped_at)
        for theme_id, name, shipped_at in db_session.execute(
            select(Theme.id, Theme.name, Theme.shipped_at).where(
                Theme.team_id == team_id, Theme.id.in_(windows)
            )
        )
    }
    trends = []
    for theme_id, (before, now) in windows.items():
        trends.append(
            ThemeTrend(
                theme_id=theme_id,
                name=names.get(theme_id, (f"Theme {theme_id}", None))[0],
                shipped_at=names.get(theme_id, ("", None))[1],
                count=now.count,
                previous_count=before.count,
                accounts=now.accounts,
                arr=now.arr,
                previous_accounts=before.accounts,
                previous_arr=before.arr,
                rising=is_rising(now.count, before.count, min_count),
            )
        )
    ranked = rank(trends)
    chosen = ranked if top is None else ranked[:top]
    chosen = _with_seen(db_session, team_id, chosen)
    if with_examples:
        chosen = _with_examples(db_session, team_id, chosen, previous_start, start, end, channel_id)
    return TrendReport(
        start=start,
        end=end,
        previous_start=previous_start,
        themes=chosen,
        unsorted=unsorted[1],
        previous_unsorted=unsorted[0],
        total=totals[1],
        previous_total=totals[0],
        min_count=min_count,
    )


def rank(trends: list[ThemeTrend]) -> list[ThemeTrend]:
    """Rising themes first (largest growth, then count), then the others by count, ARR and name."""
    return sorted(
        trends,
        key=lambda t: (
            not t.rising,
            -t.change if t.rising else 0,
            -t.count,
            -t.arr,
            t.name.casefold(),
            t.theme_id,
        ),
    )


def _with_seen(db_session: Session, team_id: str, trends: list[ThemeTrend]) -> list[ThemeTrend]:
    """First and last item of each theme, over its whole history (for the themes shown only)."""
    if not trends:
        return trends
    seen = {
        theme_id: (first, last)
        for theme_id, first, last in db_session.execute(
            select(
                FeedbackItem.theme_id, func.min(FeedbackItem.created_at), func.max(FeedbackItem.created_at)
            )
            .where(
                FeedbackItem.team_id == team_id,
                FeedbackItem.theme_id.in_([t.theme_id for t in trends]),
                FeedbackItem.deleted_at.is_(None),
            )
            .group_by(FeedbackItem.theme_id)
        )
    }
    return [
        replace(
            t,
            first_seen=seen.get(t.theme_id, (None, None))[0],
            last_seen=seen.get(t.theme_id, (None, None))[1],
        )
        for t in trends
    ]


def _with_examples(
    db_session: Session,
    team_id: str,
    trends: list[ThemeTrend],
    previous_start: datetime,
    start: datetime,
    end: datetime,
    channel_id: str | None,
) -> list[ThemeTrend]:
    """The newest quotable item of each theme (this period's first, else the period before's), preferring an
    item that is not a linked duplicate: the original says it as well, and was said first."""
    if not trends:
        return trends
    visible = [FeedbackItem.visibility == Visibility.public.value]
    if channel_id:
        visible.append(FeedbackItem.channel_id == channel_id)
    in_current = case((FeedbackItem.created_at >= start, 0), else_=1)
    ranked = (
        select(
            FeedbackItem.theme_id,
            FeedbackItem.id,
            func.substr(FeedbackItem.text, 1, QUOTE_CHARS).label("text"),
            FeedbackItem.permalink,
            Account.name.label("customer"),
            func.row_number()
            .over(
                partition_by=FeedbackItem.theme_id,
                order_by=[
                    in_current,
                    originals_first(),
                    FeedbackItem.created_at.desc(),
                    FeedbackItem.id.desc(),
                ],
            )
            .label("rank"),
        )
        .outerjoin(Account, and_(Account.id == FeedbackItem.account_id, Account.team_id == team_id))
        .where(
            FeedbackItem.team_id == team_id,
            FeedbackItem.created_at >= previous_start,
            FeedbackItem.created_at < end,
            FeedbackItem.deleted_at.is_(None),
            FeedbackItem.theme_id.in_([t.theme_id for t in trends]),
            or_(*visible),
        )
        .subquery()
    )
    examples = {
        row.theme_id: TrendExample(
            item_id=row.id, text=row.text, permalink=row.permalink, customer=row.customer
        )
        for row in db_session.execute(select(ranked).where(ranked.c.rank == 1))
    }
    return [replace(t, example=examples.get(t.theme_id)) for t in trends]
