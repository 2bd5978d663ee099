"""Digest bench: build time of one full digest at 1M feedback items, and at 10x history; fan-out of 500.

    .venv/bin/python bench/digest.py                    # SQLite, the issue's sizes (about 3.5 minutes)
    .venv/bin/python bench/digest.py --scale 0.1        # a tenth of the rows (~40 s smoke run)
    .venv/bin/python bench/digest.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres  # ~4 min

A fresh database (a SQLite file in a temporary directory, or a `prodops_bench_digest_*` database on the
given Postgres server, dropped afterwards) is migrated and filled inside the database (`INSERT … SELECT`
over a recursive CTE on SQLite, `generate_series` on Postgres; no ORM objects) for one workspace:

- 2,000 accounts with ARR (a few big ones, a long tail), 6 request types, 200 metrics;
- 1,000,000 feedback items over the 700 days before the digest's end (1% in the digest's week), ids rising
  with time; 60% carry one of 12 themes (skewed), the rest a tag list (or none); 85% belong to an account
  (big accounts give more feedback); 70% public, 20% private, 10% DM; 1% deleted;
- 100,000 requests over the same 700 days: older than 30 days 85% done, 12% declined, 3% still open;
  recent ones a mix of new / in progress / waiting / done / declined; first responses within 10 hours,
  resolutions within 10 days, due 3 days after creation;
- 200 metrics x 730 daily points (mixed units and summaries: last / sum / avg / max / min).

`--scale` multiplies the feedback and request counts (metrics stay 200 x 730). Postgres gets ANALYZE after
each load (autovacuum would do it); SQLite does not (the app never runs ANALYZE there).

1. Build time. `bot.digests.render.build_digest` for a weekly digest ending at the last Monday 09:00 UTC,
   with all three sections (12 metrics; feedback top 5 by count, and again by ARR; requests of all types):
   the first build on a new engine (cold: empty connection pool, statement cache and SQLite page cache;
   the OS file cache is not dropped), then the median of `--reps` warm builds, with the chart and with the
   chart drawing stubbed out; the queries of each section timed alone (`query s`) and the chart alone
   (`chart s`). Every SQL statement a build runs is captured and timed, and the feedback, requests and
   metrics statements are EXPLAINed (EXPLAIN QUERY PLAN on SQLite, EXPLAIN (ANALYZE, BUFFERS) on Postgres).
2. 10x history: `--history - 1` times more rows of feedback, requests and metric points are added BEFORE
   the first load's time span (same density, so the digest's period holds the same rows), and 1. is run
   again. Goals: build p50 < 0.5 s; build at 10x / build at 1x < 1.5. Each statement's own 10x/1x ratio
   shows which query reads the history.
3. Fan-out. 500 subscriptions (requests section only, in a small workspace of their own), all due, each
   to its own channel of an in-process Slack emulator. `run_digest_tick` (rendering, claiming, outbox
   rows) then `deliver_pending` passes, at a virtual `now` that moves 1 s (Slack's Retry-After) whenever
   nothing more is due, until all are delivered. Faults: before every delivery pass the emulator is armed
   to answer 429 (Retry-After: 1) to 30% of the posts the pass will make. Checks: exactly one successful
   chat.postMessage per channel (no duplicate, none lost), every outbox row sent, and every 429 honoured
   (the channel's next post came at a `now` at least Retry-After later). Baseline in the same run: the same
   fan-out with no faults.

Timings are printed, never asserted; the exit status is 1 only when something is broken.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import re
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine, create_engine, event, func, insert, select, text
from sqlalchemy.engine import make_url

from bot.digests import render as digest_render
from bot.digests import sections
from bot.digests.schemas import DigestPeriod
from bot.requests import types as request_types
from storage.db import Database
from storage.migrate import upgrade
from storage.models import (
    Account,
    DigestOutbox,
    DigestSubscription,
    FeedbackItem,
    Metric,
    MetricPoint,
    Request,
    RequestType,
    Workspace,
)

TEAM = "T0PRODOPS"
FANOUT_TEAM = "T0FANOUT"
DAY = 86_400
SPAN_DAYS = 700  # feedback and requests of the first load: the 700 days before the digest's end
POINT_DAYS = 730  # daily metric points of the first load
ACCOUNTS = 2_000
METRICS = 200
DIGEST_CHANNEL = "C0FB0007"  # a feedback channel: its private items may be quoted in the digest
BUILD_GOAL_S = 0.5
RATIO_GOAL = 1.5
CHUNK = 1_000_000  # rows per INSERT … SELECT
PRIME = 1_000_003
THEMES = (
    ("Pricing", 22),
    ("Onboarding", 16),
    ("Reporting", 14),
    ("Performance", 11),
    ("Integrations", 9),
    ("Permissions", 7),
    ("Mobile app", 6),
    ("Search", 5),
    ("Notifications", 4),
    ("Billing", 3),
    ("Exports", 2),
    ("Accessibility", 1),
)
TAG_LISTS = (
    ('["billing", "invoices"]', 18),
    ('["sso"]', 14),
    ('["api"]', 12),
    ('["csv", "export"]', 10),
    ('["dashboard"]', 9),
    ('["slack", "notifications"]', 8),
    ('["search"]', 7),
    ('["api", "rate-limits"]', 6),
    ('["mobile"]', 5),
    ('["audit-log", "sso"]', 4),
    ('["localization"]', 3),
    ('["dark-mode"]', 2),
    ("[]", 12),
)
PHRASES = (
    "the CSV export drops the last column when a filter is applied",
    "we need SSO with Okta before the renewal in Q3",
    "dashboards take a long time to load for the whole team",
    "pricing per seat does not work for our contractors",
    "can the weekly report include the accounts we manage",
    "the mobile app logs us out every morning",
    "please add an audit log of permission changes",
    "search does not find tickets by their customer name",
)
REQUEST_TYPES = ("IT access", "Laptop", "Legal review", "Finance approval", "Security review", "Facilities")
UNITS = ("count", "percent", "currency", "duration", "ratio")
SUMMARIES = ("last", "sum", "avg", "max", "min")


# ---- configuration -------------------------------------------------------------------------------------


@dataclass
class Config:
    scale: float
    history: int
    reps: int
    fanout: int
    fault_rate: float
    database_url: str | None
    skip_fanout: bool

    @property
    def feedback(self) -> int:
        return max(1_000, round(1_000_000 * self.scale))

    @property
    def requests(self) -> int:
        return max(100, round(100_000 * self.scale))


def parse_args(argv: Sequence[str] | None) -> Config:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scale", type=float, default=1.0, help="x 1M feedback items, x 100k requests")
    parser.add_argument("--history", type=int, default=10, help="history multiple of the second run (10)")
    parser.add_argument("--reps", type=int, default=5, help="warm builds timed (median)")
    parser.add_argument("--fanout", type=int, default=500, help="due subscriptions in the fan-out")
    parser.add_argument("--fault-rate", type=float, default=0.3, help="share of posts answered 429")
    parser.add_argument("--database-url", help="a SQLite URL (a new file) or a Postgres server URL")
    parser.add_argument("--skip-fanout", action="store_true")
    args = parser.parse_args(argv)
    return Config(
        scale=args.scale,
        history=max(2, args.history),
        reps=max(1, args.reps),
        fanout=max(1, args.fanout),
        fault_rate=min(max(args.fault_rate, 0.0), 0.95),
        database_url=args.database_url,
        skip_fanout=args.skip_fanout,
    )


def digest_end() -> datetime:
    """The last Monday 09:00 UTC: a weekly digest's fire time, and the end of the period it covers."""
    now = datetime.now(UTC)
    end = (now - timedelta(days=now.weekday())).replace(hour=9, minute=0, second=0, microsecond=0)
    return end if end <= now else end - timedelta(days=7)


# ---- databases -----------------------------------------------------------------------------------------


class BenchDatabase:
    """A fresh SQLite file, or a fresh `prodops_bench_digest_*` database on a Postgres server (dropped after)."""

    def __init__(self, requested: str | None, tmp: Path) -> None:
        self.admin_url: str | None = None
        self.name: str | None = None
        if requested is None:
            self.url = f"sqlite:///{tmp / 'digest.db'}"
            return
        parsed = make_url(requested)
        if parsed.get_backend_name() != "postgresql":
            self.url = parsed.render_as_string(hide_password=False)
            return
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        self.admin_url = parsed.render_as_string(hide_password=False)
        self.name = f"prodops_bench_digest_{uuid.uuid4().hex[:10]}"
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


# ---- the data set, generated inside the database -------------------------------------------------------


def h(salt: int) -> str:
    """A pseudo-random integer in [0, PRIME) of the series' `n` (a quadratic residue scrambled by `salt`)."""
    square = f"(((n % {PRIME}) * (n % {PRIME})) % {PRIME})"
    return (
        f"(({square} * {7_919 + salt * 104_729 % 99_991} + n * {31 + salt * 17} + {salt * 7_907}) % {PRIME})"
    )


def weighted_case(salt: int, choices: Sequence[tuple[str, int]], quote: bool = True) -> str:
    """CASE picking one of `choices` with its weight, from h(salt)."""
    total = sum(w for _, w in choices)
    parts, upto = [], 0
    for value, weight in choices[:-1]:
        upto += weight
        literal = "'" + value.replace("'", "''") + "'" if quote else value
        parts.append(f"WHEN {h(salt)} % {total} < {upto} THEN {literal}")
    last = choices[-1][0]
    literal = "'" + last.replace("'", "''") + "'" if quote else last
    return f"CASE {' '.join(parts)} ELSE {literal} END"


class Loader:
    """Bulk rows for one backend: a series of `n`, epoch seconds as the column's stored form, JSON literals."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.backend = engine.dialect.name

    def ts(self, epoch: str) -> str:
        if self.backend == "sqlite":  # how UTCDateTime stores on SQLite: naive UTC, microseconds
            return f"(strftime('%Y-%m-%d %H:%M:%S', {epoch}, 'unixepoch') || '.000000')"
        return f"to_timestamp({epoch})"

    def json(self, literal: str) -> str:
        return literal if self.backend == "sqlite" else f"CAST({literal} AS json)"

    def run_series(
        self, lo: int, hi: int, insert_head: str, select_body: str, params: dict[str, Any]
    ) -> None:
        """INSERT … SELECT over n = lo..hi, in chunks (one transaction each)."""
        for start in range(lo, hi + 1, CHUNK):
            stop = min(hi, start + CHUNK - 1)
            if self.backend == "sqlite":
                sql = (
                    "WITH RECURSIVE s(n) AS (SELECT :lo UNION ALL SELECT n + 1 FROM s WHERE n < :hi) "
                    f"{insert_head} {select_body.replace('{series}', 's')}"
                )
            else:
                series = "generate_series(CAST(:lo AS bigint), CAST(:hi AS bigint)) AS s(n)"
                sql = f"{insert_head} {select_body.replace('{series}', series)}"
            with self.engine.begin() as conn:
                conn.execute(text(sql), {**params, "lo": start, "hi": stop})

    def analyze(self) -> None:
        if self.backend == "postgresql":
            with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(text("ANALYZE"))


def load_dimensions(engine: Engine, end: datetime) -> None:
    """Workspaces, accounts, request types and metrics: small, with Core executemany."""
    created = end - timedelta(days=SPAN_DAYS * 20)
    stamps = {"created_at": created, "updated_at": created}
    accounts = [
        {
            "id": i,
            "team_id": TEAM,
            "name": f"Customer {i}",
            "name_key": f"customer {i}",
            "domain": f"customer{i}.example.com",
            "arr": round(5_000 + 2_000_000 / i + (i * 37 % 1_000) * 10, 2),
            "segment": ("enterprise", "mid-market", "smb")[min(2, i // 200)],
            **stamps,
        }
        for i in range(1, ACCOUNTS + 1)
    ]
    types = []
    for i, name in enumerate(REQUEST_TYPES, start=1):
        spec = request_types.RequestTypeSpec(
            name=name,
            triage_channel_id=f"C0TRIAGE{i}",
            owners=["U0OWNER1"],
            sla=dict(request_types.DEFAULT_SLA),
        )
        types.append({"id": i, "team_id": TEAM, **spec.columns(), **stamps})
    for i, name in enumerate(REQUEST_TYPES[:2], start=len(REQUEST_TYPES) + 1):  # the fan-out workspace's
        spec = request_types.RequestTypeSpec(
            name=name, owners=["U0OWNER1"], sla=dict(request_types.DEFAULT_SLA)
        )
        types.append({"id": i, "team_id": FANOUT_TEAM, **spec.columns(), **stamps})
    metrics = [
        {
            "id": i,
            "team_id": TEAM,
            "key": f"metric_{i:03d}",
            "name": f"Metric {i:03d}",
            "unit": UNITS[i % len(UNITS)],
            "direction": "down_is_good" if i % 4 == 0 else "up_is_good",
            "target": float(200 + i * 10) if i % 3 == 0 else None,
            "summary": SUMMARIES[i % len(SUMMARIES)],
            "period": "week",
            "source": "push",
            "source_config": {},
            "schedule_timezone": "UTC",
            **stamps,
        }
        for i in range(1, METRICS + 1)
    ]
    with engine.begin() as conn:
        conn.execute(
            insert(Workspace),
            [
                {"team_id": t, "name": n} | stamps
                for t, n in ((TEAM, "Acme Corp"), (FANOUT_TEAM, "Fan-out Inc"))
            ],
        )
        conn.execute(insert(Account), accounts)
        conn.execute(insert(RequestType), types)
        conn.execute(insert(Metric), metrics)


def load_feedback(loader: Loader, *, count: int, t0: int, span: int, first_n: int) -> None:
    """`count` feedback items created over [t0, t0 + span), ids rising with time."""
    slot = max(1, span // count)
    epoch = f"(:t0 + ((n - :first) * :span) / :count + {h(1)} % {slot})"
    phrase = "CASE " + " ".join(f"WHEN n % {len(PHRASES)} = {i} THEN '{p}'" for i, p in enumerate(PHRASES))
    phrase += " END"
    themed = f"{h(2)} % 100 < 60"
    account = f"CASE WHEN {h(4)} % 100 < 85 THEN 1 + (({h(5)} % {ACCOUNTS}) * ({h(6)} % {ACCOUNTS})) / {ACCOUNTS} END"
    channel = f"('C0FB' || CASE WHEN {h(7)} % 40 < 10 THEN '000' ELSE '00' END || ({h(7)} % 40))"
    body = f"""
        SELECT :team, channel, e || '.' || n, 'https://acme.slack.com/archives/' || channel || '/p' || e || n,
               'Customer ' || (n % 2000) || ': ' || ({phrase}),
               'U0CUST' || (n % 300), 'U0PM' || (n % 12),
               {weighted_case(8, (("reaction", 5), ("shortcut", 2), ("command", 2), ("channel", 1)))},
               {account},
               {weighted_case(9, (("feature_request", 45), ("bug", 30), ("complaint", 10), ("question", 10), ("praise", 5)))},
               {weighted_case(10, (("nice_to_have", 50), ("important", 40), ("critical", 10)))},
               {loader.json(f"CASE WHEN {themed} THEN '[]' ELSE {weighted_case(11, TAG_LISTS)} END")},
               CASE WHEN {themed} THEN {weighted_case(3, THEMES)} END,
               {weighted_case(12, (("public", 70), ("private", 20), ("dm", 10)))},
               CASE WHEN {h(13)} % 100 = 0 THEN {loader.ts("e + 3600")} END,
               {loader.ts("e")}, {loader.ts("e")}
        FROM (SELECT n, {epoch} AS e, {channel} AS channel FROM {{series}}) AS g
    """
    head = (
        "INSERT INTO feedback_items (team_id, channel_id, message_ts, permalink, text, author_user_id, "
        "captured_by_user_id, source, account_id, kind, importance, tags, theme, visibility, deleted_at, "
        "created_at, updated_at)"
    )
    params = {"team": TEAM, "t0": t0, "span": span, "count": count, "first": first_n}
    loader.run_series(first_n, first_n + count - 1, head, body, params)


def load_requests(
    loader: Loader, *, team: str, count: int, t0: int, span: int, first_n: int, end: int, types: int
) -> None:
    """`count` requests created over [t0, t0 + span), their status and clocks as of `end`."""
    slot = max(1, span // count)
    epoch = f"(:t0 + ((n - :first) * :span) / :count + {h(21)} % {slot})"
    old = weighted_case(22, (("done", 85), ("declined", 12), ("new", 1), ("in_progress", 1), ("waiting", 1)))
    recent = weighted_case(
        22, (("new", 15), ("in_progress", 30), ("waiting", 10), ("done", 40), ("declined", 5))
    )
    answered = f"CASE WHEN (status <> 'new' OR {h(23)} % 5 = 0) AND e + {h(24)} % 36000 < :end THEN e + {h(24)} % 36000 END"
    resolved = (
        f"CASE WHEN status IN ('done', 'declined') THEN e + {h(25)} % "
        f"(CASE WHEN :end - e < 864000 THEN :end - e ELSE 864000 END) END"
    )
    inner = f"""
        SELECT n, e, CASE WHEN :end - e > 2592000 THEN {old} ELSE {recent} END AS status
        FROM (SELECT n, {epoch} AS e FROM {{series}}) AS g
    """
    timed = f"SELECT n, e, status, {answered} AS answered, {resolved} AS resolved FROM ({inner}) AS st"
    body = f"""
        SELECT :team, 1 + (:type0 + {h(26)} % :types), 'Request ' || n || ': ' || ({weighted_case(27, [(p[:40], 1) for p in PHRASES])}),
               {loader.json("'{}'")},
               {weighted_case(28, (("urgent", 5), ("high", 20), ("normal", 55), ("low", 20)))},
               status, 'U0REQ' || (n % 500), CASE WHEN status <> 'new' THEN 'U0AGENT' || (n % 25) END,
               'C0ASK' || (n % 12), 'https://acme.slack.com/archives/C0ASK/p' || e || n, 'C0TRIAGE1', 'command',
               {loader.ts("e")}, {loader.ts("COALESCE(resolved, answered, e)")},
               CASE WHEN answered IS NOT NULL THEN {loader.ts("answered")} END,
               CASE WHEN resolved IS NOT NULL THEN {loader.ts("resolved")} END,
               CASE WHEN status = 'waiting' THEN {loader.ts("COALESCE(answered, e)")} END,
               {loader.ts("e + 14400")}, {loader.ts("e + 259200")}
        FROM ({timed}) AS r
    """
    head = (
        "INSERT INTO requests (team_id, type_id, title, field_values, priority, status, requester_user_id, "
        "assignee_user_id, channel_id, permalink, triage_channel_id, source, created_at, updated_at, "
        "first_response_at, resolved_at, waiting_since, first_response_due_at, due_at)"
    )
    params = {"team": team, "t0": t0, "span": span, "count": count, "first": first_n, "end": end}
    params |= {"types": types, "type0": 0 if team == TEAM else len(REQUEST_TYPES)}
    loader.run_series(first_n, first_n + count - 1, head, body, params)


def load_points(loader: Loader, *, day0: int, k_lo: int, k_hi: int) -> None:
    """One point per metric per day at midnight UTC: day0 - k days for k in [k_lo, k_hi]."""
    value = (
        "CASE WHEN m.unit = 'percent' THEN (m.id % 50) + ((n * 37 + m.id * 11) % 41) "
        "ELSE m.id * 10 + (n * 37 + m.id * 11) % 101 + (:k_hi - n) / 7 END"
    )
    body = f"""
        SELECT m.team_id, m.id, {loader.ts(":day0 - n * 86400")}, {value},
               {loader.ts(":day0 - n * 86400")}, {loader.ts(":day0 - n * 86400")}
        FROM metrics AS m CROSS JOIN {{series}} WHERE m.team_id = :team
    """
    head = "INSERT INTO metric_points (team_id, metric_id, ts, value, created_at, updated_at)"
    loader.run_series(k_lo, k_hi, head, body, {"day0": day0, "k_hi": k_hi, "team": TEAM})


def row_counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            name: int(conn.scalar(select(func.count()).select_from(model)) or 0)
            for name, model in (
                ("feedback_items", FeedbackItem),
                ("requests", Request),
                ("metric_points", MetricPoint),
            )
        }


# ---- timing a build ------------------------------------------------------------------------------------


@dataclass
class Statement:
    label: str
    sql: str
    params: Any
    seconds: float


class StatementLog:
    """Every SQL statement the engine runs while `recording`, with its parameters and duration."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.recording = False
        self.statements: list[Statement] = []
        event.listen(engine, "before_cursor_execute", self._before)
        event.listen(engine, "after_cursor_execute", self._after)

    def _before(
        self, conn: Any, _cursor: Any, statement: str, parameters: Any, _ctx: Any, _many: bool
    ) -> None:
        conn.info["bench_started"] = time.perf_counter()

    def _after(
        self, conn: Any, _cursor: Any, statement: str, parameters: Any, _ctx: Any, _many: bool
    ) -> None:
        if self.recording:
            took = time.perf_counter() - conn.info.pop("bench_started", time.perf_counter())
            self.statements.append(Statement(label_of(statement), statement, parameters, took))

    @contextlib.contextmanager
    def record(self) -> Iterator[list[Statement]]:
        self.statements = []
        self.recording = True
        try:
            yield self.statements
        finally:
            self.recording = False


def label_of(sql: str) -> str:
    """A short name for one of the digest's statements."""
    flat = " ".join(sql.split())
    if "FROM metric_points" in flat or "JOIN metric_points" in flat:
        return "metrics: points of 8 windows"
    if "FROM metrics" in flat:
        return "metrics: definitions"
    if "feedback_items" in flat:
        return "feedback: examples to quote" if "row_number()" in flat else "feedback: themes, 2 windows"
    if "FROM request_types" in flat and "FROM requests" not in flat:
        return "requests: types"
    if "FROM requests" in flat:
        if "GROUP BY" in flat:
            return "requests: counts"
        if "LIMIT" in flat:
            return "requests: oldest overdue"
        return "requests: response/resolution times"
    return flat[:50]


@dataclass
class Build:
    """Timings of one digest configuration at one history size."""

    by: str
    cold: float = 0.0
    builds: list[float] = field(default_factory=list)
    no_chart: list[float] = field(default_factory=list)
    sections: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    chart: list[float] = field(default_factory=list)
    statements: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    captured: dict[str, Statement] = field(default_factory=dict)
    blocks: int = 0
    feedback_items: int = 0
    opened: int = 0

    @property
    def build_p50(self) -> float:
        return statistics.median(self.builds)

    @property
    def query_p50(self) -> float:
        return sum(statistics.median(v) for v in self.sections.values())

    @property
    def chart_p50(self) -> float:
        return statistics.median(self.chart) if self.chart else 0.0


def make_subscription(by: str) -> DigestSubscription:
    return DigestSubscription(
        id=1,
        team_id=TEAM,
        channel_id=DIGEST_CHANNEL,
        name="Weekly product digest",
        cadence="weekly",
        cron="0 9 * * 1",
        timezone="UTC",
        sections={
            "metrics": {"keys": [f"metric_{i:03d}" for i in range(5, 200, 16)][:12]},
            "feedback": {"top": 5, "by": by},
            "requests": {"types": []},
        },
        skip_if_empty=False,
        created_by_user_id="U0PM1",
    )


def weekly_period(end: datetime) -> DigestPeriod:
    start = end - timedelta(days=7)
    return DigestPeriod(
        start=start,
        end=end,
        label=f"{start:%a %d %b} – {end - timedelta(days=1):%a %d %b %Y}",
        key=f"{start:%Y-%m-%dT%H:%MZ}/{end:%Y-%m-%dT%H:%MZ}",
    )


@contextlib.contextmanager
def chart_stubbed() -> Iterator[None]:
    """build_digest with the chart drawing replaced by nothing (the module attribute, restored after)."""
    original = digest_render.metrics_chart
    digest_render.metrics_chart = lambda *_a, **_k: None  # type: ignore[assignment]
    try:
        yield
    finally:
        digest_render.metrics_chart = original  # type: ignore[assignment]


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    value = fn()
    return time.perf_counter() - started, value


def measure(url: str, by: str, end: datetime, reps: int) -> Build:
    """Cold build on a new engine, then warm builds (with and without chart), sections and chart alone."""
    db = Database(url)
    log = StatementLog(db.engine)
    result = Build(by=by)
    subscription, period, now = make_subscription(by), weekly_period(end), end
    chosen = subscription.sections

    def build() -> Any:
        with db.read() as s:
            return digest_render.build_digest(
                db_session=s, subscription=subscription, period=period, team_name="Acme Corp", now=now
            )

    try:
        result.cold, rendered = timed(build)
        result.blocks = len(rendered.blocks)
        for _ in range(reps):
            with log.record() as statements:
                took, _ = timed(build)
            result.builds.append(took)
            seen: Counter[str] = Counter()
            for st in statements:
                if st.label in ("BEGIN", "COMMIT", "ROLLBACK"):
                    continue
                seen[st.label] += 1
                label = st.label if seen[st.label] == 1 else f"{st.label} ({seen[st.label]})"
                result.statements[label].append(st.seconds)
                result.captured[label] = st
        with chart_stubbed():
            for _ in range(reps):
                result.no_chart.append(timed(build)[0])
        for _ in range(reps):
            with db.read() as s:
                took, metrics = timed(
                    lambda s=s: sections.gather_metrics(
                        db_session=s, team_id=TEAM, keys=chosen["metrics"]["keys"], period=period
                    )
                )
                result.sections["metrics"].append(took)
                took, feedback = timed(
                    lambda s=s: sections.gather_feedback(
                        db_session=s, team_id=TEAM, channel_id=DIGEST_CHANNEL, period=period, by=by, top=5
                    )
                )
                result.sections["feedback"].append(took)
                took, requests = timed(
                    lambda s=s: sections.gather_requests(
                        db_session=s, team_id=TEAM, type_names=[], period=period, now=now
                    )
                )
                result.sections["requests"].append(took)
            result.chart.append(timed(lambda m=metrics: digest_render.metrics_chart(m.series))[0])
        result.feedback_items, result.opened = feedback.items, requests.opened
    finally:
        db.dispose()
    return result


# ---- query plans ---------------------------------------------------------------------------------------


def explain(url: str, st: Statement) -> list[str]:
    """The plan of a captured statement, run with the parameters it was run with."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {st.sql}", tuple(st.params)).all()
                return [str(row[-1]) for row in rows]
            rows = conn.exec_driver_sql(f"EXPLAIN (ANALYZE, BUFFERS) {st.sql}", st.params).all()
            return [str(row[0]) for row in rows]
    finally:
        engine.dispose()


BIG_TABLES = ("feedback_items", "requests", "metric_points")


def access_verdict(plan: Sequence[str]) -> str:
    """How the plan reaches the big tables: a range of an index, the team's whole slice, or a full scan."""
    verdicts = []
    for i, line in enumerate(plan):
        stripped = line.strip().removeprefix("->").strip()
        for table in BIG_TABLES:  # SQLite
            if re.match(rf"SCAN {table}\b", stripped):
                verdicts.append(f"FULL SCAN of {table}")
            match = re.match(rf"SEARCH {table} USING (?:COVERING )?INDEX (\S+) \((.*)\)", stripped)
            if match:
                index, cond = match.groups()
                if any(op in cond for op in (">", "<")):
                    verdicts.append(f"{table}: {index} range")
                elif cond == "team_id=?":
                    verdicts.append(f"{table}: {index} (team_id=?) → EVERY ROW OF THE TEAM")
                else:
                    verdicts.append(f"{table}: {index} lookup")
        node = re.search(
            r"(Seq Scan|Index Scan|Index Only Scan|Bitmap Heap Scan) (?:Backward )?(?:using \S+ )?on (\w+)",
            line,
        )
        if node is None or node.group(2) not in BIG_TABLES:  # Postgres
            continue
        kind, table = node.groups()
        rows = re.search(r"actual time=\S+ rows=(\d+) loops=(\d+)", line)
        loops = int(rows.group(2)) if rows else 1
        read = int(rows.group(1)) * loops if rows else 0
        details = []
        for follow in plan[i + 1 :]:
            if "->" in follow:
                break
            details.append(follow)
        conds = " ".join(d for d in details if "Cond:" in d)
        if kind == "Bitmap Heap Scan":  # the index condition is on the child Bitmap Index Scan
            conds += " ".join(d for d in plan[i + 1 : i + 8] if "Index Cond:" in d)
        removed = loops * sum(  # shown per loop (per worker of a parallel scan)
            int(m) for d in details for m in re.findall(r"Rows Removed by (?:Filter|Index Recheck): (\d+)", d)
        )
        if kind == "Seq Scan":
            verdicts.append(f"FULL SCAN of {table} ({read + removed:,} rows read)")
        else:
            ranged = re.search(r"\b(created_at|ts|due_at|first_response_at|resolved_at)\)? ?[<>]", conds)
            other = re.sub(r"\(\(?team_id\)?(::text)? = '[^']*'(::text)?\)", "", conds)
            keyed = re.search(r"\w+\)? = ", other)
            what = "range" if ranged else ("lookup" if keyed else "EVERY ROW OF THE TEAM")
            verdicts.append(f"{table}: {kind} {what} ({read + removed:,} rows read)")
    return "; ".join(dict.fromkeys(verdicts)) or "no big table"


# ---- fan-out -------------------------------------------------------------------------------------------


@dataclass
class Fanout:
    """One fan-out of `subscriptions` due digests through the scheduler and the outbox."""

    name: str
    subscriptions: int
    faults: bool
    wall: float = 0.0
    render_s: float = 0.0
    deliver_s: float = 0.0
    ticks: int = 0
    passes: int = 0
    virtual_s: float = 0.0
    armed: int = 0
    posts: int = 0
    ok_posts: int = 0
    rate_limited_calls: int = 0
    honoured: int = 0
    delivered_channels: int = 0
    duplicates: int = 0
    missing: int = 0
    rows_sent: int = 0
    distinct_ts: int = 0
    result_rate_limited: int = 0
    other_errors: Counter[str] = field(default_factory=Counter)


def add_fanout_subscriptions(engine: Engine, channels: list[str], due: datetime, tag: str) -> None:
    stamps = {"created_at": due - timedelta(days=30), "updated_at": due - timedelta(days=30)}
    rows = [
        {
            "team_id": FANOUT_TEAM,
            "channel_id": channel,
            "name": f"Requests digest {tag} {i}",
            "cadence": "weekly",
            "cron": "0 9 * * 1",
            "timezone": "UTC",
            "sections": {"requests": {"types": []}},
            "skip_if_empty": False,
            "created_by_user_id": "U0PM1",
            "next_run_at": due,
            **stamps,
        }
        for i, channel in enumerate(channels)
    ]
    with engine.begin() as conn:
        conn.execute(insert(DigestSubscription), rows)


def run_fanout(
    db: Database, emulator: Any, client: Any, *, name: str, size: int, fault_rate: float, end: datetime
) -> Fanout:
    """Due subscriptions → outbox → Slack, at a virtual now advanced by Retry-After until all are sent."""
    from bot.digests.outbox import deliver_pending
    from bot.digests.scheduler import run_digest_tick

    tag = "faults" if fault_rate else "base"
    channels = [emulator.add_channel(f"digest-{tag}-{i}")["id"] for i in range(size)]
    add_fanout_subscriptions(db.engine, channels, end, tag)
    wanted = set(channels)
    result = Fanout(name=name, subscriptions=size, faults=bool(fault_rate))
    can_defer = "deliver" in inspect.signature(run_digest_tick).parameters
    now = end + timedelta(seconds=30)
    passes: list[tuple[float, float, datetime]] = []  # wall-clock start and end, virtual now

    def due_rows() -> tuple[int, int]:
        with db.read() as s:
            subs = s.scalar(
                select(func.count()).where(
                    DigestSubscription.team_id == FANOUT_TEAM,
                    DigestSubscription.paused_at.is_(None),
                    DigestSubscription.next_run_at <= now,
                )
            )
            rows = s.scalar(
                select(func.count()).where(
                    DigestOutbox.status.in_(("pending", "sending")), DigestOutbox.next_attempt_at <= now
                )
            )
        return int(subs or 0), int(rows or 0)

    def arm(posts: int) -> None:
        faults = round(fault_rate * posts)
        if faults:
            emulator.fail("chat.postMessage", status=429, retry_after=1, times=faults)
            result.armed += faults

    emulator.reset_calls()
    started = time.perf_counter()
    for _ in range(600):  # bounded: 600 virtual seconds
        subs, rows = due_rows()
        if not subs and not rows:
            with db.read() as s:
                left = s.scalar(
                    select(func.count()).where(
                        DigestOutbox.team_id == FANOUT_TEAM, DigestOutbox.status.in_(("pending", "sending"))
                    )
                )
            if not left:
                break
            now += timedelta(seconds=1)  # Slack's Retry-After
            continue
        while subs:
            real, wall = time.perf_counter(), time.time()
            if can_defer:
                run_digest_tick(db=db, client=client, now=now, deliver=False)
            else:  # the tick delivers one batch itself: arm for what it will post
                arm(min(50, rows + min(100, subs)))
                run_digest_tick(db=db, client=client, now=now)
                passes.append((wall, time.time(), now))
            result.render_s += time.perf_counter() - real
            result.ticks += 1
            subs, rows = due_rows()
        while rows:
            arm(min(50, rows))
            real, wall = time.perf_counter(), time.time()
            delivery = deliver_pending(db=db, client=client, now=now)
            passes.append((wall, time.time(), now))
            result.deliver_s += time.perf_counter() - real
            result.passes += 1
            result.result_rate_limited += delivery.rate_limited
            _subs, rows = due_rows()
    result.wall = time.perf_counter() - started
    result.virtual_s = (now - end - timedelta(seconds=30)).total_seconds()

    # What Slack saw: one successful post per channel, and each 429 followed by a post only after Retry-After.
    def virtual_at(real: float) -> datetime | None:
        for lo, hi, at in passes:
            if lo <= real <= hi:
                return at
        return None

    by_channel: dict[str, list[tuple[float, int, str | None]]] = defaultdict(list)
    ok: Counter[str] = Counter()
    for call in emulator.calls("chat.postMessage"):
        channel = call.params.get("channel")
        if channel not in wanted:
            continue
        result.posts += 1
        if call.response.get("ok"):
            ok[channel] += 1
        elif call.http_status == 429:
            result.rate_limited_calls += 1
        else:
            result.other_errors[str(call.response.get("error"))] += 1
        by_channel[channel].append((call.at, call.http_status, call.response.get("error")))
    for calls in by_channel.values():
        calls.sort()
        for (at, status, _err), following in zip(calls, calls[1:] + [None], strict=True):
            if status != 429 or following is None:
                continue
            before, after = virtual_at(at), virtual_at(following[0])
            if before is not None and after is not None and after >= before + timedelta(seconds=1):
                result.honoured += 1
    result.ok_posts = sum(ok.values())
    result.delivered_channels = sum(1 for c in channels if ok[c] >= 1)
    result.duplicates = sum(n - 1 for n in ok.values() if n > 1)
    result.missing = sum(1 for c in channels if ok[c] == 0)
    with db.read() as s:
        sent = s.execute(
            select(DigestOutbox.message_ts).where(
                DigestOutbox.channel_id.in_(channels), DigestOutbox.status == "sent"
            )
        ).all()
    result.rows_sent = len(sent)
    result.distinct_ts = len({ts for (ts,) in sent})
    return result


# ---- the run -------------------------------------------------------------------------------------------


@dataclass
class Run:
    """One history size on one backend."""

    history: int
    rows: dict[str, int]
    load_s: float
    builds: dict[str, Build]


class Bench:
    def __init__(self, config: Config, console: Console) -> None:
        self.config = config
        self.console = console
        self.broken: list[str] = []
        self.runs: list[Run] = []
        self.fanouts: list[Fanout] = []
        self.plans: dict[str, tuple[list[str], str]] = {}
        self.backend = "sqlite"

    def check(self, ok: bool, message: str) -> None:
        if not ok:
            self.broken.append(message)
            self.console.print(f"[red]BROKEN:[/red] {message}")

    def run(self) -> int:
        config, console = self.config, self.console
        started = time.perf_counter()
        end = digest_end()
        t_end = int(end.timestamp())
        day0 = int(end.replace(hour=0).timestamp())
        span = SPAN_DAYS * DAY
        with tempfile.TemporaryDirectory(prefix="prodops-bench-digest-") as tmp:
            database = BenchDatabase(config.database_url, Path(tmp))
            try:
                console.print(f"Database: {database.shown}; digest period ends {end:%a %Y-%m-%d %H:%M} UTC")
                upgrade(database.url)
                engine = Database(database.url).engine
                self.backend = engine.dialect.name
                loader = Loader(engine)
                try:
                    load_s, _ = timed(
                        lambda: (
                            load_dimensions(engine, end),
                            load_feedback(
                                loader, count=config.feedback, t0=t_end - span, span=span, first_n=1
                            ),
                            load_requests(
                                loader,
                                team=TEAM,
                                count=config.requests,
                                t0=t_end - span,
                                span=span,
                                first_n=1,
                                end=t_end,
                                types=len(REQUEST_TYPES),
                            ),
                            load_requests(
                                loader,
                                team=FANOUT_TEAM,
                                count=500,
                                t0=t_end - 60 * DAY,
                                span=60 * DAY,
                                first_n=1,
                                end=t_end,
                                types=2,
                            ),
                            load_points(loader, day0=day0, k_lo=0, k_hi=POINT_DAYS - 1),
                            loader.analyze(),
                        )
                    )
                    self.measure_history(database.url, 1, engine, load_s, end)
                    if not config.skip_fanout:
                        self.fanout(database.url, end)
                    more = config.history - 1
                    load_s, _ = timed(
                        lambda: (
                            load_feedback(
                                loader,
                                count=config.feedback * more,
                                t0=t_end - span * config.history,
                                span=span * more,
                                first_n=config.feedback + 1,
                            ),
                            load_requests(
                                loader,
                                team=TEAM,
                                count=config.requests * more,
                                t0=t_end - span * config.history,
                                span=span * more,
                                first_n=config.requests + 1,
                                end=t_end,
                                types=len(REQUEST_TYPES),
                            ),
                            load_points(
                                loader, day0=day0, k_lo=POINT_DAYS, k_hi=POINT_DAYS * config.history - 1
                            ),
                            loader.analyze(),
                        )
                    )
                    self.measure_history(database.url, config.history, engine, load_s, end)
                finally:
                    engine.dispose()
            finally:
                database.drop()
        self.report(time.perf_counter() - started)
        return 1 if self.broken else 0

    def measure_history(self, url: str, history: int, engine: Engine, load_s: float, end: datetime) -> None:
        rows = row_counts(engine)
        self.console.print(
            f"{history}x history loaded in {load_s:.0f} s: "
            + ", ".join(f"{n:,} {name}" for name, n in rows.items())
        )
        builds = {by: measure(url, by, end, self.config.reps) for by in ("count", "arr")}
        run = Run(history=history, rows=rows, load_s=load_s, builds=builds)
        first = self.runs[0] if self.runs else None
        for by, b in builds.items():
            self.console.print(
                f"  by {by}: cold {b.cold:.3f} s, warm p50 {b.build_p50:.3f} s, no chart "
                f"{statistics.median(b.no_chart):.3f} s, queries {b.query_p50:.3f} s, chart {b.chart_p50:.3f} s; "
                f"{b.feedback_items:,} feedback items, {b.opened:,} requests opened, {b.blocks} blocks"
            )
            if first is not None:  # same period, same rows inside it: the digest must say the same
                before = first.builds[by]
                self.check(
                    (b.feedback_items, b.opened) == (before.feedback_items, before.opened),
                    f"by {by}: the period's counts changed with history "
                    f"({before.feedback_items}/{before.opened} → {b.feedback_items}/{b.opened})",
                )
        self.runs.append(run)
        for label, st in builds["count"].captured.items():
            if label.startswith(("feedback", "requests", "metrics: points")):
                self.plans[f"{label} @ {history}x"] = (explain(url, st), st.sql)

    def fanout(self, url: str, end: datetime) -> None:
        from bot.devkit.emulator import SlackEmulator

        try:
            from bot.digests.outbox import delivery_client
        except ImportError:  # pragma: no cover - older outbox
            from slack_sdk import WebClient

            def delivery_client(token: str, base_url: str, *, timeout: int = 30) -> Any:
                return WebClient(token=token, base_url=base_url, timeout=timeout, retry_handlers=[])

        db = Database(url)
        emulator = SlackEmulator().start()
        try:
            client = delivery_client(emulator.bot_token, emulator.url)
            for name, rate in (
                ("baseline, no faults", 0.0),
                (f"{self.config.fault_rate:.0%} answered 429", self.config.fault_rate),
            ):
                result = run_fanout(
                    db, emulator, client, name=name, size=self.config.fanout, fault_rate=rate, end=end
                )
                self.fanouts.append(result)
                self.console.print(
                    f"  fan-out {name}: {result.ok_posts} posted in {result.wall:.1f} s, "
                    f"{result.rate_limited_calls} x 429 ({result.honoured} honoured), "
                    f"{result.virtual_s:.0f} virtual s"
                )
                n = result.subscriptions
                self.check(result.missing == 0, f"fan-out {name}: {result.missing} channels got no digest")
                self.check(result.duplicates == 0, f"fan-out {name}: {result.duplicates} duplicate posts")
                self.check(
                    result.rows_sent == n and result.distinct_ts == n,
                    f"fan-out {name}: {result.rows_sent} outbox rows sent, {result.distinct_ts} distinct ts",
                )
                self.check(
                    result.honoured == result.rate_limited_calls,
                    f"fan-out {name}: {result.rate_limited_calls - result.honoured} posts retried before Retry-After",
                )
                self.check(
                    not result.other_errors, f"fan-out {name}: other errors {dict(result.other_errors)}"
                )
        finally:
            emulator.stop()
            db.dispose()

    # ---- the report ---------------------------------------------------------------------------------

    def report(self, elapsed: float) -> None:
        console, config = self.console, self.config
        backend = "SQLite" if self.backend == "sqlite" else "Postgres"
        data = Table(title=f"Data set ({backend}, --scale {config.scale:g})")
        for column in ("history", "feedback_items", "requests", "metric_points", "load s"):
            data.add_column(column, justify="right")
        for run in self.runs:
            data.add_row(
                f"{run.history}x",
                f"{run.rows['feedback_items']:,}",
                f"{run.rows['requests']:,}",
                f"{run.rows['metric_points']:,}",
                f"{run.load_s:.0f}",
            )
        console.print(data)

        first = self.runs[0] if self.runs else None
        table = Table(
            title=f"build_digest, weekly, 12 metrics + feedback top 5 + requests (all types), {config.reps} warm runs"
        )
        times = f"{config.history}x/1x"
        for column in (
            "backend",
            "history",
            "feedback by",
            "cold s",
            "build s p50",
            "no chart s",
            "query s",
            "chart s",
            f"ratio {times}",
            f"ratio {times} no chart",
            f"build < {BUILD_GOAL_S} s",
            f"ratio < {RATIO_GOAL}",
            f"no-chart ratio < {RATIO_GOAL}",
        ):
            table.add_column(column, justify="right")

        def verdict(ok: bool | None) -> str:
            return "-" if ok is None else ("PASS" if ok else "[red]MISS[/red]")

        for run in self.runs:
            for by, b in run.builds.items():
                base = first.builds[by] if first and run is not first else None
                ratio = b.build_p50 / base.build_p50 if base else None
                bare = statistics.median(b.no_chart) / statistics.median(base.no_chart) if base else None
                table.add_row(
                    backend,
                    f"{run.history}x",
                    by,
                    f"{b.cold:.3f}",
                    f"{b.build_p50:.3f}",
                    f"{statistics.median(b.no_chart):.3f}",
                    f"{b.query_p50:.3f}",
                    f"{b.chart_p50:.3f}",
                    f"{ratio:.2f}x" if ratio is not None else "-",
                    f"{bare:.2f}x" if bare is not None else "-",
                    verdict(b.build_p50 < BUILD_GOAL_S),
                    verdict(None if ratio is None else ratio < RATIO_GOAL),
                    verdict(None if bare is None else bare < RATIO_GOAL),
                )
        console.print(table)

        if len(self.runs) >= 2:
            last = self.runs[-1]
            per = Table(
                title=f"Per section and per statement (feedback by count), median ms, {last.history}x vs 1x"
            )
            for column in (
                "what",
                "1x ms",
                f"{last.history}x ms",
                "ratio",
                "access path (at the larger history)",
            ):
                per.add_column(
                    column,
                    justify="left" if column in ("what", "access path (at the larger history)") else "right",
                )
            a, b = first.builds["count"], last.builds["count"]  # type: ignore[union-attr]
            for name in ("metrics", "feedback", "requests"):
                x, y = statistics.median(a.sections[name]), statistics.median(b.sections[name])
                per.add_row(f"section: {name}", f"{x * 1000:.1f}", f"{y * 1000:.1f}", f"{y / x:.2f}x", "")
            x, y = a.chart_p50, b.chart_p50
            per.add_row("chart (matplotlib)", f"{x * 1000:.1f}", f"{y * 1000:.1f}", f"{y / x:.2f}x", "")
            for label in b.statements:
                if label not in a.statements:
                    continue
                x, y = statistics.median(a.statements[label]), statistics.median(b.statements[label])
                plan = self.plans.get(f"{label} @ {last.history}x")
                verdict = access_verdict(plan[0]) if plan else ""
                ratio = y / x if x else float("nan")
                flag = " [red](grows with history)[/red]" if ratio >= 3 else ""
                per.add_row(
                    f"  {label}", f"{x * 1000:.2f}", f"{y * 1000:.2f}", f"{ratio:.2f}x{flag}", verdict
                )
            console.print(per)

        largest = f"@ {self.runs[-1].history}x" if self.runs else ""
        for key, (plan, sql) in self.plans.items():
            if not key.endswith(largest) or key.startswith("requests: types"):
                continue
            verdict = access_verdict(plan)
            full = "FULL SCAN" in verdict or "EVERY ROW" in verdict
            mark = "[red]READS THE WHOLE HISTORY[/red] " if full else ""
            console.print(f"\n[bold]{key}[/bold] {mark}— {verdict}")
            if full:
                console.print(f"  {' '.join(sql.split())}", markup=False, highlight=False)
            for line in plan:
                console.print(f"    {line}", markup=False, highlight=False)

        if self.fanouts:
            fan = Table(
                title=f"Fan-out: {config.fanout} due subscriptions (requests only) → outbox → emulator"
            )
            for column in (
                "run",
                "wall s",
                "render s",
                "deliver s",
                "ticks",
                "delivery passes",
                "virtual s",
                "posts",
                "429s",
                "429s honoured",
                "delivered",
                "duplicates",
                "rows sent",
                "digests/s",
            ):
                fan.add_column(column, justify="left" if column == "run" else "right")
            for f in self.fanouts:
                fan.add_row(
                    f.name,
                    f"{f.wall:.1f}",
                    f"{f.render_s:.1f}",
                    f"{f.deliver_s:.1f}",
                    str(f.ticks),
                    str(f.passes),
                    f"{f.virtual_s:.0f}",
                    f"{f.posts:,}",
                    f"{f.rate_limited_calls:,}",
                    f"{f.honoured:,}",
                    f"{f.delivered_channels:,}",
                    str(f.duplicates),
                    f"{f.rows_sent:,}",
                    f"{f.subscriptions / f.wall:.0f}" if f.wall else "-",
                )
            console.print(fan)
            if len(self.fanouts) == 2 and self.fanouts[0].wall:
                base, faulty = self.fanouts
                console.print(
                    f"With faults / baseline: wall {faulty.wall / base.wall:.2f}x, deliver "
                    f"{faulty.deliver_s / base.deliver_s:.2f}x; 429s armed {faulty.armed}, seen "
                    f"{faulty.rate_limited_calls}, counted by deliver_pending {faulty.result_rate_limited}."
                )
        console.print(
            f"Total {elapsed:.0f} s. "
            + ("[red]BROKEN[/red]: " + "; ".join(self.broken) if self.broken else "Nothing broken.")
        )


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_args(argv)
    console = Console(width=max(Console().width, 180))
    return Bench(config, console).run()


if __name__ == "__main__":
    sys.exit(main())
