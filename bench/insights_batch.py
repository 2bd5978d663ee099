"""Insights in batches: what a batch saves, with the embeddings backend.

1. The encoder alone: ms per item encoding one text at a time vs batches of 32 and 64.
2. `run_insight_batch` end to end on a fresh database (encode + vectors + theme + duplicate check + task
   bookkeeping, silent tasks so no Slack call is made): items/s and CPU ms per item for limit 1, 32, 64.

    .venv/bin/python bench/insights_batch.py [--items 256] [--database-url URL] [--backend embeddings]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from bot.insights.batch import InsightMode, enqueue_insights, run_insight_batch
from bot.insights.index import forget_cached, get_index
from bot.insights.similarity import make_encoder
from bot.settings import Settings
from bot.slack_client import TeamClients
from storage.db import Database
from storage.migrate import upgrade
from storage.models import FeedbackItem, Workspace

SUBJECTS = ["CSV export", "Okta login", "calendar sync", "the Android app", "bulk edit", "push notices",
            "the billing page", "search", "the API rate limit", "dark mode", "invoice PDFs", "webhooks"]  # fmt: skip
PROBLEMS = ["drops the last column", "times out for big teams", "shows the wrong time zone",
            "forgets the filter after a reload", "is too slow on Mondays", "fails with an error 500",
            "ignores the admin setting", "duplicates every entry"]  # fmt: skip


def feedback_texts(n: int) -> list[str]:
    """`n` distinct feedback-like texts of typical length."""
    return [
        f"Customer {i}: {SUBJECTS[i % len(SUBJECTS)]} {PROBLEMS[(i // len(SUBJECTS)) % len(PROBLEMS)]} "
        f"since the last release, and our {i % 7 + 2} teams depend on it every day"
        for i in range(n)
    ]


def bench_encoder(
    settings: Settings, texts: list[str], threads: int | None
) -> dict[int, tuple[float, float]]:
    """(wall, CPU) ms per item: one text at a time, then batches of 8, 32 and 64 (median of 3 rounds)."""
    encoder = make_encoder(settings)
    if encoder.needs_fit():
        encoder.fit(texts)
    _torch_threads(threads)
    encoder.encode(texts[:8])  # load and warm up
    results: dict[int, tuple[float, float]] = {}
    label = f"{threads} torch thread(s) for batches" if threads else "torch's default threads for batches"
    print(f"encoder {encoder.name}, {len(texts)} texts, {label}:")
    for size in (1, 8, 32, 64):
        rounds = []
        for _ in range(3):
            wall, cpu = time.perf_counter(), time.process_time()
            for i in range(0, len(texts), size):
                encoder.encode(texts[i : i + size])
            rounds.append(((time.perf_counter() - wall), (time.process_time() - cpu)))
        wall_ms = statistics.median(r[0] for r in rounds) * 1000 / len(texts)
        cpu_ms = statistics.median(r[1] for r in rounds) * 1000 / len(texts)
        results[size] = (wall_ms, cpu_ms)
        print(f"  batch of {size:>2}: {wall_ms:6.2f} ms wall, {cpu_ms:6.2f} ms CPU per item")
    return results


def _torch_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


def _fresh_database(url: str | None) -> tuple[str, tuple[Engine, str] | None]:
    if url is None or make_url(url).get_backend_name() == "sqlite":
        path = url or f"sqlite:///{Path(tempfile.mkdtemp()) / 'bench-insights.db'}"
        return path, None
    name = f"prodops_bench_{int(time.time())}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    return make_url(url).set(database=name).render_as_string(hide_password=False), (admin, name)


def bench_end_to_end(settings: Settings, texts: list[str], url: str | None) -> None:
    """run_insight_batch over queued items, for limit 1, 32 and 64 (a new workspace each)."""
    db_url, cleanup = _fresh_database(url)
    upgrade(db_url)
    db = Database(db_url)
    clients = TeamClients(token="xoxb-bench", base_url="http://127.0.0.1:9/")  # silent tasks call nothing
    print(f"run_insight_batch end to end ({db.backend}), {len(texts)} items per run")
    try:
        for limit in (1, 32, 64):
            team = f"TBENCH{limit}"
            with db.session() as s:
                s.add(Workspace(team_id=team))
                s.add(FeedbackItem(team_id=team, channel_id="C1", text="warm-up", source="command",
                                   captured_by_user_id="U1"))  # fmt: skip
            get_index(db, team, settings=settings)  # fit / load outside the timing
            with db.session() as s:
                for body in texts:
                    item = FeedbackItem(team_id=team, channel_id="C1", text=body, source="command",
                                        captured_by_user_id="U1", visibility="public")  # fmt: skip
                    s.add(item)
                    s.flush()
                    enqueue_insights(db_session=s, team_id=team, item_id=item.id, mode=InsightMode.silent)
            wall, cpu = time.perf_counter(), time.process_time()
            done = 0
            while done < len(texts):
                finished = run_insight_batch(db=db, clients=clients, settings=settings, limit=limit)
                if not finished:
                    break
                done += finished
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            print(
                f"  limit {limit:>2}: {done} items in {wall:.2f} s = {done / wall:.0f} items/s, "
                f"{cpu * 1000 / max(done, 1):.1f} ms CPU per item"
            )
            forget_cached(db, team)
    finally:
        db.dispose()
        if cleanup is not None:
            admin, name = cleanup
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=int, default=256)
    parser.add_argument("--backend", default="embeddings", choices=["embeddings", "tfidf"])
    parser.add_argument("--database-url", default=None, help="SQLite URL, or a Postgres server URL")
    parser.add_argument("--skip-end-to-end", action="store_true")
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=None,
        help="torch threads for batches (default: torch's, = cores)",
    )
    args = parser.parse_args(argv)
    settings = Settings(PRODOPS_SIMILARITY_BACKEND=args.backend)
    texts = feedback_texts(args.items)
    bench_encoder(settings, texts, args.torch_threads)
    if not args.skip_end_to_end:
        bench_end_to_end(settings, texts, args.database_url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
