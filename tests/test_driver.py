"""The Slack driver: payload shapes, encodings and signing, checked by a tiny stdlib receiver."""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import pytest
from slack_sdk.signature import SignatureVerifier

from bot.devkit.driver import SlackDriver
from bot.devkit.emulator import SlackEmulator

SECRET = "driver-test-signing-secret"


@dataclass
class Received:
    """One request the receiver got."""

    headers: dict[str, str]
    body: bytes
    valid: bool

    def json(self) -> dict:
        """Return the body as JSON."""
        return json.loads(self.body)

    def form(self) -> dict[str, str]:
        """Return the body as form fields (single values)."""
        return {k: v[0] for k, v in parse_qs(self.body.decode(), keep_blank_values=True).items()}


@dataclass
class Receiver:
    """A stand-in for the bot's /slack/events: verifies signatures and records requests."""

    url: str
    requests: list[Received] = field(default_factory=list)

    @property
    def last(self) -> Received:
        """Return the latest request."""
        return self.requests[-1]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """Serve a signature-checking receiver on a free port."""
    verifier = SignatureVerifier(SECRET)
    record: list[Received] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = {k.lower(): v for k, v in self.headers.items()}
            valid = verifier.is_valid_request(body, headers)
            record.append(Received(headers, body, valid))
            answer = json.dumps({"ok": valid}).encode()
            self.send_response(200 if valid else 401)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield Receiver(f"http://127.0.0.1:{server.server_address[1]}/slack/events", record)
    server.shutdown()
    server.server_close()


@pytest.fixture
def emu() -> Iterator[SlackEmulator]:
    """A fresh emulator."""
    with SlackEmulator() as emulator:
        yield emulator


@pytest.fixture
def driver(receiver: Receiver, emu: SlackEmulator) -> SlackDriver:
    """A driver attached to the emulator, sending to the receiver."""
    return SlackDriver(events_url=receiver.url, signing_secret=SECRET, emulator=emu)


@pytest.fixture
def seeded(emu: SlackEmulator) -> dict:
    """A channel with a message by alice, plus bob."""
    alice = emu.add_user("alice")
    bob = emu.add_user("bob")
    channel = emu.add_channel("support", members=[alice["id"], bob["id"]])
    message = emu.post_message(channel["id"], alice["id"], "Please add dark mode")
    return {"alice": alice["id"], "bob": bob["id"], "channel": channel["id"], "message": message}


# ---- signing --------------------------------------------------------------------


def test_signed_event_is_valid_and_json_encoded(driver: SlackDriver, receiver: Receiver, seeded) -> None:
    event = driver.reaction_added_event(
        user=seeded["bob"], reaction="bulb", channel=seeded["channel"], ts="1.2"
    )
    payload = driver.event_callback(event)
    response = driver.send_event(payload)
    assert response.status == 200 and response.json() == {"ok": True}
    got = receiver.last
    assert got.valid and got.headers["content-type"] == "application/json"
    assert got.json() == payload
    assert abs(int(got.headers["x-slack-request-timestamp"]) - time.time()) < 5
    assert got.headers["x-slack-signature"].startswith("v0=")
    assert "x-slack-retry-num" not in got.headers


def test_unsigned_request_has_no_signature_headers(driver: SlackDriver, receiver: Receiver) -> None:
    response = driver.send_raw('{"type": "event_callback"}', content_type="application/json", signed=False)
    assert response.status == 401 and response.json() == {"ok": False}
    assert "x-slack-signature" not in receiver.last.headers
    assert "x-slack-request-timestamp" not in receiver.last.headers


def test_tampered_body_fails_verification(driver: SlackDriver, receiver: Receiver) -> None:
    body = json.dumps({"type": "event_callback", "event": {"type": "app_mention"}})
    assert driver.send_raw(body, content_type="application/json", tamper_after_signing=True).status == 401
    assert receiver.last.body != body.encode() and json.loads(receiver.last.body)["type"] == "event_callback"
    assert driver.send_raw(body, content_type="application/json").status == 200


def test_stale_timestamp_and_wrong_signature_fail(driver: SlackDriver, receiver: Receiver) -> None:
    stale = int(time.time()) - 6 * 60
    assert driver.send_raw("{}", content_type="application/json", timestamp=stale).status == 401
    assert receiver.last.headers["x-slack-request-timestamp"] == str(stale)
    wrong = "v0=" + "0" * 64
    assert driver.send_raw("{}", content_type="application/json", signature=wrong).status == 401
    assert receiver.last.headers["x-slack-signature"] == wrong
    other = SlackDriver(events_url=receiver.url, signing_secret="not-the-secret")
    assert other.send_raw("{}", content_type="application/json").status == 401


def test_retry_headers_and_resend_keeps_event_id(driver: SlackDriver, receiver: Receiver, seeded) -> None:
    payload = driver.event_callback(
        driver.message_event(user=seeded["alice"], text="hello", channel=seeded["channel"])
    )
    driver.send_event(payload)
    driver.send_event(payload, retry_num=1)
    driver.send_event(payload, retry_num=2, retry_reason="http_error")
    first, second, third = receiver.requests
    assert (
        first.json()["event_id"]
        == second.json()["event_id"]
        == third.json()["event_id"]
        == payload["event_id"]
    )
    assert (second.headers["x-slack-retry-num"], second.headers["x-slack-retry-reason"]) == (
        "1",
        "http_timeout",
    )
    assert (third.headers["x-slack-retry-num"], third.headers["x-slack-retry-reason"]) == ("2", "http_error")
    assert all(r.valid for r in receiver.requests) and driver.last_payload is payload


def test_event_ids_are_unique_and_slack_shaped(driver: SlackDriver) -> None:
    ids = {driver.event_callback({"type": "app_mention"})["event_id"] for _ in range(200)}
    assert len(ids) == 200 and all(re.fullmatch(r"Ev[A-Z0-9]{10}", i) for i in ids)
    assert driver.event_callback({"type": "x"}, event_id="Ev123", event_time=42)["event_id"] == "Ev123"


# ---- payload shapes ---------------------------------------------------------------


def test_event_callback_envelope(driver: SlackDriver, seeded) -> None:
    event = driver.reaction_added_event(
        user=seeded["bob"], reaction="bulb", channel=seeded["channel"], ts=seeded["message"]["ts"]
    )
    payload = driver.event_callback(event, event_time=1700000000)
    assert payload["type"] == "event_callback" and payload["event"] is event
    assert (payload["team_id"], payload["api_app_id"], payload["event_time"]) == (
        "T0PRODOPS",
        "A0PRODOPS",
        1700000000,
    )
    assert payload["authorizations"] == [
        {
            "enterprise_id": None,
            "team_id": "T0PRODOPS",
            "user_id": "U0BOT",
            "is_bot": True,
            "is_enterprise_install": False,
        }
    ]
    assert payload["is_ext_shared_channel"] is False and payload["event_context"].startswith("4-")
    assert event["item"] == {"type": "message", "channel": seeded["channel"], "ts": seeded["message"]["ts"]}
    assert event["item_user"] == seeded["alice"] and event["event_ts"]


def test_react_seeds_the_emulator_and_sends(
    driver: SlackDriver, receiver: Receiver, emu: SlackEmulator, seeded
):
    response = driver.react(user="bob", channel="support", ts=seeded["message"]["ts"], retry_num=1)
    assert response.status == 200
    event = receiver.last.json()["event"]
    assert (event["user"], event["reaction"], event["item"]["channel"]) == (
        seeded["bob"],
        "bulb",
        seeded["channel"],
    )
    assert receiver.last.headers["x-slack-retry-num"] == "1"
    assert emu.message(seeded["channel"], seeded["message"]["ts"])["reactions"] == [
        {"name": "bulb", "users": [seeded["bob"]], "count": 1}
    ]


def test_message_event_and_say(driver: SlackDriver, receiver: Receiver, emu: SlackEmulator, seeded) -> None:
    reply = driver.message_event(
        user=seeded["bob"], text="+1", channel=seeded["channel"], thread_ts=seeded["message"]["ts"]
    )
    assert (
        reply["type"] == "message" and reply["ts"] == reply["event_ts"] and reply["channel_type"] == "channel"
    )
    assert reply["thread_ts"] == seeded["message"]["ts"] and reply["parent_user_id"] == seeded["alice"]
    assert reply["blocks"][0]["type"] == "rich_text" and reply["client_msg_id"]
    bot = driver.message_event(user="U0OTHER", text="beep", channel=seeded["channel"], subtype="bot_message")
    assert bot["subtype"] == "bot_message" and "client_msg_id" not in bot
    assert driver.say(user="alice", channel="support", text="Also SSO").status == 200
    sent = receiver.last.json()["event"]
    assert emu.messages(seeded["channel"])[-1]["ts"] == sent["ts"] and sent["text"] == "Also SSO"


def test_slash_command_is_form_encoded(
    driver: SlackDriver, receiver: Receiver, emu: SlackEmulator, seeded
) -> None:
    response = driver.command(
        "/feedback", "Needs SAML & SCIM", user=seeded["alice"], channel=seeded["channel"]
    )
    assert response.status == 200
    got = receiver.last
    assert got.valid and got.headers["content-type"] == "application/x-www-form-urlencoded"
    fields = got.form()
    assert (fields["command"], fields["text"]) == ("/feedback", "Needs SAML & SCIM")
    assert (fields["channel_id"], fields["channel_name"]) == (seeded["channel"], "support")
    assert (fields["user_id"], fields["user_name"]) == (seeded["alice"], "alice")
    assert (fields["team_id"], fields["team_domain"], fields["api_app_id"]) == (
        "T0PRODOPS",
        "acme",
        "A0PRODOPS",
    )
    assert fields["is_enterprise_install"] == "false" and re.fullmatch(
        r"\d+\.\d+\.[0-9a-f]{32}", fields["trigger_id"]
    )
    assert fields["response_url"].startswith(emu.root_url + "/response/")
    body = json.dumps({"response_type": "ephemeral", "text": "Saved"}).encode()
    urllib.request.urlopen(
        urllib.request.Request(fields["response_url"], data=body, method="POST"), timeout=5
    )
    assert emu.response_url_posts(SlackDriver.response_key(fields)) == [
        {"response_type": "ephemeral", "text": "Saved"}
    ]


def test_detached_driver_builds_hooks_response_url(receiver: Receiver) -> None:
    driver = SlackDriver(events_url=receiver.url, signing_secret=SECRET, team_id="T0XYZ")
    fields = driver.slash_command(command="/feedback", text="x", user="U1", channel="C1", trigger_id="1.2.3")
    assert fields["response_url"].startswith("https://hooks.slack.com/commands/T0XYZ/")
    assert (fields["trigger_id"], fields["channel_name"], fields["team_id"]) == ("1.2.3", "C1", "T0XYZ")


def test_block_actions_are_sent_as_payload_field(driver: SlackDriver, receiver: Receiver, seeded) -> None:
    message = seeded["message"]
    action = {"type": "button", "action_id": "triage", "block_id": "b1", "value": "42"}
    payload = driver.block_actions(
        user=seeded["bob"], actions=[action], channel=seeded["channel"], message=message
    )
    assert driver.send_interaction(payload).status == 200
    fields = receiver.last.form()
    assert list(fields) == ["payload"] and receiver.last.valid
    sent = json.loads(fields["payload"])
    assert sent == payload and sent["type"] == "block_actions"
    assert sent["container"] == {
        "type": "message",
        "message_ts": message["ts"],
        "is_ephemeral": False,
        "channel_id": seeded["channel"],
    }
    assert sent["actions"][0]["value"] == "42" and sent["actions"][0]["action_ts"]
    assert sent["user"]["username"] == "bob" and sent["channel"] == {
        "id": seeded["channel"],
        "name": "support",
    }
    in_view = driver.block_actions(user=seeded["bob"], actions=[action], view={"id": "V1", "type": "modal"})
    assert in_view["container"] == {"type": "view", "view_id": "V1"} and "response_url" not in in_view


def test_view_submission_and_message_shortcut(driver: SlackDriver, receiver: Receiver, seeded) -> None:
    values = {"title": {"title_input": {"type": "plain_text_input", "value": "Dark mode"}}}
    view = {"type": "modal", "callback_id": "new_item", "blocks": [], "private_metadata": "C1"}
    payload = driver.view_submission(user=seeded["alice"], view=view, values=values)
    assert payload["view"]["state"] == {"values": values} and payload["view"]["private_metadata"] == "C1"
    assert payload["view"]["id"].startswith("V") and "state" not in view
    driver.send_interaction(payload)
    assert json.loads(receiver.last.form()["payload"])["type"] == "view_submission"
    shortcut = driver.message_shortcut(
        callback_id="save_feedback", user=seeded["bob"], channel=seeded["channel"], message=seeded["message"]
    )
    assert (shortcut["type"], shortcut["callback_id"], shortcut["message_ts"]) == (
        "message_action",
        "save_feedback",
        seeded["message"]["ts"],
    )
    assert shortcut["trigger_id"] != payload["trigger_id"] and shortcut["team"] == {
        "id": "T0PRODOPS",
        "domain": "acme",
    }


def test_emulator_trigger_ids_from_driver_open_modals(
    driver: SlackDriver, emu: SlackEmulator, seeded
) -> None:
    from slack_sdk import WebClient
    from slack_sdk.errors import SlackApiError

    fields = driver.slash_command(
        command="/feedback", text="", user=seeded["alice"], channel=seeded["channel"]
    )
    client = WebClient(token=emu.bot_token, base_url=emu.url)
    modal = {"type": "modal", "title": {"type": "plain_text", "text": "New"}, "blocks": []}
    assert client.views_open(trigger_id=fields["trigger_id"], view=modal)["ok"] is True
    with pytest.raises(SlackApiError) as info:
        client.views_open(trigger_id=fields["trigger_id"], view=modal)
    assert info.value.response["error"] == "exchanged_trigger_id"


def test_error_status_is_returned_not_raised(receiver: Receiver) -> None:
    driver = SlackDriver(
        events_url=receiver.url.replace("/slack/events", "/elsewhere"), signing_secret="wrong"
    )
    response = driver.send_form({"command": "/x"})
    assert response.status == 401 and response.headers.get("Content-Type") == "application/json"
