"""`prodops export feedback` writes the contract's fields, as JSON lines or CSV, one workspace at a time."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bot.export import write_rows
from bot.feedback import service as feedback_service
from bot.feedback.schemas import FeedbackCapture
from storage.db import Database
from storage.models import FeedbackSource
from tests.helpers import unique

CONTRACT_FIELDS = [
    "id", "team_id", "channel_id", "message_ts", "thread_ts", "permalink", "text", "author_user_id",
    "captured_by_user_id", "source", "customer", "kind", "tags", "theme", "created_at",
]  # fmt: skip
EXTRA_FIELDS = [
    "importance", "visibility", "deleted", "account_arr", "account_segment", "conversation", "duplicate_of",
    "similarity",
]  # fmt: skip


def _seed(db: Database, team_id: str) -> list[int]:
    ids = []
    with db.session() as s:
        for i, source in enumerate(FeedbackSource):
            item, _ = feedback_service.capture(
                db_session=s,
                item_in=FeedbackCapture(
                    team_id=team_id,
                    channel_id="C123",
                    message_ts=f"1700000000.00000{i}",
                    text=f'Item {i}, with "quotes", commas\nand a newline',
                    captured_by_user_id="U1",
                    author_user_id="U2",
                    source=source,
                    tags=["billing", "export"],
                ),
            )
            ids.append(item.id)
    return ids


def _export(db_url: str, fmt: str, team_id: str, cwd: Path) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "bot.cli", "export", "feedback", "--format", fmt, "--team", team_id],
        env={**os.environ, "DATABASE_URL": db_url},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_jsonl_export_has_contract_fields(db: Database, migrated_db_url: str, tmp_path: Path) -> None:
    team, other = unique("T"), unique("T")
    ids = _seed(db, team)
    _seed(db, other)

    lines = _export(migrated_db_url, "jsonl", team, tmp_path).splitlines()

    rows = [json.loads(line) for line in lines]
    assert [r["id"] for r in rows] == ids
    for row in rows:
        assert set(CONTRACT_FIELDS) <= set(row)
        assert row["team_id"] == team
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", row["created_at"])
        assert row["tags"] == ["billing", "export"]
    assert {r["source"] for r in rows} == {"reaction", "shortcut", "command", "channel"}


def test_csv_export_has_the_same_columns(db: Database, migrated_db_url: str, tmp_path: Path) -> None:
    team = unique("T")
    ids = _seed(db, team)

    out = _export(migrated_db_url, "csv", team, tmp_path)

    reader = csv.DictReader(io.StringIO(out))
    assert reader.fieldnames == CONTRACT_FIELDS + EXTRA_FIELDS
    rows = list(reader)
    assert [int(r["id"]) for r in rows] == ids
    assert rows[0]["text"] == 'Item 0, with "quotes", commas\nand a newline'
    assert rows[0]["tags"] == "billing;export"
    assert rows[0]["thread_ts"] == ""


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown format"):
        write_rows([], ["id"], "xml", io.StringIO())


REQUEST_CONTRACT = [
    "id", "team_id", "channel_id", "message_ts", "title", "details", "type", "priority", "status",
    "requester_user_id", "assignee_user_id", "created_at", "first_response_at", "resolved_at", "due_at",
]  # fmt: skip


def _seed_request(db: Database, team_id: str) -> int:
    from datetime import UTC, datetime

    from bot.requests import service as requests_service
    from bot.requests import types as request_types
    from bot.requests.schemas import RequestCreate
    from storage.models import RequestStatus

    now = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)
    with db.session() as s:
        request_type = request_types.ensure_default_type(db_session=s, team_id=team_id)
        policy = request_types.policy_for(request_type)
        request, _ = requests_service.open_request(
            db_session=s,
            request_in=RequestCreate(
                team_id=team_id, type_id=request_type.id, title="Churn numbers", details="By segment, Q3",
                requester_user_id="U1", channel_id="C1", source="command",
            ),
            request_type=request_type,
            policy=policy,
            now=now,
        )  # fmt: skip
        requests_service.assign(
            db_session=s, request=request, assignee_user_id="U2", actor=requests_service.Actor("U2"), now=now
        )
        requests_service.change_status(
            db_session=s, request=request, to=RequestStatus.done, actor=requests_service.Actor("U2"), policy=policy,
            now=now,
        )  # fmt: skip
        return request.id


def test_requests_and_their_events_export(db: Database, migrated_db_url: str, tmp_path: Path) -> None:
    team = unique("T")
    request_id = _seed_request(db, team)

    rows = [
        json.loads(line)
        for line in _export_what(migrated_db_url, "requests", "jsonl", team, tmp_path).splitlines()
    ]
    assert [r["id"] for r in rows] == [request_id]
    row = rows[0]
    assert set(REQUEST_CONTRACT) <= set(row)
    assert (row["status"], row["assignee_user_id"], row["type"]) == ("done", "U2", "General request")
    assert row["resolved_at"].endswith("Z") and row["first_response_at"].endswith("Z")

    header = _export_what(migrated_db_url, "requests", "csv", team, tmp_path).splitlines()[0].split(",")
    assert header[: len(REQUEST_CONTRACT)] == REQUEST_CONTRACT
    events = [
        json.loads(x)
        for x in _export_what(migrated_db_url, "request-events", "jsonl", team, tmp_path).splitlines()
    ]
    assert [(e["kind"], e["to_value"]) for e in events] == [
        ("created", "new"), ("status", "in_progress"), ("first_response", None), ("assignee", "U2"), ("status", "done"),
    ]  # fmt: skip


def _export_what(db_url: str, what: str, fmt: str, team_id: str, cwd: Path) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "bot.cli", "export", what, "--format", fmt, "--team", team_id],
        env={**os.environ, "DATABASE_URL": db_url},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_metrics_and_points_export(db: Database, migrated_db_url: str, tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from bot.metrics.points import Point, upsert_points
    from storage.models import Metric

    team = unique("T")
    key = unique("nps").replace("-", "_")
    with db.session() as s:
        metric = Metric(team_id=team, key=key, name="NPS", unit="count", direction="up_is_good", summary="last",
                        source="manual", target=40.0)  # fmt: skip
        s.add(metric)
        s.flush()
        upsert_points(db_session=s, team_id=team, metric_id=metric.id, points=[
            Point(datetime(2026, 11, 1, tzinfo=UTC), 31.0), Point(datetime(2026, 11, 8, tzinfo=UTC), 36.5)])  # fmt: skip

    metrics = [
        json.loads(x) for x in _export_what(migrated_db_url, "metrics", "jsonl", team, tmp_path).splitlines()
    ]
    assert [(m["key"], m["target"], m["source"]) for m in metrics] == [(key, 40.0, "manual")]
    points_csv = list(
        csv.DictReader(io.StringIO(_export_points(migrated_db_url, team, key, tmp_path).stdout))
    )
    assert [(p["ts"], float(p["value"])) for p in points_csv] == [
        ("2026-11-01T00:00:00Z", 31.0), ("2026-11-08T00:00:00Z", 36.5)]  # fmt: skip
    unknown = _export_points(migrated_db_url, team, "no_such_metric", tmp_path)
    assert unknown.returncode == 2 and "Traceback" not in unknown.stderr


def _export_points(db_url: str, team_id: str, key: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "bot.cli",
            "export",
            "points",
            "--metric",
            key,
            "--format",
            "csv",
            "--team",
            team_id,
        ],
        env={**os.environ, "DATABASE_URL": db_url},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )
