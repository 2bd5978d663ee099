"""The WSGI application: Bolt on POST /slack/events, and GET /healthz."""

from __future__ import annotations

import json
import logging
from typing import Any

from slack_bolt import App, BoltRequest, BoltResponse
from slack_bolt.adapter.wsgi import SlackRequestHandler
from slack_bolt.adapter.wsgi.http_request import WsgiHttpRequest
from slack_bolt.adapter.wsgi.http_response import WsgiHttpResponse
from slack_bolt.request.internals import parse_body
from sqlalchemy.exc import SQLAlchemyError

from bot.metrics.api import MetricsAPI
from bot.observability import METRICS_PATH, MetricsPage
from bot.slack_payloads import body_problem, signature_problem
from storage.db import Database

logger = logging.getLogger("prodops.web")

EVENTS_PATH = "/slack/events"
HEALTH_PATH = "/healthz"
OAUTH_PATHS = ("/slack/install", "/slack/oauth_redirect")  # served by Bolt's OAuth flow when it is on
SINGLE_WORKSPACE_NOTE = (
    "This ProdOps server runs for one workspace (SLACK_BOT_TOKEN), so it has no install page. To install it "
    "in several workspaces, set SLACK_CLIENT_ID, SLACK_CLIENT_SECRET and PRODOPS_ENCRYPTION_KEY on the "
    "server (see README.md#configuration)."
)
MAX_BODY_BYTES = 1_048_576  # Slack's payloads are far smaller; refuse anything bigger before reading it


def _json_response(status: int, payload: dict[str, Any]) -> WsgiHttpResponse:
    return WsgiHttpResponse(
        status=status,
        headers={"content-type": ["application/json;charset=utf-8"]},
        body=json.dumps(payload),
    )


def _read_body(request: WsgiHttpRequest) -> bytes:
    """The request body as bytes (Bolt's adapter decodes it, which fails on bytes that are not UTF-8)."""
    stream = request.environ.get("wsgi.input")
    if stream is None:
        return b""
    return bytes(stream.read(_content_length(request.environ) or 0))


def _content_length(environ: Any) -> int | None:
    """CONTENT-LENGTH as a number, or None when it is missing or not one."""
    value = str(environ.get("CONTENT_LENGTH") or "0").strip()
    return int(value) if value.isdigit() and len(value) < 19 else None


def _malformed(problem: str) -> BoltResponse:
    return BoltResponse(status=400, body=f"malformed body: {problem}")


class ProdOpsWSGI(SlackRequestHandler):
    """Bolt's WSGI adapter plus a health check and a clean 4xx for bodies that are not Slack's."""

    def __init__(self, app: App | None, db: Database, path: str = EVENTS_PATH) -> None:
        super().__init__(app, path)  # type: ignore[arg-type]
        self.db = db
        self.metrics_api = MetricsAPI(db)
        self.metrics_page = MetricsPage(db)

    def __call__(self, environ: Any, start_response: Any) -> Any:
        """The push API (`/api/v1/...`) has its own auth and limits; everything else is Slack's or health."""
        if MetricsAPI.handles(str(environ.get("PATH_INFO") or "")):
            return self.metrics_api(environ, start_response)
        if environ.get("PATH_INFO") == METRICS_PATH:  # Prometheus (bot/observability.py)
            return self.metrics_page(environ, start_response)
        return super().__call__(environ, start_response)

    def dispatch(self, request: WsgiHttpRequest) -> BoltResponse:
        """Checks the signature on the raw bytes, then the body's shape, before Bolt parses or logs anything."""
        raw = _read_body(request)
        headers = request.get_headers()
        if self._verifies_signatures:
            problem = signature_problem(raw, headers, self._signing_secret)
            if problem:
                # Bolt's answer to a bad signature; the body is never logged (it may hold real messages).
                logger.info("refused a request that is not signed by Slack (%s)", problem)
                return BoltResponse(status=401, body={"error": "invalid request"})
        raw_type = headers.get("content-type") or ""
        content_type = (raw_type if isinstance(raw_type, str) else raw_type[0]).split(";")[0].strip()
        try:
            body = raw.decode("utf-8")
            parsed = parse_body(body, content_type)
        except UnicodeDecodeError:
            return _malformed("not UTF-8")
        except (
            ValueError,
            RecursionError,
        ):  # json.JSONDecodeError is a ValueError; RecursionError: deep nesting
            return _malformed("expected Slack's JSON or form encoding")
        problem = body_problem(parsed)
        if problem:
            logger.info("refused a signed request with a malformed body: %s", problem)
            return _malformed(problem)
        return self.app.dispatch(BoltRequest(body=body, query=request.query_string, headers=headers))

    @property
    def _verifies_signatures(self) -> bool:
        return bool(self.app is not None and self._signing_secret)

    @property
    def _signing_secret(self) -> str:
        return str(getattr(self.app, "_signing_secret", "") or "")

    def health(self) -> WsgiHttpResponse:
        """200 after a database round-trip, 503 when the database does not answer."""
        try:
            self.db.ping()
        except (SQLAlchemyError, OSError) as exc:
            logger.warning("health check failed: %s", exc.__class__.__name__)
            return _json_response(503, {"status": "unavailable", "database": "unreachable"})
        return _json_response(200, {"status": "ok", "database": "ok", "backend": self.db.backend})

    def _get_http_response(self, request: WsgiHttpRequest) -> WsgiHttpResponse:
        if request.path == HEALTH_PATH and request.method in ("GET", "HEAD"):
            return self.health()
        if request.path in OAUTH_PATHS and (self.app is None or self.app.oauth_flow is None):
            return WsgiHttpResponse(
                status=404,
                headers={"content-type": ["text/plain;charset=utf-8"]},
                body=SINGLE_WORKSPACE_NOTE,
            )
        if request.path == self.path and request.method == "POST":
            length = _content_length(request.environ)
            if length is None:
                return _json_response(400, {"error": "Content-Length is not a number"})
            if length > MAX_BODY_BYTES:
                return _json_response(413, {"error": "request body too large"})
            if self.app is None:
                return _json_response(503, {"error": "Slack events are received over Socket Mode"})
        return super()._get_http_response(request)
