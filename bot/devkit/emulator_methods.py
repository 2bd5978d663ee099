"""Slack Web API method handlers for the emulator: each validates args, mutates state, returns a dict."""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from typing import Any

from bot.devkit.emulator_state import (
    EmulatorState,
    SlackError,
    Workspace,
    decode_cursor,
    encode_cursor,
    is_reply,
)


class ApiRequest:
    """One authenticated API call: the workspace, the decoded params and typed accessors."""

    def __init__(
        self, state: EmulatorState, ws: Workspace, params: dict[str, Any], token_user: str | None = None
    ) -> None:
        self.state = state
        self.ws = ws
        self.params = params
        self.token_user = token_user  # the user of a user token (xoxp-); None for the bot token

    def get(self, name: str, default: Any = None) -> Any:
        """Return a param, treating empty strings and None as missing."""
        value = self.params.get(name)
        return default if value is None or value == "" else value

    def require(self, name: str, error: str = "invalid_arguments") -> Any:
        """Return a param or raise the given Slack error when it is missing."""
        value = self.get(name)
        if value is None:
            raise SlackError(error)
        return value

    def int(self, name: str, default: int) -> int:
        """Return a param as an int."""
        try:
            return int(self.get(name, default))
        except (TypeError, ValueError) as exc:
            raise SlackError("invalid_arguments") from exc

    def float(self, name: str, default: float) -> float:
        """Return a param as a float (e.g. a ts)."""
        try:
            return float(self.get(name, default))
        except (TypeError, ValueError) as exc:
            raise SlackError("invalid_arguments") from exc

    def bool(self, name: str, default: bool = False) -> bool:
        """Return a param as a bool ("true"/"1"/True)."""
        value = self.get(name, default)
        return value is True or str(value).lower() in ("true", "1")

    def json(self, name: str, error: str = "invalid_arguments") -> Any:
        """Return a JSON param decoded (form bodies send it as a string)."""
        value = self.get(name)
        if isinstance(value, str):
            try:
                return json.loads(value)
            except ValueError as exc:
                raise SlackError(error) from exc
        return value


Handler = Callable[[ApiRequest], dict]
METHODS: dict[str, Handler] = {}


def api(name: str) -> Callable[[Handler], Handler]:
    """Register a function as the handler of a Web API method."""

    def register(fn: Handler) -> Handler:
        METHODS[name] = fn
        return fn

    return register


def page(items: list, req: ApiRequest, default_limit: int = 100) -> tuple[list, str]:
    """Return one offset-cursor page of items and the next cursor ("" at the end)."""
    limit = req.int("limit", default_limit) or default_limit
    cursor = req.get("cursor")
    offset = decode_cursor(cursor, "offset:") if cursor else "0"
    if not offset.isdigit():
        raise SlackError("invalid_cursor")
    start = int(offset)
    end = start + max(1, min(limit, 1000))
    return items[start:end], encode_cursor(f"offset:{end}") if end < len(items) else ""


def page_by_ts(messages: list[dict], req: ApiRequest, default_limit: int, newest_first: bool) -> dict:
    """Return a ts-cursor page of messages as {messages, has_more, response_metadata}."""
    limit = max(1, min(req.int("limit", default_limit) or default_limit, 1000))
    start = 0
    if req.get("cursor"):
        try:
            at = float(decode_cursor(req.get("cursor"), "next_ts:"))
        except ValueError as exc:
            raise SlackError("invalid_cursor") from exc
        start = next(
            (
                i
                for i, m in enumerate(messages)
                if (float(m["ts"]) <= at if newest_first else float(m["ts"]) >= at)
            ),
            len(messages),
        )
    chunk = messages[start : start + limit]
    more = start + limit < len(messages)
    cursor = encode_cursor(f"next_ts:{messages[start + limit]['ts']}") if more else ""
    return {"messages": chunk, "has_more": more, "response_metadata": {"next_cursor": cursor}}


def in_window(messages: list[dict], req: ApiRequest) -> list[dict]:
    """Return messages between the oldest/latest params (exclusive unless inclusive=true)."""
    latest = req.float("latest", time.time() + 1)
    oldest = req.float("oldest", 0.0)
    if req.bool("inclusive"):
        return [m for m in messages if oldest <= float(m["ts"]) <= latest]
    return [m for m in messages if oldest < float(m["ts"]) < latest]


def message_content(req: ApiRequest) -> dict:
    """Return text/blocks/attachments/metadata from params, or raise no_text when there is nothing."""
    blocks = req.json("blocks", "invalid_blocks_format")
    attachments = req.json("attachments", "invalid_attachments")
    text = req.get("text")
    if blocks is not None and not isinstance(blocks, list):
        raise SlackError("invalid_blocks_format")
    if not text and not blocks and not attachments:
        raise SlackError("no_text")
    content: dict[str, Any] = {"text": text or ""}
    for key, value in (("blocks", blocks), ("attachments", attachments), ("metadata", req.json("metadata"))):
        if value:
            content[key] = value
    return content


def own_message(req: ApiRequest, error: str) -> tuple[dict, dict]:
    """Return (channel, message) for channel+ts when the bot wrote it; raise message_not_found / error."""
    channel = req.state.readable_channel(req.ws, req.require("channel", "channel_not_found"))
    message = req.state.find_message(req.ws, channel["id"], req.require("ts", "message_not_found"))
    if message is None:
        raise SlackError("message_not_found")
    if message.get("bot_id") != req.ws.bot_id:
        raise SlackError(error)
    return channel, message


# ---- auth / team ---------------------------------------------------------------


@api("api.test")
def api_test(req: ApiRequest) -> dict:
    """Echo the arguments."""
    return {"ok": True, "args": {k: v for k, v in req.params.items() if isinstance(v, str)}}


@api("auth.test")
def auth_test(req: ApiRequest) -> dict:
    """Describe the token's identity: the bot's, or the user's for a user token."""
    ws = req.ws
    user_id = req.token_user or ws.bot_user_id
    user = ws.users.get(user_id) or {"name": user_id}
    answer = {
        "ok": True,
        "url": ws.url,
        "team": ws.team_name,
        "user": user["name"],
        "team_id": ws.team_id,
        "user_id": user_id,
        "is_enterprise_install": False,
    }
    if req.token_user is None:
        answer["bot_id"] = ws.bot_id
    return answer


@api("team.info")
def team_info(req: ApiRequest) -> dict:
    """Describe the team."""
    ws = req.ws
    return {"ok": True, "team": {"id": ws.team_id, "name": ws.team_name, "domain": ws.team_domain}}


# ---- chat ----------------------------------------------------------------------


@api("chat.postMessage")
def chat_post_message(req: ApiRequest) -> dict:
    """Post a bot message (a reply when thread_ts is given; a user id opens a DM)."""
    state, ws = req.state, req.ws
    channel = state.writable_channel(ws, req.require("channel", "channel_not_found"))
    content = message_content(req)
    thread_ts = req.get("thread_ts")
    message = state.bot_message(ws, content.pop("text"), thread_ts=thread_ts, **content)
    if thread_ts and req.bool("reply_broadcast"):
        message["subtype"] = "thread_broadcast"
    for key in ("username", "icon_emoji", "icon_url"):
        if req.get(key):
            message[key] = req.get(key)
    state.store_message(ws, channel["id"], message)
    return {"ok": True, "channel": channel["id"], "ts": message["ts"], "message": message}


@api("chat.postEphemeral")
def chat_post_ephemeral(req: ApiRequest) -> dict:
    """Show a message to one user in a channel; stored apart from the channel history."""
    state, ws = req.state, req.ws
    channel = state.writable_channel(ws, req.require("channel", "channel_not_found"))
    user = state.resolve_user(ws, req.require("user", "user_not_found"))
    if user["id"] not in ws.members.get(channel["id"], []):
        raise SlackError("user_not_in_channel")
    content = message_content(req)
    ephemeral = state.bot_message(ws, content.pop("text"), thread_ts=req.get("thread_ts"), **content)
    ephemeral.update(channel=channel["id"], user=user["id"], is_ephemeral=True)
    ws.ephemerals.append(ephemeral)
    return {"ok": True, "message_ts": ephemeral["ts"]}


@api("chat.update")
def chat_update(req: ApiRequest) -> dict:
    """Edit one of the bot's own messages."""
    channel, message = own_message(req, "cant_update_message")
    content = message_content(req)
    message.update(content)
    for key in ("blocks", "attachments"):
        if key in req.params and not content.get(key):
            message.pop(key, None)
    message["edited"] = {"user": req.ws.bot_user_id, "ts": req.state.next_ts()}
    return {
        "ok": True,
        "channel": channel["id"],
        "ts": message["ts"],
        "text": message["text"],
        "message": message,
    }


@api("chat.delete")
def chat_delete(req: ApiRequest) -> dict:
    """Delete one of the bot's own messages."""
    channel, message = own_message(req, "cant_delete_message")
    history = req.ws.history[channel["id"]]
    history.remove(message)
    if is_reply(message):
        req.state.recount_thread(req.ws, channel["id"], message["thread_ts"])
    return {"ok": True, "channel": channel["id"], "ts": message["ts"]}


@api("chat.getPermalink")
def chat_get_permalink(req: ApiRequest) -> dict:
    """Return a message's permalink (with thread_ts and cid for replies)."""
    channel = req.state.find_channel(req.ws, req.require("channel", "channel_not_found"))
    message = req.state.find_message(req.ws, channel["id"], req.require("message_ts", "message_not_found"))
    if message is None:
        raise SlackError("message_not_found")
    link = f"{req.ws.url}archives/{channel['id']}/p{message['ts'].replace('.', '')}"
    if is_reply(message):
        link += f"?thread_ts={message['thread_ts']}&cid={channel['id']}"
    return {"ok": True, "channel": channel["id"], "permalink": link}


# ---- conversations -------------------------------------------------------------


@api("conversations.info")
def conversations_info(req: ApiRequest) -> dict:
    """Return a conversation object."""
    channel = req.state.find_channel(req.ws, req.require("channel", "channel_not_found"))
    if channel.get("is_private") and not req.state.bot_is_member(req.ws, channel):
        raise SlackError("channel_not_found")
    return {"ok": True, "channel": req.state.render_channel(req.ws, channel)}


@api("conversations.list")
def conversations_list(req: ApiRequest) -> dict:
    """List the conversations the bot can see, filtered by types and exclude_archived."""
    state, ws = req.state, req.ws
    types = set(str(req.get("types", "public_channel")).split(","))
    visible = []
    for channel in ws.channels.values():
        if channel.get("is_im"):
            kind = "im"
        else:
            kind = "private_channel" if channel["is_private"] else "public_channel"
        if kind not in types or (req.bool("exclude_archived") and channel.get("is_archived")):
            continue
        if kind != "public_channel" and not state.bot_is_member(ws, channel):
            continue
        visible.append(state.render_channel(ws, channel))
    chunk, cursor = page(visible, req)
    return {"ok": True, "channels": chunk, "response_metadata": {"next_cursor": cursor}}


@api("conversations.history")
def conversations_history(req: ApiRequest) -> dict:
    """Return top-level messages and thread parents, newest first."""
    channel = req.state.readable_channel(req.ws, req.require("channel", "channel_not_found"))
    messages = [
        m
        for m in req.ws.history.get(channel["id"], [])
        if not is_reply(m) or m.get("subtype") == "thread_broadcast"
    ]
    messages = sorted(in_window(messages, req), key=lambda m: float(m["ts"]), reverse=True)
    return {"ok": True, **page_by_ts(messages, req, 100, newest_first=True), "pin_count": 0}


@api("conversations.replies")
def conversations_replies(req: ApiRequest) -> dict:
    """Return a thread: the parent first, then replies oldest first."""
    state, ws = req.state, req.ws
    channel = state.readable_channel(ws, req.require("channel", "channel_not_found"))
    parent = state.thread_parent(ws, channel["id"], req.require("ts", "thread_not_found"))
    if parent is None:
        raise SlackError("thread_not_found")
    thread = [parent, *state.thread_replies(ws, channel["id"], parent["ts"])]
    return {"ok": True, **page_by_ts(in_window(thread, req), req, 1000, newest_first=False)}


@api("conversations.members")
def conversations_members(req: ApiRequest) -> dict:
    """List the member ids of a conversation."""
    channel = req.state.find_channel(req.ws, req.require("channel", "channel_not_found"))
    if channel.get("is_private") and not req.state.bot_is_member(req.ws, channel):
        raise SlackError("channel_not_found")
    chunk, cursor = page(list(req.ws.members.get(channel["id"], [])), req)
    return {"ok": True, "members": chunk, "response_metadata": {"next_cursor": cursor}}


@api("conversations.join")
def conversations_join(req: ApiRequest) -> dict:
    """Add the bot to a public channel."""
    channel = req.state.find_channel(req.ws, req.require("channel", "channel_not_found"))
    if channel.get("is_private") or channel.get("is_im"):
        raise SlackError("method_not_supported_for_channel_type")
    if channel.get("is_archived"):
        raise SlackError("is_archived")
    members = req.ws.members.setdefault(channel["id"], [])
    if req.ws.bot_user_id not in members:
        members.append(req.ws.bot_user_id)
    return {"ok": True, "channel": req.state.render_channel(req.ws, channel)}


@api("conversations.open")
def conversations_open(req: ApiRequest) -> dict:
    """Open (or find) the bot's DM with one user."""
    users = str(req.require("users", "users_list_not_supplied")).split(",")
    if len(users) != 1:
        raise SlackError("method_not_supported_for_channel_type")
    user = req.state.resolve_user(req.ws, users[0].strip())
    channel = req.state.open_dm(req.ws, user["id"])
    return {"ok": True, "channel": copy.deepcopy(channel)}


# ---- users ---------------------------------------------------------------------


@api("users.info")
def users_info(req: ApiRequest) -> dict:
    """Return a user object."""
    user = req.ws.users.get(req.require("user", "user_not_found"))
    if user is None:
        raise SlackError("user_not_found")
    return {"ok": True, "user": user}


@api("users.list")
def users_list(req: ApiRequest) -> dict:
    """List users, paginated."""
    chunk, cursor = page(list(req.ws.users.values()), req, default_limit=200)
    return {
        "ok": True,
        "members": chunk,
        "cache_ts": int(time.time()),
        "response_metadata": {"next_cursor": cursor},
    }


@api("users.lookupByEmail")
def users_lookup_by_email(req: ApiRequest) -> dict:
    """Find a user by email."""
    email = str(req.require("email", "users_not_found")).lower()
    user = next((u for u in req.ws.users.values() if u["profile"].get("email", "").lower() == email), None)
    if user is None:
        raise SlackError("users_not_found")
    return {"ok": True, "user": user}


# ---- reactions -----------------------------------------------------------------


def reacted_message(req: ApiRequest) -> tuple[dict, dict]:
    """Return (channel, message) addressed by channel+timestamp for reactions.*."""
    channel = req.state.readable_channel(req.ws, req.require("channel", "channel_not_found"))
    message = req.state.find_message(req.ws, channel["id"], req.require("timestamp", "no_item_specified"))
    if message is None:
        raise SlackError("message_not_found")
    return channel, message


@api("reactions.add")
def reactions_add(req: ApiRequest) -> dict:
    """Add the bot's reaction to a message."""
    name = str(req.require("name", "invalid_name")).strip(":")
    _, message = reacted_message(req)
    req.state.add_reaction(message, name, req.ws.bot_user_id)
    return {"ok": True}


@api("reactions.remove")
def reactions_remove(req: ApiRequest) -> dict:
    """Remove the bot's reaction from a message."""
    name = str(req.require("name", "invalid_name")).strip(":")
    _, message = reacted_message(req)
    req.state.remove_reaction(message, name, req.ws.bot_user_id)
    return {"ok": True}


@api("reactions.get")
def reactions_get(req: ApiRequest) -> dict:
    """Return a message with its reactions."""
    channel, message = reacted_message(req)
    return {"ok": True, "type": "message", "channel": channel["id"], "message": message}


# ---- views ---------------------------------------------------------------------


def view_arg(req: ApiRequest, *kinds: str) -> dict:
    """Return the decoded view param, or raise invalid_arguments when malformed or of the wrong type."""
    view = req.json("view")
    if not isinstance(view, dict) or view.get("type") not in kinds:
        raise SlackError("invalid_arguments")
    if not isinstance(view.get("blocks", []), list):
        raise SlackError("invalid_arguments")
    if view["type"] == "modal" and not view.get("title"):
        raise SlackError("invalid_arguments")
    return view


def build_view(req: ApiRequest, view: dict, view_id: str, previous: dict | None = None) -> dict:
    """Return a stored view object as Slack answers it."""
    ws = req.ws
    built = {
        "id": view_id,
        "team_id": ws.team_id,
        "type": view["type"],
        "blocks": view.get("blocks", []),
        "private_metadata": view.get("private_metadata", ""),
        "callback_id": view.get("callback_id", ""),
        "state": {"values": {}},
        "hash": req.state.new_hash(),
        "title": view.get("title"),
        "clear_on_close": bool(view.get("clear_on_close", False)),
        "notify_on_close": bool(view.get("notify_on_close", False)),
        "close": view.get("close"),
        "submit": view.get("submit"),
        "previous_view_id": previous["id"] if previous else None,
        "root_view_id": previous["root_view_id"] if previous else view_id,
        "app_id": ws.app_id,
        "external_id": view.get("external_id", ""),
        "app_installed_team_id": ws.team_id,
        "bot_id": ws.bot_id,
    }
    return built


@api("views.open")
def views_open(req: ApiRequest) -> dict:
    """Open a modal."""
    view = view_arg(req, "modal")
    req.state.exchange_trigger(req.get("trigger_id"))
    built = build_view(req, view, req.state.new_id("V"))
    req.ws.views[built["id"]] = built
    return {"ok": True, "view": built}


@api("views.push")
def views_push(req: ApiRequest) -> dict:
    """Push a modal onto the open view stack."""
    view = view_arg(req, "modal")
    req.state.exchange_trigger(req.get("trigger_id"))
    previous = next(reversed(req.ws.views.values()), None)
    built = build_view(req, view, req.state.new_id("V"), previous)
    req.ws.views[built["id"]] = built
    return {"ok": True, "view": built}


@api("views.update")
def views_update(req: ApiRequest) -> dict:
    """Replace an open view by view_id or external_id, honouring hash."""
    view = view_arg(req, "modal", "home")
    view_id, external_id = req.get("view_id"), req.get("external_id")
    if not view_id and not external_id:
        raise SlackError("invalid_arguments")
    views = list(req.ws.views.values()) + list(req.ws.home_views.values())
    current = next(
        (
            v
            for v in views
            if (view_id and v["id"] == view_id) or (external_id and v["external_id"] == external_id)
        ),
        None,
    )
    if current is None:
        raise SlackError("not_found")
    if req.get("hash") and req.get("hash") != current["hash"]:
        raise SlackError("hash_conflict")
    built = build_view(req, view, current["id"])
    built.update(previous_view_id=current["previous_view_id"], root_view_id=current["root_view_id"])
    current.clear()
    current.update(built)
    return {"ok": True, "view": current}


@api("views.publish")
def views_publish(req: ApiRequest) -> dict:
    """Publish a user's App Home view."""
    view = view_arg(req, "home")
    user = req.state.resolve_user(req.ws, req.require("user_id"))
    current = req.ws.home_views.get(user["id"])
    if current and req.get("hash") and req.get("hash") != current["hash"]:
        raise SlackError("hash_conflict")
    built = build_view(req, view, current["id"] if current else req.state.new_id("V"))
    req.ws.home_views[user["id"]] = built
    return {"ok": True, "view": built}


# ---- files ---------------------------------------------------------------------


@api("files.getUploadURLExternal")
def files_get_upload_url_external(req: ApiRequest) -> dict:
    """Reserve a file id and return the emulator URL to upload its bytes to."""
    filename = req.require("filename")
    length = req.int("length", -1)
    if length < 0:
        raise SlackError("invalid_arguments")
    file_id = req.state.new_id("F")
    req.ws.uploads[file_id] = {
        "id": file_id,
        "name": filename,
        "length": length,
        "alt_txt": req.get("alt_txt"),
    }
    return {"ok": True, "upload_url": f"{req.state.root_url}/upload/{file_id}", "file_id": file_id}


def file_object(req: ApiRequest, pending: dict, title: str | None) -> dict:
    """Return the Slack file object for a completed upload."""
    ws, file_id = req.ws, pending["id"]
    name = pending["name"]
    ext = name.rsplit(".", 1)[-1].lower() if "." in name else "text"
    now = int(time.time())
    return {
        "id": file_id,
        "created": now,
        "timestamp": now,
        "name": name,
        "title": title or name,
        "mimetype": "text/plain" if ext in ("txt", "text", "csv", "md") else "application/octet-stream",
        "filetype": ext,
        "user": ws.bot_user_id,
        "user_team": ws.team_id,
        "size": len(ws.file_data.get(file_id, b"")),
        "mode": "hosted",
        "is_external": False,
        "is_public": False,
        "url_private": f"https://files.slack.com/files-pri/{ws.team_id}-{file_id}/{name}",
        "url_private_download": f"https://files.slack.com/files-pri/{ws.team_id}-{file_id}/download/{name}",
        "permalink": f"{ws.url}files/{ws.bot_user_id}/{file_id}/{name}",
        "channels": [],
        "groups": [],
        "ims": [],
        "shares": {},
    }


def share_files(req: ApiRequest, channel: dict, files: list[dict]) -> None:
    """Post the message that shares files in a channel and note the share on each file."""
    ws = req.ws
    message = req.state.bot_message(
        ws, req.get("initial_comment", ""), thread_ts=req.get("thread_ts"), files=files, upload=True
    )
    req.state.store_message(ws, channel["id"], message)
    kind = "private" if channel.get("is_private") else "public"
    for f in files:
        f["channels" if kind == "public" else "groups"].append(channel["id"])
        f["shares"].setdefault(kind, {})[channel["id"]] = [
            {"ts": message["ts"], "channel_name": channel.get("name")}
        ]
    message["files"] = copy.deepcopy(files)


@api("files.completeUploadExternal")
def files_complete_upload_external(req: ApiRequest) -> dict:
    """Finish uploads: turn pending files into file objects and share them when channel_id is given."""
    entries = req.json("files")
    if not isinstance(entries, list) or not entries:
        raise SlackError("invalid_arguments")
    channel = req.state.writable_channel(req.ws, req.get("channel_id")) if req.get("channel_id") else None
    files = []
    for entry in entries:
        file_id = entry.get("id", "") if isinstance(entry, dict) else ""
        pending = req.ws.uploads.get(file_id)
        if pending is None or file_id not in req.ws.file_data or file_id in req.ws.files:
            raise SlackError("invalid_arguments")
        files.append(file_object(req, pending, entry.get("title")))
    for f in files:
        req.ws.files[f["id"]] = f
    if channel is not None:
        share_files(req, channel, files)
    return {"ok": True, "files": files}
