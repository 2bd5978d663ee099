"""storage/claims.py: due rows claimed exactly once across workers, leases taken over, backoff bounds."""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import delete, select

from storage import claims
from storage.claims import Claim, Queue, backoff
from storage.db import Database
from storage.models import SlackOutbox
from tests.helpers import unique

T0 = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
QUEUE = Queue(
    SlackOutbox, SlackOutbox.id, SlackOutbox.status, SlackOutbox.attempts, SlackOutbox.next_attempt_at
)


@pytest.fixture
def team(db: Database) -> Iterator[str]:
    team_id = unique("TCL")
    yield team_id
    with db.session() as s:
        s.execute(delete(SlackOutbox).where(SlackOutbox.team_id == team_id))


def _rows(db: Database, team: str, n: int, *, at: datetime = T0) -> list[int]:
    with db.session() as s:
        rows = [
            SlackOutbox(
                team_id=team,
                kind="test",
                idempotency_key=f"k{i}",
                channel_id="C1",
                text=str(i),
                status="pending",
                attempts=0,
                next_attempt_at=at,
                created_at=at,
            )  # fmt: skip
            for i in range(n)
        ]
        s.add_all(rows)
        s.flush()
        return [r.id for r in rows]


def _mine(team: str) -> list:
    return [SlackOutbox.team_id == team]


def _status(db: Database, team: str) -> Counter[str]:
    with db.read() as s:
        return Counter(s.scalars(select(SlackOutbox.status).where(SlackOutbox.team_id == team)))


@pytest.mark.parametrize("skip_locked", [True, False], ids=["skip-locked", "conditional-update"])
def test_racing_workers_claim_each_row_exactly_once(db: Database, team: str, skip_locked: bool) -> None:
    ids = _rows(db, team, 60)
    workers = 4
    gate = threading.Barrier(workers)
    got: list[list[Claim]] = [[] for _ in range(workers)]
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            gate.wait()
            while True:
                batch = claims.claim_due(
                    db, QUEUE, now=T0, limit=7, where=_mine(team), skip_locked=skip_locked
                )
                got[n].extend(batch.claims)
                if not batch.claims and not batch.lost:
                    return
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    claimed = [c.id for claimed in got for c in claimed]
    assert sorted(claimed) == sorted(ids)  # every row once, none twice
    assert all(c.attempts == 1 and not c.taken_over for claimed in got for c in claimed)
    assert _status(db, team) == {"sending": 60}
    assert claims.claim_due(db, QUEUE, now=T0, where=_mine(team)).claims == []  # all leased


def test_a_lease_that_ran_out_is_taken_over_and_the_old_holder_cannot_settle(db: Database, team: str) -> None:
    [row_id] = _rows(db, team, 1)
    [first] = claims.claim_due(db, QUEUE, now=T0, where=_mine(team)).claims
    assert (first.attempts, first.taken_over) == (1, False)
    before = claims.claim_due(db, QUEUE, now=T0 + claims.LEASE - timedelta(seconds=1), where=_mine(team))
    assert before.claims == [] and before.due == 0  # still leased
    [second] = claims.claim_due(db, QUEUE, now=T0 + claims.LEASE, where=_mine(team)).claims
    assert (second.id, second.attempts, second.taken_over) == (row_id, 2, True)
    assert not claims.settle(db, QUEUE, first, status="sent")  # the dead worker woke up: too late
    assert claims.settle(db, QUEUE, second, status="sent")
    assert _status(db, team) == {"sent": 1}


def test_after_max_attempts_a_row_is_dead_not_claimed(db: Database, team: str) -> None:
    [row_id] = _rows(db, team, 1)
    now = T0
    for attempt in range(1, 4):
        [claim] = claims.claim_due(db, QUEUE, now=now, where=_mine(team), max_attempts=3).claims
        assert claim.attempts == attempt
        assert claims.settle(db, QUEUE, claim, status="pending", next_attempt_at=now + backoff(attempt))
        now += backoff(attempt)
    final = claims.claim_due(db, QUEUE, now=now, where=_mine(team), max_attempts=3)
    assert final.claims == [] and final.dead == [row_id]
    assert _status(db, team) == {"dead": 1}


def test_claim_one_and_claim_row_win_only_on_what_was_read(db: Database, team: str) -> None:
    [row_id] = _rows(db, team, 1)
    won = claims.claim_one(db, QUEUE, row_id=row_id, status="pending", seen_at=T0, attempts=0, now=T0)
    lost = claims.claim_one(db, QUEUE, row_id=row_id, status="pending", seen_at=T0, attempts=0, now=T0)
    assert won is not None and won.attempts == 1 and lost is None
    with db.session() as s:  # NULL is matched as NULL
        assert claims.claim_row(s, SlackOutbox, where=SlackOutbox.id == row_id,
                                seen={SlackOutbox.message_ts: None}, values={"message_ts": "1.0"})  # fmt: skip
        assert not claims.claim_row(s, SlackOutbox, where=SlackOutbox.id == row_id,
                                    seen={SlackOutbox.message_ts: None}, values={"message_ts": "2.0"})  # fmt: skip


def test_claim_by_insert_is_won_once(db: Database, team: str) -> None:
    def row() -> SlackOutbox:
        return SlackOutbox(team_id=team, kind="test", idempotency_key="same", channel_id="C1", text="x",
                           status="pending", attempts=0, next_attempt_at=T0, created_at=T0)  # fmt: skip

    with db.session() as s:
        assert claims.claim_by_insert(s, row())
        assert not claims.claim_by_insert(s, row())  # the session stays usable after the lost insert
    assert _status(db, team) == {"pending": 1}


def test_backoff_doubles_is_capped_and_jitter_stays_in_bounds() -> None:
    assert [backoff(n) for n in range(1, 5)] == [timedelta(minutes=m) for m in (1, 2, 4, 8)]
    assert backoff(0) == timedelta(minutes=1) and backoff(30) == claims.BACKOFF_CAP
    rng = random.Random(7)
    for n in range(1, 12):
        plain = backoff(n)
        drawn = [backoff(n, jitter=0.5, rng=rng) for _ in range(200)]
        assert all(plain <= d <= min(plain * 1.5, claims.BACKOFF_CAP) for d in drawn)
        if plain < claims.BACKOFF_CAP:
            assert len(set(drawn)) > 1  # it really spreads
    assert backoff(3, base=timedelta(seconds=2), cap=timedelta(seconds=5)) == timedelta(seconds=5)
    with pytest.raises(ValueError, match="jitter"):
        backoff(1, jitter=2)
