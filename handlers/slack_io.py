"""Reads from the Slack Web API that several handlers share. Typed results, no business rules."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

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
    )


def conversation_visibility(client: WebClient, channel_id: str) -> Visibility:
    """Public channel, private channel, or DM / group DM; private when Slack will not say."""
    if channel_id.startswith("D"):
        return Visibility.dm
    try:
        info = client.conversations_info(channel=channel_id)["channel"]
    except SlackApiError as exc:
        # Cannot tell: treat as private, the safe side of the privacy rule (DESIGN.md, Privacy).
        logger.warning(
            "conversations.info failed for %s (%s); treating it as private",
            channel_id,
            exc.response.get("error"),
        )
        return Visibility.private
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
