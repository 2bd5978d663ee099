"""One outbox for Slack sends: every message the workers post reaches Slack once, through 429s, outages and
crashes. Digests (bot/digests/outbox.py), ship notices (bot/insights/ship_delivery.py), metric alerts, SLA
notices and account briefs all send through what is here.

The mechanism, in the order a message meets it:
* Queued with an idempotency key, in the transaction that decided to send it (`enqueue`; digests and ship
  notices have their own tables, the others share ``slack_outbox``). A key already queued is not queued
  again, so deciding twice sends once.
* Claimed exactly once (storage/claims.py): a conditional update sets ``sending``, counts the attempt and
  starts a lease; a worker killed mid-send leaves the row to be taken over after the lease.
* Posted with message metadata naming the row (`Marker`). Every attempt after one that reached Slack first
  reads the channel (or thread) for that metadata (`find_posted`) and records the ts it finds instead of
  posting again: a timeout after Slack posted, a 5xx from a proxy in front of a Slack that did post, or a
  crash between the post and the commit do not post twice.
* A failure is classified (`classify_failure`) and decided (`next_step`): 429 → retried Retry-After after
  Slack's answer (the time of the answer is the base, not the start of the pass), and not counted as an
  attempt; 5xx, Slack's internal errors, timeouts and connection errors → retried after 1, 2, 4 … minutes
  (at most an hour apart), ``failed`` after MAX_ATTEMPTS; errors only a person can fix (channel_not_found,
  not_in_channel, is_archived, invalid_auth …) and requests Slack rejects → ``failed`` at once, with the
  reason.
* Clients without the SDK's retry handlers (`delivery_client`, `without_sdk_retries`): a retry inside the
  SDK after a 5xx or a dropped connection could post twice before this module sees anything, and a worker
  thread would sleep through every Retry-After.
"""

from __future__ import annotations

import copy
import http.client
import logging
import math
import time
import urllib.error
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackRequestError
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from bot.slack_client import for_team
from storage import claims
from storage.claims import MAX_ATTEMPTS, Claim, Queue, backoff
from storage.db import Database
from storage.models import SlackOutbox
from storage.types import utcnow

logger = logging.getLogger("prodops.outbox")

DEFAULT_RETRY_AFTER_S = 30
HISTORY_PAGES = 5  # at 200 messages each, how far back a retry looks for its own earlier post
HISTORY_MARGIN = timedelta(minutes=10)  # clock skew between us and Slack, when reading history

# Errors only a person can fix (a digest pauses its subscription and tells its creator how).
PAUSING_ERRORS = {
    "channel_not_found",
    "not_in_channel",
    "is_archived",
    "invalid_auth",
    "account_inactive",
    "token_revoked",
    "token_expired",
    "not_authed",
    "missing_scope",
    "restricted_action",
}
TRANSIENT_ERRORS = {"internal_error", "fatal_error", "service_unavailable", "request_timeout"}
NETWORK_ERRORS = (TimeoutError, ConnectionError, urllib.error.URLError, http.client.HTTPException, OSError)


# ---- failures and what to do about them ----------------------------------------------------------------


@dataclass(frozen=True)
class Failure:
    """What a failed Slack call means."""

    kind: Literal["rate_limited", "transient", "permanent", "rejected"]
    error: str
    retry_after_s: float = 0.0


def classify_failure(exc: BaseException) -> Failure:
    """What a failed Slack call means: rate limited (with Retry-After), transient, permanent or rejected."""
    if isinstance(exc, SlackApiError):
        response = exc.response
        error = str(response.get("error") or f"http_{response.status_code}")
        if response.status_code == 429 or error == "ratelimited":
            return Failure("rate_limited", error, retry_after(response.headers))
        if response.status_code >= 500 or error in TRANSIENT_ERRORS:
            return Failure("transient", error)
        if error in PAUSING_ERRORS:
            return Failure("permanent", error)
        return Failure("rejected", error)
    if isinstance(exc, SlackRequestError):
        return Failure("rejected", str(exc))
    if isinstance(exc, NETWORK_ERRORS):
        return Failure("transient", f"{exc.__class__.__name__}: {exc}".strip())
    logger.exception("Slack delivery: unexpected error", exc_info=exc)
    return Failure("transient", f"unexpected {exc.__class__.__name__}: {exc}")


def retry_after(headers: Any) -> float:
    """Slack's Retry-After (seconds), whatever the header's case and shape; a default when it is missing."""
    for key, value in dict(headers or {}).items():
        if str(key).lower() == "retry-after":
            raw = value[0] if isinstance(value, list | tuple) and value else value
            try:
                return max(1.0, float(raw))
            except (TypeError, ValueError):
                break
    return float(DEFAULT_RETRY_AFTER_S)


@dataclass(frozen=True)
class Retry:
    """Try again at `at`; `counts` is False after a 429 (Slack did nothing: the attempt is given back)."""

    at: datetime
    counts: bool
    note: str


@dataclass(frozen=True)
class GiveUp:
    """Never retried: `reason` is recorded on the row."""

    reason: str


def next_step(
    failure: Failure,
    *,
    attempts: int,
    now: datetime,
    answered_at: datetime,
    max_attempts: int = MAX_ATTEMPTS,
) -> Retry | GiveUp:
    """Retry or give up after a failed send. A 429 waits Retry-After from `answered_at` (when Slack said so);
    a transient failure backs off from `now` (the pass), 1, 2, 4 … minutes, until `max_attempts`."""
    if failure.kind == "rate_limited":
        wait = timedelta(seconds=math.ceil(failure.retry_after_s))
        return Retry(answered_at + wait, False, f"rate limited: retrying after {wait.total_seconds():.0f}s")
    if failure.kind == "transient" and attempts < max_attempts:
        return Retry(now + backoff(attempts), True, f"{failure.error} (attempt {attempts} of {max_attempts})")
    if failure.kind == "transient":
        return GiveUp(f"{failure.error}: gave up after {attempts} attempts")
    return GiveUp(failure.error)


class PassClock:
    """A delivery pass's clock: the pass's `now`, moved on by the real time spent since the pass began.

    With `now` the real time this is the wall clock; with a virtual `now` (tests, the bench) it is that
    time plus what the pass took, so "when Slack answered" means the same in both.
    """

    def __init__(self, now: datetime) -> None:
        self.start = now
        self._began = time.monotonic()

    def __call__(self) -> datetime:
        return self.start + timedelta(seconds=time.monotonic() - self._began)


# ---- clients --------------------------------------------------------------------------------------------


def delivery_client(token: str, base_url: str, *, timeout: int = 30) -> WebClient:
    """A WebClient without retry handlers: the outbox retries across passes, each retry checked against history."""
    return WebClient(token=token, base_url=base_url, timeout=timeout, retry_handlers=[])


def without_sdk_retries(client: WebClient) -> WebClient:
    """The same client (same token, workspace and base URL) without the SDK's retry handlers."""
    if not client.retry_handlers:
        return client
    bare = copy.copy(client)
    bare.retry_handlers = []
    return bare


# ---- posting once ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Marker:
    """The message metadata naming an outbox row, so a retry can find an earlier attempt's post."""

    event_type: str
    key: str  # the payload field holding the row's id
    value: int | str
    extra: dict[str, Any] = field(default_factory=dict)

    def metadata(self) -> dict[str, Any]:
        """Slack's `metadata` argument of chat.postMessage."""
        return {"event_type": self.event_type, "event_payload": {self.key: self.value, **self.extra}}

    def matches(self, message: dict[str, Any]) -> bool:
        """Whether a message from history carries this marker."""
        metadata = message.get("metadata") or {}
        payload = metadata.get("event_payload") or {}
        return metadata.get("event_type") == self.event_type and str(payload.get(self.key)) == str(self.value)


def find_posted(
    client: WebClient,
    *,
    channel: str,
    marker: Marker,
    since: datetime,
    thread_ts: str | None = None,
    log_name: str = "outbox",
) -> str | None:
    """The ts of the message carrying `marker`, if an earlier attempt posted it (channel history or thread).

    A DM addressed to a user id is not checked: finding its channel needs conversations.open (the
    `im:write` scope, which the app does not ask for), so such a DM can arrive twice after a 5xx that
    Slack had in fact posted.

    A 429 or 5xx while reading is raised (the attempt is retried); any other refusal (a scope missing) is
    logged and None returned: the message is posted, and the post's own answer decides what happens.
    """
    if channel[:1] in ("U", "W") and not thread_ts:
        return None
    oldest = (since - HISTORY_MARGIN).timestamp()
    cursor: str | None = None
    for _ in range(HISTORY_PAGES):
        try:
            if thread_ts:
                page = client.conversations_replies(
                    channel=channel, ts=thread_ts, limit=200, include_all_metadata=True, cursor=cursor
                )
            else:
                page = client.conversations_history(
                    channel=channel,
                    oldest=f"{oldest:.6f}",
                    limit=200,
                    include_all_metadata=True,
                    cursor=cursor,
                )
        except SlackApiError as exc:
            if classify_failure(exc).kind in ("rate_limited", "transient"):
                raise
            logger.warning(
                "%s %s: cannot read <#%s> to check for an earlier post (%s); posting",
                log_name,
                marker.value,
                channel,
                exc.response.get("error"),
            )
            return None
        for message in page.get("messages") or []:
            if marker.matches(message):
                return str(message["ts"])
        cursor = (page.get("response_metadata") or {}).get("next_cursor") or None
        if not page.get("has_more") or not cursor:
            return None
    return None


@dataclass(frozen=True)
class Posted:
    """Where the message is; `recovered` when an earlier attempt had posted it."""

    ts: str
    recovered: bool = False


def post_once(
    client: WebClient,
    *,
    channel: str,
    text: str,
    blocks: list[dict[str, Any]] | None,
    marker: Marker,
    attempts: int,
    since: datetime,
    thread_ts: str | None = None,
    check_history: bool = True,
    log_name: str = "outbox",
) -> Posted:
    """Posts the message unless an earlier attempt (``attempts > 1``) already did; raises what Slack raised."""
    if attempts > 1 and check_history:
        found = find_posted(
            client, channel=channel, marker=marker, since=since, thread_ts=thread_ts, log_name=log_name
        )
        if found is not None:
            logger.info("%s %s: already posted as %s; not posting again", log_name, marker.value, found)
            return Posted(found, recovered=True)
    response = client.chat_postMessage(
        channel=channel,
        text=text,
        blocks=blocks or None,
        thread_ts=thread_ts,
        metadata=marker.metadata(),
        unfurl_links=False,
        unfurl_media=False,
    )
    return Posted(str(response["ts"]))


def chart_in_thread(client: WebClient, *, channel: str, ts: str) -> bool:
    """Whether the message's thread already holds a file (an earlier attempt uploaded the chart)."""
    replies = client.conversations_replies(channel=channel, ts=ts, limit=200)
    return any(m.get("files") and m.get("ts") != ts for m in replies.get("messages") or [])


# ---- the shared table: alerts, SLA notices, briefs ------------------------------------------------------

OUTBOX = Queue(
    SlackOutbox, SlackOutbox.id, SlackOutbox.status, SlackOutbox.attempts, SlackOutbox.next_attempt_at
)
EVENT_TYPE = "prodops_outbox"

OnSent = Callable[[Session, SlackOutbox], None]


def enqueue(
    s: Session,
    *,
    team_id: str,
    kind: str,
    key: str,
    channel_id: str,
    text: str,
    blocks: list[dict[str, Any]] | None = None,
    thread_ts: str | None = None,
    chart_png: bytes | None = None,
    chart_name: str | None = None,
    chart_title: str | None = None,
    now: datetime | None = None,
    not_before: datetime | None = None,
) -> SlackOutbox | None:
    """Queues a message in the caller's transaction; None when `key` is already queued for the workspace.

    `not_before` holds it back (e.g. while its chart is drawn outside the transaction, see `attach_chart`).
    """
    now = now or utcnow()
    row = SlackOutbox(
        team_id=team_id, kind=kind, idempotency_key=key, channel_id=channel_id, thread_ts=thread_ts,
        text=text, blocks=blocks, chart_png=chart_png, chart_name=chart_name, chart_title=chart_title,
        status="pending", attempts=0, next_attempt_at=not_before or now, created_at=now,
    )  # fmt: skip
    return row if claims.claim_by_insert(s, row) else None


def attach_chart(db: Database, *, outbox_id: int, png: bytes, now: datetime) -> bool:
    """Adds the chart to a queued message that nobody has tried yet and makes it due; False if too late."""
    with db.session() as s:
        return claims.claim_row(
            s,
            SlackOutbox,
            where=SlackOutbox.id == outbox_id,
            seen={SlackOutbox.status: "pending", SlackOutbox.attempts: 0},
            values={"chart_png": png, "next_attempt_at": now},
        )


@dataclass
class OutboxResult:
    """What one delivery pass over ``slack_outbox`` did."""

    due: int = 0
    sent: int = 0
    recovered: int = 0  # an earlier attempt had posted it: found in history, not posted again
    rate_limited: int = 0
    retried: int = 0
    failed: int = 0
    chart_errors: int = 0  # sent without their chart
    lost_claims: int = 0
    deferred: int = 0  # not tried: their workspace is waiting out a Retry-After
    failures: list[tuple[int, str]] = field(default_factory=list)  # (row id, reason) given up this pass


@dataclass(frozen=True)
class _Message:
    claim: Claim
    team_id: str
    kind: str
    channel_id: str
    thread_ts: str | None
    text: str
    blocks: list[dict[str, Any]] | None
    chart_png: bytes | None
    chart_name: str | None
    chart_title: str | None
    message_ts: str | None
    created_at: datetime


def deliver_outbox(
    *,
    db: Database,
    client: WebClient,
    kinds: tuple[str, ...],
    now: datetime | None = None,
    batch: int = 100,
    on_sent: OnSent | None = None,
    team_id: str | None = None,
) -> OutboxResult:
    """Posts every due ``slack_outbox`` row of these kinds (of one workspace, when given) at most once;
    `on_sent` runs in the transaction that marks a row sent.

    After a 429 nothing more is sent to that workspace in this pass, and its other waiting rows wait too.
    """
    now = now or utcnow()
    clock = PassClock(now)
    result = OutboxResult()
    with db.read() as s:
        due = s.execute(
            select(SlackOutbox.id, SlackOutbox.team_id, SlackOutbox.status, SlackOutbox.next_attempt_at,
                   SlackOutbox.attempts)
            .where(OUTBOX.is_due(now), SlackOutbox.kind.in_(kinds),
                   *([SlackOutbox.team_id == team_id] if team_id else []))
            .order_by(SlackOutbox.next_attempt_at, SlackOutbox.id)
            .limit(batch)
        ).all()  # fmt: skip
    limited: set[str] = set()
    for row_id, row_team, status, seen_at, attempts in due:
        result.due += 1
        if row_team in limited:
            result.deferred += 1
            continue
        claim = claims.claim_one(
            db, OUTBOX, row_id=row_id, status=status, seen_at=seen_at, attempts=attempts, now=now
        )
        if claim is None:
            result.lost_claims += 1
            continue
        if claim.taken_over:
            logger.warning("outbox %s: lease ran out mid-delivery; taking it over", row_id)
        message = _load(db, claim)
        try:
            if _deliver(
                db, without_sdk_retries(for_team(client, row_team)), message, now, clock, result, on_sent
            ):
                limited.add(row_team)
        except Exception:  # a bug or the database: the row stays 'sending' and is retried after the lease
            logger.exception("outbox %s: delivery failed unexpectedly", row_id)
    return result


def _load(db: Database, claim: Claim) -> _Message:
    with db.read() as s:
        row = s.get(SlackOutbox, claim.id)
        assert row is not None
        return _Message(
            claim, row.team_id, row.kind, row.channel_id, row.thread_ts, row.text, row.blocks, row.chart_png,
            row.chart_name, row.chart_title, row.message_ts, row.created_at,
        )  # fmt: skip


def _deliver(
    db: Database,
    client: WebClient,
    m: _Message,
    now: datetime,
    clock: PassClock,
    result: OutboxResult,
    on_sent: OnSent | None,
) -> bool:
    """Delivers one claimed row; True when Slack rate-limited the workspace (nothing more is sent to it)."""
    marker = Marker(EVENT_TYPE, "outbox_id", m.claim.id, {"kind": m.kind})
    ts = m.message_ts
    if ts is None:
        try:
            posted = post_once(
                client, channel=m.channel_id, text=m.text, blocks=m.blocks, marker=marker,
                attempts=m.claim.attempts, since=m.created_at, thread_ts=m.thread_ts,
            )  # fmt: skip
        except Exception as exc:
            return _failed(db, m, classify_failure(exc), now, clock(), result)
        ts = posted.ts
        result.recovered += posted.recovered
        if m.chart_png is not None:  # keep the ts before anything else can fail: never posted again
            claims.settle(db, OUTBOX, m.claim, message_ts=ts)
    note: str | None = None
    if m.chart_png is not None:
        try:
            if m.claim.attempts <= 1 or not chart_in_thread(client, channel=m.channel_id, ts=ts):
                client.files_upload_v2(
                    channel=m.channel_id, file=m.chart_png, filename=m.chart_name or "chart.png",
                    title=m.chart_title or "chart", thread_ts=ts,
                )  # fmt: skip
        except Exception as exc:
            failure = classify_failure(exc)
            step = next_step(failure, attempts=m.claim.attempts, now=now, answered_at=clock())
            if isinstance(step, Retry):
                _retry(db, m, step, result)
                return not step.counts
            result.chart_errors += 1
            note = f"chart not attached: {failure.error}"
            logger.warning("outbox %s: sent without its chart: %s", m.claim.id, failure.error)
    with db.session() as s:
        if claims.settle_in(s, OUTBOX, m.claim, status="sent", message_ts=ts, sent_at=now, last_error=note):
            result.sent += 1
            if on_sent is not None:
                row = s.get(SlackOutbox, m.claim.id)
                assert row is not None
                on_sent(s, row)
    return False


def _retry(db: Database, m: _Message, step: Retry, result: OutboxResult) -> None:
    attempts = m.claim.attempts if step.counts else m.claim.attempts - 1
    claims.settle(db, OUTBOX, m.claim, status="pending", attempts=attempts, next_attempt_at=step.at,
                  last_error=step.note)  # fmt: skip
    if step.counts:
        result.retried += 1
    else:
        result.rate_limited += 1


def _failed(
    db: Database,
    m: _Message,
    failure: Failure,
    now: datetime,
    answered_at: datetime,
    result: OutboxResult,
) -> bool:
    """Retries the post or records that it never will be; True when it was a 429 (the workspace waits)."""
    step = next_step(failure, attempts=m.claim.attempts, now=now, answered_at=answered_at)
    if isinstance(step, Retry):
        _retry(db, m, step, result)
        if not step.counts:
            _hold_team(db, m.team_id, step.at)
        return not step.counts
    if claims.settle(db, OUTBOX, m.claim, status="failed", last_error=step.reason):
        result.failed += 1
        result.failures.append((m.claim.id, step.reason))
        logger.warning("outbox %s (%s) to %s failed: %s", m.claim.id, m.kind, m.channel_id, step.reason)
    return False


def _hold_team(db: Database, team_id: str, until: datetime) -> None:
    """Slack said wait: the workspace's other waiting messages wait as long."""
    with db.session() as s:
        s.execute(
            update(SlackOutbox)
            .where(
                SlackOutbox.team_id == team_id,
                SlackOutbox.status == "pending",
                SlackOutbox.next_attempt_at < until,
            )
            .values(next_attempt_at=until)
            .execution_options(synchronize_session=False)
        )
