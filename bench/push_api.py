"""Push-API throughput and period-summary speed.

    .venv/bin/python bench/push_api.py                  # ~40-60 s on SQLite
    .venv/bin/python bench/push_api.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres

1. Starts the real server (`prodops serve`, pointed at the Slack emulator) and asks it for
   `GET /api/v1/metrics`. When the push API is mounted there (a 401 JSON answer without a token), the
   bench uses it. Otherwise it serves `MetricsAPI` alone with the same gunicorn configuration
   (`bot.server.GunicornServer`: gthread, WEB_CONCURRENCY workers × PRODOPS_WEB_THREADS threads, keep-alive)
   and says so in the table.
2. POSTs to `/api/v1/metrics/KEY/points` over keep-alive `http.client` connections from N client threads
   (default 8): batches of 1 point, then batches of 1,000, each for --duration seconds. Every point has its
   own ts, so the count in the database must equal the points accepted.
3. Inserts 200 metrics × 730 daily points, then times `summarise` by week and by month for all 200.

Timings are printed, never asserted; the exit status is 1 only when something is broken (a non-200 answer,
a transport error, or a point count that does not add up).
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

from bot.devkit.emulator import SlackEmulator
from bot.devkit.server_process import ServerProcess, free_port
from bot.metrics.api import MetricsAPI
from bot.metrics.points import Point, summarise, upsert_points
from bot.metrics.registry import MetricSpec, upsert_metrics
from bot.metrics.tokens import create_token
from bot.server import GunicornServer
from bot.settings import Settings, load_settings
from storage.db import Database
from storage.migrate import upgrade
from storage.models import Metric, MetricPoint

REPO = Path(__file__).resolve().parent.parent
SIGNING_SECRET = "bench-signing-secret-0123456789abcdef"
TEAM = "T0PRODOPS"  # the emulator's workspace
PUSH_KEY = "bench_push"
SUMMARY_METRICS = 200
SUMMARY_DAYS = 730
StartResponse = Callable[..., Any]


# ---- the fallback server: MetricsAPI alone, served like ProdOps --------------------------------------


class PushOnlyWSGI:
    """MetricsAPI plus GET /healthz (so ServerProcess can wait for it); anything else is 404."""

    def __init__(self, db: Database) -> None:
        self.api = MetricsAPI(db)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = str(environ.get("PATH_INFO") or "")
        if path == "/healthz":
            start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
            return [b"ok"]
        if MetricsAPI.handles(path):
            return self.api(environ, start_response)
        start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "9")])
        return [b"not found"]


class PushOnlyServer(GunicornServer):
    """ProdOps' gunicorn configuration, serving only the push API."""

    def load_config(self) -> None:
        super().load_config()
        self.cfg.set("proc_name", "prodops-bench-push")

    def load(self) -> PushOnlyWSGI:  # type: ignore[override]
        return PushOnlyWSGI(Database(self.settings.database_url))


class BenchDatabase:
    """A fresh SQLite file, or a fresh Postgres database `prodops_bench_*` on the given server (dropped after)."""

    def __init__(self, requested: str | None, tmp: Path) -> None:
        self.admin_url: str | None = None
        self.name: str | None = None
        if requested is None:
            self.url = f"sqlite:///{tmp / 'prodops-push-bench.db'}"
            return
        parsed = make_url(requested)
        if parsed.get_backend_name() != "postgresql":
            self.url = requested
            return
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        self.admin_url = parsed.render_as_string(hide_password=False)
        self.name = f"prodops_bench_{uuid.uuid4().hex[:10]}"
        admin = create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{self.name}"'))
        admin.dispose()
        self.url = parsed.set(database=self.name).render_as_string(hide_password=False)

    def drop(self) -> None:
        if self.admin_url and self.name:
            admin = create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
            admin.dispose()


# ---- load -------------------------------------------------------------------------------------------


@dataclass
class Run:
    """What the client threads saw."""

    requests: int = 0
    points: int = 0
    failures: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    seconds: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)


def _client(port: int, token: str, batch: int, client_no: int, stop_at: float, run: Run) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    base = (
        1_500_000_000 + (0 if batch == 1 else 400_000_000) + client_no * 40_000_000
    )  # distinct ts per client, run
    sent = 0
    latencies: list[float] = []
    failures: list[str] = []
    while time.monotonic() < stop_at:
        body = json.dumps([{"ts": base + sent + i, "value": (sent + i) % 97} for i in range(batch)])
        started = time.perf_counter()
        try:
            conn.request("POST", f"/api/v1/metrics/{PUSH_KEY}/points", body=body, headers=headers)
            response = conn.getresponse()
            payload = response.read()
        except (OSError, http.client.HTTPException) as exc:
            failures.append(f"{exc.__class__.__name__}: {exc}")
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            continue
        latencies.append(time.perf_counter() - started)
        if response.status != 200:
            failures.append(f"{response.status}: {payload[:200]!r}")
            continue
        sent += batch
    conn.close()
    with run.lock:
        run.requests += len(latencies)
        run.points += sent
        run.latencies += latencies
        run.failures += failures


def load(port: int, token: str, *, batch: int, clients: int, duration: float) -> Run:
    """N keep-alive clients POSTing batches for `duration` seconds."""
    run = Run()
    stop_at = time.monotonic() + duration
    threads = [
        threading.Thread(target=_client, args=(port, token, batch, n, stop_at, run), daemon=True)
        for n in range(clients)
    ]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    run.seconds = time.perf_counter() - started
    return run


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# ---- setup and summaries ----------------------------------------------------------------------------


def _spec(key: str, *, summary: str = "sum") -> MetricSpec:
    return MetricSpec.model_validate(
        {
            "key": key,
            "name": key.replace("_", " ").title(),
            "unit": "count",
            "summary": summary,
            "source": "push",
        }
    )


def prepare(db: Database) -> str:
    """The push metric and a token for it; returns the token."""
    with db.session() as s:
        upsert_metrics(db_session=s, team_id=TEAM, specs=[_spec(PUSH_KEY)])
        _, plaintext = create_token(db_session=s, team_id=TEAM, name="bench")
    return plaintext


def summaries(db: Database) -> tuple[float, float, int]:
    """Inserts 200 metrics × 730 daily points; returns (insert seconds, summarise seconds, periods)."""
    kinds = ("sum", "avg", "last", "max", "min")
    specs = [_spec(f"summary_{i:03d}", summary=kinds[i % len(kinds)]) for i in range(SUMMARY_METRICS)]
    with db.session() as s:
        upsert_metrics(db_session=s, team_id=TEAM, specs=specs)
        ids: dict[str, int] = dict(
            s.execute(select(Metric.key, Metric.id).where(Metric.key.like("summary_%"))).all()
        )
    start = datetime(2024, 11, 4, tzinfo=UTC)
    started = time.perf_counter()
    for n, spec in enumerate(specs):
        points = [Point(start + timedelta(days=d), float((d * 7 + n) % 113)) for d in range(SUMMARY_DAYS)]
        with db.session() as s:
            upsert_points(db_session=s, team_id=TEAM, metric_id=ids[spec.key], points=points)
    inserted = time.perf_counter() - started
    periods = 0
    started = time.perf_counter()
    with db.read() as s:
        for spec in specs:
            for period in ("week", "month"):
                periods += len(
                    summarise(
                        db_session=s,
                        team_id=TEAM,
                        metric_id=ids[spec.key],
                        period=period,
                        summary=spec.summary,
                    )
                )
    return inserted, time.perf_counter() - started, periods


# ---- main -------------------------------------------------------------------------------------------


def _mounted(server: ServerProcess) -> bool:
    """The push API answers on the real server: GET /api/v1/metrics without a token is a 401 JSON error."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        conn.request("GET", "/api/v1/metrics")
        response = conn.getresponse()
        body = response.read()
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()
    try:
        return response.status == 401 and "error" in json.loads(body)
    except ValueError:
        return False


def serve(argv: list[str]) -> None:
    """`python -m bench.push_api --serve --bind HOST:PORT`: the fallback server."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--serve", action="store_true")
    parser.add_argument("--bind", required=True)
    args = parser.parse_args(argv)
    PushOnlyServer(load_settings(), args.bind).run()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--serve" in argv:
        serve(argv)
        return 0
    parser = argparse.ArgumentParser(description="Push-API throughput and period-summary speed.")
    parser.add_argument(
        "--database-url", help="a SQLite URL, or a Postgres server URL (a fresh database is made)"
    )
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per load run (default 8)")
    parser.add_argument("--clients", type=int, default=8, help="keep-alive client connections (default 8)")
    args = parser.parse_args(argv)
    console = Console(width=130)
    total_started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="prodops-push-bench-") as tmp:
        database = BenchDatabase(args.database_url, Path(tmp))
        emulator = SlackEmulator().start()
        server: ServerProcess | None = None
        try:
            upgrade(database.url)
            db = Database(database.url)
            token = prepare(db)
            env = {
                "SLACK_BOT_TOKEN": emulator.bot_token,
                "SLACK_SIGNING_SECRET": SIGNING_SECRET,
                "SLACK_API_URL": emulator.url,
                "SLACK_APP_TOKEN": "",
                "DATABASE_URL": database.url,
                "PRODOPS_LOG_LEVEL": "WARNING",
            }
            log = Path(tmp) / "server.log"
            server = ServerProcess(env, log_path=log, cwd=REPO).start()
            where = "prodops serve (mounted)"
            if not _mounted(server):
                server.stop()
                port = free_port()
                command = [sys.executable, "-m", "bench.push_api", "--serve", "--bind", f"127.0.0.1:{port}"]
                server = ServerProcess(env, port=port, command=command, log_path=log, cwd=REPO).start()
                where = "MetricsAPI alone (not mounted in prodops serve yet)"
            runs = {
                batch: load(server.port, token, batch=batch, clients=args.clients, duration=args.duration)
                for batch in (1, 1000)
            }
            server.stop()
            with db.read() as s:
                stored = s.scalar(select(func.count()).select_from(MetricPoint)) or 0
            inserted, summarised, periods = summaries(db)
            db.dispose()
        finally:
            if server is not None:
                server.stop()
            emulator.stop()
            database.drop()
    settings = Settings.model_validate({"DATABASE_URL": database.url})
    table = Table(title=f"Push API — {database.url.split(':')[0]}, {where}")
    for column in ("run", "requests", "points", "points/s", "requests/s", "p50 ms", "p99 ms", "errors"):
        table.add_column(column, justify="right" if column != "run" else "left")
    broken = False
    for batch, run in runs.items():
        broken |= bool(run.failures)
        table.add_row(
            f"batch of {batch:,} × {args.clients} clients",
            f"{run.requests:,}",
            f"{run.points:,}",
            f"{run.points / run.seconds:,.0f}",
            f"{run.requests / run.seconds:,.0f}",
            f"{_percentile(run.latencies, 0.5) * 1000:.1f}",
            f"{_percentile(run.latencies, 0.99) * 1000:.1f}",
            str(len(run.failures)),
        )
    accepted = sum(run.points for run in runs.values())
    console.print(table)
    summary = Table(title=f"summarise: {SUMMARY_METRICS} metrics × {SUMMARY_DAYS} daily points")
    summary.add_column("step")
    summary.add_column("seconds", justify="right")
    summary.add_row(
        f"insert {SUMMARY_METRICS * SUMMARY_DAYS:,} points (upsert_points, one commit per metric)",
        f"{inserted:.2f}",
    )
    summary.add_row(
        f"summarise week + month for all {SUMMARY_METRICS} ({periods:,} periods)", f"{summarised:.2f}"
    )
    console.print(summary)
    console.print(
        f"server: gthread, {settings.effective_web_concurrency} worker(s) × {settings.web_threads} threads · "
        f"points stored {stored:,} / accepted {accepted:,} · total {time.perf_counter() - total_started:.0f} s"
    )
    for run in runs.values():
        for failure in run.failures[:5]:
            console.print(f"[red]failure:[/] {failure}", markup=True)
    if stored != accepted:
        console.print(f"[red]point count mismatch: {stored:,} stored, {accepted:,} accepted[/]")
        broken = True
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
