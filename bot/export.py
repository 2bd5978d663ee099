"""`prodops export`: one object per row as JSON lines, or the same columns as CSV."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import Any, TextIO

from sqlalchemy import func, select

from bot.feedback import service as feedback_service
from bot.feedback.schemas import EXPORT_FIELDS as FEEDBACK_FIELDS
from bot.feedback.schemas import FeedbackRead
from bot.metrics.export import METRIC_FIELDS, POINT_FIELDS, metric_rows, point_rows
from storage.db import Database
from storage.models import FeedbackItem, Request, RequestEvent, Theme

FORMATS = ("jsonl", "csv")


def iso_utc(value: datetime) -> str:
    """ISO-8601 in UTC with a Z, e.g. 2026-11-26T14:34:10.439109Z."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {k: iso_utc(v) if isinstance(v, datetime) else v for k, v in row.items()}


def _csv_cell(value: Any) -> Any:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return ";".join(value)
    if isinstance(value, list | dict):
        return json.dumps(value, ensure_ascii=False)
    if value is None:
        return ""
    return value


def write_rows(rows: Iterable[dict[str, Any]], fields: list[str], fmt: str, out: TextIO) -> int:
    """Writes rows in `fmt` to `out`; returns how many were written."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    count = 0
    writer = csv.DictWriter(out, fieldnames=fields, extrasaction="ignore") if fmt == "csv" else None
    if writer is not None:
        writer.writeheader()
    for row in rows:
        shaped = _jsonable({k: row[k] for k in fields})
        if writer is not None:
            writer.writerow({k: _csv_cell(v) for k, v in shaped.items()})
        else:
            out.write(json.dumps(shaped, ensure_ascii=False) + "\n")
        count += 1
    return count


def feedback_rows(db: Database, team_id: str | None = None) -> Iterable[dict[str, Any]]:
    """Feedback items as export rows (contract field names)."""
    with db.session() as s:
        for item in feedback_service.iter_items(db_session=s, team_id=team_id):
            yield FeedbackRead.from_item(item).model_dump()


REQUEST_FIELDS = [
    "id", "team_id", "channel_id", "message_ts", "title", "details", "type", "priority", "status",
    "requester_user_id", "assignee_user_id", "created_at", "first_response_at", "resolved_at", "due_at",
    "first_response_due_at", "source", "permalink", "field_values",
]  # fmt: skip
REQUEST_EVENT_FIELDS = [
    "id",
    "team_id",
    "request_id",
    "actor_user_id",
    "kind",
    "from_value",
    "to_value",
    "at",
]


def _batched(db: Database, model: Any, team_id: str | None, batch: int = 500) -> Iterator[Any]:
    """Rows of a model in id order (one workspace when team_id is given), streamed in batches."""
    last_id = 0
    while True:
        with db.read() as s:
            query = select(model).where(model.id > last_id).order_by(model.id).limit(batch)
            if team_id is not None:
                query = query.where(model.team_id == team_id)
            rows = list(s.scalars(query))
            shaped = [_row_of(row) for row in rows]
        if not rows:
            return
        yield from shaped
        last_id = rows[-1].id


def _row_of(row: Any) -> dict[str, Any]:
    if isinstance(row, Request):
        values = {f: getattr(row, f, None) for f in REQUEST_FIELDS if f != "type"}
        return {**values, "type": row.type.name}
    return {f: getattr(row, f) for f in REQUEST_EVENT_FIELDS}


def request_rows(db: Database, team_id: str | None = None) -> Iterable[dict[str, Any]]:
    """Requests as export rows (contract field names; `type` is the type's name)."""
    return _batched(db, Request, team_id)


def request_event_rows(db: Database, team_id: str | None = None) -> Iterable[dict[str, Any]]:
    """Every change to every request: who, when, what, from, to."""
    return _batched(db, RequestEvent, team_id)


THEME_FIELDS = [
    "id", "team_id", "name", "description", "status", "keywords", "name_source", "merged_into", "item_count",
    "created_at",
]  # fmt: skip


def theme_rows(db: Database, team_id: str | None = None, batch: int = 500) -> Iterator[dict[str, Any]]:
    """Themes of every status (`merged_into` is the theme a merged one went into), with live item counts."""
    last_id = 0
    while True:
        with db.read() as s:
            query = select(Theme).where(Theme.id > last_id).order_by(Theme.id).limit(batch)
            if team_id is not None:
                query = query.where(Theme.team_id == team_id)
            rows = list(s.scalars(query))
            if not rows:
                return
            counts = dict(
                s.execute(
                    select(FeedbackItem.theme_id, func.count())
                    .where(
                        FeedbackItem.theme_id.in_([t.id for t in rows]),
                        FeedbackItem.deleted_at.is_(None),
                    )
                    .group_by(FeedbackItem.theme_id)
                ).all()
            )
        for t in rows:
            yield {
                "id": t.id,
                "team_id": t.team_id,
                "name": t.name,
                "description": t.description,
                "status": t.status,
                "keywords": list(t.keywords or []),
                "name_source": t.name_source,
                "merged_into": t.merged_into_id,
                "item_count": int(counts.get(t.id, 0)),
                "created_at": t.created_at,
            }
        last_id = rows[-1].id


RowSource = Callable[..., Iterable[dict[str, Any]]]
EXPORTS: dict[str, tuple[RowSource, list[str]]] = {
    "metrics": (metric_rows, METRIC_FIELDS),
    "points": (point_rows, POINT_FIELDS),
    "feedback": (feedback_rows, FEEDBACK_FIELDS),
    "requests": (request_rows, REQUEST_FIELDS),
    "request-events": (request_event_rows, REQUEST_EVENT_FIELDS),
    "themes": (theme_rows, THEME_FIELDS),
}
