"""Themes service: assignment at capture, and rename / describe / accept / dismiss / merge / split / move."""

from __future__ import annotations

import pytest

from bot.insights import index as similarity_index
from bot.insights import themes
from storage.db import Database
from storage.models import FeedbackItem, ThemeStatus, Workspace
from tests.helpers import unique
from tests.themes_data import GROUPS, NOISE, TFIDF, add_items, items_of, themes_of


def _workspace(db: Database) -> str:
    team = unique("T")
    with db.session() as s:
        s.add(Workspace(team_id=team))
    return team


def _version(db: Database, team: str) -> int:
    with db.read() as s:
        ws = s.get(Workspace, team)
        assert ws is not None
        return ws.insights_version


def _theme_with(db: Database, team: str, name: str, item_ids: list[int], status: str = "active") -> int:
    with db.session() as s:
        theme = themes.create(s, team_id=team, name=name, user_id="U0PM")
        theme.status = status
        for item_id in item_ids:
            item = s.get(FeedbackItem, item_id)
            assert item is not None
            item.theme_id, item.theme_source = theme.id, "auto"
        similarity_index.bump_version(s, team)
        return theme.id


def _assign(db: Database, team: str, text: str) -> tuple[int, int | None]:
    (item_id,) = add_items(db, team, [text], vectors=False)
    index = similarity_index.get_index(db, team, settings=TFIDF)
    with db.session() as s:
        item = s.get(FeedbackItem, item_id)
        assert item is not None
        vector = index.add(s, item_id, text)
        theme = themes.assign_item(s, index=index, item=item, vector=vector)
        return item_id, theme.id if theme else None


def test_assign_item_above_and_below_the_threshold(db: Database) -> None:
    team = _workspace(db)
    export = add_items(db, team, GROUPS["export"][:6])
    add_items(db, team, GROUPS["sso"][:6] + NOISE)
    export_id = _theme_with(db, team, "CSV export", export)
    before = _version(db, team)

    near_id, near_theme = _assign(db, team, "The CSV export is missing the owner and notes columns")
    far_id, far_theme = _assign(db, team, "Dark mode for the calendar widget, please")

    assert near_theme == export_id
    assert far_theme is None
    items = items_of(db, team)
    threshold = similarity_index.get_index(db, team, settings=TFIDF).encoder.theme_threshold
    assert items[near_id].theme_id == export_id and items[near_id].theme_source == "auto"
    assert (items[near_id].theme_similarity or 0) >= threshold
    assert items[far_id].theme_id is None and items[far_id].theme_source is None
    assert _version(db, team) > before  # other processes reload memberships


def test_assign_item_ignores_proposals_and_keeps_human_placements(db: Database) -> None:
    team = _workspace(db)
    export = add_items(db, team, GROUPS["export"][:6])
    add_items(db, team, GROUPS["sso"][:6])
    _theme_with(db, team, "CSV export (proposed)", export, status=ThemeStatus.proposed.value)
    _, proposed_theme = _assign(db, team, "CSV export is missing the owner column")
    assert proposed_theme is None  # only active themes take new items

    sso = _theme_with(db, team, "SSO", [])
    (placed,) = add_items(db, team, ["CSV export is missing columns"], vectors=False)
    with db.session() as s:
        themes.move_items(s, team_id=team, item_ids=[placed], target_id=sso)
    index = similarity_index.get_index(db, team, settings=TFIDF)
    with db.session() as s:
        item = s.get(FeedbackItem, placed)
        assert item is not None
        theme = themes.assign_item(s, index=index, item=item, vector=index.add(s, placed, item.text))
        assert theme is not None and theme.id == sso
    assert items_of(db, team)[placed].theme_source == "human"


def test_rename_describe_accept_dismiss(db: Database) -> None:
    team = _workspace(db)
    ids = add_items(db, team, GROUPS["sso"][:4], vectors=False)
    proposal = _theme_with(db, team, "Sso · Login", ids, status=ThemeStatus.proposed.value)
    other = _theme_with(db, team, "Okta", [], status=ThemeStatus.proposed.value)
    with db.session() as s:
        themes.rename(s, team_id=team, theme_id=proposal, name="  Single   sign-on ")
        with pytest.raises(themes.ThemeError, match="already called"):
            themes.rename(s, team_id=team, theme_id=other, name="single sign-on")
        themes.describe(s, team_id=team, theme_id=other, description="Okta asks")
        themes.accept(s, team_id=team, theme_id=proposal)
        with pytest.raises(themes.ThemeError, match="only proposals"):
            themes.dismiss(s, team_id=team, theme_id=proposal)
        themes.dismiss(s, team_id=team, theme_id=other)
        with pytest.raises(themes.ThemeError, match="dismissed"):
            themes.rename(s, team_id=team, theme_id=other, name="Again")
    by_id = {t.id: t for t in themes_of(db, team)}
    assert by_id[proposal].name == "Single sign-on" and by_id[proposal].name_source == "human"
    assert by_id[proposal].status == "active"
    assert by_id[other].status == "dismissed" and by_id[other].description == "Okta asks"
    with db.read() as s:
        assert themes.find(s, team_id=team, ref="SINGLE sign-on").id == proposal
        assert themes.find(s, team_id=team, ref=f"#{proposal}").id == proposal
        with pytest.raises(themes.ThemeNotFound, match="Single sign-on"):
            themes.find(s, team_id=team, ref="single sign-in")


def test_merge_split_move(db: Database) -> None:
    team = _workspace(db)
    a_ids = add_items(db, team, GROUPS["export"][:3], vectors=False)
    b_ids = add_items(db, team, GROUPS["export"][3:6], vectors=False)
    loose = add_items(db, team, NOISE[:1], vectors=False)
    a = _theme_with(db, team, "Export A", a_ids)
    b = _theme_with(db, team, "Export B", b_ids)
    c = _theme_with(db, team, "Export C", [])
    with db.session() as s:
        themes.merge(s, team_id=team, source_id=c, target_id=a)  # an earlier merge into A ...
        themes.merge(s, team_id=team, source_id=a, target_id=b)  # ... follows A into B
        with pytest.raises(themes.ThemeError, match="itself"):
            themes.merge(s, team_id=team, source_id=b, target_id=b)
        with pytest.raises(themes.ThemeError, match="merged"):
            themes.merge(s, team_id=team, source_id=a, target_id=b)
    by_id = {t.id: t for t in themes_of(db, team)}
    assert by_id[a].status == "merged" and by_id[a].merged_into_id == b
    assert by_id[c].merged_into_id == b
    items = items_of(db, team)
    assert {i for i, item in items.items() if item.theme_id == b} == set(a_ids + b_ids)

    with db.session() as s:
        new = themes.split(
            s, team_id=team, theme_id=b, item_ids=a_ids[:2], name="Export columns", user_id="U1"
        )
        new_id = new.id
        with pytest.raises(themes.ThemeError, match="not in theme"):
            themes.split(s, team_id=team, theme_id=b, item_ids=loose, name="Other", user_id="U1")
        themes.move_items(s, team_id=team, item_ids=loose, target_id=new_id)
        themes.move_items(s, team_id=team, item_ids=[b_ids[0]], target_id=None)
    items = items_of(db, team)
    assert {i for i, item in items.items() if item.theme_id == new_id} == set(a_ids[:2] + loose)
    assert all(items[i].theme_source == "human" for i in a_ids[:2] + loose + [b_ids[0]])
    assert items[b_ids[0]].theme_id is None
    with db.read() as s:
        overview = themes.overview(s, team_id=team)
    counts = {t.name: t.items for t in overview.active}
    assert counts == {"Export B": 3, "Export columns": 3}
    assert overview.unsorted == 1 and overview.proposed == []
