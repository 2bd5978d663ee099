"""Grouping feedback vectors into themes, and naming each group by its distinctive keywords."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
from sklearn.cluster import KMeans
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, CountVectorizer
from sklearn.metrics import silhouette_score

# Words that say nothing about a theme in product feedback.
FEEDBACK_STOP_WORDS = frozenset(
    ENGLISH_STOP_WORDS
    | {"just", "like", "really", "want", "need", "needs", "would", "could", "please", "thanks", "hi", "hello"}
    | {"able", "way", "use", "using", "does", "did", "doesn", "don", "didn", "isn", "ve", "ll", "im", "it's"}
)


def cluster(vectors: np.ndarray, k: int | None = None, *, seed: int = 0) -> np.ndarray:
    """Cluster labels 0..k-1 for the rows of `vectors` (L2-normalised); k=None: choose k from the data."""
    vectors = np.asarray(vectors, dtype=np.float32)
    n = vectors.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if vectors.ndim != 2:
        raise ValueError(f"cluster() needs a 2-D array of vectors, got shape {vectors.shape}")
    distinct = _distinct_rows(vectors)
    if k is not None and k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if distinct <= 1:
        return np.zeros(n, dtype=np.int64)
    if k is None:
        k = choose_k(vectors, seed=seed)
    k = min(k, distinct)
    if k == 1:
        return np.zeros(n, dtype=np.int64)
    model = KMeans(n_clusters=k, n_init=10, random_state=seed)
    return _relabel(model.fit_predict(vectors))


def choose_k(vectors: np.ndarray, *, seed: int = 0) -> int:
    """The number of clusters with the best silhouette (cosine) over a coarse range, on a sample."""
    n = vectors.shape[0]
    distinct = _distinct_rows(vectors)
    if n < 4 or distinct < 3:
        return min(2, distinct)
    rng = np.random.default_rng(seed)
    sample = vectors if n <= 3000 else vectors[rng.choice(n, 3000, replace=False)]
    upper = max(2, min(distinct - 1, int(np.sqrt(n) * 2), 200))
    candidates = sorted(
        set(range(2, min(upper, 20) + 1)) | {int(round(x)) for x in np.geomspace(20, max(upper, 20), num=8)}
    )
    best_k, best = candidates[0], -2.0
    for candidate in candidates:
        if candidate >= sample.shape[0]:
            break
        labels = KMeans(n_clusters=candidate, n_init=3, random_state=seed).fit_predict(sample)
        if len(set(labels.tolist())) < 2:
            continue
        score = float(silhouette_score(sample, labels, metric="cosine"))
        if score > best:
            best_k, best = candidate, score
    return best_k


def _distinct_rows(vectors: np.ndarray) -> int:
    return int(np.unique(np.round(vectors, 5), axis=0).shape[0])


def _relabel(labels: np.ndarray) -> np.ndarray:
    """Labels renumbered 0..k-1 in order of first appearance (stable across equivalent runs)."""
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first))
    return order[inverse].astype(np.int64)


def distinctive_keywords(texts: Sequence[str], labels: np.ndarray, top: int = 3) -> dict[int, list[str]]:
    """For each cluster, the words (or two-word phrases) most particular to it (class-based TF-IDF)."""
    labels = np.asarray(labels)
    if len(texts) != len(labels):
        raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
    clusters = sorted({int(label) for label in labels.tolist() if label >= 0})
    result: dict[int, list[str]] = {c: [] for c in clusters}
    if not clusters:
        return result
    vectorizer = CountVectorizer(
        ngram_range=(1, 2),
        stop_words=sorted(FEEDBACK_STOP_WORDS),
        token_pattern=r"(?u)\b[a-zA-Z][a-zA-Z0-9]+\b",
        lowercase=True,
    )
    try:
        counts = vectorizer.fit_transform([t or "" for t in texts])
    except ValueError:  # only stop words / no letters anywhere
        return result
    terms = vectorizer.get_feature_names_out()
    # Per-class term frequencies, then c-TF-IDF: tf in the class × log(1 + mean class size / term total).
    class_index = {c: i for i, c in enumerate(clusters)}
    rows = np.array([class_index.get(int(label), -1) for label in labels.tolist()])
    keep = rows >= 0
    from scipy import sparse

    membership = sparse.csr_matrix(
        (np.ones(int(keep.sum())), (rows[keep], np.flatnonzero(keep))), shape=(len(clusters), len(texts))
    )
    per_class = np.asarray((membership @ counts).todense(), dtype=np.float64)
    # Document frequency inside the class counts more than raw repetition inside one text.
    presence = np.asarray((membership @ (counts > 0).astype(np.float64)).todense())
    sizes = np.asarray(membership.sum(axis=1)).ravel()
    tf = presence / np.maximum(sizes[:, None], 1)
    totals = per_class.sum(axis=0)
    mean_words = per_class.sum() / len(clusters)
    idf = np.log1p(mean_words / np.maximum(totals, 1))
    scores = tf * idf
    bigram = np.array([" " in t for t in terms])
    for c, i in class_index.items():
        chosen: list[str] = []
        covered: set[str] = set()
        for j in np.argsort(-scores[i]):
            if scores[i, j] <= 0 or len(chosen) >= top:
                break
            words = set(terms[j].split())
            if words <= covered:
                continue
            # A phrase is worth showing only when it is about as common in the class as its words.
            if bigram[j] and presence[i, j] < 0.5 * sizes[i]:
                continue
            if not bigram[j] and any(terms[j] in chosen_term.split() for chosen_term in chosen):
                continue
            chosen.append(str(terms[j]))
            covered |= words
        result[c] = chosen
    return result


def theme_name(keywords: Sequence[str]) -> str:
    """A readable generated name from keywords: ["card", "arrival"] -> "Card · Arrival"."""
    words = [re.sub(r"\s+", " ", k).strip() for k in keywords if k and k.strip()]
    if not words:
        return "Unnamed theme"
    return " · ".join(w[:1].upper() + w[1:] for w in words)[:255]
