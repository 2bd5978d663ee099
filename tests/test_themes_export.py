"""Exports: each feedback item's theme, duplicate_of and similarity; `prodops export themes` (JSONL and CSV)."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import select

from bot.export import THEME_FIELDS, write_rows
from bot.feedback.schemas import EXPORT_FIELDS
from bot.insights import themes
from storage.db import Database
from storage.models import FeedbackItem, ThemeStatus, Workspace
from tests.helpers import unique
from tests.test_export import CONTRACT_FIELDS, EXTRA_FIELDS
from tests.themes_data import GROUPS, add_items

ROOT = Path(__file__).resolve().parent.parent


def _export(db_url: str, what: str, fmt: str, team_id: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "bot.cli", "export", what, "--format", fmt, "--team", team_id],
        env={**os.environ, "DATABASE_URL": db_url, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def _seed(db: Database) -> tuple[str, dict[str, int], list[int]]:
    team = unique("T")
    with db.session() as s:
        s.add(Workspace(team_id=team))
    ids = add_items(db, team, GROUPS["export"][:4] + GROUPS["sso"][:3], vectors=False)
    with db.session() as s:
        active = themes.create(
            s, team_id=team, name="CSV export", user_id="U1", description="Columns, commas"
        )
        proposal = themes.create(s, team_id=team, name="Sso · Login", user_id=None)
        proposal.status, proposal.name_source, proposal.keywords = "proposed", "job", ["sso", "login"]
        merged = themes.create(s, team_id=team, name="Exports (old)", user_id="U1")
        themes.merge(s, team_id=team, source_id=merged.id, target_id=active.id)
        rows = {i.id: i for i in s.scalars(select(FeedbackItem).where(FeedbackItem.id.in_(ids))).unique()}
        for item_id, score in zip(ids[:3], (0.81, 0.74, 0.66), strict=True):
            rows[item_id].theme_id, rows[item_id].theme_source, rows[item_id].theme_similarity = (
                active.id,
                "auto",
                score,
            )
        rows[ids[3]].duplicate_of_id, rows[ids[3]].duplicate_similarity = ids[0], 0.93
        rows[ids[3]].theme_id, rows[ids[3]].theme_similarity = active.id, 0.7
        for item_id in ids[4:]:
            rows[item_id].theme_id, rows[item_id].theme_similarity = proposal.id, 0.6
        rows[ids[6]].deleted_at = rows[ids[6]].created_at
        names = {"active": active.id, "proposal": proposal.id, "merged": merged.id}
    return team, names, ids


def test_feedback_export_has_theme_duplicate_and_similarity(db: Database, migrated_db_url: str) -> None:
    team, _, ids = _seed(db)
    rows = {
        r["id"]: r for r in map(json.loads, _export(migrated_db_url, "feedback", "jsonl", team).splitlines())
    }
    assert set(CONTRACT_FIELDS + EXTRA_FIELDS + ["duplicate_of", "similarity"]) <= set(EXPORT_FIELDS)
    assert [rows[i]["theme"] for i in ids[:4]] == ["CSV export"] * 4
    assert [rows[i]["similarity"] for i in ids[:3]] == [0.81, 0.74, 0.66]
    assert rows[ids[3]]["duplicate_of"] == ids[0] and rows[ids[3]]["similarity"] == 0.93
    assert all(rows[i]["duplicate_of"] is None for i in ids[:3])
    # A proposal is not (yet) the item's theme: no name, no score.
    assert rows[ids[4]]["theme"] is None and rows[ids[4]]["similarity"] is None

    table = list(csv.DictReader(io.StringIO(_export(migrated_db_url, "feedback", "csv", team))))
    by_id = {int(r["id"]): r for r in table}
    assert by_id[ids[3]]["duplicate_of"] == str(ids[0]) and by_id[ids[3]]["similarity"] == "0.93"
    assert by_id[ids[4]]["theme"] == "" and by_id[ids[4]]["similarity"] == ""


def test_themes_export_jsonl_and_csv(db: Database, migrated_db_url: str) -> None:
    team, names, _ = _seed(db)
    other, _, _ = _seed(db)
    rows = [json.loads(line) for line in _export(migrated_db_url, "themes", "jsonl", team).splitlines()]
    assert [r["id"] for r in rows] == sorted(names.values())
    assert all(list(r) == THEME_FIELDS and r["team_id"] == team for r in rows)
    by_id = {r["id"]: r for r in rows}
    active, proposal, merged = by_id[names["active"]], by_id[names["proposal"]], by_id[names["merged"]]
    assert (active["name"], active["status"], active["name_source"]) == ("CSV export", "active", "human")
    assert active["item_count"] == 4 and active["description"] == "Columns, commas"
    assert proposal["status"] == ThemeStatus.proposed.value and proposal["keywords"] == ["sso", "login"]
    assert proposal["item_count"] == 2  # the deleted item is not counted
    assert merged["status"] == "merged" and merged["merged_into"] == names["active"]
    assert merged["item_count"] == 0 and active["created_at"].endswith("Z")

    table = list(csv.DictReader(io.StringIO(_export(migrated_db_url, "themes", "csv", team))))
    assert table and list(table[0]) == THEME_FIELDS
    csv_proposal = next(r for r in table if int(r["id"]) == names["proposal"])
    assert csv_proposal["keywords"] == "sso;login" and csv_proposal["merged_into"] == ""
    assert {r["team_id"] for r in table} == {team}

    out = io.StringIO()
    assert write_rows(iter(rows), THEME_FIELDS, "jsonl", out) == 3
