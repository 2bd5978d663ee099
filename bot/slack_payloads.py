"""What a request body must be before ProdOps lets Bolt, the inbox or a handler see it.

Slack's bodies are valid UTF-8 JSON (or form fields) with ids of a few dozen characters. A body that is
signed but breaks these rules is refused with 400 rather than stored after changing it: Slack never sends
one, so refusing loses nothing a person wrote, and nothing half-understood reaches the inbox.
"""

from __future__ import annotations

import hmac
import math
import re
import time
from collections.abc import Mapping
from hashlib import sha256
from typing import Any

MAX_DEPTH = 64  # Block Kit nests about ten deep; a thousand-deep body is an attack on the parser
MAX_CLOCK_SKEW_SECONDS = 300  # Slack's rule (and Bolt's): older or newer than five minutes is refused
TIMESTAMP = re.compile(r"[0-9]{1,12}")
SIGNATURE = re.compile(r"v0=[0-9a-f]{64}")
LONE_SURROGATE = re.compile(r"[\ud800-\udfff]")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # in an id, a newline would forge a log line

ID_CHARS = 32  # Slack ids and message timestamps (the columns that store them are this wide)
KEY_CHARS = 255  # event ids and trigger ids (the inbox key)
TYPE_CHARS = 50  # payload and event types (the inbox keeps "event:<type>" in 64 characters)

# Where Bolt and ProdOps read a value, and what it must be. A dotted path; "[]" means every element.
STRINGS: dict[str, int] = {
    "type": TYPE_CHARS,
    "team_id": ID_CHARS,
    "enterprise_id": ID_CHARS,
    "api_app_id": ID_CHARS,
    "user_id": ID_CHARS,
    "channel_id": ID_CHARS,
    "command": TYPE_CHARS,
    "event_id": KEY_CHARS,
    "trigger_id": KEY_CHARS,
    "callback_id": KEY_CHARS,
    "response_url": 2048,
    "message_ts": ID_CHARS,
    "team.id": ID_CHARS,
    "user.id": ID_CHARS,
    "user.team_id": ID_CHARS,
    "channel.id": ID_CHARS,
    "enterprise.id": ID_CHARS,
    "view.id": ID_CHARS,
    "view.callback_id": KEY_CHARS,
    "view.type": TYPE_CHARS,
    "view.team_id": ID_CHARS,
    "view.private_metadata": 3000,
    "view.external_id": KEY_CHARS,
    "container.channel_id": ID_CHARS,
    "container.message_ts": ID_CHARS,
    "container.thread_ts": ID_CHARS,
    "container.type": TYPE_CHARS,
    "message.ts": ID_CHARS,
    "message.thread_ts": ID_CHARS,
    "message.user": ID_CHARS,
    "actions[].action_id": KEY_CHARS,
    "actions[].block_id": KEY_CHARS,
    "actions[].type": TYPE_CHARS,
    "authorizations[].team_id": ID_CHARS,
    "authorizations[].enterprise_id": ID_CHARS,
    "authorizations[].user_id": ID_CHARS,
    "event.type": TYPE_CHARS,
    "event.subtype": TYPE_CHARS,
    "event.user": ID_CHARS,
    "event.channel": ID_CHARS,
    "user": ID_CHARS,
    "team": ID_CHARS,
    "channel": ID_CHARS,
    "event.team": ID_CHARS,
    "event.ts": ID_CHARS,
    "event.thread_ts": ID_CHARS,
    "event.event_ts": ID_CHARS,
    "event.channel_type": TYPE_CHARS,
    "event.reaction": 100,
    "event.item_user": ID_CHARS,
    "event.bot_id": ID_CHARS,
    "event.item.type": TYPE_CHARS,
    "event.item.channel": ID_CHARS,
    "event.item.ts": ID_CHARS,
    "event.message.ts": ID_CHARS,
    "event.message.thread_ts": ID_CHARS,
    "event.message.user": ID_CHARS,
    "event.previous_message.ts": ID_CHARS,
    "event.deleted_ts": ID_CHARS,
}
TEXTS = ("text", "event.text", "event.message.text", "message.text")  # strings, any length
OBJECTS = (
    "event",
    "event.item",
    "event.message",
    "event.previous_message",
    "event.view",
    "view",
    "view.state",
    "view.state.values",
    "container",
    "message",
    "enterprise",
    "channel",
    "user",  # an object in interactions (events carry event.user, a string)
    "team",
)
LISTS = (
    "authorizations",
    "actions",
    "response_urls",
    "event.blocks",
    "event.files",
    "message.blocks",
    "view.blocks",
)
ELEMENT_OBJECTS = ("authorizations", "actions", "response_urls")
NULLABLE = ("enterprise", "team", "channel", "user", "message", "container")  # Slack sends null for these
# What Slack always sends with each kind of payload (and handlers read before they can acknowledge).
REQUIRED: dict[str, tuple[str, ...]] = {
    "event_callback": ("event_id", "event", "event.type"),
    "slash_command": ("command", "team_id", "user_id", "channel_id", "trigger_id", "response_url"),
    "block_actions": ("user", "user.id", "actions", "actions[].action_id"),
    "block_suggestion": ("user", "user.id", "action_id"),
    "view_submission": ("user", "user.id", "view", "view.id", "view.type", "view.callback_id"),
    "view_closed": ("user", "user.id", "view", "view.id", "view.type", "view.callback_id"),
    "message_action": (
        "user",
        "user.id",
        "callback_id",
        "trigger_id",
        "channel",
        "channel.id",
        "message",
        "message.ts",
        "response_url",
    ),
    "shortcut": ("user", "user.id", "callback_id", "trigger_id"),
}
# Ids in most events, objects in some (user_change, channel_created): either, but an id is checked as one.
ID_OR_OBJECT = ("user", "team", "channel", "event.user", "event.channel")


def signature_problem(
    raw: bytes, headers: Mapping[str, Any], signing_secret: str, *, now: float | None = None
) -> str | None:
    """Why the request is not signed by Slack with this secret, or None when it is (Slack's v0 scheme)."""
    timestamp = _header(headers, "x-slack-request-timestamp")
    signature = _header(headers, "x-slack-signature")
    if not timestamp or not signature:
        return "unsigned"
    if not TIMESTAMP.fullmatch(timestamp) or not SIGNATURE.fullmatch(signature):
        return "malformed signature headers"
    if abs((time.time() if now is None else now) - int(timestamp)) > MAX_CLOCK_SKEW_SECONDS:
        return "stale timestamp"
    # Over the raw bytes: a body that is not UTF-8 can still be checked (and then refused as malformed).
    digest = hmac.new(signing_secret.encode(), b"v0:" + timestamp.encode() + b":" + raw, sha256).hexdigest()
    if not hmac.compare_digest(f"v0={digest}", signature):
        return "wrong signature"
    return None


def _header(headers: Mapping[str, Any], name: str) -> str:
    value = headers.get(name)
    if isinstance(value, list | tuple):
        value = value[0] if value else None
    return value.strip() if isinstance(value, str) else ""


def body_problem(body: Any) -> str | None:
    """What is wrong with a parsed body, in a few words naming the field, or None when it is usable."""
    if not isinstance(body, dict):
        return "expected a JSON object"
    problem = _value_problem(body)
    if problem:
        return problem
    kind = body.get("type") or ("slash_command" if "command" in body else None)
    for path in REQUIRED.get(str(kind), ()):
        if not _present(body, path):
            return f"`{path}` is missing (Slack always sends it with {kind})"
    for path in OBJECTS:
        for where, value in _at(body, path):
            if value is None and path in NULLABLE:
                continue
            if not isinstance(value, dict):
                if path in ID_OR_OBJECT and isinstance(value, str):
                    continue
                return f"`{where}` should be an object"
    for path in LISTS:
        for where, value in _at(body, path):
            if value is not None and not isinstance(value, list):
                return f"`{where}` should be a list"
    if isinstance(body.get("actions"), list) and not body["actions"]:
        return "`actions` is empty"  # Bolt reads the first action of every interaction that has the list
    for path in ELEMENT_OBJECTS:
        for where, value in _at(body, path + "[]"):
            if not isinstance(value, dict):
                return f"`{where}` should be an object"
    for path, limit in STRINGS.items():
        for where, value in _at(body, path):
            if value is None or (path in ID_OR_OBJECT and isinstance(value, dict)):
                continue
            if not isinstance(value, str):
                return f"`{where}` should be a string"
            if len(value) > limit:
                return f"`{where}` is longer than {limit} characters"
            if limit <= KEY_CHARS and CONTROL.search(value):
                return f"`{where}` contains a control character"
    for path in TEXTS:
        for where, value in _at(body, path):
            if value is not None and not isinstance(value, str):
                return f"`{where}` should be a string"
    return None


def _value_problem(body: dict[str, Any]) -> str | None:
    """Depth, NUL characters, unpaired surrogates and non-finite numbers anywhere (walked without recursion)."""
    stack: list[tuple[Any, str, int]] = [(body, "", 0)]
    while stack:
        value, where, depth = stack.pop()
        if depth > MAX_DEPTH:
            return f"nested deeper than {MAX_DEPTH} levels"
        if isinstance(value, dict):
            for key, inner in value.items():
                if problem := _string_problem(key, where or "the body"):
                    return problem
                stack.append((inner, f"{where}.{key}" if where else str(key), depth + 1))
        elif isinstance(value, list):
            stack.extend((inner, f"{where}[{i}]", depth + 1) for i, inner in enumerate(value))
        elif isinstance(value, str):
            if problem := _string_problem(value, where):
                return problem
        elif isinstance(value, float) and not math.isfinite(value):
            return f"`{where}` is not a finite number"
    return None


def _string_problem(value: str, where: str) -> str | None:
    if "\x00" in value:
        return f"`{where}` contains a NUL character"
    if LONE_SURROGATE.search(value):
        return f"`{where}` contains an unpaired UTF-16 surrogate"
    return None


def _present(body: dict[str, Any], path: str) -> bool:
    """Whether every value at the path is there and not null (a list path needs one element at least)."""
    parent, _, last = path.rpartition(".")
    holders = [value for _, value in _at(body, parent)] if parent else [body]
    each = last.endswith("[]")
    key = last.removesuffix("[]")
    if each:
        lists = [h.get(key) for h in holders if isinstance(h, dict)]
        return bool(lists) and all(isinstance(v, list) and v for v in lists)
    return bool(holders) and all(isinstance(h, dict) and h.get(key) not in (None, "", []) for h in holders)


def _at(body: dict[str, Any], path: str) -> list[tuple[str, Any]]:
    """The values at a dotted path (`a.b`, `a[].b`), with where each was found; missing parts are skipped."""
    found: list[tuple[str, Any]] = [("", body)]
    for part in path.split("."):
        each = part.endswith("[]")
        key = part.removesuffix("[]")
        step: list[tuple[str, Any]] = []
        for where, value in found:
            if not isinstance(value, dict) or key not in value:
                continue
            here = f"{where}.{key}" if where else key
            inner = value[key]
            if not each:
                step.append((here, inner))
            elif isinstance(inner, list):
                step.extend((f"{here}[{i}]", element) for i, element in enumerate(inner))
        found = step
    return found
