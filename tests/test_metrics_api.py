"""The push API, driven in-process through WSGI environs on SQLite and Postgres: exact status codes, nothing
half-written, and a fuzzed body that never gets a 5xx."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from typing import Any
from wsgiref.util import setup_testing_defaults

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from bot.metrics.api import MAX_POINTS, MetricsAPI
from bot.metrics.points import points_between
from bot.metrics.registry import archive_metric, get_metric, load_metrics_yaml, upsert_metrics
from bot.metrics.tokens import create_token, revoke_token
from storage.db import Database
from storage.models import ApiToken, MetricPoint
from tests.helpers import unique

METRICS_YAML = """
metrics:
  - {key: latency, name: Latency, unit: duration, summary: max, source: push}
  - {key: signups, name: Signups, unit: count, summary: sum, source: push}
  - {key: nps, name: NPS, unit: ratio, summary: last, source: manual}
  - {key: old, name: Old, unit: count, summary: sum, source: push}
  - key: pulled
    name: Pulled
    unit: count
    summary: sum
    source: builtin
    builtin: {name: feedback_items}
    schedule: {cron: "0 6 * * *"}
"""


class Workspace:
    """A workspace with metrics, a live token, and helpers to call the API as it."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.api = MetricsAPI(db)
        self.team = unique("T")
        specs, errors = load_metrics_yaml(METRICS_YAML)
        assert errors == []
        with db.session() as s:
            upsert_metrics(db_session=s, team_id=self.team, specs=specs)
            archive_metric(db_session=s, team_id=self.team, key="old")
            row, self.token = create_token(db_session=s, team_id=self.team, name="test")
            self.token_id = row.id

    def call(
        self,
        method: str,
        path: str,
        body: bytes | Any = b"",
        *,
        token: str | None = "default",
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        environ: dict[str, Any] = {
            "REQUEST_METHOD": method,
            "PATH_INFO": path,
            "CONTENT_TYPE": "application/json",
            "CONTENT_LENGTH": str(len(raw)),
            "wsgi.input": io.BytesIO(raw),
        }
        if token is not None:
            environ["HTTP_AUTHORIZATION"] = f"Bearer {self.token if token == 'default' else token}"
        for name, value in (headers or {}).items():
            environ[name] = value
        setup_testing_defaults(environ)
        seen: list[tuple[str, list[tuple[str, str]]]] = []
        chunks = self.api(environ, lambda status, hdrs: seen.append((status, hdrs)))
        payload = b"".join(chunks)
        status, hdrs = seen[0]
        return int(status.split()[0]), json.loads(payload) if payload else {}, dict(hdrs)

    def push(self, key: str, body: bytes | Any, **kwargs: Any) -> tuple[int, dict[str, Any]]:
        status, payload, _ = self.call("POST", f"/api/v1/metrics/{key}/points", body, **kwargs)
        return status, payload

    def points(self, key: str) -> list[tuple[datetime, float]]:
        with self.db.read() as s:
            metric = get_metric(db_session=s, team_id=self.team, key=key)
            assert metric is not None
            return [
                (p.ts, p.value) for p in points_between(db_session=s, team_id=self.team, metric_id=metric.id)
            ]


@pytest.fixture
def ws(db: Database) -> Workspace:
    return Workspace(db)


T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def test_single_point_iso_and_epoch(ws: Workspace) -> None:
    assert ws.push("latency", {"ts": "2026-11-02T09:00:00Z", "value": 0.42}) == (
        200,
        {"accepted": 1, "metric": "latency"},
    )
    assert ws.push("latency", {"ts": T0.timestamp() + 3600, "value": 7}) == (
        200,
        {"accepted": 1, "metric": "latency"},
    )
    assert ws.push("latency", {"ts": "2026-11-02T12:00:00+01:00", "value": -1.5})[0] == 200
    assert ws.points("latency") == [
        (T0, 0.42),
        (datetime(2026, 11, 2, 10, 0, tzinfo=UTC), 7.0),
        (datetime(2026, 11, 2, 11, 0, tzinfo=UTC), -1.5),
    ]


def test_batches_replace_and_never_duplicate(ws: Workspace) -> None:
    batch = [{"ts": T0.timestamp() + 86400 * i, "value": i} for i in range(50)]
    assert ws.push("signups", batch) == (200, {"accepted": 50, "metric": "signups"})
    assert ws.push("signups", {"points": batch}) == (200, {"accepted": 50, "metric": "signups"})
    changed = [{**p, "value": p["value"] * 10} for p in batch[:10]]
    assert ws.push("signups", changed)[0] == 200
    points = ws.points("signups")
    assert len(points) == 50
    assert [v for _, v in points[:12]] == [0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 10, 11]
    same_ts_twice = [{"ts": "2026-01-01T00:00:00Z", "value": 1}, {"ts": "2026-01-01T00:00:00Z", "value": 2}]
    assert ws.push("signups", same_ts_twice)[0] == 200
    assert (datetime(2026, 1, 1, tzinfo=UTC), 2.0) in ws.points("signups")
    assert ws.push("signups", []) == (200, {"accepted": 0, "metric": "signups"})


@pytest.mark.parametrize(
    ("authorization", "message"),
    [
        (None, "missing token"),
        ("Basic dXNlcjpwYXNz", "send the token as Authorization: Bearer <token>"),
        ("Bearer prodops_nottherightoneatall000000000000", "invalid token"),
        ("Bearer hunter2", "invalid token"),
    ],
)
def test_wrong_or_missing_token_is_401(ws: Workspace, authorization: str | None, message: str) -> None:
    environ = {"HTTP_AUTHORIZATION": authorization} if authorization else {}
    status, payload, headers = ws.call(
        "POST", "/api/v1/metrics/latency/points", {"ts": 0, "value": 1}, token=None, headers=environ
    )
    assert (status, payload["error"].split(":")[0]) == (401, message.split(":")[0])
    assert headers["WWW-Authenticate"].startswith("Bearer")
    assert ws.points("latency") == []


def test_revoked_token_is_401_and_touches_nothing(ws: Workspace) -> None:
    with ws.db.session() as s:
        revoke_token(db_session=s, team_id=ws.team, token_id=ws.token_id)
    status, payload = ws.push("latency", {"ts": 0, "value": 1})
    assert status == 401 and payload["error"] == f"token {ws.token[:12]}… was revoked"
    assert ws.points("latency") == []


def test_a_token_never_reaches_another_workspace(db: Database) -> None:
    a, b = Workspace(db), Workspace(db)
    status, payload = a.push("latency", {"ts": 0, "value": 1}, token=b.token)
    assert status == 200  # b's own latency metric: same key, b's workspace
    assert a.points("latency") == [] and len(b.points("latency")) == 1
    with db.session() as s:  # a metric only workspace A has
        specs, _ = load_metrics_yaml(
            "metrics:\n  - {key: only_a, name: A, unit: count, summary: sum, source: push}"
        )
        upsert_metrics(db_session=s, team_id=a.team, specs=specs)
    assert a.push("only_a", {"ts": 0, "value": 1}, token=b.token) == (
        404,
        {"error": "no metric only_a in this workspace"},
    )
    status, payload, _ = a.call("GET", "/api/v1/metrics", token=b.token)
    assert "only_a" not in [m["key"] for m in payload["metrics"]]


def test_unknown_archived_and_pulled_metrics(ws: Workspace) -> None:
    point = {"ts": 0, "value": 1}
    assert ws.push("nope", point) == (404, {"error": "no metric nope in this workspace"})
    assert ws.push("BAD KEY!", point)[0] == 404
    assert ws.push("nps", point) == (
        409,
        {"error": "metric nps has source manual, not push: only push metrics accept points here"},
    )
    assert ws.push("pulled", point)[1]["error"].startswith("metric pulled has source builtin")
    assert ws.push("old", point) == (409, {"error": "metric old is archived; it takes no points"})
    assert ws.points("nps") == [] and ws.points("pulled") == [] and ws.points("old") == []


def test_malformed_json_and_wrong_methods(ws: Workspace) -> None:
    assert ws.push("latency", b'{"ts": 0, "value": ')[0] == 400
    assert ws.push("latency", b"\xff\xfe\x00garbage")[0] == 400
    assert ws.push("latency", b"")[1]["error"].startswith("empty body")
    assert ws.push("latency", b"[" * 100_000 + b"]" * 100_000)[0] == 400  # too deep for json: not a 500
    status, payload, headers = ws.call("GET", "/api/v1/metrics/latency/points")
    assert (status, headers["Allow"]) == (405, "POST")
    assert ws.call("DELETE", "/api/v1/metrics")[0] == 405
    assert ws.call("GET", "/api/v1/elsewhere")[0] == 404
    assert ws.call("POST", "/api/v1/metrics/latency/points", headers={"CONTENT_LENGTH": "abc"})[0] == 400
    assert ws.points("latency") == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"ts": 0, "value": "12"}, "value: Input should be a valid number"),
        ({"ts": 0, "value": True}, "value: Input should be a valid number"),
        ({"ts": 0, "value": None}, "value: Input should be a valid number"),
        ({"ts": 0}, "value: Field required"),
        ({"ts": 0, "value": 1, "unit": "ms"}, "unit: Extra inputs are not permitted"),
        ({"ts": "2026-11-02T09:00:00", "value": 1}, 'ts: "2026-11-02T09:00:00" has no time zone'),
        ({"ts": "yesterday", "value": 1}, 'ts: "yesterday" is not an ISO-8601 time'),
        ({"ts": 1793610000000, "value": 1}, "ts: 1.79361e+12 looks like epoch milliseconds; send seconds"),
        ({"ts": 1e300, "value": 1}, "ts: 1e+300 is out of range"),
        ({"ts": "0001-01-01T00:00:00+05:00", "value": 1}, "ts: is out of range"),
        ({"ts": 10**400, "value": 1}, "ts: is out of range"),
        ({"ts": True, "value": 1}, "ts: should be ISO-8601 text or epoch seconds, not true/false"),
        ({"ts": 0, "value": 10**400}, "value: is out of range for a 64-bit float"),
        ({"points": [{"ts": 0, "value": 1}], "extra": 1}, "extra: unknown field"),
        ({"points": {"ts": 0, "value": 1}}, "points: should be a list"),
        ("just text", "the body should be a point"),
    ],
)
def test_invalid_points_are_422_naming_the_field(ws: Workspace, body: Any, message: str) -> None:
    status, payload = ws.push("latency", body)
    assert status == 422, payload
    assert payload["error"].startswith(message), payload


def test_one_bad_point_rejects_the_whole_batch_naming_its_index(ws: Workspace) -> None:
    batch: list[dict[str, Any]] = [{"ts": i, "value": i} for i in range(10)]
    batch[3]["value"] = "n/a"
    batch[7]["ts"] = "later"
    status, payload = ws.push("latency", {"points": batch})
    assert status == 422
    assert payload["error"] == "points[3].value: Input should be a valid number"
    assert payload["errors"][1].startswith('points[7].ts: "later" is not an ISO-8601 time')
    assert payload["error_count"] == 2
    assert ws.points("latency") == []


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_nan_and_infinity_are_refused(ws: Workspace, constant: str) -> None:
    body = f'[{{"ts": 0, "value": 1}}, {{"ts": 60, "value": {constant}}}]'.encode()
    status, payload = ws.push("latency", body)
    assert status == 422 and payload["error"] == "points[1].value: Input should be a finite number"
    body = f'{{"ts": {constant}, "value": 1}}'.encode()
    assert ws.push("latency", body)[0] == 422
    assert ws.points("latency") == []


def test_too_many_points_is_413(ws: Workspace) -> None:
    batch = [{"ts": i, "value": 1} for i in range(MAX_POINTS + 1)]
    status, payload = ws.push("latency", batch)
    assert status == 413 and "10,001 in one request (at most 10,000)" in payload["error"]
    assert ws.push("latency", batch[:MAX_POINTS]) == (200, {"accepted": MAX_POINTS, "metric": "latency"})
    assert len(ws.points("latency")) == MAX_POINTS
    status, _, _ = ws.call(
        "POST", "/api/v1/metrics/latency/points", b"[]", headers={"CONTENT_LENGTH": str(50 * 1024 * 1024)}
    )
    assert status == 413


def test_list_metrics_and_last_used(ws: Workspace) -> None:
    status, payload, _ = ws.call("GET", "/api/v1/metrics")
    assert status == 200
    assert [m["key"] for m in payload["metrics"]] == ["latency", "nps", "pulled", "signups"]
    assert payload["metrics"][0] == {
        "key": "latency", "name": "Latency", "source": "push", "unit": "duration", "summary": "max", "period": "week"
    }  # fmt: skip
    assert ws.call("GET", "/api/v1/metrics", token="nope")[0] == 401
    with ws.db.read() as s:
        assert s.get(ApiToken, ws.token_id).last_used_at is not None  # type: ignore[union-attr]


# ---- fuzz -------------------------------------------------------------------------------------------

JSON_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30)
    | st.sampled_from(["2026-11-02T09:00:00Z", "2026-11-02T09:00:00", "2026-13-45T99:00:00Z", "1793610000"])
)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
)
POINTISH = st.fixed_dictionaries({"ts": JSON_LEAVES, "value": JSON_LEAVES})
BODIES = st.one_of(
    JSON_VALUES.map(lambda v: json.dumps(v).encode()),
    POINTISH.map(lambda v: json.dumps(v).encode()),
    st.lists(POINTISH, max_size=8).map(lambda v: json.dumps(v).encode()),
    st.lists(POINTISH, max_size=8).map(lambda v: json.dumps({"points": v}).encode()),
    st.binary(max_size=200),
)


def _count(db: Database, team: str) -> int:
    with db.read() as s:
        return int(
            s.scalar(select(func.count()).select_from(MetricPoint).where(MetricPoint.team_id == team)) or 0
        )


def test_fuzzed_bodies_never_5xx_and_only_200_writes(db: Database) -> None:
    ws = Workspace(db)

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(body=BODIES, key=st.sampled_from(["latency", "nps", "nope"]))
    def check(body: bytes, key: str) -> None:
        before = _count(db, ws.team)
        status, payload = ws.push(key, body)
        assert 200 <= status < 500, (status, payload, body)
        assert "accepted" in payload if status == 200 else isinstance(payload.get("error"), str)
        after = _count(db, ws.team)
        if status != 200:
            assert after == before, (status, payload, body)

    check()
