"""The push API: `POST /api/v1/metrics/{key}/points` and `GET /api/v1/metrics`, a small WSGI app.

    curl -X POST https://prodops.example.com/api/v1/metrics/api_latency_p95/points \\
      -H "Authorization: Bearer prodops_…" -H "Content-Type: application/json" \\
      -d '[{"ts": "2026-11-02T09:00:00Z", "value": 0.42}, {"ts": 1793610000, "value": 0.39}]'

The body is one point `{"ts", "value"}`, a list of them, or `{"points": [...]}` (at most 10,000). `ts` is
ISO-8601 with a zone (`Z`, `+01:00`) or epoch seconds; `value` a finite number. A point at a time that
already has one replaces it, so sending a batch again is safe. A request is all-or-nothing. Answers are
JSON: 200 `{"accepted": n, "metric": key}`; otherwise `{"error": "..."}` with 400 (not JSON), 401 (token),
404 (no such metric in the token's workspace), 405, 409 (not a push metric, or archived), 413 (too big),
422 (a point is invalid: `points[3].value: Input should be a valid number`), 429 (too many requests for
this token: wait `Retry-After` seconds; see bot/security/ratelimit.py), 503 (database unavailable).
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator
from sqlalchemy.exc import SQLAlchemyError

from bot.metrics.points import Point, upsert_points
from bot.metrics.registry import KEY, get_metric, list_metrics
from bot.metrics.tokens import authenticate, find_token, hash_token
from bot.security.ratelimit import TokenBucket, push_bucket, retry_after_seconds
from storage.db import Database

logger = logging.getLogger("prodops.metrics.api")

API_PREFIX = "/api/v1/"
METRICS_PATH = "/api/v1/metrics"
POINTS_PATH = re.compile(r"^/api/v1/metrics/([^/]{1,100})/points/?$")
MAX_POINTS = 10_000
MAX_BODY_BYTES = 4 * 1024 * 1024  # 10,000 points are ~0.8 MB of JSON; room for whitespace
MAX_ERRORS = 20
EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)
MAX_FLOAT = 1.7976931348623157e308

StartResponse = Callable[..., Any]


# ---- the body -------------------------------------------------------------------------------------


def _epoch(value: float) -> datetime:
    if not math.isfinite(value):
        raise ValueError("must be ISO-8601 or epoch seconds, not NaN or Infinity")
    if value >= LATEST.timestamp() and value / 1000 < LATEST.timestamp():
        raise ValueError(f"{value:g} looks like epoch milliseconds; send seconds")
    if not EARLIEST.timestamp() <= value < LATEST.timestamp():
        raise ValueError(f"{value:g} is out of range (years 1900 to 2199)")
    return datetime.fromtimestamp(value, UTC)


def _timestamp(value: Any) -> Any:
    """ISO-8601 text with a zone, or epoch seconds → aware UTC datetime."""
    if isinstance(value, bool):
        raise ValueError("should be ISO-8601 text or epoch seconds, not true/false")
    if isinstance(value, int | float):
        try:
            return _epoch(float(value))
        except OverflowError:
            raise ValueError("is out of range (years 1900 to 2199)") from None
    if not isinstance(value, str):
        raise ValueError("should be ISO-8601 text (2026-11-02T09:00:00Z) or epoch seconds")
    text = value.strip()
    try:
        parsed = datetime.fromisoformat(text[:-1] + "+00:00" if text[-1:] in ("Z", "z") else text)
    except ValueError:
        raise ValueError(f'"{value[:40]}" is not an ISO-8601 time like 2026-11-02T09:00:00Z') from None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise ValueError(
            f'"{value[:40]}" has no time zone: add Z or an offset like +01:00, or send epoch seconds'
        )
    try:
        parsed = parsed.astimezone(UTC)
    except (OverflowError, ValueError):
        raise ValueError("is out of range (years 1900 to 2199)") from None
    if not EARLIEST <= parsed < LATEST:
        raise ValueError("is out of range (years 1900 to 2199)")
    return parsed


class PointIn(BaseModel):
    """One pushed point."""

    model_config = ConfigDict(extra="forbid")

    ts: datetime
    value: float = Field(strict=True, allow_inf_nan=False)

    @field_validator("ts", mode="before")
    @classmethod
    def _ts(cls, value: Any) -> Any:
        return _timestamp(value)

    @field_validator("value", mode="before")
    @classmethod
    def _in_range(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_FLOAT:
            raise ValueError("is out of range for a 64-bit float")
        return value


POINTS = TypeAdapter(list[PointIn])


@dataclass(eq=False)
class Reply(Exception):
    """An answer, raised from inside a transaction so that it rolls back."""

    status: int
    payload: dict[str, Any]
    headers: list[tuple[str, str]] = field(default_factory=list)


def _error(status: int, message: str, **extra: Any) -> Reply:
    return Reply(status, {"error": message, **extra})


def _location(prefix: str, loc: tuple[Any, ...]) -> str:
    text = prefix
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _messages(exc: ValidationError, prefix: str) -> list[str]:
    found: list[str] = []
    for error in exc.errors(include_url=False):
        message = str(error["msg"]).removeprefix("Value error, ")
        line = f"{_location(prefix, tuple(error['loc']))}: {message}"
        if line not in found:
            found.append(line)
    return found


def _reject_constant(name: str) -> float:
    """NaN / Infinity / -Infinity in the JSON text: kept as a float so the error names its point."""
    return float(name.replace("Infinity", "inf"))


def parse_points(body: bytes) -> list[Point]:
    """The request body → points (aware UTC); raises Reply 400 / 413 / 422 naming the point and field."""
    if not body.strip():
        raise _error(400, 'empty body: send JSON like {"ts": "2026-11-02T09:00:00Z", "value": 42}')
    try:
        document = json.loads(body, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        detail = f" ({exc})" if isinstance(exc, json.JSONDecodeError) else ""
        raise _error(400, f"malformed JSON{detail}") from None
    prefix = "points"
    if isinstance(document, dict) and "points" in document:
        extra = sorted(str(k) for k in document if k != "points")
        if extra:
            raise _error(422, f'{extra[0]}: unknown field (send {{"points": [...]}} and nothing else)')
        items = document["points"]
        if not isinstance(items, list):
            raise _error(422, "points: should be a list of {ts, value}")
    elif isinstance(document, list):
        items = document
    elif isinstance(document, dict):
        items, prefix = [document], ""
    else:
        raise _error(422, 'the body should be a point {ts, value}, a list of them, or {"points": [...]}')
    if len(items) > MAX_POINTS:
        raise _error(
            413, f"too many points: {len(items):,} in one request (at most {MAX_POINTS:,}); split it"
        )
    try:
        validated = POINTS.validate_python(items)
    except ValidationError as exc:
        messages = _messages(exc, prefix)
        if not prefix:  # a single point: "value: ..." rather than "[0].value: ..."
            messages = [m.removeprefix("[0].") for m in messages]
        raise _error(422, messages[0], errors=messages[:MAX_ERRORS], error_count=len(messages)) from None
    return [Point(p.ts, p.value) for p in validated]


# ---- the WSGI app ---------------------------------------------------------------------------------


def _bearer(environ: dict[str, Any]) -> str:
    header = str(environ.get("HTTP_AUTHORIZATION") or "").strip()
    scheme, _, token = header.partition(" ")
    if not header:
        raise _error(401, "missing token: send Authorization: Bearer <token> (prodops tokens create)")
    if scheme.lower() != "bearer" or not token.strip():
        raise _error(401, "send the token as Authorization: Bearer <token>")
    return token.strip()


def _read_body(environ: dict[str, Any]) -> bytes:
    stream = environ.get("wsgi.input")
    raw_length = str(environ.get("CONTENT_LENGTH") or "").strip()
    chunked = "chunked" in str(environ.get("HTTP_TRANSFER_ENCODING") or "").lower()
    try:
        if raw_length:
            length = int(raw_length)
            if length < 0:
                raise ValueError(raw_length)
            if length > MAX_BODY_BYTES:
                raise _error(413, f"request body too large (at most {MAX_BODY_BYTES:,} bytes)")
            body = stream.read(length) if stream is not None and length else b""
        elif chunked and stream is not None:
            body = stream.read(MAX_BODY_BYTES + 1)
            if len(body) > MAX_BODY_BYTES:
                raise _error(413, f"request body too large (at most {MAX_BODY_BYTES:,} bytes)")
        else:
            body = b""
    except ValueError:
        raise _error(400, "Content-Length is not a number") from None
    except OSError:
        raise _error(400, "the request body could not be read") from None
    return bytes(body)


class MetricsAPI:
    """WSGI app for /api/v1/…: token auth per workspace, push points, list metrics."""

    def __init__(self, db: Database, limiter: TokenBucket | None = None) -> None:
        self.db = db
        self.limiter = limiter or push_bucket()

    @staticmethod
    def handles(path: str) -> bool:
        """Whether a request path belongs to this API (mount it before Bolt's catch-all)."""
        return path == API_PREFIX.rstrip("/") or path.startswith(API_PREFIX)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        reply = self.respond(environ)
        body = json.dumps(reply.payload).encode("utf-8")
        headers = [
            ("Content-Type", "application/json; charset=utf-8"),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
            *reply.headers,
        ]
        start_response(f"{reply.status} {_REASONS.get(reply.status, 'Error')}", headers)
        return [] if environ.get("REQUEST_METHOD") == "HEAD" else [body]

    def respond(self, environ: dict[str, Any]) -> Reply:
        """Routes one request; every answer, error or not, is a Reply."""
        path = str(environ.get("PATH_INFO") or "")
        method = str(environ.get("REQUEST_METHOD") or "GET").upper()
        try:
            if path.rstrip("/") == METRICS_PATH:
                if method not in ("GET", "HEAD"):
                    raise Reply(
                        405, {"error": f"{method} is not allowed here; use GET"}, [("Allow", "GET, HEAD")]
                    )
                return self.list_metrics(environ)
            match = POINTS_PATH.match(path)
            if match is None:
                raise _error(404, f"no such endpoint: {path[:100]} (see POST /api/v1/metrics/KEY/points)")
            if method != "POST":
                raise Reply(405, {"error": f"{method} is not allowed here; use POST"}, [("Allow", "POST")])
            return self.push(environ, match.group(1))
        except Reply as reply:
            if reply.status == 401:
                reply.headers.append(("WWW-Authenticate", 'Bearer realm="prodops"'))
            return reply
        except SQLAlchemyError as exc:
            logger.warning("push API: database problem: %s", exc.__class__.__name__)
            return Reply(503, {"error": "the database is unavailable; retry shortly"}, [("Retry-After", "5")])
        except Exception:
            logger.exception("push API: unexpected error on %s %s", method, path[:100])
            return Reply(500, {"error": "internal error"})

    def _within_limit(self, plaintext: str) -> None:
        """Raises 429 with Retry-After when this token is over its request rate (checked before any work)."""
        wait = self.limiter.take(hash_token(plaintext))
        if wait > 0:
            seconds = retry_after_seconds(wait)
            raise Reply(
                429,
                {"error": f"too many requests for this token; retry in {seconds} s", "retry_after": seconds},
                [("Retry-After", str(seconds))],
            )

    def _workspace(self, s: Any, plaintext: str) -> str:
        token = authenticate(db_session=s, plaintext=plaintext)
        if token is not None:
            return token.team_id
        known = find_token(db_session=s, plaintext=plaintext)
        if known is not None and known.revoked_at is not None:
            raise _error(401, f"token {known.prefix}… was revoked")
        raise _error(401, "invalid token")

    def push(self, environ: dict[str, Any], key: str) -> Reply:
        """POST /api/v1/metrics/{key}/points: all the points or none, in one transaction."""
        plaintext = _bearer(environ)
        self._within_limit(plaintext)
        body = _read_body(environ)
        try:
            points: list[Point] | Reply = parse_points(body)  # outside the transaction: it holds a lock
        except Reply as problem:
            points = problem
        with self.db.session() as s:
            team_id = self._workspace(s, plaintext)
            metric = get_metric(db_session=s, team_id=team_id, key=key) if KEY.match(key) else None
            if metric is None:
                raise _error(404, f"no metric {key[:64]} in this workspace")
            if metric.archived_at is not None:
                raise _error(409, f"metric {key} is archived; it takes no points")
            if metric.source != "push":
                raise _error(
                    409,
                    f"metric {key} has source {metric.source}, not push: only push metrics accept points here",
                )
            if isinstance(points, Reply):
                raise points
            ordered = sorted(
                points, key=lambda p: p.ts
            )  # one lock order, so concurrent batches never deadlock
            upsert_points(db_session=s, team_id=team_id, metric_id=metric.id, points=ordered)
        return Reply(200, {"accepted": len(points), "metric": key})

    def list_metrics(self, environ: dict[str, Any]) -> Reply:
        """GET /api/v1/metrics: the token's workspace's metrics (key, name, source, unit, summary, period)."""
        plaintext = _bearer(environ)
        self._within_limit(plaintext)
        with self.db.session() as s:
            team_id = self._workspace(s, plaintext)
            metrics = [
                {
                    "key": m.key,
                    "name": m.name,
                    "source": m.source,
                    "unit": m.unit,
                    "summary": m.summary,
                    "period": m.period,
                }
                for m in list_metrics(db_session=s, team_id=team_id)
            ]
        return Reply(200, {"metrics": metrics})


_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Content Too Large",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
