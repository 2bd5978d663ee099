"""Ack latency and throughput of signed Slack events: the real ProdOps server beside a bare Bolt app.

    .venv/bin/python bench/ack.py                       # full run, under ~3 minutes
    .venv/bin/python bench/ack.py --quick               # ~40 s smoke run
    .venv/bin/python bench/ack.py --scenarios channel   # only channel monitoring (see --help)

Both servers run as child processes behind the same gunicorn configuration (bot.server.GunicornServer),
both talk to one Slack Web API emulator (a separate child process), and both get the same traffic:
signed Events API deliveries (`reaction_added` and `message`) over keep-alive HTTP on 127.0.0.1, in four
scenarios (idle reactions, noise messages, channel capture, :bulb: capture). See bench/README.md.
Timings are printed, never asserted: the exit status is 1 only when something is broken (a non-200
answer, a transport error, a server that died, deliveries or feedback items wrong in the database).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import itertools
import json
import math
import multiprocessing
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Sequence
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
from storage.db import Database, inbox_url
from storage.models import WatchedChannel

REPO = Path(__file__).resolve().parent.parent
SIGNING_SECRET = "bench-signing-secret-0123456789abcdef"
EVENTS_PATH = "/slack/events"
IDLE_REACTION = "tada"  # no ProdOps feature uses it: answered before the inbox, nothing recorded
FEEDBACK_REACTION = "bulb"  # the default feedback emoji: the whole capture path after the ack
# Acknowledgements the noise filter drops: recorded in the inbox, then the listener does nothing.
NOISE_TEXTS = ("thanks!", "ok 👍", "+1", "got it", "thx :pray:", "sounds good")
WATCHED_BY = "UBENCHADMIN"  # added_by_user_id of the watched_channels rows the bench inserts

IDLE, NOISE, CHANNEL, BULB = "idle", "noise", "channel", "bulb"
SCENARIOS = (IDLE, NOISE, CHANNEL, BULB)
SCENARIO_LABELS = {
    IDLE: "idle reaction",
    NOISE: "noise message",
    CHANNEL: "channel capture",
    BULB: "bulb capture",
}
SCENARIO_HELP = {
    IDLE: "reaction_added :tada: — no feature uses it, so ProdOps answers before the inbox",
    NOISE: "message events saying 'thanks!', 'ok 👍', ... in a watched channel — recorded, then dropped as noise",
    CHANNEL: "message events with real feedback in watched channels — each captured as an item",
    BULB: "reaction_added :bulb: on a different message each time — captured, with a confirmation",
}
CAPTURE_SCENARIOS = (CHANNEL, BULB)  # need a fresh seeded message per ProdOps request
GOAL_RATIO = 0.8
GOAL_P99 = 0.100
MESSAGES_PER_CHANNEL = 100  # the emulator scans a channel's history per call; keep channels short
USERS = 20

Target = tuple[str, str, str]  # (channel id, message ts, message author): what a reaction is on
Post = tuple[str, str, str, str]  # (channel id, message ts, author, text): a message event
Key = tuple[str, str]  # (channel id, message ts)


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
    capture_pool_rps: float
    database_url: str | None
    scenarios: tuple[str, ...]
    quick: bool
    queue_workers: int = 1

    @property
    def open_requests(self) -> int:
        return int(round((self.warmup + self.duration) * self.rate))

    @property
    def closed_pool(self) -> int:
        """Distinct deliveries for one closed-loop run of a cheap scenario (idle, noise)."""
        return int((self.closed_warmup + self.closed_duration) * self.pool_rps)

    @property
    def capture_pool(self) -> int:
        """Fresh messages for one closed-loop ProdOps run of a capture scenario (channel, bulb)."""
        return int((self.closed_warmup + self.closed_duration) * self.capture_pool_rps)


def parse_scenarios(value: str) -> tuple[str, ...]:
    chosen = {name.strip().lower() for name in value.split(",") if name.strip()}
    unknown = chosen - set(SCENARIOS)
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(
            f"unknown scenario(s) {', '.join(sorted(unknown)) or '(none given)'}; choose from {','.join(SCENARIOS)}"
        )
    return tuple(name for name in SCENARIOS if name in chosen)


def parse_args(argv: Sequence[str] | None) -> Config:
    parser = argparse.ArgumentParser(
        description="Ack latency (open loop at a fixed rate) and max throughput (closed loop) of signed "
        "Slack events: ProdOps vs a bare Bolt app served the same way.",
        epilog="Scenarios: " + "; ".join(f"{name}: {SCENARIO_HELP[name]}" for name in SCENARIOS),
    )
    parser.add_argument("--quick", action="store_true", help="a short smoke run (~40 s)")
    parser.add_argument(
        "--scenarios",
        type=parse_scenarios,
        default=SCENARIOS,
        help=f"comma list of scenarios to run (default all: {','.join(SCENARIOS)})",
    )
    parser.add_argument("--rate", type=float, default=200.0, help="open-loop rate, requests/s (200)")
    parser.add_argument(
        "--duration", type=float, default=None, help="measured seconds of each open-loop run (8; quick 1)"
    )
    parser.add_argument("--warmup", type=float, default=None, help="open-loop warm-up seconds (1; quick 0.3)")
    parser.add_argument(
        "--closed-duration",
        type=float,
        default=None,
        help="measured seconds of each closed-loop run, after a warm-up (6 + 1; quick 1 + 0.5)",
    )
    parser.add_argument("--clients", type=int, default=16, help="closed-loop concurrent keep-alive clients")
    parser.add_argument("--senders", type=int, default=64, help="open-loop sender threads (connections)")
    parser.add_argument("--timeout", type=float, default=10.0, help="per-request timeout, seconds")
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=None,
        help="how long to wait for ProdOps to finish work queued after its acks (120; quick 60): "
        "acks outpace the workers, which drain the queue afterwards",
    )
    parser.add_argument(
        "--pool-rps",
        type=float,
        default=6000.0,
        help="closed-loop pool of distinct deliveries per second for idle and noise (6000)",
    )
    parser.add_argument(
        "--capture-pool-rps",
        type=float,
        default=1500.0,
        help="closed-loop pool per second for ProdOps' capture runs: each needs its own seeded message (1500)",
    )
    parser.add_argument(
        "--database-url",
        help="ProdOps' database: a SQLite URL (should not exist yet), or a Postgres server URL such as "
        "postgresql+psycopg://postgres@127.0.0.1:5432/postgres in which a fresh database is created "
        "and dropped afterwards (default: a fresh SQLite file in a temp dir)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="ProdOps queue worker processes: the one `prodops serve` supervises plus N-1 extra "
        "`prodops worker` processes started beside it (1)",
    )
    args = parser.parse_args(argv)
    quick = bool(args.quick)

    def pick(value: float | None, full: float, short: float) -> float:
        return value if value is not None else (short if quick else full)

    config = Config(
        rate=args.rate,
        duration=pick(args.duration, 8.0, 1.0),
        warmup=pick(args.warmup, 1.0, 0.3),
        closed_duration=pick(args.closed_duration, 6.0, 1.0),
        closed_warmup=0.5 if quick else 1.0,
        clients=args.clients,
        senders=args.senders,
        timeout=args.timeout,
        drain_timeout=pick(args.drain_timeout, 120.0, 60.0),
        pool_rps=args.pool_rps,
        capture_pool_rps=args.capture_pool_rps,
        database_url=args.database_url,
        scenarios=tuple(args.scenarios),
        quick=quick,
        queue_workers=args.workers,
    )
    if config.rate <= 0 or config.duration <= 0 or config.closed_duration <= 0 or config.clients < 1:
        parser.error("--rate, --duration, --closed-duration and --clients must be positive")
    if config.queue_workers < 1:
        parser.error("--workers must be at least 1")
    if config.pool_rps <= 0 or config.capture_pool_rps <= 0:
        parser.error("--pool-rps and --capture-pool-rps must be positive")
    return config


# ---- the Slack emulator, in its own process ---------------------------------------------------------


def capture_text(n: int) -> str:
    """Real, distinct feedback (never noise): a different text for every captured message."""
    return (
        f"Customer {n}: CSV export drops column {n % 7} when the report has more than "
        f"{1000 + n} rows, so finance re-does the numbers by hand every Monday"
    )


@dataclass
class Seeded:
    users: list[str]
    targets: list[Target]  # messages in unwatched channels, for reactions
    posts: list[Post]  # messages in watched channels, for channel capture
    watched: list[str]  # watched channel ids (also where noise is posted)


def emulator_process(conn: Connection, plain: int, watched: int, per_channel: int, users: int) -> None:
    """Child process: start the emulator, report its URL, seed messages, then answer 'counts' / 'stop'.

    In its own process so that the emulator's work after ProdOps' acks does not take the GIL from the
    load generator (it still shares the machine's CPUs with everything else). `plain` channels (not
    watched) hold the messages reacted to; `watched` channels hold the messages posted for capture.
    """
    from bot.devkit.emulator import SlackEmulator

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
    emulator = SlackEmulator().start()
    conn.send({"url": emulator.url, "token": emulator.bot_token, "team_id": emulator.team_id})
    user_ids = [emulator.add_user(f"bench-user-{n}")["id"] for n in range(users)]
    targets: list[Target] = []
    for c in range(plain):
        channel_id = emulator.add_channel(f"bench-{c}", members=user_ids)["id"]
        for m in range(per_channel):
            author = user_ids[(c * per_channel + m) % users]
            text_ = f"Feedback {c}-{m}: exporting a big workspace to CSV times out after a minute"
            targets.append((channel_id, emulator.post_message(channel_id, author, text_)["ts"], author))
    posts: list[Post] = []
    watched_ids: list[str] = []
    for c in range(watched):
        channel_id = emulator.add_channel(f"bench-watched-{c}", members=user_ids)["id"]
        watched_ids.append(channel_id)
        for m in range(per_channel):
            n = c * per_channel + m
            author, text_ = user_ids[n % users], capture_text(n)
            posts.append((channel_id, emulator.post_message(channel_id, author, text_)["ts"], author, text_))
    conn.send({"users": user_ids, "targets": targets, "posts": posts, "watched": watched_ids})
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

    def __init__(self, plain: int, watched: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(
            target=emulator_process,
            args=(child, plain, watched, MESSAGES_PER_CHANNEL, USERS),
            daemon=True,
        )
        self.process.start()
        child.close()
        first = self._recv(30)
        self.url: str = first["url"]
        self.token: str = first["token"]
        self.team_id: str = first["team_id"]
        self.seeded = Seeded([], [], [], [])

    def _recv(self, timeout: float) -> Any:
        if not self.conn.poll(timeout):
            raise RuntimeError("the emulator process did not answer")
        return self.conn.recv()

    def wait_seeded(self) -> Seeded:
        got = self._recv(180)
        self.seeded = Seeded(
            users=list(got["users"]),
            targets=[tuple(t) for t in got["targets"]],
            posts=[tuple(p) for p in got["posts"]],
            watched=list(got["watched"]),
        )
        return self.seeded

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


def _status_field(pid: int, name: str) -> str | None:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith(name + ":"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
    except OSError:
        return ""


def rss_mb(pid: int) -> float | None:
    """Resident memory of a process (VmRSS), MB."""
    value = _status_field(pid, "VmRSS")
    return int(value.split()[0]) / 1024 if value else None


def process_roles(pgid: int, extra_workers: Sequence[int] = ()) -> list[tuple[str, int]]:
    """(role, pid) of ProdOps' processes: the serve supervisor, gunicorn master, web processes, workers."""
    roles: list[tuple[str, int]] = []
    for pid, group, _ in _proc_stats():
        if group != pgid and pid not in extra_workers:
            continue
        command = _cmdline(pid)
        parent = int(_status_field(pid, "PPid") or 0)
        if "bot.cli worker" in command:
            roles.append(("worker" if pid not in extra_workers else "worker (extra)", pid))
        elif pid == pgid:
            roles.append(("serve (supervisor)", pid))
        elif parent == pgid:
            roles.append(("gunicorn master", pid))
        else:
            roles.append(("web", pid))
    return sorted(roles)


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
            "X-Slack-Signature": self.verifier.generate_signature(timestamp=stamp, body=body) or "",
        }


@dataclass(frozen=True)
class Delivery:
    """One signed-later Events API request body, its event id, and the message it is about."""

    body: bytes
    event_id: str
    key: Key


class BodyFactory:
    """Event deliveries, each with an event id never used before in this run."""

    def __init__(self, team_id: str, users: list[str]) -> None:
        self.driver = SlackDriver(events_url="http://127.0.0.1/unused", signing_secret="x", team_id=team_id)
        self.users = users
        self.run_tag = uuid.uuid4().hex[:4].upper()
        self.seq = itertools.count()

    def _wrap(self, event: dict[str, Any], key: Key) -> Delivery:
        event_id = f"Ev{self.run_tag}{next(self.seq):07d}"
        body = json.dumps(self.driver.event_callback(event, event_id=event_id)).encode()
        return Delivery(body, event_id, key)

    def reactions(self, reaction: str, targets: Sequence[Target]) -> list[Delivery]:
        """reaction_added with `reaction` on each target message."""
        return [
            self._wrap(
                self.driver.reaction_added_event(
                    user=self.users[n % len(self.users)],
                    reaction=reaction,
                    channel=channel,
                    ts=ts,
                    item_user=author,
                ),
                (channel, ts),
            )
            for n, (channel, ts, author) in enumerate(targets)
        ]

    def messages(self, posts: Sequence[Post]) -> list[Delivery]:
        """A `message` event for each post (a top-level message by a person)."""
        return [
            self._wrap(
                self.driver.message_event(user=user, text=text_, channel=channel, ts=ts), (channel, ts)
            )
            for channel, ts, user, text_ in posts
        ]

    def noise_posts(self, channels: Sequence[str], n: int) -> list[Post]:
        """`n` acknowledgements ("thanks!", "ok 👍", ...) spread over `channels`, each with a new ts."""
        return [
            (
                channels[k % len(channels)],
                self.driver.new_ts(),
                self.users[k % len(self.users)],
                NOISE_TEXTS[k % len(NOISE_TEXTS)],
            )
            for k in range(n)
        ]


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
    started: float = 0.0  # perf_counter of the first (scheduled) send
    drain: float | None = None
    drained: bool = True
    finished: float = 0.0  # perf_counter when the run and (ProdOps) its queued work were over
    captured: int | None = None  # feedback items this run created (ProdOps capture scenarios)
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

    @property
    def capture_rate(self) -> float | None:
        """Items created per second, from the first send until the inbox had drained."""
        if self.captured is None or self.finished <= self.started:
            return None
        return self.captured / (self.finished - self.started)


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
    return Result("", "", "open", done_outcomes, window, measured, errors, started=start)


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
    result = Result(
        "", "", "closed", outcomes, max(1e-9, window_end - measure_from), measured, errors, started=start
    )
    result.pool_exhausted = exhausted.is_set()
    return result


# ---- the database --------------------------------------------------------------------------------------


class DatabaseProbe:
    """Read-only queries on ProdOps' database (a plain engine: no BEGIN IMMEDIATE, no write lock)."""

    def __init__(self, url: str) -> None:
        self.engine: Engine = create_engine(url)
        separate = inbox_url(url)  # a SQLite file keeps its inbox in a file of its own
        self.inbox_engine: Engine = self.engine if separate is None else create_engine(separate)

    def scalar(self, sql: str) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(text(sql)).scalar_one())

    def pending(self) -> int:
        with self.inbox_engine.connect() as conn:
            sql = "SELECT count(*) FROM inbox_events WHERE status IN ('queued', 'pending')"
            return int(conn.execute(text(sql)).scalar_one())

    def inbox_by_status(self) -> dict[str, int]:
        with self.inbox_engine.connect() as conn:
            rows = conn.execute(text("SELECT status, count(*) FROM inbox_events GROUP BY status"))
            return {str(status): int(count) for status, count in rows}

    def inbox_status_by_id(self) -> dict[str, str]:
        """delivery_id -> status of every recorded delivery."""
        with self.inbox_engine.connect() as conn:
            rows = conn.execute(text("SELECT delivery_id, status FROM inbox_events"))
            return {str(delivery_id): str(status) for delivery_id, status in rows}

    def feedback_keys(self) -> list[tuple[str, str, str]]:
        """(source, channel id, message ts) of every feedback item."""
        with self.engine.connect() as conn:
            rows = conn.execute(text("SELECT source, channel_id, message_ts FROM feedback_items"))
            return [(str(source), str(c), str(t)) for source, c, t in rows]

    def items(self, source: str) -> int:
        with self.engine.connect() as conn:
            query = text("SELECT count(*) FROM feedback_items WHERE source = :source")
            return int(conn.execute(query, {"source": source}).scalar_one())

    def wait_drained(self, timeout: float) -> tuple[float, bool]:
        """Waits until no delivery is pending (work queued after the ack has finished)."""
        start = time.perf_counter()
        while time.perf_counter() - start < timeout:
            if self.pending() == 0:
                return time.perf_counter() - start, True
            time.sleep(0.1)
        return time.perf_counter() - start, False

    def dispose(self) -> None:
        self.engine.dispose()
        self.inbox_engine.dispose()


def watch_channels(url: str, team_id: str, channel_ids: Sequence[str]) -> None:
    """Opts channels in to monitoring in ProdOps' database (after `prodops serve` has migrated it)."""
    db = Database(url)
    try:
        with db.session() as s:
            for channel_id in channel_ids:
                s.add(WatchedChannel(team_id=team_id, channel_id=channel_id, added_by_user_id=WATCHED_BY))
    finally:
        db.dispose()


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


@dataclass
class Sent:
    """What ProdOps was sent in one scenario, and what it acked with 200."""

    event_ids: set[str] = field(default_factory=set)
    ok_event_ids: set[str] = field(default_factory=set)
    keys: set[Key] = field(default_factory=set)
    ok_keys: set[Key] = field(default_factory=set)


@dataclass
class Run:
    """One planned measurement."""

    scenario: str
    server: str
    mode: str
    deliveries: list[Delivery]


class Bench:
    def __init__(self, config: Config, console: Console) -> None:
        self.config = config
        self.console = console
        self.signer = Signer(SIGNING_SECRET)
        self.results: list[Result] = []
        self.servers: dict[str, Server] = {}
        self.emulator: EmulatorHandle | None = None
        self.probe: DatabaseProbe | None = None
        self.sent: dict[str, Sent] = defaultdict(Sent)  # per scenario, ProdOps only
        self.broken: list[str] = []
        self.workers = 1
        self.extra_workers: list[subprocess.Popen[bytes]] = []

    def measure(self, run: Run) -> Result:
        scenario, server_name, mode, deliveries = run.scenario, run.server, run.mode, run.deliveries
        server = self.servers[server_name]
        assert self.emulator is not None
        if not server.alive():
            raise RuntimeError(f"{server_name} is not running; log:\n{server.process.log_tail()}")
        self.settle(server)
        prodops = server_name == "prodops"
        source = {CHANNEL: "channel", BULB: "reaction"}.get(scenario) if prodops else None
        items_before = self.probe.items(source) if source and self.probe else 0
        cpu_before, emu_before, client_before = (
            self.server_cpu(server),
            self.emulator_cpu(),
            time.process_time(),
        )
        port = server.process.port
        bodies = [d.body for d in deliveries]
        if mode == "open":
            result = open_loop(port, bodies, self.signer, self.config)
        else:
            result = closed_loop(port, bodies, self.signer, self.config, wrap=not prodops)
        result.scenario, result.server = scenario, server_name
        result.client_cpu = time.process_time() - client_before
        if prodops and self.probe is not None:
            result.drain, result.drained = self.probe.wait_drained(self.config.drain_timeout)
        result.finished = time.perf_counter()
        cpu_after = self.server_cpu(server)
        result.server_cpu = {pid: cpu - cpu_before.get(pid, 0.0) for pid, cpu in cpu_after.items()}
        result.emulator_cpu = self.emulator_cpu() - emu_before
        if source and self.probe is not None:
            result.captured = self.probe.items(source) - items_before
        result.log_problems = server.new_log_problems()
        if prodops:
            sent = self.sent[scenario]
            for outcome in result.outcomes:
                delivery = deliveries[outcome.index]  # ProdOps never wraps around its pool
                sent.event_ids.add(delivery.event_id)
                sent.keys.add(delivery.key)
                if outcome.status == "200":
                    sent.ok_event_ids.add(delivery.event_id)
                    sent.ok_keys.add(delivery.key)
        if not server.alive():
            self.broken.append(f"{server_name} died during {scenario}/{mode}")
        self.results.append(result)
        self.print_progress(result)
        return result

    def settle(self, server: Server, timeout: float = 10.0) -> None:
        """Waits until every worker is up and the server is idle, so runs do not inherit each other's work."""
        deadline = time.perf_counter() + timeout
        before = group_cpu(server.pgid)
        while time.perf_counter() < deadline:
            time.sleep(0.2)
            after = group_cpu(server.pgid)
            busy = sum(after.values()) - sum(before.values())
            before = after
            if len(after) > self.workers and busy < 0.02:
                return

    def emulator_cpu(self) -> float:
        assert self.emulator is not None and self.emulator.process.pid is not None
        return pid_cpu(self.emulator.process.pid)

    def print_progress(self, r: Result) -> None:
        workers = sorted(r.server_cpu.values(), reverse=True)
        split = "/".join(f"{cpu:.1f}" for cpu in workers if cpu >= 0.05) or "0"
        line = (
            f"  {r.scenario:<7} {r.mode:<6} {r.server:<7} {r.rate:7.1f} req/s  p50 {ms(r.pct(0.5)):>6} ms  "
            f"p99 {ms(r.pct(0.99)):>7} ms  max {ms(r.pct(1.0)):>7} ms  n={len(r.outcomes)}"
            f"  server CPU {split} s  emulator {r.emulator_cpu:.1f} s  client {r.client_cpu:.1f} s"
        )
        if r.drain is not None:
            line += f"  drain {r.drain:.1f} s" + ("" if r.drained else " (NOT drained)")
        if r.captured is not None:
            rate = r.capture_rate
            line += f"  captured {r.captured}" + (f" ({rate:.0f}/s)" if rate is not None else "")
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
        chosen = config.scenarios
        # Each capture scenario needs a fresh seeded message per ProdOps request (open + closed pool).
        per_capture = config.open_requests + config.capture_pool
        plain = max(1, math.ceil((per_capture if BULB in chosen else 0) / MESSAGES_PER_CHANNEL))
        watched = max(1, math.ceil((per_capture if CHANNEL in chosen else 0) / MESSAGES_PER_CHANNEL))
        settings = Settings()
        with tempfile.TemporaryDirectory(prefix="prodops-bench-") as tmp_name:
            tmp = Path(tmp_name)
            database = BenchDatabase(config.database_url, tmp)
            self.workers = workers_for(settings, database.url)
            self.print_header(settings, database)
            try:
                self.emulator = EmulatorHandle(plain, watched)
                env = server_env(self.emulator, database.url, settings)
                self.servers["bare"] = make_server("bare", env, tmp, "bench.bare_app")
                self.servers["prodops"] = make_server("prodops", env, tmp, None)
                with ThreadPoolExecutor(max_workers=2) as pool:  # both at once: start-up is most of --quick
                    for future in [pool.submit(s.process.start, 60) for s in self.servers.values()]:
                        future.result()
                self.start_extra_workers(env, tmp)
                self.probe = DatabaseProbe(database.url)
                started = time.perf_counter()
                seeded = self.emulator.wait_seeded()
                # ProdOps is healthy, so `prodops serve` has migrated: its tables exist.
                watch_channels(database.url, self.emulator.team_id, seeded.watched)
                self.console.print(
                    f"Seeded {len(seeded.targets)} messages in {plain} unwatched channel(s) and "
                    f"{len(seeded.posts)} in {watched} watched channel(s) "
                    f"(+{time.perf_counter() - started:.1f} s after the servers were up); "
                    f"{len(seeded.watched)} channel(s) added to ProdOps' watched_channels.\n",
                    highlight=False,
                )
                for server in self.servers.values():
                    self.settle(server, timeout=30)
                    problems = [line for line in server.new_log_problems() if "Booting worker" not in line]
                    if problems:
                        self.console.print(f"[yellow]{server.name} start-up log:[/]")
                        for line in problems[:5]:
                            self.console.print(f"  {line[:220]}", markup=False, highlight=False)
                self.run_phases(seeded)
                return self.report()
            finally:
                self.stop_extra_workers()
                for server in self.servers.values():
                    server.process.stop()
                if self.emulator is not None:
                    self.emulator.stop()
                if self.probe is not None:
                    self.probe.dispose()
                database.drop()
                self.keep_logs(tmp)

    def server_cpu(self, server: Server) -> dict[int, float]:
        """CPU seconds per process of a server (ProdOps: with the extra workers, each in its own session)."""
        cpu = group_cpu(server.pgid)
        if server.name == "prodops":
            for process in self.extra_workers:
                cpu.update(group_cpu(process.pid))
        return cpu

    def start_extra_workers(self, env: dict[str, str], tmp: Path) -> None:
        """`--workers N`: N-1 `prodops worker` processes beside serve's own (counted in ProdOps' CPU)."""
        prodops = self.servers["prodops"]
        for n in range(self.config.queue_workers - 1):
            log = open(tmp / f"worker-{n + 2}.log", "ab")  # noqa: SIM115 - closed with the process
            self.extra_workers.append(
                subprocess.Popen(
                    [sys.executable, "-m", "bot.cli", "worker"],
                    env={**prodops.process.env},
                    cwd=REPO,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # setpgid into serve's own session is not permitted
                )
            )
            log.close()

    def stop_extra_workers(self) -> None:
        for process in self.extra_workers:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.extra_workers:
            try:
                process.wait(timeout=25)
            except subprocess.TimeoutExpired:
                process.kill()

    def report_memory(self) -> None:
        """Resident memory of each ProdOps process at the end: web processes vs queue workers."""
        prodops = self.servers.get("prodops")
        if prodops is None or not prodops.alive():
            return
        roles = process_roles(prodops.pgid, [p.pid for p in self.extra_workers])
        parts = []
        for role, pid in roles:
            rss = rss_mb(pid)
            parts.append(f"{role} {pid}: {'-' if rss is None else f'{rss:.0f} MB'}")
        self.console.print("\n[bold]Memory[/] (VmRSS at the end): " + "; ".join(parts), highlight=False)

    def keep_logs(self, tmp: Path) -> None:
        """Copy the server logs out of the temp dir so they can be read after the run."""
        out = Path(tempfile.gettempdir()) / "prodops-bench-logs"
        out.mkdir(exist_ok=True)
        for log in [s.log_path for s in self.servers.values()] + sorted(tmp.glob("worker-*.log")):
            if log.exists():
                (out / log.name).write_bytes(log.read_bytes())
        self.console.print(f"Server logs: {out}/{{bare,prodops,worker-N}}.log")

    def plan(self, seeded: Seeded) -> list[tuple[str, str, str, Any]]:
        """(scenario, server, mode, make deliveries) in the order they run: bare, ProdOps, bare, ProdOps."""
        assert self.emulator is not None
        config = self.config
        factory = BodyFactory(self.emulator.team_id, seeded.users)
        open_n, closed_n, capture_n = config.open_requests, config.closed_pool, config.capture_pool
        bare_closed_n = min(closed_n, 5000)  # the bare app goes round its pool: no need for more

        def cycle(items: Sequence[Any], n: int, offset: int) -> list[Any]:
            return [items[(offset + k) % len(items)] for k in range(n)]

        fresh_targets, fresh_posts = iter(seeded.targets), iter(seeded.posts)

        def take(fresh: Any, n: int) -> list[Any]:
            return list(itertools.islice(fresh, n))

        def reactions(reaction: str, targets: list[Target]) -> list[Delivery]:
            return factory.reactions(reaction, targets)

        def noise(n: int) -> list[Delivery]:
            return factory.messages(factory.noise_posts(seeded.watched, n))

        targets, posts = seeded.targets, seeded.posts
        makers = {
            IDLE: [
                ("bare", "open", lambda: reactions(IDLE_REACTION, cycle(targets, open_n, 0))),
                ("prodops", "open", lambda: reactions(IDLE_REACTION, cycle(targets, open_n, 7))),
                ("bare", "closed", lambda: reactions(IDLE_REACTION, cycle(targets, bare_closed_n, 13))),
                ("prodops", "closed", lambda: reactions(IDLE_REACTION, cycle(targets, closed_n, 29))),
            ],
            NOISE: [
                ("bare", "open", lambda: noise(open_n)),
                ("prodops", "open", lambda: noise(open_n)),
                ("bare", "closed", lambda: noise(bare_closed_n)),
                ("prodops", "closed", lambda: noise(closed_n)),
            ],
            CHANNEL: [  # the bare app may see a message twice; ProdOps gets each seeded message once
                ("bare", "open", lambda: factory.messages(cycle(posts, open_n, 3))),
                ("prodops", "open", lambda: factory.messages(take(fresh_posts, open_n))),
                ("bare", "closed", lambda: factory.messages(cycle(posts, bare_closed_n, 11))),
                ("prodops", "closed", lambda: factory.messages(take(fresh_posts, capture_n))),
            ],
            BULB: [
                ("bare", "open", lambda: reactions(FEEDBACK_REACTION, cycle(targets, open_n, 31))),
                ("prodops", "open", lambda: reactions(FEEDBACK_REACTION, take(fresh_targets, open_n))),
                ("bare", "closed", lambda: reactions(FEEDBACK_REACTION, cycle(targets, bare_closed_n, 37))),
                ("prodops", "closed", lambda: reactions(FEEDBACK_REACTION, take(fresh_targets, capture_n))),
            ],
        }
        return [(scenario, *step) for scenario in config.scenarios for step in makers[scenario]]

    def run_phases(self, seeded: Seeded) -> None:
        config = self.config
        self.console.print(
            f"[bold]Open loop[/] {config.rate:.0f} req/s for {config.warmup:g}+{config.duration:g} s "
            f"({config.senders} keep-alive senders); [bold]closed loop[/] {config.clients} clients for "
            f"{config.closed_warmup:g}+{config.closed_duration:g} s. Latency = scheduled send → response. "
            f"Scenarios: {', '.join(config.scenarios)}.",
            highlight=False,
        )
        for scenario, server, mode, make in self.plan(seeded):
            self.measure(Run(scenario, server, mode, make()))

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
            f"ProdOps queue workers: {self.config.queue_workers} process(es) (serve's own"
            + (
                f" + {self.config.queue_workers - 1} `prodops worker`"
                if self.config.queue_workers > 1
                else ""
            )
            + ")\n"
            f"ProdOps database: {database.shown}\n"
            "The Slack emulator (a separate process) and this load generator share the machine's CPUs with "
            "the servers: per captured message the emulator answers chat.getPermalink, conversations.info "
            "(cached by ProdOps) and reactions.add (channel) or conversations.history and chat.postMessage "
            "(bulb).",
            highlight=False,
        )

    def pair(self, scenario: str, mode: str) -> tuple[Result | None, Result | None]:
        return self._get(scenario, "bare", mode), self._get(scenario, "prodops", mode)

    def _get(self, scenario: str, server: str, mode: str) -> Result | None:
        return next(
            (r for r in self.results if (r.scenario, r.server, r.mode) == (scenario, server, mode)), None
        )

    def report(self) -> int:
        console = self.console
        table = Table(title="Signed Events API deliveries: ack latency and throughput", show_lines=False)
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
            ("drain s open|closed", "right"),
            ("errors", "right"),
        ):
            table.add_column(column, justify=justify)  # type: ignore[arg-type]
        for n, scenario in enumerate(self.config.scenarios):
            bare_closed, prodops_closed = self.pair(scenario, "closed")
            for server in ("bare", "prodops"):
                o = self._get(scenario, server, "open")
                c = self._get(scenario, server, "closed")
                ratio = ""
                if server == "prodops" and bare_closed and prodops_closed and bare_closed.rate > 0:
                    ratio = f"{prodops_closed.rate / bare_closed.rate:.2f}×"
                errors = (o.failures if o else 0) + (c.failures if c else 0)
                drain = ""
                if server == "prodops":
                    drain = " | ".join(
                        "-" if r is None or r.drain is None else f"{r.drain:.1f}" + ("" if r.drained else "!")
                        for r in (o, c)
                    )
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
                    drain,
                    f"[red]{errors}[/]" if errors else "0",
                )
            if n < len(self.config.scenarios) - 1:
                table.add_section()
        console.print()
        console.print(table)
        console.print(
            "open = fixed-rate timetable, latency from the scheduled send time (queueing included); "
            "closed = as fast as the clients can go; ratio = ProdOps/bare closed-loop throughput; "
            "CPU ms/req = the server's CPU (all gunicorn processes) per request, for ProdOps including the "
            "work done after the ack until the inbox drained; drain = seconds after the last answer until "
            "ProdOps' inbox had nothing pending (! = not drained in time). * = request pool ran out early.",
            style="dim",
        )
        for scenario in self.config.scenarios:
            console.print(f"{SCENARIO_LABELS[scenario]}: {SCENARIO_HELP[scenario]}", style="dim")
        self.report_capture_rate()
        self.report_goals()
        self.report_memory()
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
        console.print("\n[green]No errors: every delivery was answered 200 and handled as expected.[/]")
        return 0

    def report_capture_rate(self) -> None:
        """Channel monitoring's capture throughput through HTTP (the Customer-insights benchmark)."""
        if CHANNEL not in self.config.scenarios:
            return
        self.console.print("\n[bold]Channel capture through HTTP[/] (ProdOps, watched channels)")
        for mode in ("closed", "open"):
            r = self._get(CHANNEL, "prodops", mode)
            if r is None or r.captured is None:
                continue
            how = (
                f"{self.config.clients} clients"
                if mode == "closed"
                else f"{self.config.rate:g} req/s offered"
            )
            rate = r.capture_rate
            self.console.print(
                f"  {mode:<6} ({how}): {r.captured} messages captured in "
                f"{r.finished - r.started:.1f} s from the first send to the drained inbox = "
                f"[bold]{rate or 0:.0f} messages/s captured[/]; acks {r.rate:.0f} req/s, "
                f"p99 ack {ms(r.pct(0.99))} ms",
                highlight=False,
            )

    def report_goals(self) -> None:
        console = self.console
        console.print("\n[bold]Goals[/] (timings are for information; shared machines are noisy)")
        for scenario in self.config.scenarios:
            bare_c, prodops_c = self.pair(scenario, "closed")
            if bare_c and prodops_c and bare_c.rate > 0:
                ratio = prodops_c.rate / bare_c.rate
                verdict = "[green]PASS[/]" if ratio >= GOAL_RATIO else "[red]MISS[/]"
                console.print(
                    f"  {verdict} {scenario:<7} throughput {prodops_c.rate:.0f} vs {bare_c.rate:.0f} req/s = "
                    f"{ratio:.2f}× bare (goal ≥ {GOAL_RATIO}×)",
                    highlight=False,
                )
            o = self._get(scenario, "prodops", "open")
            if o:
                p99 = o.pct(0.99)
                keeps_up = o.rate >= 0.97 * self.config.rate
                verdict = "[green]PASS[/]" if p99 < GOAL_P99 and keeps_up else "[red]MISS[/]"
                console.print(
                    f"  {verdict} {scenario:<7} p99 {ms(p99)} ms at {o.rate:.0f} of {self.config.rate:g} req/s "
                    f"(goal p99 < {GOAL_P99 * 1000:.0f} ms at {self.config.rate:g} req/s)",
                    highlight=False,
                )
                if o.drain is not None and o.drain > 1.0:
                    console.print(
                        f"          work queued after the acks took {o.drain:.1f} s more to finish"
                        + ("" if o.drained else " (and had NOT finished when we stopped waiting)"),
                        highlight=False,
                    )

    def check(self, ok: bool, message: str, broken: str | None = None) -> None:
        verdict = "[green]OK[/]   " if ok else "[red]WRONG[/]"
        self.console.print(f"  {verdict} {message}", highlight=False)
        if not ok:
            self.broken.append(broken or message)

    def report_correctness(self) -> None:
        console = self.console
        assert self.probe is not None and self.emulator is not None
        console.print("\n[bold]Correctness under load[/] (ProdOps' database and the emulator, after the run)")
        _, drained = self.probe.wait_drained(self.config.drain_timeout)
        status = self.probe.inbox_status_by_id()
        by_status = dict(Counter(status.values()))
        calls = self.emulator.counts()
        keys = self.probe.feedback_keys()
        console.print(
            f"  inbox: {len(status)} deliveries recorded {by_status}"
            + ("" if drained else " — the inbox had NOT drained")
            + f"; emulator calls: {dict(sorted(calls.items()))}",
            highlight=False,
        )
        stuck = {k: v for k, v in by_status.items() if k in ("queued", "pending", "failed", "dead")}
        if stuck:
            self.broken.append(f"inbox deliveries not done after the run: {stuck}")

        def not_done(sent: Sent) -> list[str]:
            return [e for e in sent.ok_event_ids if status.get(e) != "done"]

        chosen = self.config.scenarios
        if IDLE in chosen:
            sent = self.sent[IDLE]
            recorded = [e for e in sent.event_ids if e in status]
            self.check(
                not recorded,
                f"idle    :{IDLE_REACTION}: — {len(sent.event_ids)} sent, {len(sent.ok_event_ids)} acked 200, "
                f"{len(recorded)} recorded in inbox_events (expected 0: answered before the inbox)",
                f"{len(recorded)} idle reactions were recorded in the inbox",
            )
        item_keys: dict[str, Counter[Key]] = defaultdict(Counter)
        for source, channel, ts in keys:
            item_keys[source][(channel, ts)] += 1
        all_items = {key for counter in item_keys.values() for key in counter}
        if NOISE in chosen:
            # Noise in a watched channel is classified before the inbox (like idle reactions): nothing kept.
            sent = self.sent[NOISE]
            recorded = [e for e in sent.event_ids if e in status]
            items = sent.keys & all_items
            self.check(
                not recorded and not items,
                f"noise   — {len(sent.ok_event_ids)} acked 200, {len(recorded)} recorded in inbox_events "
                f"(expected 0: answered before the inbox); {len(items)} feedback items from them (expected 0)",
                f"noise: {len(recorded)} noise messages recorded, {len(items)} items created",
            )
        if CHANNEL in chosen:
            sent = self.sent[CHANNEL]
            self.check_captures(CHANNEL, "channel", sent, item_keys["channel"], not_done(sent))
            reacted = calls.get("reactions.add", 0)
            expected = sum(item_keys["channel"].values())
            self.check(
                reacted == expected,
                f"channel — reactions.add called {reacted} times for {expected} channel items",
            )
        if BULB in chosen:
            sent = self.sent[BULB]
            self.check_captures(BULB, "reaction", sent, item_keys["reaction"], not_done(sent))
            posted = calls.get("chat.postMessage", 0)
            expected = sum(item_keys["reaction"].values())
            self.check(
                posted == expected,
                f"bulb    — chat.postMessage (confirmations) {posted} for {expected} reaction items",
            )
        others = {s: sum(c.values()) for s, c in item_keys.items() if s not in ("channel", "reaction")}
        if others:
            self.broken.append(f"unexpected feedback items: {others}")

    def check_captures(
        self, scenario: str, source: str, sent: Sent, items: Counter[Key], not_done: list[str]
    ) -> None:
        captured = set(items)
        lost = sent.ok_keys - captured
        extra = captured - sent.keys
        dupes = sum(items.values()) - len(captured)
        self.check(
            not lost and not extra and not dupes and not not_done,
            f"{scenario:<7} — feedback_items (source {source!r}): {sum(items.values())} rows for "
            f"{len(sent.ok_keys)} distinct messages acked 200 ({len(lost)} missing, {len(extra)} unexpected, "
            f"{dupes} duplicates); {len(not_done)} acked deliveries not done in inbox_events",
            f"{scenario}: {len(lost)} items missing, {len(extra)} unexpected, {dupes} duplicates, "
            f"{len(not_done)} deliveries not done",
        )


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_args(argv)
    console = Console(emoji=False) if sys.stdout.isatty() else Console(emoji=False, width=190)
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
