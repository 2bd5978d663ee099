"""Delivering ship notices (written by bot.insights.ship.plan_ship): each once, through rate limits and outages.

On the one outbox (bot/outbox.py, storage/claims.py); run it with a delivery client (no SDK retries), so
every retry goes through the checks here:
* a due row (pending, or sending with its lease run out) is claimed with a conditional update and a lease;
* 429: back to pending without counting an attempt, Retry-After after Slack's answer, and every other
  pending notice of the workspace waits as long (nothing more is sent to that workspace in this pass);
* 5xx, timeouts: retried with backoff, ``failed`` after MAX_ATTEMPTS;
* permanent errors (channel_not_found, not_in_channel, is_archived, user_not_found, …): ``failed`` with the
  reason, and whoever shipped gets one DM per pass listing what could not be delivered;
* a thread reply carries metadata naming its notice; a retry after an attempt that reached Slack first looks
  for it in the thread. (A DM retried after a 5xx that Slack had in fact posted can arrive twice.)
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

from slack_sdk import WebClient
from sqlalchemy import select, update

from bot.insights.ship import FAILED, PENDING, REPORTER, SENDING, SENT, THREAD, escape
from bot.outbox import Marker, PassClock, Retry, classify_failure, find_posted, next_step
from bot.slack_client import for_team
from storage import claims
from storage.claims import LEASE, MAX_ATTEMPTS, Claim, Queue
from storage.db import Database
from storage.models import ShipNotice, Theme
from storage.types import utcnow

__all__ = ["LEASE", "MAX_ATTEMPTS", "ShipDeliveryResult", "deliver_ship_notices"]

logger = logging.getLogger("prodops.insights.ship")

METADATA_EVENT_TYPE = "prodops_ship"
QUEUE = Queue(
    ShipNotice, ShipNotice.id, ShipNotice.status, ShipNotice.attempts, ShipNotice.next_attempt_at,
    waiting=(PENDING,), claimed=SENDING,
)  # fmt: skip

FAILURE_HINTS = {
    "channel_not_found": "the channel is gone, or private and I was removed",
    "not_in_channel": "I'm not in that channel any more",
    "is_archived": "the channel is archived",
    "user_not_found": "that person is no longer in the workspace",
    "account_inactive": "that account is deactivated",
    "cannot_dm_bot": "that reporter is a bot",
}


@dataclass
class ShipDeliveryResult:
    """What one delivery pass did."""

    due: int = 0
    sent: int = 0
    recovered: int = 0  # an earlier attempt had posted it: found in the thread, not posted again
    rate_limited: int = 0
    retried: int = 0
    failed: int = 0
    lost_claims: int = 0
    summaries: int = 0  # DMs to whoever shipped, about notices that could not be delivered
    deferred: int = 0  # not tried: their workspace is waiting out a Retry-After


@dataclass(frozen=True)
class _Job:
    id: int
    team_id: str
    theme_id: int | None
    kind: str
    target: str
    message: str
    requested_by: str
    attempts: int
    created_at: datetime

    @property
    def marker(self) -> Marker:
        return Marker(METADATA_EVENT_TYPE, "notice_id", self.id)


@dataclass(frozen=True)
class _Failed:
    job: _Job
    error: str


def deliver_ship_notices(
    *, db: Database, client: WebClient, now: datetime | None = None, batch: int = 100
) -> ShipDeliveryResult:
    """Sends every due notice at most once (a thread reply is looked for before a retry posts it again)."""
    now = now or utcnow()
    clock = PassClock(now)
    result = ShipDeliveryResult()
    with db.read() as s:
        due = s.execute(
            select(ShipNotice.id, ShipNotice.team_id, ShipNotice.status, ShipNotice.next_attempt_at,
                   ShipNotice.attempts)
            .where(QUEUE.is_due(now))
            .order_by(ShipNotice.next_attempt_at, ShipNotice.id)
            .limit(batch)
        ).all()  # fmt: skip
    limited: set[str] = set()
    failures: list[_Failed] = []
    for notice_id, team_id, status, seen_at, attempts in due:
        result.due += 1
        if team_id in limited:
            result.deferred += 1
            continue
        job = _claim(db, notice_id=notice_id, status=status, seen_at=seen_at, attempts=attempts, now=now)
        if job is None:
            result.lost_claims += 1
            continue
        try:
            outcome = _send(for_team(client, job.team_id), job)
        except Exception as exc:
            failure = classify_failure(exc)
            step = next_step(failure, attempts=job.attempts, now=now, answered_at=clock())
            if isinstance(step, Retry) and not step.counts:
                limited.add(job.team_id)
                _rate_limited(db, job, step.at)
                result.rate_limited += 1
            elif isinstance(step, Retry):
                _record(db, job, status=PENDING, next_attempt_at=step.at, last_error=step.note)
                result.retried += 1
            else:
                reason = failure.error if failure.kind != "transient" else f"{failure.error}: gave up"
                if _record(db, job, status=FAILED, last_error=reason):
                    result.failed += 1
                    failures.append(_Failed(job, failure.error))
                    logger.warning("ship notice %s to %s %s failed: %s", job.id, job.kind, job.target, reason)
            continue
        if _record(db, job, status=SENT, sent_at=now, last_error=None):
            result.sent += 1
            if outcome == "recovered":
                result.recovered += 1
    _report_failures(db, client, failures, result)
    return result


def _claim(
    db: Database, *, notice_id: int, status: str, seen_at: datetime, attempts: int, now: datetime
) -> _Job | None:
    claim = claims.claim_one(
        db, QUEUE, row_id=notice_id, status=status, seen_at=seen_at, attempts=attempts, now=now
    )
    if claim is None:
        return None
    with db.read() as s:
        row = s.get(ShipNotice, notice_id)
        assert row is not None
        return _Job(
            id=row.id,
            team_id=row.team_id,
            theme_id=row.theme_id,
            kind=row.target_kind,
            target=row.target,
            message=row.message,
            requested_by=row.requested_by_user_id,
            attempts=claim.attempts,
            created_at=row.created_at,
        )


def _send(client: WebClient, job: _Job) -> str:
    """Posts the notice; "recovered" when an earlier attempt had already posted it."""
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": job.message}}]
    fallback = job.message.replace("*", "")
    if job.kind == THREAD:
        channel, thread_ts = job.target.split(":", 1)
        if job.attempts > 1 and find_posted(
            client, channel=channel, marker=job.marker, since=job.created_at, thread_ts=thread_ts,
            log_name="ship notice",
        ):  # fmt: skip
            return "recovered"
        client.chat_postMessage(
            channel=channel,
            thread_ts=thread_ts,
            text=fallback,
            blocks=blocks,
            metadata=job.marker.metadata(),
            unfurl_links=False,
            unfurl_media=False,
        )
        return "sent"
    client.chat_postMessage(channel=job.target, text=fallback, blocks=blocks, unfurl_links=False)
    return "sent"


def _record(db: Database, job: _Job, **values: object) -> bool:
    """Records an outcome if this worker still holds the claim."""
    held = claims.settle(db, QUEUE, Claim(job.id, job.attempts), **values)
    if not held:
        logger.warning("ship notice %s: claim lost before recording %s", job.id, values.get("status"))
    return held


def _rate_limited(db: Database, job: _Job, until: datetime) -> None:
    """Slack did nothing: the attempt does not count, and the workspace's other notices wait as long."""
    _record(db, job, status=PENDING, attempts=job.attempts - 1, next_attempt_at=until,
            last_error=f"rate limited: retrying at {until:%H:%M:%S} UTC")  # fmt: skip
    with db.session() as s:
        s.execute(
            update(ShipNotice)
            .where(
                ShipNotice.team_id == job.team_id,
                ShipNotice.status == PENDING,
                ShipNotice.next_attempt_at < until,
            )
            .values(next_attempt_at=until)
            .execution_options(synchronize_session=False)
        )


def _describe(failed: _Failed) -> str:
    hint = FAILURE_HINTS.get(failed.error)
    why = f"`{failed.error}`" + (f" — {hint}" if hint else "")
    if failed.job.kind == THREAD:
        channel = failed.job.target.split(":", 1)[0]
        return f"• reply in the thread in <#{channel}>: {why}"
    who = "reporter" if failed.job.kind == REPORTER else "account owner"
    return f"• DM to {who} <@{failed.job.target}>: {why}"


def _report_failures(
    db: Database, client: WebClient, failures: list[_Failed], result: ShipDeliveryResult
) -> None:
    """One DM per person who shipped (and theme) listing the notices that will never be delivered."""
    grouped: dict[tuple[str, str, int | None], list[_Failed]] = defaultdict(list)
    for failed in failures:
        grouped[(failed.job.team_id, failed.job.requested_by, failed.job.theme_id)].append(failed)
    for (team_id, user_id, theme_id), group in grouped.items():
        with db.read() as s:
            name = s.scalar(select(Theme.name).where(Theme.id == theme_id)) if theme_id else None
        lines = "\n".join(_describe(f) for f in group[:20])
        more = f"\n…and {len(group) - 20} more" if len(group) > 20 else ""
        text = (
            f":warning: {len(group)} “shipped” notice{'s' if len(group) != 1 else ''} for *{escape(name or 'a theme')}* "
            f"could not be delivered and will not be retried:\n{lines}{more}\n"
            "Everything else was sent. Invite me back or tell those people yourself."
        )
        try:
            for_team(client, team_id).chat_postMessage(
                channel=user_id,
                text=text,
                blocks=[{"type": "section", "text": {"type": "mrkdwn", "text": text}}],
            )
            result.summaries += 1
        except Exception:
            logger.warning("could not DM %s the ship summary", user_id, exc_info=True)
