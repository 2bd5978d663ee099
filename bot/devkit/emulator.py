"""A stateful Slack Web API emulator that an unmodified slack_sdk.WebClient can talk to over HTTP."""

from __future__ import annotations

import copy
import json
import socket
import threading
import time
import uuid
from typing import Any, BinaryIO

from bot.devkit.emulator_http import (
    EmulatorServer,
    Reply,
    bearer_token,
    fault_reply,
    parse_multipart,
    parse_params,
)
from bot.devkit.emulator_methods import METHODS, ApiRequest
from bot.devkit.emulator_oauth import (
    OAuthApp,
    OAuthState,
    authorize_redirect,
    basic_credentials,
    oauth_v2_access,
    resolve_token,
    revoke,
)
from bot.devkit.emulator_state import Call, EmulatorState, Fault, SlackError, Workspace, is_reply
from bot.devkit.socket_mode import SocketModeHub

__all__ = ["Call", "SlackEmulator"]


class SlackEmulator:
    """A Slack Web API emulator: state, wire-format answers, call recording and fault injection.

    It also plays Slack's side of Socket Mode: ``apps.connections.open`` (app-level token) answers a
    one-time ``ws://<emulator host:port>/link?ticket=...`` URL on the emulator's own port; the
    emulator sends ``hello``, pushes envelopes (:meth:`push_event`, :meth:`push_envelope`), records
    acks (:meth:`socket_acks`, :meth:`wait_for_ack`), answers pings, and can ask clients to
    reconnect (:meth:`request_disconnect`) or close their sockets (:meth:`close_sockets`).
    """

    def __init__(
        self,
        *,
        team_id: str = "T0PRODOPS",
        team_name: str = "Acme Corp",
        team_domain: str = "acme",
        bot_token: str = "xoxb-emulator-token",
        bot_user_id: str = "U0BOT",
        bot_id: str = "B0BOT",
        app_id: str = "A0PRODOPS",
        app_token: str = "xapp-1-emulator-token",
        host: str = "127.0.0.1",
        port: int = 0,
        trigger_ttl: float = 3.0,
    ) -> None:
        ws = Workspace(team_id, team_name, team_domain, bot_token, bot_user_id, bot_id, app_id, app_token)
        self._state = EmulatorState(ws)
        self._state.trigger_ttl = trigger_ttl
        self.team_id, self.bot_token, self.bot_user_id, self.bot_id, self.app_id = (
            team_id,
            bot_token,
            bot_user_id,
            bot_id,
            app_id,
        )
        self.team_domain = team_domain
        self._address = (host, port)
        self._server: EmulatorServer | None = None
        self._thread: threading.Thread | None = None
        self._sockets = SocketModeHub(app_id)
        self._oauth = OAuthState()

    # ---- lifecycle ---------------------------------------------------------

    def start(self) -> SlackEmulator:
        """Bind (port 0 picks a free port) and serve in a daemon thread."""
        if self._server is None:
            self._server = EmulatorServer(self._address, self)
            self._state.root_url = self.root_url
            self._thread = threading.Thread(
                target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port."""
        server, self._server = self._server, None
        self._sockets.shutdown()
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> SlackEmulator:
        """Start on entering a with-block."""
        return self.start()

    def __exit__(self, *exc: object) -> None:
        """Stop on leaving a with-block."""
        self.stop()

    @property
    def root_url(self) -> str:
        """Return the server's base URL, e.g. http://127.0.0.1:54321."""
        if self._server is None:
            raise RuntimeError("emulator is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def url(self) -> str:
        """Return the base URL for slack_sdk.WebClient(base_url=...), ending in /api/."""
        return f"{self.root_url}/api/"

    @property
    def app_token(self) -> str:
        """Return the default workspace's app-level token (xapp-...) for Socket Mode."""
        return self._state.team().app_token

    # ---- seeding -----------------------------------------------------------

    def add_team(
        self,
        team_id: str,
        team_name: str,
        team_domain: str,
        bot_token: str,
        bot_user_id: str = "U0BOT",
        *,
        bot_id: str = "B0BOT",
        app_token: str | None = None,
    ) -> None:
        """Add another workspace; its bot token selects it, and its data is kept apart.

        Its app-level token defaults to the default workspace's (one app installed in several teams,
        so one Socket Mode connection serves them all); pass one to keep its connections apart.
        """
        ws = Workspace(
            team_id,
            team_name,
            team_domain,
            bot_token,
            bot_user_id,
            bot_id,
            self.app_id,
            app_token or self.app_token,
        )
        self._state.add_workspace(ws)

    def add_user(
        self,
        name: str,
        *,
        user_id: str | None = None,
        real_name: str | None = None,
        tz: str = "Europe/London",
        is_admin: bool = False,
        is_bot: bool = False,
        email: str | None = None,
        team_id: str | None = None,
    ) -> dict:
        """Add a user and return its Slack user object."""
        with self._state.lock:
            ws = self._state.team(team_id)
            user_id = user_id or self._state.new_id("U")
            if user_id in ws.users:
                raise ValueError(f"user {user_id} already exists")
            user = self._state.make_user(ws, name, user_id, real_name, tz, is_admin, is_bot, email)
            ws.users[user_id] = user
            return copy.deepcopy(user)

    def add_channel(
        self,
        name: str,
        *,
        is_private: bool = False,
        members: tuple[str, ...] | list[str] = (),
        bot_is_member: bool = True,
        channel_id: str | None = None,
        team_id: str | None = None,
    ) -> dict:
        """Add a channel (members given as user ids or names) and return its conversation object."""
        with self._state.lock:
            ws = self._state.team(team_id)
            if any(c.get("name") == name for c in ws.channels.values()):
                raise ValueError(f"channel #{name} already exists")
            ids = [self._user(ws, m)["id"] for m in members]
            channel_id = channel_id or self._state.new_id("C")
            ws.channels[channel_id] = self._state.make_channel(ws, name, channel_id, is_private)
            ws.members[channel_id] = list(dict.fromkeys(ids + ([ws.bot_user_id] if bot_is_member else [])))
            ws.history[channel_id] = []
            return self._state.render_channel(ws, ws.channels[channel_id])

    def add_member(self, channel: str, user: str, *, team_id: str | None = None) -> None:
        """Add a user (id or name) to a channel."""
        with self._state.lock:
            ws = self._state.team(team_id)
            members = ws.members.setdefault(self._channel(ws, channel)["id"], [])
            user_id = self._user(ws, user)["id"]
            if user_id not in members:
                members.append(user_id)

    def archive_channel(self, channel_id: str, *, team_id: str | None = None) -> None:
        """Archive a channel."""
        with self._state.lock:
            self._channel(self._state.team(team_id), channel_id)["is_archived"] = True

    def post_message(
        self,
        channel: str,
        user: str,
        text: str,
        *,
        thread_ts: str | None = None,
        blocks: list[dict] | None = None,
        subtype: str | None = None,
        bot_id: str | None = None,
        team_id: str | None = None,
    ) -> dict:
        """Store a message from a human (or another bot) and return it, including its ts."""
        with self._state.lock:
            ws = self._state.team(team_id)
            chan = self._channel(ws, channel)
            author = self._user(ws, user)["id"]
            if thread_ts and self._state.thread_parent(ws, chan["id"], thread_ts) is None:
                raise ValueError(f"no message {thread_ts} in {chan['id']}")
            message: dict[str, Any] = {
                "type": "message",
                "user": author,
                "text": text,
                "ts": self._state.next_ts(),
            }
            message["team"] = ws.team_id
            extra = {"blocks": blocks, "thread_ts": thread_ts, "subtype": subtype, "bot_id": bot_id}
            message.update({k: v for k, v in extra.items() if v is not None})
            if bot_id is None:
                message["client_msg_id"] = str(uuid.uuid4())
            members = ws.members.setdefault(chan["id"], [])
            if author not in members:
                members.append(author)
            return copy.deepcopy(self._state.store_message(ws, chan["id"], message))

    def add_reaction(
        self, channel: str, ts: str, user: str, name: str, *, team_id: str | None = None
    ) -> None:
        """Record a user's reaction on a message (raises ValueError on a repeat)."""
        with self._state.lock:
            ws = self._state.team(team_id)
            chan = self._channel(ws, channel)
            message = self._state.find_message(ws, chan["id"], ts)
            if message is None:
                raise ValueError(f"no message {ts} in {chan['id']}")
            try:
                self._state.add_reaction(message, name.strip(":"), self._user(ws, user)["id"])
            except SlackError as exc:
                raise ValueError(exc.error) from None

    def _user(self, ws: Workspace, ref: str) -> dict:
        """Return a user by id or name or raise ValueError."""
        try:
            return self._state.resolve_user(ws, ref)
        except SlackError:
            raise ValueError(f"unknown user {ref!r}") from None

    def _channel(self, ws: Workspace, ref: str) -> dict:
        """Return a channel by id or name or raise ValueError."""
        try:
            return self._state.find_channel(ws, ref)
        except SlackError:
            raise ValueError(f"unknown channel {ref!r}") from None

    # ---- inspection --------------------------------------------------------

    def calls(self, method: str | None = None) -> list[Call]:
        """Return every recorded Web API call in order (optionally only one method)."""
        with self._state.lock:
            return [c for c in self._state.calls if method is None or c.method == method]

    def reset_calls(self) -> None:
        """Forget recorded calls."""
        with self._state.lock:
            self._state.calls.clear()

    def workspace(self, team_id: str | None = None) -> dict:
        """Return a workspace's identity: team_id, team_name, team_domain, bot/app tokens, bot ids, app_id."""
        with self._state.lock:
            ws = self._state.team(team_id)
            keys = (
                "team_id",
                "team_name",
                "team_domain",
                "bot_token",
                "bot_user_id",
                "bot_id",
                "app_id",
                "app_token",
            )
            return {k: getattr(ws, k) for k in keys}

    def user(self, ref: str, *, team_id: str | None = None) -> dict | None:
        """Return a user object by id or name, or None."""
        with self._state.lock:
            try:
                return copy.deepcopy(self._state.resolve_user(self._state.team(team_id), ref))
            except SlackError:
                return None

    def channel(self, ref: str, *, team_id: str | None = None) -> dict | None:
        """Return a conversation object by id or name (with members), or None."""
        with self._state.lock:
            ws = self._state.team(team_id)
            try:
                found = self._state.find_channel(ws, ref) if ref not in ws.users else None
            except SlackError:
                return None
            if found is None:
                return None
            return dict(self._state.render_channel(ws, found), members=list(ws.members.get(found["id"], [])))

    def next_ts(self) -> str:
        """Return a fresh unique ts from the emulator's clock."""
        return self._state.next_ts()

    def message(self, channel: str, ts: str, *, team_id: str | None = None) -> dict | None:
        """Return one stored message (top-level or reply) by ts."""
        with self._state.lock:
            ws = self._state.team(team_id)
            return copy.deepcopy(self._state.find_message(ws, self._channel(ws, channel)["id"], ts))

    def messages(self, channel: str, *, team_id: str | None = None) -> list[dict]:
        """Return a channel's top-level messages (incl. thread parents and bot posts), oldest first."""
        with self._state.lock:
            ws = self._state.team(team_id)
            history = ws.history.get(self._channel(ws, channel)["id"], [])
            return copy.deepcopy([m for m in history if not is_reply(m)])

    def replies(self, channel: str, thread_ts: str, *, team_id: str | None = None) -> list[dict]:
        """Return the replies in a thread, oldest first (parent excluded)."""
        with self._state.lock:
            ws = self._state.team(team_id)
            return copy.deepcopy(self._state.thread_replies(ws, self._channel(ws, channel)["id"], thread_ts))

    def ephemerals(
        self, channel: str | None = None, user: str | None = None, *, team_id: str | None = None
    ) -> list:
        """Return ephemeral messages ("user" is the recipient), optionally filtered."""
        with self._state.lock:
            ws = self._state.team(team_id)
            channel_id = self._channel(ws, channel)["id"] if channel else None
            user_id = self._user(ws, user)["id"] if user else None
            return copy.deepcopy(
                [
                    e
                    for e in ws.ephemerals
                    if (channel_id is None or e["channel"] == channel_id)
                    and (user_id is None or e["user"] == user_id)
                ]
            )

    def views(self, *, team_id: str | None = None) -> list[dict]:
        """Return opened/pushed modal views (latest state), in the order they were opened."""
        with self._state.lock:
            return copy.deepcopy(list(self._state.team(team_id).views.values()))

    def home_view(self, user_id: str, *, team_id: str | None = None) -> dict | None:
        """Return the App Home view published for a user."""
        with self._state.lock:
            return copy.deepcopy(self._state.team(team_id).home_views.get(user_id))

    def files(self, *, team_id: str | None = None) -> list[dict]:
        """Return completed file uploads."""
        with self._state.lock:
            return copy.deepcopy(list(self._state.team(team_id).files.values()))

    def file_content(self, file_id: str, *, team_id: str | None = None) -> bytes | None:
        """Return the bytes uploaded for a file id."""
        with self._state.lock:
            return self._state.team(team_id).file_data.get(file_id)

    def response_url_posts(self, key: str | None = None) -> list[dict]:
        """Return the JSON bodies POSTed to response URLs (optionally for one key)."""
        with self._state.lock:
            return copy.deepcopy([body for k, body in self._state.response_posts if key is None or k == key])

    # ---- OAuth ---------------------------------------------------------------

    def enable_oauth(
        self,
        client_id: str,
        client_secret: str,
        *,
        redirect_uri: str | None = None,
        token_rotation: bool = False,
        expires_in: int = 43200,
    ) -> None:
        """Know the app's OAuth credentials (and optionally issue rotating tokens that expire)."""
        with self._state.lock:
            self._oauth.app = OAuthApp(client_id, client_secret, redirect_uri, token_rotation, expires_in)

    @property
    def authorize_url(self) -> str:
        """Slack's consent page on this emulator (what Bolt's OAuthSettings.authorization_url points at)."""
        return f"{self.root_url}/oauth/v2/authorize"

    def issued_tokens(self, team_id: str | None = None, *, kind: str | None = None) -> list[dict]:
        """Tokens oauth.v2.access handed out (oldest first): token, team_id, kind, user_id, expires_at, revoked."""
        with self._state.lock:
            return [
                {
                    "token": t.token,
                    "team_id": t.team_id,
                    "kind": t.kind,
                    "user_id": t.user_id,
                    "expires_at": t.expires_at,
                    "revoked": t.revoked,
                }
                for t in self._oauth.tokens.values()
                if (team_id is None or t.team_id == team_id) and (kind is None or t.kind == kind)
            ]

    def uninstall(self, team_id: str | None = None) -> list[str]:
        """The app is removed from a team: every token of it stops working (invalid_auth); returns them."""
        with self._state.lock:
            ws = self._state.team(team_id)
            return revoke(self._state, self._oauth, ws.team_id, bot=True, users=None)

    def revoke_tokens(
        self, team_id: str | None = None, *, bot: bool = True, users: list[str] | None = None
    ) -> list[str]:
        """Revoke a team's bot token and/or its users' tokens (users=None with bot=False: none)."""
        with self._state.lock:
            ws = self._state.team(team_id)
            return revoke(
                self._state, self._oauth, ws.team_id, bot=bot, users=users if users is not None else []
            )

    # ---- faults, response urls, triggers ---------------------------------------

    def fail(
        self,
        method: str,
        *,
        status: int = 429,
        retry_after: int = 1,
        error: str | None = None,
        times: int = 1,
    ) -> None:
        """Make the next `times` calls to a method ("*" = any) fail with an HTTP status or a Slack error."""
        with self._state.lock:
            self._state.faults.setdefault(method, []).append(Fault(status, retry_after, error, times))

    def delay(self, method: str, seconds: float, *, times: int = 1) -> None:
        """Make the next `times` calls to a method ("*" = any) sleep first, without holding the lock."""
        with self._state.lock:
            self._state.delays.setdefault(method, []).append([seconds, times])

    def new_response_url(self, key: str) -> str:
        """Return a response URL whose POSTed bodies are recorded under key."""
        return f"{self.root_url}/response/{key}"

    def new_trigger_id(self) -> str:
        """Return a trigger_id that views.open/push accept once, within trigger_ttl seconds."""
        return self._state.issue_trigger()

    # ---- Socket Mode ---------------------------------------------------------

    def socket_connections(self) -> int:
        """Return how many Socket Mode connections are open and receiving envelopes."""
        return self._sockets.open_count()

    def socket_history(self) -> list[dict]:
        """Return every accepted Socket Mode connection, oldest first.

        Each is {id, team_id, opened_at, closed_at, close_code, draining, pings, pongs}; ``draining``
        means it was sent ``disconnect`` or a close frame and gets no new envelopes.
        """
        return self._sockets.connections()

    def wait_for_socket(self, timeout: float = 10.0, *, accepted: int = 1) -> None:
        """Wait until a Socket Mode connection can receive envelopes and `accepted` were ever accepted.

        Pass accepted=len(socket_history()) + 1 to wait for a reconnect. Raises TimeoutError.
        """
        self._sockets.wait_for_connection(timeout, accepted)

    def push_envelope(
        self,
        type_: str,
        payload: dict,
        *,
        accepts_response_payload: bool | None = None,
        retry_attempt: int = 0,
        retry_reason: str = "",
        team_id: str | None = None,
        timeout: float = 5.0,
    ) -> str:
        """Send a Socket Mode envelope ("events_api", "slash_commands" or "interactive"); return its id.

        payload is what the HTTP request would carry: the event_callback body, the slash command's
        fields as a dict, or the interaction payload. accepts_response_payload defaults to Slack's
        choice for the type. The envelope goes to the newest open connection of the team's app token,
        waiting up to timeout seconds for one (RuntimeError when there is none).
        """
        with self._state.lock:
            app_token = self._state.team(team_id).app_token
        return self._sockets.push(
            type_,
            copy.deepcopy(payload),
            app_token=app_token,
            accepts_response_payload=accepts_response_payload,
            retry_attempt=retry_attempt,
            retry_reason=retry_reason,
            timeout=timeout,
        )

    def push_event(
        self,
        event: dict,
        *,
        event_id: str | None = None,
        event_time: int | None = None,
        retry_attempt: int = 0,
        retry_reason: str = "",
        team_id: str | None = None,
        timeout: float = 5.0,
    ) -> str:
        """Wrap an inner event in an event_callback body (as SlackDriver.event_callback does) and push it.

        Returns the envelope id. Reuse an event_id with retry_attempt=1, retry_reason="timeout" to
        play Slack's retry of the same event.
        """
        from bot.devkit.driver import SlackDriver  # the driver imports this module, so import late

        driver = SlackDriver(
            events_url="", signing_secret="unused", emulator=self, team_id=team_id, api_app_id=self.app_id
        )
        body = driver.event_callback(event, event_id=event_id, event_time=event_time)
        return self.push_envelope(
            "events_api",
            body,
            retry_attempt=retry_attempt,
            retry_reason=retry_reason,
            team_id=team_id,
            timeout=timeout,
        )

    def socket_acks(self) -> list[dict]:
        """Return the acks received, in order.

        Each is {envelope_id, type, payload (the ack's response payload or None), latency (seconds
        from push to ack, None for an unknown envelope), acked_at, connection_id, known}.
        """
        return self._sockets.acks()

    def wait_for_ack(self, envelope_id: str, timeout: float = 10.0) -> dict:
        """Return the first ack of an envelope, waiting up to timeout seconds (TimeoutError)."""
        return self._sockets.wait_for_ack(envelope_id, timeout)

    def socket_messages(self) -> list[dict]:
        """Return text messages clients sent that were not acks ({connection_id, message, at})."""
        return self._sockets.other_messages()

    def request_disconnect(self, reason: str = "refresh_requested") -> int:
        """Send {"type": "disconnect", "reason": ...} on every open connection; return how many.

        Those connections get no new envelopes; clients answer by opening a new connection.
        """
        return self._sockets.request_disconnect(reason)

    def close_sockets(self, code: int = 1000, reason: str = "") -> int:
        """Send a close frame on every open connection (clients reconnect); return how many."""
        return self._sockets.close_connections(code, reason)

    def handle_upgrade(
        self, path: str, headers: dict[str, str], rfile: BinaryIO, sock: socket.socket
    ) -> Reply | None:
        """Serve a Socket Mode WebSocket on this HTTP connection (None once it has ended)."""
        return self._sockets.serve(path, headers, rfile, sock)

    # ---- HTTP --------------------------------------------------------------

    def handle_http(self, path: str, headers: dict[str, str], body: bytes) -> Reply:
        """Route one HTTP request to the API, upload or response-URL endpoints."""
        path, _, query = path.partition("?")
        headers = {k.lower(): v for k, v in headers.items()}
        if path.startswith("/api/"):
            return self._handle_api(path[len("/api/") :], query, headers, body)
        if path.startswith("/upload/"):
            return self._handle_upload(path[len("/upload/") :], headers, body)
        if path.startswith("/response/"):
            return self._handle_response_url(path[len("/response/") :], headers, body)
        if path == "/oauth/v2/authorize":
            with self._state.lock:
                status, location, text = authorize_redirect(self._state, self._oauth, query)
            return Reply(
                status, text.encode(), "text/plain; charset=utf-8", {"Location": location} if location else {}
            )
        return Reply(404, b"not found", "text/plain")

    def _handle_api(self, method: str, query: str, headers: dict[str, str], body: bytes) -> Reply:
        """Answer a Web API call, record it, and apply injected delays and faults."""
        at = time.time()
        try:
            params = parse_params(query, headers.get("content-type", ""), body)
            parse_error = None
        except SlackError as exc:
            params, parse_error = {}, exc.error
        token = bearer_token(headers.get("authorization")) or params.pop("token", None)
        params.pop("token", None)
        pause = self._state.take_delay(method)
        if pause:
            time.sleep(pause)
        basic = basic_credentials(headers.get("authorization"))
        with self._state.lock:
            reply, payload = self._answer(method, token, params, parse_error, basic)
            self._state.calls.append(Call(method, copy.deepcopy(params), token, reply.status, payload, at))
            return reply

    def _answer(
        self,
        method: str,
        token: str | None,
        params: dict,
        parse_error: str | None,
        basic: tuple[str, str] | None = None,
    ) -> tuple[Reply, dict]:
        """Return the reply and the JSON payload for one API call (lock held)."""
        fault = self._state.take_fault(method)
        if fault is not None:
            reply = fault_reply(fault)
            return reply, json.loads(reply.body)
        try:
            payload = copy.deepcopy(self._run(method, token, params, parse_error, basic))
        except SlackError as exc:
            payload = {"ok": False, "error": exc.error, **exc.extra}
        return Reply.of_json(200, payload), payload

    def _run(
        self,
        method: str,
        token: str | None,
        params: dict,
        parse_error: str | None,
        basic: tuple[str, str] | None = None,
    ) -> dict:
        """Authenticate and run the method handler."""
        if method == "apps.connections.open":
            if parse_error:
                raise SlackError(parse_error)
            return self._open_connection(token)
        if method == "oauth.v2.access":  # authenticated by the app's client id and secret, not a token
            if parse_error:
                raise SlackError(parse_error)
            return oauth_v2_access(self._state, self._oauth, params, basic)
        handler = METHODS.get(method)
        if handler is None:
            raise SlackError("unknown_method")
        if parse_error:
            raise SlackError(parse_error)
        if not token:
            raise SlackError("not_authed")
        found = resolve_token(self._state, self._oauth, token)
        if found is None:
            wrong_type = self._state.workspace_for_app_token(token) is not None
            raise SlackError("not_allowed_token_type" if wrong_type else "invalid_auth")
        ws, token_user = found
        return handler(ApiRequest(self._state, ws, copy.deepcopy(params), token_user))

    def _open_connection(self, token: str | None) -> dict:
        """apps.connections.open: only an app-level token may ask for a Socket Mode URL."""
        if not token:
            raise SlackError("not_authed")
        ws = self._state.workspace_for_app_token(token)
        if ws is None:
            wrong_type = self._state.workspace_for_token(token) is not None
            raise SlackError("not_allowed_token_type" if wrong_type else "invalid_auth")
        return {"ok": True, "url": self._sockets.issue_url(self.root_url, ws.team_id, ws.app_token)}

    def _handle_upload(self, file_id: str, headers: dict[str, str], body: bytes) -> Reply:
        """Store the bytes POSTed to an upload URL (raw body or the file part of a multipart form)."""
        content_type = headers.get("content-type", "")
        if content_type.lower().startswith("multipart/form-data"):
            parts = parse_multipart(content_type, body)
            body = next((v for v in parts.values() if isinstance(v, bytes)), b"")
        with self._state.lock:
            ws = next((w for w in self._state.teams.values() if file_id in w.uploads), None)
            if ws is None:
                return Reply(404, b"file not found", "text/plain")
            ws.file_data[file_id] = body
        return Reply(200, f"OK - {len(body)}".encode(), "text/plain; charset=utf-8")

    def _handle_response_url(self, key: str, headers: dict[str, str], body: bytes) -> Reply:
        """Record a body POSTed to a response URL (JSON, or a form with payload=<json>)."""
        try:
            if body.lstrip()[:1] == b"{":
                params = json.loads(body)
            else:
                params = parse_params("", headers.get("content-type", ""), body)
                params = json.loads(params["payload"]) if "payload" in params else params
        except (SlackError, ValueError):
            return Reply.of_json(400, {"ok": False, "error": "invalid_json"})
        with self._state.lock:
            self._state.response_posts.append((key, params))
        return Reply.of_json(200, {"ok": True})
