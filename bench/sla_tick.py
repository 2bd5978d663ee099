"""SLA tick over 100,000 open requests: time per tick, the index it reads, and a scan-in-Python baseline.

    .venv/bin/python bench/sla_tick.py            # N = 1,000 / 10,000 / 100,000, under ~2 minutes on SQLite
    .venv/bin/python bench/sla_tick.py --quick    # N = 1,000 / 10,000
    .venv/bin/python bench/sla_tick.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres

For each N a fresh database (a SQLite file in a temporary directory, or a `prodops_bench_sla_*` database on
the given Postgres server, dropped afterwards) is migrated and loaded with one request type and N open
requests plus 20% more closed ones, created over the 30 days before `now` (the last Wednesday 14:00 UTC).
Every request's SLA columns come from the service's own code: `_schedule` (what `open_request` runs),
`assign` / `change_status` / `record_first_response` for its life so far, and the tick's `alerts_due` /
`_mark_done` / `refresh_sla_next_check` for every reminder and escalation an ideal tick sent on the way
(each also leaves its `sla_notices` row, as in production). The last tick before the run is placed so that
about 2% of the open requests have a notice due at `now`; the rest are due later, or have nothing pending.

Then `bot.requests.sla_job.run_sla_tick` runs against the Slack Web API emulator (a child process, reached
over 127.0.0.1 by an unmodified slack_sdk WebClient): the first tick (one batch), the drain (ticks until
nothing is due) and steady-state ticks (nothing due). The baseline loads every open request and runs
`alerts_due` on each in Python; it must find exactly the requests the indexed range finds.
Timings are printed, never asserted; the exit status is 1 only when something is broken.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import math
import multiprocessing
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, cast

from rich.console import Console
from rich.table import Table
from slack_sdk import WebClient
from sqlalchemy import create_engine, func, insert, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session
from sqlalchemy.sql import Select

from bot.requests import service as requests_service
from bot.requests import sla_job
from bot.requests import types as request_types
from bot.requests.sla import SlaPolicy
from storage.db import Database
from storage.migrate import upgrade
from storage.models import Request, RequestStatus, RequestType, SlaNotice

TEAM_ID = "T0PRODOPS"  # the emulator's default workspace
INDEX_NAME = "ix_requests_sla_next_check_at"
HISTORY_DAYS = 30
INSERT_BATCH = 5_000
PRIORITIES = (("urgent", 5), ("high", 20), ("normal", 55), ("low", 20))
OPEN_FATES = (("new", 35), ("in_progress", 50), ("waiting", 15))
CLOSED_FATES = (("done", 85), ("declined", 15))
SOURCES = ("command", "form", "shortcut", "reaction")
ASK_CHANNELS = tuple(f"C0ASK{n:04d}" for n in range(12))
SUBJECTS = ("VPN access", "Laptop replacement", "Salesforce seat", "Expense approval", "New hire setup")
LIFECYCLE = (
    "status",
    "assignee_user_id",
    "first_response_at",
    "resolved_at",
    "waiting_since",
    "first_response_due_at",
    "first_response_remind_at",
    "due_at",
    "resolution_remind_at",
    "first_response_escalated_at",
    "resolution_escalated_at",
    "sla_next_check_at",
)

Notice = tuple[str, str, datetime]  # (target, kind, sent at)
PROPOSED_INDEX = "CREATE INDEX ix_bench_sla_notices_unsent ON sla_notices (claimed_at) WHERE sent_at IS NULL"


# ---- configuration ---------------------------------------------------------------------------------


@dataclass
class Config:
    requests: int
    scales: list[int]
    due_fraction: float
    closed_fraction: float
    calendar: str
    batch: int
    steady_ticks: int
    database_url: str | None
    seed: int
    workers: int


def parse_args(argv: Sequence[str] | None) -> Config:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=100_000, help="open requests at the largest N")
    parser.add_argument("--quick", action="store_true", help="N up to 10,000 (a ~20 s smoke run)")
    parser.add_argument("--scales", help="comma list of N (default 1000,10000,<--requests>)")
    parser.add_argument("--due-fraction", type=float, default=0.02, help="open requests due at `now`")
    parser.add_argument("--closed-fraction", type=float, default=0.2, help="closed requests, per open one")
    parser.add_argument("--calendar", choices=("weekdays", "24x7"), default="weekdays")
    parser.add_argument("--batch", type=int, default=200, help="run_sla_tick's batch (its default: 200)")
    parser.add_argument("--steady-ticks", type=int, default=20, help="steady-state ticks timed per N")
    parser.add_argument("--database-url", help="a SQLite URL (a new file) or a Postgres server URL")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    args = parser.parse_args(argv)
    requests = 10_000 if args.quick else args.requests
    if args.scales:
        scales = sorted({int(n) for n in args.scales.split(",") if n.strip()})
    else:
        scales = sorted({n for n in (1_000, 10_000, requests) if n <= requests})
    return Config(
        requests=max(scales),
        scales=scales,
        due_fraction=args.due_fraction,
        closed_fraction=args.closed_fraction,
        calendar=args.calendar,
        batch=args.batch,
        steady_ticks=args.steady_ticks,
        database_url=args.database_url,
        seed=args.seed,
        workers=max(1, args.workers),
    )


def bench_now() -> datetime:
    """The last Wednesday 14:00 UTC: inside business hours, so reminders and breaches fall near it."""
    today = datetime.now(UTC).replace(hour=14, minute=0, second=0, microsecond=0)
    anchor = today - timedelta(days=(today.weekday() - 2) % 7)
    return anchor if anchor <= datetime.now(UTC) else anchor - timedelta(days=7)


# ---- the Slack emulator, in its own process -----------------------------------------------------------


def emulator_process(conn: Connection) -> None:
    """Child: start the emulator, seed owners, assignees and the triage channel, answer 'counts' / 'stop'."""
    from bot.devkit.emulator import SlackEmulator

    emulator = SlackEmulator().start()
    try:
        owners = [emulator.add_user(f"owner-{n}")["id"] for n in range(2)]
        assignees = [emulator.add_user(f"agent-{n}")["id"] for n in range(20)]
        triage = emulator.add_channel("it-triage", members=owners)["id"]
        conn.send(
            {"url": emulator.url, "token": emulator.bot_token, "owners": owners, "assignees": assignees}
            | {"triage": triage}
        )
        while True:
            command = conn.recv()
            if command == "counts":
                calls = emulator.calls()
                conn.send(Counter((c.method, bool(c.response.get("ok"))) for c in calls))
                emulator.reset_calls()
            elif command == "stop":
                return
    finally:
        emulator.stop()


class EmulatorHandle:
    """The parent's side of the emulator process."""

    def __init__(self) -> None:
        parent, child = multiprocessing.Pipe()
        self.conn = parent
        self.process = multiprocessing.Process(target=emulator_process, args=(child,), daemon=True)
        self.process.start()
        if not parent.poll(30):
            raise RuntimeError("the emulator process did not start")
        info = parent.recv()
        self.url: str = info["url"]
        self.token: str = info["token"]
        self.owners: list[str] = info["owners"]
        self.assignees: list[str] = info["assignees"]
        self.triage: str = info["triage"]

    def counts(self) -> Counter[tuple[str, bool]]:
        """Web API calls since the last call of this, by (method, ok)."""
        self.conn.send("counts")
        return cast(Counter[tuple[str, bool]], self.conn.recv())

    def cpu(self) -> float:
        return process_cpu(self.process.pid)

    def stop(self) -> None:
        with contextlib.suppress(OSError, BrokenPipeError):
            self.conn.send("stop")
        self.process.join(5)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(5)


def process_cpu(pid: int | None) -> float:
    """User + system CPU seconds of one process, from /proc (0.0 where there is no /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---- databases -------------------------------------------------------------------------------------------


class BenchDatabase:
    """A fresh SQLite file, or a fresh `prodops_bench_sla_*` database on a Postgres server (dropped after)."""

    def __init__(self, requested: str | None, tmp: Path, label: str) -> None:
        self.admin_url: str | None = None
        self.name: str | None = None
        if requested is None:
            self.url = f"sqlite:///{tmp / f'sla-{label}.db'}"
            return
        parsed = make_url(requested)
        if parsed.get_backend_name() != "postgresql":
            if label != "0":  # one file per N: the given name, suffixed
                parsed = parsed.set(database=f"{parsed.database}.{label}")
            self.url = parsed.render_as_string(hide_password=False)
            return
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        self.admin_url = parsed.render_as_string(hide_password=False)
        self.name = f"prodops_bench_sla_{uuid.uuid4().hex[:10]}"
        admin = create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{self.name}"'))
        finally:
            admin.dispose()
        self.url = parsed.set(database=self.name).render_as_string(hide_password=False)

    @property
    def shown(self) -> str:
        return make_url(self.url).render_as_string(hide_password=True)

    def drop(self) -> None:
        if self.admin_url and self.name:
            admin = create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
            try:
                with admin.connect() as conn:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
            finally:
                admin.dispose()


# ---- the data set ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """One request's life before `now`: when it was opened, who answered it, where it went."""

    seq: int
    created_at: datetime
    priority: str
    fate: str  # new | in_progress | waiting | done | declined
    requester: str
    assignee: str | None
    responder: str | None  # who answered first (the assignee, or an owner replying in the thread)
    first_response_at: datetime | None
    changed_at: datetime | None  # waiting since, or resolved at
    source: str
    channel: str


@dataclass
class Simulated:
    plan: Plan
    columns: dict[str, Any]
    notices: list[Notice]

    @property
    def last_notice_at(self) -> datetime | None:
        return max((at for _, _, at in self.notices), default=None)


class _EventSink:
    """Stands in for a Session in the service's lifecycle calls: the request events they add are dropped."""

    def add(self, _obj: object) -> None:
        return None


def weighted(rng: random.Random, choices: tuple[tuple[str, int], ...]) -> str:
    return rng.choices([c for c, _ in choices], weights=[w for _, w in choices])[0]


def make_plans(
    count: int, fates: tuple[tuple[str, int], ...], seq0: int, rng: random.Random, now: datetime, people: dict
) -> list[Plan]:
    plans: list[Plan] = []
    span = HISTORY_DAYS * 86_400
    for n in range(count):
        created = now - timedelta(seconds=rng.uniform(1, span))
        fate = weighted(rng, fates)
        age = now - created
        delay = timedelta(seconds=rng.expovariate(1 / (3 * 3600)))  # first answers: ~3 h on average
        assignee = responder = None
        first = changed = None
        if fate == "new":
            if rng.random() < 0.2 and delay < age:  # an owner replied in the thread, nobody took it yet
                responder, first = rng.choice(people["owners"]), created + delay
        else:
            assignee = responder = rng.choice(people["assignees"])
            first = created + min(delay, age * rng.random())
            if fate != "in_progress":
                changed = first + (now - first) * rng.random() ** 2
        plans.append(
            Plan(
                seq=seq0 + n,
                created_at=created,
                priority=weighted(rng, PRIORITIES),
                fate=fate,
                requester=f"U0REQ{rng.randrange(5_000):05d}",
                assignee=assignee,
                responder=responder,
                first_response_at=first,
                changed_at=changed,
                source=rng.choice(SOURCES),
                channel=rng.choice(ASK_CHANNELS),
            )
        )
    return plans


def catch_up(request: Request, until: datetime, notices: list[Notice]) -> None:
    """What ticks running at every due instant up to `until` would have done to the request."""
    while request.sla_next_check_at is not None and request.sla_next_check_at <= until:
        at = request.sla_next_check_at
        todo = sla_job.alerts_due(request, at)
        if not todo:
            raise AssertionError(f"sla_next_check_at {at} with nothing due (request seq {request.id})")
        for target, kind in todo:
            sla_job._mark_done(request, target, kind, at)
            notices.append((target, kind, at))
        requests_service.refresh_sla_next_check(request)


def simulate(plan: Plan, policy: SlaPolicy, ticks_until: datetime) -> Simulated:
    """The request's SLA columns and sent notices after its life so far, with ticks up to `ticks_until`."""
    sink = cast(Session, _EventSink())
    request = Request(
        id=plan.seq, priority=plan.priority, status=RequestStatus.new.value, created_at=plan.created_at
    )
    request.requester_user_id = plan.requester
    requests_service._schedule(request, policy, plan.created_at)  # what open_request does
    notices: list[Notice] = []
    if plan.first_response_at is not None:
        catch_up(request, min(plan.first_response_at, ticks_until), notices)
        if plan.assignee is not None:
            requests_service.assign(
                db_session=sink,
                request=request,
                assignee_user_id=plan.assignee,
                actor=requests_service.Actor(plan.assignee),
                now=plan.first_response_at,
            )
        else:
            requests_service.record_first_response(
                db_session=sink, request=request, user_id=plan.responder, now=plan.first_response_at
            )
    if plan.changed_at is not None:
        assert plan.assignee is not None
        catch_up(request, min(plan.changed_at, ticks_until), notices)
        requests_service.change_status(
            db_session=sink,
            request=request,
            to=RequestStatus(plan.fate),
            actor=requests_service.Actor(plan.assignee),
            policy=policy,
            now=plan.changed_at,
        )
    catch_up(request, ticks_until, notices)
    columns = {name: getattr(request, name) for name in LIFECYCLE}
    return Simulated(plan, columns, notices)


_WORKER_POLICY: SlaPolicy | None = None


def _simulate_chunk(args: tuple[list[Plan], dict[str, Any], datetime]) -> list[Simulated]:
    global _WORKER_POLICY
    plans, type_columns, until = args
    if _WORKER_POLICY is None:
        _WORKER_POLICY = request_types.policy_for(RequestType(**type_columns))
    return [simulate(p, _WORKER_POLICY, until) for p in plans]


def simulate_all(
    plans: list[Plan], type_columns: dict[str, Any], until: datetime, workers: int
) -> list[Simulated]:
    if workers <= 1 or len(plans) < 5_000:
        policy = request_types.policy_for(RequestType(**type_columns))
        return [simulate(p, policy, until) for p in plans]
    size = math.ceil(len(plans) / (workers * 4))
    chunks = [(plans[i : i + size], type_columns, until) for i in range(0, len(plans), size)]
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        return [s for part in pool.map(_simulate_chunk, chunks) for s in part]


def last_tick_before(open_rows: list[Simulated], fraction: float, now: datetime) -> datetime:
    """The last tick before `now` that leaves about `fraction` of the open requests due at `now`.

    Business calendars make notices pile up on the same instants (every request opened overnight at one
    priority is due at the same minute of the next working day), so the tick lands just after or just
    before such a pile, whichever leaves the count nearer the target.
    """
    latest = sorted((s.last_notice_at for s in open_rows if s.last_notice_at is not None), reverse=True)
    wanted = round(fraction * len(open_rows))
    if wanted <= 0 or not latest:
        return now
    if wanted >= len(latest):
        return latest[-1] - timedelta(microseconds=1)
    pile = latest[wanted]
    after = bisect.bisect_left(
        [-t.timestamp() for t in latest], -pile.timestamp()
    )  # due if the tick is at pile
    before = bisect.bisect_right([-t.timestamp() for t in latest], -pile.timestamp())  # ... just before it
    return pile if abs(after - wanted) <= abs(before - wanted) else pile - timedelta(microseconds=1)


@dataclass
class DataSet:
    """Open and closed requests as they stand at `now` after the last tick at `last_tick`."""

    now: datetime
    last_tick: datetime
    open_rows: list[Simulated]
    closed_rows: list[Simulated]
    seconds: float


def build_dataset(config: Config, type_columns: dict[str, Any], people: dict, now: datetime) -> DataSet:
    started = time.perf_counter()
    rng = random.Random(config.seed)
    n_open = config.requests
    n_closed = round(config.closed_fraction * n_open)
    plans = make_plans(n_open, OPEN_FATES, 0, rng, now, people)
    plans += make_plans(n_closed, CLOSED_FATES, n_open, rng, now, people)
    rows = simulate_all(plans, type_columns, now, config.workers)
    last_tick = last_tick_before(rows[:n_open], config.due_fraction, now)
    redo = [i for i, s in enumerate(rows) if s.last_notice_at is not None and s.last_notice_at > last_tick]
    policy = request_types.policy_for(RequestType(**type_columns))
    for i in redo:  # these had a notice after the last tick: their state is as of that tick
        rows[i] = simulate(rows[i].plan, policy, last_tick)
    return DataSet(now, last_tick, rows[:n_open], rows[n_open:], time.perf_counter() - started)


def stage_rows(
    data: DataSet, n_open: int, closed_fraction: float, type_id: int, triage: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Request and sla_notices rows of the first `n_open` open (and matching closed) requests."""
    chosen = data.open_rows[:n_open] + data.closed_rows[: round(closed_fraction * n_open)]
    chosen.sort(key=lambda s: s.plan.created_at)
    requests: list[dict[str, Any]] = []
    notices: list[dict[str, Any]] = []
    for request_id, s in enumerate(chosen, start=1):
        p = s.plan
        stamp = int(p.created_at.timestamp())
        last_change = max([p.created_at] + [t for t in (p.first_response_at, p.changed_at) if t is not None])
        requests.append(
            {
                "id": request_id,
                "team_id": TEAM_ID,
                "type_id": type_id,
                "title": f"{SUBJECTS[p.seq % len(SUBJECTS)]} for team {p.seq % 97}",
                "details": "Bench request: please see the thread.",
                "field_values": {},
                "priority": p.priority,
                "requester_user_id": p.requester,
                "channel_id": p.channel,
                "message_ts": f"{stamp}.{p.seq:06d}",
                "permalink": f"https://acme.slack.com/archives/{p.channel}/p{stamp}{p.seq:06d}",
                "reply_channel_id": p.channel,
                "reply_thread_ts": f"{stamp}.{p.seq:06d}",
                "triage_channel_id": triage,
                "triage_ts": f"{stamp + 1}.{p.seq:06d}",
                "source": p.source,
                "delivery_id": None,
                "created_at": p.created_at,
                "updated_at": last_change,
                **s.columns,
            }
        )
        notices.extend(
            {
                "team_id": TEAM_ID,
                "request_id": request_id,
                "target": target,
                "kind": kind,
                "claimed_at": at,
                "sent_at": at + timedelta(seconds=1),
            }
            for target, kind, at in s.notices
        )
    return requests, notices


def request_type_columns(config: Config, owners: list[str], triage: str) -> dict[str, Any]:
    calendar: dict[str, Any] = {}  # Mon-Fri 09:00-17:00 UTC
    if config.calendar == "24x7":
        calendar = {"working_days": [0, 1, 2, 3, 4, 5, 6], "start": "00:00", "end": "24:00"}
    spec = request_types.RequestTypeSpec(
        name="IT access",
        triage_channel_id=triage,
        owners=owners,
        sla=dict(request_types.DEFAULT_SLA),
        calendar=request_types.CalendarSpec.model_validate(calendar),
    )
    return {"team_id": TEAM_ID} | spec.columns()


# ---- queries and plans ---------------------------------------------------------------------------------


def due_query(now: datetime, batch: int) -> Select[Any]:
    """The tick's read, as in sla_job.run_sla_tick."""
    return (
        select(Request.id, Request.team_id)
        .where(Request.sla_next_check_at <= now)
        .order_by(Request.sla_next_check_at)
        .limit(batch)
    )


def retry_query(now: datetime) -> Select[Any]:
    """The tick's other read, as in sla_job._retry_unsent (claims whose sending died)."""
    return (
        select(SlaNotice.id, SlaNotice.claimed_at)
        .where(SlaNotice.sent_at.is_(None), SlaNotice.claimed_at < now - sla_job.CLAIM_LEASE)
        .limit(100)
    )


def naive_query() -> Select[Any]:
    return select(Request).where(Request.status.in_(requests_service.OPEN_STATUSES))


def explain(db: Database, stmt: Select[Any], analyze: bool = False) -> list[str]:
    """The command, then the plan: EXPLAIN QUERY PLAN (SQLite) or EXPLAIN [ANALYZE] (Postgres) of the statement."""
    dialect = db.engine.dialect
    compiled = stmt.compile(dialect=dialect, compile_kwargs={"render_postcompile": True})
    values: dict[str, Any] = {}
    for name, value in compiled.construct_params().items():
        bind = compiled.binds.get(name)  # expanded IN parameters are plain strings
        processor = bind.type.bind_processor(dialect) if bind is not None else None
        values[name] = processor(value) if processor else value
    if db.backend == "sqlite":
        positional = tuple(values[name] for name in compiled.positiontup or ())
        with db.engine.connect() as conn:
            rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}", positional).all()
        return ["EXPLAIN QUERY PLAN"] + [str(row[-1]) for row in rows]
    prefix = "EXPLAIN (ANALYZE, BUFFERS)" if analyze else "EXPLAIN"
    with db.engine.connect() as conn:
        rows = conn.exec_driver_sql(f"{prefix} {compiled}", values).all()
    return [prefix] + [str(row[0]) for row in rows]


def timed(fn: Callable[[], Any], reps: int) -> list[float]:
    times: list[float] = []
    for _ in range(reps):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return times


def naive_due(db: Database, now: datetime) -> list[int]:
    """The baseline: load every open request and ask alerts_due of each, in Python."""
    with db.read() as s:
        return [r.id for r in s.scalars(naive_query()) if sla_job.alerts_due(r, now)]


def indexed_due(db: Database, now: datetime) -> list[int]:
    with db.read() as s:
        return list(s.scalars(select(Request.id).where(Request.sla_next_check_at <= now)))


# ---- the run -----------------------------------------------------------------------------------------------


@dataclass
class StageResult:
    n: int
    rows: int = 0
    notice_rows: int = 0
    due: int = 0
    pending: int = 0
    nothing_pending: int = 0
    insert_s: float = 0.0
    first_s: float = 0.0
    first_sent: int = 0
    drain_ticks: int = 0
    drain_s: float = 0.0
    drain_sent: int = 0
    drain_posts: int = 0
    emulator_cpu: float = 0.0
    bench_cpu: float = 0.0
    steady: list[float] = field(default_factory=list)
    due_query: list[float] = field(default_factory=list)
    retry_query: list[float] = field(default_factory=list)
    naive: list[float] = field(default_factory=list)
    retry_indexed: list[float] = field(default_factory=list)
    steady_indexed: list[float] = field(default_factory=list)
    naive_pre_s: float = 0.0
    plans: dict[str, list[str]] = field(default_factory=dict)


def ms(values: list[float], how: str = "median") -> str:
    if not values:
        return "-"
    if how == "p95":
        value = sorted(values)[min(len(values) - 1, math.ceil(0.95 * len(values)) - 1)]
    else:
        value = statistics.median(values)
    return f"{value * 1000:.2f}" if value < 0.1 else f"{value * 1000:.0f}"


class Bench:
    def __init__(self, config: Config, console: Console) -> None:
        self.config = config
        self.console = console
        self.broken: list[str] = []
        self.results: list[StageResult] = []

    def check(self, ok: bool, what: str) -> None:
        if not ok:
            self.broken.append(what)
            self.console.print(f"[red]BROKEN:[/red] {what}")

    def run(self) -> int:
        config, console = self.config, self.console
        now = bench_now()
        tmp = Path(tempfile.mkdtemp(prefix="prodops-bench-sla-"))
        emulator: EmulatorHandle | None = None
        started = time.perf_counter()
        try:
            emulator = EmulatorHandle()
            people = {"owners": emulator.owners, "assignees": emulator.assignees}
            type_columns = request_type_columns(config, emulator.owners, emulator.triage)
            console.print(
                f"now = {now:%a %Y-%m-%d %H:%M} UTC; calendar {config.calendar}; N = "
                f"{', '.join(f'{n:,}' for n in config.scales)} open (+{config.closed_fraction:.0%} closed); "
                f"run_sla_tick batch {config.batch}; {os.cpu_count()} CPUs"
            )
            data = build_dataset(config, type_columns, people, now)
            console.print(
                f"Simulated {len(data.open_rows) + len(data.closed_rows):,} request lives with the service "
                f"code in {data.seconds:.1f} s ({config.workers} processes); last tick before the run at "
                f"{data.last_tick:%H:%M:%S} (now - {(now - data.last_tick).total_seconds() / 60:.1f} min)"
            )
            client = WebClient(token=emulator.token, base_url=emulator.url, timeout=10)
            for label, n in enumerate(config.scales):
                database = BenchDatabase(config.database_url, tmp, str(label))
                try:
                    self.results.append(
                        self.stage(n, database, data, type_columns, emulator, client, n == config.scales[-1])
                    )
                finally:
                    database.drop()
        finally:
            if emulator is not None:
                emulator.stop()
            shutil.rmtree(tmp, ignore_errors=True)
        self.report(time.perf_counter() - started)
        return 1 if self.broken else 0

    def stage(
        self,
        n: int,
        database: BenchDatabase,
        data: DataSet,
        type_columns: dict[str, Any],
        emulator: EmulatorHandle,
        client: WebClient,
        largest: bool,
    ) -> StageResult:
        config, console, now = self.config, self.console, data.now
        result = StageResult(n)
        upgrade(database.url)
        db = Database(database.url)
        try:
            with db.session() as s:
                request_type = RequestType(**type_columns)
                s.add(request_type)
                s.flush()
                type_id = request_type.id
            requests, notices = stage_rows(data, n, config.closed_fraction, type_id, emulator.triage)
            result.rows, result.notice_rows = len(requests), len(notices)
            started = time.perf_counter()
            with db.engine.begin() as conn:
                for table, rows in ((Request.__table__, requests), (SlaNotice.__table__, notices)):
                    for i in range(0, len(rows), INSERT_BATCH):
                        conn.execute(insert(table), rows[i : i + INSERT_BATCH])
                if db.backend == "postgresql":
                    conn.execute(
                        text(
                            "SELECT setval(pg_get_serial_sequence('requests', 'id'), (SELECT max(id) FROM requests))"
                        )
                    )
            if db.backend == "postgresql":  # what autovacuum does after a load; the planner needs the stats
                with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                    conn.execute(text("ANALYZE"))
            result.insert_s = time.perf_counter() - started
            del requests, notices
            with db.read() as s:
                result.due = s.scalar(select(func.count()).where(Request.sla_next_check_at <= now)) or 0
                result.pending = s.scalar(select(func.count()).where(Request.sla_next_check_at > now)) or 0
                result.nothing_pending = (
                    s.scalar(
                        select(func.count()).where(
                            Request.sla_next_check_at.is_(None),
                            Request.status.in_(requests_service.OPEN_STATUSES),
                        )
                    )
                    or 0
                )
            console.print(
                f"N={n:,}: {database.shown} — {result.rows:,} requests, {result.notice_rows:,} sla_notices "
                f"loaded in {result.insert_s:.1f} s; {result.due:,} due at now"
            )

            # The baseline must find exactly what the indexed range finds.
            started = time.perf_counter()
            naive = naive_due(db, now)
            result.naive_pre_s = time.perf_counter() - started
            self.check(
                sorted(naive) == sorted(indexed_due(db, now)),
                f"N={n}: alerts_due over all open requests and sla_next_check_at <= now disagree",
            )
            if largest:
                result.plans = {
                    "due": explain(db, due_query(now, config.batch), analyze=True),
                    "retry": explain(db, retry_query(now), analyze=True),
                    "naive": explain(db, naive_query()),
                }
                self.check(
                    any(INDEX_NAME in line for line in result.plans["due"][1:]),
                    f"the due query does not use {INDEX_NAME}",
                )

            # First tick, then ticks until nothing is due.
            emulator.counts()
            emu_cpu, bench_cpu = emulator.cpu(), time.process_time()
            started = time.perf_counter()
            first = sla_job.run_sla_tick(db=db, client=client, now=now, batch=config.batch)
            result.first_s = time.perf_counter() - started
            result.first_sent = first.reminders + first.escalations
            result.drain_ticks, result.drain_sent = 1, result.first_sent
            limit = math.ceil(result.due / config.batch) + 5
            while True:
                tick = sla_job.run_sla_tick(db=db, client=client, now=now, batch=config.batch)
                if tick.checked == 0:
                    break
                result.drain_ticks += 1
                result.drain_sent += tick.reminders + tick.escalations
                if result.drain_ticks > limit:
                    self.check(False, f"N={n}: still due after {result.drain_ticks} ticks")
                    break
            result.drain_s = time.perf_counter() - started
            result.emulator_cpu = emulator.cpu() - emu_cpu
            result.bench_cpu = time.process_time() - bench_cpu
            calls = emulator.counts()
            result.drain_posts = calls[("chat.postMessage", True)]
            failed = sum(count for (_, ok), count in calls.items() if not ok)
            self.check(failed == 0, f"N={n}: {failed} Slack calls failed")
            with db.read() as s:
                sent = s.scalar(
                    select(func.count()).where(SlaNotice.claimed_at == now, SlaNotice.sent_at.is_not(None))
                )
                unsent = s.scalar(select(func.count()).where(SlaNotice.sent_at.is_(None)))
            self.check(
                sent == result.drain_sent and unsent == 0,
                f"N={n}: {result.drain_sent} notices counted, {sent} marked sent, {unsent} unsent",
            )
            self.check(result.drain_sent >= result.due, f"N={n}: fewer notices than due requests")

            # Steady state: nothing due.
            result.steady = timed(
                lambda: self.check(
                    sla_job.run_sla_tick(db=db, client=client, now=now, batch=config.batch).checked == 0,
                    f"N={n}: a steady tick found work",
                ),
                config.steady_ticks,
            )
            result.due_query = timed(lambda: _read_all(db, due_query(now, config.batch)), config.steady_ticks)
            result.retry_query = timed(lambda: _read_all(db, retry_query(now)), config.steady_ticks)
            result.naive = timed(lambda: naive_due(db, now), 1 if n >= 50_000 else 3)

            # Not in the schema: the index that would make _retry_unsent's read independent of history.
            with db.engine.begin() as conn:
                conn.execute(text(PROPOSED_INDEX))
                if db.backend == "postgresql":
                    conn.execute(text("ANALYZE sla_notices"))
            result.retry_indexed = timed(lambda: _read_all(db, retry_query(now)), config.steady_ticks)
            result.steady_indexed = timed(
                lambda: sla_job.run_sla_tick(db=db, client=client, now=now, batch=config.batch),
                config.steady_ticks,
            )
            if largest:
                result.plans["retry, with the proposed index"] = explain(db, retry_query(now), analyze=True)
            console.print(
                f"  first tick {result.first_s:.2f} s ({result.first_sent} notices); drained in "
                f"{result.drain_ticks} ticks, {result.drain_s:.1f} s; steady tick {ms(result.steady)} ms; "
                f"naive {ms(result.naive)} ms"
            )
        finally:
            db.dispose()
        return result

    def report(self, elapsed: float) -> None:
        console, config = self.console, self.config
        data_table = Table(title="Data set (per N, a fresh database)")
        for name in (
            "N open",
            "requests rows",
            "sla_notices rows",
            "due now",
            "due later",
            "nothing pending",
        ):
            data_table.add_column(name, justify="right")
        data_table.add_column("load s", justify="right")
        for r in self.results:
            data_table.add_row(
                f"{r.n:,}",
                f"{r.rows:,}",
                f"{r.notice_rows:,}",
                f"{r.due:,} ({r.due / r.n:.1%})",
                f"{r.pending:,}",
                f"{r.nothing_pending:,}",
                f"{r.insert_s:.1f}",
            )
        console.print(data_table)

        tick_table = Table(title=f"run_sla_tick (batch {config.batch}) against the emulator")
        columns = (
            "N open",
            "first tick s",
            "notices sent",
            "drain ticks",
            "drain s",
            "drain notices",
            "notices/s",
            "emulator CPU",
            "steady ms p50/p95",
            "naive ms",
            "naive/steady",
        )
        for name in columns:
            tick_table.add_column(name, justify="right")
        for r in self.results:
            steady = statistics.median(r.steady) if r.steady else float("nan")
            naive = statistics.median(r.naive) if r.naive else float("nan")
            tick_table.add_row(
                f"{r.n:,}",
                f"{r.first_s:.2f}",
                f"{r.first_sent:,}",
                f"{r.drain_ticks}",
                f"{r.drain_s:.1f}",
                f"{r.drain_sent:,}",
                f"{r.drain_sent / r.drain_s:.0f}" if r.drain_s else "-",
                f"{r.emulator_cpu / r.drain_s:.0%}" if r.drain_s else "-",
                f"{ms(r.steady)}/{ms(r.steady, 'p95')}",
                ms(r.naive),
                f"{naive / steady:,.0f}x" if steady else "-",
            )
        console.print(tick_table)

        query_table = Table(
            title=f"Steady state: the tick's two reads, timed alone ({config.steady_ticks} runs)"
        )
        for name in (
            "N open",
            "sla_notices rows",
            "due range ms",
            "retry-unsent ms",
            "retry-unsent ms, proposed index",
            "steady tick ms, proposed index",
        ):
            query_table.add_column(name, justify="right")
        for r in self.results:
            query_table.add_row(
                f"{r.n:,}",
                f"{r.notice_rows:,}",
                ms(r.due_query),
                ms(r.retry_query),
                ms(r.retry_indexed),
                ms(r.steady_indexed),
            )
        console.print(query_table)
        console.print(f"Proposed index (created by the bench after the other figures): {PROPOSED_INDEX}")

        largest = self.results[-1] if self.results else None
        if largest and largest.plans:
            for name, title in (
                ("due", "the tick's due query (sla_next_check_at <= now ORDER BY … LIMIT batch)"),
                ("retry", "the tick's retry-unsent query (sla_notices.sent_at IS NULL AND claimed_at < …)"),
                ("retry, with the proposed index", "the retry-unsent query with the proposed index"),
                ("naive", "the baseline's query (every open request)"),
            ):
                command, *lines = largest.plans[name]
                console.print(f"\n[bold]{command}[/bold] of {title}, N={largest.n:,}:")
                for line in lines:
                    console.print(f"  {line}", markup=False, highlight=False)
        if largest and largest.drain_s:
            console.print(
                f"\nDrain at N={largest.n:,}: {largest.drain_posts:,} chat.postMessage calls; CPU: this process "
                f"{largest.bench_cpu:.1f} s, emulator {largest.emulator_cpu:.1f} s of {largest.drain_s:.1f} s wall."
            )
        console.print(
            f"Total {elapsed:.0f} s. " + ("[red]BROKEN[/red]" if self.broken else "Nothing broken.")
        )


def _read_all(db: Database, stmt: Select[Any]) -> None:
    with db.read() as s:
        s.execute(stmt).all()


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_args(argv)
    console = Console(width=max(Console().width, 160))
    return Bench(config, console).run()


if __name__ == "__main__":
    sys.exit(main())
