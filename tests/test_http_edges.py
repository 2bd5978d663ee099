"""What the server does with requests that are not good Slack requests: refused, nothing stored."""

from __future__ import annotations

import http.client
import json
import time
import urllib.request

import pytest

from tests.conftest import Stack
from tests.helpers import inbox_rows, items_in_channel, unique


def _reaction_event(stack: Stack) -> tuple[dict, str]:
    emu = stack.emulator
    user = emu.add_user(unique("u"))
    channel = emu.add_channel(unique("c"), members=[user["id"]])
    message = emu.post_message(channel["id"], user["id"], "Please add dark mode")
    event = stack.driver.event_callback(
        stack.driver.reaction_added_event(
            user=user["id"], reaction="bulb", channel=channel["id"], ts=message["ts"]
        )
    )
    return event, channel["id"]


@pytest.mark.parametrize(
    "how",
    [
        {"signed": False},
        {"timestamp": int(time.time()) - 6 * 60},  # stale: older than 5 minutes
        {"tamper_after_signing": True},
        {"signature": "v0=" + "0" * 64},
    ],
    ids=["unsigned", "stale-timestamp", "tampered-body", "wrong-signature"],
)
def test_bad_signatures_get_401_and_store_nothing(stack: Stack, how: dict) -> None:
    event, channel_id = _reaction_event(stack)
    response = stack.driver.send_raw(json.dumps(event), content_type="application/json", **how)
    assert response.status == 401
    time.sleep(0.5)
    assert inbox_rows(stack.db, event["event_id"]) == []
    assert items_in_channel(stack.db, channel_id) == []


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        ('{"type": "event_callback", "event": ', "application/json"),
        ("[1, 2, 3]", "application/json"),
        ("payload=%7Bnot-json", "application/x-www-form-urlencoded"),
    ],
    ids=["truncated-json", "json-array", "form-payload-not-json"],
)
def test_malformed_signed_bodies_get_400(stack: Stack, body: str, content_type: str) -> None:
    response = stack.driver.send_raw(body, content_type=content_type)
    assert response.status == 400
    assert stack.server.health() == 200  # and the server is still fine


def test_oversized_body_gets_413_before_it_is_read(stack: Stack) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", stack.server.port, timeout=10)
    conn.putrequest("POST", "/slack/events")
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Content-Length", str(50 * 1_048_576))
    conn.endheaders()  # the 50 MiB body is never sent: the server must answer from the headers alone
    response = conn.getresponse()
    assert response.status == 413
    conn.close()


def test_other_paths_and_methods_get_404(stack: Stack) -> None:
    for method, path in (("GET", "/slack/events"), ("GET", "/"), ("POST", "/nope")):
        request = urllib.request.Request(
            stack.server.base_url + path, method=method, data=b"" if method == "POST" else None
        )
        try:
            urllib.request.urlopen(request, timeout=5)
            status = 200
        except urllib.error.HTTPError as exc:
            status = exc.code
        assert status == 404, (method, path)


def test_healthz_does_a_database_round_trip(stack: Stack) -> None:
    with urllib.request.urlopen(stack.server.base_url + "/healthz", timeout=5) as response:
        body = json.loads(response.read())
    assert response.status == 200
    assert body["database"] == "ok"
    assert body["backend"] == ("sqlite" if stack.db_url.startswith("sqlite") else "postgresql")


def test_url_verification_challenge_is_answered(stack: Stack) -> None:
    body = json.dumps({"token": "x", "challenge": "abc123", "type": "url_verification"})
    response = stack.driver.send_raw(body, content_type="application/json")
    assert response.status == 200
    assert "abc123" in response.body
