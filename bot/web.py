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
        body = request.get_body()
        headers = request.get_headers()
        raw_type = headers.get("content-type") or ""
        content_type = (raw_type if isinstance(raw_type, str) else raw_type[0]).split(";")[0].strip()
        try:
            parsed = parse_body(body, content_type)
        except ValueError:  # json.JSONDecodeError is a ValueError
            return BoltResponse(status=400, body="malformed body: expected Slack's JSON or form encoding")
        if not isinstance(parsed, dict):
            return BoltResponse(status=400, body="malformed body: expected a JSON object")
        return self.app.dispatch(BoltRequest(body=body, query=request.query_string, headers=headers))

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
            length = int(request.environ.get("CONTENT_LENGTH") or 0)
            if length > MAX_BODY_BYTES:
                return _json_response(413, {"error": "request body too large"})
            if self.app is None:
                return _json_response(503, {"error": "Slack events are received over Socket Mode"})
        return super()._get_http_response(request)
