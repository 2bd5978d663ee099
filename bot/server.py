"""Runs the bot: gunicorn (HTTP mode) or Socket Mode, each with the inbox sweeper alongside."""

from __future__ import annotations

import logging
import signal
import threading

from apscheduler.schedulers.background import BackgroundScheduler
from gunicorn.app.base import BaseApplication
from slack_bolt import App

from bot.insights.similarity import warm_up
from bot.jobs import add_inbox_sweeper, add_scheduled_jobs
from bot.logs import configure_logging
from bot.settings import Settings
from bot.slack_app import build_app
from bot.web import ProdOpsWSGI
from storage.db import Database

logger = logging.getLogger("prodops.server")


def start_inbox_sweeper(app: App, db: Database, settings: Settings) -> BackgroundScheduler:
    """Runs the inbox sweeper in a background thread of this process."""
    scheduler = BackgroundScheduler(daemon=True)
    add_inbox_sweeper(scheduler, app, db, settings)
    if settings.scheduler_in_web:  # small installs need no separate worker; claims keep both safe together
        add_scheduled_jobs(scheduler, db, settings)
    scheduler.start()
    return scheduler


def build_wsgi(settings: Settings) -> ProdOpsWSGI:
    """One worker process: database, Bolt app, inbox sweeper, WSGI wrapper."""
    configure_logging(settings.log_level)
    db = Database(settings.database_url)
    app = build_app(settings, db)
    start_inbox_sweeper(app, db, settings)
    warm_up(settings)  # the embeddings model, when that backend is in use, before the first capture needs it
    return ProdOpsWSGI(app, db)


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
        }
        for key, value in options.items():
            self.cfg.set(key, value)

    def load(self) -> ProdOpsWSGI:
        return build_wsgi(self.settings)


def serve_http(settings: Settings, bind: str | None = None) -> None:
    """Serves POST /slack/events and GET /healthz with gunicorn until stopped."""
    GunicornServer(settings, bind).run()


def serve_socket_mode(settings: Settings) -> None:
    """Connects to Slack over Socket Mode (no public URL needed) until SIGTERM or SIGINT."""
    from slack_bolt.adapter.socket_mode import SocketModeHandler

    configure_logging(settings.log_level)
    db = Database(settings.database_url)
    app = build_app(settings, db)
    scheduler = start_inbox_sweeper(app, db, settings)
    warm_up(settings)
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
        scheduler.shutdown(wait=False)
        db.dispose()
