"""Every Slack Web API call the bot's clients make is counted by method and status (emulator, real HTTP)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.devkit.emulator import SlackEmulator
from bot.devkit.server_process import free_port
from bot.settings import Settings
from bot.slack_client import SlackCallMeter, api_method, build_client, metered, team_clients


@pytest.fixture(scope="module")
def emu() -> Iterator[SlackEmulator]:
    with SlackEmulator() as emulator:
        yield emulator


def _settings(emu: SlackEmulator, url: str | None = None) -> Settings:
    return Settings(
        SLACK_BOT_TOKEN=emu.bot_token,
        SLACK_SIGNING_SECRET="secret",
        SLACK_API_URL=url or emu.url,
        SLACK_CLIENT_ID="",
        SLACK_CLIENT_SECRET="",
    )


def _count(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_method_names_come_from_the_url() -> None:
    assert api_method("http://127.0.0.1:4000/api/chat.postMessage") == "chat.postMessage"
    assert (
        api_method("https://slack.com/api/admin.conversations.search?cursor=x")
        == "admin.conversations.search"
    )
    assert api_method("https://files.slack.com/upload/v1/ABC123") == "other"


def test_calls_errors_and_server_errors_are_counted(emu: SlackEmulator) -> None:
    client = build_client(_settings(emu))
    ok_before = _count("prodops_slack_api_requests_total", method="auth.test", status="200")
    client.auth_test()
    assert _count("prodops_slack_api_requests_total", method="auth.test", status="200") == ok_before + 1

    errors_before = _count("prodops_slack_api_errors_total", method="auth.test", error="fatal_error")
    emu.fail("auth.test", status=200, error="fatal_error")
    with pytest.raises(SlackApiError):
        client.auth_test()
    assert (
        _count("prodops_slack_api_errors_total", method="auth.test", error="fatal_error") == errors_before + 1
    )

    server_before = _count("prodops_slack_api_requests_total", method="users.list", status="500")
    emu.fail("users.list", status=500)
    client.users_list()  # retried by the SDK, then answered
    assert _count("prodops_slack_api_requests_total", method="users.list", status="500") == server_before + 1


def test_clients_without_retries_still_count_429s(emu: SlackEmulator) -> None:
    """Digest delivery's clients have no retry handlers: the 429 is counted, nothing is waited."""
    client = team_clients(_settings(emu), retry_handlers=[]).for_team(emu.team_id)
    assert [type(h) for h in client.retry_handlers] == [SlackCallMeter]
    limited = _count("prodops_slack_rate_limited_total", method="conversations.list")
    waited = _count("prodops_slack_retry_after_seconds_total", method="conversations.list")
    emu.fail("conversations.list", status=429, retry_after=30)
    with pytest.raises(SlackApiError):
        client.conversations_list()
    assert _count("prodops_slack_rate_limited_total", method="conversations.list") == limited + 1
    assert _count("prodops_slack_retry_after_seconds_total", method="conversations.list") == waited


def test_bolt_s_per_request_copy_of_the_client_is_counted(emu: SlackEmulator) -> None:
    """Bolt builds a plain WebClient per request with a copy of the app client's retry handlers."""
    app_client = build_client(_settings(emu))
    per_request = WebClient(
        token=emu.bot_token, base_url=app_client.base_url, retry_handlers=app_client.retry_handlers.copy()
    )
    before = _count("prodops_slack_api_requests_total", method="conversations.info", status="200")
    channel = emu.add_channel("metering")["id"]
    per_request.conversations_info(channel=channel)
    assert _count("prodops_slack_api_requests_total", method="conversations.info", status="200") == before + 1


def test_unreachable_slack_counts_each_attempt(emu: SlackEmulator) -> None:
    client = build_client(_settings(emu, url=f"http://127.0.0.1:{free_port()}/api/"))
    before = _count("prodops_slack_api_requests_total", method="auth.test", status="network_error")
    with pytest.raises(OSError):
        client.auth_test()
    # the first try and the ConnectionErrorRetryHandler's two retries
    assert (
        _count("prodops_slack_api_requests_total", method="auth.test", status="network_error") == before + 3
    )


def test_metered_puts_the_meter_first_once() -> None:
    handlers = metered([])
    assert [type(h) for h in handlers] == [SlackCallMeter]
    assert metered(handlers) == handlers
    assert isinstance(metered(None)[0], SlackCallMeter) and len(metered(None)) == 2  # + the SDK's default
