"""A workspace's feedback vectors in memory: nearest items and themes in one matrix–vector product.

The database is the truth (FeedbackVector rows, themes, memberships); each process keeps a cached copy per
workspace and refreshes it cheaply on every `get_index` call, so several web workers and the worker agree.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bot.insights import text as model_text
from bot.insights.similarity import Encoder, encoder_for_backend, make_encoder
from bot.settings import Settings, get_settings
from storage.db import Database
from storage.models import FeedbackItem, FeedbackVector, SimilarityModel, Theme, ThemeStatus, Workspace

log = logging.getLogger(__name__)

# New vectors are looked for among ids above (highest seen − this), so rows committed out of id order are
# still found.
ID_LOOKBACK = 500
# Seconds between checks for items deleted by another process (a query over the workspace's items).
DELETION_CHECK_SECONDS = 5.0
# A TF-IDF model fitted on a small corpus is re-fitted automatically once the corpus has doubled, up to
# this many items (beyond it the clustering job calls `refit`, which takes seconds).
AUTO_REFIT_MAX_ITEMS = 5000
ENCODE_BATCH = 512


@dataclass(frozen=True)
class Neighbour:
    item_id: int
    score: float


@dataclass(frozen=True)
class ThemeNeighbour:
    theme_id: int
    score: float


class TeamIndex:
    """One workspace's vectors (a dense float32 matrix), item timestamps and theme centroids."""

    def __init__(
        self,
        team_id: str,
        encoder: Encoder,
        model_version: int,
        fitted_items: int,
        *,
        fitted_on_corpus: bool = False,
    ) -> None:
        self.team_id = team_id
        self.encoder = encoder
        self.model_version = model_version
        self.fitted_items = fitted_items
        self.fitted_on_corpus = fitted_on_corpus  # the model learned from the items (TF-IDF), so can go stale
        self.insights_version = -1
        self._lock = threading.RLock()
        self._dim = 0
        self._matrix = np.zeros((0, 0), dtype=np.float32)
        self._ids = np.zeros(0, dtype=np.int64)
        self._times = np.zeros(0, dtype=np.float64)  # item created_at, epoch seconds
        self._alive = np.zeros(0, dtype=bool)
        self._size = 0
        self._times_sorted = True  # item times ascending by row (the usual case: rows in id order)
        self._row_of: dict[int, int] = {}
        self._max_id = 0
        self._theme_ids = np.zeros(0, dtype=np.int64)
        self._centroids = np.zeros((0, 0), dtype=np.float32)
        self._memberships: dict[int, int] = {}  # item id -> active theme id
        self._deletions_checked_at = datetime.now(UTC)
        self._deletions_check_due = 0.0

    # -- reading -------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._row_of)

    def encode(self, text: str, account_terms: Sequence[str] = ()) -> np.ndarray:
        """The (d,) vector of one text (cleaned for the model first)."""
        return self.encoder.encode([model_text.clean_for_model(text, account_terms)])[0]

    def model_texts(self, session: Session, texts: Sequence[str]) -> list[str]:
        """`texts` as the model sees them: Slack markup, links, ids, this workspace's account names and
        greetings taken out (`text.clean_for_model`). Every encoding path of the index goes through it."""
        terms = model_text.workspace_terms(session, self.team_id)
        return [model_text.clean_for_model(t, terms) for t in texts]

    def nearest_items(
        self,
        vector: np.ndarray,
        *,
        k: int = 5,
        exclude_ids: Collection[int] = (),
        since: datetime | None = None,
    ) -> list[Neighbour]:
        """The k most similar live items, best first (optionally only items created at/after `since`)."""
        with self._lock:
            n = self._size
            if n == 0 or k <= 0:
                return []
            vector = np.asarray(vector, dtype=np.float32)
            # Rows are mostly in creation order: when they are, `since` is a slice, not a mask.
            first = 0
            if since is not None and self._times_sorted:
                first = int(np.searchsorted(self._times[:n], since.timestamp(), side="left"))
            scores = self._matrix[first:n] @ vector
            invalid = ~self._alive[first:n]
            if since is not None and not self._times_sorted:
                invalid |= self._times[:n] < since.timestamp()
            for item_id in exclude_ids:
                row = self._row_of.get(int(item_id))
                if row is not None and row >= first:
                    invalid[row - first] = True
            scores[invalid] = -np.inf
            top = min(k, scores.shape[0])
            if top == 0:
                return []
            picked = np.argpartition(-scores, top - 1)[:top] if scores.shape[0] > top else np.arange(top)
            picked = picked[np.isfinite(scores[picked])]
            order = picked[np.argsort(-scores[picked], kind="stable")]
            return [Neighbour(int(self._ids[first + r]), float(scores[r])) for r in order]

    def nearest_theme(self, vector: np.ndarray) -> ThemeNeighbour | None:
        """The active theme whose centroid (mean of its members' vectors) is most similar, if any."""
        with self._lock:
            if self._theme_ids.size == 0:
                return None
            scores = self._centroids @ np.asarray(vector, dtype=np.float32)
            best = int(np.argmax(scores))
            return ThemeNeighbour(int(self._theme_ids[best]), float(scores[best]))

    def vectors_for(self, item_ids: Sequence[int]) -> np.ndarray:
        """Rows for `item_ids` in that order; an id not in the index gets a row of zeros."""
        with self._lock:
            out = np.zeros((len(item_ids), self._dim), dtype=np.float32)
            for i, item_id in enumerate(item_ids):
                row = self._row_of.get(int(item_id))
                if row is not None:
                    out[i] = self._matrix[row]
            return out

    def theme_members(self, theme_id: int) -> list[int]:
        """Item ids of an active theme, as this index knows them."""
        with self._lock:
            return [item for item, theme in self._memberships.items() if theme == theme_id]

    # -- writing -------------------------------------------------------------------------------------------

    def add(self, session: Session, item_id: int, text: str) -> np.ndarray:
        """Encodes `text`, writes the item's FeedbackVector in the caller's transaction, adds it here."""
        vector = self.encoder.encode(self.model_texts(session, [text]))[0]
        _upsert_vectors(session, self.team_id, self.model_version, [(item_id, vector)])
        item = session.get(FeedbackItem, item_id)
        created = item.created_at if item is not None and item.created_at else datetime.now(UTC)
        with self._lock:
            self._put(item_id, vector, created.timestamp())
        return vector

    def remove(self, item_id: int) -> None:
        """Forgets a deleted item."""
        with self._lock:
            row = self._row_of.pop(int(item_id), None)
            if row is not None:
                self._alive[row] = False
            self._memberships.pop(int(item_id), None)

    def _put(self, item_id: int, vector: np.ndarray, created: float) -> None:
        vector = np.asarray(vector, dtype=np.float32)
        if self._dim == 0:
            self._dim = vector.shape[0]
            self._matrix = np.zeros((0, self._dim), dtype=np.float32)
        if vector.shape[0] != self._dim:
            raise ValueError(f"vector has {vector.shape[0]} dimensions, the index {self._dim}")
        row = self._row_of.get(item_id)
        if row is None:
            if self._size == self._matrix.shape[0]:
                self._grow(max(64, self._size * 2))
            row = self._size
            self._size += 1
            self._row_of[item_id] = row
            self._ids[row] = item_id
        self._matrix[row] = vector
        if (
            row > 0
            and created < self._times[row - 1]
            or row + 1 < self._size
            and created > self._times[row + 1]
        ):
            self._times_sorted = False
        self._times[row] = created
        self._alive[row] = True
        self._max_id = max(self._max_id, item_id)

    def _grow(self, capacity: int) -> None:
        matrix = np.zeros((capacity, self._dim), dtype=np.float32)
        matrix[: self._size] = self._matrix[: self._size]
        self._matrix = matrix
        self._ids = np.resize(self._ids, capacity)
        self._times = np.resize(self._times, capacity)
        alive = np.zeros(capacity, dtype=bool)
        alive[: self._size] = self._alive[: self._size]
        self._alive = alive

    def _load_rows(self, ids: np.ndarray, vectors: np.ndarray, times: np.ndarray) -> None:
        """Replaces every row at once (full load)."""
        n = len(ids)
        self._dim = vectors.shape[1] if n else self._dim
        self._matrix = np.ascontiguousarray(vectors, dtype=np.float32).reshape(n, self._dim)
        self._ids = ids.astype(np.int64)
        self._times = times.astype(np.float64)
        self._alive = np.ones(n, dtype=bool)
        self._size = n
        self._times_sorted = bool(np.all(self._times[1:] >= self._times[:-1]))
        self._row_of = {int(i): r for r, i in enumerate(ids.tolist())}
        self._max_id = int(ids.max()) if n else 0

    def _set_memberships(self, memberships: dict[int, int], theme_ids: list[int]) -> None:
        self._memberships = memberships
        ids = np.array(sorted(theme_ids), dtype=np.int64)
        centroids = np.zeros((len(ids), self._dim), dtype=np.float32)
        counts = np.zeros(len(ids))
        position = {int(t): i for i, t in enumerate(ids.tolist())}
        rows, slots = [], []
        for item_id, theme_id in memberships.items():
            row = self._row_of.get(item_id)
            if row is not None and theme_id in position:
                rows.append(row)
                slots.append(position[theme_id])
        if rows:
            np.add.at(centroids, np.array(slots), self._matrix[np.array(rows)])
            np.add.at(counts, np.array(slots), 1)
        has_members = counts > 0
        norms = np.linalg.norm(centroids, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        self._theme_ids = ids[has_members]
        self._centroids = (centroids / norms)[has_members]

    def add_many(self, session: Session, items: Sequence[tuple[int, str]]) -> list[np.ndarray]:
        """Like `add` for many items: one encoder call for all the texts, their vectors written in the caller's
        transaction and added here, in the order given."""
        vectors = self.encode_many(session, [text for _, text in items])
        self.store_many(session, [item_id for item_id, _ in items], vectors)
        return vectors

    def encode_many(self, session: Session, texts: Sequence[str]) -> list[np.ndarray]:
        """The vectors of `texts`, cleaned as `add` cleans them, in one encoder call; writes nothing, so a
        read session will do (no write lock is held while the model runs)."""
        if not texts:
            return []
        matrix = _encode_batched(self.encoder, self.model_texts(session, list(texts)))
        return [matrix[i] for i in range(len(texts))]

    def store_many(self, session: Session, item_ids: Sequence[int], vectors: Sequence[np.ndarray]) -> None:
        """Writes vectors from `encode_many` in the caller's transaction and adds them here."""
        if not item_ids:
            return
        _upsert_vectors(session, self.team_id, self.model_version, list(zip(item_ids, vectors, strict=True)))
        created = dict(
            session.execute(
                select(FeedbackItem.id, FeedbackItem.created_at).where(FeedbackItem.id.in_(list(item_ids)))
            ).all()
        )
        now = datetime.now(UTC)
        with self._lock:
            for item_id, vector in zip(item_ids, vectors, strict=True):
                self._put(item_id, vector, (created.get(item_id) or now).timestamp())


# -- the process-wide cache ----------------------------------------------------------------------------------

_cache_lock = threading.Lock()
_cache: weakref.WeakKeyDictionary[Database, dict[str, TeamIndex]] = weakref.WeakKeyDictionary()
_team_locks: dict[tuple[int, str], threading.Lock] = {}


def get_index(db: Database, team_id: str, *, settings: Settings | None = None) -> TeamIndex:
    """The workspace's index, loaded (and fitted) on first use and refreshed from the database on each call."""
    with _cache_lock:
        per_db = _cache.setdefault(db, {})
        team_lock = _team_locks.setdefault((id(db), team_id), threading.Lock())
    with team_lock:
        index = per_db.get(team_id)
        if index is None or not _refresh(db, index):
            index = _load(db, team_id, settings or get_settings())
            per_db[team_id] = index
        elif _wants_auto_refit(index):
            _refit_unless_raced(db, team_id, settings)
            index = _load(db, team_id, settings or get_settings())
            per_db[team_id] = index
        return index


def _refit_unless_raced(db: Database, team_id: str, settings: Settings | None) -> None:
    """Refits; when another process stored the same model version first, uses theirs."""
    try:
        refit(db, team_id, settings=settings)
    except IntegrityError:
        log.info("team %s: another process fitted the similarity model first", team_id)


def forget_cached(db: Database, team_id: str | None = None) -> None:
    """Drops cached indexes of `db` (one workspace, or all)."""
    with _cache_lock:
        per_db = _cache.get(db)
        if per_db is None:
            return
        if team_id is None:
            per_db.clear()
        else:
            per_db.pop(team_id, None)


def bump_version(session: Session, team_id: str) -> None:
    """Marks the workspace's themes as changed so every process reloads memberships on its next lookup."""
    session.execute(
        update(Workspace)
        .where(Workspace.team_id == team_id)
        .values(insights_version=Workspace.insights_version + 1)
    )


def _latest_model(session: Session, team_id: str) -> SimilarityModel | None:
    return session.scalars(
        select(SimilarityModel)
        .where(SimilarityModel.team_id == team_id)
        .order_by(SimilarityModel.version.desc())
        .limit(1)
    ).first()


def _load(db: Database, team_id: str, settings: Settings) -> TeamIndex:
    """Builds the index from the database: the latest model (fitting one if there is none or the configured
    backend changed), every live item's vector (encoding the ones missing), and theme memberships."""
    wanted = make_encoder(settings).name
    with db.read() as s:
        model = _latest_model(s, team_id)
    if model is None or model.backend != wanted:
        _refit_unless_raced(db, team_id, settings)
        with db.read() as s:
            model = _latest_model(s, team_id)
        assert model is not None
    encoder = encoder_for_backend(model.backend, settings)
    if model.state is not None:
        encoder.load_state(model.state)
    index = TeamIndex(
        team_id, encoder, model.version, model.item_count, fitted_on_corpus=model.state is not None
    )
    with db.read() as s:
        version = s.scalar(select(Workspace.insights_version).where(Workspace.team_id == team_id)) or 0
        rows = s.execute(
            select(
                FeedbackItem.id, FeedbackItem.created_at, FeedbackVector.vector, FeedbackVector.model_version
            )
            .outerjoin(FeedbackVector, FeedbackVector.feedback_id == FeedbackItem.id)
            .where(FeedbackItem.team_id == team_id, FeedbackItem.deleted_at.is_(None))
            .order_by(FeedbackItem.id)
        ).all()
    missing = [r.id for r in rows if r.vector is None or r.model_version != model.version]
    fresh = _encode_and_store(db, team_id, index, missing) if missing else {}
    ids = np.array([r.id for r in rows], dtype=np.int64)
    times = np.array([r.created_at.timestamp() for r in rows], dtype=np.float64)
    if rows:
        dim = _dimension(rows, fresh, model.version, encoder)
        matrix = np.empty((len(rows), dim), dtype=np.float32)
        for i, r in enumerate(rows):
            matrix[i] = fresh[r.id] if r.id in fresh else np.frombuffer(r.vector, dtype=np.float32)
    else:
        matrix = np.zeros((0, 0), dtype=np.float32)
    with index._lock:
        index._load_rows(ids, matrix, times)
        _reload_memberships(db, index)
        index.insights_version = version
        index._deletions_checked_at = datetime.now(UTC)
        index._deletions_check_due = time.monotonic() + DELETION_CHECK_SECONDS
    return index


def _dimension(rows: Sequence, fresh: dict[int, np.ndarray], version: int, encoder: Encoder) -> int:
    for r in rows:
        if r.id in fresh:
            return int(fresh[r.id].shape[0])
        if r.vector is not None and r.model_version == version:
            return len(r.vector) // 4
    return int(encoder.encode(["x"]).shape[1])


def _refresh(db: Database, index: TeamIndex) -> bool:
    """Brings a cached index up to date; False when it must be rebuilt (another process re-fitted)."""
    with db.read() as s:
        model_version = s.scalar(
            select(func.max(SimilarityModel.version)).where(SimilarityModel.team_id == index.team_id)
        )
        if model_version != index.model_version:
            return False
        version = s.scalar(select(Workspace.insights_version).where(Workspace.team_id == index.team_id)) or 0
        new_rows = s.execute(
            select(
                FeedbackItem.id, FeedbackItem.created_at, FeedbackVector.vector, FeedbackVector.model_version
            )
            .join(FeedbackVector, FeedbackVector.feedback_id == FeedbackItem.id)
            .where(
                FeedbackVector.feedback_id > index._max_id - ID_LOOKBACK,
                FeedbackVector.team_id == index.team_id,
                FeedbackItem.deleted_at.is_(None),
            )
        ).all()
        deleted: list[int] = []
        if time.monotonic() >= index._deletions_check_due:
            checked_at = datetime.now(UTC)
            deleted = list(
                s.scalars(
                    select(FeedbackItem.id).where(
                        FeedbackItem.team_id == index.team_id,
                        FeedbackItem.deleted_at >= index._deletions_checked_at - timedelta(minutes=1),
                    )
                )
            )
            # Rows removed outright (retention, purge, forget) leave no deleted_at: compare counts.
            live = s.scalar(
                select(func.count())
                .select_from(FeedbackItem)
                .where(FeedbackItem.team_id == index.team_id, FeedbackItem.deleted_at.is_(None))
            )
            if (live or 0) < len(index) - len(deleted):
                known = set(index._row_of)
                deleted += list(
                    known.difference(
                        s.scalars(
                            select(FeedbackItem.id).where(
                                FeedbackItem.team_id == index.team_id, FeedbackItem.deleted_at.is_(None)
                            )
                        )
                    )
                )
            index._deletions_checked_at = checked_at
            index._deletions_check_due = time.monotonic() + DELETION_CHECK_SECONDS
    unseen = [r for r in new_rows if r.id not in index._row_of]
    stale = [r.id for r in unseen if r.model_version != index.model_version]
    fresh = _encode_and_store(db, index.team_id, index, stale) if stale else {}
    with index._lock:
        for r in unseen:
            vector = fresh.get(r.id)
            if vector is None:
                vector = np.frombuffer(r.vector, dtype=np.float32)
            index._put(r.id, vector, r.created_at.timestamp())
        for item_id in deleted:
            index.remove(item_id)
        if version != index.insights_version:
            _reload_memberships(db, index)
            index.insights_version = version
    return True


def _reload_memberships(db: Database, index: TeamIndex) -> None:
    with db.read() as s:
        active = list(
            s.scalars(
                select(Theme.id).where(
                    Theme.team_id == index.team_id, Theme.status == ThemeStatus.active.value
                )
            )
        )
        pairs = s.execute(
            select(FeedbackItem.id, FeedbackItem.theme_id).where(
                FeedbackItem.team_id == index.team_id,
                FeedbackItem.theme_id.in_(
                    select(Theme.id).where(
                        Theme.team_id == index.team_id, Theme.status == ThemeStatus.active.value
                    )
                ),
                FeedbackItem.deleted_at.is_(None),
            )
        ).all()
    with index._lock:
        index._set_memberships({int(i): int(t) for i, t in pairs if t is not None}, active)


def _wants_auto_refit(index: TeamIndex) -> bool:
    """A TF-IDF model fitted on few items is re-fitted once the corpus has doubled (cheap while small)."""
    if not index.fitted_on_corpus:
        return False  # stateless (embeddings): nothing learned from the corpus
    live = len(index)
    return live <= AUTO_REFIT_MAX_ITEMS and live >= 2 * index.fitted_items + 10


def _encode_and_store(
    db: Database, team_id: str, index: TeamIndex, item_ids: Sequence[int]
) -> dict[int, np.ndarray]:
    """Encodes items that lack a vector of the index's model and stores them; returns id -> vector."""
    with db.read() as s:
        texts = dict(
            s.execute(
                select(FeedbackItem.id, FeedbackItem.text).where(FeedbackItem.id.in_(list(item_ids)))
            ).all()
        )
        ids = [i for i in item_ids if i in texts]
        cleaned = index.model_texts(s, [texts[i] for i in ids])
    vectors = _encode_batched(index.encoder, cleaned)
    fresh = {i: vectors[n] for n, i in enumerate(ids)}
    with db.session() as s:
        _upsert_vectors(s, team_id, index.model_version, list(fresh.items()))
    return fresh


def _encode_batched(encoder: Encoder, texts: Sequence[str]) -> np.ndarray:
    parts = [encoder.encode(texts[i : i + ENCODE_BATCH]) for i in range(0, len(texts), ENCODE_BATCH)]
    return np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)


def _upsert_vectors(
    session: Session,
    team_id: str,
    version: int,
    vectors: Sequence[tuple[int, np.ndarray]],
    *,
    replace_all: bool = False,
) -> None:
    if replace_all:
        session.execute(delete(FeedbackVector).where(FeedbackVector.team_id == team_id))
    if not vectors:
        return
    ids = [item_id for item_id, _ in vectors]
    for start in range(0, len(ids) if not replace_all else 0, 1000):
        session.execute(
            delete(FeedbackVector).where(FeedbackVector.feedback_id.in_(ids[start : start + 1000]))
        )
    now = datetime.now(UTC)
    session.execute(
        insert(FeedbackVector),
        [
            {
                "feedback_id": item_id,
                "team_id": team_id,
                "model_version": version,
                "vector": np.asarray(vector, dtype=np.float32).tobytes(),
                "created_at": now,
            }
            for item_id, vector in vectors
        ],
    )


def refit(db: Database, team_id: str, *, settings: Settings | None = None) -> int:
    """Fits a new model on all live items, re-encodes them, stores SimilarityModel(version + 1) and the
    vectors in one transaction, and returns the new version."""
    settings = settings or get_settings()
    encoder = make_encoder(settings)
    with db.read() as s:
        rows = s.execute(
            select(FeedbackItem.id, FeedbackItem.text)
            .where(FeedbackItem.team_id == team_id, FeedbackItem.deleted_at.is_(None))
            .order_by(FeedbackItem.id)
        ).all()
        terms = model_text.workspace_terms(s, team_id)
    texts = [model_text.clean_for_model(r.text, terms) for r in rows]
    if encoder.needs_fit():
        encoder.fit(texts)
    vectors = _encode_batched(encoder, texts)
    with db.session() as s:
        version = (
            s.scalar(select(func.max(SimilarityModel.version)).where(SimilarityModel.team_id == team_id)) or 0
        ) + 1
        s.add(
            SimilarityModel(
                team_id=team_id,
                version=version,
                backend=encoder.name,
                state=encoder.dump_state(),
                item_count=len(rows),
            )
        )
        # Older fits are of no use once every vector is re-encoded (keep the previous one for a running reader).
        s.execute(
            delete(SimilarityModel).where(
                SimilarityModel.team_id == team_id, SimilarityModel.version < version - 1
            )
        )
        _upsert_vectors(
            s, team_id, version, [(r.id, vectors[i]) for i, r in enumerate(rows)], replace_all=True
        )
    forget_cached(db, team_id)
    return version
