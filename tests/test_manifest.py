"""manifest.yml declares exactly the commands, shortcuts, events and scopes the code uses."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import yaml

import handlers

ROOT = Path(__file__).resolve().parent.parent

# Bot scopes each Web API method needs (https://api.slack.com/methods). A method missing here fails the test:
# add it with its scopes, and add the scopes to manifest.yml.
METHOD_SCOPES: dict[str, set[str]] = {
    "auth_test": set(),
    "oauth_v2_access": set(),  # Bolt's OAuth flow and token refresh (client id + secret, no scope)
    "chat_postMessage": {"chat:write"},
    "chat_postEphemeral": {"chat:write"},
    "chat_update": {"chat:write"},
    "chat_getPermalink": set(),
    "conversations_history": {"channels:history", "groups:history", "im:history", "mpim:history"},
    "conversations_replies": {"channels:history", "groups:history", "im:history", "mpim:history"},
    "conversations_info": {"channels:read", "groups:read", "im:read", "mpim:read"},
    "conversations_list": {"channels:read", "groups:read"},
    "conversations_members": {"channels:read", "groups:read", "im:read", "mpim:read"},
    "reactions_add": {"reactions:write"},
    "users_info": {"users:read"},
    "users_list": {"users:read"},
    "users_lookupByEmail": {"users:read.email"},
    "views_open": set(),
    "files_upload_v2": {"files:write"},
    "views_update": set(),
    "views_publish": set(),
}
EVENT_SCOPES = {
    "app_home_opened": set(),
    "app_uninstalled": set(),
    "tokens_revoked": set(),
    "reaction_added": {"reactions:read"},
    "message.channels": {"channels:history"},
    "message.groups": {"groups:history"},
}
# A listener for "message" receives the message.* events the manifest subscribes to.
MESSAGE_EVENTS = {"message.channels", "message.groups", "message.im", "message.mpim"}


class RecordingApp:
    """Stands in for the Bolt app during registration and records what is registered."""

    def __init__(self) -> None:
        self.registered: dict[str, set[str]] = defaultdict(set)

    def _record(self, kind: str) -> Any:
        def register(name: Any, *args: Any, **kwargs: Any) -> Any:
            key = name.get("callback_id") if isinstance(name, dict) else name
            self.registered[kind].add(str(key))
            return lambda func: func

        return register

    def __getattr__(self, kind: str) -> Any:
        if kind in {
            "event",
            "command",
            "shortcut",
            "message_shortcut",
            "action",
            "view",
            "options",
            "message",
        }:
            return self._record(kind)
        raise AttributeError(kind)


def _manifest() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "manifest.yml").read_text())


def _registered() -> dict[str, set[str]]:
    app = RecordingApp()
    handlers.register(app)  # type: ignore[arg-type]
    return app.registered


def _methods_called() -> set[str]:
    pattern = re.compile(r"\bclient\.([a-z]+_[A-Za-z0-9_]+)\(")
    found: set[str] = set()
    for folder in ("handlers", "bot"):
        for path in (ROOT / folder).rglob("*.py"):
            if "devkit" in path.parts:
                continue
            found |= set(pattern.findall(path.read_text()))
    return found


def test_commands_match() -> None:
    declared = {c["command"] for c in _manifest()["features"].get("slash_commands", [])}
    assert declared == _registered()["command"]
    for command in _manifest()["features"]["slash_commands"]:
        assert command["should_escape"] is True
        assert command["url"].endswith("/slack/events")


def test_shortcuts_match() -> None:
    declared = {s["callback_id"] for s in _manifest()["features"].get("shortcuts", [])}
    assert declared == _registered()["shortcut"] | _registered()["message_shortcut"]


def _declared_events() -> set[str]:
    return set(_manifest()["settings"]["event_subscriptions"]["bot_events"])


def test_bot_events_match() -> None:
    declared = _declared_events()
    # app_uninstalled / tokens_revoked are bound by bot.security.oauth.register_revocation_listeners.
    registered = _registered()["event"] | {"app_uninstalled", "tokens_revoked"}
    as_listened = {"message" if e in MESSAGE_EVENTS else e for e in declared}
    assert as_listened == registered
    if "message" in registered:
        assert declared & MESSAGE_EVENTS, "a message listener needs message.* events in the manifest"


def test_scopes_are_exactly_what_the_code_needs() -> None:
    methods = _methods_called()
    unknown = methods - set(METHOD_SCOPES)
    assert not unknown, f"add these Web API methods to METHOD_SCOPES: {sorted(unknown)}"
    needed: set[str] = set()
    for method in methods:
        needed |= METHOD_SCOPES[method]
    for event in _declared_events():
        needed |= EVENT_SCOPES[event]
    if _registered()["command"]:
        needed.add("commands")
    assert set(_manifest()["oauth_config"]["scopes"]["bot"]) == needed


def test_app_home_is_enabled() -> None:
    app_home = _manifest()["features"]["app_home"]
    assert app_home["home_tab_enabled"] is True and app_home["messages_tab_enabled"] is True
    assert "app_home_opened" in _registered()["event"]


def test_request_urls_are_the_one_events_endpoint() -> None:
    settings = _manifest()["settings"]
    assert settings["event_subscriptions"]["request_url"].endswith("/slack/events")
    assert settings["interactivity"]["request_url"].endswith("/slack/events")


def test_usage_hints_name_every_subcommand() -> None:
    hints = {c["command"]: c["usage_hint"] for c in _manifest()["features"]["slash_commands"]}
    for command, words in {
        "/feedback": ("list", "themes", "trends", "ship", "help"),
        "/prodops": (
            "status",
            "config",
            "retention",
            "watch",
            "unwatch",
            "admins",
            "types",
            "duplicates",
            "account",
        ),
    }.items():
        missing = [
            word
            for word in words
            if word not in hints[command].split(" ") and f"[{word}" not in hints[command]
        ]
        assert missing == [], f"{command} usage hint misses {missing}"
