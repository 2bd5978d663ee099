"""Each kind of junk the issue found, one test each: the answer is 400 or 401, never 500; nothing is stored;
the log holds no body and no traceback; a bad row does not fail its neighbours; the authorized team is the
tenant in a Slack Connect channel."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import logging
import re
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from slack_bolt.logger import get_bolt_logger
from slack_bolt.middleware.request_verification import RequestVerification
from sqlalchemy import select
from sqlalchemy.exc import StatementError

from bot import logs
from bot.inbox import Delivery
from bot.inbox_writer import InboxWriter, _Record
from storage.db import Database
from storage.models import InboxEvent
from tests.conftest import SIGNING_SECRET, Stack
from tests.helpers import inbox_rows, items_in_channel, unique, wait_for


def _signature(body: bytes, timestamp: str) -> str:
    base = b"v0:" + timestamp.encode() + b":" + body
    return "v0=" + hmac.new(SIGNING_SECRET.encode(), base, hashlib.sha256).hexdigest()


def _post(stack: Stack, body: bytes, *, signed: bool = True, timestamp: str | None = None, **headers: str):
    stamp = timestamp if timestamp is not None else str(int(time.time()))
    sent = {"Content-Type": headers.pop("content_type", "application/json")}
    if signed:
        sent.update({"X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": _signature(body, stamp)})
    return stack.driver._post(body, {**sent, **headers})


def _log_since(stack: Stack, offset: int) -> str:
    """What the web processes logged since `offset` (the shared server's worker, which may still be retrying
    other tests' deliveries, logs into the same file: its lines and their tracebacks are left out)."""
    assert stack.server.log_path is not None and stack.server.process is not None
    text = stack.server.log_path.read_bytes()[offset:].decode("utf-8", "replace")
    workers = {str(pid) for pid in _worker_pids(stack.server.process.pid)}
    kept, from_worker = [], False
    for line in text.splitlines():
        header = re.match(r"^\d{4}-\d\d-\d\d [\d:,]+ \w+ \[(\d+)\]", line)
        if header:
            from_worker = header.group(1) in workers
        elif line.startswith("["):  # gunicorn's own lines: the web side
            from_worker = False
        if not from_worker:
            kept.append(line)
    return "\n".join(kept)


def _worker_pids(serve_pid: int) -> list[int]:
    """The `prodops worker` processes a `prodops serve` supervises."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                if ppid == serve_pid and b"bot.cli\x00worker" in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except (OSError, ValueError, IndexError):
                continue
    return found


def _log_offset(stack: Stack) -> int:
    assert stack.server.log_path is not None
    return stack.server.log_path.stat().st_size


def _reaction(stack: Stack, **event: Any) -> dict[str, Any]:
    base = {"type": "reaction_added", "user": "U0JUNK", "reaction": "bulb"}
    base["item"] = {"type": "message", "channel": "C0JUNK", "ts": "1700000000.000100"}
    return stack.driver.event_callback({**base, **event})


@pytest.mark.parametrize(
    "timestamp",
    ["abc", "1.5", "9" * 5_000, "", "-1", "1e9"],
    ids=["word", "fraction", "5000-digits", "empty", "negative", "exponent"],
)
def test_signature_timestamps_that_are_not_numbers_get_401(stack: Stack, timestamp: str) -> None:
    event = _reaction(stack)
    offset = _log_offset(stack)
    response = _post(stack, json.dumps(event).encode(), timestamp=timestamp)
    assert response.status == 401
    assert json.loads(response.body) == {"error": "invalid request"}
    assert inbox_rows(stack.db, event["event_id"]) == []
    assert "Traceback" not in _log_since(stack, offset)


@pytest.mark.parametrize(
    "body",
    [b"[" * 50_000 + b"]" * 50_000, b'{"a":' * 5_000 + b"1" + b"}" * 5_000, b'{"type": "\xff\xfe"}'],
    ids=["deep-list", "deep-object", "not-utf8"],
)
def test_unsigned_junk_gets_401_before_it_is_parsed(stack: Stack, body: bytes) -> None:
    offset = _log_offset(stack)
    assert _post(stack, body, signed=False).status == 401
    log = _log_since(stack, offset)
    assert "Traceback" not in log and "ERROR" not in log


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b'{"type": "event_callback", "event_id": "Ev1", "event": {"type": "\xff"}}', "not UTF-8"),
        (b"[" * 50_000 + b"]" * 50_000, "expected Slack's JSON or form encoding"),
        (b'{"a":' * 100 + b"1" + b"}" * 100, "nested deeper than 64 levels"),
    ],
    ids=["not-utf8", "deep-beyond-the-parser", "deep"],
)
def test_signed_bodies_that_cannot_be_read_get_400(stack: Stack, body: bytes, problem: str) -> None:
    offset = _log_offset(stack)
    response = _post(stack, body)
    assert (response.status, response.body) == (400, f"malformed body: {problem}")
    assert "Traceback" not in _log_since(stack, offset)


def _shared_channel_junk(stack: Stack) -> list[tuple[str, dict[str, Any], str]]:
    """Signed bodies a client could make, each with what the server should say about it."""
    nul = _reaction(stack, reaction="bu\u0000lb")
    surrogate = _reaction(stack, user="U\ud83d")
    long_id = _reaction(stack)
    long_id["event_id"] = "Ev" + "X" * 300
    item_string = _reaction(stack)
    item_string["event"]["item"] = "C0JUNK"
    newline = _reaction(stack)
    newline["event_id"] = "Ev1\nINFO forged line"
    view_none = {"type": "view_submission", "user": {"id": "U1"}, "team": {"id": stack.team_id}, "view": None}
    no_actions = {"type": "block_actions", "user": {"id": "U1"}, "team": {"id": stack.team_id}, "actions": []}
    infinite = _reaction(stack, event_ts=float("inf"))
    return [
        ("nul", nul, "`event.reaction` contains a NUL character"),
        ("surrogate", surrogate, "`event.user` contains an unpaired UTF-16 surrogate"),
        ("long-id", long_id, "`event_id` is longer than 255 characters"),
        ("item-not-object", item_string, "`event.item` should be an object"),
        ("newline-in-id", newline, "`event_id` contains a control character"),
        ("view-null", view_none, "`view` is missing (Slack always sends it with view_submission)"),
        ("no-actions", no_actions, "`actions` is missing (Slack always sends it with block_actions)"),
        ("infinity", infinite, "`event.event_ts` is not a finite number"),
    ]


@pytest.mark.parametrize(
    "case",
    range(8),
    ids=[
        "nul",
        "surrogate",
        "long-id",
        "item-not-object",
        "newline-in-id",
        "view-null",
        "no-actions",
        "infinity",
    ],
)
def test_signed_bodies_of_the_wrong_shape_get_400_and_are_not_stored(stack: Stack, case: int) -> None:
    _, body, problem = _shared_channel_junk(stack)[case]
    offset = _log_offset(stack)
    response = _post(stack, json.dumps(body).encode())
    assert (response.status, response.body) == (400, f"malformed body: {problem}")
    if body.get("event_id"):
        assert inbox_rows(stack.db, body["event_id"]) == []
    log = _log_since(stack, offset)
    assert "Traceback" not in log and "\nINFO forged line" not in log


def test_form_commands_with_missing_fields_get_400(stack: Stack) -> None:
    fields = stack.driver.slash_command(command="/request", text="x", user="U0JUNK", channel="C0JUNK")
    del fields["trigger_id"]
    from urllib.parse import urlencode

    response = _post(stack, urlencode(fields).encode(), content_type="application/x-www-form-urlencoded")
    assert (response.status, response.body) == (
        400,
        "malformed body: `trigger_id` is missing (Slack always sends it with slash_command)",
    )


def test_content_length_that_is_not_a_number_gets_400(stack: Stack) -> None:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", stack.server.port, timeout=10)
    conn.putrequest("POST", "/slack/events")
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Content-Length", "12abc")
    conn.endheaders()
    assert conn.getresponse().status == 400  # gunicorn's or ours: either way not a 500
    conn.close()


# ---- Slack Connect: the authorized workspace is the tenant -------------------------------------------------


def _shared(event: dict[str, Any], other_org: str) -> dict[str, Any]:
    """As Slack sends an event from a shared channel: the other org at the top, ours in authorizations."""
    return {**event, "team_id": other_org, "is_ext_shared_channel": True}


def test_shared_channel_message_from_another_org_is_captured_for_our_workspace(stack: Stack) -> None:
    emu, driver = stack.emulator, stack.driver
    admin = emu.add_user(unique("admin"), is_admin=True)["id"]
    author = emu.add_user(unique("partner"))["id"]
    channel = emu.add_channel(unique("shared"), members=[admin, author])["id"]
    answer = driver.command("/prodops", f"watch <#{channel}>", user=admin, channel=channel)
    assert answer.status == 200
    wait_for(lambda: emu.response_url_posts(answer.response_key), what="watch answer")

    other_org = "T0" + uuid.uuid4().hex[:8].upper()
    message = emu.post_message(channel, author, "Your export to CSV drops the currency column")
    event = driver.message_event(user=author, text=message["text"], channel=channel, ts=message["ts"])
    event["team"] = other_org
    body = _shared(driver.event_callback(event), other_org)
    assert driver.send_event(body).status == 200
    items = wait_for(lambda: items_in_channel(stack.db, channel), what="captured shared-channel message")
    assert items[0].team_id == stack.team_id
    assert [row.team_id for row in inbox_rows(stack.db, body["event_id"])] == [stack.team_id]


def test_shared_channel_reaction_is_kept_under_our_workspace(stack: Stack) -> None:
    other_org = "T0" + uuid.uuid4().hex[:8].upper()
    body = _shared(_reaction(stack), other_org)
    assert stack.driver.send_event(body).status == 200
    rows = wait_for(lambda: inbox_rows(stack.db, body["event_id"]), what="inbox row")
    assert [row.team_id for row in rows] == [stack.team_id]


# ---- the inbox's group commit ------------------------------------------------------------------------------


def test_one_bad_row_in_an_inbox_batch_fails_alone(db: Database) -> None:
    writer = InboxWriter(db.inbox, lease_seconds=60)
    team = unique("T")[:20]
    try:
        good = [
            _Record(Delivery(team, f"Ev{uuid.uuid4().hex[:10]}", "event:pin_added"), {"n": n})
            for n in range(3)
        ]
        poison = _Record(Delivery(team, f"Ev{uuid.uuid4().hex[:10]}", "event:x"), {"when": datetime.now()})
        writer._write([good[0], poison, good[1], good[2]])  # one batch, as concurrent requests make it
        ids = [record.result.result(timeout=5) for record in good]
        with pytest.raises(
            (TypeError, StatementError)
        ):  # datetime is not JSON: this one, and only this one, fails
            poison.result.result(timeout=5)
    finally:
        writer.close()
    assert all(isinstance(inbox_id, int) for inbox_id in ids)
    with db.inbox.read() as s:
        stored = set(s.scalars(select(InboxEvent.delivery_id).where(InboxEvent.team_id == team)))
    assert stored == {record.delivery.delivery_id for record in good}


# ---- what reaches the log ----------------------------------------------------------------------------------


@pytest.fixture
def root_stream() -> Iterator[io.StringIO]:
    """The root logger configured as a server does, writing to a buffer; restored afterwards."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, getattr(root, "_prodops_configured", False))
    root._prodops_configured = False  # type: ignore[attr-defined]
    logs.configure_logging("INFO")
    stream = io.StringIO()
    handler = root.handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(stream)
    yield stream
    logs.configure_logging(logging.getLevelName(saved[1]) if isinstance(saved[1], int) else "INFO")
    root.handlers[:], root.level = saved[0], saved[1]
    root._prodops_configured = saved[2]  # type: ignore[attr-defined]


def test_bolt_logs_below_warning_only_at_debug(root_stream: io.StringIO) -> None:
    bolt = get_bolt_logger(RequestVerification)  # made after configuration, so it copies the root's INFO
    assert bolt.level == logging.INFO
    bolt.info("Invalid request signature detected (body: customer secret plans)")
    bolt.warning("As you gave `client` as well, `token` will be unused.")
    bolt.warning("a real Bolt warning")
    assert "customer secret plans" not in root_stream.getvalue()
    assert "As you gave" not in root_stream.getvalue()
    assert "a real Bolt warning" in root_stream.getvalue()
    logs.configure_logging("DEBUG")
    bolt.info("Invalid request signature detected (body: now at debug)")
    assert "now at debug" in root_stream.getvalue()


def test_validation_errors_in_tracebacks_leave_out_what_was_typed(root_stream: io.StringIO) -> None:
    from pydantic import BaseModel, Field, ValidationError

    class Title(BaseModel):
        title: str = Field(max_length=5)

    typed = " ".join(["a", "private", "customer", "complaint"])  # not in the source lines the traceback shows
    try:
        try:
            Title(title=typed)
        except ValidationError as exc:
            raise RuntimeError("capture failed") from exc
    except RuntimeError:
        logging.getLogger("prodops.app").exception("handler failed for delivery Ev1")
    output = root_stream.getvalue()
    assert "private customer complaint" not in output
    assert "1 validation errors for Title\ntitle: String should have at most 5 characters" in output
    assert "RuntimeError: capture failed" in output
