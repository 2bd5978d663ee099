"""End-to-end :bulb: capture through the real `prodops serve` and the Slack emulator (issue 12's goals).

    PYTHONPATH=$PWD .venv/bin/python bench/capture.py --quick
    PYTHONPATH=$PWD .venv/bin/python bench/capture.py --backend tfidf --workers 2 --items 1000

Throughput (a flood of signed `reaction_added :bulb:` deliveries from 16 keep-alive clients: first send →
last item stored and confirmed in its thread), latency at 5 captures/s (ack → confirmation posted, and →
confirmation updated when chat.update happens), and memory (VmRSS) of the web and worker processes.
Timings are printed, never asserted; the exit status is 1 only when something is broken. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import multiprocessing
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # measure this tree, whatever the venv's editable install points at

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from bench.ack import (  # noqa: E402
    SIGNING_SECRET,
    BenchDatabase,
    BodyFactory,
    Client,
    DatabaseProbe,
    Signer,
    group_cpu,
    make_server,
    process_roles,
    rss_mb,
    send_one,
    server_env,
)
from bot.settings import Settings  # noqa: E402

FEEDBACK_DEV = REPO.parent / "shared" / "data" / "feedback_dev" / "feedback_dev.jsonl"
PER_CHANNEL = 100
USERS = 20
GOAL_ITEMS_PER_S = 100.0
GOAL_P50, GOAL_P99 = 0.5, 2.0
GOAL_WEB_MB, GOAL_WORKER_MB = 200.0, 700.0
SLACK_TIMEOUT = 3.0


def feedback_texts(n: int) -> list[str]:
    """`n` distinct, varied feedback texts: the dev set's (combined pairwise beyond its size), else generated."""
    base: list[str] = []
    if FEEDBACK_DEV.exists():
        base = [json.loads(line)["text"] for line in FEEDBACK_DEV.read_text().splitlines() if line.strip()]
    if not base:
        topics = (
            "CSV export",
            "SSO login",
            "mobile app",
            "search",
            "billing page",
            "API limits",
            "guest access",
        )
        problems = ("times out", "loses data", "is too slow", "needs an undo", "shows the wrong totals")
        base = [f"{t} {p} for customer {k}" for k, (t, p) in enumerate(itertools.product(topics, problems))]
    texts = list(base[:n])
    k = 0
    while len(texts) < n:
        a, b = base[k % len(base)], base[(k * 7 + 3) % len(base)]
        texts.append(f"{a.split('.')[0]}. Also: {b}")
        k += 1
    return texts


def emulator_process(conn: Connection, texts: list[str]) -> None:
    """Child process: the emulator, seeded with one message per text; answers 'calls' and 'stop'."""
    from bot.devkit.emulator import SlackEmulator

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    emulator = SlackEmulator().start()
    conn.send({"url": emulator.url, "token": emulator.bot_token, "team_id": emulator.team_id})
    users = [emulator.add_user(f"bench-user-{n}")["id"] for n in range(USERS)]
    targets = []
    channel_id = ""
    for n, text_ in enumerate(texts):
        if n % PER_CHANNEL == 0:
            channel_id = emulator.add_channel(f"bench-{n // PER_CHANNEL}", members=users)["id"]
        author = users[n % USERS]
        targets.append((channel_id, emulator.post_message(channel_id, author, text_)["ts"], author))
    conn.send({"users": users, "targets": targets})
    try:
        while True:
            command = conn.recv()
            if command != "calls":
                break
            out = []
            for call in emulator.calls():
                if call.method == "chat.postMessage":
                    thread = call.params.get("thread_ts")
                    out.append(
                        (call.method, call.at, call.params.get("channel"), thread, call.response.get("ts"))
                    )
                elif call.method == "chat.update":
                    out.append(
                        (call.method, call.at, call.params.get("channel"), None, call.params.get("ts"))
                    )
                else:
                    out.append((call.method, call.at, None, None, None))
            conn.send(out)
    except (EOFError, OSError):
        pass
    finally:
        emulator.stop()


@dataclass
class Sent:
    key: tuple[str, str]
    event_id: str
    sent_at: float
    acked_at: float
    status: str


@dataclass
class Phase:
    name: str
    sent: list[Sent] = field(default_factory=list)
    start: float = 0.0
    end: float | None = None  # last item confirmed
    updated_end: float | None = None
    cpu: dict[str, float] = field(default_factory=dict)
    confirm: list[float] = field(default_factory=list)  # ack → confirmation, s
    update: list[float] = field(default_factory=list)  # ack → chat.update, s

    @property
    def ok(self) -> list[Sent]:
        return [s for s in self.sent if s.status == "200"]

    def ack_pct(self, q: float) -> float:
        return pct([s.acked_at - s.sent_at for s in self.sent], q)


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


class CaptureBench:
    def __init__(self, args: argparse.Namespace, console: Console) -> None:
        self.args, self.console = args, console
        self.signer = Signer(SIGNING_SECRET)
        self.broken: list[str] = []
        self.extra: list[subprocess.Popen[bytes]] = []

    def calls(self) -> list[tuple[Any, ...]]:
        self.conn.send("calls")
        return list(self.conn.recv())

    def cpu_by_role(self) -> dict[str, float]:
        cpu = group_cpu(self.pgid)
        for process in self.extra:  # each in a session of its own
            cpu.update(group_cpu(process.pid))
        roles = {pid: role for role, pid in process_roles(self.pgid, [p.pid for p in self.extra])}
        out: dict[str, float] = defaultdict(float)
        for pid, seconds in cpu.items():
            role = roles.get(pid, "other")
            out["worker" if role.startswith("worker") else "web" if role == "web" else "other"] += seconds
        return dict(out)

    def send(self, deliveries: list[Any], *, clients: int, rate: float | None) -> list[Sent]:
        out: list[Sent | None] = [None] * len(deliveries)
        counter, lock = itertools.count(), threading.Lock()
        start = time.time() + 0.1

        def loop() -> None:
            client = Client(self.port, 10.0)
            while True:
                with lock:
                    i = next(counter)
                if i >= len(deliveries):
                    break
                if rate:
                    delay = start + i / rate - time.time()
                    if delay > 0:
                        time.sleep(delay)
                sent = time.time()
                status, _ = send_one(client, self.signer, deliveries[i].body)
                out[i] = Sent(deliveries[i].key, deliveries[i].event_id, sent, time.time(), status)
            client.close()

        threads = [threading.Thread(target=loop, daemon=True) for _ in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return [s for s in out if s is not None]

    def wait_confirmed(self, phase: Phase, timeout: float) -> None:
        """Until every acked key has its thread confirmation (and the inbox is drained), then settles updates."""
        wanted = {s.key: s for s in phase.ok}
        deadline = time.time() + timeout
        confirmed: dict[tuple[str, str], tuple[float, str]] = {}
        while time.time() < deadline:
            calls = self.calls()
            confirmed = {
                (c[2], c[3]): (c[1], c[4])
                for c in calls
                if c[0] == "chat.postMessage" and (c[2], c[3]) in wanted
            }
            if len(confirmed) >= len(wanted) and self.probe.pending() == 0:
                break
            time.sleep(0.2)
        phase.cpu = self.cpu_by_role()
        phase.end = max((at for at, _ in confirmed.values()), default=None)
        # Updates (theme/duplicate) may come later: wait until the insight tasks are done, briefly.
        limit = time.time() + min(60.0, timeout)
        while time.time() < limit and self.insights_open() > 0:
            time.sleep(0.3)
        calls = self.calls()
        updates = {(c[2], c[4]): c[1] for c in calls if c[0] == "chat.update"}
        by_ts = {ts: key for key, (_, ts) in confirmed.items()}
        for key, (at, ts) in confirmed.items():
            phase.confirm.append(at - wanted[key].acked_at)
            up = updates.get((key[0], ts))
            if up is not None:
                phase.update.append(up - wanted[key].acked_at)
        phase.updated_end = max((updates[k] for k in updates if k[1] in by_ts), default=None)
        posts = Counter((c[2], c[3]) for c in calls if c[0] == "chat.postMessage")
        dupes = sum(1 for k in wanted if posts[k] > 1)
        missing = len(wanted) - len(confirmed)
        items = Counter(self.probe.feedback_keys())
        item_dupes = sum(1 for k in wanted if items[("reaction", *k)] > 1)
        item_missing = sum(1 for k in wanted if items[("reaction", *k)] == 0)
        status = self.probe.inbox_status_by_id()
        not_done = sum(1 for s in phase.ok if status.get(s.event_id) != "done")
        ok = not (dupes or missing or item_dupes or item_missing or not_done)
        verdict = "[green]OK[/]   " if ok else "[red]WRONG[/]"
        self.console.print(
            f"  {verdict} {phase.name}: {len(wanted)} acked; items missing {item_missing}, duplicated {item_dupes}; "
            f"confirmations missing {missing}, duplicated {dupes}; inbox rows not done {not_done}; "
            f"chat.update for {len(phase.update)} confirmations",
            highlight=False,
        )
        if not ok:
            self.broken.append(f"{phase.name}: correctness")

    def insights_open(self) -> int:
        try:
            return self.probe.scalar(
                "SELECT count(*) FROM insight_tasks WHERE status IN ('queued', 'pending')"
            )
        except Exception:
            return 0

    def run(self) -> int:
        a = self.args
        total = a.items + int(a.rate * a.latency_duration) + a.warmup
        texts = feedback_texts(total)
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        emu = ctx.Process(target=emulator_process, args=(child, texts), daemon=True)
        emu.start()
        first = self.conn.recv()
        settings = Settings()
        with tempfile.TemporaryDirectory(prefix="prodops-capture-") as tmp_name:
            tmp = Path(tmp_name)
            database = BenchDatabase(a.database_url, tmp)
            server = None
            try:
                handle = type("E", (), first)()  # server_env reads .token, .url
                env = server_env(handle, database.url, settings)
                env |= {"PRODOPS_SIMILARITY_BACKEND": a.backend, "PYTHONPATH": str(REPO)}
                server = make_server("prodops", env, tmp, None)
                server.process.start(120)
                self.port, self.pgid = server.process.port, server.pgid
                for _ in range(a.workers - 1):
                    self.extra.append(
                        subprocess.Popen(
                            [sys.executable, "-m", "bot.cli", "worker"],
                            env=server.process.env,
                            cwd=REPO,
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL,
                            start_new_session=True,  # not serve's group: another session
                        )
                    )
                self.probe = DatabaseProbe(database.url)
                seeded = self.conn.recv()
                factory = BodyFactory(first["team_id"], seeded["users"])
                targets = [tuple(t) for t in seeded["targets"]]
                deliveries = factory.reactions("bulb", targets)
                warm, flood = deliveries[: a.warmup], deliveries[a.warmup : a.warmup + a.items]
                steady = deliveries[a.warmup + a.items :]
                self.console.rule(
                    f"[bold]Capture bench: {a.backend}, {a.workers} worker(s), {database.shown}"
                )
                w = Phase("warm-up")
                w.sent = self.send(warm, clients=2, rate=None)
                self.wait_confirmed(w, a.drain_timeout)
                before = self.cpu_by_role()
                t = Phase("throughput")
                t.sent = self.send(flood, clients=a.clients, rate=None)
                t.start = min(s.sent_at for s in t.sent)
                self.wait_confirmed(t, a.drain_timeout)
                t.cpu = {k: v - before.get(k, 0.0) for k, v in t.cpu.items()}
                lat = Phase("latency")
                lat.sent = self.send(steady, clients=4, rate=a.rate)
                self.wait_confirmed(lat, a.drain_timeout)
                memory = [
                    (role, pid, rss_mb(pid))
                    for role, pid in process_roles(self.pgid, [p.pid for p in self.extra])
                ]
                self.report(t, lat, memory)
            finally:
                for p in self.extra:
                    with contextlib.suppress(OSError):
                        p.send_signal(signal.SIGTERM)
                for p in self.extra:
                    try:
                        p.wait(25)
                    except subprocess.TimeoutExpired:
                        p.kill()
                if server is not None:
                    server.process.stop()
                with contextlib.suppress(OSError):
                    self.conn.send("stop")
                emu.join(5)
                database.drop()
        return 1 if self.broken else 0

    def report(self, t: Phase, lat: Phase, memory: list[tuple[str, int, float | None]]) -> None:
        a, c = self.args, self.console
        n = len(t.ok)
        wall = (t.end - t.start) if t.end else math.nan
        rate = n / wall if wall and wall > 0 else math.nan
        timeouts = sum(1 for s in t.sent if s.status != "200" or s.acked_at - s.sent_at > SLACK_TIMEOUT)
        table = Table(title=f"Capture end to end ({a.backend}, {a.workers} worker process(es))")
        for col in ("figure", "value"):
            table.add_column(col)
        table.add_row("flood: items (acked)", f"{n} of {len(t.sent)}")
        table.add_row("flood: first send → last confirmed", f"{wall:.1f} s = {rate:.1f} items/s")
        if t.updated_end:
            table.add_row("flood: first send → last chat.update", f"{t.updated_end - t.start:.1f} s")
        table.add_row(
            "flood: ack p50 / p99", f"{t.ack_pct(0.5) * 1000:.0f} / {t.ack_pct(0.99) * 1000:.0f} ms"
        )
        table.add_row("flood: non-200 or > 3 s", str(timeouts))
        for role in ("worker", "web", "other"):
            table.add_row(f"flood: CPU ms/item, {role}", f"{1000 * t.cpu.get(role, 0.0) / max(1, n):.1f}")
        table.add_row(
            f"{a.rate:g}/s: ack → confirmation p50 / p99",
            f"{pct(lat.confirm, 0.5):.2f} / {pct(lat.confirm, 0.99):.2f} s (n={len(lat.confirm)})",
        )
        if lat.update:
            table.add_row(
                f"{a.rate:g}/s: ack → chat.update p50 / p99",
                f"{pct(lat.update, 0.5):.2f} / {pct(lat.update, 0.99):.2f} s (n={len(lat.update)})",
            )
        else:
            table.add_row(f"{a.rate:g}/s: ack → chat.update", "no chat.update seen")
        for role, pid, rss in memory:
            table.add_row(f"RSS {role} ({pid})", "-" if rss is None else f"{rss:.0f} MB")
        c.print(table)

        def line(ok: bool, text: str) -> None:
            c.print(("[green]PASS[/] " if ok else "[red]MISS[/] ") + text, highlight=False)

        line(
            rate >= GOAL_ITEMS_PER_S,
            f"throughput {rate:.1f} items/s (goal ≥ {GOAL_ITEMS_PER_S:g} with embeddings)",
        )
        p50, p99 = pct(lat.confirm, 0.5), pct(lat.confirm, 0.99)
        line(
            p50 < GOAL_P50 and p99 < GOAL_P99,
            f"latency at {a.rate:g}/s p50 {p50:.2f} s, p99 {p99:.2f} s (< 0.5 / < 2)",
        )
        web = max((r or 0 for role, _, r in memory if role == "web"), default=0.0)
        worker = max((r or 0 for role, _, r in memory if role.startswith("worker")), default=0.0)
        line(
            web < GOAL_WEB_MB and worker < GOAL_WORKER_MB,
            f"memory web {web:.0f} MB (< 200), worker {worker:.0f} MB (< 700)",
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run (300 items, 8 s at 5/s)")
    parser.add_argument("--items", type=int, default=None, help="captures in the flood (1000; quick 300)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--rate", type=float, default=5.0, help="captures/s of the latency phase")
    parser.add_argument("--latency-duration", type=float, default=None, help="seconds (20; quick 8)")
    parser.add_argument("--warmup", type=int, default=10, help="captures before measuring (model load)")
    parser.add_argument("--backend", choices=("tfidf", "embeddings", "auto"), default="embeddings")
    parser.add_argument("--workers", type=int, choices=(1, 2, 3, 4), default=1)
    parser.add_argument("--database-url", help="SQLite URL, or a Postgres server URL (fresh db, dropped)")
    parser.add_argument("--drain-timeout", type=float, default=300.0)
    args = parser.parse_args(argv)
    args.items = args.items or (300 if args.quick else 1000)
    args.latency_duration = args.latency_duration or (8.0 if args.quick else 20.0)
    console = Console(emoji=False) if sys.stdout.isatty() else Console(emoji=False, width=160)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    return CaptureBench(args, console).run()


if __name__ == "__main__":
    sys.exit(main())
