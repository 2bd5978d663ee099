"""The per-workspace similarity index: persistence, nearest items/themes, cache refresh across processes."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from sqlalchemy import func, select

from bot.insights import index as index_module
from bot.insights.index import bump_version, forget_cached, get_index, refit
from bot.insights.similarity import embeddings_available
from bot.settings import Settings
from storage.db import Database
from storage.models import FeedbackItem, FeedbackVector, SimilarityModel, Theme, Workspace
from tests.helpers import unique

TFIDF = Settings(PRODOPS_SIMILARITY_BACKEND="tfidf")  # type: ignore[call-arg]

CORPUS = [
    "Export to CSV times out for large reports",
    "CSV export fails when the report is big",
    "Please add single sign-on with Okta",
    "We need SSO through Okta for our team",
    "Dark mode for the dashboard would be great",
    "Dashboard dark theme please, eyes hurt at night",
    "Slack notifications arrive twice",
    "Duplicate Slack notifications for every comment",
]


@pytest.fixture
def team(db: Database) -> Iterator[str]:
    team_id = unique("TIDX")
    with db.session() as s:
        s.add(Workspace(team_id=team_id, name="Index test"))
    yield team_id
    forget_cached(db, team_id)


def _items(db: Database, team: str, texts: list[str], *, at: datetime | None = None) -> list[int]:
    with db.session() as s:
        items = [
            FeedbackItem(
                team_id=team,
                channel_id="C0IDX",
                text=text,
                captured_by_user_id="U0IDX",
                source="command",
                created_at=at or datetime.now(UTC),
            )
            for text in texts
        ]
        s.add_all(items)
        s.flush()
        return [item.id for item in items]


def test_first_use_fits_a_model_and_stores_a_vector_per_item(db: Database, team: str) -> None:
    ids = _items(db, team, CORPUS)
    index = get_index(db, team, settings=TFIDF)
    assert index.encoder.name == "tfidf" and index.model_version == 1 and len(index) == len(CORPUS)
    with db.read() as s:
        model = s.scalars(select(SimilarityModel).where(SimilarityModel.team_id == team)).one()
        vectors = s.scalars(select(FeedbackVector).where(FeedbackVector.team_id == team)).all()
    assert model.backend == "tfidf" and model.item_count == len(CORPUS) and model.state
    assert sorted(v.feedback_id for v in vectors) == sorted(ids)
    stored = np.frombuffer(vectors[0].vector, dtype=np.float32)
    assert abs(float(np.linalg.norm(stored)) - 1.0) < 1e-4
    np.testing.assert_allclose(index.vectors_for([vectors[0].feedback_id])[0], stored, atol=1e-6)


def test_nearest_items_finds_the_paraphrase_best_first(db: Database, team: str) -> None:
    ids = _items(db, team, CORPUS)
    index = get_index(db, team, settings=TFIDF)
    found = index.nearest_items(index.encode("CSV export of a big report times out"), k=3)
    assert [n.item_id for n in found][:2] == [ids[0], ids[1]] or {n.item_id for n in found[:2]} == {
        ids[0],
        ids[1],
    }
    assert found[0].score >= found[1].score >= found[2].score
    assert len(index.nearest_items(index.encode("okta sso"), k=100)) == len(CORPUS)
    excluded = index.nearest_items(index.encode("okta sso"), k=2, exclude_ids=[ids[2], ids[3]])
    assert {n.item_id for n in excluded}.isdisjoint({ids[2], ids[3]})


def test_since_restricts_to_recent_items(db: Database, team: str) -> None:
    old = _items(db, team, CORPUS[:4], at=datetime.now(UTC) - timedelta(days=90))
    new = _items(db, team, CORPUS[4:])
    index = get_index(db, team, settings=TFIDF)
    found = index.nearest_items(index.encode("CSV export"), k=10, since=datetime.now(UTC) - timedelta(days=7))
    assert {n.item_id for n in found} == set(new)
    assert not {n.item_id for n in found} & set(old)


def test_add_writes_the_vector_in_the_callers_transaction(db: Database, team: str) -> None:
    _items(db, team, CORPUS)
    index = get_index(db, team, settings=TFIDF)
    [new_id] = _items(db, team, ["Okta single sign-on for the admin console"])
    with db.session() as s:
        vector = index.add(s, new_id, "Okta single sign-on for the admin console")
    with db.read() as s:
        row = s.get(FeedbackVector, new_id)
    assert row is not None and row.model_version == index.model_version
    np.testing.assert_allclose(np.frombuffer(row.vector, dtype=np.float32), vector)
    assert index.nearest_items(vector, k=1)[0].item_id == new_id
    index.remove(new_id)
    assert new_id not in [n.item_id for n in index.nearest_items(vector, k=20)]


def test_another_process_sees_new_vectors_deletions_and_theme_changes(
    db: Database, team: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(index_module, "DELETION_CHECK_SECONDS", 0.0)
    ids = _items(db, team, CORPUS)
    other_db = Database(db.url)  # a second process: its own engine and its own cache
    try:
        mine = get_index(db, team, settings=TFIDF)
        theirs = get_index(other_db, team, settings=TFIDF)
        assert theirs is not mine and theirs.model_version == mine.model_version

        [new_id] = _items(db, team, ["Okta SSO login loops back to the sign-in page"])
        with db.session() as s:
            vector = mine.add(s, new_id, "Okta SSO login loops back to the sign-in page")
        theirs = get_index(other_db, team, settings=TFIDF)
        assert theirs.nearest_items(vector, k=1)[0].item_id == new_id

        with db.session() as s:
            s.get_one(FeedbackItem, ids[0]).deleted_at = datetime.now(UTC)
        theirs = get_index(other_db, team, settings=TFIDF)
        assert ids[0] not in [n.item_id for n in theirs.nearest_items(vector, k=100)]

        assert theirs.nearest_theme(vector) is None
        with db.session() as s:
            theme = Theme(team_id=team, name="SSO", status="active")
            s.add(theme)
            s.flush()
            for item_id in (ids[2], ids[3]):
                s.get_one(FeedbackItem, item_id).theme_id = theme.id
            bump_version(s, team)
            theme_id = theme.id
        theirs = get_index(other_db, team, settings=TFIDF)
        best = theirs.nearest_theme(theirs.encode("single sign-on with Okta"))
        assert best is not None and best.theme_id == theme_id and best.score > 0.3
        assert sorted(theirs.theme_members(theme_id)) == sorted([ids[2], ids[3]])

        with db.session() as s:  # a proposed theme is not a target for new items
            s.get_one(Theme, theme_id).status = "proposed"
            bump_version(s, team)
        assert get_index(other_db, team, settings=TFIDF).nearest_theme(vector) is None
    finally:
        forget_cached(other_db)
        other_db.dispose()


def test_refit_bumps_the_model_version_and_reencodes_everything(db: Database, team: str) -> None:
    ids = _items(db, team, CORPUS)
    first = get_index(db, team, settings=TFIDF)
    other_db = Database(db.url)
    try:
        theirs = get_index(other_db, team, settings=TFIDF)
        _items(db, team, ["Webhooks for new invoices", "Invoice webhook events please"])
        version = refit(db, team, settings=TFIDF)
        assert version == first.model_version + 1
        with db.read() as s:
            versions = set(
                s.scalars(select(FeedbackVector.model_version).where(FeedbackVector.team_id == team))
            )
            count = s.scalar(
                select(func.count()).select_from(FeedbackVector).where(FeedbackVector.team_id == team)
            )
            model = s.scalars(
                select(SimilarityModel).where(
                    SimilarityModel.team_id == team, SimilarityModel.version == version
                )
            ).one()
        assert versions == {version} and count == len(CORPUS) + 2 and model.item_count == len(CORPUS) + 2
        again = get_index(db, team, settings=TFIDF)
        assert again is not first and again.model_version == version and len(again) == len(CORPUS) + 2
        reloaded = get_index(other_db, team, settings=TFIDF)  # the other process notices the new fit
        assert reloaded is not theirs and reloaded.model_version == version
        assert reloaded.nearest_items(reloaded.encode("invoice webhooks"), k=1)[0].item_id not in ids
    finally:
        forget_cached(other_db)
        other_db.dispose()


def test_items_without_vectors_are_encoded_on_load(db: Database, team: str) -> None:
    ids = _items(db, team, CORPUS)
    get_index(db, team, settings=TFIDF)
    with db.session() as s:
        s.execute(FeedbackVector.__table__.delete().where(FeedbackVector.feedback_id == ids[4]))
    forget_cached(db, team)
    index = get_index(db, team, settings=TFIDF)
    assert index.nearest_items(index.encode("dark mode dashboard"), k=1)[0].item_id in (ids[4], ids[5])
    with db.read() as s:
        assert s.get(FeedbackVector, ids[4]) is not None


def test_a_small_corpus_is_refitted_when_it_doubles(db: Database, team: str) -> None:
    _items(db, team, CORPUS[:2])
    index = get_index(db, team, settings=TFIDF)
    assert index.fitted_items == 2
    new_ids = _items(db, team, CORPUS[2:] + [f"Feature request number {i} for reports" for i in range(10)])
    with db.session() as s:
        for item_id in new_ids:
            index.add(s, item_id, "x")
    refreshed = get_index(db, team, settings=TFIDF)
    assert refreshed.model_version == index.model_version + 1 and refreshed.fitted_items == 2 + len(new_ids)


def test_empty_workspace_gives_an_empty_index(db: Database, team: str) -> None:
    index = get_index(db, team, settings=TFIDF)
    assert len(index) == 0
    vector = index.encode("anything at all")
    assert index.nearest_items(vector) == [] and index.nearest_theme(vector) is None
    assert index.vectors_for([12345]).shape[0] == 1


@pytest.mark.skipif(
    not embeddings_available(), reason="the `embeddings` extra is not installed (pip install '.[embeddings]')"
)
def test_embeddings_backend_stores_no_state_and_a_backend_switch_refits(db: Database, team: str) -> None:
    ids = _items(db, team, CORPUS)
    tfidf_index = get_index(db, team, settings=TFIDF)
    assert tfidf_index.encoder.name == "tfidf"
    forget_cached(db, team)  # a restart with the extra installed and the setting on auto
    index = get_index(db, team, settings=Settings(PRODOPS_SIMILARITY_BACKEND="auto"))  # type: ignore[call-arg]
    assert index.encoder.name == "embeddings:all-MiniLM-L6-v2"
    assert index.model_version == tfidf_index.model_version + 1 and not index.fitted_on_corpus
    with db.read() as s:
        model = s.scalars(
            select(SimilarityModel).where(
                SimilarityModel.team_id == team, SimilarityModel.version == index.model_version
            )
        ).one()
        dims = {
            len(v) // 4
            for v in s.scalars(select(FeedbackVector.vector).where(FeedbackVector.team_id == team))
        }
    assert model.state is None and model.backend == index.encoder.name and dims == {384}
    found = index.nearest_items(index.encode("Sign in through Okta single sign-on"), k=2)
    assert {n.item_id for n in found} == {ids[2], ids[3]}


def test_since_works_when_items_are_not_in_time_order(db: Database, team: str) -> None:
    new = _items(db, team, CORPUS[4:])  # lower ids, recent
    old = _items(db, team, CORPUS[:4], at=datetime.now(UTC) - timedelta(days=90))  # higher ids, backdated
    index = get_index(db, team, settings=TFIDF)
    assert not index._times_sorted
    found = index.nearest_items(index.encode("CSV export"), k=10, since=datetime.now(UTC) - timedelta(days=7))
    assert {n.item_id for n in found} == set(new) and not {n.item_id for n in found} & set(old)
    assert (
        index.nearest_items(index.encode("CSV export"), k=10, since=datetime.now(UTC) + timedelta(days=1))
        == []
    )


def test_items_removed_outright_leave_the_index(
    db: Database, team: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(index_module, "DELETION_CHECK_SECONDS", 0.0)
    ids = _items(db, team, CORPUS)
    index = get_index(db, team, settings=TFIDF)
    probe = index.encode("CSV export of a big report times out")
    assert ids[0] in [n.item_id for n in index.nearest_items(probe, k=3)]
    with db.session() as s:  # a purge: the row goes, its vector with it (ON DELETE CASCADE)
        s.delete(s.get_one(FeedbackItem, ids[0]))
    index = get_index(db, team, settings=TFIDF)
    assert ids[0] not in [n.item_id for n in index.nearest_items(probe, k=100)]
    assert len(index) == len(CORPUS) - 1
