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
EXTRA_FIELDS = ["importance", "visibility", "deleted", "account_arr", "account_segment", "conversation"]


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
