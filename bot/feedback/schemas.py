"""Typed values at the edges of the feedback service."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field, field_validator

from storage.models import FeedbackItem, FeedbackKind, FeedbackSource, Importance, ThemeStatus, Visibility

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
    account_id: int | None = None
    kind: FeedbackKind | None = None
    importance: Importance | None = None
    note: str | None = Field(default=None, max_length=3000)
    tags: list[str] = Field(default_factory=list)
    visibility: Visibility = Visibility.private
    delivery_id: str | None = None

    @field_validator("text")
    @classmethod
    def _text_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("feedback text is empty")
        return value.strip()


class FeedbackDetails(BaseModel):
    """What a person sets in the capture / edit modal."""

    text: str | None = Field(default=None, max_length=MAX_TEXT)
    account_id: int | None = None
    kind: FeedbackKind | None = None
    importance: Importance | None = None
    tags: list[str] = Field(default_factory=list, max_length=20)
    note: str | None = Field(default=None, max_length=3000)

    @field_validator("text")
    @classmethod
    def _text_not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("feedback text is empty")
        return value.strip() if value else value


class ListQuery(BaseModel):
    """Filters of `/feedback list`."""

    mine_user_id: str | None = None
    account_ids: list[int] | None = None
    tag: str | None = None


class FeedbackRead(BaseModel):
    """A stored feedback item in the export shape: the contract's fields (README, Command line: `prodops export feedback`) and more."""

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
    importance: str | None
    visibility: str
    deleted: bool
    account_arr: float | None
    account_segment: str | None
    conversation: list[dict[str, str | None]]
    duplicate_of: int | None
    similarity: float | None

    @classmethod
    def from_item(cls, item: FeedbackItem) -> FeedbackRead:
        """Flattens an item, its account and its thread replies."""
        account = item.account
        # An item's theme is an accepted one; a proposal or a dismissed one is not (yet) its theme.
        theme = item.theme if item.theme and item.theme.status == ThemeStatus.active.value else None
        # The score behind the item's link: to the item it duplicates, else to its theme.
        if item.duplicate_of_id is not None:
            similarity = item.duplicate_similarity
        else:
            similarity = item.theme_similarity if theme is not None else None
        return cls(
            id=item.id,
            team_id=item.team_id,
            channel_id=item.channel_id,
            message_ts=item.message_ts,
            thread_ts=item.thread_ts,
            permalink=item.permalink,
            text=item.text,
            author_user_id=item.author_user_id,
            captured_by_user_id=item.captured_by_user_id,
            source=item.source,
            customer=account.name if account else None,
            kind=item.kind,
            tags=list(item.tags or []),
            theme=theme.name if theme is not None else None,
            created_at=item.created_at,
            importance=item.importance,
            visibility=item.visibility,
            deleted=item.deleted_at is not None,
            account_arr=float(account.arr) if account and account.arr is not None else None,
            account_segment=account.segment if account else None,
            conversation=[{"ts": r.message_ts, "user_id": r.user_id, "text": r.text} for r in item.replies],
            duplicate_of=item.duplicate_of_id,
            similarity=similarity,
        )


EXPORT_FIELDS = list(FeedbackRead.model_fields)
