"""Clustering feedback vectors into themes and naming them."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from bot.insights.clustering import cluster, distinctive_keywords, theme_name


def _planted(
    k: int = 5, per: int = 40, dim: int = 32, noise: float = 0.15, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, dim))
    truth = np.repeat(np.arange(k), per)
    points = centres[truth] + noise * rng.normal(size=(k * per, dim))
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    return points.astype(np.float32), truth


def test_recovers_planted_clusters_with_given_k() -> None:
    points, truth = _planted()
    labels = cluster(points, 5, seed=1)
    assert adjusted_rand_score(truth, labels) > 0.95
    assert set(labels.tolist()) == set(range(5))


def test_chooses_k_itself() -> None:
    points, truth = _planted(k=6)
    labels = cluster(points, seed=0)
    assert len(set(labels.tolist())) == 6
    assert adjusted_rand_score(truth, labels) > 0.95


def test_is_deterministic_for_a_seed() -> None:
    points, _ = _planted()
    np.testing.assert_array_equal(cluster(points, 5, seed=3), cluster(points, 5, seed=3))


def test_bad_input_gives_a_clear_result() -> None:
    assert cluster(np.zeros((0, 8), dtype=np.float32)).shape == (0,)
    assert cluster(np.ones((1, 8), dtype=np.float32)).tolist() == [0]
    same = np.tile(np.array([[0.6, 0.8]], dtype=np.float32), (10, 1))
    assert cluster(same, 4).tolist() == [0] * 10  # one distinct point: one cluster, not a crash
    assert cluster(same).tolist() == [0] * 10
    two = np.array([[1, 0], [1, 0], [0, 1]], dtype=np.float32)
    labels = cluster(two, 5)
    assert labels[0] == labels[1] != labels[2]
    with pytest.raises(ValueError, match="k must be"):
        cluster(two, 0)
    with pytest.raises(ValueError, match="2-D"):
        cluster(np.ones(4, dtype=np.float32))


def test_keywords_are_distinctive() -> None:
    texts = [
        "CSV export times out", "export to CSV fails for big reports", "CSV export is slow",
        "Okta SSO login", "single sign-on with Okta", "SSO via Okta please",
        "dark mode for the dashboard", "dashboard needs a dark mode", "dark theme on dashboard",
    ]  # fmt: skip
    labels = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2])
    keywords = distinctive_keywords(texts, labels, top=2)
    assert set(keywords) == {0, 1, 2}
    assert {"csv", "export"} & set(keywords[0]) and not {"okta", "dark"} & set(keywords[0])
    assert {"okta", "sso"} & set(keywords[1])
    assert {"dark", "dashboard", "dark mode"} & set(keywords[2])
    assert all(len(words) <= 2 for words in keywords.values())
    assert distinctive_keywords(["the", "a"], np.array([0, 1])) == {0: [], 1: []}
    with pytest.raises(ValueError, match="labels"):
        distinctive_keywords(texts, labels[:3])


def test_a_phrase_replaces_its_word_and_reporting_verbs_are_not_keywords() -> None:
    texts = [
        "Admins asked for bulk edit of records", "Bulk edit for user roles, asked again",
        "Please add bulk edit to the records table", "Customer asked: bulk edit the records",
        "Dark mode for the dashboard", "Dashboard in dark mode", "A dark dashboard at night",
    ]  # fmt: skip
    labels = np.array([0, 0, 0, 0, 1, 1, 1])
    words = distinctive_keywords(texts, labels)[0]
    assert "bulk edit" in words and "bulk" not in words and "edit" not in words
    assert not {"asked", "ask", "again"} & {w for k in words for w in k.split()}


def test_theme_name() -> None:
    assert theme_name(["card", "arrival", "delivery"]) == "Card · Arrival"  # two keywords name it
    # As people write them: acronyms and brand names keep their case; a sentence's first capital does not.
    texts = ["Okta SSO login loops", "SSO via Okta", "sso please", "The CSV export is slow", "Export CSV"]
    assert theme_name(["sso", "okta"], texts) == "SSO · Okta"
    assert theme_name(
        ["csv export"], ["CSV export is slow", "the csv export cuts columns", "CSV Export"]
    ) == ("CSV export")
    assert theme_name(["iphone"], ["My iPhone app", "iPhone crash", "iphone"]) == "iPhone"
    assert theme_name(["dark mode"], ["nothing matches"]) == "Dark mode"
    assert theme_name(["dark mode"]) == "Dark mode"
    assert theme_name([]) == "Unnamed theme"
    assert len(theme_name(["x" * 300])) <= 255


def test_large_inputs_go_through_a_sample(monkeypatch: pytest.MonkeyPatch) -> None:
    from bot.insights import clustering

    monkeypatch.setattr(clustering, "SPECTRAL_MAX_ITEMS", 300)
    monkeypatch.setattr(clustering, "SAMPLE_FOR_K", 250)
    points, truth = _planted(k=6, per=100)
    assert adjusted_rand_score(truth, cluster(points, seed=0)) > 0.95
    labels = cluster(points, 6, seed=0)
    assert len(set(labels.tolist())) == 6 and adjusted_rand_score(truth, labels) > 0.95
