"""Account briefs: one account's revenue, owner, feedback by theme this quarter and open requests; and the
owners' monthly brief by DM.

Requests have no account column, so an account's open requests are those whose title or details name the
account (its name or domain, as a whole word), or that were opened from a message captured as feedback of
that account (same channel and message).

Monthly brief. An owner subscribes (``account_brief_subscriptions``); ``next_run_at`` is 09:00 on the first
working day (Monday–Friday) of the next month in their Slack time zone. The tick claims each due row with a
conditional update that moves ``last_period`` to this month (``YYYY-MM``, in their zone) and ``next_run_at``
to the next month, and in the same transaction queues the DM in the one outbox (bot/outbox.py, key
``brief:<subscription>:<month>``) — only the worker whose update matched queues it, so two workers send one
DM. The outbox posts it once, through 429s, outages and a worker killed mid-send (retried, after a history
check); a brief is never lost between the claim and the send, and never sent twice.
"""

from __future__ import annotations

import difflib
import logging
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from sqlalchemy import and_, exists, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bot import outbox
from bot.accounts import service as accounts
from bot.requests.service import OPEN_STATUSES
from bot.slack_client import for_team
from storage import claims
from storage.db import Database
from storage.models import (
    Account,
    AccountBriefSubscription,
    FeedbackItem,
    Request,
    Theme,
    ThemeStatus,
    Visibility,
)
from storage.types import utcnow

logger = logging.getLogger("prodops.accounts.brief")

LATEST_ITEMS = 5
MAX_REQUESTS = 5
SEND_AT = time(9, 0)
UNSORTED = "Unsorted"


class AccountNotFound(Exception):
    """No account matches; `close` are names that look like the query."""

    def __init__(self, query: str, close: list[str]) -> None:
        super().__init__(query)
        self.query, self.close = query, close


class AmbiguousAccount(Exception):
    """Several accounts match; `names` are theirs."""

    def __init__(self, query: str, names: list[str]) -> None:
        super().__init__(query)
        self.query, self.names = query, names


def find_account(*, db_session: Session, team_id: str, query: str) -> Account:
    """The account named (any case and spacing) or with that domain; else the only one whose name or domain
    contains the query. Raises AmbiguousAccount or AccountNotFound (with close names)."""
    query = query.strip()
    if not query:
        raise AccountNotFound(query, [])
    exact = accounts.get_by_name(db_session=db_session, team_id=team_id, name=query)
    if exact is not None:
        return exact
    domain = accounts.normalise_domain(query)
    if domain:
        by_domain = db_session.scalar(
            select(Account).where(Account.team_id == team_id, Account.domain == domain)
        )
        if by_domain is not None:
            return by_domain
    found = accounts.search(db_session=db_session, team_id=team_id, query=query, limit=6)
    if len(found) == 1:
        return found[0]
    if found:
        raise AmbiguousAccount(query, [a.name for a in found])
    names = {
        key: name
        for key, name in db_session.execute(
            select(Account.name_key, Account.name).where(Account.team_id == team_id).limit(20_000)
        )
    }
    raise AccountNotFound(query, close_names(accounts.name_key(query), names))


def close_names(needle: str, names: dict[str, str], limit: int = 5, cutoff: float = 0.75) -> list[str]:
    """Names (by name key) that look like the needle: as a whole, by their start, or by one of their words."""

    def score(key: str) -> float:
        parts = [key, key[: len(needle)], *key.split()]
        return max(difflib.SequenceMatcher(None, needle, part).ratio() for part in parts)

    scored = sorted(((score(k), k) for k in names), key=lambda pair: (-pair[0], pair[1]))
    return [names[k] for value, k in scored[:limit] if value >= cutoff]


# ---- the brief ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BriefTheme:
    """The account's items in one theme this quarter."""

    name: str
    count: int
    last_seen: datetime


@dataclass(frozen=True)
class BriefItem:
    """One of the account's latest items the reader may see."""

    id: int
    text: str
    permalink: str | None
    theme: str | None
    created_at: datetime


@dataclass(frozen=True)
class BriefRequest:
    """An open request about the account."""

    id: int
    title: str
    status: str
    link: str | None


@dataclass(frozen=True)
class AccountBrief:
    """What `/prodops account` and the monthly DM show about one account."""

    account_id: int
    name: str
    domain: str | None
    arr: Decimal | None
    segment: str | None
    owner_user_id: str | None
    quarter: str  # e.g. Q4 2026
    items: int  # this quarter, every visibility
    themes: list[BriefTheme]
    latest: list[BriefItem]
    requests: list[BriefRequest]


def quarter_start(now: datetime) -> datetime:
    """The first instant (UTC) of now's calendar quarter."""
    month = 3 * ((now.month - 1) // 3) + 1
    return datetime(now.year, month, 1, tzinfo=UTC)


def account_brief(
    *,
    db_session: Session,
    team_id: str,
    account: Account,
    now: datetime | None = None,
    visible_channels: set[str] | frozenset[str] = frozenset(),
) -> AccountBrief:
    """The account's brief: feedback by theme this quarter, its latest items (public ones, or from
    `visible_channels`), and its open requests."""
    now = now or utcnow()
    start = quarter_start(now)
    in_quarter = [
        FeedbackItem.team_id == team_id,
        FeedbackItem.account_id == account.id,
        FeedbackItem.created_at >= start,
        FeedbackItem.deleted_at.is_(None),
    ]
    active = and_(
        Theme.id == FeedbackItem.theme_id, Theme.team_id == team_id, Theme.status == ThemeStatus.active.value
    )
    grouped = db_session.execute(
        select(Theme.name, func.count(), func.max(FeedbackItem.created_at))
        .select_from(FeedbackItem)
        .outerjoin(Theme, active)
        .where(*in_quarter)
        .group_by(Theme.name)
    ).all()
    themes = sorted(
        (BriefTheme(name=name or UNSORTED, count=int(n), last_seen=last) for name, n, last in grouped),
        key=lambda t: (t.name == UNSORTED, -t.count, t.name.casefold()),
    )
    shown = [FeedbackItem.visibility == Visibility.public.value]
    if visible_channels:
        shown.append(FeedbackItem.channel_id.in_(sorted(visible_channels)))
    latest = [
        BriefItem(id=i, text=text, permalink=link, theme=theme, created_at=created)
        for i, text, link, theme, created in db_session.execute(
            select(
                FeedbackItem.id,
                func.substr(FeedbackItem.text, 1, 300),
                FeedbackItem.permalink,
                Theme.name,
                FeedbackItem.created_at,
            )
            .select_from(FeedbackItem)
            .outerjoin(Theme, active)
            .where(*in_quarter, or_(*shown))
            .order_by(FeedbackItem.created_at.desc(), FeedbackItem.id.desc())
            .limit(LATEST_ITEMS)
        )
    ]
    return AccountBrief(
        account_id=account.id,
        name=account.name,
        domain=account.domain,
        arr=account.arr,
        segment=account.segment,
        owner_user_id=account.owner_user_id,
        quarter=f"Q{(start.month - 1) // 3 + 1} {start.year}",
        items=sum(t.count for t in themes),
        themes=themes,
        latest=latest,
        requests=open_requests(db_session=db_session, team_id=team_id, account=account),
    )


def open_requests(*, db_session: Session, team_id: str, account: Account) -> list[BriefRequest]:
    """Open requests naming the account (name or domain, whole word) or opened from its feedback."""
    words = [w for w in (account.name, account.domain) if w and len(w.strip()) >= 2]
    from_feedback = exists().where(
        FeedbackItem.team_id == team_id,
        FeedbackItem.account_id == account.id,
        FeedbackItem.channel_id == Request.channel_id,
        FeedbackItem.message_ts == Request.message_ts,
    )
    mentions = [
        func.lower(column).contains(word.lower(), autoescape=True)
        for word in words
        for column in (Request.title, func.coalesce(Request.details, ""))
    ]
    rows = db_session.execute(
        select(
            Request.id,
            Request.title,
            Request.details,
            Request.status,
            Request.permalink,
            Request.triage_channel_id,
            from_feedback.label("from_feedback"),
        )
        .where(Request.team_id == team_id, Request.status.in_(OPEN_STATUSES), or_(from_feedback, *mentions))
        .order_by(Request.created_at.desc(), Request.id.desc())
        .limit(MAX_REQUESTS * 10)
    ).all()
    pattern = (
        re.compile(r"(?<!\w)(" + "|".join(re.escape(w) for w in words) + r")(?!\w)", re.I) if words else None
    )
    found = []
    for row in rows:
        named = pattern is not None and pattern.search(f"{row.title}\n{row.details or ''}") is not None
        if row.from_feedback or named:
            link = (
                f"https://slack.com/app_redirect?channel={row.triage_channel_id}"
                if row.triage_channel_id
                else None
            )
            found.append(
                BriefRequest(id=row.id, title=row.title, status=row.status, link=link or row.permalink)
            )
    return found[:MAX_REQUESTS]


def owned_accounts(*, db_session: Session, team_id: str, user_id: str) -> list[Account]:
    """The accounts this person owns, biggest ARR first."""
    return list(
        db_session.scalars(
            select(Account)
            .where(Account.team_id == team_id, Account.owner_user_id == user_id)
            .order_by(Account.arr.desc().nulls_last(), Account.name_key)
        )
    )


# ---- monthly brief subscriptions ------------------------------------------------------------------------


def safe_zone(name: str | None) -> ZoneInfo:
    """The IANA zone, or UTC when it is missing or unknown."""
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def first_working_day(year: int, month: int) -> date:
    """The month's first Monday–Friday."""
    day = date(year, month, 1)
    while day.weekday() >= 5:
        day += timedelta(days=1)
    return day


def next_brief_at(*, timezone: str, after: datetime) -> datetime:
    """09:00 local on the first working day of a month, the first such time strictly after `after` (UTC)."""
    tz = safe_zone(timezone)
    local = after.astimezone(tz)
    year, month = local.year, local.month
    for _ in range(2):
        when = datetime.combine(first_working_day(year, month), SEND_AT, tzinfo=tz).astimezone(UTC)
        if when > after:
            return when
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    raise AssertionError("unreachable: next month's first working day is always later")


def period_key(when: datetime, timezone: str) -> str:
    """The month a brief sent at `when` is for, in the subscriber's zone: 2026-12."""
    return f"{when.astimezone(safe_zone(timezone)):%Y-%m}"


def get_subscription(*, db_session: Session, team_id: str, user_id: str) -> AccountBriefSubscription | None:
    """The person's monthly brief subscription, if any."""
    return db_session.scalar(
        select(AccountBriefSubscription).where(
            AccountBriefSubscription.team_id == team_id, AccountBriefSubscription.user_id == user_id
        )
    )


def subscribe(
    *, db_session: Session, team_id: str, user_id: str, timezone: str, now: datetime | None = None
) -> tuple[AccountBriefSubscription, bool]:
    """Subscribes an account owner to the monthly brief; (subscription, created)."""
    now = now or utcnow()
    zone_name = str(safe_zone(timezone))
    existing = get_subscription(db_session=db_session, team_id=team_id, user_id=user_id)
    if existing is not None:
        return existing, False
    row = AccountBriefSubscription(
        team_id=team_id,
        user_id=user_id,
        timezone=zone_name,
        next_run_at=next_brief_at(timezone=zone_name, after=now),
    )
    try:
        with db_session.begin_nested():
            db_session.add(row)
    except IntegrityError:
        found = get_subscription(db_session=db_session, team_id=team_id, user_id=user_id)
        if found is None:
            raise
        return found, False
    return row, True


def unsubscribe(*, db_session: Session, team_id: str, user_id: str) -> bool:
    """Stops the person's monthly brief; False when they had none."""
    row = get_subscription(db_session=db_session, team_id=team_id, user_id=user_id)
    if row is None:
        return False
    db_session.delete(row)
    return True


@dataclass
class BriefTickResult:
    """What one brief tick did."""

    due: int = 0
    sent: int = 0  # DMs posted by this tick's outbox pass
    queued: int = 0  # briefs this worker claimed and queued
    lost_claims: int = 0  # another worker claimed it first
    skipped: int = 0  # claimed, but the person owns no account any more
    errors: int = 0  # a brief that could not be built (retried next tick), or a DM that failed for good


OUTBOX_KIND = "brief"


def user_timezone(client: WebClient, user_id: str) -> str | None:
    """The person's Slack time zone (`users.info` tz), or None when Slack will not say."""
    try:
        return cast(str | None, client.users_info(user=user_id)["user"].get("tz"))
    except SlackApiError as exc:
        logger.info("users.info for %s failed: %s", user_id, exc.response.get("error"))
        return None


def run_brief_tick(*, db: Database, client: WebClient, now: datetime | None = None) -> BriefTickResult:
    """Sends each due owner their monthly brief by DM, exactly once per month whoever runs the tick."""
    from bot.accounts.brief_messaging import monthly_brief_blocks, monthly_brief_text

    now = now or utcnow()
    result = BriefTickResult()
    with db.read() as s:
        due = s.execute(
            select(
                AccountBriefSubscription.id,
                AccountBriefSubscription.team_id,
                AccountBriefSubscription.user_id,
                AccountBriefSubscription.timezone,
                AccountBriefSubscription.next_run_at,
            )
            .where(AccountBriefSubscription.next_run_at <= now)
            .order_by(AccountBriefSubscription.next_run_at, AccountBriefSubscription.id)
            .limit(200)
        ).all()
    for sub_id, team_id, user_id, stored_tz, seen_at in due:
        result.due += 1
        timezone = str(safe_zone(user_timezone(for_team(client, team_id), user_id) or stored_tz))
        period = period_key(now, timezone)
        try:
            with db.read() as s:
                owned = owned_accounts(db_session=s, team_id=team_id, user_id=user_id)
                briefs = [account_brief(db_session=s, team_id=team_id, account=a, now=now) for a in owned]
        except Exception:  # not claimed: tried again on the next tick
            result.errors += 1
            logger.exception("monthly account brief for %s (%s) could not be built", user_id, period)
            continue
        with db.session() as s:
            won = claims.claim_row(
                s,
                AccountBriefSubscription,
                where=[
                    AccountBriefSubscription.id == sub_id,
                    or_(
                        AccountBriefSubscription.last_period.is_(None),
                        AccountBriefSubscription.last_period != period,
                    ),
                ],
                seen={AccountBriefSubscription.next_run_at: seen_at},
                values={
                    "last_period": period,
                    "timezone": timezone,
                    "next_run_at": next_brief_at(timezone=timezone, after=now),
                },
            )
            if not won:
                result.lost_claims += 1
                continue
            if not briefs:
                result.skipped += 1
                continue
            outbox.enqueue(
                s,
                team_id=team_id,
                kind=OUTBOX_KIND,
                key=f"brief:{sub_id}:{period}",
                channel_id=user_id,
                text=monthly_brief_text(briefs, period),
                blocks=monthly_brief_blocks(briefs, period),
                now=now,
            )
            result.queued += 1
    delivery = outbox.deliver_outbox(db=db, client=client, kinds=(OUTBOX_KIND,), now=now)
    result.sent, result.errors = delivery.sent, result.errors + delivery.failed
    return result
