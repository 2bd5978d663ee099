"""The theme job (worker): clusters unsorted feedback and proposes themes for a person to accept.

Per workspace, when enough new items are unsorted: re-fit the similarity model if the corpus has doubled,
put unsorted items that now clear an active theme's threshold into it, cluster the rest with the items of
proposals nobody acted on, and replace those proposals with the new ones. Never touched: names and
descriptions set by a person, items a person placed, active themes, and dismissed proposals (their items
stay with them, so the same items are never proposed again).

Exactly once across processes: the run claims the workspace with a conditional UPDATE of its insights
version and does its work in that transaction, so a second worker's claim waits for it and then fails.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bot import workspaces
from bot.insights import clustering, themes
from bot.insights import index as similarity_index
from bot.insights.index import TeamIndex
from bot.settings import Settings
from storage.db import Database
from storage.models import FeedbackItem, SimilarityModel, Theme, ThemeStatus, Visibility, Workspace
from storage.types import utcnow

logger = logging.getLogger("prodops.insights.themes")

MIN_NEW_ITEMS = 20  # a run is due when this many items are new and unsorted ...
MIN_NEW_SHARE = 0.10  # ... or this share of the workspace's items (small workspaces)
MIN_THEME_SIZE = 3  # smaller clusters are left unsorted
# A new proposal needs this many unsorted items that cluster together: 2 % of the workspace's items,
# at least MIN_THEME_SIZE and at most MAX_PROPOSAL_SIZE.
PROPOSAL_SHARE, MAX_PROPOSAL_SIZE = 0.02, 8
REUSE_OVERLAP = 0.5  # a new cluster sharing this much (Jaccard) with an old proposal keeps its id
EXAMPLES = 2
MERGE_SHARE = 0.1  # see _merge_similarity
ANCHOR_FLOOR = 0.6  # ... each item at least this share of the theme threshold from the theme's centroid
ANCHOR_SHARE = 0.34  # a group this much made of one active theme's members joins that theme
MAX_ANCHORS = 3000  # members of active themes clustered with the unsorted items (the newest)
MIN_ITEMS_TO_PROPOSE = 24  # no proposal before the workspace has this many items (too few to see topics)
EXAMPLE_CHARS = 120


@dataclass
class ThemeJobResult:
    """What one workspace's run did (or why it did nothing)."""

    team_id: str
    ran: bool = False
    reason: str = ""
    refitted: bool = False
    assigned: int = 0  # unsorted items that joined an active theme
    proposed: list[int] = field(default_factory=list)  # proposal ids after the run (new or kept ids)
    removed: int = 0  # old proposals nobody acted on that no cluster matched
    unsorted: int = 0  # pool items left unsorted


# Highest unsorted item id each workspace's last run saw, in this process (saves re-running on the same
# items; the database claim is what keeps runs exclusive).
_seen_up_to: dict[tuple[int, str], int] = {}
# When this process last ran each workspace's job: a theme decision after it makes the next tick run.
_last_run_at: dict[tuple[int, str], datetime] = {}
_seen_lock = threading.Lock()


def run_themes_tick(*, db: Database, settings: Settings | None = None) -> list[ThemeJobResult]:
    """Runs the job for every workspace with unsorted items; one failing workspace does not stop the rest."""
    with db.read() as s:
        teams = list(
            s.scalars(
                select(FeedbackItem.team_id)
                .where(FeedbackItem.theme_id.is_(None), FeedbackItem.deleted_at.is_(None))
                .distinct()
            )
        )
    results = []
    for team_id in teams:
        try:
            results.append(run_for_team(db, team_id, settings=settings))
        except Exception:
            logger.exception("theme job failed for team %s", team_id)
    return results


def run_for_team(
    db: Database, team_id: str, *, force: bool = False, settings: Settings | None = None
) -> ThemeJobResult:
    """One workspace's run: checks it is due (unless `force`), re-fits if needed, claims, clusters, proposes."""
    result = ThemeJobResult(team_id=team_id)
    key = (id(db), team_id)
    with db.read() as s:
        # The version is read before anything else: a run that started meanwhile makes our claim fail.
        seen_version = s.scalar(select(Workspace.insights_version).where(Workspace.team_id == team_id))
        due, reason, newest = _due(
            s, team_id, seen_up_to=_seen_up_to.get(key, 0), last_run_at=_last_run_at.get(key)
        )
        started = utcnow()
    if not (due or force):
        result.reason = reason
        return result
    if seen_version is None:  # items before the workspace's settings row (e.g. imported): make it
        with db.session() as s:
            seen_version = workspaces.get_or_create(db_session=s, team_id=team_id).insights_version or 0
    result.refitted = _refit_if_grown(db, team_id, settings)
    index = similarity_index.get_index(db, team_id, settings=settings)
    with db.session() as s:
        if not _claim(s, team_id, seen_version):
            result.reason = "another worker is running it"
            return result
        result.ran = True
        _recluster(s, index, result)
    with _seen_lock:
        _seen_up_to[key] = max(_seen_up_to.get(key, 0), newest)
        _last_run_at[key] = started
    logger.info(
        "themes for %s: %d assigned, %d proposals, %d removed, %d unsorted",
        team_id,
        result.assigned,
        len(result.proposed),
        result.removed,
        result.unsorted,
    )
    return result


def _sortable(team_id: str) -> list[Any]:
    """Live items the job may place: not placed by a person."""
    return [
        FeedbackItem.team_id == team_id,
        FeedbackItem.deleted_at.is_(None),
        or_(FeedbackItem.theme_source.is_(None), FeedbackItem.theme_source != themes.HUMAN),
    ]


def _due(
    session: Session, team_id: str, *, seen_up_to: int, last_run_at: datetime | None
) -> tuple[bool, str, int]:
    """(due, why not, newest unsorted id). Due when (a) enough unsorted items arrived since the last run,
    or (b) a person decided about a theme (accepted, merged, dismissed, renamed) since this process last
    ran the job, and at least MIN_THEME_SIZE items are still unsorted."""
    last_mark = session.scalar(
        select(func.max(Theme.updated_at)).where(
            Theme.team_id == team_id,
            Theme.name_source == themes.JOB,
            Theme.status == ThemeStatus.proposed.value,
        )
    )
    unsorted = select(func.count(), func.max(FeedbackItem.id)).where(
        *_sortable(team_id), FeedbackItem.theme_id.is_(None), FeedbackItem.id > seen_up_to
    )
    if last_mark is not None:
        unsorted = unsorted.where(FeedbackItem.created_at > last_mark)
    new, newest = session.execute(unsorted).one()
    total = session.scalar(
        select(func.count()).where(FeedbackItem.team_id == team_id, FeedbackItem.deleted_at.is_(None))
    )
    needed = min(MIN_NEW_ITEMS, max(MIN_THEME_SIZE, int(MIN_NEW_SHARE * (total or 0))))
    if (total or 0) < MIN_ITEMS_TO_PROPOSE and not session.scalar(
        select(func.count())
        .select_from(Theme)
        .where(Theme.team_id == team_id, Theme.status == ThemeStatus.active.value)
    ):
        return (
            False,
            f"{total} item(s); the first proposals wait for {MIN_ITEMS_TO_PROPOSE}",
            int(newest or 0),
        )
    if new >= needed:
        return True, "", int(newest or 0)
    decided = session.scalar(
        select(func.max(Theme.updated_at)).where(
            Theme.team_id == team_id, Theme.status != ThemeStatus.proposed.value
        )
    )
    if decided is not None and (last_run_at is None or decided > last_run_at):
        left, newest_left = session.execute(
            select(func.count(), func.max(FeedbackItem.id)).where(
                *_sortable(team_id), FeedbackItem.theme_id.is_(None)
            )
        ).one()
        if left >= MIN_THEME_SIZE:
            return True, "", int(newest_left or 0)
    return False, f"{new} new unsorted item(s); a run needs {needed}", int(newest or 0)


def _refit_if_grown(db: Database, team_id: str, settings: Settings | None) -> bool:
    """Re-fits a corpus-fitted model (TF-IDF) once the workspace has twice the items it was fitted on."""
    with db.read() as s:
        fitted = s.scalar(
            select(SimilarityModel.item_count)
            .where(SimilarityModel.team_id == team_id, SimilarityModel.state.is_not(None))
            .order_by(SimilarityModel.version.desc())
            .limit(1)
        )
        live = s.scalar(
            select(func.count()).where(FeedbackItem.team_id == team_id, FeedbackItem.deleted_at.is_(None))
        )
    if fitted is None or not live or live < 2 * max(fitted, 1):
        return False
    try:
        similarity_index.refit(db, team_id, settings=settings)
    except IntegrityError:  # another worker stored the same model version first: use theirs
        logger.info("team %s: another worker re-fitted the similarity model", team_id)
        return False
    return True


def _claim(session: Session, team_id: str, seen_version: int) -> bool:
    """Bumps the insights version if it is still `seen_version`; the row stays locked until commit."""
    won = session.execute(
        update(Workspace)
        .where(Workspace.team_id == team_id, Workspace.insights_version == seen_version)
        .values(insights_version=Workspace.insights_version + 1)
        .execution_options(synchronize_session=False)
    )
    return getattr(won, "rowcount", 0) == 1


@dataclass
class _PoolItem:
    id: int
    text: str
    public: bool
    theme_id: int | None
    theme_source: str | None
    similarity: float | None


def _recluster(session: Session, index: TeamIndex, result: ThemeJobResult) -> None:
    team_id = index.team_id
    proposals = list(
        session.scalars(
            select(Theme).where(Theme.team_id == team_id, Theme.status == ThemeStatus.proposed.value)
        )
    )
    # A proposal a person renamed, described, made or placed an item in is theirs: kept as it is.
    acted_on = themes.human_placed_in(session, team_id=team_id, theme_ids=[p.id for p in proposals]) | {
        p.id for p in proposals if p.name_source == themes.HUMAN or p.created_by_user_id is not None
    }
    replaceable = {p.id: p for p in proposals if p.id not in acted_on}
    rows = session.execute(
        select(
            FeedbackItem.id,
            FeedbackItem.text,
            FeedbackItem.visibility,
            FeedbackItem.theme_id,
            FeedbackItem.theme_source,
            FeedbackItem.theme_similarity,
        )
        .where(
            *_sortable(team_id),
            or_(FeedbackItem.theme_id.is_(None), FeedbackItem.theme_id.in_(list(replaceable))),
        )
        .order_by(FeedbackItem.id)
    ).all()
    pool = [_PoolItem(r[0], r[1], r[2] == Visibility.public.value, r[3], r[4], r[5]) for r in rows]
    vectors = index.vectors_for([p.id for p in pool]) if pool else np.zeros((0, 0), dtype=np.float32)
    encoded = np.linalg.norm(vectors, axis=1) > 0 if len(pool) else np.zeros(0, dtype=bool)
    before = {p.id: (p.theme_id, p.theme_source, p.similarity) for p in pool}
    old_members: dict[int, set[int]] = {tid: set() for tid in replaceable}
    for p in pool:
        if p.theme_id is not None:
            old_members[p.theme_id].add(p.id)
        p.theme_id, p.theme_source, p.similarity = None, None, None

    # 1. Into an active theme, or a proposal a person has taken up, when an item clears the threshold.
    active = set(
        session.scalars(
            select(Theme.id).where(Theme.team_id == team_id, Theme.status == ThemeStatus.active.value)
        )
    )
    kept_ids, kept_centroids = _centroids(session, index, [p.id for p in proposals if p.id in acted_on])
    threshold = index.encoder.theme_threshold
    rest: list[int] = []
    for i, p in enumerate(pool):
        if not encoded[i]:
            p.theme_id, p.theme_source, p.similarity = before[p.id]  # not encoded yet: left as it was
            continue
        best_id, best = None, threshold
        nearest = index.nearest_theme(vectors[i])
        if nearest is not None and nearest.theme_id in active and nearest.score >= best:
            best_id, best = nearest.theme_id, nearest.score
        if kept_ids:
            scores = kept_centroids @ vectors[i]
            top = int(np.argmax(scores))
            if float(scores[top]) >= best:
                best_id, best = kept_ids[top], float(scores[top])
        if best_id is not None:
            p.theme_id, p.theme_source, p.similarity = best_id, themes.AUTO, best
            result.assigned += 1
        else:
            rest.append(i)

    # 2. Cluster the rest together with the members of active themes (the anchors), so the number and
    # shape of the groups come from the whole workspace, not from the few items left over. A group made
    # mostly of one active theme's members hands its unsorted items to that theme; a group of unsorted
    # items big enough becomes a proposal; what is left stays unsorted.
    # Proposals a person took up anchor their groups too.
    anchor_ids, anchor_themes = _anchors(session, team_id, active | set(kept_ids))
    dim = vectors.shape[1] if len(pool) else 0
    anchor_vectors = index.vectors_for(anchor_ids) if anchor_ids else np.zeros((0, dim), dtype=np.float32)
    clusters: list[tuple[np.ndarray, np.ndarray]] = []
    live = len(pool) + len(anchor_ids)
    min_size = max(MIN_THEME_SIZE, min(MAX_PROPOSAL_SIZE, round(PROPOSAL_SHARE * live)))
    if len(rest) >= MIN_THEME_SIZE:
        own_vectors = vectors[rest]
        joint = np.vstack([own_vectors, anchor_vectors]) if len(anchor_ids) else own_vectors
        joint_labels = clustering.cluster(joint)
        for label in np.unique(joint_labels):
            members_all = np.flatnonzero(joint_labels == label)
            own = members_all[members_all < len(rest)]
            if own.size == 0:
                continue
            anchored = [anchor_themes[m - len(rest)] for m in members_all if m >= len(rest)]
            if anchored:
                theme_id, count = Counter(anchored).most_common(1)[0]
                if count >= ANCHOR_SHARE * members_all.size:
                    of_theme = [i for i, t in enumerate(anchor_themes) if t == theme_id]
                    centroid = _unit(anchor_vectors[of_theme].mean(axis=0))
                    scores = own_vectors[own] @ centroid
                    joins = scores >= ANCHOR_FLOOR * threshold  # near enough to the theme itself
                    for m, score in zip(own[joins], scores[joins], strict=True):
                        p = pool[rest[m]]
                        p.theme_id, p.theme_source, p.similarity = theme_id, themes.AUTO, float(score)
                        result.assigned += 1
                    own = own[~joins]
            if own.size >= min_size:
                centroid = _unit(own_vectors[own].mean(axis=0))
                similarities = own_vectors[own] @ centroid
                # Only a tight group is proposed: as tight as an item must be to join it once accepted.
                if float(similarities.mean()) >= threshold:
                    clusters.append((own, similarities))
    texts = index.model_texts(session, [pool[i].text for i in rest])
    clusters = _merge_near(clusters, vectors[rest], merge_at=_merge_similarity(threshold))
    # A cluster that repeats an active theme is no new proposal: its items join that theme.
    kept_clusters = []
    for members, similarities in clusters:
        centroid = _unit(vectors[rest][members].mean(axis=0))
        nearest = index.nearest_theme(centroid)
        if (
            nearest is not None
            and nearest.theme_id in active
            and nearest.score >= _merge_similarity(threshold)
        ):
            for m in members:
                p = pool[rest[m]]
                p.theme_id, p.theme_source = nearest.theme_id, themes.AUTO
                p.similarity = float(vectors[rest[m]] @ centroid)
                result.assigned += 1
        else:
            kept_clusters.append((members, similarities))
    clusters = kept_clusters
    labels = np.full(len(rest), -1, dtype=np.int64)
    for label, (members, _) in enumerate(clusters):
        labels[members] = label
    keywords: dict[int, list[str]] = {}
    if clusters:
        # Active themes' members count as classes of their own, so a proposal is named by what sets it
        # apart from the whole workspace, not only from the other leftovers.
        anchor_texts = dict(
            session.execute(
                select(FeedbackItem.id, FeedbackItem.text).where(FeedbackItem.id.in_(anchor_ids))
            ).all()
        )
        background = [
            (anchor_texts[i], t) for i, t in zip(anchor_ids, anchor_themes, strict=True) if i in anchor_texts
        ]
        theme_labels = {t: len(clusters) + n for n, t in enumerate(sorted(set(anchor_themes)))}
        all_texts = texts + index.model_texts(session, [text for text, _ in background])
        all_labels = np.concatenate(
            [labels, np.array([theme_labels[t] for _, t in background], dtype=np.int64)]
        )
        found = clustering.distinctive_keywords(all_texts, all_labels)
        keywords = {label: found.get(label, []) for label in range(len(clusters))}

    # 3. Keep the id of the old proposal a cluster mostly repeats; drop old proposals nothing repeats.
    taken = {
        t.name.lower()
        for t in session.scalars(
            select(Theme).where(Theme.team_id == team_id, Theme.status.in_(themes.OPEN_STATUSES))
        )
        if t.id not in replaceable
    }
    reused: set[int] = set()
    for label, (members, similarities) in enumerate(clusters):
        ids = {pool[rest[m]].id for m in members}
        theme = _matching_proposal(ids, old_members, replaceable, reused)
        words = keywords.get(label, [])
        name = _free_name(clustering.theme_name(words, [texts[m] for m in members]), taken)
        taken.add(name.lower())
        order = np.argsort(-similarities, kind="stable")
        description = _description(
            len(members), [texts[members[o]] for o in order if pool[rest[members[o]]].public]
        )
        if theme is None:
            theme = Theme(team_id=team_id, status=ThemeStatus.proposed.value, name_source=themes.JOB)
            session.add(theme)
        theme.name, theme.keywords, theme.description = name, words, description
        theme.updated_at = utcnow()  # the run's mark: items captured after it are "new" for the next run
        session.flush()
        result.proposed.append(theme.id)
        for m, score in zip(members, similarities, strict=True):
            p = pool[rest[m]]
            p.theme_id, p.theme_source, p.similarity = theme.id, themes.AUTO, float(score)

    # 4. What no group took joins its nearest accepted theme when it is near enough (a lower bar than at
    # capture: the clustering found no better place for it); the rest stays unsorted.
    floor = ANCHOR_FLOOR * threshold
    for i, p in enumerate(pool):
        if p.theme_id is not None or not encoded[i]:
            continue
        nearest = index.nearest_theme(vectors[i])
        if nearest is not None and nearest.theme_id in active and nearest.score >= floor:
            p.theme_id, p.theme_source, p.similarity = nearest.theme_id, themes.AUTO, float(nearest.score)
            result.assigned += 1

    changed = [
        {"id": p.id, "theme_id": p.theme_id, "theme_source": p.theme_source, "theme_similarity": p.similarity}
        for p in pool
        if before[p.id] != (p.theme_id, p.theme_source, p.similarity)
    ]
    if changed:
        session.execute(update(FeedbackItem), changed)
    stale = [tid for tid in replaceable if tid not in reused]
    if stale:
        session.execute(delete(Theme).where(Theme.team_id == team_id, Theme.id.in_(stale)))
    result.removed = len(stale)
    result.unsorted = sum(1 for p in pool if p.theme_id is None)


def _anchors(session: Session, team_id: str, active: set[int]) -> tuple[list[int], list[int]]:
    """(item ids, theme ids) of the newest live members of active themes, at most MAX_ANCHORS."""
    if not active:
        return [], []
    rows = session.execute(
        select(FeedbackItem.id, FeedbackItem.theme_id)
        .where(
            FeedbackItem.team_id == team_id,
            FeedbackItem.deleted_at.is_(None),
            FeedbackItem.theme_id.in_(list(active)),
        )
        .order_by(FeedbackItem.id.desc())
        .limit(MAX_ANCHORS)
    ).all()
    return [int(r[0]) for r in rows if r[1] is not None], [int(r[1]) for r in rows if r[1] is not None]


def _centroids(session: Session, index: TeamIndex, theme_ids: list[int]) -> tuple[list[int], np.ndarray]:
    """Normalised mean vectors of these themes' live members (themes without encoded members left out)."""
    ids, rows = [], []
    for theme_id in theme_ids:
        members = sorted(themes.member_ids(session, team_id=index.team_id, theme_id=theme_id))
        vectors = index.vectors_for(members) if members else np.zeros((0, 0), dtype=np.float32)
        centroid = vectors.sum(axis=0) if len(members) else None
        if centroid is not None and float(np.linalg.norm(centroid)) > 0:
            ids.append(theme_id)
            rows.append(centroid / np.linalg.norm(centroid))
    return ids, (np.vstack(rows).astype(np.float32) if rows else np.zeros((0, 0), dtype=np.float32))


def _clusters(vectors: np.ndarray, threshold: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """(member positions, similarity to the centroid) of each cluster worth proposing, biggest first.

    A cluster is worth it with at least MIN_THEME_SIZE items whose mean similarity to its centroid clears
    the theme threshold — the bar a new item must clear to join it once it is accepted. The clustering's
    own choice of k comes first; when it leaves most items out (near-identical pairs pull the silhouette
    towards many tiny clusters), a few smaller k are tried and the best by `_score` wins.
    """
    found = _cohesive(vectors, clustering.cluster(vectors), threshold)
    n = vectors.shape[0]
    if _covered(found) * 2 < n:
        upper = max(2, n // MIN_THEME_SIZE)
        for k in sorted({int(round(x)) for x in np.geomspace(2, upper, num=6)}):
            candidate = _cohesive(vectors, clustering.cluster(vectors, k), threshold)
            if _score(candidate) > _score(found):
                found = candidate
    return sorted(found, key=lambda c: (-c[0].size, int(c[0][0])))


def _cohesive(
    vectors: np.ndarray, labels: np.ndarray, threshold: float
) -> list[tuple[np.ndarray, np.ndarray]]:
    found = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        if members.size < MIN_THEME_SIZE:
            continue
        centroid = vectors[members].mean(axis=0)
        norm = float(np.linalg.norm(centroid))
        if norm == 0:
            continue
        similarities = vectors[members] @ (centroid / norm)
        if float(similarities.mean()) >= threshold:
            found.append((members, similarities))
    return found


def _covered(found: list[tuple[np.ndarray, np.ndarray]]) -> int:
    return sum(int(members.size) for members, _ in found)


def _score(found: list[tuple[np.ndarray, np.ndarray]]) -> tuple[int, float]:
    """Items in proposals, each proposal paying for itself with MIN_THEME_SIZE of them (so a k that splits
    a theme or sweeps leftovers into a tiny one loses); then the tighter proposals."""
    tightness = float(sum(float(similarities.sum()) for _, similarities in found))
    return _covered(found) - MIN_THEME_SIZE * len(found), tightness


def _matching_proposal(
    ids: set[int], old_members: dict[int, set[int]], replaceable: dict[int, Theme], reused: set[int]
) -> Theme | None:
    best, best_overlap = None, REUSE_OVERLAP
    for theme_id, members in old_members.items():
        if theme_id in reused or not members:
            continue
        overlap = len(ids & members) / len(ids | members)
        if overlap >= best_overlap:
            best, best_overlap = theme_id, overlap
    if best is None:
        return None
    reused.add(best)
    return replaceable[best]


def _free_name(name: str, taken: set[str]) -> str:
    """The generated name, numbered when an open theme already has it."""
    candidate, n = name, 2
    while candidate.lower() in taken:
        candidate, n = f"{name} ({n})", n + 1
    return candidate[:255]


def _description(size: int, quotes: Sequence[str]) -> str:
    """One line: how many items, and the most representative ones quoted (cleaned text, public channels
    only, since anyone may read a theme), most central first."""
    examples = [_quote(q) for q in quotes if q.strip()][:EXAMPLES]
    head = f"{size} similar items"
    if not examples:
        return f"{head} (from private channels or DMs, so none is quoted here)."
    return f"{head}, most typical: " + "; ".join(examples)


def _unit(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector


def _merge_similarity(theme_threshold: float) -> float:
    """Centroids at least this similar are one theme (halfway from the theme threshold to identical)."""
    return theme_threshold + MERGE_SHARE * (1.0 - theme_threshold)


def _merge_near(
    clusters: list[tuple[np.ndarray, np.ndarray]], vectors: np.ndarray, *, merge_at: float
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Clusters whose centroids are near-duplicates of each other joined into one (biggest first)."""
    merged = [members for members, _ in clusters]
    changed = True
    while changed and len(merged) > 1:
        changed = False
        centroids = np.vstack([_unit(vectors[m].mean(axis=0)) for m in merged])
        similarity = centroids @ centroids.T
        np.fill_diagonal(similarity, -1.0)
        i, j = np.unravel_index(int(np.argmax(similarity)), similarity.shape)
        if similarity[i, j] >= merge_at:
            a, b = sorted((int(i), int(j)))
            merged[a] = np.sort(np.concatenate([merged[a], merged[b]]))
            del merged[b]
            changed = True
    result = []
    for members in merged:
        centroid = _unit(vectors[members].mean(axis=0))
        result.append((members, vectors[members] @ centroid))
    return sorted(result, key=lambda c: (-c[0].size, int(c[0][0])))


def _quote(text: str) -> str:
    flat = " ".join(text.split())
    return f"“{flat[: EXAMPLE_CHARS - 1]}…”" if len(flat) > EXAMPLE_CHARS else f"“{flat}”"
