"""Delivering the digest outbox: each row is posted to Slack once, through rate limits, outages and crashes.

The generic half (claims, metadata marker and history check, failure classification, Retry-After and
backoff) is the one outbox of bot/outbox.py and storage/claims.py; what is here is the digest's own: its
table, the chart in the thread, and pausing the subscription and telling its creator on a permanent error.

Claims. A row is due when ``status = 'pending' AND next_attempt_at <= now``, or when it is ``sending`` and
its lease has run out (``next_attempt_at`` is the lease's end while it is ``sending``). It is claimed with a
conditional update on what was read (status, next_attempt_at, attempts), which sets ``sending``, counts the
attempt and starts a lease; only the worker whose update matched delivers it. A worker killed after the
scheduler wrote the row, or in the middle of delivering it, leaves it ``pending`` or ``sending``; it is
delivered after restart (at once, or once the lease has run out). No session is open during a Slack call.

Exactly once. The post carries message metadata naming the outbox row (``event_type = prodops_digest``,
``event_payload.outbox_id``). The window that matters is between Slack accepting the post and the row being
marked sent: a crash, a timeout after Slack posted, a 5xx from a proxy in front of a Slack that did post.
Every attempt after the first one that reached Slack (``attempts > 0``) first reads the channel's history
since the row was written (``conversations.history`` with ``include_all_metadata``) and, when the message is
there, records its ts instead of posting again. What remains is at-least-once only if that history read is
not allowed (the read error is logged and the digest is posted) or Slack's history lags behind its own
accepted post. A 429 means Slack did nothing, so it does not count as an attempt.

Outcomes.
* sent: ``message_ts`` (and ``sent_at``) recorded. With a chart, ``message_ts`` is recorded as soon as the
  post succeeds, the row stays ``sending`` while the chart is uploaded into the message's thread, and a
  retry of that step only uploads the chart (after checking the thread for it). A chart that cannot be
  uploaded never holds back or repeats the message: the row becomes ``sent`` with the reason in last_error.
* 429: retried Retry-After seconds after Slack's answer (not after the start of the pass).
* 5xx, ``internal_error``/``fatal_error``, timeouts, connection errors: retried after 1, 2, 4 … minutes
  (at most an hour apart); after MAX_ATTEMPTS the row is ``failed``.
* channel_not_found, not_in_channel, is_archived, invalid_auth, account_inactive (and other errors that only
  a person can fix): the row is ``failed`` with the reason, the subscription is paused (``paused_at``,
  ``paused_reason``) and its creator gets a DM saying how to fix it.
* any other Slack error (the request itself is wrong, e.g. invalid_blocks): ``failed``, creator told.

Clients. This works with or without the WebClient's own retry handlers. Retrying inside the call is safe
for 429 (nothing was posted) but a retried 5xx or dropped connection can post twice before this module
sees anything, so :func:`delivery_client` builds a client without retry handlers: every retry goes through
the history check above, and no worker thread sleeps through a Retry-After.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from slack_sdk import WebClient
from sqlalchemy import select

from bot.outbox import (
    Failure,
    GiveUp,
    Marker,
    PassClock,
    Retry,
    chart_in_thread,
    classify_failure,
    delivery_client,
    next_step,
    post_once,
)
from bot.slack_client import for_team
from storage import claims
from storage.claims import LEASE, MAX_ATTEMPTS, Claim, Queue, backoff
from storage.db import Database
from storage.models import DigestOutbox, DigestSubscription
from storage.types import utcnow

__all__ = ["LEASE", "MAX_ATTEMPTS", "METADATA_EVENT_TYPE", "DeliveryResult", "backoff", "classify_failure",
           "deliver_pending", "delivery_client"]  # fmt: skip

logger = logging.getLogger("prodops.digests")

METADATA_EVENT_TYPE = "prodops_digest"
QUEUE = Queue(
    DigestOutbox, DigestOutbox.id, DigestOutbox.status, DigestOutbox.attempts, DigestOutbox.next_attempt_at
)

FIXES = {
    "channel_not_found": (
        "I can't find <#{channel}> any more: it was deleted, or it is private and I was removed from it. "
        "If it still exists, `/invite @ProdOps` there; otherwise point the digest at another channel. "
        "Then use `/digest edit` to resume it."
    ),
    "not_in_channel": "I'm not a member of <#{channel}>. `/invite @ProdOps` there, then `/digest edit` to resume it.",
    "is_archived": (
        "<#{channel}> is archived. Unarchive it, or move the digest to another channel, "
        "then use `/digest edit` to resume it."
    ),
    "missing_scope": (
        "ProdOps is missing a Slack permission it needs to post. Ask a workspace admin to reinstall the app, "
        "then use `/digest edit` to resume the digest."
    ),
    "restricted_action": (
        "This workspace doesn't let apps post in <#{channel}>. Ask an admin to allow it, or move the digest to "
        "another channel, then use `/digest edit` to resume it."
    ),
}
AUTH_FIX = (
    "ProdOps's Slack token is no longer valid (the app was uninstalled or its token revoked). Ask a workspace "
    "admin to reinstall ProdOps, then use `/digest edit` to resume the digest."
)


@dataclass
class DeliveryResult:
    """What one delivery pass did."""

    due: int = 0
    claimed: int = 0
    sent: int = 0
    recovered: int = 0  # an earlier attempt had posted it: found in history, not posted again
    rate_limited: int = 0  # retried after Retry-After
    retried: int = 0  # 5xx / timeout / connection error: retried with backoff
    failed: int = 0
    paused: int = 0  # subscriptions paused by a permanent failure
    notified: int = 0  # creators DMed
    chart_errors: int = 0  # digests sent without their chart
    lost_claims: int = 0  # due, but another worker claimed it first


@dataclass(frozen=True)
class _Job:
    """A claimed row: what to post, and what this claim is (attempts after it counted this one)."""

    id: int
    team_id: str
    subscription_id: int
    period_key: str
    channel_id: str
    text: str
    blocks: list[dict[str, Any]]
    chart_png: bytes | None
    attempts: int
    message_ts: str | None
    created_at: datetime
    subscription_name: str
    creator: str | None

    @property
    def claim(self) -> Claim:
        return Claim(self.id, self.attempts)

    @property
    def marker(self) -> Marker:
        extra = {"subscription_id": self.subscription_id, "period_key": self.period_key}
        return Marker(METADATA_EVENT_TYPE, "outbox_id", self.id, extra)


def deliver_pending(
    *, db: Database, client: WebClient, now: datetime | None = None, batch: int = 50
) -> DeliveryResult:
    """Posts every due outbox row (pending, or sending with its lease run out) at most once."""
    now = now or utcnow()
    clock = PassClock(now)
    result = DeliveryResult()
    with db.read() as s:
        due = list(
            s.execute(
                select(
                    DigestOutbox.id, DigestOutbox.status, DigestOutbox.next_attempt_at, DigestOutbox.attempts
                )
                .where(QUEUE.is_due(now))
                .order_by(DigestOutbox.next_attempt_at, DigestOutbox.id)
                .limit(batch)
            ).all()
        )
    for outbox_id, status, seen_at, attempts in due:
        result.due += 1
        job = _claim(db, outbox_id=outbox_id, status=status, seen_at=seen_at, attempts=attempts, now=now)
        if job is None:
            result.lost_claims += 1
            continue
        result.claimed += 1
        if status == "sending":
            logger.warning("digest outbox %s: lease ran out mid-delivery; taking it over", outbox_id)
        try:
            _deliver(db, for_team(client, job.team_id), job, now=now, clock=clock, result=result)
        except Exception:  # a bug or the database: the row stays 'sending' and is retried after the lease
            logger.exception("digest outbox %s: delivery failed unexpectedly", outbox_id)
    return result


def _claim(
    db: Database, *, outbox_id: int, status: str, seen_at: datetime, attempts: int, now: datetime
) -> _Job | None:
    """Marks the row sending with a lease if it is still as read; None when another worker got there first."""
    claim = claims.claim_one(
        db, QUEUE, row_id=outbox_id, status=status, seen_at=seen_at, attempts=attempts, now=now
    )
    if claim is None:
        return None
    with db.read() as s:
        row = s.get(DigestOutbox, outbox_id)
        assert row is not None
        subscription = s.get(DigestSubscription, row.subscription_id)
        return _Job(
            id=row.id,
            team_id=row.team_id,
            subscription_id=row.subscription_id,
            period_key=row.period_key,
            channel_id=row.channel_id,
            text=row.text,
            blocks=list(row.blocks or []),
            chart_png=row.chart_png,
            attempts=claim.attempts,
            message_ts=row.message_ts,
            created_at=row.created_at,
            subscription_name=subscription.name if subscription else "digest",
            creator=subscription.created_by_user_id if subscription else None,
        )


def _deliver(
    db: Database, client: WebClient, job: _Job, *, now: datetime, clock: PassClock, result: DeliveryResult
) -> None:
    ts = job.message_ts
    if ts is None:
        try:
            posted = post_once(
                client, channel=job.channel_id, text=job.text, blocks=job.blocks, marker=job.marker,
                attempts=job.attempts, since=job.created_at, log_name="digest outbox",
            )  # fmt: skip
        except Exception as exc:
            _failed_post(db, client, job, classify_failure(exc), now=now, answered_at=clock(), result=result)
            return
        ts = posted.ts
        result.recovered += posted.recovered
        if job.chart_png is None:
            _finish(db, job, ts=ts, now=now, result=result)
            return
        _record_posted(db, job, ts)
    elif job.chart_png is None:  # recorded but not marked sent (cannot happen without a chart)
        _finish(db, job, ts=ts, now=now, result=result)
        return
    try:
        if job.attempts <= 1 or not chart_in_thread(client, channel=job.channel_id, ts=ts):
            client.files_upload_v2(
                channel=job.channel_id,
                file=job.chart_png,
                filename="digest.png",
                title=f"{job.subscription_name}: chart",
                thread_ts=ts,
            )
    except Exception as exc:
        failure = classify_failure(exc)
        step = next_step(failure, attempts=job.attempts, now=now, answered_at=clock())
        if isinstance(step, Retry):
            _retry(db, job, step, result=result)
            return
        result.chart_errors += 1
        logger.warning("digest outbox %s: sent without its chart: %s", job.id, failure.error)
        _finish(db, job, ts=ts, now=now, result=result, note=f"chart not attached: {failure.error}")
        return
    _finish(db, job, ts=ts, now=now, result=result)


# ---- recording outcomes (each a short transaction, conditional on still holding the claim) ----------------


def _record(db: Database, job: _Job, **values: Any) -> bool:
    held = claims.settle(db, QUEUE, job.claim, **values)
    if not held:
        logger.warning(
            "digest outbox %s: claim lost before recording %s", job.id, values.get("status", values)
        )
    return held


def _record_posted(db: Database, job: _Job, ts: str) -> None:
    """The message is in Slack: keep its ts before anything else can fail (it is never posted again)."""
    _record(db, job, message_ts=ts)


def _finish(
    db: Database, job: _Job, *, ts: str, now: datetime, result: DeliveryResult, note: str | None = None
) -> None:
    if _record(db, job, status="sent", message_ts=ts, sent_at=now, last_error=note):
        result.sent += 1


def _retry(db: Database, job: _Job, step: Retry, *, result: DeliveryResult) -> None:
    """Back to pending until `step.at`; after a 429 the attempt is given back (Slack did nothing)."""
    attempts = job.attempts if step.counts else job.attempts - 1
    _record(db, job, status="pending", attempts=attempts, next_attempt_at=step.at, last_error=step.note)
    if step.counts:
        result.retried += 1
        logger.info("digest outbox %s: %s; retrying at %s", job.id, step.note, step.at)
    else:
        result.rate_limited += 1


def _failed_post(
    db: Database,
    client: WebClient,
    job: _Job,
    failure: Failure,
    *,
    now: datetime,
    answered_at: datetime,
    result: DeliveryResult,
) -> None:
    """The post did not happen: retry it, or record why it never will (pausing and telling the creator)."""
    step = next_step(failure, attempts=job.attempts, now=now, answered_at=answered_at)
    if isinstance(step, Retry):
        _retry(db, job, step, result=result)
        return
    assert isinstance(step, GiveUp)
    reason = step.reason
    if not _record(db, job, status="failed", last_error=reason):
        return
    result.failed += 1
    logger.warning("digest outbox %s to %s failed: %s", job.id, job.channel_id, reason)
    if failure.kind == "transient":
        return  # Slack was unreachable for hours: nothing the creator can fix, and a DM would not get through
    text: str
    if failure.kind == "permanent":
        paused_reason = f"Slack said `{failure.error}` when I posted to <#{job.channel_id}>"
        with db.session() as s:
            paused = claims.claim_row(
                s,
                DigestSubscription,
                where=DigestSubscription.id == job.subscription_id,
                seen={DigestSubscription.paused_at: None},
                values={"paused_at": now, "paused_reason": paused_reason},
            )
        if not paused:
            return  # already paused (by this error on another row, or by a person): told once
        result.paused += 1
        fix = FIXES.get(failure.error, AUTH_FIX).format(channel=job.channel_id)
        text = (
            f":warning: I couldn't post the digest *{job.subscription_name}* to <#{job.channel_id}> "
            f"(Slack said `{failure.error}`), so I've paused it.\n*How to fix it:* {fix}"
        )
    else:
        text = (
            f":warning: I couldn't post the digest *{job.subscription_name}* to <#{job.channel_id}>: Slack "
            f"rejected it (`{failure.error}`). This looks like a problem in ProdOps itself; the worker's log "
            "has the details. The next period's digest will be tried as usual."
        )
    _notify(client, job, text, result)


def _notify(client: WebClient, job: _Job, text: str, result: DeliveryResult) -> None:
    if not job.creator:
        return
    try:
        client.chat_postMessage(channel=job.creator, text=text)
        result.notified += 1
    except Exception:  # with a revoked token this fails too; the reason stays on the row and subscription
        logger.warning("digest outbox %s: could not DM %s", job.id, job.creator, exc_info=True)
