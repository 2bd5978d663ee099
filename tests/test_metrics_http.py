"""The push API through the real server: a token's workspace, idempotent points, clean refusals."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from bot.metrics.points import points_between
from bot.metrics.tokens import create_token
from storage.models import Metric
from tests.conftest import Stack
from tests.helpers import unique


def _post(stack: Stack, path: str, body: object, token: str | None) -> tuple[int, dict]:
    request = urllib.request.Request(
        stack.server.base_url + path,
        data=json.dumps(body).encode(),
        headers={
            "Content-Type": "application/json",
            **({"Authorization": f"Bearer {token}"} if token else {}),
        },
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def test_push_points_over_http(stack: Stack) -> None:
    key = unique("signups").replace("-", "_")
    with stack.db.session() as s:
        metric = Metric(team_id=stack.team_id, key=key, name="Signups", unit="count", direction="up_is_good",
                        summary="sum", source="push")  # fmt: skip
        s.add(metric)
        s.flush()
        metric_id = metric.id
        _, token = create_token(db_session=s, team_id=stack.team_id, name="pipeline")
        _, foreign = create_token(db_session=s, team_id=unique("T"), name="other workspace")
    body = {
        "points": [{"ts": "2026-11-02T00:00:00Z", "value": 12}, {"ts": "2026-11-03T00:00:00Z", "value": 15}]
    }

    assert _post(stack, f"/api/v1/metrics/{key}/points", body, token) == (200, {"accepted": 2, "metric": key})
    assert _post(stack, f"/api/v1/metrics/{key}/points", body, token)[0] == 200  # a repeat replaces
    assert _post(stack, f"/api/v1/metrics/{key}/points", body, None)[0] == 401
    assert _post(stack, f"/api/v1/metrics/{key}/points", body, foreign)[0] == 404
    status, error = _post(
        stack, f"/api/v1/metrics/{key}/points", [{"ts": "2026-11-04T00:00:00Z", "value": "x"}], token
    )
    assert status == 422 and "value" in json.dumps(error)

    with stack.db.read() as s:
        stored = points_between(db_session=s, team_id=stack.team_id, metric_id=metric_id)
    assert [p.value for p in stored] == [12.0, 15.0]
