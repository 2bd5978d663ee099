"""The emulator plays Slack's side of Socket Mode for slack_sdk's own (unmodified) builtin client."""

from __future__ import annotations

import json
import os
import socket
import struct
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.socket_mode import SocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse

from bot.devkit.emulator import SlackEmulator
from bot.devkit.socket_mode import (
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    accept_key,
    encode_frame,
    read_frame,
)


def wait_until(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Poll until check() is truthy and return it, or fail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"condition not met within {timeout}s")


@pytest.fixture
def emu() -> Iterator[SlackEmulator]:
    with SlackEmulator() as emulator:
        yield emulator


class Recorder:
    """A SocketModeClient listener that records requests and acks each with ack_payload(req)."""

    def __init__(self, ack_payload: Callable[[SocketModeRequest], dict | None] = lambda req: None) -> None:
        self.requests: list[SocketModeRequest] = []
        self.raw: list[dict] = []
        self.ack_payload = ack_payload

    def on_request(self, client: SocketModeClient, req: SocketModeRequest) -> None:
        self.requests.append(req)
        client.send_socket_mode_response(
            SocketModeResponse(envelope_id=req.envelope_id, payload=self.ack_payload(req))
        )

    def on_message(self, client: SocketModeClient, message: dict, raw: str | None) -> None:
        self.raw.append(message)


@pytest.fixture
def connect(emu: SlackEmulator) -> Iterator[Callable[..., tuple[SocketModeClient, Recorder]]]:
    clients: list[SocketModeClient] = []

    def make(recorder: Recorder | None = None) -> tuple[SocketModeClient, Recorder]:
        recorder = recorder or Recorder()
        client = SocketModeClient(
            app_token=emu.app_token, web_client=WebClient(base_url=emu.url, token=emu.bot_token)
        )
        client.socket_mode_request_listeners.append(recorder.on_request)
        client.message_listeners.append(recorder.on_message)
        clients.append(client)
        client.connect()
        emu.wait_for_socket()
        return client, recorder

    yield make
    for client in clients:  # close from the server side first: the client's reader then stops at once
        client.auto_reconnect_enabled = client.default_auto_reconnect_enabled = False
    emu.close_sockets()
    for client in clients:
        client.close()


# ---- apps.connections.open ------------------------------------------------------------


def test_apps_connections_open_answers_a_one_time_ws_url_on_the_emulator(emu: SlackEmulator) -> None:
    web = WebClient(base_url=emu.url)
    url = web.apps_connections_open(app_token=emu.app_token)["url"]
    parts = urlsplit(url)
    assert parts.scheme == "ws" and f"http://{parts.netloc}" == emu.root_url
    assert parts.path == "/link" and "ticket=" in parts.query
    assert url != web.apps_connections_open(app_token=emu.app_token)["url"]
    call = emu.calls("apps.connections.open")[0]
    assert call.token == emu.app_token and call.response["ok"] is True


def test_apps_connections_open_auth_errors(emu: SlackEmulator) -> None:
    web = WebClient(base_url=emu.url)

    def error_of(fn: Callable[[], Any]) -> str:
        with pytest.raises(SlackApiError) as info:
            fn()
        return str(info.value.response["error"])

    assert error_of(lambda: web.apps_connections_open(app_token="xapp-1-unknown")) == "invalid_auth"
    assert error_of(lambda: web.apps_connections_open(app_token=emu.bot_token)) == "not_allowed_token_type"
    # ...and an app-level token cannot call bot methods.
    assert error_of(lambda: WebClient(base_url=emu.url, token=emu.app_token).auth_test()) == (
        "not_allowed_token_type"
    )
    request = urllib.request.Request(emu.url + "apps.connections.open", data=b"", method="POST")
    with urllib.request.urlopen(request, timeout=5) as answer:
        assert json.loads(answer.read()) == {"ok": False, "error": "not_authed"}


def test_injected_faults_apply_to_apps_connections_open(emu: SlackEmulator) -> None:
    emu.fail("apps.connections.open", status=200, error="ratelimited")
    with pytest.raises(SlackApiError):
        WebClient(base_url=emu.url).apps_connections_open(app_token=emu.app_token)
    assert WebClient(base_url=emu.url).apps_connections_open(app_token=emu.app_token)["ok"]


def test_other_teams_share_the_app_token_unless_given_their_own(emu: SlackEmulator) -> None:
    emu.add_team("T0OTHER", "Other", "other", "xoxb-other")
    emu.add_team("T0THIRD", "Third", "third", "xoxb-third", app_token="xapp-1-third")
    assert emu.workspace("T0OTHER")["app_token"] == emu.app_token == "xapp-1-emulator-token"
    url = WebClient(base_url=emu.url).apps_connections_open(app_token="xapp-1-third")["url"]
    assert url.startswith("ws://")


# ---- delivering envelopes to slack_sdk's builtin client -----------------------------------


def test_client_gets_hello_then_a_pushed_event_and_its_ack_is_recorded(
    emu: SlackEmulator, connect: Callable[..., tuple[SocketModeClient, Recorder]]
) -> None:
    client, recorder = connect()
    hello = wait_until(lambda: next((m for m in recorder.raw if m.get("type") == "hello"), None))
    assert hello["num_connections"] == 1 and hello["connection_info"] == {"app_id": emu.app_id}
    assert emu.socket_connections() == 1

    event = {"type": "app_mention", "user": "U1", "text": "<@U0BOT> hi", "channel": "C1", "ts": "1.000100"}
    envelope_id = emu.push_event(event, event_id="Ev0SOCKET001")
    ack = emu.wait_for_ack(envelope_id)
    assert ack["type"] == "events_api" and ack["known"] is True and ack["payload"] is None
    assert 0 <= ack["latency"] < 5
    assert [a["envelope_id"] for a in emu.socket_acks()] == [envelope_id]

    (req,) = recorder.requests
    assert req.type == "events_api" and req.envelope_id == envelope_id
    assert req.accepts_response_payload is False and req.retry_attempt == 0 and req.retry_reason == ""
    body = req.payload
    assert body["type"] == "event_callback" and body["event"] == event and body["event_id"] == "Ev0SOCKET001"
    assert body["team_id"] == emu.team_id and body["api_app_id"] == emu.app_id


def test_slash_command_envelope_and_its_ack_payload(
    emu: SlackEmulator, connect: Callable[..., tuple[SocketModeClient, Recorder]]
) -> None:
    _, recorder = connect(Recorder(lambda req: {"response_type": "ephemeral", "text": "got it"}))
    fields = {"command": "/feedback", "text": "hello", "user_id": "U1", "channel_id": "C1", "team_id": "T"}
    envelope_id = emu.push_envelope("slash_commands", fields)
    ack = emu.wait_for_ack(envelope_id)
    assert ack["type"] == "slash_commands"
    assert ack["payload"] == {"response_type": "ephemeral", "text": "got it"}
    (req,) = recorder.requests
    assert req.accepts_response_payload is True and req.payload == fields
    assert req.retry_attempt is None  # retry fields are for events_api only


def test_interactive_envelope_accepts_response_payload_only_where_slack_does(
    emu: SlackEmulator, connect: Callable[..., tuple[SocketModeClient, Recorder]]
) -> None:
    _, recorder = connect()
    emu.wait_for_ack(emu.push_envelope("interactive", {"type": "block_actions", "actions": []}))
    emu.wait_for_ack(emu.push_envelope("interactive", {"type": "view_submission", "view": {}}))
    assert [r.accepts_response_payload for r in recorder.requests] == [False, True]


def test_retry_envelope_carries_retry_fields(
    emu: SlackEmulator, connect: Callable[..., tuple[SocketModeClient, Recorder]]
) -> None:
    _, recorder = connect()
    event = {"type": "app_mention", "text": "again"}
    emu.wait_for_ack(emu.push_event(event, event_id="Ev0RETRY"))
    emu.wait_for_ack(emu.push_event(event, event_id="Ev0RETRY", retry_attempt=1, retry_reason="timeout"))
    first, second = recorder.requests
    assert first.payload["event_id"] == second.payload["event_id"] == "Ev0RETRY"
    assert first.envelope_id != second.envelope_id
    assert (second.retry_attempt, second.retry_reason) == (1, "timeout")


def test_large_payloads_round_trip_both_ways(
    emu: SlackEmulator, connect: Callable[..., tuple[SocketModeClient, Recorder]]
) -> None:
    big = "feedback " * 12_000  # ~108 KB: 64-bit frame lengths both ways
    medium = "x" * 1_000  # 16-bit frame length
    _, recorder = connect(Recorder(lambda req: {"echo": req.payload["event"]["text"]}))
    for text in (big, medium):
        ack = emu.wait_for_ack(emu.push_event({"type": "app_mention", "text": text}))
        assert ack["payload"] == {"echo": text}
    assert [r.payload["event"]["text"] for r in recorder.requests] == [big, medium]


def test_pings_from_the_client_are_answered(
    emu: SlackEmulator, connect: Callable[..., tuple[SocketModeClient, Recorder]]
) -> None:
    client, _ = connect()
    assert wait_until(lambda: client.current_session and client.current_session.last_ping_pong_time)
    assert emu.socket_history()[0]["pings"] >= 1


def test_refresh_requested_makes_the_client_reconnect(
    emu: SlackEmulator, connect: Callable[..., tuple[SocketModeClient, Recorder]]
) -> None:
    _, recorder = connect()
    assert emu.request_disconnect() == 1  # the client handles "disconnect" itself, before any listener
    emu.wait_for_socket(accepted=2)
    wait_until(lambda: emu.socket_history()[0]["closed_at"])  # the client drops the old connection
    assert len(emu.calls("apps.connections.open")) == 2

    envelope_id = emu.push_event({"type": "app_mention", "text": "after refresh"})
    ack = emu.wait_for_ack(envelope_id, timeout=15)
    assert ack["connection_id"] == emu.socket_history()[1]["id"]
    assert recorder.requests[-1].payload["event"]["text"] == "after refresh"


def test_a_close_frame_makes_the_client_reconnect(
    emu: SlackEmulator, connect: Callable[..., tuple[SocketModeClient, Recorder]]
) -> None:
    connect()
    assert emu.close_sockets(1000, "bye") == 1
    emu.wait_for_socket(accepted=2)
    old = wait_until(lambda: emu.socket_history()[0]["closed_at"] and emu.socket_history()[0])
    assert old["draining"] is True
    emu.wait_for_ack(emu.push_event({"type": "app_mention", "text": "still here"}), timeout=15)


def test_push_without_a_connection_fails(emu: SlackEmulator) -> None:
    assert emu.socket_connections() == 0
    with pytest.raises(RuntimeError, match="no open Socket Mode connection"):
        emu.push_event({"type": "app_mention"}, timeout=0.2)
    with pytest.raises(TimeoutError):
        emu.wait_for_socket(timeout=0.2)


# ---- the WebSocket itself, with a hand-rolled RFC 6455 client -----------------------------


def test_accept_key_matches_rfc_6455_example() -> None:
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


class RawClient:
    """A minimal masked-frame WebSocket client for protocol details slack_sdk does not exercise."""

    def __init__(self, url: str, key: str = "dGhlIHNhbXBsZSBub25jZQ==") -> None:
        parts = urlsplit(url)
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=5)
        self.sock.sendall(
            (
                f"GET {parts.path}?{parts.query} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        self.stream = self.sock.makefile("rb")
        self.status_line = self.stream.readline().decode()
        self.headers: dict[str, str] = {}
        while (line := self.stream.readline().decode().strip()) != "":
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()

    @property
    def status(self) -> int:
        return int(self.status_line.split()[1])

    def send(self, opcode: int, payload: bytes = b"", *, fin: bool = True) -> None:
        self.sock.sendall(encode_frame(opcode, payload, fin=fin, mask=os.urandom(4)))

    def recv(self) -> tuple[bool, int, bytes]:
        return read_frame(self.stream, require_mask=False)  # type: ignore[arg-type]

    def recv_json(self) -> dict:
        fin, opcode, data = self.recv()
        assert fin and opcode == OP_TEXT
        return json.loads(data)

    def close(self) -> None:
        self.stream.close()
        self.sock.close()


def new_url(emu: SlackEmulator) -> str:
    return str(WebClient(base_url=emu.url).apps_connections_open(app_token=emu.app_token)["url"])


def test_raw_handshake_hello_ping_fragments_and_close(emu: SlackEmulator) -> None:
    raw = RawClient(new_url(emu))
    try:
        assert raw.status == 101
        assert raw.headers["sec-websocket-accept"] == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        assert raw.recv_json()["type"] == "hello"

        raw.send(OP_PING, b"are you there")
        assert raw.recv() == (True, OP_PONG, b"are you there")

        envelope_id = emu.push_event({"type": "app_mention", "text": "fragmented ack"})
        envelope = raw.recv_json()
        assert envelope["envelope_id"] == envelope_id and envelope["type"] == "events_api"
        ack = json.dumps({"envelope_id": envelope_id, "payload": {"text": "é" * 40_000}}).encode()
        raw.send(OP_TEXT, ack[:100], fin=False)
        raw.send(OP_PING, b"between fragments")  # control frames may interleave
        raw.send(OP_CONTINUATION, ack[100:70_000], fin=False)
        raw.send(OP_CONTINUATION, ack[70_000:])
        assert raw.recv() == (True, OP_PONG, b"between fragments")
        assert emu.wait_for_ack(envelope_id)["payload"] == {"text": "é" * 40_000}

        raw.send(OP_TEXT, b'{"type": "not-an-ack"}')
        wait_until(lambda: emu.socket_messages())
        assert emu.socket_messages()[0]["message"] == {"type": "not-an-ack"}

        raw.send(OP_CLOSE, struct.pack("!H", 1000) + b"done")
        fin, opcode, data = raw.recv()
        assert opcode == OP_CLOSE and struct.unpack("!H", data[:2])[0] == 1000
        closed = wait_until(lambda: emu.socket_history()[0]["closed_at"] and emu.socket_history()[0])
        assert closed["close_code"] == 1000 and closed["pings"] == 2
        assert emu.socket_connections() == 0
    finally:
        raw.close()


def test_tickets_are_single_use_and_handshakes_are_checked(emu: SlackEmulator) -> None:
    url = new_url(emu)
    first = RawClient(url)
    second = RawClient(url)
    forged = RawClient(url.split("?")[0] + "?ticket=forged")
    try:
        assert (first.status, second.status, forged.status) == (101, 401, 401)
    finally:
        for raw in (first, second, forged):
            raw.close()
    request = urllib.request.Request(new_url(emu).replace("ws://", "http://"))
    with pytest.raises(urllib.error.HTTPError):  # a plain GET is not an upgrade
        urllib.request.urlopen(request, timeout=5)


def test_unmasked_client_frames_are_refused(emu: SlackEmulator) -> None:
    raw = RawClient(new_url(emu))
    try:
        raw.recv_json()  # hello
        raw.sock.sendall(encode_frame(OP_TEXT, b"{}"))  # no mask
        fin, opcode, data = raw.recv()
        assert opcode == OP_CLOSE and struct.unpack("!H", data[:2])[0] == 1002
    finally:
        raw.close()


def test_stopping_the_emulator_closes_sockets_with_going_away() -> None:
    emu = SlackEmulator().start()
    raw = RawClient(new_url(emu))
    try:
        raw.recv_json()  # hello
        emu.stop()
        fin, opcode, data = raw.recv()
        assert opcode == OP_CLOSE and struct.unpack("!H", data[:2])[0] == 1001
    finally:
        raw.close()
        emu.stop()
