"""Abuse limits: a token bucket per (workspace, user) for slash commands and per API token for the push API.

Buckets live in the memory of each web process (no table, no round-trip on every request). With N web
processes a person can reach up to N times the limit before every process has refused them; the limits
are sized so that normal use stays far below even the single-process figure, so that is acceptable — they
exist to stop a runaway script or a stuck key, not to meter fair use.

Defaults are the constants below; each can be changed with an environment variable (or `.env`):
`PRODOPS_COMMANDS_PER_MINUTE`, `PRODOPS_COMMAND_BURST`, `PRODOPS_PUSH_REQUESTS_PER_MINUTE`,
`PRODOPS_PUSH_BURST`.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable, Hashable
from functools import lru_cache
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from slack_bolt import BoltRequest, BoltResponse
from slack_bolt.middleware import Middleware
from slack_bolt.request.payload_utils import is_slash_command

logger = logging.getLogger("prodops.ratelimit")

# A person typing commands manages a few a minute; 20 in a row at once (a pasted list, a test script of 12
# captures) still passes, and then one every 2 seconds.
COMMANDS_PER_MINUTE = 30.0
COMMAND_BURST = 20
# A pipeline pushing batches (up to 10,000 points each) needs a few requests a minute; a backfill loop
# may send 100 at once and then 10 a second.
PUSH_REQUESTS_PER_MINUTE = 600.0
PUSH_BURST = 100
MAX_TRACKED_KEYS = 10_000  # past this, buckets that have refilled completely are forgotten

TOO_FAST = "You're sending commands too fast — try again in {seconds} s."


class RateLimitSettings(BaseSettings):
    """Optional overrides of the default limits."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    commands_per_minute: float = Field(default=COMMANDS_PER_MINUTE, alias="PRODOPS_COMMANDS_PER_MINUTE", gt=0)
    command_burst: int = Field(default=COMMAND_BURST, alias="PRODOPS_COMMAND_BURST", ge=1)
    push_requests_per_minute: float = Field(
        default=PUSH_REQUESTS_PER_MINUTE, alias="PRODOPS_PUSH_REQUESTS_PER_MINUTE", gt=0
    )
    push_burst: int = Field(default=PUSH_BURST, alias="PRODOPS_PUSH_BURST", ge=1)


@lru_cache(maxsize=1)
def rate_limit_settings() -> RateLimitSettings:
    """The limits for this process (read once)."""
    return RateLimitSettings()


class TokenBucket:
    """Token buckets keyed by anything hashable: `burst` at once, then `per_minute` spread evenly."""

    def __init__(self, *, per_minute: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self.clock = clock
        self._buckets: dict[Hashable, tuple[float, float]] = {}  # key -> (tokens, at)
        self._lock = threading.Lock()
        self._pruned_at = float("-inf")

    def take(self, key: Hashable) -> float:
        """Takes one token for `key`: 0.0 when allowed, else the seconds until one is available."""
        now = self.clock()
        with self._lock:
            tokens, at = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - at) * self.rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                if len(self._buckets) > MAX_TRACKED_KEYS and now - self._pruned_at >= 1.0:
                    self._forget_full(now)  # at most once a second: a flood of new keys stays O(1) per take
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self.rate

    def _forget_full(self, now: float) -> None:
        """Drops buckets that have refilled: forgetting them changes nothing."""
        self._pruned_at = now
        full = [
            k for k, (tokens, at) in self._buckets.items() if tokens + (now - at) * self.rate >= self.burst
        ]
        for key in full:
            del self._buckets[key]


def retry_after_seconds(wait: float) -> int:
    """Whole seconds for Retry-After and for people: never 0 while refused."""
    return max(1, math.ceil(wait))


def too_fast_blocks(seconds: int) -> list[dict[str, Any]]:
    """The ephemeral answer to a command over the limit."""
    text = f":hourglass: {TOO_FAST.format(seconds=seconds)}"
    return [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]


class CommandRateLimit(Middleware):
    """Bolt global middleware: a slash command over the person's limit is answered at once and goes no further.

    Install it before the inbox middleware, so a refused command is never recorded as work.
    """

    def __init__(self, bucket: TokenBucket | None = None, *, skip_context_key: str | None = None) -> None:
        if bucket is None:
            limits = rate_limit_settings()
            bucket = TokenBucket(per_minute=limits.commands_per_minute, burst=limits.command_burst)
        self.bucket = bucket
        self.skip_context_key = skip_context_key  # deliveries replayed from the inbox were admitted already

    def process(
        self, *, req: BoltRequest, resp: BoltResponse, next: Callable[[], BoltResponse]
    ) -> BoltResponse | None:
        if not is_slash_command(req.body):
            return next()
        if self.skip_context_key and req.context.get(self.skip_context_key) is not None:
            return next()
        team_id, user_id = req.context.team_id or "", req.context.user_id or ""
        wait = self.bucket.take((team_id, user_id))
        if wait <= 0:
            return next()
        seconds = retry_after_seconds(wait)
        logger.info(
            "command from %s in %s refused by the rate limit (retry in %s s)", user_id, team_id, seconds
        )
        answer = {
            "response_type": "ephemeral",
            "text": TOO_FAST.format(seconds=seconds),
            "blocks": too_fast_blocks(seconds),
        }
        return BoltResponse(
            status=200,
            body=json.dumps(answer),
            headers={"content-type": "application/json;charset=utf-8", "retry-after": str(seconds)},
        )


def push_bucket() -> TokenBucket:
    """A bucket with the push API's limits (one per web process)."""
    limits = rate_limit_settings()
    return TokenBucket(per_minute=limits.push_requests_per_minute, burst=limits.push_burst)
