"""Logs never hold secrets (Slack tokens, the signing and client secrets, API tokens, the encryption key,
passwords in URLs), and hold what people wrote only at DEBUG.

A real multi-workspace server (OAuth install, so the client secret and the encryption key are in play) logs
to a file at INFO, and again at DEBUG, while a scenario runs: an install, captures, a request, pushes with an
API token (good, unknown metric, made-up token), a request with a bad signature, and a handler failure whose
exception carries every secret. The CLI and worker paths are checked in-process on the configured handler.
"""

from __future__ import annotations

import io
import json
import logging
import os
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import func, select

from bot import logs
from bot.cli import main as cli_main
from bot.metrics.tokens import create_token
from storage.migrate import upgrade
from storage.models import FeedbackItem, Metric, Request
from tests.conftest import SIGNING_SECRET
from tests.helpers import unique, wait_for
from tests.oauth_support import CLIENT_SECRET, OAuthStack, oauth_stack


@dataclass
class Run:
    """What one scenario run logged, and what must (not) be in it."""

    log: str
    secrets: dict[str, str]
    texts: list[str]
    level: str = "INFO"


def _post(url: str, body: bytes, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _push(stack: OAuthStack, key: str, token: str) -> int:
    body = json.dumps({"ts": "2026-11-02T00:00:00Z", "value": 3}).encode()
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    return _post(f"{stack.server.base_url}/api/v1/metrics/{key}/points", body, headers)


def _scenario(stack: OAuthStack) -> Run:
    emu = stack.emulator
    team_id = "T" + uuid.uuid4().hex[:9].upper()
    stack.add_team(team_id, "Hygiene Inc")
    installer = emu.add_user(unique("owner"), team_id=team_id, is_admin=True)["id"]
    assert stack.install(team_id, user=installer).status == 200
    secrets = {"signing secret": SIGNING_SECRET, "client secret": CLIENT_SECRET, "encryption key": stack.key}
    for n, issued in enumerate(emu.issued_tokens(team_id)):
        secrets[f"{issued['kind']} token {n}"] = str(issued["token"])
    assert any(name.startswith("bot token") for name in secrets)

    driver = stack.driver(team_id)
    user = emu.add_user(unique("pm"), team_id=team_id)["id"]
    channel = emu.add_channel(unique("feedback"), members=[user], team_id=team_id)["id"]
    texts = [f"Customer {uuid.uuid4().hex[:8]} hates the invoice layout" for _ in range(3)]
    for text in texts:
        assert driver.command("/feedback", text, user=user, channel=channel).status == 200
    reacted = f"Reacted {uuid.uuid4().hex[:8]}: the export is missing columns"
    message = emu.post_message(channel, user, reacted, team_id=team_id)
    assert driver.react(user=user, channel=channel, ts=message["ts"]).status == 200
    asked = f"Please pull {uuid.uuid4().hex[:8]} churn numbers"
    assert driver.command("/request", asked, user=user, channel=channel).status == 200
    texts += [reacted, asked]

    key = unique("pushed").replace("-", "_")
    with stack.db.session() as s:
        s.add(Metric(team_id=team_id, key=key, name="Pushed", unit="count", direction="up_is_good",
                     summary="last", source="push"))  # fmt: skip
        _, api_token = create_token(db_session=s, team_id=team_id, name="pipeline")
    secrets["API token"] = api_token
    made_up = "prodops_" + uuid.uuid4().hex + "x"
    secrets["made-up API token"] = made_up
    assert _push(stack, key, api_token) == 200
    assert _push(stack, "no_such_metric", api_token) == 404
    assert _push(stack, key, made_up) == 401

    forged_text = f"Forged {uuid.uuid4().hex[:8]} request text"
    texts.append(forged_text)
    forged = urlencode(
        driver.slash_command(command="/feedback", text=forged_text, user=user, channel=channel)
    )
    bad = driver.send_raw(forged, content_type="application/x-www-form-urlencoded", tamper_after_signing=True)
    assert bad.status == 401

    # A handler fails with an exception that carries every secret: the traceback is logged, scrubbed.
    emu.fail("views.open", status=200, error="invalid_auth " + " ".join(secrets.values()))
    assert driver.command("/feedback", "", user=user, channel=channel).status == 200

    log_path = stack.server.log_path
    assert log_path is not None

    def captured() -> bool:
        with stack.db.read() as s:
            items = s.scalar(select(func.count()).where(FeedbackItem.team_id == team_id))
            requests = s.scalar(select(func.count()).where(Request.team_id == team_id))
        return items == 4 and requests == 1 and "handler failed" in log_path.read_text(errors="replace")

    wait_for(captured, timeout=20, what="captures, the request and the logged failure")
    return Run(log=log_path.read_text(errors="replace"), secrets=secrets, texts=texts)


@pytest.fixture(scope="module", params=["INFO", "DEBUG"])
def run(
    request: pytest.FixtureRequest, backend: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Run]:
    level = str(request.param)
    stacks = oauth_stack(backend, tmp_path_factory.mktemp(f"logs-{level.lower()}"), PRODOPS_LOG_LEVEL=level)
    try:
        result = _scenario(next(stacks))
        result.level = level
        yield result
    finally:
        stacks.close()


def test_no_secret_is_ever_logged(run: Run) -> None:
    assert "handler failed" in run.log and "Traceback" in run.log  # the error path ran and was logged
    assert "[redacted" in run.log  # and the secrets it carried were scrubbed, not lost by luck
    leaked = [name for name, value in run.secrets.items() if value in run.log]
    assert not leaked, f"in the {run.level} log: {leaked}"
    for prefix in ("xoxb-", "xoxp-", "xoxe", "xapp-"):
        assert prefix not in run.log


def test_message_text_is_logged_only_at_debug(run: Run) -> None:
    shown = [text for text in run.texts if text in run.log]
    if run.level == "INFO":
        assert not shown, shown
        assert " DEBUG " not in run.log
    else:
        assert " DEBUG " in run.log  # DEBUG really is on; texts may appear there, secrets still may not
        assert shown, "expected request bodies in the DEBUG log"


# ---- the CLI and worker paths, in-process ------------------------------------------------------------


@pytest.fixture
def log_stream(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[io.StringIO]:
    """This process's logging configured as `prodops` does, writing to a buffer; restored afterwards."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, getattr(root, "_prodops_configured", False))
    quieted = {name: logging.getLogger(name).level for name in ("slack_bolt", "apscheduler")}
    url = f"sqlite:///{tmp_path / 'prodops.db'}"
    upgrade(url)
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("SLACK_SIGNING_SECRET", SIGNING_SECRET)
    monkeypatch.setenv("PRODOPS_ENCRYPTION_KEY", Fernet.generate_key().decode())
    monkeypatch.setenv(
        "PRODOPS_DATASOURCE_WAREHOUSE", "postgresql://reader:s3cret-warehouse-pw@db.internal/dw"
    )
    monkeypatch.chdir(tmp_path)
    root._prodops_configured = False  # type: ignore[attr-defined]
    logs.configure_logging("INFO")
    stream = io.StringIO()
    handler = root.handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(stream)
    yield stream
    root.handlers[:], root.level = saved[0], saved[1]
    root._prodops_configured = saved[2]  # type: ignore[attr-defined]
    for name, level in quieted.items():
        logging.getLogger(name).setLevel(level)


def test_cli_token_is_shown_once_on_stdout_and_never_logged(
    log_stream: io.StringIO, capsys: pytest.CaptureFixture[str]
) -> None:
    from bot.workspaces import get_or_create
    from storage.db import Database

    db = Database(os.environ["DATABASE_URL"])
    with db.session() as s:
        get_or_create(db_session=s, team_id="T0CLI")
    db.dispose()
    cli_main(["tokens", "create", "--team", "T0CLI", "--name", "warehouse export"])
    printed = capsys.readouterr().out
    token = next(word for word in printed.split() if word.startswith("prodops_"))
    logging.getLogger("prodops.cli").info("created token %s for T0CLI", token)  # as careless code might
    assert token not in log_stream.getvalue() and "[redacted-token]" in log_stream.getvalue()


def test_worker_exceptions_are_scrubbed_on_every_handler(log_stream: io.StringIO) -> None:
    # A handler made before ours (gunicorn's error log is one) is protected too once logging is configured.
    other_stream = io.StringIO()
    separate = logging.getLogger("gunicorn.error.test")
    separate.propagate = False
    separate.addHandler(logging.StreamHandler(other_stream))
    logs.configure_logging("INFO")

    secrets = {
        "signing secret": SIGNING_SECRET,
        "encryption key": os.environ["PRODOPS_ENCRYPTION_KEY"],
        "warehouse password": "s3cret-warehouse-pw",
        "bot token": "xoxb-1234-5678-" + uuid.uuid4().hex,
        "refresh token": "xoxe-1-" + uuid.uuid4().hex,
        "app token": "xapp-1-A1-" + uuid.uuid4().hex,
    }
    text = f"Customer {uuid.uuid4().hex[:8]} wrote something private"
    for logger in (logging.getLogger("prodops.worker"), separate):
        try:
            raise RuntimeError("digest delivery failed: " + " ".join(secrets.values()))
        except RuntimeError:
            logger.exception("digest %s: unexpected error with %s", 42, secrets["bot token"])
        logger.debug("message text: %s", text)
    for output in (log_stream.getvalue(), other_stream.getvalue()):
        assert "RuntimeError: digest delivery failed" in output and "[redacted-secret]" in output
        assert not [name for name, value in secrets.items() if value in output]
    assert text not in log_stream.getvalue()  # DEBUG lines are not written at INFO

    logs.configure_logging("DEBUG")
    logging.getLogger("prodops.worker").debug("message text: %s (token %s)", text, secrets["bot token"])
    assert text in log_stream.getvalue() and secrets["bot token"] not in log_stream.getvalue()
    separate.handlers.clear()


def test_cli_subcommands_without_logging_setup_still_scrub(tmp_path: Path) -> None:
    # `prodops migrate`, `export`, `purge`… leave logging unconfigured; a warning then goes to Python's
    # last-resort handler on stderr, which must scrub like ours.
    import subprocess
    import sys

    token = "xoxb-9999-8888-" + uuid.uuid4().hex
    script = (
        "import logging, os\n"
        "from bot.cli import main\n"
        "main(['migrate'])\n"
        "logging.getLogger('prodops.jobs').warning('retrying with %s', os.environ['SLACK_BOT_TOKEN'])\n"
        "logging.getLogger('prodops').error('signing secret is %s', os.environ['SLACK_SIGNING_SECRET'])\n"
    )
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}",
        "SLACK_BOT_TOKEN": token,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
    }
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "retrying with [redacted" in done.stderr and "signing secret is [redacted" in done.stderr
    assert token not in done.stderr + done.stdout and SIGNING_SECRET not in done.stderr + done.stdout
