"""Runs the bot: gunicorn (HTTP mode) or Socket Mode, with the worker process it supervises.

The web process verifies, records and acknowledges; it never loads the similarity model. The worker
(`prodops worker`, bot/worker.py) handles what was recorded. `prodops serve` starts one worker process next
to the web server, restarts it when it dies and stops it on SIGTERM (`PRODOPS_SERVE_WORKER=false` when
workers run as their own processes, e.g. the Procfile's `worker`).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING

from gunicorn.app.base import BaseApplication

from bot.logs import configure_logging
from bot.settings import Settings

if TYPE_CHECKING:  # the supervising process stays small: the app is imported where it runs
    from apscheduler.schedulers.background import BackgroundScheduler

    from bot.web import ProdOpsWSGI
    from storage.db import Database

logger = logging.getLogger("prodops.server")

PARENT_PID_ENV = "PRODOPS_PARENT_PID"  # set for the worker a serving process supervises

RESTART_BACKOFF_MAX = 30.0
HEALTHY_RUN_SECONDS = 60.0  # a worker that ran this long before dying restarts at once


class WorkerSupervisor:
    """One `prodops worker` child process: started, restarted when it dies, stopped on shutdown."""

    def __init__(self, command: list[str] | None = None) -> None:
        self.command = command or [sys.executable, "-m", "bot.cli", "worker"]
        self.process: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> WorkerSupervisor:
        """Starts the worker and the thread that watches it."""
        self._thread = threading.Thread(target=self._supervise, name="worker-supervisor", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 25.0) -> None:
        """SIGTERM to the worker (it finishes running deliveries), SIGKILL after `timeout`."""
        self._stopping.set()
        process = self.process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                logger.warning("worker %s did not stop in %ss; killing it", process.pid, timeout)
                process.kill()
        if self._thread is not None:
            self._thread.join(2.0)

    @staticmethod
    def _process_exited(pid: int) -> None:
        from bot.observability import mark_process_dead

        mark_process_dead(pid)

    def _supervise(self) -> None:
        backoff = 1.0
        while not self._stopping.is_set():
            started = time.monotonic()
            # Two malloc arenas: the worker's threads (pool, heartbeat, insight batches, torch) would otherwise
            # each grow one of glibc's up to 8 × cores arenas, a few hundred MB of RSS that is never given back.
            env = {"MALLOC_ARENA_MAX": "2", **os.environ, PARENT_PID_ENV: str(os.getpid())}
            self.process = subprocess.Popen(self.command, env=env)
            logger.info("worker process %s started", self.process.pid)
            while self.process.poll() is None and not self._stopping.wait(0.5):
                pass
            self._process_exited(self.process.pid)
            if self._stopping.is_set():
                return
            # gunicorn's master reaps every child, so the exit code may read 0 here.
            if time.monotonic() - started > HEALTHY_RUN_SECONDS:
                backoff = 1.0
            logger.error(
                "worker process %s exited (code %s); restarting in %.0f s",
                self.process.pid,
                self.process.returncode,
                backoff,
            )
            self.restarts += 1
            if self._stopping.wait(backoff):
                return
            backoff = min(backoff * 2, RESTART_BACKOFF_MAX)


def start_web_scheduler(db: Database, settings: Settings) -> BackgroundScheduler | None:
    """Scheduled jobs in the web process too, when PRODOPS_SCHEDULER_IN_WEB asks for it (claims keep it safe)."""
    if not settings.scheduler_in_web:
        return None
    from apscheduler.schedulers.background import BackgroundScheduler

    from bot.jobs import add_scheduled_jobs

    scheduler = BackgroundScheduler(daemon=True)
    add_scheduled_jobs(scheduler, db, settings)
    scheduler.start()
    return scheduler


def build_wsgi(settings: Settings) -> ProdOpsWSGI:
    """One web process: database, Bolt app (web role), WSGI wrapper."""
    from bot.slack_app import build_app
    from bot.web import ProdOpsWSGI
    from storage.db import Database

    configure_logging(settings.log_level)
    db = Database(settings.database_url)
    app = build_app(settings, db)
    start_web_scheduler(db, settings)
    return ProdOpsWSGI(app, db)


def _web_process_exited(_server: object, worker: object) -> None:
    """gunicorn's child_exit hook: the process's live gauges leave the shared metrics directory."""
    from bot.observability import mark_process_dead

    mark_process_dead(int(getattr(worker, "pid", 0)))


class GunicornServer(BaseApplication):
    """gunicorn, configured from our settings instead of its command line."""

    def __init__(self, settings: Settings, bind: str | None = None) -> None:
        self.settings = settings
        self.bind = bind or f"0.0.0.0:{settings.port}"
        super().__init__()

    def load_config(self) -> None:
        options = {
            "bind": self.bind,
            "workers": self.settings.effective_web_concurrency,
            "worker_class": "gthread",
            "threads": self.settings.web_threads,
            "timeout": 60,
            "graceful_timeout": 20,
            "keepalive": 5,
            "accesslog": None,
            "errorlog": "-",
            "loglevel": self.settings.log_level.lower(),
            "proc_name": "prodops",
            # gunicorn's control socket lives in $HOME by default and is shared by every instance on a host.
            "control_socket_disable": True,
            "child_exit": _web_process_exited,
        }
        for key, value in options.items():
            self.cfg.set(key, value)

    def load(self) -> ProdOpsWSGI:  # noqa: F821
        return build_wsgi(self.settings)


def prepare_metrics(settings: Settings) -> None:
    """Before anything records a metric: one metrics directory that every process of this `serve` shares
    (web processes and the supervised worker), so /metrics adds them up."""
    from bot.observability import prepare_multiprocess_dir

    if not os.environ.get(PARENT_PID_ENV):  # a supervising `serve` above has prepared it for all
        prepare_multiprocess_dir()


def serve_http(settings: Settings, bind: str | None = None) -> None:
    """Serves POST /slack/events and GET /healthz with gunicorn (and its worker process) until stopped.

    With a worker to supervise, this process only supervises: gunicorn runs as a child process of its own
    (its master forks web processes at any time, which must not inherit a half-started worker's pipes).
    """
    if not settings.serve_worker:
        GunicornServer(settings, bind).run()
        return
    configure_logging(settings.log_level)
    bind = bind or f"0.0.0.0:{settings.port}"
    web = subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "serve", "--bind", bind],
        env={**os.environ, "PRODOPS_SERVE_WORKER": "false", PARENT_PID_ENV: str(os.getpid())},
    )
    supervisor = WorkerSupervisor().start()
    stopping = threading.Event()

    def forward(signum: int, _frame: object) -> None:
        stopping.set()
        if web.poll() is None:
            web.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    try:
        code = web.wait()
    finally:
        supervisor.stop()
    if code and not stopping.is_set():
        raise SystemExit(code)  # gunicorn's own exit status (e.g. a web process that could not boot)


def serve_socket_mode(settings: Settings) -> None:
    """Connects to Slack over Socket Mode (no public URL needed) until SIGTERM or SIGINT."""
    from slack_bolt.adapter.socket_mode import SocketModeHandler

    from bot.slack_app import build_app
    from storage.db import Database

    configure_logging(settings.log_level)
    db = Database(settings.database_url)
    app = build_app(settings, db)
    scheduler = start_web_scheduler(db, settings)
    supervisor = WorkerSupervisor().start() if settings.serve_worker else None
    handler = SocketModeHandler(app, settings.slack_app_token)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    logger.info("connecting to Slack over Socket Mode")
    handler.connect()  # not start(): that blocks forever in Event().wait()
    try:
        while not stop.wait(0.5):
            pass
    finally:
        logger.info("closing the Socket Mode connection")
        handler.close()
        if supervisor is not None:
            supervisor.stop()
        if scheduler is not None:
            scheduler.shutdown(wait=False)
        db.dispose()
