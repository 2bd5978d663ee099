"""Grouping feedback vectors into themes, and naming each group by its distinctive keywords."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

import numpy as np
from scipy import sparse
from scipy.linalg import eigh, qr, svd
from sklearn.cluster import KMeans
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, CountVectorizer
from sklearn.metrics import silhouette_score

# Words that say nothing about a theme in product feedback.
FEEDBACK_STOP_WORDS = frozenset(
    ENGLISH_STOP_WORDS
    | {"just", "like", "really", "want", "need", "needs", "would", "could", "please", "thanks", "hi", "hello"}
    | {"able", "way", "use", "using", "does", "did", "doesn", "don", "didn", "isn", "ve", "ll", "im", "it's"}
    # How people report feedback, not what it is about ("customer asked again…").
    | {"ask", "asks", "asked", "asking", "wants", "wanted", "says", "said", "told", "again"}
    # Words any report may hold, whatever it is about ("today the new page is still broken for them").
    | {"today", "yesterday", "week", "weeks", "day", "days", "month", "months", "time", "times", "thing"}
    | {"things", "stuff", "issue", "issues", "problem", "problems", "bug", "bugs", "feedback", "customer"}
    | {"customers", "client", "clients", "people", "someone", "got", "get", "gets", "getting", "make"}
    | {"makes", "keep", "keeps", "think", "know", "see", "seeing", "tried", "try", "still", "also", "even"}
    | {"happy", "new", "heads", "basically", "actually", "literally", "right", "fine", "thanks", "thank"}
    | {"ok", "okay", "yes", "yeah", "lot", "lots", "bit", "big", "real", "works", "work", "working"}
    | {"sees", "runs", "run", "add", "added", "adds", "pay", "paying", "shows", "show", "showing", "go"}
    | {"goes", "going", "come", "comes", "set", "sets", "put", "looks", "look", "take", "takes", "give"}
    | {"happen", "happens", "happened", "start", "started", "starts", "thinks", "feel", "feels", "means"}
)


# Spectral clustering on a k-nearest-neighbour graph up to this many items (it needs an n×n similarity
# matrix and a dense eigensolver); above it, KMeans on the vectors with k chosen on a sample.
SPECTRAL_MAX_ITEMS = 4000
SPECTRAL_MIN_ITEMS = 40
NEIGHBOURS = 10  # graph degree; 10–15 did best on BANKING77 train (see bench/themes.py)
MODULARITY_RESOLUTION = 2.0  # choosing k: modularity with this resolution (tuned on BANKING77 train)
SAMPLE_FOR_K = 3000
NAME_KEYWORDS = 2
LARGE_MAX_ITER = 20


def cluster(vectors: np.ndarray, k: int | None = None, *, seed: int = 0) -> np.ndarray:
    """Cluster labels 0..k-1 for the rows of `vectors` (L2-normalised); k=None: choose k from the data.

    Up to SPECTRAL_MAX_ITEMS rows: spectral clustering of the mutual-similarity kNN graph (normalised
    adjacency eigenvectors, then KMeans on them), k chosen by graph modularity. Above: the same on a
    sample, extended to all rows by KMeans started from the sample's cluster centroids.
    Fewer distinct rows than k gives fewer clusters; no rows gives no labels.
    """
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2:
        raise ValueError(f"cluster() needs a 2-D array of vectors, got shape {vectors.shape}")
    if k is not None and k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    n = vectors.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    distinct = _distinct_rows(vectors)
    if distinct <= 1 or k == 1:
        return np.zeros(n, dtype=np.int64)
    if n < SPECTRAL_MIN_ITEMS:
        k = min(k or choose_k_silhouette(vectors, seed=seed), distinct)
        return _kmeans(vectors, k, seed=seed, n_init=10)
    if n <= SPECTRAL_MAX_ITEMS:
        return _spectral(vectors, k, distinct, seed=seed)
    # Large: spectral clustering of a sample finds the groups (and k); KMeans started from their centroids
    # extends them to every item in a few passes.
    rng = np.random.default_rng(seed)
    sample = vectors[rng.choice(n, SAMPLE_FOR_K, replace=False)]
    sample_labels = _spectral(
        sample, None if k is None else min(k, distinct), _distinct_rows(sample), seed=seed
    )
    centroids = np.stack(
        [sample[sample_labels == c].mean(axis=0) for c in range(int(sample_labels.max()) + 1)]
    )
    model = KMeans(
        n_clusters=centroids.shape[0], init=centroids, n_init=1, max_iter=LARGE_MAX_ITER, random_state=seed
    )
    return _relabel(model.fit_predict(vectors))


def _kmeans(vectors: np.ndarray, k: int, *, seed: int, n_init: int) -> np.ndarray:
    if k <= 1:
        return np.zeros(vectors.shape[0], dtype=np.int64)
    model = KMeans(n_clusters=k, n_init=n_init, random_state=seed, max_iter=100)
    return _relabel(model.fit_predict(vectors))


def _knn_graph(vectors: np.ndarray, neighbours: int) -> sparse.csr_matrix:
    """Symmetric kNN graph by cosine similarity: weight 1 for a mutual pair, 0.5 for a one-way one."""
    n = vectors.shape[0]
    similarity = vectors @ vectors.T
    np.fill_diagonal(similarity, -np.inf)
    nearest = np.argpartition(-similarity, neighbours, axis=1)[:, :neighbours]
    del similarity
    rows = np.repeat(np.arange(n), neighbours)
    graph = sparse.csr_matrix((np.ones(n * neighbours), (rows, nearest.ravel())), shape=(n, n))
    return ((graph + graph.T) * 0.5).tocsr()


def _spectral(vectors: np.ndarray, k: int | None, distinct: int, *, seed: int) -> np.ndarray:
    n = vectors.shape[0]
    graph = _knn_graph(vectors, min(NEIGHBOURS, n - 1))
    degree = np.asarray(graph.sum(axis=1)).ravel()
    scale = 1.0 / np.sqrt(degree)
    adjacency = (sparse.diags(scale) @ graph @ sparse.diags(scale)).toarray()
    most = max(2, min(distinct, n - 1, k if k is not None else int(2.5 * np.sqrt(n)) + 2))
    values, vectors_ = eigh(adjacency, subset_by_index=[n - most, n - 1], driver="evr")
    del adjacency
    embedding = vectors_[:, ::-1] * scale[:, None]  # largest eigenvalues first
    if k is None:
        k = _best_k_by_modularity(graph, degree, embedding)
    # KMeans on the row-normalised spectral embedding: +0.5 NMI / +1 ACC over QR labels on BANKING77 train.
    chosen = embedding[:, : min(k, most)]
    norms = np.linalg.norm(chosen, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return _kmeans((chosen / norms).astype(np.float32), min(k, most), seed=seed, n_init=5)


def _best_k_by_modularity(graph: sparse.csr_matrix, degree: np.ndarray, embedding: np.ndarray) -> int:
    """The k whose (fast, QR) spectral partition has the highest modularity."""
    most = embedding.shape[1]
    best: tuple[float, int] | None = None
    step = max(1, most // 40)
    for candidate in range(2, most + 1, step):
        labels = _cluster_qr(embedding[:, :candidate])
        quality = _modularity(graph, labels, degree)
        if best is None or quality > best[0]:
            best = (quality, len(set(labels.tolist())))
    assert best is not None
    return best[1]


def _cluster_qr(embedding: np.ndarray) -> np.ndarray:
    """Labels from spectral vectors by column-pivoted QR (Damle, Minden & Ying 2019): no random restarts."""
    k = embedding.shape[1]
    _, _, pivots = qr(embedding.T, pivoting=True, mode="economic")
    u, _, vt = svd(embedding[pivots[:k], :].T)
    return np.abs(embedding @ (u @ vt.conj())).argmax(axis=1)


def _modularity(graph: sparse.csr_matrix, labels: np.ndarray, degree: np.ndarray) -> float:
    """Newman modularity of a partition, with MODULARITY_RESOLUTION (above 1 favours smaller clusters)."""
    total = degree.sum()
    onehot = sparse.csr_matrix((np.ones(len(labels)), (labels, np.arange(len(labels)))))
    inside = float((onehot @ graph @ onehot.T).diagonal().sum())
    by_cluster = onehot @ degree
    return inside / total - MODULARITY_RESOLUTION * float((by_cluster**2).sum()) / total**2


def choose_k_silhouette(vectors: np.ndarray, *, seed: int = 0) -> int:
    """For a handful of items: the number of clusters with the best (cosine) silhouette."""
    n = vectors.shape[0]
    distinct = _distinct_rows(vectors)
    if n < 4 or distinct < 3:
        return min(2, distinct)
    best_k, best = 2, -2.0
    for candidate in range(2, min(distinct - 1, n - 1, 20) + 1):
        labels = KMeans(n_clusters=candidate, n_init=3, random_state=seed).fit_predict(vectors)
        if len(set(labels.tolist())) < 2:
            continue
        score = float(silhouette_score(vectors, labels, metric="cosine"))
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
            if words <= covered or {_stem(w) for w in words} <= {_stem(w) for w in covered}:
                continue
            # A phrase is worth showing only when it is about as common in the class as its words.
            if bigram[j] and presence[i, j] < 0.5 * sizes[i]:
                continue
            if not bigram[j] and any(terms[j] in chosen_term.split() for chosen_term in chosen):
                continue
            inside = [k for k, term in enumerate(chosen) if " " not in term and term in words]
            if bigram[j] and words & covered and not inside:  # "bulk edit" then "edit records": enough
                continue
            if bigram[j] and inside:  # "bulk" then "bulk edit": the phrase replaces its word
                chosen[inside[0]] = str(terms[j])
            else:
                chosen.append(str(terms[j]))
            covered |= words
        result[c] = chosen
    return result


def _stem(word: str) -> str:
    """A crude stem, so "email" and "emails" are one keyword."""
    for suffix in ("ing", "ed", "es", "s"):
        if len(word) > len(suffix) + 2 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def theme_name(keywords: Sequence[str], texts: Sequence[str] = ()) -> str:
    """A readable generated name from the first NAME_KEYWORDS keywords: ["card", "arrival"] -> "Card · Arrival"
    (a third keyword is more often noise than meaning; all of them stay on the theme).

    With the cluster's `texts`, each keyword is written as people wrote it most often ("sso" -> "SSO",
    "csv export" -> "CSV export"); otherwise, and for words written in lower case, it is capitalised."""
    words = [re.sub(r"\s+", " ", k).strip() for k in keywords if k and k.strip()][:NAME_KEYWORDS]
    if not words:
        return "Unnamed theme"
    shown = [_as_written(word, texts) for word in words]
    return " · ".join(w if w != w.lower() else w[:1].upper() + w[1:] for w in shown)[:255]


def _as_written(keyword: str, texts: Sequence[str]) -> str:
    """`keyword` spelt as people wrote it in `texts`, word by word: each word's most common form, ties going
    to all capitals ("SSO"), then lower case (a capital that only starts a sentence does not count)."""
    parts = keyword.split()
    pattern = re.compile(r"\b" + r"\s+".join(re.escape(part) for part in parts) + r"\b", re.IGNORECASE)
    forms: list[Counter[str]] = [Counter() for _ in parts]
    for text in texts:
        for match in pattern.findall(text or ""):
            for counter, form in zip(forms, match.split(), strict=False):
                counter[form] += 1
    if not forms or not forms[0]:
        return keyword

    def rank(item: tuple[str, int]) -> tuple[int, int, str]:
        form, count = item
        style = 0 if form.isupper() and len(form) > 1 else 1 if form == form.lower() else 2
        return (-count, style, form)

    return " ".join(min(counter.items(), key=rank)[0] for counter in forms)
