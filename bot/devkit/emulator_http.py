"""HTTP plumbing for the Slack emulator: request parsing, replies, and the threaded server."""

from __future__ import annotations

import contextlib
import email
import email.policy
import json
import socket
import sys
import traceback
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, BinaryIO, Protocol
from urllib.parse import parse_qsl

from bot.devkit.emulator_state import Fault, SlackError


class HttpApp(Protocol):
    """Anything that answers a routed HTTP request."""

    def handle_http(self, path: str, headers: dict[str, str], body: bytes) -> Reply:
        """Answer one request."""
        ...

    def handle_upgrade(
        self, path: str, headers: dict[str, str], rfile: BinaryIO, sock: socket.socket
    ) -> Reply | None:
        """Take over a WebSocket upgrade request: a Reply refuses it, None means it was served to the end."""
        ...


JSON_FIELDS = ("blocks", "attachments", "view", "files", "metadata")
JSON_CONTENT_TYPE = "application/json; charset=utf-8"


@dataclass
class Reply:
    """An HTTP answer from the emulator."""

    status: int
    body: bytes
    content_type: str = JSON_CONTENT_TYPE
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of_json(cls, status: int, payload: dict, **headers: str) -> Reply:
        """Return a JSON reply."""
        return cls(status, json.dumps(payload).encode(), headers=headers)


def parse_multipart(content_type: str, body: bytes) -> dict[str, Any]:
    """Return the fields of a multipart/form-data body (file parts as bytes, others as str)."""
    raw = f"Content-Type: {content_type}\r\n\r\n".encode() + body
    message = email.message_from_bytes(raw, policy=email.policy.HTTP)
    fields: dict[str, Any] = {}
    for part in message.iter_parts():  # type: ignore[attr-defined]
        name = part.get_param("name", header="content-disposition") or f"part{len(fields)}"
        data = part.get_payload(decode=True) or b""
        fields[name] = data if part.get_filename() else data.decode("utf-8", "replace")
    return fields


def parse_params(query: str, content_type: str, body: bytes) -> dict[str, Any]:
    """Merge query-string, form, JSON or multipart params and decode JSON-valued fields."""
    params: dict[str, Any] = dict(parse_qsl(query, keep_blank_values=True))
    mime = content_type.split(";")[0].strip().lower()
    if mime == "application/json" and body.strip():
        try:
            decoded = json.loads(body)
        except ValueError as exc:
            raise SlackError("invalid_json") from exc
        if not isinstance(decoded, dict):
            raise SlackError("invalid_json")
        params.update(decoded)
    elif mime == "multipart/form-data":
        params.update(parse_multipart(content_type, body))
    elif body:
        params.update(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    for name in JSON_FIELDS:
        if isinstance(params.get(name), str) and params[name].strip()[:1] in ("[", "{"):
            with contextlib.suppress(ValueError):
                params[name] = json.loads(params[name])
    return params


def bearer_token(authorization: str | None) -> str | None:
    """Return the token from an Authorization: Bearer header."""
    if authorization and authorization.lower().startswith("bearer "):
        return authorization[7:].strip() or None
    return None


def fault_reply(fault: Fault) -> Reply:
    """Return the HTTP answer for an injected fault."""
    if fault.status == 429:
        body = {"ok": False, "error": fault.error or "ratelimited"}
        return Reply.of_json(429, body, **{"Retry-After": str(fault.retry_after)})
    default = "internal_error" if fault.status >= 500 else "fatal_error"
    return Reply.of_json(fault.status, {"ok": False, "error": fault.error or default})


class EmulatorServer(ThreadingHTTPServer):
    """ThreadingHTTPServer bound to one emulator."""

    # socketserver's default backlog of 5 resets connections when a busy bot opens many at once.
    request_queue_size = 256

    daemon_threads = True

    def __init__(self, address: tuple[str, int], emulator: HttpApp) -> None:
        super().__init__(address, EmulatorHandler)
        self.emulator = emulator


class EmulatorHandler(BaseHTTPRequestHandler):
    """Reads a request, lets the emulator answer it, writes the reply."""

    server: EmulatorServer
    server_version = "SlackEmulator/1.0"

    def do_POST(self) -> None:  # noqa: N802
        """Answer a POST."""
        self._dispatch()

    def do_GET(self) -> None:  # noqa: N802
        """Answer a GET (a WebSocket upgrade is handed to the emulator, which keeps the socket)."""
        if self.headers.get("Upgrade", "").lower() == "websocket":
            try:
                reply = self.server.emulator.handle_upgrade(
                    self.path, dict(self.headers.items()), self.rfile, self.connection
                )
            except Exception as exc:
                traceback.print_exc(file=sys.stderr)
                reply = Reply.of_json(500, {"ok": False, "error": "emulator_bug", "detail": repr(exc)})
            self.close_connection = True
            if reply is not None:
                self._send(reply)
            return
        self._dispatch()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """Stay quiet."""

    def _dispatch(self) -> None:
        """Route the request and send the reply."""
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        try:
            reply = self.server.emulator.handle_http(self.path, dict(self.headers.items()), body)
        except Exception as exc:  # an emulator bug: answer loudly instead of dropping the connection
            traceback.print_exc(file=sys.stderr)
            reply = Reply.of_json(500, {"ok": False, "error": "emulator_bug", "detail": repr(exc)})
        self._send(reply)

    def _send(self, reply: Reply) -> None:
        """Write a reply."""
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(reply.body)
