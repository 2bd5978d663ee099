"""GET /metrics through the real server (gunicorn, 2 worker processes, one metrics directory), and
`/prodops status` showing the work queue. The module has its own database and server, so queue depths
can be compared exactly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from bot.devkit.driver import SlackDriver
from bot.devkit.emulator import SlackEmulator
from bot.devkit.server_process import ServerProcess
from storage.db import Database
from storage.models import InboxEvent
from storage.types import utcnow
from tests.conftest import SIGNING_SECRET, server_env
from tests.helpers import unique, wait_for
from tests.queue_rows import (
    add_delivery,
    add_digest_outbox,
    add_insight_task,
    add_ship_notice,
    add_sla_notice,
)

ROOT = Path(__file__).resolve().parent.parent
OWN_DATABASE = True
TOKEN = "scrape-token-0123456789"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@dataclass
class MetricsStack:
    emulator: SlackEmulator
    server: ServerProcess
    driver: SlackDriver
    db: Database
    metrics_dir: Path


@pytest.fixture(scope="module")
def ms(own_db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MetricsStack]:
    """Emulator + real server with PROMETHEUS_MULTIPROC_DIR (what `prodops serve` sets) and a scrape token."""
    folder = tmp_path_factory.mktemp("metrics")
    metrics_dir = folder / "prom"
    metrics_dir.mkdir()
    emulator = SlackEmulator().start()
    env = server_env(
        emulator,
        own_db_url,
        PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
        PRODOPS_METRICS_TOKEN=TOKEN,
        PRODOPS_SCHEDULER_IN_WEB="false",
    )
    server = ServerProcess(env, log_path=folder / "server.log")
    try:
        server.start()
    except RuntimeError:
        emulator.stop()
        raise
    driver = SlackDriver(events_url=server.events_url, signing_secret=SIGNING_SECRET, emulator=emulator)
    db = Database(own_db_url)
    yield MetricsStack(emulator, server, driver, db, metrics_dir)
    server.stop()
    emulator.stop()
    db.dispose()


def _get(url: str, token: str | None = TOKEN) -> tuple[int, dict[str, str], str]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, dict(answer.headers.items()), answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers.items()), error.read().decode()


def parse(text: str) -> Samples:
    """Every sample of a Prometheus text page, by name and labels."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape(ms: MetricsStack) -> Samples:
    status, _, body = _get(ms.server.base_url + "/metrics")
    assert status == 200, body
    return parse(body)


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def _settle(db: Database) -> None:
    """Waits until no delivery is being handled except the test's own (their leases run for a day)."""

    def idle() -> bool:
        with db.inbox.read() as s:
            busy = s.scalar(
                select(func.count())
                .select_from(InboxEvent)
                .where(
                    InboxEvent.status == "pending",
                    InboxEvent.lease_until < utcnow() + timedelta(hours=1),
                )
            )
        return busy == 0

    wait_for(idle, timeout=15, what="deliveries in progress to finish")


def _command(ms: MetricsStack, user: str, channel: str, text: str) -> str:
    response = ms.driver.command("/prodops", text, user=user, channel=channel)
    assert response.status == 200, response.body
    if response.body:
        return json.dumps(response.json())
    posts = wait_for(
        lambda: ms.emulator.response_url_posts(response.response_key), timeout=20, what="/prodops answer"
    )
    return json.dumps(posts[0])


def _person(ms: MetricsStack) -> tuple[str, str]:
    user = ms.emulator.add_user(unique("pm"))["id"]
    channel = ms.emulator.add_channel(unique("ops"), members=[user])["id"]
    return user, channel


# ---- the page --------------------------------------------------------------------------------------------


def test_metrics_needs_the_token_and_healthz_stays_cheap(ms: MetricsStack) -> None:
    url = ms.server.base_url + "/metrics"
    for token in (None, "wrong-token"):
        status, headers, body = _get(url, token)
        assert status == 401 and "PRODOPS_METRICS_TOKEN" in body
        assert headers.get("WWW-Authenticate", "").startswith("Bearer")
    status, headers, body = _get(url)
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    assert value(parse(body), "prodops_queue_stats_up") == 1.0
    health_status, _, health = _get(ms.server.base_url + "/healthz", token=None)
    assert health_status == 200 and json.loads(health)["status"] == "ok" and "prodops_" not in health


def test_queue_depths_are_the_database_s(ms: MetricsStack) -> None:
    team = unique("T")
    _settle(ms.db)
    before = scrape(ms)
    for status, count in (("queued", 3), ("pending", 2), ("failed", 1), ("dead", 4), ("done", 5)):
        for _ in range(count):
            add_delivery(ms.db, team_id=team, status=status, received_ago=timedelta(minutes=5))
    for status, count in (("queued", 2), ("pending", 1), ("dead", 1), ("done", 3)):
        for _ in range(count):
            add_insight_task(ms.db, team_id=team, status=status, created_ago=timedelta(minutes=2))
    for status in ("pending", "failed", "failed", "sent"):
        add_digest_outbox(ms.db, team_id=team, status=status)
    for status in ("pending", "sending", "sent"):
        add_ship_notice(ms.db, team_id=team, status=status)
    for sent in (False, False, True):
        add_sla_notice(ms.db, team_id=team, sent=sent)
    after = scrape(ms)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert {s: delta("prodops_inbox_depth", status=s) for s in ("queued", "pending", "failed", "dead")} == {
        "queued": 3,
        "pending": 2,
        "failed": 1,
        "dead": 4,
    }
    assert ("prodops_inbox_depth", frozenset({("status", "done")})) not in after  # history, not depth
    assert value(after, "prodops_inbox_oldest_age_seconds", status="queued") >= 300
    assert value(after, "prodops_inbox_oldest_age_seconds", status="pending") >= 300
    assert {s: delta("prodops_insight_tasks_depth", status=s) for s in ("queued", "pending", "dead")} == {
        "queued": 2,
        "pending": 1,
        "dead": 1,
    }
    assert value(after, "prodops_insight_tasks_oldest_age_seconds") >= 120
    outbox = {
        (o, s): delta("prodops_outbox_depth", outbox=o, status=s)
        for o in ("digest", "ship_notice")
        for s in ("pending", "sending", "failed")
    }
    assert outbox == {
        ("digest", "pending"): 1,
        ("digest", "sending"): 0,
        ("digest", "failed"): 2,
        ("ship_notice", "pending"): 1,
        ("ship_notice", "sending"): 1,
        ("ship_notice", "failed"): 0,
    }
    assert delta("prodops_outbox_depth", outbox="sla_notice", status="pending") == 2


def test_slack_calls_of_a_command_are_counted(ms: MetricsStack) -> None:
    user, channel = _person(ms)
    before = scrape(ms)
    # A non-admin asking to change a setting: the bot asks Slack (users.info) whether they are an admin.
    assert "Only ProdOps admins" in _command(ms, user, channel, "config feedback-emoji star")
    after = scrape(ms)  # the answer came after the call, which was counted as it returned

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert len(ms.emulator.calls("users.info")) >= 1
    assert delta("prodops_slack_api_requests_total", method="users.info", status="200") == 1
    assert delta("prodops_slack_rate_limited_total", method="users.info") == 0
    assert delta("prodops_slack_retry_after_seconds_total", method="users.info") == 0


def test_a_429_is_counted_and_its_retry_after_waited(ms: MetricsStack) -> None:
    user, channel = _person(ms)
    before = scrape(ms)
    ms.emulator.fail("users.info", status=429, retry_after=1)
    started = time.monotonic()
    assert "Only ProdOps admins" in _command(ms, user, channel, "config feedback-emoji star")
    assert time.monotonic() - started >= 1.0  # the SDK waited out Retry-After, then asked again

    after = scrape(ms)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("prodops_slack_api_requests_total", method="users.info", status="429") == 1
    assert delta("prodops_slack_api_requests_total", method="users.info", status="200") == 1
    assert delta("prodops_slack_rate_limited_total", method="users.info") == 1
    assert 1.0 <= delta("prodops_slack_retry_after_seconds_total", method="users.info") < 5.0


def test_another_process_s_counters_show_on_the_web_page(ms: MetricsStack) -> None:
    """The worker process writes to the same directory; the web's /metrics adds it in."""
    kind = f"event:test_{unique('k').replace('-', '_')}"
    before = scrape(ms)
    _run_recorder(ms.metrics_dir, kind=kind, deliveries=3, batches=[16, 4])
    after = scrape(ms)
    assert value(after, "prodops_inbox_deliveries_total", kind=kind, outcome="done") == 3
    assert value(after, "prodops_inbox_processing_seconds_count", kind=kind) == 3
    assert value(after, "prodops_inbox_processing_seconds_bucket", kind=kind, le="0.25") == 3
    assert value(after, "prodops_inbox_processing_seconds_bucket", kind=kind, le="0.1") == 0
    assert (
        value(after, "prodops_insight_batch_size_count") - value(before, "prodops_insight_batch_size_count")
        == 2
    )
    assert (
        value(after, "prodops_insight_batch_size_sum") - value(before, "prodops_insight_batch_size_sum") == 20
    )


# ---- /prodops status -------------------------------------------------------------------------------------


def test_prodops_status_shows_the_queue(ms: MetricsStack) -> None:
    team = ms.emulator.team_id
    user, channel = _person(ms)
    _settle(ms.db)
    calm = _command(ms, user, channel, "status")
    assert "Work queue" in calm and "in progress" in calm
    assert "prodops inbox list" not in calm  # nothing dead yet: no hint

    for _ in range(3):
        add_delivery(ms.db, team_id=team, status="queued", received_ago=timedelta(minutes=30))
    add_delivery(ms.db, team_id=team, status="pending")
    for _ in range(2):
        add_delivery(ms.db, team_id=team, status="dead")
    for _ in range(4):
        add_insight_task(ms.db, team_id=team)
    add_delivery(ms.db, team_id=unique("T"), status="dead")  # another workspace's: not shown here
    _settle(ms.db)

    status = _command(ms, user, channel, "status")
    assert "*3* waiting" in status and "*1* in progress" in status and "*2* dead" in status
    assert "oldest waiting *30m*" in status
    assert "waiting for insights (themes, duplicates): *4*" in status
    assert "prodops inbox list --status dead" in status and "prodops inbox retry --dead" in status


# ---- processes -------------------------------------------------------------------------------------------

RECORDER = textwrap.dedent(
    """
    import sys
    from bot import observability
    kind, deliveries, batches = sys.argv[1], int(sys.argv[2]), [int(b) for b in sys.argv[3].split(",") if b]
    for _ in range(deliveries):
        observability.record_delivery(kind, "done", 0.2)
    for size in batches:
        observability.record_insight_batch(size, 0.5)
    """
)


def _run_recorder(metrics_dir: Path, *, kind: str, deliveries: int, batches: list[int]) -> None:
    """A separate process (as `prodops worker` is) recording into `metrics_dir`."""
    result = subprocess.run(
        [sys.executable, "-c", RECORDER, kind, str(deliveries), ",".join(str(b) for b in batches)],
        env={**os.environ, "PYTHONPATH": str(ROOT), "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


WORKER_PAGE = textwrap.dedent(
    """
    import sys, time
    from bot import observability
    from bot.settings import Settings
    from storage.db import Database
    observability.record_delivery(sys.argv[3], "retry", 1.5)
    observability.start_worker_metrics_server(
        int(sys.argv[1]), db=Database(sys.argv[2]), settings=Settings(), addr="127.0.0.1"
    )
    while True:
        time.sleep(1)
    """
)


def test_processes_add_up_and_the_worker_serves_the_same_page(own_db_url: str, tmp_path: Path) -> None:
    metrics_dir = tmp_path / "prom"
    metrics_dir.mkdir()
    kind = "event:reaction_added"
    _run_recorder(metrics_dir, kind=kind, deliveries=3, batches=[8])
    _run_recorder(metrics_dir, kind=kind, deliveries=4, batches=[])

    worker = ServerProcess(
        {"PYTHONPATH": str(ROOT), "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), "PRODOPS_METRICS_TOKEN": ""},
        command=[sys.executable, "-c", WORKER_PAGE],
        log_path=tmp_path / "worker.log",
    )
    worker.command += [str(worker.port), own_db_url, kind]
    with worker:
        status, _, body = _get(worker.base_url + "/metrics", token=None)
    assert status == 200, body
    page = parse(body)
    assert value(page, "prodops_inbox_deliveries_total", kind=kind, outcome="done") == 7  # 3 + 4
    assert value(page, "prodops_inbox_deliveries_total", kind=kind, outcome="retry") == 1  # the serving one
    assert value(page, "prodops_insight_batch_size_sum") == 8
    assert value(page, "prodops_queue_stats_up") == 1.0  # and the database's gauges, as on the web
    assert ("prodops_inbox_depth", frozenset({("status", "dead")})) in page


PREPARE = textwrap.dedent(
    """
    import json, os, subprocess, sys
    from bot import observability
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    path = observability.prepare_multiprocess_dir()
    child = "from bot import observability; observability.record_delivery('event:x', 'done', 0.1)"
    for _ in range(2):
        subprocess.run([sys.executable, "-c", child], check=True)
    (path / "gauge_livesum_4242.db").write_bytes(b"")
    observability.mark_process_dead(4242)
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    total = registry.get_sample_value("prodops_inbox_deliveries_total", {"kind": "event:x", "outcome": "done"})
    print(json.dumps({
        "path": str(path), "env": os.environ["PROMETHEUS_MULTIPROC_DIR"], "given": given, "total": total,
        "dead_gauge_left": (path / "gauge_livesum_4242.db").exists(),
    }))
    """
)


def _prepare(env: dict[str, str]) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", PREPARE],
        env={
            **{k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"},
            "PYTHONPATH": str(ROOT),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def test_prepare_multiprocess_dir_gives_children_one_clean_directory(tmp_path: Path) -> None:
    made = _prepare({})
    assert made["given"] is None and made["path"] == made["env"]
    assert made["total"] == 2  # two children, one page
    assert not made["dead_gauge_left"]
    assert not Path(made["path"]).exists()  # a directory it made is removed when the parent exits

    given = tmp_path / "prom"
    given.mkdir()
    (given / "counter_999.db").write_bytes(b"stale")  # a previous run's counters
    (given / "notes.txt").write_text("kept")
    reused = _prepare({"PROMETHEUS_MULTIPROC_DIR": str(given)})
    assert reused["path"] == str(given) and reused["total"] == 2  # the stale file was not added in
    assert given.exists() and (given / "notes.txt").read_text() == "kept"


def test_prepare_multiprocess_dir_refuses_after_prometheus_client_was_imported() -> None:
    script = (
        "import prometheus_client\nfrom bot import observability\nobservability.prepare_multiprocess_dir()"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        env={
            **{k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"},
            "PYTHONPATH": str(ROOT),
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0 and "before prepare_multiprocess_dir()" in result.stderr
