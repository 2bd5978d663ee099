"""Typed values at the edges of the feedback service."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator

from storage.models import FeedbackSource

MAX_TEXT = 40_000  # Slack's own message limit


class FeedbackCapture(BaseModel):
    """A feedback item about to be stored."""

    team_id: str = Field(min_length=1)
    channel_id: str = Field(min_length=1)
    message_ts: str | None = None
    thread_ts: str | None = None
    permalink: str | None = None
    text: str = Field(min_length=1, max_length=MAX_TEXT)
    author_user_id: str | None = None
    captured_by_user_id: str = Field(min_length=1)
    source: FeedbackSource
    customer: str | None = Field(default=None, max_length=255)
    kind: str | None = None
    tags: list[str] = Field(default_factory=list)
    is_private: bool = True
    delivery_id: str | None = None

    @field_validator("text")
    @classmethod
    def _text_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("feedback text is empty")
        return value.strip()


class FeedbackRead(BaseModel):
    """A stored feedback item, in the export contract's shape (DESIGN.md, Export)."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    team_id: str
    channel_id: str
    message_ts: str | None
    thread_ts: str | None
    permalink: str | None
    text: str
    author_user_id: str | None
    captured_by_user_id: str
    source: str
    customer: str | None
    kind: str | None
    tags: list[str]
    theme: str | None
    created_at: datetime


EXPORT_FIELDS = list(FeedbackRead.model_fields)
