"""Builds realistic Slack payloads and POSTs them, signed, to the bot's /slack/events endpoint."""

from __future__ import annotations

import base64
import copy
import json
import secrets
import string
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from slack_sdk.signature import SignatureVerifier

from bot.devkit.emulator import SlackEmulator

__all__ = ["Response", "SlackDriver"]

ID_ALPHABET = string.ascii_uppercase + string.digits


@dataclass
class Response:
    """The bot's HTTP answer to one delivery."""

    status: int
    headers: dict[str, str]
    body: str
    # The emulator key of the delivery's response_url (commands, interactions): pass it to
    # emulator.response_url_posts(key) for the answers to this delivery only.
    response_key: str | None = None

    def json(self) -> Any:
        """Return the body decoded as JSON."""
        return json.loads(self.body)


def tamper(body: bytes, content_type: str) -> bytes:
    """Return the body changed in a way that keeps it parseable but breaks its signature."""
    return body + (b"\n" if content_type.startswith("application/json") else b"&tampered=1")


def rich_text(text: str) -> list[dict]:
    """Return the rich_text block Slack attaches to a plain user message."""
    section = {"type": "rich_text_section", "elements": [{"type": "text", "text": text}]}
    return [{"type": "rich_text", "block_id": secrets.token_hex(3), "elements": [section]}]


class SlackDriver:
    """Plays the part of Slack towards the bot: builds payloads and delivers them signed."""

    def __init__(
        self,
        *,
        events_url: str,
        signing_secret: str,
        emulator: SlackEmulator | None = None,
        team_id: str | None = None,
        api_app_id: str = "A0PRODOPS",
        timeout: float = 10.0,
        verification_token: str = "legacy-verification-token",
    ) -> None:
        self.events_url = events_url
        self.emulator = emulator
        self.api_app_id = api_app_id
        self.timeout = timeout
        self.verification_token = verification_token
        self._verifier = SignatureVerifier(signing_secret)
        identity = self._identity(team_id)
        self.team_id: str = team_id or identity.get("team_id", "T0PRODOPS")
        self.team_domain: str = identity.get("team_domain", "acme")
        self.bot_user_id: str = identity.get("bot_user_id", "U0BOT")
        self.last_payload: dict | None = None
        self._ids: set[str] = set()
        self._lock = threading.Lock()
        self._seq = 0

    # ---- lookups -------------------------------------------------------------

    def _identity(self, team_id: str | None) -> dict:
        """Return the emulator's identity for this team ({} when unknown or detached)."""
        if self.emulator is None:
            return {}
        try:
            return self.emulator.workspace(team_id)
        except KeyError:
            return {}

    def _emu_team(self) -> str | None:
        """Return the team id to use for emulator lookups, or None when the emulator lacks it."""
        return self.team_id if self._identity(self.team_id) else None

    def _user(self, ref: str) -> dict:
        """Return {"id", "name"} for a user id or name, via the emulator when possible."""
        found = self.emulator.user(ref, team_id=self._emu_team()) if self._emu_team() else None
        return {"id": found["id"], "name": found["name"]} if found else {"id": ref, "name": ref}

    def _channel(self, ref: str) -> dict:
        """Return {"id", "name"} for a channel id or name, via the emulator when possible."""
        found = self.emulator.channel(ref, team_id=self._emu_team()) if self._emu_team() else None
        if not found:
            return {"id": ref, "name": ref}
        return {"id": found["id"], "name": "directmessage" if found.get("is_im") else found["name"]}

    def _message_author(self, channel: str, ts: str) -> str | None:
        """Return the user who wrote a stored message, if the emulator has it."""
        if not self._emu_team():
            return None
        message = self.emulator.message(channel, ts, team_id=self._emu_team())
        return message.get("user") if message else None

    # ---- ids -----------------------------------------------------------------

    def _unique(self, make: Any) -> str:
        """Return a value from make() never returned before by this driver."""
        with self._lock:
            while (value := make()) in self._ids:
                pass
            self._ids.add(value)
            return value

    def new_event_id(self) -> str:
        """Return a unique event id like "Ev08MFMKH6A1"."""
        return self._unique(lambda: "Ev" + "".join(secrets.choice(ID_ALPHABET) for _ in range(10)))

    def new_trigger_id(self) -> str:
        """Return a trigger id (issued by the emulator when attached, so it can expire)."""
        if self.emulator is not None:
            return self.emulator.new_trigger_id()
        return self._unique(
            lambda: (
                f"{secrets.randbelow(10**10):010d}.{secrets.randbelow(10**10):010d}.{secrets.token_hex(16)}"
            )
        )

    def new_ts(self) -> str:
        """Return a fresh message ts (from the emulator's clock when attached)."""
        if self.emulator is not None:
            return self.emulator.next_ts()
        with self._lock:
            self._seq += 1
            return f"{int(time.time())}.{self._seq % 1_000_000:06d}"

    def new_response_url(self, kind: str) -> str:
        """Return a response_url (recorded by the emulator when attached)."""
        key = f"{kind}-{self._unique(lambda: secrets.token_hex(6))}"
        if self.emulator is not None:
            return self.emulator.new_response_url(key)
        return f"https://hooks.slack.com/{kind}/{self.team_id}/{secrets.randbelow(10**12)}/{key}"

    @staticmethod
    def response_key(payload: dict) -> str:
        """Return the emulator key of a payload's response_url (for emulator.response_url_posts)."""
        return str(payload["response_url"]).rsplit("/", 1)[-1]

    # ---- payload builders ------------------------------------------------------

    def event_callback(
        self, event: dict, *, event_id: str | None = None, event_time: int | None = None
    ) -> dict:
        """Return an Events API envelope around an inner event."""
        context = {"et": event.get("type"), "tid": self.team_id, "aid": self.api_app_id}
        if event.get("channel") or event.get("item", {}).get("channel"):
            context["cid"] = event.get("channel") or event["item"]["channel"]
        authorization = {
            "enterprise_id": None,
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "is_bot": True,
            "is_enterprise_install": False,
        }
        return {
            "token": self.verification_token,
            "team_id": self.team_id,
            "api_app_id": self.api_app_id,
            "event": event,
            "type": "event_callback",
            "event_id": event_id or self.new_event_id(),
            "event_time": event_time if event_time is not None else int(time.time()),
            "authorizations": [authorization],
            "is_ext_shared_channel": False,
            "event_context": "4-"
            + base64.urlsafe_b64encode(json.dumps(context).encode()).decode().rstrip("="),
        }

    def reaction_added_event(
        self, *, user: str, reaction: str, channel: str, ts: str, item_user: str | None = None
    ) -> dict:
        """Return a reaction_added event on a message."""
        channel_id = self._channel(channel)["id"]
        event: dict[str, Any] = {
            "type": "reaction_added",
            "user": self._user(user)["id"],
            "reaction": reaction,
        }
        item_user = item_user or self._message_author(channel_id, ts)
        if item_user:
            event["item_user"] = item_user
        event["item"] = {"type": "message", "channel": channel_id, "ts": ts}
        event["event_ts"] = self.new_ts()
        return event

    def message_event(
        self,
        *,
        user: str,
        text: str,
        channel: str,
        ts: str | None = None,
        thread_ts: str | None = None,
        subtype: str | None = None,
        channel_type: str = "channel",
    ) -> dict:
        """Return a message event as delivered for a user's post."""
        ts = ts or self.new_ts()
        channel_id = self._channel(channel)["id"]
        event: dict[str, Any] = {"type": "message", "user": self._user(user)["id"], "text": text, "ts": ts}
        if subtype:
            event["subtype"] = subtype
        else:
            event.update(client_msg_id=str(uuid.uuid4()), blocks=rich_text(text))
        event.update(team=self.team_id, channel=channel_id, event_ts=ts, channel_type=channel_type)
        if thread_ts:
            event["thread_ts"] = thread_ts
            parent_user = self._message_author(channel_id, thread_ts)
            if parent_user:
                event["parent_user_id"] = parent_user
        return event

    def _team(self) -> dict:
        """Return the team object used in interaction payloads."""
        return {"id": self.team_id, "domain": self.team_domain}

    def _interaction_user(self, user: str) -> dict:
        """Return the user object used in interaction payloads."""
        found = self._user(user)
        return {"id": found["id"], "username": found["name"], "name": found["name"], "team_id": self.team_id}

    def slash_command(
        self, *, command: str, text: str, user: str, channel: str, trigger_id: str | None = None
    ) -> dict:
        """Return the form fields Slack POSTs for a slash command."""
        who, where = self._user(user), self._channel(channel)
        return {
            "token": self.verification_token,
            "team_id": self.team_id,
            "team_domain": self.team_domain,
            "channel_id": where["id"],
            "channel_name": where["name"],
            "user_id": who["id"],
            "user_name": who["name"],
            "command": command,
            "text": text,
            "api_app_id": self.api_app_id,
            "is_enterprise_install": "false",
            "response_url": self.new_response_url("commands"),
            "trigger_id": trigger_id or self.new_trigger_id(),
        }

    def message_shortcut(self, *, callback_id: str, user: str, channel: str, message: dict) -> dict:
        """Return a message_action (message shortcut) payload."""
        return {
            "type": "message_action",
            "token": self.verification_token,
            "action_ts": self.new_ts(),
            "team": self._team(),
            "user": self._interaction_user(user),
            "channel": self._channel(channel),
            "is_enterprise_install": False,
            "enterprise": None,
            "callback_id": callback_id,
            "trigger_id": self.new_trigger_id(),
            "response_url": self.new_response_url("actions"),
            "message_ts": message["ts"],
            "message": message,
        }

    def block_actions(
        self,
        *,
        user: str,
        actions: list[dict],
        channel: str | None = None,
        message: dict | None = None,
        view: dict | None = None,
        container: dict | None = None,
    ) -> dict:
        """Return a block_actions payload from a message or a view."""
        action_ts = self.new_ts()
        payload: dict[str, Any] = {
            "type": "block_actions",
            "user": self._interaction_user(user),
            "api_app_id": self.api_app_id,
            "token": self.verification_token,
            "container": container or self._container(channel, message, view),
            "trigger_id": self.new_trigger_id(),
            "team": self._team(),
            "enterprise": None,
            "is_enterprise_install": False,
        }
        if channel:
            payload["channel"] = self._channel(channel)
        if message is not None:
            payload.update(
                message=message, state={"values": {}}, response_url=self.new_response_url("actions")
            )
        if view is not None:
            payload["view"] = view
        payload["actions"] = [{**a, "action_ts": a.get("action_ts", action_ts)} for a in actions]
        return payload

    def _container(self, channel: str | None, message: dict | None, view: dict | None) -> dict:
        """Return the container object for a block action."""
        if view is not None:
            return {"type": "view", "view_id": view.get("id")}
        if message is None:
            return {}
        container = {"type": "message", "message_ts": message.get("ts"), "is_ephemeral": False}
        if channel:
            container["channel_id"] = self._channel(channel)["id"]
        if message.get("thread_ts"):
            container["thread_ts"] = message["thread_ts"]
        return container

    def block_suggestion(
        self, *, user: str, action_id: str, block_id: str, value: str, view: dict | None = None
    ) -> dict:
        """Return a block_suggestion payload (an external select asking for options as the user types)."""
        return {
            "type": "block_suggestion",
            "user": self._interaction_user(user),
            "container": {"type": "view", "view_id": (view or {}).get("id", "V0")},
            "api_app_id": self.api_app_id,
            "token": self.verification_token,
            "action_id": action_id,
            "block_id": block_id,
            "value": value,
            "team": self._team(),
            "enterprise": None,
            "is_enterprise_install": False,
            "view": view or {},
        }

    def view_submission(self, *, user: str, view: dict, values: dict) -> dict:
        """Return a view_submission payload with the given state values."""
        submitted = copy.deepcopy(view)
        submitted.setdefault("id", "V" + "".join(secrets.choice(ID_ALPHABET) for _ in range(10)))
        for key, value in (("team_id", self.team_id), ("app_id", self.api_app_id), ("private_metadata", "")):
            submitted.setdefault(key, value)
        submitted.setdefault("callback_id", "")
        submitted.setdefault("hash", f"{int(time.time())}.{secrets.token_hex(4)}")
        submitted["state"] = {"values": values}
        return {
            "type": "view_submission",
            "team": self._team(),
            "user": self._interaction_user(user),
            "api_app_id": self.api_app_id,
            "token": self.verification_token,
            "trigger_id": self.new_trigger_id(),
            "view": submitted,
            "response_urls": [],
            "is_enterprise_install": False,
            "enterprise": None,
        }

    # ---- sending ---------------------------------------------------------------

    def send_event(
        self, payload: dict, *, retry_num: int | None = None, retry_reason: str = "http_timeout", **kw: Any
    ) -> Response:
        """POST an Events API payload as JSON (retry_num adds Slack's retry headers)."""
        self.last_payload = payload
        headers = dict(kw.pop("extra_headers", None) or {})
        if retry_num is not None:
            headers.update({"X-Slack-Retry-Num": str(retry_num), "X-Slack-Retry-Reason": retry_reason})
        return self.send_raw(
            json.dumps(payload), content_type="application/json", extra_headers=headers, **kw
        )

    def send_form(self, fields: dict, **kw: Any) -> Response:
        """POST form fields (as Slack does for slash commands)."""
        self.last_payload = fields
        response = self.send_raw(urlencode(fields), content_type="application/x-www-form-urlencoded", **kw)
        if fields.get("response_url"):
            response.response_key = self.response_key(fields)
        return response

    def send_interaction(self, payload: dict, **kw: Any) -> Response:
        """POST an interaction payload as the form field payload=<json>."""
        self.last_payload = payload
        body = urlencode({"payload": json.dumps(payload)})
        response = self.send_raw(body, content_type="application/x-www-form-urlencoded", **kw)
        if payload.get("response_url"):
            response.response_key = self.response_key(payload)
        return response

    def send_raw(
        self,
        body: str | bytes,
        *,
        content_type: str,
        signed: bool = True,
        timestamp: int | None = None,
        signature: str | None = None,
        tamper_after_signing: bool = False,
        extra_headers: dict[str, str] | None = None,
    ) -> Response:
        """POST a body to the events URL, signed unless signed=False."""
        data = body.encode() if isinstance(body, str) else body
        headers = {"Content-Type": content_type, "User-Agent": "Slackbot 1.0 (+https://api.slack.com/robots)"}
        if signed:
            stamp = str(timestamp if timestamp is not None else int(time.time()))
            headers["X-Slack-Request-Timestamp"] = stamp
            headers["X-Slack-Signature"] = signature or str(
                self._verifier.generate_signature(timestamp=stamp, body=data)
            )
        if tamper_after_signing:
            data = tamper(data, content_type)
        headers.update(extra_headers or {})
        return self._post(data, headers)

    def _post(self, data: bytes, headers: dict[str, str]) -> Response:
        """POST and return the answer, treating HTTP error statuses as answers."""
        request = urllib.request.Request(self.events_url, data=data, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:
                return Response(
                    answer.status, dict(answer.headers.items()), answer.read().decode("utf-8", "replace")
                )
        except urllib.error.HTTPError as error:
            return Response(error.code, dict(error.headers.items()), error.read().decode("utf-8", "replace"))

    # ---- convenience -------------------------------------------------------------

    def react(
        self, *, user: str, channel: str, ts: str, reaction: str = "bulb", retry_num: int | None = None
    ) -> Response:
        """Record the reaction in the emulator (when attached) and deliver reaction_added."""
        if self._emu_team():
            try:
                self.emulator.add_reaction(channel, ts, user, reaction, team_id=self._emu_team())
            except ValueError as exc:
                if str(exc) != "already_reacted":
                    raise
        event = self.reaction_added_event(user=user, reaction=reaction, channel=channel, ts=ts)
        return self.send_event(self.event_callback(event), retry_num=retry_num)

    def say(
        self,
        *,
        user: str,
        channel: str,
        text: str,
        thread_ts: str | None = None,
        channel_type: str = "channel",
    ) -> Response:
        """Store a user's message in the emulator (when attached) and deliver its message event."""
        ts = None
        if self._emu_team():
            ts = self.emulator.post_message(
                channel, user, text, thread_ts=thread_ts, team_id=self._emu_team()
            )["ts"]
        event = self.message_event(
            user=user, text=text, channel=channel, ts=ts, thread_ts=thread_ts, channel_type=channel_type
        )
        return self.send_event(self.event_callback(event))

    def command(self, command: str, text: str, *, user: str, channel: str) -> Response:
        """Deliver a slash command."""
        return self.send_form(self.slash_command(command=command, text=text, user=user, channel=channel))
