"""Prometheus metrics (GET /metrics): the queues as the database holds them, and what the processes did.

Queue gauges (inbox, insight tasks, outboxes) are read from the database at scrape time, so every process
reports the same truth. Counters and histograms (deliveries, insight batches, Slack API calls) live in the
process that recorded them; with PROMETHEUS_MULTIPROC_DIR set (`prodops serve` sets it before gunicorn
forks) each process writes them to a file there and any process's /metrics adds them all up.

prometheus_client is imported lazily: it picks single- or multi-process mode when it is first imported, so
`prepare_multiprocess_dir()` must run before that in the parent process.
"""

from __future__ import annotations

import atexit
import hmac
import logging
import os
import shutil
import sys
import tempfile
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from storage.models import DigestOutbox, ShipNotice, SlaNotice
from storage.types import utcnow

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from prometheus_client import Counter, Histogram
    from prometheus_client.metrics_core import Metric

    from bot.settings import Settings
    from storage.db import Database

logger = logging.getLogger("prodops.metrics")

METRICS_PATH = "/metrics"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Outbox tables with a status column, and the statuses that mean "not delivered yet" or "gave up".
OUTBOXES: dict[str, Any] = {"digest": DigestOutbox, "ship_notice": ShipNotice}
OUTBOX_STATUSES = ("pending", "sending", "failed")
# SLA reminders are claimed by a row and marked sent: a claimed, unsent one is pending.
SLA_OUTBOX = "sla_notice"
PROCESSING_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
LABEL_MAX = 64


@dataclass(frozen=True)
class _LiveMetrics:
    deliveries: Counter
    processing: Histogram
    insight_batch_size: Histogram
    insight_batch_seconds: Histogram
    slack_requests: Counter
    slack_errors: Counter
    slack_rate_limited: Counter
    slack_retry_after: Counter


_live_lock = threading.Lock()
_live_metrics: _LiveMetrics | None = None


def _live() -> _LiveMetrics:
    """The process's counters and histograms, created on first use (in the default registry)."""
    global _live_metrics
    if _live_metrics is not None:
        return _live_metrics
    with _live_lock:
        if _live_metrics is None:
            from prometheus_client import Counter, Histogram

            _live_metrics = _LiveMetrics(
                deliveries=Counter(
                    "prodops_inbox_deliveries",
                    "Deliveries from Slack handled, by kind and outcome (done, ignored, retry, failed, dead).",
                    ["kind", "outcome"],
                ),
                processing=Histogram(
                    "prodops_inbox_processing_seconds",
                    "Time to handle one delivery, by kind.",
                    ["kind"],
                    buckets=PROCESSING_BUCKETS,
                ),
                insight_batch_size=Histogram(
                    "prodops_insight_batch_size",
                    "Captured items encoded together in one insights batch.",
                    buckets=BATCH_SIZE_BUCKETS,
                ),
                insight_batch_seconds=Histogram(
                    "prodops_insight_batch_seconds",
                    "Time to run one insights batch (encode, themes, duplicates).",
                    buckets=PROCESSING_BUCKETS,
                ),
                slack_requests=Counter(
                    "prodops_slack_api_requests",
                    "Slack Web API HTTP requests (each attempt), by method and HTTP status "
                    "(network_error / timeout when there was no answer).",
                    ["method", "status"],
                ),
                slack_errors=Counter(
                    "prodops_slack_api_errors",
                    "Slack Web API answers with ok=false, by method and Slack error code.",
                    ["method", "error"],
                ),
                slack_rate_limited=Counter(
                    "prodops_slack_rate_limited",
                    "Slack Web API answers HTTP 429 (rate limited), by method.",
                    ["method"],
                ),
                slack_retry_after=Counter(
                    "prodops_slack_retry_after_seconds",
                    "Seconds spent waiting out Slack's Retry-After before trying again, by method.",
                    ["method"],
                ),
            )
    return _live_metrics


def _label(value: str) -> str:
    return (value or "unknown")[:LABEL_MAX]


def record_delivery(kind: str, outcome: str, seconds: float) -> None:
    """One delivery handled: its kind (e.g. event:reaction_added), outcome (done, retry, dead…) and time."""
    metrics = _live()
    metrics.deliveries.labels(_label(kind), _label(outcome)).inc()
    metrics.processing.labels(_label(kind)).observe(max(0.0, seconds))


def record_insight_batch(size: int, seconds: float) -> None:
    """One insights batch of `size` items took `seconds`."""
    metrics = _live()
    metrics.insight_batch_size.observe(size)
    metrics.insight_batch_seconds.observe(max(0.0, seconds))


def record_slack_response(method: str, status: str, error: str | None = None) -> None:
    """One Slack Web API attempt answered with HTTP `status` (and Slack's `error` when ok was false)."""
    metrics = _live()
    metrics.slack_requests.labels(_label(method), _label(status)).inc()
    if status == "429":
        metrics.slack_rate_limited.labels(_label(method)).inc()
    if error:
        metrics.slack_errors.labels(_label(method), _label(error)).inc()


def record_rate_limit_wait(method: str, seconds: float) -> None:
    """Seconds waited for Slack's Retry-After on `method` (the SDK's sleep, or a sender's own wait)."""
    _live().slack_retry_after.labels(_label(method)).inc(max(0.0, seconds))


# ---- processes: one registry, or files shared by gunicorn's workers and the worker process -------------


def multiprocess_dir() -> str | None:
    """PROMETHEUS_MULTIPROC_DIR when multi-process mode is on."""
    return os.environ.get(MULTIPROC_ENV) or None


def prepare_multiprocess_dir() -> Path:
    """Before forking: an empty PROMETHEUS_MULTIPROC_DIR (the one set, or a new temp dir) for every child.

    Called by `prodops serve` in the parent, before gunicorn starts its workers and the worker process;
    the children inherit the variable. A directory we created is removed when this process exits.
    """
    values = sys.modules.get("prometheus_client.values")
    if values is not None and not getattr(values.ValueClass, "_multiprocess", False):
        raise RuntimeError(
            "prometheus_client was imported before prepare_multiprocess_dir(); call it first, before "
            "anything records a metric, so that the children share one metrics directory"
        )
    given = multiprocess_dir()
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):  # counters of a previous run would be added to this one's
            stale.unlink(missing_ok=True)
        return path
    path = Path(tempfile.mkdtemp(prefix="prodops-metrics-"))
    os.environ[MULTIPROC_ENV] = str(path)
    owner = os.getpid()

    def _remove() -> None:
        if os.getpid() == owner:  # forked children inherit atexit hooks; only the creator cleans up
            shutil.rmtree(path, ignore_errors=True)

    atexit.register(_remove)
    return path


def mark_process_dead(pid: int) -> None:
    """A child exited (gunicorn's child_exit hook): drops its live-gauge files (counters stay summed)."""
    if multiprocess_dir():
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


# ---- the page --------------------------------------------------------------------------------------------


class QueueCollector:
    """Gauges read from the database at scrape time: inbox, insight tasks and outboxes."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        from bot.inbox_admin import INSIGHT_OPEN, OPEN_STATUSES, queue_summary

        up = GaugeMetricFamily(
            "prodops_queue_stats_up", "1 when the queue gauges could be read from the database, else 0."
        )
        try:
            summary = queue_summary(db=self.db)
            with self.db.read() as s:
                outbox = _outbox_counts(s)
        except (SQLAlchemyError, OSError) as exc:
            logger.warning("metrics: queue gauges unavailable: %s", exc.__class__.__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        now = utcnow()
        depth = GaugeMetricFamily(
            "prodops_inbox_depth",
            "Deliveries in the inbox not finished, by status: queued (waiting for a worker), pending "
            "(being handled), failed (to be retried), dead (gave up).",
            labels=["status"],
        )
        for open_status in OPEN_STATUSES:
            depth.add_metric([open_status.value], summary.deliveries.get(open_status.value, 0))
        yield depth
        age = GaugeMetricFamily(
            "prodops_inbox_oldest_age_seconds",
            "Seconds since the oldest queued / pending delivery was received (0 when there is none).",
            labels=["status"],
        )
        for waiting in ("queued", "pending"):
            first = summary.oldest.get(waiting)
            age.add_metric([waiting], max(0.0, (now - first).total_seconds()) if first else 0.0)
        yield age
        tasks = GaugeMetricFamily(
            "prodops_insight_tasks_depth",
            "Captured items waiting for the insights batch (queued, pending) or given up on (dead).",
            labels=["status"],
        )
        for task_status in INSIGHT_OPEN:
            tasks.add_metric([task_status], summary.insight_tasks.get(task_status, 0))
        yield tasks
        first_task = summary.oldest_insight
        yield GaugeMetricFamily(
            "prodops_insight_tasks_oldest_age_seconds",
            "Seconds since the oldest queued insight task was created (0 when there is none).",
            value=max(0.0, (now - first_task).total_seconds()) if first_task else 0.0,
        )
        messages = GaugeMetricFamily(
            "prodops_outbox_depth",
            "Messages in an outbox not sent: pending, sending (claimed), failed (gave up), by outbox "
            "(digest, ship_notice; sla_notice: claimed reminders not sent yet).",
            labels=["outbox", "status"],
        )
        for (name, outbox_status), count in sorted(outbox.items()):
            messages.add_metric([name, outbox_status], count)
        yield messages


def _outbox_counts(session: Any) -> dict[tuple[str, str], int]:
    """Rows per outbox and unsent status (zeros included)."""
    counts = {(name, status): 0 for name in OUTBOXES for status in OUTBOX_STATUSES}
    for name, model in OUTBOXES.items():
        rows = session.execute(
            select(model.status, func.count()).where(model.status.in_(OUTBOX_STATUSES)).group_by(model.status)
        )
        for status, count in rows:
            counts[(name, str(status))] = int(count)
    unsent = select(func.count()).select_from(SlaNotice).where(SlaNotice.sent_at.is_(None))
    counts[(SLA_OUTBOX, "pending")] = int(session.scalar(unsent) or 0)
    return counts


class _Page:
    """Everything one scrape shows: the process (or every process's files) plus the queue gauges."""

    def __init__(self, collectors: Iterable[Any]) -> None:
        self.collectors = list(collectors)

    def collect(self) -> Iterator[Metric]:
        for collector in self.collectors:
            yield from collector.collect()


def render_metrics(db: Database, accept: str = "") -> tuple[bytes, str]:
    """The metrics page (body, content type) in the format the scraper asked for."""
    from prometheus_client import REGISTRY, CollectorRegistry
    from prometheus_client.exposition import choose_encoder

    _live()  # so HELP/TYPE lines are there before the first event
    if multiprocess_dir():
        from prometheus_client.multiprocess import MultiProcessCollector

        merged = CollectorRegistry()
        MultiProcessCollector(merged)
        source: Any = merged
    else:
        source = REGISTRY
    encode, content_type = choose_encoder(accept)
    return encode(_Page([source, QueueCollector(db)])), content_type


class MetricsPage:
    """GET /metrics as a WSGI app: open, or with PRODOPS_METRICS_TOKEN as `Authorization: Bearer <token>`."""

    def __init__(self, db: Database, settings: Settings | None = None) -> None:
        self.db = db
        self._settings = settings

    @property
    def token(self) -> str | None:
        """PRODOPS_METRICS_TOKEN, from the settings given or the process's settings."""
        from bot.settings import get_settings

        secret = (self._settings or get_settings()).metrics_token
        return secret.get_secret_value() if secret is not None and secret.get_secret_value() else None

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        method = str(environ.get("REQUEST_METHOD") or "GET")
        if method not in ("GET", "HEAD"):
            return _plain(start_response, "405 Method Not Allowed", "GET /metrics only\n", [("Allow", "GET")])
        token = self.token
        if token is not None and not _bearer_matches(str(environ.get("HTTP_AUTHORIZATION") or ""), token):
            return _plain(
                start_response,
                "401 Unauthorized",
                "GET /metrics needs Authorization: Bearer <PRODOPS_METRICS_TOKEN>\n",
                [("WWW-Authenticate", 'Bearer realm="metrics"')],
            )
        body, content_type = render_metrics(self.db, str(environ.get("HTTP_ACCEPT") or ""))
        start_response("200 OK", [("Content-Type", content_type), ("Content-Length", str(len(body)))])
        return [b""] if method == "HEAD" else [body]


def _bearer_matches(header: str, token: str) -> bool:
    scheme, _, given = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


def _plain(start_response: Any, status: str, text: str, headers: list[tuple[str, str]]) -> list[bytes]:
    body = text.encode()
    start_response(
        status,
        [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body))), *headers],
    )
    return [body]


def start_worker_metrics_server(
    port: int, *, db: Database, settings: Settings | None = None, addr: str = "0.0.0.0"
) -> WSGIServer:
    """Serves the same /metrics page from a worker process on `port` (PRODOPS_WORKER_METRICS_PORT).

    Runs in a daemon thread; `server.shutdown()` stops it. Any path answers with the page.
    """
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    from prometheus_client.exposition import ThreadingWSGIServer

    class _QuietHandler(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
            return

    page = MetricsPage(db, settings)
    server = make_server(addr, port, page, ThreadingWSGIServer, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="metrics-server", daemon=True).start()
    logger.info("worker metrics on http://%s:%s%s", addr, server.server_port, METRICS_PATH)
    return server
