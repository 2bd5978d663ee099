"""Duplicate suggestions, service level: bands, canonical items, undo to the exact previous row, rejected pairs."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import func, select

from bot.insights import duplicates
from bot.insights.capture_hook import on_item_captured
from bot.insights.index import TeamIndex, forget_cached, get_index
from bot.settings import Settings
from storage.db import Database
from storage.models import (
    Account,
    DuplicateSuggestion,
    FeedbackItem,
    FeedbackVector,
    Theme,
    ThemeStatus,
    Visibility,
    Workspace,
)
from storage.types import utcnow
from tests.helpers import unique

TFIDF = Settings(PRODOPS_SIMILARITY_BACKEND="tfidf")

# Unrelated feedback, so the model has a corpus to learn from.
BACKGROUND = [
    "Export to CSV drops the last column",
    "Please add single sign-on with Okta",
    "Dark mode for the dashboard would be great",
    "Slack notifications arrive twice for every comment",
    "The mobile app logs me out every morning",
    "Invoices should show the purchase order number",
    "Search does not find archived projects",
    "We need an API endpoint to bulk update users",
]
# More unrelated feedback, so the model is past its cold start (duplicates.COLD_FITTED_ITEMS) and may link.
AREAS = [
    "kanban board",
    "invoice page",
    "mobile timer",
    "wiki editor",
    "audit log",
    "webhook settings",
    "guest inbox",
]
PROBLEMS = [
    "freezes when it has many rows",
    "shows the wrong currency symbol",
    "needs a keyboard shortcut",
    "forgets my sort order",
    "should be translated to German",
    "loses unsaved changes",
    "ignores the workspace timezone",
]
BACKGROUND += [f"The {area} {problem}" for area in AREAS for problem in PROBLEMS]
ROTA = "Lighthouse rota: the night shifts disappear from the keeper spreadsheet after importing the harbour calendar"
ROTA_LIKE = "The harbour calendar import wipes the night shifts in our lighthouse keeper rota"
SENSOR = "Greenhouse humidity sensor reports 0% every Monday morning after the firmware update"


@pytest.fixture
def team(db: Database) -> Iterator[str]:
    """A workspace of its own with bands the test texts fall clearly into: link ≥ 0.999 (only an exact
    repeat), ask from 0.1 (bands on the duplicate likelihood; an unrelated text is ~0.05)."""
    team_id = unique("TDUP")
    with db.session() as s:
        s.add(Workspace(team_id=team_id, duplicate_link_threshold=0.999, duplicate_ask_threshold=0.1))
    yield team_id
    forget_cached(db, team_id)


def _item(
    db: Database,
    team: str,
    text: str,
    *,
    channel: str = "C0DUP",
    visibility: str = Visibility.public.value,
    captured_by: str = "U0CAP",
    account_id: int | None = None,
) -> int:
    with db.session() as s:
        item = FeedbackItem(
            team_id=team,
            channel_id=channel,
            text=text,
            captured_by_user_id=captured_by,
            source="command",
            visibility=visibility,
            account_id=account_id,
        )
        s.add(item)
        s.flush()
        return item.id


def _fit(db: Database, team: str) -> TeamIndex:
    """The workspace's index, fitted on the background corpus and every item made so far."""
    for text in BACKGROUND:
        _item(db, team, text)
    return get_index(db, team, settings=TFIDF)


def _suggest(db: Database, index: TeamIndex, item_id: int, **kw: Any) -> DuplicateSuggestion | None:
    with db.session() as s:
        item = s.get(FeedbackItem, item_id)
        assert item is not None
        vector = index.add(s, item.id, item.text)
        return duplicates.suggest(db_session=s, index=index, item=item, vector=vector, **kw)


def _row(db: Database, item_id: int) -> dict[str, Any]:
    with db.session() as s:
        item = s.get(FeedbackItem, item_id)
        assert item is not None
        return {c.key: getattr(item, c.key) for c in FeedbackItem.__table__.columns}


def _theme(db: Database, team: str, name: str) -> int:
    with db.session() as s:
        theme = Theme(team_id=team, name=name, status=ThemeStatus.active.value, name_source="human")
        s.add(theme)
        s.flush()
        return theme.id


def test_link_then_undo_restores_the_exact_row_and_theme(db: Database, team: str) -> None:
    canonical_id, new_id = _item(db, team, ROTA), _item(db, team, ROTA)
    index = _fit(db, team)
    canonical_theme, own_theme = _theme(db, team, "Rota"), _theme(db, team, "Imports")
    with db.session() as s:
        s.get(FeedbackItem, canonical_id).theme_id = canonical_theme  # type: ignore[union-attr]
    with db.session() as s:  # the theme job put the new item elsewhere
        new = s.get(FeedbackItem, new_id)
        assert new is not None
        new.theme_id, new.theme_source, new.theme_similarity = own_theme, "auto", 0.41
        version_before = s.get(Workspace, team).insights_version  # type: ignore[union-attr]
    with db.session() as s:  # its vector first, so the snapshot is the row just before the link
        item = s.get(FeedbackItem, new_id)
        vector = index.add(s, new_id, item.text)  # type: ignore[union-attr]
    before = _row(db, new_id)

    with db.session() as s:
        item = s.get(FeedbackItem, new_id)
        assert item is not None
        suggestion = duplicates.suggest(db_session=s, index=index, item=item, vector=vector)
        assert suggestion is not None
        suggestion_id = suggestion.id

    linked = _row(db, new_id)
    assert linked["duplicate_of_id"] == canonical_id and linked["duplicate_similarity"] > 0.95
    assert linked["theme_id"] == canonical_theme and linked["theme_source"] == "auto"
    with db.session() as s:
        stored = s.get(DuplicateSuggestion, suggestion_id)
        assert stored is not None and stored.status == "linked" and stored.candidate_id == canonical_id
        # previous_state records exactly the fields that changed, before and after
        assert stored.previous_state["before"] == {
            "duplicate_of_id": None,
            "duplicate_similarity": None,
            "theme_id": own_theme,
            "theme_similarity": 0.41,
            "updated_at": before["updated_at"].isoformat(),
        }
        assert set(stored.previous_state["after"]) == set(stored.previous_state["before"])
        assert s.get(Workspace, team).insights_version == version_before + 1  # type: ignore[union-attr]
    assert {k: v for k, v in linked.items() if k not in stored.previous_state["before"]} == {
        k: v for k, v in before.items() if k not in stored.previous_state["before"]
    }

    with db.session() as s:
        decision = duplicates.undo(db_session=s, team_id=team, suggestion_id=suggestion_id, user_id="U0CAP")
    assert decision.changed and decision.suggestion.status == "undone"
    assert _row(db, new_id) == before  # every column, updated_at included; back in its own theme
    with db.session() as s:
        assert s.get(DuplicateSuggestion, suggestion_id).decided_by_user_id == "U0CAP"  # type: ignore[union-attr]
        again = duplicates.undo(db_session=s, team_id=team, suggestion_id=suggestion_id, user_id="U0CAP")
    assert again.changed is False and _row(db, new_id) == before


def test_undo_leaves_alone_what_a_person_changed_since(db: Database, team: str) -> None:
    _item(db, team, ROTA)
    new_id = _item(db, team, ROTA)
    index = _fit(db, team)
    suggestion = _suggest(db, index, new_id)
    assert suggestion is not None and suggestion.status == "linked"
    moved_to = _theme(db, team, "Chosen by a person")
    with db.session() as s:
        item = s.get(FeedbackItem, suggestion.item_id)
        assert item is not None
        item.theme_id, item.theme_source = moved_to, "human"
    with db.session() as s:
        duplicates.undo(db_session=s, team_id=team, suggestion_id=suggestion.id, user_id="U0ADMIN")
    row = _row(db, suggestion.item_id)
    assert row["duplicate_of_id"] is None and row["duplicate_similarity"] is None
    assert (row["theme_id"], row["theme_source"]) == (moved_to, "human")


def test_bands_ask_in_the_middle_and_nothing_below(db: Database, team: str) -> None:
    rota_id, like_id, sensor_id = _item(db, team, ROTA), _item(db, team, ROTA_LIKE), _item(db, team, SENSOR)
    index = _fit(db, team)
    asked = _suggest(db, index, like_id)
    assert asked is not None and asked.status == "asked" and asked.candidate_id == rota_id
    assert 0.1 <= asked.score < 0.999
    assert _row(db, asked.item_id)["duplicate_of_id"] is None  # asking changes nothing yet
    assert _suggest(db, index, sensor_id) is None
    with db.session() as s:
        assert s.scalar(select(func.count()).where(DuplicateSuggestion.team_id == team)) == 1


def test_watched_channels_link_silently_and_never_ask(db: Database, team: str) -> None:
    _item(db, team, ROTA)
    like_id, same_id = _item(db, team, ROTA_LIKE), _item(db, team, ROTA)
    index = _fit(db, team)
    assert _suggest(db, index, like_id, interactive=False) is None
    linked = _suggest(db, index, same_id, interactive=False)
    assert linked is not None and linked.status == "linked"


def test_thresholds_fall_back_to_the_backend_defaults(db: Database, team: str) -> None:
    with db.session() as s:
        s.get(Workspace, team).duplicate_link_threshold = None  # type: ignore[union-attr]
        s.get(Workspace, team).duplicate_ask_threshold = None  # type: ignore[union-attr]
    with db.session() as s:
        bands = duplicates.thresholds(db_session=s, team_id=team, default_link=0.6, default_ask=0.4)
    assert (bands.link, bands.ask, bands.overridden) == (0.6, 0.4, False)
    with db.session() as s:
        duplicates.set_thresholds(db_session=s, workspace=s.get(Workspace, team), link=0.9, ask=0.7)  # type: ignore[arg-type]
    with db.session() as s:
        bands = duplicates.thresholds(db_session=s, team_id=team, default_link=0.6, default_ask=0.4)
    assert (bands.link, bands.ask, bands.default_link, bands.overridden) == (0.9, 0.7, 0.6, True)
    with db.session() as s, pytest.raises(ValueError, match="below the link threshold"):
        duplicates.set_thresholds(db_session=s, workspace=s.get(Workspace, team), link=0.7, ask=0.9)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("link", "ask", "problem"),
    [
        (0.9, 0.75, None),
        (1.0, 0.5, None),
        (1.2, 0.5, "at most 1"),
        (0.0, 0.0, "above 0"),
        (0.8, 0.8, "below"),
        (0.8, 0, "above 0"),
    ],
)
def test_threshold_validation(link: float, ask: float, problem: str | None) -> None:
    found = duplicates.validate_thresholds(link, ask)
    assert (found is None) if problem is None else (found is not None and problem in found)


def test_a_match_that_is_a_duplicate_stands_for_its_canonical_item(db: Database, team: str) -> None:
    repeat = "Since the firmware update the greenhouse sensor shows zero humidity on Monday mornings"
    canonical_id, repeat_id, new_id = (
        _item(db, team, SENSOR),
        _item(db, team, repeat),
        _item(db, team, repeat),
    )
    with db.session() as s:
        s.get(FeedbackItem, repeat_id).duplicate_of_id = canonical_id  # type: ignore[union-attr]
    index = _fit(db, team)
    suggestion = _suggest(db, index, new_id)
    assert suggestion is not None and suggestion.status == "asked"  # scored against the original's words
    assert suggestion.candidate_id == canonical_id  # not the repeat it matched best
    with db.session() as s:
        duplicates.merge(db_session=s, team_id=team, suggestion_id=suggestion.id, user_id="U0CAP")
    assert _row(db, suggestion.item_id)["duplicate_of_id"] == canonical_id


def test_not_a_duplicate_is_never_suggested_again(db: Database, team: str) -> None:
    rota_id, like_id = _item(db, team, ROTA), _item(db, team, ROTA_LIKE)
    index = _fit(db, team)
    asked = _suggest(db, index, like_id)
    assert asked is not None and asked.status == "asked"
    with db.session() as s:
        decision = duplicates.reject(db_session=s, team_id=team, suggestion_id=asked.id, user_id="U0CAP")
    assert decision.changed and decision.suggestion.status == "rejected"
    with db.session() as s:  # a later merge click is too late
        late = duplicates.merge(db_session=s, team_id=team, suggestion_id=asked.id, user_id="U0CAP")
    assert late.changed is False and late.suggestion.status == "rejected"
    assert _row(db, asked.item_id)["duplicate_of_id"] is None

    with db.session() as s:  # scored again (e.g. re-run): the rejected pair is skipped
        item = s.get(FeedbackItem, asked.item_id)
        assert item is not None
        again = duplicates.suggest(
            db_session=s, index=index, item=item, vector=index.vectors_for([item.id])[0]
        )
        assert again is None
        assert rota_id in duplicates.rejected_with(db_session=s, team_id=team, item_id=item.id)
        assert asked.item_id in duplicates.rejected_with(db_session=s, team_id=team, item_id=rota_id)
        assert s.scalar(select(func.count()).where(DuplicateSuggestion.team_id == team)) == 1


def test_private_items_are_only_matched_within_their_conversation(db: Database, team: str) -> None:
    secret_id = _item(db, team, ROTA, channel="G0SECRET", visibility=Visibility.private.value)
    index = _fit(db, team)
    inside = _suggest(db, index, _item(db, team, ROTA, channel="G0SECRET", visibility="private"))
    assert inside is not None and inside.candidate_id == secret_id
    assert _suggest(db, index, _item(db, team, ROTA, channel="C0PUBLIC")) is None


def test_merge_keeps_both_items_and_the_summary_counts_them(db: Database, team: str) -> None:
    with db.session() as s:
        acme = Account(team_id=team, name="Acme", name_key="acme")
        globex = Account(team_id=team, name="Globex", name_key="globex")
        s.add_all([acme, globex])
        s.flush()
        acme_id, globex_id = acme.id, globex.id
    canonical_id = _item(db, team, ROTA, account_id=acme_id)
    like_id = _item(db, team, ROTA_LIKE, account_id=globex_id)
    index = _fit(db, team)
    asked = _suggest(db, index, like_id)
    assert asked is not None and asked.status == "asked"
    with db.session() as s:
        decision = duplicates.merge(db_session=s, team_id=team, suggestion_id=asked.id, user_id="U0CAP")
    assert decision.changed and decision.suggestion.status == "merged"
    merged, canonical = _row(db, asked.item_id), _row(db, canonical_id)
    assert merged["duplicate_of_id"] == canonical_id and merged["text"] == ROTA_LIKE
    assert merged["account_id"] == globex_id and canonical["account_id"] == acme_id
    assert canonical["text"] == ROTA and canonical["duplicate_of_id"] is None

    third = _item(db, team, "Third report of the rota problem", account_id=acme_id)
    chained = _item(db, team, "Reported on the merged one before the merge")
    gone_id = _item(db, team, "Deleted one")
    with db.session() as s:
        s.get(FeedbackItem, third).duplicate_of_id = canonical_id  # type: ignore[union-attr]
        s.get(FeedbackItem, chained).duplicate_of_id = asked.item_id  # type: ignore[union-attr]
        gone = s.get(FeedbackItem, gone_id)
        gone.duplicate_of_id, gone.deleted_at = canonical_id, utcnow()  # type: ignore[union-attr]
    with db.session() as s:
        summary = duplicates.duplicate_summary(s, team, canonical_id)
        via_duplicate = duplicates.duplicate_summary(s, team, asked.item_id)
        assert duplicates.duplicate_summary(s, "T0OTHER", canonical_id) is None  # tenant isolation
    assert summary is not None and summary == via_duplicate
    assert summary.canonical_id == canonical_id
    assert summary.duplicate_ids == sorted([asked.item_id, third, chained]) and summary.duplicates == 3
    assert summary.accounts == 2


def test_hook_stores_the_vector_and_reports_the_link(db: Database, team: str) -> None:
    _item(db, team, ROTA)
    new_id = _item(db, team, ROTA)
    _fit(db, team)
    insights = on_item_captured(db, team_id=team, item_id=new_id, settings=TFIDF)
    assert insights.duplicate is not None and insights.duplicate.status == "linked"
    assert insights.duplicate.candidate_text == ROTA
    with db.session() as s:
        assert s.get(FeedbackVector, new_id) is not None
    assert get_index(db, team, settings=TFIDF).vectors_for([new_id]).any()
    assert on_item_captured(db, team_id=team, item_id=10**9, settings=TFIDF).duplicate is None


@pytest.fixture
def default_team(db: Database) -> Iterator[str]:
    """A workspace on the backend's own bands (no override)."""
    team_id = unique("TCOLD")
    with db.session() as s:
        s.add(Workspace(team_id=team_id))
    yield team_id
    forget_cached(db, team_id)


def test_a_cold_model_asks_instead_of_linking(db: Database, default_team: str) -> None:
    first = _item(db, default_team, ROTA)
    repeat = _item(db, default_team, ROTA)
    index = get_index(db, default_team, settings=TFIDF)  # fitted on these two texts only
    assert duplicates.is_cold(index)
    asked = _suggest(db, index, repeat)
    assert asked is not None and asked.status == "asked" and asked.candidate_id == first
    assert asked.score >= index.encoder.link_threshold  # it would be linked by a model that knew more
    assert _row(db, repeat)["duplicate_of_id"] is None
    quiet = _item(db, default_team, ROTA)
    index = get_index(db, default_team, settings=TFIDF)
    assert _suggest(db, index, quiet, interactive=False) is None  # a watched channel: quiet, never a guess


def test_a_warm_model_links_the_same_repeat(db: Database, default_team: str) -> None:
    first = _item(db, default_team, ROTA)
    repeat = _item(db, default_team, ROTA)
    index = _fit(db, default_team)
    assert not duplicates.is_cold(index) and index.fitted_items >= duplicates.COLD_FITTED_ITEMS
    linked = _suggest(db, index, repeat)
    assert linked is not None and linked.status == "linked" and linked.candidate_id == first


def test_a_wrong_link_does_not_pull_the_next_item_after_it(db: Database, team: str) -> None:
    sensor = _item(db, team, SENSOR)
    wrongly_linked = _item(db, team, ROTA)
    with db.session() as s:  # a link that should not have been made: the rota item "duplicates" the sensor
        s.get(FeedbackItem, wrongly_linked).duplicate_of_id = sensor  # type: ignore[union-attr]
    new = _item(db, team, ROTA)
    index = _fit(db, team)
    with db.session() as s:
        item = s.get(FeedbackItem, new)
        assert item is not None
        found = duplicates.candidates(
            db_session=s, index=index, item=item, vector=index.vectors_for([new])[0]
        )
    by_id = {c.item.id: c for c in found}
    assert wrongly_linked not in by_id  # the duplicate stands for its original ...
    assert sensor in by_id and by_id[sensor].cosine < 0.5  # ... and is scored against the original's text
    suggestion = _suggest(db, index, new)
    assert suggestion is None or suggestion.status != "linked"
    assert _row(db, new)["duplicate_of_id"] is None


def test_candidates_weigh_more_than_one_cosine() -> None:
    words = duplicates.content_words("The Gantt chart drops dependency arrows after a drag")
    same = duplicates.pair_features(
        cosine=0.7, margin=0.2, words=words, candidate_words=words, cue=True, same_account=False,
    )  # fmt: skip
    other = duplicates.pair_features(
        cosine=0.7, margin=0.0, words=words, candidate_words={"invoice", "currency"}, cue=False,
        same_account=False,
    )  # fmt: skip
    assert same[1] == 1.0 and other[1] == 0.0 and same[3] == 1.0
    for backend in ("tfidf", "embeddings"):
        assert duplicates.likelihood(same, backend) > duplicates.likelihood(other, backend)
    assert duplicates.has_cue("+1, same as the Gantt one") and not duplicates.has_cue("Gantt arrows vanish")
