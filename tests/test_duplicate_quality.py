"""Duplicate suggestion quality on a labelled set of B2B SaaS feedback pairs (tests/data/duplicates_labelled.csv).

The set has paraphrased duplicates (the same request in other words) and hard negatives (the same topic,
a different request). A pair's score is the duplicate model's likelihood (bot/insights/duplicates.py) from
the cosine of the two cleaned texts, their word overlap and cue phrases, as for a lone candidate; the bands
are the backend's defaults. The model and bands were fitted on feedback_dev's TRAIN split (bench/insights.py),
so this set is a second, independent check. Floors are a little under what was measured.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from bot.insights import duplicates
from bot.insights.similarity import EmbeddingEncoder, Encoder, TfidfEncoder, embeddings_available
from bot.insights.text import clean_for_model

DATA = Path(__file__).parent / "data" / "duplicates_labelled.csv"


def _pairs() -> tuple[list[str], list[str], np.ndarray]:
    with open(DATA, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return (
        [r["text_a"] for r in rows],
        [r["text_b"] for r in rows],
        np.array([int(r["duplicate"]) for r in rows]),
    )


def _likelihoods(encoder: Encoder, a: list[str], b: list[str]) -> np.ndarray:
    """The duplicate model's likelihood for each pair (a lone candidate: no other to stand out from)."""
    backend = "tfidf" if encoder.name == "tfidf" else "embeddings"
    ca, cb = [clean_for_model(t) for t in a], [clean_for_model(t) for t in b]
    cosines = (encoder.encode(ca) * encoder.encode(cb)).sum(axis=1)
    result = []
    for x, y, cosine in zip(a, b, cosines, strict=True):
        features = duplicates.pair_features(
            cosine=float(cosine),
            margin=min(max(float(cosine), 0.0), duplicates.MARGIN_CAP),
            words=duplicates.content_words(clean_for_model(x)),
            candidate_words=duplicates.content_words(clean_for_model(y)),
            cue=duplicates.has_cue(x),
            same_account=False,
        )
        result.append(duplicates.likelihood(features, backend))
    return np.array(result)


def _precision_recall(encoder: Encoder, threshold: float) -> tuple[float, float, int]:
    a, b, truth = _pairs()
    scores = _likelihoods(encoder, a, b)
    predicted = scores >= threshold
    hits = int((predicted & (truth == 1)).sum())
    return hits / max(int(predicted.sum()), 1), hits / int(truth.sum()), int(predicted.sum())


def test_the_labelled_set_is_big_and_balanced_enough() -> None:
    a, b, truth = _pairs()
    assert len(truth) >= 150 and 0.4 < truth.mean() < 0.7
    assert all(x.strip() and y.strip() and x != y for x, y in zip(a, b, strict=True))
    assert len({(x, y) for x, y in zip(a, b, strict=True)}) == len(truth)  # no pair twice


def test_tfidf_thresholds_on_a_small_workspace() -> None:
    a, b, _ = _pairs()
    encoder = TfidfEncoder()
    encoder.fit(sorted(set(a + b)))
    assert not encoder.uses_lsa
    link_p, link_r, linked = _precision_recall(encoder, encoder.link_threshold)
    ask_p, ask_r, _ = _precision_recall(encoder, encoder.ask_threshold)
    # Measured: no link (TF-IDF links only a near-exact repeat: no band below 1.0 reached 0.95 precision on
    # TRAIN), link or ask 0.70 / 0.76 (111 pairs asked about).
    assert linked == 0 or link_p >= 0.95
    assert ask_p >= 0.65 and ask_r >= 0.70


def test_identical_and_unrelated_texts_land_in_the_right_bands() -> None:
    a, b, _ = _pairs()
    encoder = TfidfEncoder()
    encoder.fit(sorted(set(a + b)))
    text = "Export to CSV times out for large reports"
    scores = _likelihoods(encoder, [text, text], [text, "Translate the app into German"])
    assert scores[0] >= encoder.link_threshold and scores[1] < encoder.ask_threshold


@pytest.mark.skipif(
    not embeddings_available(), reason="the `embeddings` extra is not installed (pip install '.[embeddings]')"
)
def test_embeddings_thresholds() -> None:
    encoder = EmbeddingEncoder()
    link_p, link_r, _ = _precision_recall(encoder, encoder.link_threshold)
    ask_p, ask_r, _ = _precision_recall(encoder, encoder.ask_threshold)
    # Measured: link 1.00 / 0.02 (2 pairs: precision first), link or ask 0.93 / 0.56.
    assert link_p >= 0.95 and link_r > 0
    assert ask_p >= 0.88 and ask_r >= 0.50
