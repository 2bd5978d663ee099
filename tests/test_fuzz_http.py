"""Junk against the real server (both databases): signed and unsigned, of every kind a client can send.

A seeded generator makes 5,000 requests from realistic Slack bodies by breaking them: values of the wrong
type, truncation, deep nesting, bytes that are not UTF-8, NUL characters, unpaired surrogates, huge fields
and headers, wrong content types and signature headers that are not numbers. Good deliveries go in the same
stream, concurrently. Nothing may answer 5xx, nothing unsigned may reach the inbox, no good delivery may
fail, and no body may reach the log at INFO.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import http.client
import json
import os
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import func, select

from storage.models import InboxEvent
from tests.conftest import SIGNING_SECRET, Stack

CASES = 5_000
SEED = int(os.environ.get("PRODOPS_FUZZ_SEED", "17"))  # another seed explores other junk
CLIENTS = 8
MARKER = "fuzzbody"  # in every junk body's text: it must never show up in the server's log
UNSIGNED_TEAM = "TUNSIGNED"
JUNK_VALUES: list[Any] = [
    0,
    -1,
    1.5,
    True,
    None,
    [],
    {},
    "",
    "x" * 5_000,
    [[[["deep"]]]],
    {"id": {"id": 1}},
    "\u0000",
    "\ud83d",
    10**30,
    ["a", 1, None],
]
CONTENT_TYPES = [
    "application/json",
    "application/x-www-form-urlencoded",
    "text/plain",
    "application/xml",
    "multipart/form-data; boundary=zz",
    "",
    "application/json; charset=latin-1",
]
BAD_TIMESTAMPS = ["abc", "1.5", "9" * 5_000, "-5", "", " ", "1e9", "0x10", "١٢٣", "12345678901234567890"]


@dataclass
class Case:
    """One request: what is sent, and what kind of answer it may get."""

    kind: str
    body: bytes
    headers: dict[str, str]
    signed: bool
    good_event_id: str | None = None


@dataclass
class Outcome:
    statuses: Counter[int] = field(default_factory=Counter)
    server_errors: list[tuple[str, int]] = field(default_factory=list)
    unsigned_accepted: list[tuple[str, int]] = field(default_factory=list)
    good_failed: list[tuple[str, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _sign(body: bytes, timestamp: str) -> str:
    base = b"v0:" + timestamp.encode() + b":" + body
    return "v0=" + hmac.new(SIGNING_SECRET.encode(), base, hashlib.sha256).hexdigest()


def _bases(team_id: str, rng: random.Random) -> list[tuple[str, dict[str, Any]]]:
    """Realistic bodies of each kind Slack sends (JSON events, form commands, form-wrapped interactions)."""
    user, channel, ts = "U0FUZZ", "C0FUZZ", f"{int(time.time())}.{rng.randrange(10**6):06d}"
    auth = [{"enterprise_id": None, "team_id": team_id, "user_id": "U0BOT", "is_bot": True}]
    event = {
        "token": "t",
        "team_id": team_id,
        "api_app_id": "A0PRODOPS",
        "type": "event_callback",
        "event_id": f"Ev{uuid.uuid4().hex[:10].upper()}",
        "event_time": int(time.time()),
        "authorizations": auth,
    }
    reaction = {"type": "reaction_added", "user": user, "reaction": rng.choice(["thumbsup", "eyes", "bulb"])}
    reaction["item"] = {"type": "message", "channel": channel, "ts": ts}
    message = {"type": "message", "user": user, "text": f"{MARKER} please add dark mode", "ts": ts}
    message.update(channel=channel, team=team_id, channel_type="channel", event_ts=ts)
    team = {"id": team_id, "domain": "fuzz"}
    who = {"id": user, "name": "fuzz", "team_id": team_id}
    actions = [{"type": "button", "action_id": "fuzz_nothing", "block_id": "b", "value": MARKER}]
    return [
        ("event", {**event, "event": reaction}),
        ("event", {**event, "event": message}),
        (
            "command",
            {
                "team_id": team_id,
                "channel_id": channel,
                "user_id": user,
                "command": rng.choice(["/prodops", "/feedback", "/request", "/metric", "/digest"]),
                "text": rng.choice(["help", "", f"{MARKER} list", "status"]),
                "response_url": "http://127.0.0.1:9/commands/x",
                "trigger_id": f"{rng.randrange(10**9)}.{rng.randrange(10**9)}.{uuid.uuid4().hex}",
            },
        ),
        (
            "interaction",
            {
                "type": "block_actions",
                "team": team,
                "user": who,
                "api_app_id": "A0PRODOPS",
                "trigger_id": f"{rng.randrange(10**9)}.{uuid.uuid4().hex}",
                "container": {"type": "message", "channel_id": channel, "message_ts": ts},
                "channel": {"id": channel, "name": "fuzz"},
                "message": {"ts": ts, "text": MARKER, "user": user},
                "actions": actions,
            },
        ),
        (
            "interaction",
            {
                "type": "view_submission",
                "team": team,
                "user": who,
                "trigger_id": f"{rng.randrange(10**9)}.{uuid.uuid4().hex}",
                "view": {
                    "id": "V0FUZZ",
                    "type": "modal",
                    "callback_id": rng.choice(["capture_feedback_modal", "nothing_here"]),
                    "private_metadata": json.dumps({"channel": channel, "ts": ts}),
                    "state": {"values": {"b": {"a": {"type": "plain_text_input", "value": MARKER}}}},
                },
            },
        ),
        (
            "interaction",
            {
                "type": "message_action",
                "team": team,
                "user": who,
                "channel": {"id": channel, "name": "fuzz"},
                "callback_id": "nothing_here",
                "trigger_id": f"{rng.randrange(10**9)}.{uuid.uuid4().hex}",
                "message_ts": ts,
                "message": {"ts": ts, "text": MARKER, "user": user},
            },
        ),
    ]


def _paths(value: Any, prefix: tuple = ()) -> Iterator[tuple]:
    yield prefix
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from _paths(inner, (*prefix, key))
    elif isinstance(value, list):
        for i, inner in enumerate(value):
            yield from _paths(inner, (*prefix, i))


def _set(body: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    target = body
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    return body


def _encode(kind: str, body: Any, *, form: bool) -> bytes:
    if kind == "command" and isinstance(body, dict) and form:
        fields = {k: v if isinstance(v, str) else json.dumps(v) for k, v in body.items()}
        return urlencode(fields, errors="surrogatepass").encode()
    text = json.dumps(body)
    if kind == "interaction" and form:
        return urlencode({"payload": text}).encode()
    return text.encode()


def _deep(depth: int, rng: random.Random) -> str:
    if rng.random() < 0.5:
        return "[" * depth + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


def _mutate(rng: random.Random, kind: str, body: dict[str, Any]) -> tuple[str, bytes, str]:
    """A broken version of the body: (what was done, the bytes, the content type)."""
    form = kind != "event"
    content_type = "application/x-www-form-urlencoded" if form else "application/json"
    how = rng.choice(
        ["wrong_type", "wrong_type", "wrong_type", "drop_key", "truncate", "deep", "not_utf8", "nul"]
        + ["surrogate", "huge_field", "numbers", "content_type", "raw_junk", "deep_value"]
    )
    body = copy.deepcopy(body)
    if how in ("wrong_type", "drop_key", "huge_field", "nul", "surrogate", "numbers", "deep_value"):
        paths = [p for p in _paths(body) if p]
        path = rng.choice(paths)
        # The marker stands for what people write: it goes where text goes, not into ids (which are logged).
        mark = MARKER if path[-1] in ("text", "value", "private_metadata") else "zz"
        if how == "wrong_type":
            _set(body, path, copy.deepcopy(rng.choice(JUNK_VALUES)))
        elif how == "drop_key":
            parent = body
            for part in path[:-1]:
                parent = parent[part]
            del parent[path[-1]]
        elif how == "huge_field":
            _set(body, path, mark + "y" * rng.choice([300, 70_000, 600_000]))
        elif how == "nul":
            _set(body, path, f"{mark}\u0000{mark}\nINFO forged line")
        elif how == "surrogate":
            _set(body, path, rng.choice(["\ud800", "a\udfffb", "\ud83d" + mark]))
        elif how == "numbers":
            _set(body, path, rng.choice([float("nan"), float("inf"), 10**4000, -(10**20), 1e308]))
        else:
            _set(body, path, json.loads(_deep(rng.randrange(20, 200), rng)))
        return how, _encode(kind, body, form=form and rng.random() < 0.8), content_type
    data = _encode(kind, body, form=form)
    if how == "truncate":
        return how, data[: rng.randrange(len(data))], content_type
    if how == "deep":
        depth = rng.choice([100, 1_000, 5_000, 50_000])
        text = _deep(depth, rng)
        if form and rng.random() < 0.5:
            return how, urlencode({"payload": text}).encode(), content_type
        return how, text.encode(), "application/json"
    if how == "not_utf8":
        at = rng.randrange(len(data) + 1)
        return (
            how,
            data[:at] + rng.choice([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80\x80"]) + data[at:],
            content_type,
        )
    if how == "content_type":
        return how, data, rng.choice(CONTENT_TYPES)
    junk = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 400)))
    return how, rng.choice([junk, b"payload=" + junk, b"{" + junk, MARKER.encode() + junk]), content_type


def _cases(team_id: str) -> list[Case]:
    rng = random.Random(SEED)
    cases: list[Case] = []
    for n in range(CASES):
        if (
            n % 6 == 0
        ):  # a good delivery in the middle of the junk: an event nothing handles, kept in the inbox
            event_id = f"EvGOOD{uuid.uuid4().hex[:10].upper()}"
            body = {
                "team_id": team_id,
                "api_app_id": "A0PRODOPS",
                "type": "event_callback",
                "event_id": event_id,
                "event_time": int(time.time()),
                "authorizations": [{"team_id": team_id, "user_id": "U0BOT", "is_bot": True}],
                "event": {"type": "pin_added", "user": "U0FUZZ", "channel_id": "C0FUZZ", "event_ts": "1.2"},
            }
            data = json.dumps(body).encode()
            stamp = str(int(time.time()))
            headers = {"Content-Type": "application/json", "X-Slack-Request-Timestamp": stamp}
            headers["X-Slack-Signature"] = _sign(data, stamp)
            cases.append(Case("good", data, headers, True, good_event_id=event_id))
            continue
        signed = rng.random() < 0.6
        kind, body = rng.choice(_bases(team_id if signed else UNSIGNED_TEAM, rng))
        how, data, content_type = _mutate(rng, kind, body)
        headers = {"Content-Type": content_type} if content_type else {}
        stamp = str(int(time.time()))
        if signed:
            headers.update({"X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": _sign(data, stamp)})
        else:
            unsigned_how = rng.choice(["none", "bad_timestamp", "bad_signature", "stale", "huge_signature"])
            how = f"{how}+{unsigned_how}"
            if unsigned_how == "bad_timestamp":
                bad = rng.choice(BAD_TIMESTAMPS)
                headers.update({"X-Slack-Request-Timestamp": bad, "X-Slack-Signature": _sign(data, stamp)})
            elif unsigned_how == "bad_signature":
                headers.update({"X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": "v0=" + "0" * 64})
            elif unsigned_how == "stale":
                old = str(int(time.time()) - 600)
                headers.update({"X-Slack-Request-Timestamp": old, "X-Slack-Signature": _sign(data, old)})
            elif unsigned_how == "huge_signature":
                headers.update({"X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": "v0=" + "a" * 7_000})
        if rng.random() < 0.03:
            headers["X-Junk"] = MARKER + "h" * rng.choice([100, 7_000, 20_000])
        cases.append(Case(how, data, headers, signed))
    return cases


def _post(conn: http.client.HTTPConnection, case: Case) -> int:
    headers = {name: value.encode() for name, value in case.headers.items()}  # any bytes, not just latin-1
    conn.request("POST", "/slack/events", body=case.body, headers=headers)
    response = conn.getresponse()
    response.read()
    if response.getheader("connection", "").lower() == "close":
        conn.close()
    return response.status


def _send(port: int, cases: list[Case], outcome: Outcome) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    for case in cases:
        status = 0
        for _ in range(2):  # a keep-alive connection the server closed after the last answer: once more
            try:
                status = _post(conn, case)
                break
            except (http.client.HTTPException, OSError):
                conn.close()  # gunicorn drops the connection on a header it refuses; that is an answer too
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        with outcome.lock:
            outcome.statuses[status] += 1
            if status >= 500:
                outcome.server_errors.append((case.kind, status))
            if not case.signed and status not in (0, 400, 401, 413, 431):
                outcome.unsigned_accepted.append((case.kind, status))
            if case.good_event_id and status != 200:
                outcome.good_failed.append((case.good_event_id, status))
    conn.close()


def test_fuzzed_requests_never_get_5xx_store_no_junk_and_log_no_body(stack: Stack) -> None:
    cases = _cases(stack.team_id)
    log_start = stack.server.log_path.stat().st_size if stack.server.log_path else 0
    outcome = Outcome()
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
        clients = [pool.submit(_send, stack.server.port, cases[i::CLIENTS], outcome) for i in range(CLIENTS)]
        for client in clients:
            client.result()
    elapsed = time.monotonic() - started

    assert sum(outcome.statuses.values()) == CASES
    assert outcome.server_errors == [], f"5xx answers: {Counter(outcome.server_errors)}"
    assert outcome.unsigned_accepted == [], (
        f"unsigned requests not refused: {Counter(outcome.unsigned_accepted)}"
    )
    assert outcome.good_failed == [], f"good deliveries failed beside junk: {outcome.good_failed[:10]}"
    assert outcome.statuses[0] < CASES * 0.02, (
        outcome.statuses
    )  # only the over-long headers drop the connection

    good = [c.good_event_id for c in cases if c.good_event_id]
    with stack.db.inbox.read() as s:
        stored = set(s.scalars(select(InboxEvent.delivery_id).where(InboxEvent.delivery_id.in_(good))))
        from_unsigned = s.scalar(
            select(func.count()).select_from(InboxEvent).where(InboxEvent.team_id == UNSIGNED_TEAM)
        )
    assert stored == set(good), f"{len(set(good) - stored)} good deliveries missing from the inbox"
    assert from_unsigned == 0

    assert stack.server.health() == 200
    log = (
        stack.server.log_path.read_bytes()[log_start:].decode("utf-8", "replace")
        if stack.server.log_path
        else ""
    )
    assert MARKER not in log, "a request body reached the log at INFO"
    assert "Invalid request signature detected" not in log
    assert "\nINFO forged line" not in log  # nothing a client sent starts a log line
    assert "As you gave `client` as well" not in stack.server.log_path.read_text(
        errors="replace"
    )  # at every start
    print(f"{CASES} fuzzed requests in {elapsed:.1f}s: {dict(sorted(outcome.statuses.items()))}")
