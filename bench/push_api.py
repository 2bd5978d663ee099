"""Push-API throughput and period-summary speed, each against baselines measured in the same run.

    .venv/bin/python bench/push_api.py                  # ~40 s on SQLite, ~50 s on Postgres
    .venv/bin/python bench/push_api.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres

1. Starts the real server (`prodops serve`, pointed at the Slack emulator) and asks it for
   `GET /api/v1/metrics`. When the push API is mounted there (a 401 JSON answer without a token), the
   bench uses it. Otherwise it serves `MetricsAPI` alone with the same gunicorn configuration
   (`bot.server.GunicornServer`: gthread, WEB_CONCURRENCY workers × PRODOPS_WEB_THREADS threads, keep-alive)
   and says so in the table.
2. Starts the **HTTP-only baseline**, `BaselineWSGI`, behind that same gunicorn configuration: it reads the
   body, parses the JSON and answers 200 `{"accepted": n, "metric": key}` — no token check, no validation,
   no database.
3. For batches of 1 point, then of 1,000, each for --duration seconds, runs three loads in turn:
   - **HTTP baseline** and **ProdOps**: N client threads (default 8) POSTing to `/api/v1/metrics/KEY/points`
     over keep-alive `http.client` connections;
   - **DB only**: N threads calling `bot.metrics.points.upsert_points` with the same batches directly, one
     transaction each (no HTTP, no auth, no JSON), split over as many processes as the server has workers
     (1 on SQLite, 2 on Postgres), into a metric of its own. This is the database's ceiling.
   Every point has its own ts, so the points in the database must equal the points accepted / written.
4. Inserts 200 metrics × 730 daily points, then times `summarise` by week and by month for all 200 (SQL)
   against the baseline of loading all 146,000 points with `points_between` and aggregating them in Python,
   three rounds each, alternating; prints the medians. Both must give the same periods and values.

Timings are printed, never asserted (ratios matter, not absolute times: machines are shared and noisy); the
exit status is 1 only when something is broken (a non-200 answer, a transport or database error, an
answer that does not accept the whole batch, a point count that does not add up, or a Python summary that
differs from SQL's).
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import multiprocessing
import re
import statistics
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
from sqlalchemy.exc import SQLAlchemyError

from bot.devkit.emulator import SlackEmulator
from bot.devkit.server_process import ServerProcess, free_port
from bot.metrics.api import MetricsAPI
from bot.metrics.points import PeriodValue, Point, points_between, summarise, upsert_points
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
DB_KEY = "bench_db_only"  # the DB-only baseline writes here, so each metric's count can be checked
SUMMARY_METRICS = 200
SUMMARY_DAYS = 730
SUMMARY_ROUNDS = 3
BATCHES = (1, 1000)
StartResponse = Callable[..., Any]


# ---- the servers: MetricsAPI alone (fallback) and the HTTP-only baseline, both served like ProdOps ----


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


_BASELINE_PATH = re.compile(r"^/api/v1/metrics/([^/]{1,100})/points/?$")


class BaselineWSGI:
    """The least a push endpoint can do: read the body, parse the JSON, answer 200 {"accepted": n}.

    No token check, no validation of the points, no database. GET /healthz answers too."""

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = str(environ.get("PATH_INFO") or "")
        if path == "/healthz":
            start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
            return [b"ok"]
        match = _BASELINE_PATH.match(path)
        if match is None or environ.get("REQUEST_METHOD") != "POST":
            start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "9")])
            return [b"not found"]
        length = int(environ.get("CONTENT_LENGTH") or 0)
        document = json.loads(environ["wsgi.input"].read(length)) if length else None
        accepted = len(document) if isinstance(document, list) else 1
        body = json.dumps({"accepted": accepted, "metric": match.group(1)}).encode("utf-8")
        start_response(
            "200 OK",
            [("Content-Type", "application/json; charset=utf-8"), ("Content-Length", str(len(body)))],
        )
        return [body]


class PushOnlyServer(GunicornServer):
    """ProdOps' gunicorn configuration, serving only the push API."""

    def load_config(self) -> None:
        super().load_config()
        self.cfg.set("proc_name", "prodops-bench-push")

    def load(self) -> PushOnlyWSGI:  # type: ignore[override]
        return PushOnlyWSGI(Database(self.settings.database_url))


class BaselineServer(GunicornServer):
    """ProdOps' gunicorn configuration (same workers, threads, keep-alive), serving `BaselineWSGI`."""

    def load_config(self) -> None:
        super().load_config()
        self.cfg.set("proc_name", "prodops-bench-baseline")

    def load(self) -> BaselineWSGI:  # type: ignore[override]
        return BaselineWSGI()


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

    def add(self, sent: int, latencies: list[float], failures: list[str]) -> None:
        with self.lock:
            self.requests += len(latencies)
            self.points += sent
            self.latencies += latencies
            self.failures += failures

    @property
    def rate(self) -> float:
        """Points per second."""
        return self.points / self.seconds if self.seconds else 0.0


Client = Callable[[int, float, Run], None]  # (client number, monotonic stop time, run)


def _drive(client: Client, clients: Iterable[int], duration: float) -> Run:
    """One thread per client number, all stopping `duration` seconds from now."""
    run = Run()
    stop_at = time.monotonic() + duration
    threads = [threading.Thread(target=client, args=(n, stop_at, run), daemon=True) for n in clients]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    run.seconds = time.perf_counter() - started
    return run


def _base(batch: int, client_no: int) -> int:
    """The first epoch second of a client's points: distinct per client and per batch size."""
    return 1_500_000_000 + (0 if batch == 1 else 400_000_000) + client_no * 40_000_000


def _http_client(port: int, token: str, batch: int) -> Client:
    def client(client_no: int, stop_at: float, run: Run) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        base = _base(batch, client_no)
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
            try:
                accepted = json.loads(payload).get("accepted")
            except ValueError:
                accepted = None
            if accepted != batch:
                failures.append(f"200 but accepted {accepted!r} of {batch}: {payload[:200]!r}")
                continue
            sent += batch
        conn.close()
        run.add(sent, latencies, failures)

    return client


def http_load(port: int, token: str, *, batch: int, clients: int, duration: float) -> Run:
    """N keep-alive clients POSTing batches for `duration` seconds."""
    return _drive(_http_client(port, token, batch), range(clients), duration)


def _db_client(db: Database, metric_id: int, batch: int) -> Client:
    def client(client_no: int, stop_at: float, run: Run) -> None:
        base = _base(batch, client_no)
        sent = 0
        latencies: list[float] = []
        failures: list[str] = []
        while time.monotonic() < stop_at:
            points = [
                Point(datetime.fromtimestamp(base + sent + i, UTC), float((sent + i) % 97))
                for i in range(batch)
            ]
            started = time.perf_counter()
            try:
                with db.session() as s:
                    written = upsert_points(db_session=s, team_id=TEAM, metric_id=metric_id, points=points)
            except SQLAlchemyError as exc:
                failures.append(f"{exc.__class__.__name__}: {str(exc)[:200]}")
                continue
            latencies.append(time.perf_counter() - started)
            if written != batch:
                failures.append(f"upsert_points wrote {written} of {batch}")
                continue
            sent += batch
        run.add(sent, latencies, failures)

    return client


def _db_process(
    url: str, metric_id: int, batch: int, clients: list[int], duration: float, barrier: Any, results: Any
) -> None:
    """A DB-only load process: connect, wait for the others, run its client threads, report."""
    db = Database(url)
    db.ping()
    barrier.wait()
    run = _drive(_db_client(db, metric_id, batch), clients, duration)
    db.dispose()
    results.put((run.requests, run.points, run.failures, run.latencies, run.seconds))


def db_load(
    db: Database, metric_id: int, *, batch: int, clients: int, processes: int, duration: float
) -> Run:
    """N threads calling upsert_points directly, one transaction per batch, in `processes` processes."""
    if processes <= 1:
        return _drive(_db_client(db, metric_id, batch), range(clients), duration)
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(processes + 1)
    results = context.Queue()
    children = [
        context.Process(
            target=_db_process,
            args=(db.url, metric_id, batch, list(range(p, clients, processes)), duration, barrier, results),
            daemon=True,
        )
        for p in range(processes)
    ]
    for child in children:
        child.start()
    run = Run()
    try:
        barrier.wait(timeout=60)
        for _ in children:
            requests, points, failures, latencies, seconds = results.get(timeout=duration + 60)
            run.requests += requests
            run.points += points
            run.failures += failures
            run.latencies += latencies
            run.seconds = max(run.seconds, seconds)
    finally:
        for child in children:
            child.join(timeout=10)
            if child.is_alive():
                child.kill()
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


def prepare(db: Database) -> tuple[str, int]:
    """The push metric, the DB-only metric and a token; returns (token, the DB-only metric's id)."""
    with db.session() as s:
        upsert_metrics(db_session=s, team_id=TEAM, specs=[_spec(PUSH_KEY), _spec(DB_KEY)])
        _, plaintext = create_token(db_session=s, team_id=TEAM, name="bench")
        db_metric_id = s.scalar(select(Metric.id).where(Metric.team_id == TEAM, Metric.key == DB_KEY))
    assert db_metric_id is not None
    return plaintext, int(db_metric_id)


def stored_points(db: Database) -> dict[str, int]:
    """Points in the database per metric key."""
    with db.read() as s:
        rows = s.execute(
            select(Metric.key, func.count(MetricPoint.id))
            .join(MetricPoint, MetricPoint.metric_id == Metric.id)
            .group_by(Metric.key)
        ).all()
    return {str(key): int(n) for key, n in rows}


def _period_start(ts: datetime, period: str) -> str:
    day = ts.astimezone(UTC).date()
    if period == "week":
        return (day - timedelta(days=day.weekday())).isoformat()
    if period == "month":
        return day.replace(day=1).isoformat()
    return day.isoformat()


def aggregate(points: list[Point], period: str, summary: str) -> list[PeriodValue]:
    """The Python baseline of `summarise`: points oldest first → one value per period."""
    groups: dict[str, list[float]] = {}
    for point in points:
        groups.setdefault(_period_start(point.ts, period), []).append(point.value)
    reducers: dict[str, Callable[[list[float]], float]] = {
        "sum": math.fsum,
        "avg": statistics.fmean,
        "max": max,
        "min": min,
        "last": lambda values: values[-1],
    }
    reduce = reducers[summary]
    return [
        PeriodValue(start, float(reduce(values)), len(values)) for start, values in sorted(groups.items())
    ]


@dataclass
class Summaries:
    inserted: float
    sql: list[float]
    python: list[float]
    periods: int
    mismatches: list[str]


def summaries(db: Database) -> Summaries:
    """Inserts 200 metrics × 730 daily points; times SQL `summarise` against the Python baseline."""
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

    def in_sql() -> dict[tuple[str, str], list[PeriodValue]]:
        with db.read() as s:
            return {
                (spec.key, period): summarise(
                    db_session=s, team_id=TEAM, metric_id=ids[spec.key], period=period, summary=spec.summary
                )
                for spec in specs
                for period in ("week", "month")
            }

    def in_python() -> dict[tuple[str, str], list[PeriodValue]]:
        found: dict[tuple[str, str], list[PeriodValue]] = {}
        with db.read() as s:
            for spec in specs:
                points = points_between(db_session=s, team_id=TEAM, metric_id=ids[spec.key])
                for period in ("week", "month"):
                    found[(spec.key, period)] = aggregate(points, period, spec.summary)
        return found

    times: dict[str, list[float]] = {"sql": [], "python": []}
    results: dict[str, dict[tuple[str, str], list[PeriodValue]]] = {}
    for _ in range(SUMMARY_ROUNDS):  # alternating, so a noisy moment hits both
        for name, compute in (("sql", in_sql), ("python", in_python)):
            started = time.perf_counter()
            results[name] = compute()
            times[name].append(time.perf_counter() - started)
    mismatches: list[str] = []
    for where, expected in results["python"].items():
        got = results["sql"].get(where, [])
        same = len(got) == len(expected) and all(
            a.period_start == b.period_start and a.points == b.points and math.isclose(a.value, b.value)
            for a, b in zip(got, expected, strict=True)
        )
        if not same:
            mismatches.append(f"{where[0]} by {where[1]}: SQL {got[:2]}… ≠ Python {expected[:2]}…")
    periods = sum(len(values) for values in results["sql"].values())
    return Summaries(inserted, times["sql"], times["python"], periods, mismatches)


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
    """`python -m bench.push_api --serve [--baseline] --bind HOST:PORT`: the fallback or the baseline server."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--serve", action="store_true")
    parser.add_argument("--baseline", action="store_true")
    parser.add_argument("--bind", required=True)
    args = parser.parse_args(argv)
    server = BaselineServer if args.baseline else PushOnlyServer
    server(load_settings(), args.bind).run()


def _bench_server(env: dict[str, str], log: Path, *extra: str) -> ServerProcess:
    port = free_port()
    command = [sys.executable, "-m", "bench.push_api", "--serve", *extra, "--bind", f"127.0.0.1:{port}"]
    return ServerProcess(env, port=port, command=command, log_path=log, cwd=REPO).start()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--serve" in argv:
        serve(argv)
        return 0
    parser = argparse.ArgumentParser(description="Push-API throughput and period-summary speed.")
    parser.add_argument(
        "--database-url", help="a SQLite URL, or a Postgres server URL (a fresh database is made)"
    )
    parser.add_argument(
        "--duration", type=float, default=5.0, help="seconds per load run, 6 runs (default 5)"
    )
    parser.add_argument("--clients", type=int, default=8, help="keep-alive client connections (default 8)")
    args = parser.parse_args(argv)
    console = Console(width=130)
    total_started = time.perf_counter()
    runs: dict[tuple[str, int], Run] = {}
    with tempfile.TemporaryDirectory(prefix="prodops-push-bench-") as tmp:
        database = BenchDatabase(args.database_url, Path(tmp))
        settings = Settings.model_validate({"DATABASE_URL": database.url})
        processes = settings.effective_web_concurrency
        emulator = SlackEmulator().start()
        servers: list[ServerProcess] = []
        try:
            upgrade(database.url)
            db = Database(database.url)
            token, db_metric_id = prepare(db)
            env = {
                "SLACK_BOT_TOKEN": emulator.bot_token,
                "SLACK_SIGNING_SECRET": SIGNING_SECRET,
                "SLACK_API_URL": emulator.url,
                "SLACK_APP_TOKEN": "",
                "DATABASE_URL": database.url,
                "PRODOPS_LOG_LEVEL": "WARNING",
                # Throughput, not abuse: lift the per-token limit (bot/security/ratelimit.py) out of the way.
                "PRODOPS_PUSH_REQUESTS_PER_MINUTE": "1e9",
                "PRODOPS_PUSH_BURST": "1000000000",
            }
            log = Path(tmp) / "server.log"
            prodops = ServerProcess(env, log_path=log, cwd=REPO).start()
            servers.append(prodops)
            where = "prodops serve (mounted)"
            if not _mounted(prodops):
                prodops.stop()
                prodops = _bench_server(env, log)
                servers.append(prodops)
                where = "MetricsAPI alone (not mounted in prodops serve yet)"
            baseline = _bench_server(env, Path(tmp) / "baseline.log", "--baseline")
            servers.append(baseline)
            for batch in BATCHES:
                common = {"batch": batch, "clients": args.clients, "duration": args.duration}
                runs[("http", batch)] = http_load(baseline.port, token, **common)
                runs[("prodops", batch)] = http_load(prodops.port, token, **common)
                runs[("db", batch)] = db_load(db, db_metric_id, processes=processes, **common)
            for server in servers:
                server.stop()
            stored = stored_points(db)
            summary = summaries(db)
            db.dispose()
        finally:
            for server in servers:
                server.stop()
            emulator.stop()
            database.drop()
    backend = database.url.split(":")[0]
    names = {
        "prodops": "ProdOps",
        "http": "HTTP-only baseline",
        "db": f"DB only (upsert_points, {processes} process{'es' if processes > 1 else ''})",
    }

    detail = Table(
        title=f"Push API — {backend}, {where}, {args.clients} clients, {args.duration:g} s per run"
    )
    for column in (
        "run",
        "batch",
        "requests",
        "points",
        "points/s",
        "requests/s",
        "p50 ms",
        "p99 ms",
        "errors",
    ):
        detail.add_column(column, justify="left" if column == "run" else "right")
    broken = False
    for (name, batch), run in runs.items():
        broken |= bool(run.failures)
        detail.add_row(
            names[name],
            f"{batch:,}",
            f"{run.requests:,}",
            f"{run.points:,}",
            f"{run.rate:,.0f}",
            f"{run.requests / run.seconds:,.0f}" if run.seconds else "-",
            f"{_percentile(run.latencies, 0.5) * 1000:.1f}",
            f"{_percentile(run.latencies, 0.99) * 1000:.1f}",
            str(len(run.failures)),
        )
    console.print(detail)

    ratios = Table(title="Push API points/s against the baselines (same run)")
    for column in (
        "batch",
        "ProdOps pts/s",
        "HTTP-only pts/s",
        "DB-only pts/s",
        "ProdOps / HTTP-only",
        "ProdOps / DB-only",
    ):
        ratios.add_column(column, justify="right")
    for batch in BATCHES:
        ours, http_only, db_only = (runs[(name, batch)].rate for name in ("prodops", "http", "db"))
        ratios.add_row(
            f"{batch:,}",
            f"{ours:,.0f}",
            f"{http_only:,.0f}",
            f"{db_only:,.0f}",
            f"{ours / http_only:.2f}" if http_only else "-",
            f"{ours / db_only:.2f}" if db_only else "-",
        )
    console.print(ratios)

    sql_s, python_s = statistics.median(summary.sql), statistics.median(summary.python)
    table = Table(title=f"summarise: {SUMMARY_METRICS} metrics × {SUMMARY_DAYS} daily points")
    table.add_column("step")
    table.add_column("seconds", justify="right")
    total_points = SUMMARY_METRICS * SUMMARY_DAYS
    table.add_row(
        f"insert {total_points:,} points (upsert_points, one commit per metric)", f"{summary.inserted:.2f}"
    )
    table.add_row(
        f"SQL: summarise week + month for all {SUMMARY_METRICS} ({summary.periods:,} periods), "
        f"median of {SUMMARY_ROUNDS}",
        f"{sql_s:.3f}",
    )
    table.add_row(
        f"baseline: points_between all {total_points:,} points + week/month in Python, median of {SUMMARY_ROUNDS}",
        f"{python_s:.3f}",
    )
    table.add_row(
        "SQL / baseline" + (" (SQL wins)" if sql_s < python_s else " (baseline wins)"),
        f"{sql_s / python_s:.2f}",
    )
    console.print(table)

    accepted = sum(runs[("prodops", batch)].points for batch in BATCHES)
    written = sum(runs[("db", batch)].points for batch in BATCHES)
    console.print(
        f"server: gthread, {processes} worker(s) × {settings.web_threads} threads (ProdOps and HTTP-only) · "
        f"ProdOps points stored {stored.get(PUSH_KEY, 0):,} / accepted {accepted:,} · "
        f"DB-only stored {stored.get(DB_KEY, 0):,} / written {written:,} · "
        f"SQL = Python summaries: {'yes' if not summary.mismatches else 'NO'} · "
        f"total {time.perf_counter() - total_started:.0f} s"
    )
    for (name, _), run in runs.items():
        for failure in run.failures[:5]:
            console.print(f"[red]{names[name]} failure:[/] {failure}", markup=True)
    if stored.get(PUSH_KEY, 0) != accepted:
        console.print(
            f"[red]point count mismatch: {stored.get(PUSH_KEY, 0):,} stored, {accepted:,} accepted[/]"
        )
        broken = True
    if stored.get(DB_KEY, 0) != written:
        console.print(
            f"[red]DB-only count mismatch: {stored.get(DB_KEY, 0):,} stored, {written:,} written[/]"
        )
        broken = True
    for mismatch in summary.mismatches[:5]:
        console.print(f"[red]summary mismatch:[/] {mismatch}", markup=True)
    broken |= bool(summary.mismatches)
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
