"""Ack latency and throughput of signed Slack events: the real ProdOps server beside a bare Bolt app.

    .venv/bin/python bench/ack.py            # full run, under ~2 minutes
    .venv/bin/python bench/ack.py --quick    # ~20 s smoke run

Both servers run as child processes behind the same gunicorn configuration (bot.server.GunicornServer),
both talk to one Slack Web API emulator (a separate child process), and both get the same traffic:
signed `reaction_added` event deliveries over keep-alive HTTP on 127.0.0.1. See bench/README.md.
Timings are printed, never asserted: the exit status is 1 only when something is broken (a non-200
answer, a transport error, a server that died, deliveries or feedback items missing from the database).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import itertools
import math
import multiprocessing
import os
import platform
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import slack_bolt
from rich.console import Console
from rich.table import Table
from slack_sdk.signature import SignatureVerifier
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from bot.devkit.driver import SlackDriver
from bot.devkit.server_process import ServerProcess, free_port
from bot.settings import Settings

REPO = Path(__file__).resolve().parent.parent
SIGNING_SECRET = "bench-signing-secret-0123456789abcdef"
EVENTS_PATH = "/slack/events"
QUIET_REACTION = "tada"  # not the feedback emoji: ack + inbox insert, the listener returns at once
FEEDBACK_REACTION = "bulb"  # the default feedback emoji: the whole capture path after the ack
SCENARIO_LABELS = {QUIET_REACTION: "tada (ack+inbox)", FEEDBACK_REACTION: "bulb (+capture)"}
GOAL_RATIO = 0.8
GOAL_P99 = 0.100
MESSAGES_PER_CHANNEL = 100  # the emulator scans a channel's history per call; keep channels short
USERS = 20

Target = tuple[str, str, str]  # (channel id, message ts, message author)


# ---- configuration --------------------------------------------------------------------------------


@dataclass
class Config:
    rate: float
    duration: float
    warmup: float
    closed_duration: float
    closed_warmup: float
    clients: int
    senders: int
    timeout: float
    drain_timeout: float
    pool_rps: float
    database_url: str | None
    quick: bool

    @property
    def open_requests(self) -> int:
        return int(round((self.warmup + self.duration) * self.rate))

    @property
    def closed_pool(self) -> int:
        return int((self.closed_warmup + self.closed_duration) * self.pool_rps)


def parse_args(argv: Sequence[str] | None) -> Config:
    parser = argparse.ArgumentParser(
        description="Ack latency (open loop at a fixed rate) and max throughput (closed loop) of signed "
        "Slack events: ProdOps vs a bare Bolt app served the same way."
    )
    parser.add_argument("--quick", action="store_true", help="a short smoke run (~20 s)")
    parser.add_argument("--rate", type=float, default=200.0, help="open-loop rate, requests/s (200)")
    parser.add_argument(
        "--duration", type=float, default=None, help="measured seconds of each open-loop run (12; quick 1.5)"
    )
    parser.add_argument("--warmup", type=float, default=None, help="open-loop warm-up seconds (2; quick 0.5)")
    parser.add_argument(
        "--closed-duration",
        type=float,
        default=None,
        help="measured seconds of each closed-loop run (8; quick 1)",
    )
    parser.add_argument("--clients", type=int, default=16, help="closed-loop concurrent keep-alive clients")
    parser.add_argument("--senders", type=int, default=64, help="open-loop sender threads (connections)")
    parser.add_argument("--timeout", type=float, default=10.0, help="per-request timeout, seconds")
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=None,
        help="how long to wait for ProdOps to finish work queued after its acks (30; quick 15)",
    )
    parser.add_argument(
        "--pool-rps",
        type=float,
        default=2000.0,
        help="closed-loop request pool per second (each bulb request needs its own seeded message)",
    )
    parser.add_argument(
        "--database-url",
        help="ProdOps' database: a SQLite URL (should not exist yet), or a Postgres server URL such as "
        "postgresql+psycopg://postgres@127.0.0.1:5432/postgres in which a fresh database is created "
        "and dropped afterwards (default: a fresh SQLite file in a temp dir)",
    )
    args = parser.parse_args(argv)
    quick = bool(args.quick)

    def pick(value: float | None, full: float, short: float) -> float:
        return value if value is not None else (short if quick else full)

    config = Config(
        rate=args.rate,
        duration=pick(args.duration, 12.0, 1.5),
        warmup=pick(args.warmup, 2.0, 0.5),
        closed_duration=pick(args.closed_duration, 8.0, 1.0),
        closed_warmup=0.5 if quick else 1.0,
        clients=args.clients,
        senders=args.senders,
        timeout=args.timeout,
        drain_timeout=pick(args.drain_timeout, 30.0, 15.0),
        pool_rps=args.pool_rps,
        database_url=args.database_url,
        quick=quick,
    )
    if config.rate <= 0 or config.duration <= 0 or config.closed_duration <= 0 or config.clients < 1:
        parser.error("--rate, --duration, --closed-duration and --clients must be positive")
    return config


# ---- the Slack emulator, in its own process ---------------------------------------------------------


def emulator_process(conn: Connection, channels: int, per_channel: int, users: int) -> None:
    """Child process: start the emulator, report its URL, seed messages, then answer 'counts' / 'stop'.

    In its own process so that the emulator's work after ProdOps' acks does not take the GIL from the
    load generator (it still shares the machine's CPUs with everything else).
    """
    from bot.devkit.emulator import SlackEmulator

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
    emulator = SlackEmulator().start()
    conn.send({"url": emulator.url, "token": emulator.bot_token, "team_id": emulator.team_id})
    user_ids = [emulator.add_user(f"bench-user-{n}")["id"] for n in range(users)]
    targets: list[Target] = []
    for c in range(channels):
        channel_id = emulator.add_channel(f"bench-{c}", members=user_ids)["id"]
        for m in range(per_channel):
            author = user_ids[(c * per_channel + m) % users]
            text_ = f"Feedback {c}-{m}: exporting a big workspace to CSV times out after a minute"
            targets.append((channel_id, emulator.post_message(channel_id, author, text_)["ts"], author))
    conn.send({"users": user_ids, "targets": targets})
    try:
        while True:
            command = conn.recv()
            if command == "counts":
                conn.send(dict(Counter(call.method for call in emulator.calls())))
            else:
                break
    except (EOFError, OSError):
        pass  # the parent went away
    finally:
        emulator.stop()


class EmulatorHandle:
    """The parent's side of the emulator process."""

    def __init__(self, channels: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(
            target=emulator_process, args=(child, channels, MESSAGES_PER_CHANNEL, USERS), daemon=True
        )
        self.process.start()
        child.close()
        first = self._recv(30)
        self.url: str = first["url"]
        self.token: str = first["token"]
        self.team_id: str = first["team_id"]
        self.users: list[str] = []
        self.targets: list[Target] = []

    def _recv(self, timeout: float) -> Any:
        if not self.conn.poll(timeout):
            raise RuntimeError("the emulator process did not answer")
        return self.conn.recv()

    def wait_seeded(self) -> None:
        seeded = self._recv(120)
        self.users, self.targets = seeded["users"], [tuple(t) for t in seeded["targets"]]

    def counts(self) -> dict[str, int]:
        self.conn.send("counts")
        return dict(self._recv(30))

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.send("stop")
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(timeout=5)


# ---- CPU accounting from /proc ------------------------------------------------------------------------


def _proc_stats() -> list[tuple[int, int, float]]:
    """(pid, process group, user+system CPU seconds) of every process we can read."""
    tick = os.sysconf("SC_CLK_TCK")
    stats = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        stats.append((int(entry.name), int(fields[2]), (int(fields[11]) + int(fields[12])) / tick))
    return stats


def group_cpu(pgid: int) -> dict[int, float]:
    """CPU seconds per process of a process group (a gunicorn master and its workers)."""
    return {pid: cpu for pid, group, cpu in _proc_stats() if group == pgid}


def pid_cpu(pid: int) -> float:
    return next((cpu for p, _, cpu in _proc_stats() if p == pid), 0.0)


# ---- servers -----------------------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    process: ServerProcess
    log_path: Path
    log_offset: int = 0

    @property
    def pgid(self) -> int:
        assert self.process.process is not None
        return self.process.process.pid

    def alive(self) -> bool:
        return self.process.process is not None and self.process.process.poll() is None

    def new_log_problems(self) -> list[str]:
        """ERROR/WARNING/CRITICAL/Traceback lines logged since the last call."""
        if not self.log_path.exists():
            return []
        with open(self.log_path, "rb") as handle:
            handle.seek(self.log_offset)
            chunk = handle.read()
        self.log_offset += len(chunk)
        markers = ("ERROR", "CRITICAL", "WARNING", "Traceback", "Booting worker")
        lines = chunk.decode("utf-8", "replace").splitlines()
        return [line for line in lines if any(m in line for m in markers)]


def workers_for(settings: Settings, database_url: str) -> int:
    """The worker count `prodops serve` would pick for this database (both servers get the same)."""
    return settings.model_copy(update={"database_url": database_url}).effective_web_concurrency


def server_env(emulator: EmulatorHandle, database_url: str, settings: Settings) -> dict[str, str]:
    return {
        "SLACK_BOT_TOKEN": emulator.token,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_API_URL": emulator.url,
        "SLACK_APP_TOKEN": "",  # HTTP mode, whatever the caller's environment or .env says
        "DATABASE_URL": database_url,
        "WEB_CONCURRENCY": str(workers_for(settings, database_url)),
        "PRODOPS_WEB_THREADS": str(settings.web_threads),
        "PRODOPS_LOG_LEVEL": os.environ.get("PRODOPS_LOG_LEVEL", "INFO"),
    }


def make_server(name: str, env: dict[str, str], logs: Path, module: str | None) -> Server:
    """A server process, not started yet: ProdOps (`prodops serve`) or `python -m <module> --bind ...`."""
    port = free_port()
    command = None
    if module is not None:
        command = [sys.executable, "-m", module, "--bind", f"127.0.0.1:{port}"]
    log_path = logs / f"{name}.log"
    return Server(name, ServerProcess(env, port=port, command=command, log_path=log_path, cwd=REPO), log_path)


# ---- requests ----------------------------------------------------------------------------------------


class Signer:
    """Signs a body the way Slack does, with a timestamp taken at send time."""

    def __init__(self, secret: str) -> None:
        self.verifier = SignatureVerifier(secret)

    def headers(self, body: bytes) -> dict[str, str]:
        stamp = str(int(time.time()))
        return {
            "Content-Type": "application/json",
            "User-Agent": "Slackbot 1.0 (+https://api.slack.com/robots)",
            "X-Slack-Request-Timestamp": stamp,
            "X-Slack-Signature": self.verifier.generate_signature(timestamp=stamp, body=body),
        }


class BodyFactory:
    """Signed-later reaction_added deliveries, each with an event id never used before in this run."""

    def __init__(self, team_id: str, users: list[str]) -> None:
        self.driver = SlackDriver(events_url="http://127.0.0.1/unused", signing_secret="x", team_id=team_id)
        self.users = users
        self.run_tag = uuid.uuid4().hex[:4].upper()
        self.seq = itertools.count()

    def build(self, reaction: str, targets: Sequence[Target]) -> list[bytes]:
        import json

        bodies = []
        for n, (channel, ts, author) in enumerate(targets):
            event = self.driver.reaction_added_event(
                user=self.users[n % len(self.users)],
                reaction=reaction,
                channel=channel,
                ts=ts,
                item_user=author,
            )
            event_id = f"Ev{self.run_tag}{next(self.seq):06d}"
            bodies.append(json.dumps(self.driver.event_callback(event, event_id=event_id)).encode())
        return bodies


class Client:
    """One keep-alive HTTP/1.1 connection to a server."""

    def __init__(self, port: int, timeout: float) -> None:
        self.port, self.timeout = port, timeout
        self.conn: http.client.HTTPConnection | None = None

    def post(self, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        try:
            self.conn.request("POST", EVENTS_PATH, body=body, headers=headers)
            response = self.conn.getresponse()
            data = response.read()
        except Exception:
            self.close()
            raise
        if response.will_close:
            self.close()
        return response.status, data

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


@dataclass
class Outcome:
    """What one request got: latency (seconds), completion time, and '200' or another status/error."""

    index: int
    latency: float
    done: float
    status: str


def send_one(client: Client, signer: Signer, body: bytes) -> tuple[str, str]:
    """POST one delivery; returns (status, detail for errors)."""
    try:
        status, data = client.post(body, signer.headers(body))
    except Exception as exc:  # a transport error is a result to report, not a crash
        return type(exc).__name__, str(exc)[:200]
    return str(status), "" if status == 200 else data[:200].decode("utf-8", "replace")


# ---- measurements ------------------------------------------------------------------------------------


@dataclass
class Result:
    scenario: str
    server: str
    mode: str  # "open" or "closed"
    outcomes: list[Outcome]
    window: float  # measured seconds
    measured: list[Outcome]  # the outcomes inside the measured window
    errors: list[str] = field(default_factory=list)
    pool_exhausted: bool = False
    client_cpu: float = 0.0
    server_cpu: dict[int, float] = field(default_factory=dict)
    emulator_cpu: float = 0.0
    drain: float | None = None
    drained: bool = True
    log_problems: list[str] = field(default_factory=list)

    @property
    def statuses(self) -> Counter[str]:
        return Counter(o.status for o in self.outcomes)

    @property
    def failures(self) -> int:
        return sum(1 for o in self.outcomes if o.status != "200")

    @property
    def rate(self) -> float:
        return len(self.measured) / self.window if self.window > 0 else 0.0

    def pct(self, q: float) -> float:
        values = sorted(o.latency for o in self.measured)
        if not values:
            return math.nan
        return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]

    @property
    def cpu_ms_per_request(self) -> float:
        return 1000 * sum(self.server_cpu.values()) / max(1, len(self.outcomes))


def open_loop(port: int, bodies: list[bytes], signer: Signer, config: Config) -> Result:
    """Fixed-rate timetable; latency counts from the scheduled send time, so queueing is included."""
    total = min(len(bodies), config.open_requests)
    skip = int(config.warmup * config.rate)
    outcomes: list[Outcome | None] = [None] * total
    errors: list[str] = []
    counter = itertools.count()
    lock = threading.Lock()
    start = time.perf_counter() + 0.2

    def sender() -> None:
        client = Client(port, config.timeout)
        while True:
            with lock:
                index = next(counter)
            if index >= total:
                break
            scheduled = start + index / config.rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            status, detail = send_one(client, signer, bodies[index])
            done = time.perf_counter()
            outcomes[index] = Outcome(index, done - scheduled, done, status)
            if detail and len(errors) < 20:
                errors.append(f"{status}: {detail}")
        client.close()

    threads = [threading.Thread(target=sender, daemon=True) for _ in range(min(config.senders, total))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    done_outcomes = [o for o in outcomes if o is not None]
    measured = [o for o in done_outcomes if o.index >= skip]
    window_start = start + skip / config.rate
    window = max((o.done for o in measured), default=window_start) - window_start
    window = max(window, (total - skip) / config.rate)  # never shorter than the timetable itself
    return Result("", "", "open", done_outcomes, window, measured, errors)


def closed_loop(
    port: int, bodies: list[bytes], signer: Signer, config: Config, *, wrap: bool = False
) -> Result:
    """K clients, each sending its next request as soon as the previous answer arrives.

    Every request uses the next body of the pool; with wrap=True the pool is used round and round
    (only for the bare app, which does not deduplicate), otherwise running out ends the run early.
    """
    counter = itertools.count()
    lock = threading.Lock()
    per_thread: list[list[Outcome]] = [[] for _ in range(config.clients)]
    errors: list[str] = []
    exhausted = threading.Event()
    start = time.perf_counter()
    measure_from = start + config.closed_warmup
    end = measure_from + config.closed_duration

    def client_loop(slot: int) -> None:
        client = Client(port, config.timeout)
        while time.perf_counter() < end:
            with lock:
                index = next(counter)
            if index >= len(bodies) and not wrap:
                exhausted.set()
                break
            sent = time.perf_counter()
            status, detail = send_one(client, signer, bodies[index % len(bodies)])
            done = time.perf_counter()
            per_thread[slot].append(Outcome(index, done - sent, done, status))
            if detail and len(errors) < 20:
                errors.append(f"{status}: {detail}")
        client.close()

    threads = [threading.Thread(target=client_loop, args=(n,), daemon=True) for n in range(config.clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    outcomes = sorted((o for chunk in per_thread for o in chunk), key=lambda o: o.index)
    measured = [o for o in outcomes if measure_from <= o.done <= end]
    window_end = end
    if exhausted.is_set():
        window_end = min(end, max((o.done for o in outcomes), default=end))
    result = Result("", "", "closed", outcomes, max(1e-9, window_end - measure_from), measured, errors)
    result.pool_exhausted = exhausted.is_set()
    return result


# ---- the database --------------------------------------------------------------------------------------


class DatabaseProbe:
    """Read-only queries on ProdOps' database (a plain engine: no BEGIN IMMEDIATE, no write lock)."""

    def __init__(self, url: str) -> None:
        self.engine: Engine = create_engine(url)

    def scalar(self, sql: str) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(text(sql)).scalar_one())

    def pending(self) -> int:
        return self.scalar("SELECT count(*) FROM inbox_events WHERE status = 'pending'")

    def inbox_by_status(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(text("SELECT status, count(*) FROM inbox_events GROUP BY status"))
            return {str(status): int(count) for status, count in rows}

    def inbox_delivery_ids(self) -> set[str]:
        with self.engine.connect() as conn:
            return {str(row[0]) for row in conn.execute(text("SELECT delivery_id FROM inbox_events"))}

    def feedback_keys(self) -> list[tuple[str, str]]:
        with self.engine.connect() as conn:
            rows = conn.execute(text("SELECT channel_id, message_ts FROM feedback_items"))
            return [(str(c), str(t)) for c, t in rows]

    def wait_drained(self, timeout: float) -> tuple[float, bool]:
        """Waits until no delivery is pending (work queued after the ack has finished)."""
        start = time.perf_counter()
        while time.perf_counter() - start < timeout:
            if self.pending() == 0:
                return time.perf_counter() - start, True
            time.sleep(0.2)
        return time.perf_counter() - start, False

    def dispose(self) -> None:
        self.engine.dispose()


class BenchDatabase:
    """Where ProdOps keeps its data for the run: a fresh SQLite file, or a fresh Postgres database."""

    def __init__(self, requested: str | None, tmp: Path) -> None:
        self.admin_url: str | None = None
        self.name: str | None = None
        if requested is None:
            self.url = f"sqlite:///{tmp / 'prodops-bench.db'}"
            return
        parsed = make_url(requested)
        if parsed.get_backend_name() == "postgresql":
            if parsed.drivername == "postgresql":
                parsed = parsed.set(drivername="postgresql+psycopg")
            self.admin_url = parsed.render_as_string(hide_password=False)
            self.name = f"prodops_bench_{uuid.uuid4().hex[:10]}"
            admin = create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{self.name}"'))
            admin.dispose()
            self.url = parsed.set(database=self.name).render_as_string(hide_password=False)
        else:
            self.url = requested

    @property
    def shown(self) -> str:
        return make_url(self.url).render_as_string(hide_password=True)

    def drop(self) -> None:
        if self.admin_url and self.name:
            admin = create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
            admin.dispose()


# ---- the run -------------------------------------------------------------------------------------------


def ms(seconds: float) -> str:
    return "-" if math.isnan(seconds) else f"{seconds * 1000:.1f}"


class Bench:
    def __init__(self, config: Config, console: Console) -> None:
        self.config = config
        self.console = console
        self.signer = Signer(SIGNING_SECRET)
        self.results: list[Result] = []
        self.servers: dict[str, Server] = {}
        self.emulator: EmulatorHandle | None = None
        self.probe: DatabaseProbe | None = None
        self.bulb_targets_ok: set[tuple[str, str]] = set()
        self.bulb_targets_sent: set[tuple[str, str]] = set()
        self.prodops_ok_event_ids: set[str] = set()
        self.broken: list[str] = []
        self.workers = 1

    def measure(
        self,
        scenario: str,
        server_name: str,
        mode: str,
        bodies: list[bytes],
        targets: list[Target] | None = None,
    ) -> Result:
        server = self.servers[server_name]
        assert self.emulator is not None
        if not server.alive():
            raise RuntimeError(f"{server_name} is not running; log:\n{server.process.log_tail()}")
        cpu_before, emu_before, client_before = (
            group_cpu(server.pgid),
            self.emulator_cpu(),
            time.process_time(),
        )
        self.settle(server)
        port = server.process.port
        if mode == "open":
            result = open_loop(port, bodies, self.signer, self.config)
        else:
            result = closed_loop(port, bodies, self.signer, self.config, wrap=server_name == "bare")
        result.scenario, result.server = scenario, server_name
        result.client_cpu = time.process_time() - client_before
        if server_name == "prodops" and self.probe is not None:
            result.drain, result.drained = self.probe.wait_drained(self.config.drain_timeout)
        cpu_after = group_cpu(server.pgid)
        result.server_cpu = {pid: cpu - cpu_before.get(pid, 0.0) for pid, cpu in cpu_after.items()}
        result.emulator_cpu = self.emulator_cpu() - emu_before
        result.log_problems = server.new_log_problems()
        if server_name == "prodops":
            for outcome in result.outcomes:
                if outcome.status == "200":
                    self.prodops_ok_event_ids.add(self._event_id(bodies[outcome.index % len(bodies)]))
                    if targets is not None:
                        self.bulb_targets_ok.add(targets[outcome.index][:2])
            if targets is not None:
                self.bulb_targets_sent.update(targets[o.index][:2] for o in result.outcomes)
        if not server.alive():
            self.broken.append(f"{server_name} died during {scenario}/{mode}")
        self.results.append(result)
        self.print_progress(result)
        return result

    @staticmethod
    def _event_id(body: bytes) -> str:
        marker = b'"event_id": "'
        start = body.index(marker) + len(marker)
        return body[start : body.index(b'"', start)].decode()

    def settle(self, server: Server, timeout: float = 10.0) -> None:
        """Waits until every worker is up and the server is idle, so runs do not inherit each other's work."""
        deadline = time.perf_counter() + timeout
        before = group_cpu(server.pgid)
        while time.perf_counter() < deadline:
            time.sleep(0.3)
            after = group_cpu(server.pgid)
            busy = sum(after.values()) - sum(before.values())
            before = after
            if len(after) > self.workers and busy < 0.03:
                return

    def emulator_cpu(self) -> float:
        assert self.emulator is not None and self.emulator.process.pid is not None
        return pid_cpu(self.emulator.process.pid)

    def print_progress(self, r: Result) -> None:
        workers = sorted(r.server_cpu.values(), reverse=True)
        split = "/".join(f"{cpu:.1f}" for cpu in workers if cpu >= 0.05) or "0"
        line = (
            f"  {r.scenario:<5} {r.mode:<6} {r.server:<7} {r.rate:7.1f} req/s  p50 {ms(r.pct(0.5)):>6} ms  "
            f"p99 {ms(r.pct(0.99)):>7} ms  max {ms(r.pct(1.0)):>7} ms  n={len(r.outcomes)}"
            f"  server CPU {split} s  emulator {r.emulator_cpu:.1f} s  client {r.client_cpu:.1f} s"
        )
        if r.drain is not None:
            line += f"  drain {r.drain:.1f} s" + ("" if r.drained else " (NOT drained)")
        if r.pool_exhausted:
            line += "  (request pool exhausted)"
        self.console.print(line, highlight=False)
        if r.failures:
            self.console.print(f"    [red]{r.failures} failed: {dict(r.statuses)}[/]")
            for error in r.errors[:5]:
                self.console.print(f"    [red]{error}[/]", markup=False)
        if r.log_problems:
            self.console.print(f"    [yellow]server log: {len(r.log_problems)} warning/error line(s)[/]")
            for line_ in list(dict.fromkeys(r.log_problems))[:3]:
                self.console.print(f"    {line_[:220]}", style="yellow", markup=False, highlight=False)

    def run(self) -> int:
        config = self.config
        open_n = config.open_requests
        closed_n = config.closed_pool
        # Bulb on ProdOps needs a fresh message per request; everything else may reuse messages.
        needed = open_n + closed_n
        channels = max(1, math.ceil(needed / MESSAGES_PER_CHANNEL))
        settings = Settings()
        with tempfile.TemporaryDirectory(prefix="prodops-bench-") as tmp_name:
            tmp = Path(tmp_name)
            database = BenchDatabase(config.database_url, tmp)
            self.workers = workers_for(settings, database.url)
            self.print_header(settings, database)
            try:
                self.emulator = EmulatorHandle(channels)
                env = server_env(self.emulator, database.url, settings)
                self.servers["bare"] = make_server("bare", env, tmp, "bench.bare_app")
                self.servers["prodops"] = make_server("prodops", env, tmp, None)
                with ThreadPoolExecutor(max_workers=2) as pool:  # both at once: start-up is most of --quick
                    for future in [pool.submit(s.process.start, 60) for s in self.servers.values()]:
                        future.result()
                self.probe = DatabaseProbe(database.url)
                started = time.perf_counter()
                self.emulator.wait_seeded()
                self.console.print(
                    f"Seeded {len(self.emulator.targets)} messages in {channels} channels "
                    f"(+{time.perf_counter() - started:.1f} s after the servers were up).\n"
                )
                for server in self.servers.values():
                    self.settle(server, timeout=30)
                    problems = [line for line in server.new_log_problems() if "Booting worker" not in line]
                    if problems:
                        self.console.print(f"[yellow]{server.name} start-up log:[/]")
                        for line in problems[:5]:
                            self.console.print(f"  {line[:220]}", markup=False, highlight=False)
                self.run_phases()
                return self.report()
            finally:
                for server in self.servers.values():
                    server.process.stop()
                if self.emulator is not None:
                    self.emulator.stop()
                if self.probe is not None:
                    self.probe.dispose()
                database.drop()
                self.keep_logs(tmp)

    def keep_logs(self, tmp: Path) -> None:
        """Copy the server logs out of the temp dir so they can be read after the run."""
        out = Path(tempfile.gettempdir()) / "prodops-bench-logs"
        out.mkdir(exist_ok=True)
        for server in self.servers.values():
            if server.log_path.exists():
                (out / server.log_path.name).write_bytes(server.log_path.read_bytes())
        self.console.print(f"Server logs: {out}/{{bare,prodops}}.log")

    def run_phases(self) -> None:
        assert self.emulator is not None
        config = self.config
        targets = self.emulator.targets
        factory = BodyFactory(self.emulator.team_id, self.emulator.users)

        def cycle(n: int, offset: int) -> list[Target]:
            return [targets[(offset + k) % len(targets)] for k in range(n)]

        fresh = iter(targets)  # bulb on ProdOps: every request on a message never reacted to

        def take_fresh(n: int) -> list[Target]:
            return list(itertools.islice(fresh, n))

        open_n, closed_n = config.open_requests, config.closed_pool
        plan: list[tuple[str, str, str, Callable[[], list[Target]]]] = [
            (QUIET_REACTION, "bare", "open", lambda: cycle(open_n, 0)),
            (QUIET_REACTION, "prodops", "open", lambda: cycle(open_n, 7)),
            (QUIET_REACTION, "bare", "closed", lambda: cycle(min(closed_n, 5000), 13)),
            (QUIET_REACTION, "prodops", "closed", lambda: cycle(closed_n, 29)),
            (FEEDBACK_REACTION, "bare", "open", lambda: cycle(open_n, 31)),
            (FEEDBACK_REACTION, "prodops", "open", lambda: take_fresh(open_n)),
            (FEEDBACK_REACTION, "bare", "closed", lambda: cycle(min(closed_n, 5000), 37)),
            (FEEDBACK_REACTION, "prodops", "closed", lambda: take_fresh(closed_n)),
        ]
        self.console.print(
            f"[bold]Open loop[/] {config.rate:.0f} req/s for {config.warmup:g}+{config.duration:g} s "
            f"({config.senders} keep-alive senders); [bold]closed loop[/] {config.clients} clients for "
            f"{config.closed_warmup:g}+{config.closed_duration:g} s. Latency = scheduled send → response.",
            highlight=False,
        )
        for scenario, server, mode, pick in plan:
            chosen = pick()
            bodies = factory.build(scenario, chosen)
            is_fresh_bulb = scenario == FEEDBACK_REACTION and server == "prodops"
            self.measure(scenario, server, mode, bodies, chosen if is_fresh_bulb else None)

    # ---- reporting -------------------------------------------------------------------------------------

    def print_header(self, settings: Settings, database: BenchDatabase) -> None:
        try:
            cpus = len(os.sched_getaffinity(0))
        except AttributeError:  # not Linux
            cpus = os.cpu_count() or 0
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
        self.console.rule("[bold]ProdOps ack benchmark")
        self.console.print(
            f"Machine: {cpus} CPU(s) usable (nproc), load average {load}; "
            f"Python {platform.python_version()} on {platform.system()} {platform.machine()}; "
            f"slack_bolt {slack_bolt.version.__version__}\n"
            f"Servers: gunicorn gthread, WEB_CONCURRENCY={workers_for(settings, database.url)} workers × "
            f"PRODOPS_WEB_THREADS={settings.web_threads} threads, each (bare Bolt app and ProdOps alike)\n"
            f"ProdOps database: {database.shown}\n"
            "The Slack emulator (a separate process) and this load generator share the machine's CPUs with "
            "the servers: on the bulb scenario the emulator answers 4 Web API calls per captured message.",
            highlight=False,
        )

    def pair(self, scenario: str, mode: str) -> tuple[Result | None, Result | None]:
        found = {r.server: r for r in self.results if r.scenario == scenario and r.mode == mode}
        return found.get("bare"), found.get("prodops")

    def report(self) -> int:
        console = self.console
        table = Table(title="Signed reaction_added deliveries: ack latency and throughput", show_lines=False)
        for column, justify in (
            ("scenario", "left"),
            ("server", "left"),
            (f"open: rate/s (of {self.config.rate:g})", "right"),
            ("p50 ms", "right"),
            ("p90 ms", "right"),
            ("p99 ms", "right"),
            ("max ms", "right"),
            (f"closed: req/s ({self.config.clients} clients)", "right"),
            ("closed p99 ms", "right"),
            ("ratio", "right"),
            ("CPU ms/req open|closed", "right"),
            ("errors", "right"),
        ):
            table.add_column(column, justify=justify)  # type: ignore[arg-type]
        for scenario in (QUIET_REACTION, FEEDBACK_REACTION):
            bare_closed, prodops_closed = self.pair(scenario, "closed")
            for server in ("bare", "prodops"):
                o = self._get(scenario, server, "open")
                c = self._get(scenario, server, "closed")
                ratio = ""
                if server == "prodops" and bare_closed and prodops_closed and bare_closed.rate > 0:
                    ratio = f"{prodops_closed.rate / bare_closed.rate:.2f}×"
                errors = (o.failures if o else 0) + (c.failures if c else 0)
                table.add_row(
                    SCENARIO_LABELS[scenario] if server == "bare" else "",
                    "bare Bolt" if server == "bare" else "ProdOps",
                    f"{o.rate:.1f}" if o else "-",
                    ms(o.pct(0.5)) if o else "-",
                    ms(o.pct(0.9)) if o else "-",
                    ms(o.pct(0.99)) if o else "-",
                    ms(o.pct(1.0)) if o else "-",
                    (f"{c.rate:.0f}" + ("*" if c.pool_exhausted else "")) if c else "-",
                    ms(c.pct(0.99)) if c else "-",
                    ratio,
                    f"{o.cpu_ms_per_request:.1f} | {c.cpu_ms_per_request:.1f}" if o and c else "-",
                    f"[red]{errors}[/]" if errors else "0",
                )
            if scenario == QUIET_REACTION:
                table.add_section()
        console.print()
        console.print(table)
        console.print(
            "open = fixed-rate timetable, latency from the scheduled send time (queueing included); "
            "closed = as fast as the clients can go; ratio = ProdOps/bare closed-loop throughput; "
            "CPU ms/req = the server's CPU (all gunicorn processes) per request, for ProdOps including the "
            "work done after the ack until the inbox drained. * = request pool ran out early.",
            style="dim",
        )
        self.report_goals()
        self.report_correctness()
        for r in self.results:
            if r.failures:
                self.broken.append(
                    f"{r.server} {r.scenario}/{r.mode}: {r.failures} non-200 ({dict(r.statuses)})"
                )
        if self.broken:
            console.print("\n[bold red]BROKEN:[/]")
            for problem in self.broken:
                console.print(f"  [red]- {problem}[/]", markup=True, highlight=False)
            return 1
        console.print("\n[green]No errors: every delivery was answered 200 and recorded.[/]")
        return 0

    def _get(self, scenario: str, server: str, mode: str) -> Result | None:
        return next(
            (r for r in self.results if (r.scenario, r.server, r.mode) == (scenario, server, mode)), None
        )

    def report_goals(self) -> None:
        console = self.console
        console.print("\n[bold]Goals[/] (timings are for information; shared machines are noisy)")
        for scenario in (QUIET_REACTION, FEEDBACK_REACTION):
            bare_c, prodops_c = self.pair(scenario, "closed")
            if bare_c and prodops_c and bare_c.rate > 0:
                ratio = prodops_c.rate / bare_c.rate
                verdict = "[green]PASS[/]" if ratio >= GOAL_RATIO else "[red]MISS[/]"
                console.print(
                    f"  {verdict} {scenario:<4} throughput {prodops_c.rate:.0f} vs {bare_c.rate:.0f} req/s = "
                    f"{ratio:.2f}× bare (goal ≥ {GOAL_RATIO}×)",
                    highlight=False,
                )
            o = self._get(scenario, "prodops", "open")
            if o:
                p99 = o.pct(0.99)
                keeps_up = o.rate >= 0.97 * self.config.rate
                verdict = "[green]PASS[/]" if p99 < GOAL_P99 and keeps_up else "[red]MISS[/]"
                console.print(
                    f"  {verdict} {scenario:<4} p99 {ms(p99)} ms at {o.rate:.0f} of {self.config.rate:g} req/s "
                    f"(goal p99 < {GOAL_P99 * 1000:.0f} ms at {self.config.rate:g} req/s)",
                    highlight=False,
                )
                if o.drain is not None and o.drain > 1.0:
                    console.print(
                        f"       work queued after the acks took {o.drain:.1f} s more to finish"
                        + ("" if o.drained else " (and had NOT finished when we stopped waiting)"),
                        highlight=False,
                    )

    def report_correctness(self) -> None:
        console = self.console
        assert self.probe is not None and self.emulator is not None
        console.print("\n[bold]Correctness under load[/] (ProdOps' database and the emulator, after the run)")
        _, drained = self.probe.wait_drained(self.config.drain_timeout)
        by_status = self.probe.inbox_by_status()
        recorded = self.probe.inbox_delivery_ids()
        missing = self.prodops_ok_event_ids - recorded
        console.print(
            f"  inbox: {sum(by_status.values())} deliveries recorded {by_status}; "
            f"{len(self.prodops_ok_event_ids)} acked 200 by ProdOps, {len(missing)} of them not recorded",
            highlight=False,
        )
        if missing:
            self.broken.append(f"{len(missing)} acked deliveries are missing from inbox_events")
        stuck = {k: v for k, v in by_status.items() if k in ("pending", "failed", "dead")}
        if stuck:
            self.broken.append(f"inbox deliveries not done after the run: {stuck}")
        keys = self.probe.feedback_keys()
        captured = set(keys)
        lost = self.bulb_targets_ok - captured
        extra = captured - self.bulb_targets_sent
        dupes = len(keys) - len(captured)
        verdict = "[green]OK[/]" if not lost and not extra and not dupes else "[red]WRONG[/]"
        console.print(
            f"  {verdict} feedback_items: {len(keys)} rows for {len(self.bulb_targets_ok)} distinct messages "
            f"reacted to with :{FEEDBACK_REACTION}: and acked 200 ({len(lost)} missing, {len(extra)} unexpected, "
            f"{dupes} duplicates)" + ("" if drained else " — the inbox had not drained"),
            highlight=False,
        )
        if lost or extra or dupes:
            self.broken.append(
                f"feedback_items: {len(lost)} missing, {len(extra)} unexpected, {dupes} duplicates"
            )
        calls = self.emulator.counts()
        posted = calls.get("chat.postMessage", 0)
        console.print(
            f"  emulator calls: {dict(sorted(calls.items()))}; confirmations posted {posted} "
            f"(expected {len(captured)})",
            highlight=False,
        )
        if posted != len(captured):
            self.broken.append(f"chat.postMessage {posted} times for {len(captured)} captured items")


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_args(argv)
    console = Console(emoji=False) if sys.stdout.isatty() else Console(emoji=False, width=170)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the finally blocks stop the servers
    started = time.perf_counter()
    try:
        code = Bench(config, console).run()
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        return 130
    except RuntimeError as exc:
        console.print(f"[bold red]benchmark could not run:[/] {exc}", markup=True, highlight=False)
        return 1
    console.print(f"Whole run: {time.perf_counter() - started:.0f} s.", highlight=False)
    return code


if __name__ == "__main__":
    sys.exit(main())
