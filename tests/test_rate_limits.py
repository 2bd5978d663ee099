"""Abuse limits: slash commands per (workspace, user) and push-API requests per token.

The buckets are in each web process's memory, so the DB backend plays no part: the server tests run one
gunicorn process (so one bucket) on SQLite, with small limits set through the environment. That the
defaults never meet normal use is checked on the shared scenario server (both backends).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import select

from bot.devkit.driver import Response, SlackDriver
from bot.devkit.emulator import SlackEmulator
from bot.devkit.server_process import ServerProcess
from bot.metrics.points import points_between
from bot.metrics.tokens import create_token
from bot.security.ratelimit import (
    COMMAND_BURST,
    COMMANDS_PER_MINUTE,
    PUSH_BURST,
    RateLimitSettings,
    TokenBucket,
    retry_after_seconds,
)
from storage.db import Database
from storage.migrate import upgrade
from storage.models import FeedbackItem, InboxEvent, Metric
from tests.conftest import SIGNING_SECRET, Stack, server_env
from tests.helpers import items_in_channel, unique, wait_for

BURST = 3
PER_MINUTE = 60  # one more a second once the burst is spent


# ---- the bucket, pure -------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_bucket_allows_the_burst_then_one_per_interval() -> None:
    clock = Clock()
    bucket = TokenBucket(per_minute=30, burst=3, clock=clock)
    assert [bucket.take("u") for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = bucket.take("u")
    assert wait == pytest.approx(2.0)  # 30 a minute: one every 2 s
    assert retry_after_seconds(wait) == 2
    clock.now += 1.0
    assert bucket.take("u") == pytest.approx(1.0)  # half a token back; a refusal costs nothing
    clock.now += 1.0
    assert bucket.take("u") == 0.0
    assert bucket.take("u") > 0
    clock.now += 3600
    assert [bucket.take("u") for _ in range(4)][:3] == [0.0, 0.0, 0.0]  # refills to the burst, no further


def test_buckets_are_per_key_and_forgotten_when_full(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    bucket = TokenBucket(per_minute=60, burst=1, clock=clock)
    assert bucket.take(("T1", "U1")) == 0.0 and bucket.take(("T1", "U1")) > 0
    assert bucket.take(("T1", "U2")) == 0.0  # another person
    assert bucket.take(("T2", "U1")) == 0.0  # the same id in another workspace
    monkeypatch.setattr("bot.security.ratelimit.MAX_TRACKED_KEYS", 3)
    clock.now += 5  # every bucket has refilled
    assert bucket.take(("T3", "U1")) == 0.0
    assert len(bucket._buckets) == 1  # only the one just used is still tracked
    assert retry_after_seconds(0.01) == 1  # never "try again in 0 s"


def test_limits_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert RateLimitSettings().command_burst == COMMAND_BURST
    monkeypatch.setenv("PRODOPS_COMMAND_BURST", "7")
    monkeypatch.setenv("PRODOPS_PUSH_REQUESTS_PER_MINUTE", "1200")
    limits = RateLimitSettings()
    assert (limits.command_burst, limits.push_requests_per_minute) == (7, 1200)
    monkeypatch.setenv("PRODOPS_COMMAND_BURST", "0")
    with pytest.raises(ValueError, match="PRODOPS_COMMAND_BURST"):
        RateLimitSettings()


# ---- through a real server with small limits ---------------------------------------------------------


@dataclass
class Limited:
    emulator: SlackEmulator
    server: ServerProcess
    driver: SlackDriver
    db: Database


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Limited]:
    folder = tmp_path_factory.mktemp("ratelimit")
    url = f"sqlite:///{folder / 'prodops.db'}"
    upgrade(url)
    emulator = SlackEmulator().start()
    env = server_env(
        emulator,
        url,
        WEB_CONCURRENCY="1",
        PRODOPS_COMMAND_BURST=str(BURST),
        PRODOPS_COMMANDS_PER_MINUTE=str(PER_MINUTE),
        PRODOPS_PUSH_BURST=str(BURST),
        PRODOPS_PUSH_REQUESTS_PER_MINUTE=str(PER_MINUTE),
    )
    server = ServerProcess(env, log_path=folder / "server.log")
    try:
        server.start()
    except RuntimeError:
        emulator.stop()
        raise
    db = Database(url)
    driver = SlackDriver(events_url=server.events_url, signing_secret=SIGNING_SECRET, emulator=emulator)
    yield Limited(emulator, server, driver, db)
    db.dispose()
    server.stop()
    emulator.stop()


def _feedback(
    limited: Limited, user: str, channel: str, text: str, driver: SlackDriver | None = None
) -> Response:
    fields = (driver or limited.driver).slash_command(
        command="/feedback", text=text, user=user, channel=channel
    )
    response = (driver or limited.driver).send_form(fields)
    response.headers["x-trigger-id"] = fields["trigger_id"]
    return response


def _too_fast(response: Response) -> int:
    """The seconds the refusal asks to wait; fails unless the response is the rate-limit answer."""
    assert response.status == 200
    body = response.json()
    assert body["response_type"] == "ephemeral"
    assert body["text"].startswith("You're sending commands too fast — try again in ")
    seconds = int(body["text"].rsplit(" in ", 1)[1].split()[0])
    assert {k.lower(): v for k, v in response.headers.items()}["retry-after"] == str(seconds)
    assert 1 <= seconds <= 60 / PER_MINUTE + 1
    return seconds


def test_commands_over_the_limit_are_refused_without_work(limited: Limited) -> None:
    emu = limited.emulator
    user, other = emu.add_user(unique("fast"))["id"], emu.add_user(unique("calm"))["id"]
    channel = emu.add_channel(unique("ideas"), members=[user, other])["id"]
    marker = uuid.uuid4().hex[:8]

    accepted = [_feedback(limited, user, channel, f"Idea {marker} {n}") for n in range(BURST)]
    assert all(r.status == 200 and "too fast" not in r.body for r in accepted)
    refused = _feedback(limited, user, channel, f"Idea {marker} refused")
    seconds = _too_fast(refused)

    # Another person, and the same person id in another workspace, are not affected.
    assert "too fast" not in _feedback(limited, other, channel, f"Idea {marker} other").body
    elsewhere = SlackDriver(
        events_url=limited.server.events_url,
        signing_secret=SIGNING_SECRET,
        emulator=emu,
        team_id="T0ELSEWHERE",
    )
    assert "too fast" not in _feedback(limited, user, channel, f"Idea {marker} elsewhere", elsewhere).body

    def texts() -> list[str]:
        with limited.db.read() as s:
            return sorted(s.scalars(select(FeedbackItem.text).where(FeedbackItem.text.contains(marker))))

    wait_for(lambda: len(texts()) == BURST + 2, what="the accepted captures")
    time.sleep(0.5)
    assert f"Idea {marker} refused" not in texts()  # no work done ...
    with limited.db.inbox.read() as s:  # ... and the delivery was not even recorded
        trigger = refused.headers["x-trigger-id"]
        assert s.scalar(select(InboxEvent.id).where(InboxEvent.delivery_id == trigger)) is None

    time.sleep(seconds)  # after the time the answer gave, the person may go on
    again = _feedback(limited, user, channel, f"Idea {marker} later")
    assert again.status == 200 and "too fast" not in again.body
    wait_for(lambda: f"Idea {marker} later" in texts(), what="capture after waiting")


def _push(limited: Limited, key: str, token: str, value: float) -> tuple[int, dict[str, str], dict[str, Any]]:
    body = json.dumps({"ts": "2026-11-02T00:00:00Z", "value": value}).encode()
    request = urllib.request.Request(
        f"{limited.server.base_url}/api/v1/metrics/{key}/points",
        data=body,
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, dict(answer.headers.items()), json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers.items()), json.loads(exc.read() or b"{}")


def test_push_api_over_the_limit_answers_429_with_retry_after(limited: Limited) -> None:
    team = limited.emulator.team_id
    key = unique("pushed").replace("-", "_")
    with limited.db.session() as s:
        metric = Metric(team_id=team, key=key, name="Pushed", unit="count", direction="up_is_good",
                        summary="last", source="push")  # fmt: skip
        s.add(metric)
        s.flush()
        metric_id = metric.id
        _, busy = create_token(db_session=s, team_id=team, name="busy pipeline")
        _, calm = create_token(db_session=s, team_id=team, name="calm pipeline")

    assert [_push(limited, key, busy, n)[0] for n in range(BURST)] == [200] * BURST
    status, headers, body = _push(limited, key, busy, 99)
    assert status == 429
    wait = int(headers["Retry-After"])
    assert 1 <= wait <= 60 / PER_MINUTE + 1
    assert body == {"error": f"too many requests for this token; retry in {wait} s", "retry_after": wait}
    assert headers["Content-Type"].startswith("application/json")
    with limited.db.read() as s:  # the refused point was not written
        assert [p.value for p in points_between(db_session=s, team_id=team, metric_id=metric_id)] == [
            BURST - 1
        ]

    assert _push(limited, key, calm, 7)[0] == 200  # another token is not affected
    time.sleep(wait)
    assert _push(limited, key, busy, 8)[0] == 200


# ---- the defaults never meet normal use --------------------------------------------------------------


def test_defaults_leave_room_for_normal_use() -> None:
    # The densest scripted use in the scenario tests is 12 captures in a row by one person.
    assert COMMAND_BURST >= 12 and COMMANDS_PER_MINUTE >= 20
    assert PUSH_BURST >= 100


def test_a_busy_person_on_the_default_server_is_never_limited(stack: Stack) -> None:
    emu = stack.emulator
    user = emu.add_user(unique("busy"))["id"]
    channel = emu.add_channel(unique("ideas"), members=[user])["id"]
    answers = [
        stack.driver.command("/feedback", f"Busy idea {n}", user=user, channel=channel)
        for n in range(COMMAND_BURST)
    ]
    assert all(a.status == 200 and "too fast" not in a.body for a in answers)
    wait_for(lambda: len(items_in_channel(stack.db, channel)) == COMMAND_BURST, what="every capture")
