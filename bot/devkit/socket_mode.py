"""Slack's side of Socket Mode for the emulator: a standard-library WebSocket server (RFC 6455) and envelopes.

The flow mirrors Slack's: a client calls ``apps.connections.open`` with an app-level token and gets a
one-time ``ws://.../link?ticket=...`` URL; it opens a WebSocket there and receives ``hello``; the
emulator pushes envelopes (``events_api``, ``slash_commands``, ``interactive``) and records each ack
(``{"envelope_id": ..., "payload": ...}``) with its latency; ``disconnect`` (refresh_requested) and
close frames make the client reconnect. The WebSocket shares the emulator's HTTP port: the HTTP
handler hands an ``Upgrade: websocket`` request over to :meth:`SocketModeHub.serve`.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import secrets
import socket
import struct
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, BinaryIO
from urllib.parse import parse_qs, urlsplit

from bot.devkit.emulator_http import Reply

__all__ = ["SocketConnection", "SocketModeHub", "accept_key", "encode_frame", "read_frame"]

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
MAX_MESSAGE = 32 * 1024 * 1024  # larger client messages are refused with close code 1009
TICKET_TTL = 60.0  # seconds a ticket from apps.connections.open may wait before it is used
# Whether Slack lets the app answer in the ack, by envelope type (interactive depends on the payload).
ACCEPTS_RESPONSE = {"events_api": False, "slash_commands": True}
INTERACTIVE_WITH_RESPONSE = {"view_submission", "block_suggestion"}


class ProtocolError(Exception):
    """The peer broke RFC 6455; carries the close code to answer with."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def accept_key(key: str) -> str:
    """Return the Sec-WebSocket-Accept value for a client's Sec-WebSocket-Key."""
    return base64.b64encode(hashlib.sha1((key.strip() + WS_GUID).encode()).digest()).decode()


def encode_frame(opcode: int, payload: bytes = b"", *, fin: bool = True, mask: bytes | None = None) -> bytes:
    """Return one frame (server frames are unmasked; pass mask=4 bytes to build a client frame)."""
    head = bytes([(0x80 if fin else 0) | opcode])
    mask_bit = 0x80 if mask is not None else 0
    n = len(payload)
    if n <= 125:
        head += bytes([mask_bit | n])
    elif n <= 0xFFFF:
        head += struct.pack("!BH", mask_bit | 126, n)
    else:
        head += struct.pack("!BQ", mask_bit | 127, n)
    if mask is None:
        return head + payload
    return head + mask + apply_mask(payload, mask)


def apply_mask(data: bytes, mask: bytes) -> bytes:
    """XOR data with a 4-byte masking key (its own inverse)."""
    if not data:
        return data
    repeated = (mask * (len(data) // 4 + 1))[: len(data)]
    return (int.from_bytes(data, "big") ^ int.from_bytes(repeated, "big")).to_bytes(len(data), "big")


def _read_exact(stream: BinaryIO, n: int) -> bytes:
    """Read exactly n bytes or raise EOFError."""
    data = stream.read(n) if n else b""
    if len(data) < n:
        raise EOFError("connection closed")
    return data


def read_frame(stream: BinaryIO, *, require_mask: bool = True) -> tuple[bool, int, bytes]:
    """Read one frame and return (fin, opcode, unmasked payload); EOFError when the peer is gone."""
    b1, b2 = _read_exact(stream, 2)
    if b1 & 0x70:
        raise ProtocolError(1002, "reserved bits set")
    fin, opcode, masked, n = bool(b1 & 0x80), b1 & 0x0F, bool(b2 & 0x80), b2 & 0x7F
    if n == 126:
        (n,) = struct.unpack("!H", _read_exact(stream, 2))
    elif n == 127:
        (n,) = struct.unpack("!Q", _read_exact(stream, 8))
    if require_mask and not masked:
        raise ProtocolError(1002, "client frames must be masked")
    if opcode >= 0x8 and (n > 125 or not fin):
        raise ProtocolError(1002, "bad control frame")
    if n > MAX_MESSAGE:
        raise ProtocolError(1009, "message too big")
    mask = _read_exact(stream, 4) if masked else None
    payload = _read_exact(stream, n)
    return fin, opcode, apply_mask(payload, mask) if mask else payload


@dataclass
class SocketConnection:
    """One accepted Socket Mode WebSocket."""

    id: str
    team_id: str
    app_token: str
    sock: socket.socket
    opened_at: float = field(default_factory=time.time)
    closed_at: float | None = None
    close_code: int | None = None
    draining: bool = False  # sent "disconnect": no new envelopes go here
    close_sent: bool = False
    pings: int = 0
    pongs: int = 0
    send_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def is_open(self) -> bool:
        """Return True until the connection has ended."""
        return self.closed_at is None

    def send_frame(self, opcode: int, payload: bytes = b"") -> None:
        """Send one unmasked frame (raises OSError when the peer is gone)."""
        data = encode_frame(opcode, payload)
        with self.send_lock:
            self.sock.sendall(data)

    def send_json(self, message: dict) -> None:
        """Send a JSON text message."""
        self.send_frame(OP_TEXT, json.dumps(message).encode())

    def send_close(self, code: int = 1000, reason: str = "") -> None:
        """Start (or answer) the closing handshake; quietly ignores a peer that is already gone."""
        if self.close_sent:
            return
        self.close_sent = True
        with contextlib.suppress(OSError):
            self.send_frame(OP_CLOSE, struct.pack("!H", code) + reason.encode()[:120])

    def abort(self) -> None:
        """Shut the socket down so the reader thread wakes up and ends."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)

    def describe(self) -> dict[str, Any]:
        """Return a plain-dict summary for inspection."""
        keys = ("id", "team_id", "opened_at", "closed_at", "close_code", "draining", "pings", "pongs")
        return {k: getattr(self, k) for k in keys}


@dataclass
class Envelope:
    """One envelope the emulator pushed and is waiting to see acked."""

    envelope_id: str
    type: str
    payload: dict
    connection_id: str
    sent_at: float


class SocketModeHub:
    """Tickets, connections, envelopes and acks: everything Slack's Socket Mode side keeps."""

    def __init__(self, app_id: str) -> None:
        self.app_id = app_id
        self._cond = threading.Condition(threading.RLock())
        self._tickets: dict[str, tuple[str, str, float]] = {}  # ticket -> (team_id, app_token, issued)
        self._connections: list[SocketConnection] = []  # every connection ever accepted, oldest first
        self._envelopes: dict[str, Envelope] = {}
        self._acks: list[dict[str, Any]] = []
        self._other: list[dict[str, Any]] = []  # text messages from clients that were not acks
        self._seq = 0

    # ---- apps.connections.open ---------------------------------------------------

    def issue_url(self, root_url: str, team_id: str, app_token: str) -> str:
        """Return a one-time WebSocket URL on the emulator's own host (answer to apps.connections.open)."""
        ticket = secrets.token_hex(16)
        with self._cond:
            self._tickets[ticket] = (team_id, app_token, time.time())
        base = root_url.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
        return f"{base}/link?ticket={ticket}&app_id={self.app_id}"

    # ---- the WebSocket -------------------------------------------------------------

    def serve(self, path: str, headers: dict[str, str], rfile: BinaryIO, sock: socket.socket) -> Reply | None:
        """Handle an upgrade request: a Reply to refuse it, or None once the accepted connection has ended."""
        headers = {k.lower(): v for k, v in headers.items()}
        url = urlsplit(path)
        if url.path.rstrip("/") != "/link":
            return Reply(404, b"not found", "text/plain")
        key = headers.get("sec-websocket-key", "")
        if (
            "upgrade" not in headers.get("connection", "").lower()
            or headers.get("upgrade", "").lower() != "websocket"
            or headers.get("sec-websocket-version") != "13"
            or not key
        ):
            return Reply(400, b"bad websocket handshake", "text/plain", {"Sec-WebSocket-Version": "13"})
        ticket = (parse_qs(url.query).get("ticket") or [""])[0]
        with self._cond:
            issued = self._tickets.pop(ticket, None)
        if issued is None or time.time() - issued[2] > TICKET_TTL:
            return Reply(401, b"invalid or used ticket", "text/plain")
        team_id, app_token, _ = issued
        sock.sendall(
            (
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Accept: {accept_key(key)}\r\n\r\n"
            ).encode()
        )
        with self._cond:
            self._seq += 1
            conn = SocketConnection(f"conn-{self._seq}", team_id, app_token, sock)
            self._connections.append(conn)
            hello = {
                "type": "hello",
                "num_connections": len(self._open(app_token)),
                "debug_info": {
                    "host": "applink-emulator",
                    "build_number": 1,
                    "approximate_connection_time": 18060,
                },
                "connection_info": {"app_id": self.app_id},
            }
            with contextlib.suppress(OSError):
                conn.send_json(hello)
            self._cond.notify_all()
        try:
            self._receive(conn, rfile)
        finally:
            conn.abort()
            with self._cond:
                conn.closed_at = time.time()
                self._cond.notify_all()
        return None

    def _receive(self, conn: SocketConnection, rfile: BinaryIO) -> None:
        """Read frames until the connection ends: answer pings and closes, collect messages."""
        parts: list[bytes] = []
        size = 0
        while True:
            try:
                fin, opcode, data = read_frame(rfile)
            except (EOFError, OSError, ValueError):
                conn.close_code = conn.close_code or 1006
                return
            except ProtocolError as exc:
                conn.close_code = exc.code
                conn.send_close(exc.code, exc.reason)
                return
            if opcode == OP_PING:
                conn.pings += 1
                with contextlib.suppress(OSError):
                    conn.send_frame(OP_PONG, data)
            elif opcode == OP_PONG:
                conn.pongs += 1
            elif opcode == OP_CLOSE:
                conn.close_code = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else 1005
                conn.send_close(conn.close_code if conn.close_code != 1005 else 1000)
                return
            elif opcode in (OP_TEXT, OP_BINARY, OP_CONTINUATION):
                if (opcode == OP_CONTINUATION) != bool(parts):
                    conn.close_code = 1002
                    conn.send_close(1002, "unexpected continuation")
                    return
                parts.append(data)
                size += len(data)
                if size > MAX_MESSAGE:
                    conn.close_code = 1009
                    conn.send_close(1009, "message too big")
                    return
                if fin:
                    self._on_message(conn, b"".join(parts))
                    parts, size = [], 0
            else:
                conn.close_code = 1002
                conn.send_close(1002, "unknown opcode")
                return

    def _on_message(self, conn: SocketConnection, data: bytes) -> None:
        """Record an ack (or keep any other message for inspection)."""
        now = time.time()
        try:
            message = json.loads(data)
        except ValueError:
            message = {"raw": data.decode("utf-8", "replace")}
        with self._cond:
            envelope_id = message.get("envelope_id") if isinstance(message, dict) else None
            if not envelope_id:
                self._other.append({"connection_id": conn.id, "message": message, "at": now})
                return
            sent = self._envelopes.get(str(envelope_id))
            self._acks.append(
                {
                    "envelope_id": envelope_id,
                    "type": sent.type if sent else None,
                    "payload": message.get("payload"),
                    "latency": now - sent.sent_at if sent else None,
                    "acked_at": now,
                    "connection_id": conn.id,
                    "known": sent is not None,
                }
            )
            self._cond.notify_all()

    # ---- pushing -------------------------------------------------------------------

    def _open(self, app_token: str | None = None) -> list[SocketConnection]:
        """Open connections (optionally for one app token), oldest first."""
        return [c for c in self._connections if c.is_open and (app_token is None or c.app_token == app_token)]

    def push(
        self,
        type_: str,
        payload: dict,
        *,
        app_token: str | None = None,
        accepts_response_payload: bool | None = None,
        retry_attempt: int = 0,
        retry_reason: str = "",
        envelope_id: str | None = None,
        timeout: float = 5.0,
    ) -> str:
        """Send an envelope on the newest usable connection (waiting up to timeout for one); return its id."""
        if accepts_response_payload is None:
            accepts_response_payload = ACCEPTS_RESPONSE.get(type_, False) or (
                type_ == "interactive" and payload.get("type") in INTERACTIVE_WITH_RESPONSE
            )
        envelope: dict[str, Any] = {
            "envelope_id": envelope_id or str(uuid.uuid4()),
            "type": type_,
            "accepts_response_payload": accepts_response_payload,
            "payload": payload,
        }
        if type_ == "events_api":
            envelope.update(retry_attempt=retry_attempt, retry_reason=retry_reason)
        data = json.dumps(envelope).encode()
        deadline = time.monotonic() + timeout
        while True:
            with self._cond:
                usable = [c for c in self._open(app_token) if not c.draining]
                while not usable:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise RuntimeError("no open Socket Mode connection to push an envelope to")
                    self._cond.wait(left)
                    usable = [c for c in self._open(app_token) if not c.draining]
                conn = usable[-1]
                self._envelopes[envelope["envelope_id"]] = Envelope(
                    envelope["envelope_id"], type_, payload, conn.id, time.time()
                )
            try:
                conn.send_frame(OP_TEXT, data)
            except OSError:
                conn.abort()
                with self._cond:
                    conn.closed_at = conn.closed_at or time.time()
                continue
            return str(envelope["envelope_id"])

    def request_disconnect(self, reason: str = "refresh_requested", app_token: str | None = None) -> int:
        """Send {"type": "disconnect"} on every usable connection and stop routing to them; return how many."""
        message = {"type": "disconnect", "reason": reason, "debug_info": {"host": "applink-emulator"}}
        count = 0
        with self._cond:
            for conn in self._open(app_token):
                if conn.draining:
                    continue
                conn.draining = True
                with contextlib.suppress(OSError):
                    conn.send_json(message)
                    count += 1
            self._cond.notify_all()
        return count

    def close_connections(self, code: int = 1000, reason: str = "", *, abort: bool = False) -> int:
        """Send a close frame on every open connection (abort=True also drops the socket); return how many."""
        with self._cond:
            conns = self._open()
            for conn in conns:
                conn.draining = True
                conn.send_close(code, reason)
                if abort:
                    conn.abort()
            self._cond.notify_all()
        return len(conns)

    # ---- inspection ------------------------------------------------------------------

    def open_count(self) -> int:
        """Return how many connections are open and receiving envelopes."""
        with self._cond:
            return len([c for c in self._open() if not c.draining])

    def connections(self) -> list[dict[str, Any]]:
        """Return a summary of every connection ever accepted, oldest first."""
        with self._cond:
            return [c.describe() for c in self._connections]

    def wait_for_connection(self, timeout: float, accepted: int = 1) -> None:
        """Wait until a connection can receive envelopes and at least `accepted` were ever accepted."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not (self.open_count() and len(self._connections) >= accepted):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"no Socket Mode connection within {timeout}s "
                        f"({len(self._connections)} accepted, {self.open_count()} open)"
                    )
                self._cond.wait(left)

    def acks(self) -> list[dict[str, Any]]:
        """Return every ack received, in order."""
        with self._cond:
            return [dict(a) for a in self._acks]

    def wait_for_ack(self, envelope_id: str, timeout: float) -> dict[str, Any]:
        """Return the first ack of an envelope, waiting up to timeout seconds."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = next((a for a in self._acks if a["envelope_id"] == envelope_id), None)
                if found is not None:
                    return dict(found)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"envelope {envelope_id} was not acked within {timeout}s")
                self._cond.wait(left)

    def other_messages(self) -> list[dict[str, Any]]:
        """Return text messages from clients that were not acks."""
        with self._cond:
            return [dict(m) for m in self._other]

    def shutdown(self) -> None:
        """Close every connection (going away) and drop the sockets."""
        self.close_connections(1001, "emulator stopping", abort=True)
