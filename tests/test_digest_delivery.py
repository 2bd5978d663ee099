"""Digest delivery: each outbox row reaches Slack once, through crashes, rate limits, outages and bad channels."""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from slack_sdk import WebClient
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)
from sqlalchemy import delete, select, update

from bot.devkit.emulator import SlackEmulator
from bot.digests import outbox
from bot.digests.outbox import (
    LEASE,
    MAX_ATTEMPTS,
    METADATA_EVENT_TYPE,
    DeliveryResult,
    backoff,
    deliver_pending,
    delivery_client,
)
from bot.digests.scheduler import run_digest_tick
from bot.digests.schemas import DigestPeriod, RenderedDigest
from storage.db import Database
from storage.models import DigestOutbox, DigestSubscription
from tests.helpers import unique

OWN_DATABASE = True  # the ticks tested here scan every workspace: the shared server must not run them too

T0 = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)  # a Monday; before the real "now", see test_digest_scheduler
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


class StubRenderer:
    """Fixed blocks (and optionally a chart), so these tests don't depend on the real renderer."""

    def __init__(self, chart: bytes | None = None) -> None:
        self.chart = chart

    def __call__(
        self,
        *,
        db_session: Any,
        subscription: DigestSubscription,
        period: DigestPeriod,
        team_name: str | None = None,
        now: datetime,
    ) -> RenderedDigest:
        text = f"{subscription.name}: {period.label}"
        blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]
        return RenderedDigest(text=text, blocks=blocks, chart_png=self.chart, is_empty=False)


@pytest.fixture
def emu() -> Iterator[SlackEmulator]:
    with SlackEmulator() as emulator:
        yield emulator


@pytest.fixture
def client(emu: SlackEmulator) -> WebClient:
    """No retry handlers: every retry happens across ticks, in deliver_pending."""
    return delivery_client(emu.bot_token, emu.url)


@pytest.fixture
def retrying_client(emu: SlackEmulator) -> WebClient:
    """Like bot.slack_client.build_client: 429 / 5xx / connection errors retried inside one call."""
    return WebClient(
        token=emu.bot_token,
        base_url=emu.url,
        retry_handlers=[
            ConnectionErrorRetryHandler(max_retry_count=2),
            RateLimitErrorRetryHandler(max_retry_count=3),
            ServerErrorRetryHandler(max_retry_count=2),
        ],
    )


@pytest.fixture
def team(db: Database) -> Iterator[str]:
    team_id = unique("TDD")
    yield team_id
    with db.session() as s:
        s.execute(delete(DigestOutbox).where(DigestOutbox.team_id == team_id))
        s.execute(delete(DigestSubscription).where(DigestSubscription.team_id == team_id))


def add_sub(
    db: Database, team: str, channel: str, *, creator: str = "U0CREATOR", name: str = "Weekly digest"
) -> int:
    with db.session() as s:
        row = DigestSubscription(
            team_id=team, channel_id=channel, name=name, cadence="weekly", cron="0 9 * * mon", timezone="UTC",
            sections={}, skip_if_empty=False, created_by_user_id=creator, next_run_at=T0,
        )  # fmt: skip
        s.add(row)
        s.flush()
        return row.id


def queue(db: Database, client: WebClient, *, chart: bytes | None = None, now: datetime = T0) -> None:
    """The scheduler's half only: rows written to the outbox, not delivered (a worker killed right after)."""
    result = run_digest_tick(db=db, client=client, now=now, render=StubRenderer(chart), deliver=False)
    assert result.delivery is None


def rows(db: Database, team: str) -> list[DigestOutbox]:
    with db.read() as s:
        return list(
            s.scalars(select(DigestOutbox).where(DigestOutbox.team_id == team).order_by(DigestOutbox.id))
        )


def one_row(db: Database, team: str) -> DigestOutbox:
    [row] = rows(db, team)
    return row


def sub_row(db: Database, sub_id: int) -> DigestSubscription:
    with db.read() as s:
        row = s.get(DigestSubscription, sub_id)
        assert row is not None
        return row


# ---- crashes --------------------------------------------------------------------------------------------


def test_worker_killed_after_writing_the_row_delivers_after_restart(
    db: Database, emu: SlackEmulator, client: WebClient, team: str
) -> None:
    channel = emu.add_channel(unique("digest"))["id"]
    add_sub(db, team, channel)
    queue(db, client)
    assert one_row(db, team).status == "pending" and emu.messages(channel) == []

    restarted = deliver_pending(db=db, client=client, now=T0 + timedelta(minutes=3))
    assert (restarted.claimed, restarted.sent, restarted.recovered) == (1, 1, 0)
    [message] = emu.messages(channel)
    row = one_row(db, team)
    assert (row.status, row.message_ts, row.attempts, row.sent_at) == (
        "sent",
        message["ts"],
        1,
        T0 + timedelta(minutes=3),
    )
    assert deliver_pending(db=db, client=client, now=T0 + timedelta(hours=1)).claimed == 0
    assert len(emu.messages(channel)) == 1


def _claim_and_die(db: Database, team: str, now: datetime) -> DigestOutbox:
    """A worker that claims the row (status sending, lease started) and is killed before it records anything."""
    row = one_row(db, team)
    job = outbox._claim(
        db, outbox_id=row.id, status=row.status, seen_at=row.next_attempt_at, attempts=row.attempts, now=now
    )
    assert job is not None
    return one_row(db, team)


def test_a_stale_sending_row_is_taken_again_after_its_lease(
    db: Database, emu: SlackEmulator, client: WebClient, team: str
) -> None:
    channel = emu.add_channel(unique("digest"))["id"]
    add_sub(db, team, channel)
    queue(db, client)
    dead = _claim_and_die(db, team, T0)  # killed before posting
    assert (dead.status, dead.attempts, dead.next_attempt_at) == ("sending", 1, T0 + LEASE)

    assert (
        deliver_pending(db=db, client=client, now=T0 + LEASE - timedelta(seconds=1)).claimed == 0
    )  # still leased
    taken = deliver_pending(db=db, client=client, now=T0 + LEASE)
    assert (taken.claimed, taken.sent, taken.recovered) == (1, 1, 0)
    assert len(emu.messages(channel)) == 1 and one_row(db, team).attempts == 2


def test_killed_after_slack_accepted_the_post_is_not_posted_again(
    db: Database, emu: SlackEmulator, client: WebClient, team: str
) -> None:
    channel = emu.add_channel(unique("digest"))["id"]
    add_sub(db, team, channel)
    queue(db, client)
    dead = _claim_and_die(db, team, T0)
    # What the dead worker got as far as: Slack has the message, the database does not know.
    metadata = {"event_type": METADATA_EVENT_TYPE, "event_payload": {"outbox_id": dead.id}}
    posted = client.chat_postMessage(channel=channel, text=dead.text, blocks=dead.blocks, metadata=metadata)
    emu.post_message(channel, emu.add_user(unique("dan"))["id"], "meanwhile, people talk")
    taken = deliver_pending(db=db, client=client, now=T0 + LEASE)
    assert (taken.claimed, taken.sent, taken.recovered) == (1, 1, 1)
    assert [m["ts"] for m in emu.messages(channel) if m.get("bot_id")] == [posted["ts"]]
    assert one_row(db, team).message_ts == posted["ts"]
    history = emu.calls("conversations.history")
    assert history and history[-1].params.get("include_all_metadata") in ("true", "1", True)


def test_a_timeout_after_slack_posted_is_not_posted_again(
    db: Database, emu: SlackEmulator, team: str
) -> None:
    """Slack accepts the post but answers after the client gave up: the retry finds it in history."""
    client = delivery_client(emu.bot_token, emu.url, timeout=1)
    channel = emu.add_channel(unique("digest"))["id"]
    add_sub(db, team, channel)
    queue(db, client)
    emu.delay("chat.postMessage", 1.6)
    first = deliver_pending(db=db, client=client, now=T0)
    assert (first.retried, first.sent) == (1, 0)
    row = one_row(db, team)
    assert (row.status, row.attempts, row.next_attempt_at) == ("pending", 1, T0 + backoff(1))
    assert "timed out" in (row.last_error or "").lower() or "timeout" in (row.last_error or "").lower()
    time.sleep(1.0)  # the emulator finishes the post it was holding
    assert len(emu.messages(channel)) == 1
    second = deliver_pending(db=db, client=client, now=T0 + backoff(1))
    assert (second.sent, second.recovered) == (1, 1)
    assert len(emu.messages(channel)) == 1 and len(emu.calls("chat.postMessage")) == 1
    assert one_row(db, team).message_ts == emu.messages(channel)[0]["ts"]


# ---- rate limits and outages ---------------------------------------------------------------------------------


def test_429_waits_as_long_as_retry_after_and_does_not_count(
    db: Database, emu: SlackEmulator, client: WebClient, team: str
) -> None:
    channel = emu.add_channel(unique("digest"))["id"]
    add_sub(db, team, channel)
    queue(db, client)
    emu.fail("chat.postMessage", status=429, retry_after=7)
    limited = deliver_pending(db=db, client=client, now=T0)
    assert (limited.rate_limited, limited.sent) == (1, 0)
    row = one_row(db, team)
    assert (row.status, row.attempts) == ("pending", 0)
    # Retry-After counts from Slack's answer (the pass's `now` plus the time the pass took to get it).
    assert T0 + timedelta(seconds=7) <= row.next_attempt_at < T0 + timedelta(seconds=8)
    assert (
        deliver_pending(
            db=db, client=client, now=T0 + timedelta(seconds=7) - timedelta(microseconds=1)
        ).claimed
        == 0
    )
    assert deliver_pending(db=db, client=client, now=row.next_attempt_at).sent == 1
    assert len(emu.messages(channel)) == 1
    # attempts == 1 after a 429: the retry was a first attempt, so no history check was needed.
    assert one_row(db, team).attempts == 1 and emu.calls("conversations.history") == []


def test_retry_after_counts_from_slacks_answer_not_from_the_start_of_the_pass(
    db: Database, emu: SlackEmulator, client: WebClient, team: str
) -> None:
    """Issue 17 #14: Slack answers a 429 with Retry-After: 2 after 1.5 s; the retry waits 2 s from the answer."""
    channel = emu.add_channel(unique("digest"))["id"]
    add_sub(db, team, channel)
    queue(db, client)
    emu.delay("chat.postMessage", 1.5)
    emu.fail("chat.postMessage", status=429, retry_after=2)
    now = datetime.now(UTC)
    passed = deliver_pending(db=db, client=client, now=now)
    answered = datetime.now(UTC)
    assert (passed.sent, passed.rate_limited) == (0, 1)
    row = one_row(db, team)
    assert (row.status, row.attempts) == ("pending", 0)
    assert row.next_attempt_at - now >= timedelta(seconds=1.5 + 2)  # not now + 2 s
    assert row.next_attempt_at - answered < timedelta(seconds=2 + 1)  # and no longer than Slack asked
    assert deliver_pending(db=db, client=client, now=now + timedelta(seconds=3)).claimed == 0
    assert deliver_pending(db=db, client=client, now=row.next_attempt_at).sent == 1
    assert len(emu.messages(channel)) == 1


def test_5xx_backs_off_exponentially_then_delivers(
    db: Database, emu: SlackEmulator, client: WebClient, team: str
) -> None:
    channel = emu.add_channel(unique("digest"))["id"]
    add_sub(db, team, channel)
    queue(db, client)
    emu.fail("chat.postMessage", status=500, times=3)
    now = T0
    waits = []
    for _ in range(3):
        assert deliver_pending(db=db, client=client, now=now).retried == 1
        row = one_row(db, team)
        waits.append(row.next_attempt_at - now)
        assert (
            deliver_pending(db=db, client=client, now=row.next_attempt_at - timedelta(seconds=1)).claimed == 0
        )
        now = row.next_attempt_at
    assert waits == [timedelta(minutes=1), timedelta(minutes=2), timedelta(minutes=4)]
    assert deliver_pending(db=db, client=client, now=now).sent == 1
    row = one_row(db, team)
    assert (row.status, row.attempts) == ("sent", 4)
    assert len(emu.messages(channel)) == 1


def test_gives_up_after_max_attempts_without_pausing(
    db: Database, emu: SlackEmulator, client: WebClient, team: str
) -> None:
    channel = emu.add_channel(unique("digest"))["id"]
    sub_id = add_sub(db, team, channel)
    queue(db, client)
    emu.fail("*", status=503, times=1000)
    now = T0
    for _ in range(MAX_ATTEMPTS):
        deliver_pending(db=db, client=client, now=now)
        now = max(now, one_row(db, team).next_attempt_at)
    row = one_row(db, team)
    assert (row.status, row.attempts) == ("failed", MAX_ATTEMPTS)
    assert "gave up" in (row.last_error or "")
    assert sub_row(db, sub_id).paused_at is None
    assert backoff(MAX_ATTEMPTS) == timedelta(hours=1)


def test_the_sdk_retry_handlers_path(
    db: Database, emu: SlackEmulator, retrying_client: WebClient, team: str
) -> None:
    """With build_client's handlers, a 429 and a 500 are retried inside the call: one pass delivers."""
    channel = emu.add_channel(unique("digest"))["id"]
    add_sub(db, team, channel)
    queue(db, retrying_client, chart=PNG)
    emu.fail("chat.postMessage", status=429, retry_after=1)
    emu.fail("files.getUploadURLExternal", status=500)
    result = deliver_pending(db=db, client=retrying_client, now=T0)
    assert (result.sent, result.rate_limited, result.retried) == (1, 0, 0)
    assert len(emu.messages(channel)) == 1 and len(emu.files()) == 1


@pytest.mark.parametrize("with_handlers", [False, True], ids=["no-retry-handlers", "sdk-retry-handlers"])
def test_flaky_slack_every_digest_delivered_exactly_once(
    db: Database, emu: SlackEmulator, team: str, with_handlers: bool
) -> None:
    """~30% of Slack calls answer 429 or 500 (plus a few slow posts that time out after Slack posted)."""
    rng = random.Random(20261126)
    handlers = [RateLimitErrorRetryHandler(max_retry_count=1), ServerErrorRetryHandler(max_retry_count=1)]
    client = WebClient(
        token=emu.bot_token, base_url=emu.url, timeout=1, retry_handlers=handlers if with_handlers else []
    )
    count = 12 if with_handlers else 24  # the SDK sleeps through each Retry-After: keep that variant short
    retry_afters = [0] if with_handlers else [0, 1, 5]
    channels = [emu.add_channel(unique("flaky"))["id"] for _ in range(count)]
    for channel in channels:
        add_sub(db, team, channel)
    queue(db, client, chart=PNG)
    assert len(rows(db, team)) == count
    now, slow = T0, 0
    passes: list[DeliveryResult] = []
    timed_out: set[int] = set()
    for _ in range(400):
        todo = [r for r in rows(db, team) if r.status in ("pending", "sending")]
        if not todo:
            break
        due = [r for r in todo if r.next_attempt_at <= now]
        if not due:  # nothing to do until the next retry: jump there
            now = min(r.next_attempt_at for r in todo)
            continue
        for _ in range(3 * min(len(due), 4)):  # about the calls this pass makes (post + 2-3 for the chart)
            roll = rng.random()
            if roll < 0.15:
                emu.fail("*", status=429, retry_after=rng.choice(retry_afters))
            elif roll < 0.30:
                emu.fail("*", status=rng.choice([500, 502, 503]))
        if len(passes) in (3, 7):  # a post Slack makes, but answers only after the client's 1 s timeout
            slow += 1
            emu.delay("chat.postMessage", 1.3)
        passes.append(deliver_pending(db=db, client=client, now=now, batch=4))
        if any("timed out" in (r.last_error or "") and r.id not in timed_out for r in rows(db, team)):
            timed_out.update(r.id for r in rows(db, team) if "timed out" in (r.last_error or ""))
            time.sleep(0.5)  # Slack has stored it before anyone retries (for real, retries are minutes apart)
        now += timedelta(seconds=30)
    else:
        pytest.fail(f"not delivered: {Counter(r.status for r in rows(db, team))}")
    time.sleep(1.5)  # any post still held by an injected delay has landed
    final = rows(db, team)
    assert Counter(r.status for r in final) == {"sent": count}, [(r.status, r.last_error) for r in final]
    assert [len(emu.messages(c)) for c in channels] == [1] * count
    by_channel = {r.channel_id: r for r in final}
    for channel in channels:
        row = by_channel[channel]
        ts = emu.messages(channel)[0]["ts"]
        assert row.message_ts == ts
        assert len(emu.replies(channel, ts)) == 1  # one chart in the thread
    assert len(emu.files()) == count
    total = Counter[str]()
    for p in passes:
        total.update({k: v for k, v in vars(p).items() if isinstance(v, int)})
    assert total["sent"] == count and total["failed"] == 0
    faults = sum(1 for c in emu.calls() if c.http_status in (429, 500, 502, 503))
    assert faults >= 0.15 * len(emu.calls()), (faults, len(emu.calls()))  # the faults really happened
    assert total["recovered"] >= 1  # a timed-out post found in history, not posted again
    if not with_handlers:
        assert total["rate_limited"] > 0 and total["retried"] > 0


# ---- charts -----------------------------------------------------------------------------------------------


def test_chart_is_uploaded_into_the_digest_thread(
    db: Database, emu: SlackEmulator, client: WebClient, team: str
) -> None:
    channel = emu.add_channel(unique("digest"))["id"]
    add_sub(db, team, channel)
    queue(db, client, chart=PNG)
    assert deliver_pending(db=db, client=client, now=T0).sent == 1
    [message] = emu.messages(channel)
    [reply] = emu.replies(channel, message["ts"])
    [file] = reply["files"]
    assert file["name"] == "digest.png" and emu.file_content(file["id"]) == PNG


def test_a_chart_upload_failure_retries_only_the_chart(
    db: Database, emu: SlackEmulator, client: WebClient, team: str
) -> None:
    channel = emu.add_channel(unique("digest"))["id"]
    add_sub(db, team, channel)
    queue(db, client, chart=PNG)
    emu.fail("files.completeUploadExternal", status=500)
    first = deliver_pending(db=db, client=client, now=T0)
    assert (first.sent, first.retried) == (0, 1)
    [message] = emu.messages(channel)
    row = one_row(db, team)
    assert (row.status, row.message_ts) == ("pending", message["ts"])  # delivered; the chart still to come
    second = deliver_pending(db=db, client=client, now=row.next_attempt_at)
    assert second.sent == 1
    assert len(emu.messages(channel)) == 1 and len(emu.calls("chat.postMessage")) == 1
    assert len(emu.replies(channel, message["ts"])) == 1


def test_a_chart_that_cannot_be_uploaded_does_not_hold_back_the_digest(
    db: Database, emu: SlackEmulator, client: WebClient, team: str
) -> None:
    channel = emu.add_channel(unique("digest"))["id"]
    add_sub(db, team, channel)
    queue(db, client, chart=PNG)
    emu.fail("files.getUploadURLExternal", status=200, error="missing_scope")
    result = deliver_pending(db=db, client=client, now=T0)
    assert (result.sent, result.chart_errors) == (1, 1)
    row = one_row(db, team)
    assert row.status == "sent" and "chart not attached: missing_scope" in (row.last_error or "")
    assert len(emu.messages(channel)) == 1


# ---- permanent failures ------------------------------------------------------------------------------------


def _channel_for(emu: SlackEmulator, error: str) -> str:
    """A channel that makes chat.postMessage fail with `error` (for real where the emulator can)."""
    if error == "not_in_channel":
        return str(emu.add_channel(unique("nobot"), bot_is_member=False)["id"])
    channel = str(emu.add_channel(unique("digest"))["id"])
    if error == "is_archived":
        emu.archive_channel(channel)
    else:
        emu.fail("chat.postMessage", status=200, error=error)
    return channel


@pytest.mark.parametrize(
    ("error", "fix"),
    [
        ("channel_not_found", "/invite @ProdOps"),
        ("not_in_channel", "/invite @ProdOps"),
        ("is_archived", "Unarchive it"),
        ("invalid_auth", "reinstall ProdOps"),
        ("account_inactive", "reinstall ProdOps"),
    ],
)
def test_permanent_failure_pauses_and_tells_the_creator(
    db: Database, emu: SlackEmulator, client: WebClient, team: str, error: str, fix: str
) -> None:
    creator = emu.add_user(unique("alice"))["id"]
    channel = _channel_for(emu, error)
    sub_id = add_sub(db, team, channel, creator=creator)
    queue(db, client)
    result = deliver_pending(db=db, client=client, now=T0)
    assert (result.failed, result.paused, result.notified, result.sent) == (1, 1, 1, 0)
    row = one_row(db, team)
    assert (row.status, row.last_error, row.message_ts) == ("failed", error, None)
    sub = sub_row(db, sub_id)
    assert sub.paused_at == T0 and error in (sub.paused_reason or "")
    [dm] = emu.messages(creator)
    assert error in dm["text"] and fix in dm["text"] and "/digest edit" in dm["text"]
    assert f"<#{channel}>" in dm["text"]
    assert deliver_pending(db=db, client=client, now=T0 + timedelta(days=1)).claimed == 0  # never retried
    # Paused: no more digests are written for it.
    assert (
        run_digest_tick(db=db, client=client, now=T0 + timedelta(days=7), render=StubRenderer()).claimed == 0
    )
    assert len(rows(db, team)) == 1


def test_the_creator_is_told_once_when_several_rows_fail(
    db: Database, emu: SlackEmulator, client: WebClient, team: str
) -> None:
    creator = emu.add_user(unique("bob"))["id"]
    channel = emu.add_channel(unique("gone"))["id"]
    sub_id = add_sub(db, team, channel, creator=creator)
    queue(db, client)
    with db.session() as s:  # a second period queued for the same subscription
        s.execute(
            update(DigestSubscription)
            .where(DigestSubscription.id == sub_id)
            .values(next_run_at=T0 + timedelta(days=7))
        )
    queue(db, client, now=T0 + timedelta(days=7))
    emu.archive_channel(channel)
    result = deliver_pending(db=db, client=client, now=T0 + timedelta(days=7))
    assert (result.failed, result.paused, result.notified) == (2, 1, 1)
    assert len(emu.messages(creator)) == 1


def test_a_rejected_message_fails_and_tells_the_creator_without_pausing(
    db: Database, emu: SlackEmulator, client: WebClient, team: str
) -> None:
    creator = emu.add_user(unique("carol"))["id"]
    channel = emu.add_channel(unique("digest"))["id"]
    sub_id = add_sub(db, team, channel, creator=creator)
    queue(db, client)
    emu.fail("chat.postMessage", status=200, error="invalid_blocks")
    result = deliver_pending(db=db, client=client, now=T0)
    assert (result.failed, result.paused, result.notified) == (1, 0, 1)
    assert one_row(db, team).status == "failed" and sub_row(db, sub_id).paused_at is None
    [dm] = emu.messages(creator)
    assert "invalid_blocks" in dm["text"]
