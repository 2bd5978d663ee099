"""Typed values at the edges of the requests service."""

from __future__ import annotations

from pydantic import BaseModel, Field, field_validator

from storage.models import RequestPriority


class RequestCreate(BaseModel):
    """A request about to be opened."""

    team_id: str = Field(min_length=1)
    type_id: int
    title: str = Field(min_length=1, max_length=255)
    details: str | None = Field(default=None, max_length=40_000)
    field_values: dict[str, str | list[str] | None] = Field(default_factory=dict)
    priority: RequestPriority | None = None  # None: the type's default
    requester_user_id: str = Field(min_length=1)
    channel_id: str = Field(min_length=1)
    message_ts: str | None = None
    permalink: str | None = None
    reply_channel_id: str | None = None
    reply_thread_ts: str | None = None
    source: str
    delivery_id: str | None = None

    @field_validator("title")
    @classmethod
    def _title_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the request needs a title")
        return " ".join(value.split())[:255]


def title_from_text(text: str, limit: int = 120) -> str:
    """A one-line title from a message: its first line, cut at a word boundary."""
    first = next((line.strip() for line in text.splitlines() if line.strip()), "").lstrip("-*• ")
    if len(first) <= limit:
        return first or "Request"
    cut = first[: limit - 1].rsplit(" ", 1)[0]  # room for the ellipsis: the title stays within `limit`
    return (cut or first[: limit - 1]) + "…"
