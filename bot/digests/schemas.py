"""Typed values shared by the digest subscription service, the renderer and the scheduler."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

Cadence = Literal["daily", "weekly", "monthly", "cron"]


class MetricsSection(BaseModel):
    """Which metrics to show (their keys, in order)."""

    keys: list[str] = Field(default_factory=list, max_length=12)


class FeedbackSection(BaseModel):
    """The top feedback themes, ranked by item count or by the ARR behind them."""

    top: int = Field(default=5, ge=1, le=10)
    by: Literal["count", "arr"] = "count"


class RequestsSection(BaseModel):
    """The request queue's health, for some types (empty: all)."""

    types: list[str] = Field(default_factory=list)


class DigestSections(BaseModel):
    """The sections a digest shows; a section left out (None) is not shown."""

    metrics: MetricsSection | None = None
    feedback: FeedbackSection | None = None
    requests: RequestsSection | None = None

    @classmethod
    def load(cls, raw: dict[str, Any] | None) -> DigestSections:
        """From the subscription's JSON column."""
        return cls.model_validate(raw or {})


@dataclass(frozen=True)
class DigestPeriod:
    """The period a digest covers: [start, end), UTC, plus how to name it."""

    start: datetime
    end: datetime
    label: str  # e.g. "Mon 23 – Sun 29 Nov 2026" in the subscription's timezone
    key: str  # stable id of the period, e.g. "2026-11-23T09:00Z/2026-11-30T09:00Z"
    missed: int = 0  # periods skipped because the worker was down (said in the digest, not sent)


@dataclass
class RenderedDigest:
    """What the renderer produced for one subscription and period."""

    text: str
    blocks: list[dict[str, Any]]
    chart_png: bytes | None
    is_empty: bool  # nothing happened in any section (for skip-if-empty)
