"""The theme job: proposals from planted groups, human decisions kept, dismissed items not re-proposed,
and exactly one of two concurrent runs doing the work."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import update

from bot.insights import themes, themes_job
from bot.insights.similarity import embeddings_available
from bot.settings import Settings
from storage.db import Database
from storage.models import Theme, ThemeStatus, Workspace
from tests.helpers import unique
from tests.themes_data import EMBEDDINGS, GROUPS, NOISE, TFIDF, add_items, items_of, themes_of


def _seeded(db: Database, settings: Settings = TFIDF) -> tuple[str, dict[str, list[int]]]:
    team = unique("T")
    with db.session() as s:
        s.add(Workspace(team_id=team))
    ids = {name: add_items(db, team, texts, settings=settings) for name, texts in GROUPS.items()}
    ids["noise"] = add_items(db, team, NOISE, settings=settings)
    return team, ids


def _proposal_of(db: Database, team: str, item_ids: list[int]) -> Theme:
    """The proposal holding most of these items."""
    items = items_of(db, team)
    by_theme: dict[int, int] = {}
    for i in item_ids:
        if items[i].theme_id is not None:
            by_theme[items[i].theme_id] = by_theme.get(items[i].theme_id, 0) + 1
    assert by_theme, "the group was not proposed"
    best = max(by_theme, key=lambda t: by_theme[t])
    return next(t for t in themes_of(db, team) if t.id == best)


def _held(db: Database, team: str, theme_id: int) -> list[int]:
    return [i for i, item in items_of(db, team).items() if item.theme_id == theme_id]


BACKENDS = [TFIDF] + ([EMBEDDINGS] if embeddings_available() else [])


@pytest.mark.parametrize("settings", BACKENDS, ids=lambda s: s.similarity_backend)
def test_proposes_named_themes_from_planted_groups(db: Database, settings: Settings) -> None:
    team, ids = _seeded(db, settings)
    result = themes_job.run_for_team(db, team, settings=settings)
    assert result.ran and len(result.proposed) == 3, result
    names = {}
    for group in GROUPS:
        proposal = _proposal_of(db, team, ids[group])
        assert proposal.status == ThemeStatus.proposed.value and proposal.name_source == "job"
        members = themes_of(db, team)
        items = items_of(db, team)
        held = {i for i, item in items.items() if item.theme_id == proposal.id}
        assert len(held & set(ids[group])) >= 0.75 * len(ids[group]), (group, proposal.name)
        assert len(held - set(ids[group])) <= 1, (group, proposal.name)
        assert all(items[i].theme_source == "auto" and items[i].theme_similarity for i in held)
        assert proposal.description and "most typical: “" in proposal.description
        names[group] = proposal.name.lower()
        assert members
    assert "csv" in names["export"] or "export" in names["export"], names
    assert "sso" in names["sso"] or "login" in names["sso"] or "saml" in names["sso"], names
    assert "crash" in names["mobile"] or "app" in names["mobile"], names

    again = themes_job.run_for_team(db, team, settings=settings)  # nothing new: not due
    assert not again.ran and "new unsorted" in again.reason


def test_human_rename_and_placement_survive_reclustering(db: Database) -> None:
    team, ids = _seeded(db)
    themes_job.run_for_team(db, team, settings=TFIDF)
    sso = _proposal_of(db, team, ids["sso"])
    _proposal_of(db, team, ids["export"])  # the export group was proposed too
    mobile = _proposal_of(db, team, ids["mobile"])
    with db.session() as s:
        themes.rename(s, team_id=team, theme_id=sso.id, name="Single sign-on")
        # A person says this export item belongs with mobile; the job must never move it back.
        themes.move_items(s, team_id=team, item_ids=[ids["export"][0]], target_id=mobile.id)
    more = add_items(db, team, [f"{text} (again)" for group in GROUPS.values() for text in group[:4]])
    result = themes_job.run_for_team(db, team, force=True, settings=TFIDF)
    assert result.ran
    by_id = {t.id: t for t in themes_of(db, team)}
    assert by_id[sso.id].name == "Single sign-on" and by_id[sso.id].status == "proposed"
    items = items_of(db, team)
    assert items[ids["export"][0]].theme_id == mobile.id
    assert items[ids["export"][0]].theme_source == "human"
    # New items like a proposal a person took up join it; the rest are clustered as before.
    new_sso = more[4:8]
    assert sum(items[i].theme_id == sso.id for i in new_sso) >= 3
    assert all(items[i].theme_id == sso.id for i in ids["sso"] if i in set(_held(db, team, sso.id)))
    new_mobile = more[8:12]
    assert sum(items[i].theme_id == mobile.id for i in new_mobile) >= 3
    # The untouched export proposal was re-clustered with the rest (never into a person's proposal).
    assert not ({items[i].theme_id for i in ids["export"][1:]} & {sso.id})


def test_accepted_theme_takes_unsorted_items_and_keeps_its_name(db: Database) -> None:
    team, ids = _seeded(db)
    themes_job.run_for_team(db, team, settings=TFIDF)
    export = _proposal_of(db, team, ids["export"])
    with db.session() as s:
        themes.accept(s, team_id=team, theme_id=export.id)
        held = themes.member_ids(s, team_id=team, theme_id=export.id)
        # Pretend the job never saw the two most typical export items: they are unsorted again.
        typical = sorted(
            (i for i in ids["export"] if i in held),
            key=lambda i: -(items_of(db, team)[i].theme_similarity or 0),
        )
        loose = typical[:2]
        s.execute(
            update(themes.FeedbackItem)
            .where(themes.FeedbackItem.id.in_(loose))
            .values(theme_id=None, theme_source=None)
        )
    result = themes_job.run_for_team(db, team, force=True, settings=TFIDF)
    assert result.assigned >= 2
    items = items_of(db, team)
    assert all(items[i].theme_id == export.id for i in loose)
    assert {t.id: t for t in themes_of(db, team)}[export.id].name == export.name


def test_dismissed_proposal_is_not_proposed_again(db: Database) -> None:
    team, ids = _seeded(db)
    themes_job.run_for_team(db, team, settings=TFIDF)
    mobile = _proposal_of(db, team, ids["mobile"])
    with db.session() as s:
        dismissed_items = themes.member_ids(s, team_id=team, theme_id=mobile.id)
        themes.dismiss(s, team_id=team, theme_id=mobile.id)
    themes_job.run_for_team(db, team, force=True, settings=TFIDF)
    items = items_of(db, team)
    assert all(items[i].theme_id == mobile.id for i in dismissed_items)
    open_themes = [t for t in themes_of(db, team) if t.status == "proposed"]
    for theme in open_themes:
        held = {i for i, item in items.items() if item.theme_id == theme.id}
        assert not held & dismissed_items
    assert {t.id: t for t in themes_of(db, team)}[mobile.id].status == "dismissed"


def test_two_concurrent_runs_one_does_the_work(db: Database) -> None:
    team, _ = _seeded(db)
    barrier = threading.Barrier(2)
    results: list[themes_job.ThemeJobResult] = []

    def run() -> None:
        barrier.wait()
        results.append(themes_job.run_for_team(db, team, settings=TFIDF))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(results) == 2
    assert sum(r.ran for r in results) == 1, results
    # The other either lost the claim (it read the version before the winner committed) or, reading
    # after, found nothing new to do.
    (idle,) = [r for r in results if not r.ran]
    assert idle.reason == "another worker is running it" or "new unsorted" in idle.reason
    assert len([t for t in themes_of(db, team) if t.status == "proposed"]) == 3


def test_claim_is_exclusive(db: Database) -> None:
    team = unique("T")
    with db.session() as s:
        s.add(Workspace(team_id=team, insights_version=7))
    with db.session() as s:
        assert themes_job._claim(s, team, 7)
    with db.session() as s:
        assert not themes_job._claim(s, team, 7)  # a second worker that saw the same version loses


def test_the_job_is_scheduled(db: Database) -> None:
    from apscheduler.schedulers.background import BackgroundScheduler
    from slack_sdk import WebClient

    from bot.insights.jobs import add_insight_jobs
    from bot.settings import Settings

    scheduler = BackgroundScheduler()
    add_insight_jobs(scheduler, db, Settings(), WebClient(token="xoxb-test"))
    job = scheduler.get_job("themes-tick")
    assert job is not None and job.trigger.interval.total_seconds() == 3600  # hourly by default
    tuned = BackgroundScheduler()  # PRODOPS_THEMES_TICK_SECONDS is a setting like the others (.env, checked)
    add_insight_jobs(tuned, db, Settings(PRODOPS_THEMES_TICK_SECONDS=90), WebClient(token="xoxb-test"))
    job = tuned.get_job("themes-tick")
    assert job is not None and job.trigger.interval.total_seconds() == 90
