"""Reads from the Slack Web API that several handlers share. Typed results, no business rules."""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot import admins
from storage.db import Database
from storage.models import Visibility

logger = logging.getLogger("prodops.slack_io")


@dataclass(frozen=True)
class SlackMessage:
    """The parts of a Slack message that ProdOps keeps."""

    channel_id: str
    ts: str
    thread_ts: str | None
    user_id: str | None
    text: str
    reply_count: int = 0


def message_text(message: dict[str, Any]) -> str:
    """A message's text, falling back to attachment or file names when it has none."""
    text = (message.get("text") or "").strip()
    if text:
        return text
    parts = [a.get("fallback") or a.get("text") or "" for a in message.get("attachments") or []]
    parts += [f"[file: {f.get('name') or f.get('title') or 'file'}]" for f in message.get("files") or []]
    return "\n".join(p for p in parts if p) or "(message without text)"


def fetch_message(client: WebClient, *, channel_id: str, ts: str) -> SlackMessage | None:
    """Fetches one message, top-level or thread reply; None when it is gone."""
    history = client.conversations_history(channel=channel_id, latest=ts, inclusive=True, limit=1)
    candidates = history.get("messages") or []
    found = next((m for m in candidates if m.get("ts") == ts), None)
    if found is None:
        # Not a top-level message: a reply, which only conversations.replies returns. The thread's parent
        # may come first whatever the window, so ask for two and pick the one with our ts.
        try:
            replies = client.conversations_replies(
                channel=channel_id, ts=ts, oldest=ts, inclusive=True, limit=2
            )
        except SlackApiError as exc:
            if exc.response.get("error") in ("thread_not_found", "message_not_found"):
                return None
            raise
        found = next((m for m in replies.get("messages") or [] if m.get("ts") == ts), None)
    if found is None:
        return None
    thread_ts = found.get("thread_ts")
    return SlackMessage(
        channel_id=channel_id,
        ts=ts,
        thread_ts=thread_ts if thread_ts and thread_ts != ts else None,
        user_id=found.get("user"),
        text=message_text(found),
        reply_count=int(found.get("reply_count") or 0),
    )


def thread_replies(
    client: WebClient, *, channel_id: str, thread_ts: str, limit: int = 200
) -> list[dict[str, Any]]:
    """Human replies already in a thread (bots and system messages left out), oldest first."""
    try:
        messages = (
            client.conversations_replies(channel=channel_id, ts=thread_ts, limit=limit).get("messages") or []
        )
    except SlackApiError as exc:
        logger.warning("could not read thread %s/%s: %s", channel_id, thread_ts, exc.response.get("error"))
        return []
    return [
        m
        for m in messages
        if m.get("ts") != thread_ts and not m.get("bot_id") and not m.get("subtype") and m.get("user")
    ]


VISIBILITY_TTL_SECONDS = 300.0
_visibility_cache: dict[tuple[str, str], tuple[float, Visibility]] = {}


def conversation_visibility(client: WebClient, channel_id: str) -> Visibility:
    """Public channel, private channel, or DM / group DM; private when Slack will not say.

    Answers are cached per channel for a few minutes: a channel rarely changes kind, and a burst of
    captures in one channel then costs one `conversations.info`.
    """
    if channel_id.startswith("D"):
        return Visibility.dm
    key = (str(client.token), channel_id)
    cached = _visibility_cache.get(key)
    if cached is not None and time.monotonic() - cached[0] < VISIBILITY_TTL_SECONDS:
        return cached[1]
    visibility = _ask_visibility(client, channel_id)
    if visibility is None:
        return Visibility.private  # not cached: the next capture asks again
    _visibility_cache[key] = (time.monotonic(), visibility)
    return visibility


def _ask_visibility(client: WebClient, channel_id: str) -> Visibility | None:
    """What Slack says, or None when it would not say."""
    try:
        info = client.conversations_info(channel=channel_id)["channel"]
    except SlackApiError as exc:
        # Cannot tell: treat as private, the safe side of the privacy rule (README, How it works: Privacy).
        logger.warning(
            "conversations.info failed for %s (%s); treating it as private",
            channel_id,
            exc.response.get("error"),
        )
        return None
    if info.get("is_im") or info.get("is_mpim"):
        return Visibility.dm
    return Visibility.private if info.get("is_private") else Visibility.public


def permalink(client: WebClient, *, channel_id: str, ts: str) -> str | None:
    """The message's permalink, or None when Slack cannot give one."""
    try:
        return client.chat_getPermalink(channel=channel_id, message_ts=ts).get("permalink")
    except SlackApiError as exc:
        logger.warning("no permalink for %s/%s: %s", channel_id, ts, exc.response.get("error"))
        return None


CHANNEL_MENTION = re.compile(r"^<#([CGD][A-Z0-9]+)(?:\|[^>]*)?>$")
USER_MENTION = re.compile(r"^<@([UW][A-Z0-9]+)(?:\|[^>]*)?>$")


def resolve_channel(client: WebClient, ref: str) -> str | None:
    """`<#C123|name>`, `<#C123>`, `C123`, `#name` or `name` → channel id (None when no such channel)."""
    ref = ref.strip()
    if match := CHANNEL_MENTION.match(ref):
        return match.group(1)
    if re.fullmatch(r"[CG][A-Z0-9]{6,}", ref):
        return ref
    name = ref.lstrip("#").lower()
    for page in client.conversations_list(
        types="public_channel,private_channel", exclude_archived=True, limit=200
    ):
        for channel in page.get("channels", []):
            if channel.get("name", "").lower() == name:
                return str(channel["id"])
    return None


def resolve_user(client: WebClient, ref: str) -> str | None:
    """`<@U123|name>`, `<@U123>`, `U123`, `@name` or `name` → user id (None when nobody has that name)."""
    ref = ref.strip()
    if match := USER_MENTION.match(ref):
        return match.group(1)
    if re.fullmatch(r"[UW][A-Z0-9]{6,}", ref):
        return ref
    name = ref.lstrip("@").lower()
    for page in client.users_list(limit=200):
        for user in page.get("members", []):
            profile = user.get("profile") or {}
            names = {user.get("name", ""), profile.get("display_name", ""), profile.get("real_name", "")}
            if name in {n.lower() for n in names if n}:
                return str(user["id"])
    return None


def is_slack_owner_or_admin(client: WebClient, user_id: str) -> bool:
    """What Slack says: workspace owner or admin (`users.info`)."""
    user = client.users_info(user=user_id)["user"]
    return bool(user.get("is_owner") or user.get("is_admin") or user.get("is_primary_owner"))


def is_prodops_admin(client: WebClient, db: Database, team_id: str, user_id: str) -> bool:
    """A ProdOps admin of the workspace (`prodops admins add`) or a Slack owner or admin."""
    with db.read() as s:
        if admins.is_admin(db_session=s, team_id=team_id, user_id=user_id, slack_owner_or_admin=False):
            return True
    return is_slack_owner_or_admin(client, user_id)


def bot_is_member(client: WebClient, channel_id: str) -> bool | None:
    """Whether the bot is in the channel; None when the channel cannot be seen at all."""
    try:
        info = client.conversations_info(channel=channel_id)["channel"]
    except SlackApiError:
        return None
    return bool(info.get("is_member") or info.get("is_im"))


def channels_user_is_in(client: WebClient, user_id: str, channel_ids: list[str], limit: int = 50) -> set[str]:
    """Which of these private channels / DMs the user is a member of (`conversations.members`)."""
    visible: set[str] = set()
    for channel_id in channel_ids[:limit]:
        try:
            for page in client.conversations_members(channel=channel_id, limit=1000):
                if user_id in page.get("members", []):
                    visible.add(channel_id)
                    break
        except SlackApiError:
            continue  # the bot cannot see it any more: then nobody sees it through the bot
    return visible
