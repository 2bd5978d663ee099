"""In-memory Slack workspace state behind the emulator: teams, users, channels, messages, views, files."""

from __future__ import annotations

import base64
import copy
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


class SlackError(Exception):
    """A Slack Web API error answered as {"ok": false, "error": ...}."""

    def __init__(self, error: str, **extra: Any) -> None:
        super().__init__(error)
        self.error = error
        self.extra = extra


@dataclass
class Call:
    """One recorded Web API call."""

    method: str
    params: dict[str, Any]
    token: str | None
    http_status: int
    response: dict[str, Any]
    at: float


@dataclass
class Fault:
    """An injected failure for the next `times` calls of a method."""

    status: int
    retry_after: int
    error: str | None
    times: int


@dataclass
class Workspace:
    """One Slack team: its bot identity and everything stored in it."""

    team_id: str
    team_name: str
    team_domain: str
    bot_token: str
    bot_user_id: str
    bot_id: str
    app_id: str
    app_token: str = ""
    users: dict[str, dict] = field(default_factory=dict)
    channels: dict[str, dict] = field(default_factory=dict)
    members: dict[str, list[str]] = field(default_factory=dict)
    history: dict[str, list[dict]] = field(default_factory=dict)
    ephemerals: list[dict] = field(default_factory=list)
    views: dict[str, dict] = field(default_factory=dict)
    home_views: dict[str, dict] = field(default_factory=dict)
    uploads: dict[str, dict] = field(default_factory=dict)
    files: dict[str, dict] = field(default_factory=dict)
    file_data: dict[str, bytes] = field(default_factory=dict)

    @property
    def url(self) -> str:
        """Return the workspace URL, e.g. https://acme.slack.com/."""
        return f"https://{self.team_domain}.slack.com/"


def tz_offset(tz: str) -> tuple[int, str]:
    """Return (offset seconds, label) for an IANA zone name right now."""
    try:
        now = datetime.now(ZoneInfo(tz))
    except (ZoneInfoNotFoundError, ValueError):
        return 0, tz
    offset = now.utcoffset()
    return int(offset.total_seconds()) if offset else 0, now.tzname() or tz


def encode_cursor(value: str) -> str:
    """Return an opaque Slack-style cursor for a value."""
    return base64.b64encode(value.encode()).decode()


def decode_cursor(cursor: str, prefix: str) -> str:
    """Return the value inside a cursor made by encode_cursor, or raise invalid_cursor."""
    try:
        text = base64.b64decode(cursor.encode(), validate=True).decode()
    except ValueError as exc:
        raise SlackError("invalid_cursor") from exc
    if not text.startswith(prefix):
        raise SlackError("invalid_cursor")
    return text[len(prefix) :]


def is_reply(message: dict) -> bool:
    """Return True when a message is a thread reply (not a parent, not top-level)."""
    thread_ts = message.get("thread_ts")
    return bool(thread_ts) and thread_ts != message["ts"]


class EmulatorState:
    """All emulator state, guarded by one re-entrant lock."""

    def __init__(self, default: Workspace) -> None:
        self.lock = threading.RLock()
        self.teams: dict[str, Workspace] = {}
        self.default_team_id = default.team_id
        self.calls: list[Call] = []
        self.faults: dict[str, list[Fault]] = {}
        self.delays: dict[str, list[list[float]]] = {}
        self.response_posts: list[tuple[str, dict]] = []
        self.triggers: dict[str, dict[str, float | bool]] = {}
        self.trigger_ttl = 3.0
        self.root_url = ""
        self._counters: dict[str, int] = {}
        self._last_ts = (0, 0)
        self.add_workspace(default)

    # ---- ids ---------------------------------------------------------------

    def new_id(self, prefix: str) -> str:
        """Return a fresh id such as U0000001 (one counter per prefix)."""
        with self.lock:
            n = self._counters.get(prefix, 0) + 1
            self._counters[prefix] = n
            return f"{prefix}{n:07d}"

    def next_ts(self) -> str:
        """Return a unique, increasing Slack ts: epoch seconds plus a 6-digit counter."""
        with self.lock:
            last_sec, last_seq = self._last_ts
            sec, seq = int(time.time()), 100
            if sec <= last_sec:
                sec, seq = last_sec, last_seq + 1
                if seq > 999_999:
                    sec, seq = sec + 1, 100
            self._last_ts = (sec, seq)
            return f"{sec}.{seq:06d}"

    def new_hash(self) -> str:
        """Return a view hash like Slack's "1569362015.55b5e41b"."""
        return f"{int(time.time())}.{secrets.token_hex(4)}"

    # ---- teams -------------------------------------------------------------

    def add_workspace(self, ws: Workspace) -> Workspace:
        """Register a workspace and its bot user."""
        with self.lock:
            self.teams[ws.team_id] = ws
            bot = self.make_user(ws, "prodops", ws.bot_user_id, "ProdOps", "UTC", False, True, None)
            bot["profile"]["bot_id"] = ws.bot_id
            ws.users[bot["id"]] = bot
            return ws

    def team(self, team_id: str | None = None) -> Workspace:
        """Return a workspace by id (the default one when None)."""
        try:
            return self.teams[team_id or self.default_team_id]
        except KeyError:
            raise KeyError(f"unknown team {team_id!r}") from None

    def workspace_for_token(self, token: str) -> Workspace | None:
        """Return the workspace whose bot token this is."""
        return next((ws for ws in self.teams.values() if ws.bot_token == token), None)

    def workspace_for_app_token(self, token: str) -> Workspace | None:
        """Return the (first) workspace whose app-level token this is."""
        return next((ws for ws in self.teams.values() if ws.app_token and ws.app_token == token), None)

    # ---- users -------------------------------------------------------------

    def make_user(
        self,
        ws: Workspace,
        name: str,
        user_id: str,
        real_name: str | None,
        tz: str,
        is_admin: bool,
        is_bot: bool,
        email: str | None,
    ) -> dict:
        """Return a Slack user object."""
        offset, label = tz_offset(tz)
        real = real_name or name.replace(".", " ").title()
        profile: dict[str, Any] = {
            "real_name": real,
            "real_name_normalized": real,
            "display_name": name,
            "display_name_normalized": name,
            "team": ws.team_id,
            "image_48": f"https://avatars.example/{user_id}_48.png",
        }
        if not is_bot:
            profile["email"] = email or f"{name}@{ws.team_domain}.example"
        return {
            "id": user_id,
            "team_id": ws.team_id,
            "name": name,
            "deleted": False,
            "real_name": real,
            "tz": tz,
            "tz_label": label,
            "tz_offset": offset,
            "is_admin": is_admin,
            "is_owner": False,
            "is_primary_owner": False,
            "is_restricted": False,
            "is_ultra_restricted": False,
            "is_bot": is_bot,
            "is_app_user": False,
            "updated": int(time.time()),
            "profile": profile,
        }

    def resolve_user(self, ws: Workspace, ref: str) -> dict:
        """Return a user by id or name, or raise user_not_found."""
        user = ws.users.get(ref) or next((u for u in ws.users.values() if u["name"] == ref), None)
        if user is None:
            raise SlackError("user_not_found")
        return user

    # ---- channels ----------------------------------------------------------

    def make_channel(self, ws: Workspace, name: str, channel_id: str, is_private: bool) -> dict:
        """Return a stored Slack conversation object for a channel."""
        now = int(time.time())
        return {
            "id": channel_id,
            "name": name,
            "name_normalized": name,
            "is_channel": True,
            "is_group": False,
            "is_im": False,
            "is_mpim": False,
            "is_private": is_private,
            "created": now,
            "is_archived": False,
            "is_general": name == "general",
            "is_shared": False,
            "is_ext_shared": False,
            "is_org_shared": False,
            "context_team_id": ws.team_id,
            "creator": ws.bot_user_id,
            "topic": {"value": "", "creator": "", "last_set": 0},
            "purpose": {"value": "", "creator": "", "last_set": 0},
            "previous_names": [],
        }

    def open_dm(self, ws: Workspace, user_id: str) -> dict:
        """Return the bot's DM channel with a user, creating it on first use."""
        for channel in ws.channels.values():
            if channel.get("is_im") and channel.get("user") == user_id:
                return channel
        channel = {
            "id": self.new_id("D"),
            "created": int(time.time()),
            "is_im": True,
            "is_channel": False,
            "is_group": False,
            "is_mpim": False,
            "is_private": True,
            "is_archived": False,
            "is_org_shared": False,
            "user": user_id,
            "is_user_deleted": False,
            "priority": 0,
        }
        ws.channels[channel["id"]] = channel
        ws.members[channel["id"]] = [user_id, ws.bot_user_id]
        ws.history[channel["id"]] = []
        return channel

    def find_channel(self, ws: Workspace, ref: str | None) -> dict:
        """Return a channel by id or name (a user id opens a DM), or raise channel_not_found."""
        if not ref:
            raise SlackError("channel_not_found")
        ref = ref.lstrip("#")
        if ref in ws.channels:
            return ws.channels[ref]
        if ref in ws.users:
            return self.open_dm(ws, ref)
        found = next((c for c in ws.channels.values() if c.get("name") == ref), None)
        if found is None:
            raise SlackError("channel_not_found")
        return found

    def bot_is_member(self, ws: Workspace, channel: dict) -> bool:
        """Return True when the bot user is in the channel."""
        return ws.bot_user_id in ws.members.get(channel["id"], [])

    def readable_channel(self, ws: Workspace, ref: str | None) -> dict:
        """Return a channel the bot may read, else raise channel_not_found / not_in_channel."""
        channel = self.find_channel(ws, ref)
        if not self.bot_is_member(ws, channel):
            raise SlackError("channel_not_found" if channel.get("is_private") else "not_in_channel")
        return channel

    def writable_channel(self, ws: Workspace, ref: str | None) -> dict:
        """Return a channel the bot may post in, else raise the matching Slack error."""
        channel = self.readable_channel(ws, ref)
        if channel.get("is_archived"):
            raise SlackError("is_archived")
        return channel

    def render_channel(self, ws: Workspace, channel: dict) -> dict:
        """Return a copy of a conversation object with membership fields filled in."""
        out = copy.deepcopy(channel)
        if not channel.get("is_im"):
            out["is_member"] = self.bot_is_member(ws, channel)
            out["num_members"] = len(ws.members.get(channel["id"], []))
        return out

    # ---- messages ----------------------------------------------------------

    def find_message(self, ws: Workspace, channel_id: str, ts: str | None) -> dict | None:
        """Return the stored message with this ts in a channel, if any."""
        return next((m for m in ws.history.get(channel_id, []) if m["ts"] == ts), None)

    def thread_parent(self, ws: Workspace, channel_id: str, ts: str) -> dict | None:
        """Return the parent of the thread a ts belongs to (the message itself when top-level)."""
        message = self.find_message(ws, channel_id, ts)
        if message is not None and is_reply(message):
            return self.find_message(ws, channel_id, message["thread_ts"])
        return message

    def thread_replies(self, ws: Workspace, channel_id: str, thread_ts: str) -> list[dict]:
        """Return the replies of a thread, oldest first."""
        history = ws.history.get(channel_id, [])
        return [m for m in history if is_reply(m) and m["thread_ts"] == thread_ts]

    def store_message(self, ws: Workspace, channel_id: str, message: dict) -> dict:
        """Append a message (a reply when it has thread_ts) and update the parent's thread counters."""
        thread_ts = message.get("thread_ts")
        if thread_ts:
            parent = self.thread_parent(ws, channel_id, thread_ts)
            if parent is not None:
                message["thread_ts"] = parent["ts"]
                message["parent_user_id"] = parent.get("user")
        ws.history.setdefault(channel_id, []).append(message)
        if message.get("thread_ts"):
            self.recount_thread(ws, channel_id, message["thread_ts"])
        return message

    def recount_thread(self, ws: Workspace, channel_id: str, thread_ts: str) -> None:
        """Recompute reply_count, reply_users and latest_reply on a thread parent."""
        parent = self.find_message(ws, channel_id, thread_ts)
        if parent is None or is_reply(parent):
            return
        replies = self.thread_replies(ws, channel_id, thread_ts)
        if not replies:
            for key in ("thread_ts", "reply_count", "reply_users", "reply_users_count", "latest_reply"):
                parent.pop(key, None)
            return
        users = list(dict.fromkeys(r.get("user") for r in replies if r.get("user")))
        parent.update(
            thread_ts=parent["ts"],
            reply_count=len(replies),
            reply_users=users,
            reply_users_count=len(users),
            latest_reply=replies[-1]["ts"],
        )

    def bot_message(self, ws: Workspace, text: str, **fields: Any) -> dict:
        """Return a message authored by the workspace's bot."""
        message = {
            "type": "message",
            "user": ws.bot_user_id,
            "bot_id": ws.bot_id,
            "app_id": ws.app_id,
            "text": text,
            "ts": self.next_ts(),
            "team": ws.team_id,
            "bot_profile": {"id": ws.bot_id, "app_id": ws.app_id, "name": "ProdOps", "team_id": ws.team_id},
        }
        message.update({k: v for k, v in fields.items() if v is not None})
        return message

    def add_reaction(self, message: dict, name: str, user_id: str) -> None:
        """Add a user's reaction to a message, or raise already_reacted."""
        reactions = message.setdefault("reactions", [])
        entry = next((r for r in reactions if r["name"] == name), None)
        if entry is None:
            entry = {"name": name, "users": [], "count": 0}
            reactions.append(entry)
        if user_id in entry["users"]:
            raise SlackError("already_reacted")
        entry["users"].append(user_id)
        entry["count"] = len(entry["users"])

    def remove_reaction(self, message: dict, name: str, user_id: str) -> None:
        """Remove a user's reaction from a message, or raise no_reaction."""
        reactions = message.get("reactions", [])
        entry = next((r for r in reactions if r["name"] == name and user_id in r["users"]), None)
        if entry is None:
            raise SlackError("no_reaction")
        entry["users"].remove(user_id)
        entry["count"] = len(entry["users"])
        message["reactions"] = [r for r in reactions if r["count"]]
        if not message["reactions"]:
            del message["reactions"]

    # ---- triggers, faults, delays -------------------------------------------

    def issue_trigger(self) -> str:
        """Return a new trigger_id that the emulator will check for expiry and reuse."""
        trigger_id = f"{int(time.time())}.{secrets.randbelow(10**10):010d}.{secrets.token_hex(16)}"
        with self.lock:
            self.triggers[trigger_id] = {"at": time.time(), "used": False}
        return trigger_id

    def exchange_trigger(self, trigger_id: str | None) -> None:
        """Validate and use up a trigger_id; unknown ids (made outside the emulator) are accepted."""
        if not trigger_id:
            raise SlackError("invalid_arguments")
        info = self.triggers.get(trigger_id)
        if info is None:
            return
        if info["used"]:
            raise SlackError("exchanged_trigger_id")
        if time.time() - float(info["at"]) > self.trigger_ttl:
            raise SlackError("expired_trigger_id")
        info["used"] = True

    def take_fault(self, method: str) -> Fault | None:
        """Consume and return the next injected fault for a method ("*" matches any)."""
        with self.lock:
            for key in (method, "*"):
                queue = self.faults.get(key)
                if queue:
                    fault = queue[0]
                    fault.times -= 1
                    if fault.times <= 0:
                        queue.pop(0)
                    return fault
            return None

    def take_delay(self, method: str) -> float:
        """Consume and return the next injected delay (seconds) for a method ("*" matches any)."""
        with self.lock:
            for key in (method, "*"):
                queue = self.delays.get(key)
                if queue:
                    entry = queue[0]
                    entry[1] -= 1
                    if entry[1] <= 0:
                        queue.pop(0)
                    return entry[0]
            return 0.0
