"""OAuth end to end against the emulator: install → events for the new team work → uninstall → tokens gone."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from slack_sdk.errors import SlackApiError
from sqlalchemy import select

from bot.digests.outbox import deliver_pending
from bot.security.crypto import SEALED_PREFIX
from bot.slack_client import WorkspaceNotInstalled, team_clients
from storage.models import DigestOutbox, DigestSubscription, Workspace
from storage.types import utcnow
from tests.conftest import Stack
from tests.helpers import items_in_channel, unique, wait_for
from tests.oauth_support import CLIENT_ID, OAuthStack, get, oauth_stack, query_of


@pytest.fixture(scope="module")
def oauth(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OAuthStack]:
    yield from oauth_stack(backend, tmp_path_factory.mktemp("oauth"), PRODOPS_PURGE_GRACE_DAYS="7")


def _new_team(oauth: OAuthStack, name: str) -> str:
    team_id = "T" + unique("").strip("-").upper()[:9]
    oauth.add_team(team_id, name)
    return team_id


def _capture(oauth: OAuthStack, team_id: str) -> tuple[str, int]:
    """A :bulb: reaction in the team; returns the channel and the HTTP status the server answered."""
    emu = oauth.emulator
    author = emu.add_user(unique("alice"), team_id=team_id)
    channel = emu.add_channel(unique("support"), members=[author["id"]], team_id=team_id)
    message = emu.post_message(channel["id"], author["id"], f"Export is slow in {team_id}", team_id=team_id)
    response = oauth.driver(team_id).react(user=author["id"], channel=channel["id"], ts=message["ts"])
    return channel["id"], response.status


def _posts_in(oauth: OAuthStack, channel_id: str) -> list:
    return [c for c in oauth.emulator.calls("chat.postMessage") if c.params.get("channel") == channel_id]


def _bot_token(oauth: OAuthStack, team_id: str) -> str:
    issued = [t for t in oauth.emulator.issued_tokens(team_id, kind="bot") if not t["revoked"]]
    assert issued, f"no bot token issued for {team_id}"
    return str(issued[-1]["token"])


def test_install_redirects_to_slack_with_state_cookie_and_scopes(oauth: OAuthStack) -> None:
    page = get(oauth.server.base_url + "/slack/install")

    assert page.status == 302
    assert page.location.startswith(oauth.emulator.authorize_url + "?")
    query = query_of(page.location)
    assert query["client_id"] == CLIENT_ID
    assert "chat:write" in query["scope"].split(",") and "reactions:read" in query["scope"].split(",")
    assert query["user_scope"] == "users:read"
    assert f"slack-app-oauth-state={query['state']}" in page.headers["set-cookie"]


def test_two_teams_install_and_each_works_with_its_own_token(oauth: OAuthStack) -> None:
    first, second = _new_team(oauth, "Globex"), _new_team(oauth, "Initech")

    for team_id, name in ((first, "Globex"), (second, "Initech")):
        page = oauth.install(team_id)
        assert page.status == 200, page.body
        assert f"ProdOps is installed in {name}" in page.body and "/invite @ProdOps" in page.body

    channels = {team_id: _capture(oauth, team_id) for team_id in (first, second)}
    for team_id, (channel_id, status) in channels.items():
        assert status == 200
        items = wait_for(lambda c=channel_id: items_in_channel(oauth.db, c), what=f"item in {team_id}")
        assert items[0].team_id == team_id
        posts = wait_for(lambda c=channel_id: _posts_in(oauth, c), what=f"confirmation in {team_id}")
        assert {p.token for p in posts} == {_bot_token(oauth, team_id)}
    assert _bot_token(oauth, first) != _bot_token(oauth, second)
    with oauth.db.read() as s:
        names = {t: s.get(Workspace, t).name for t in (first, second)}  # type: ignore[union-attr]
    assert names == {first: "Globex", second: "Initech"}
    for team_id in (first, second):
        rows = oauth.token_rows(team_id)
        assert {r["table"] for r in rows} == {"slack_installations", "slack_bots"}
        assert all(r["bot_token"].startswith(SEALED_PREFIX) for r in rows)
        assert all(_bot_token(oauth, team_id) not in str(r) for r in rows)


def test_jobs_get_each_workspace_client_from_the_store(oauth: OAuthStack) -> None:
    team_id = _new_team(oauth, "Hooli")
    assert oauth.install(team_id).status == 200
    clients = team_clients(oauth.settings(), oauth.db)
    channel = oauth.emulator.add_channel(unique("ops"), team_id=team_id)

    clients.for_team(team_id).chat_postMessage(channel=channel["id"], text="from a job")

    assert [c.token for c in _posts_in(oauth, channel["id"])] == [_bot_token(oauth, team_id)]
    assert team_id in clients.installed_team_ids()
    with pytest.raises(WorkspaceNotInstalled) as refused:
        clients.for_team("TNEVERINSTALLED").chat_postMessage(channel=channel["id"], text="nope")
    assert refused.value.response["error"] == "invalid_auth"


def test_bad_state_cancel_and_missing_cookie_show_what_to_do(oauth: OAuthStack) -> None:
    start = get(oauth.server.base_url + "/slack/install")
    cookie = start.headers["set-cookie"].split(";")[0]
    state = query_of(start.location)["state"]
    redirect = oauth.server.base_url + "/slack/oauth_redirect"

    forged = get(f"{redirect}?code=x&state=forged", cookie="slack-app-oauth-state=forged")
    no_cookie = get(f"{redirect}?code=x&state={state}")
    cancelled = get(f"{redirect}?error=access_denied&state={state}", cookie=cookie)

    assert forged.status == 401
    assert "expired or was already used" in forged.body and "Start over from the install link" in forged.body
    assert no_cookie.status == 400 and "same browser" in no_cookie.body
    assert cancelled.status == 200 and "cancelled" in cancelled.body
    assert all("ProdOps was not installed" in p.body for p in (forged, no_cookie, cancelled))
    assert not oauth.emulator.calls("oauth.v2.access") or all(
        c.params.get("code") != "x" for c in oauth.emulator.calls("oauth.v2.access")
    )


def test_a_used_state_cannot_install_twice(oauth: OAuthStack) -> None:
    team_id = _new_team(oauth, "Vandelay")
    start = get(oauth.server.base_url + "/slack/install")
    cookie = start.headers["set-cookie"].split(";")[0]
    consent = get(start.location + f"&team={team_id}")

    assert get(consent.location, cookie=cookie).status == 200
    replay = get(consent.location, cookie=cookie)

    assert replay.status == 401 and "already used" in replay.body
    assert len(oauth.emulator.issued_tokens(team_id, kind="bot")) == 1


def test_uninstall_deletes_tokens_starts_grace_and_reinstall_clears_it(oauth: OAuthStack) -> None:
    team_id = _new_team(oauth, "Umbrella")
    assert oauth.install(team_id).status == 200
    assert oauth.token_rows(team_id)
    assert oauth.emulator.uninstall(team_id)  # Slack revokes the tokens, then sends app_uninstalled

    response = oauth.driver(team_id).send_event(
        oauth.driver(team_id).event_callback({"type": "app_uninstalled"})
    )

    assert response.status == 200
    wait_for(lambda: not oauth.token_rows(team_id), what="tokens deleted")
    with oauth.db.read() as s:
        workspace = s.get(Workspace, team_id)
        assert workspace is not None and workspace.uninstalled_at is not None
        assert workspace.purge_after == workspace.uninstalled_at + timedelta(days=7)
    channel_id, status = _capture(oauth, team_id)
    assert status == 200  # answered (with Bolt's "please reinstall"), but nothing is done
    assert not items_in_channel(oauth.db, channel_id) and not _posts_in(oauth, channel_id)
    with pytest.raises(SlackApiError):
        team_clients(oauth.settings(), oauth.db).for_team(team_id).auth_test()

    page = oauth.install(team_id)

    assert page.status == 200 and "earlier data was kept" in page.body
    with oauth.db.read() as s:
        workspace = s.get(Workspace, team_id)
        assert workspace is not None and workspace.uninstalled_at is None and workspace.purge_after is None
    channel_id, _ = _capture(oauth, team_id)
    posts = wait_for(lambda: _posts_in(oauth, channel_id), what="works again after re-install")
    assert posts[0].token == _bot_token(oauth, team_id)


def test_tokens_revoked_removes_bot_and_user_tokens(oauth: OAuthStack) -> None:
    team_id = _new_team(oauth, "Soylent")
    installer = oauth.emulator.add_user(unique("owner"), team_id=team_id, is_admin=True)
    assert oauth.install(team_id, user=installer["id"]).status == 200
    rows = oauth.token_rows(team_id)
    assert any(r.get("user_token") for r in rows), "the installer's user token is stored"
    bot_user = oauth.emulator.workspace(team_id)["bot_user_id"]
    oauth.emulator.revoke_tokens(team_id, bot=True, users=[installer["id"]])
    driver = oauth.driver(team_id)

    event = {"type": "tokens_revoked", "tokens": {"oauth": [installer["id"]], "bot": [bot_user]}}
    assert driver.send_event(driver.event_callback(event)).status == 200

    wait_for(
        lambda: not any(v for r in oauth.token_rows(team_id) for k, v in r.items() if k != "table"),
        what="every token of the team gone",
    )
    with oauth.db.read() as s:
        workspace = s.get(Workspace, team_id)
        assert workspace is not None and workspace.uninstalled_at is not None
    channel_id, _ = _capture(oauth, team_id)
    assert not items_in_channel(oauth.db, channel_id)


def test_expiring_token_is_rotated_with_the_refresh_token(oauth: OAuthStack) -> None:
    team_id = _new_team(oauth, "Cyberdyne")
    # Tokens valid for an hour: inside the 120-minute rotation window from the start.
    oauth.emulator.enable_oauth(
        CLIENT_ID,
        oauth.env["SLACK_CLIENT_SECRET"],
        redirect_uri=oauth.server.base_url + "/slack/oauth_redirect",
        token_rotation=True,
        expires_in=3600,
    )
    try:
        assert oauth.install(team_id).status == 200
    finally:
        oauth.emulator.enable_oauth(
            CLIENT_ID,
            oauth.env["SLACK_CLIENT_SECRET"],
            redirect_uri=oauth.server.base_url + "/slack/oauth_redirect",
        )
    first = oauth.emulator.issued_tokens(team_id, kind="bot")[0]["token"]
    assert first.startswith("xoxe.xoxb-")
    refreshes_before = len([c for c in oauth.emulator.calls("oauth.v2.access") if c.params.get("grant_type")])

    channel_id, _ = _capture(oauth, team_id)

    posts = wait_for(lambda: _posts_in(oauth, channel_id), what="confirmation")
    refreshes = [
        c for c in oauth.emulator.calls("oauth.v2.access") if c.params.get("grant_type") == "refresh_token"
    ]
    assert len(refreshes) > refreshes_before
    assert posts[0].token != first and posts[0].token.startswith("xoxe.xoxb-")
    stored = team_clients(oauth.settings(), oauth.db).for_team(team_id)
    assert stored.auth_test()["team_id"] == team_id  # the job path rotates through the store as well
    assert all(first not in str(r) for r in oauth.token_rows(team_id))


def test_digest_worker_posts_with_each_workspace_token_and_pauses_an_uninstalled_one(
    oauth: OAuthStack,
) -> None:
    teams = [_new_team(oauth, "Acme West"), _new_team(oauth, "Acme East"), _new_team(oauth, "Acme Gone")]
    for team_id in teams:
        assert oauth.install(team_id).status == 200
    gone = teams[2]
    oauth.emulator.uninstall(gone)
    driver = oauth.driver(gone)
    driver.send_event(driver.event_callback({"type": "app_uninstalled"}))
    wait_for(lambda: not oauth.token_rows(gone), what="tokens of the uninstalled team deleted")
    now = utcnow()
    channels, subscriptions = {}, {}
    with oauth.db.session() as s:
        for team_id in teams:
            channels[team_id] = oauth.emulator.add_channel(unique("digest"), team_id=team_id)["id"]
            subscription = DigestSubscription(
                team_id=team_id, channel_id=channels[team_id], name="Weekly", cadence="weekly",
                cron="0 9 * * 1", timezone="UTC", sections={}, skip_if_empty=False,
                created_by_user_id="U0CREATOR", next_run_at=now + timedelta(days=7),
            )  # fmt: skip
            s.add(subscription)
            s.flush()
            subscriptions[team_id] = subscription.id
            s.add(
                DigestOutbox(
                    team_id=team_id, subscription_id=subscription.id, period_key="2026-11-23..2026-11-30",
                    channel_id=channels[team_id], text=f"Digest for {team_id}", blocks=[], status="pending",
                    attempts=0, next_attempt_at=now,
                )
            )  # fmt: skip

    deliver_pending(db=oauth.db, client=team_clients(oauth.settings(), oauth.db, retry_handlers=[]), now=now)

    for team_id in teams[:2]:
        posts = _posts_in(oauth, channels[team_id])
        assert [p.token for p in posts] == [_bot_token(oauth, team_id)]
    assert not _posts_in(oauth, channels[gone])
    with oauth.db.read() as s:
        row = s.scalars(select(DigestOutbox).where(DigestOutbox.team_id == gone)).one()
        paused = s.get(DigestSubscription, subscriptions[gone])
        assert row.status == "failed" and row.last_error == "invalid_auth"
        assert paused is not None and paused.paused_at is not None


def test_single_workspace_server_says_it_has_no_install_page(stack: Stack) -> None:
    page = get(stack.server.base_url + "/slack/install")

    assert page.status == 404
    assert "one workspace (SLACK_BOT_TOKEN)" in page.body and "SLACK_CLIENT_ID" in page.body


def test_job_client_rotates_an_expiring_token_and_saves_it(oauth: OAuthStack) -> None:
    team_id = _new_team(oauth, "Tyrell")
    redirect = oauth.server.base_url + "/slack/oauth_redirect"
    secret = oauth.env["SLACK_CLIENT_SECRET"]
    oauth.emulator.enable_oauth(
        CLIENT_ID, secret, redirect_uri=redirect, token_rotation=True, expires_in=3600
    )
    try:
        assert oauth.install(team_id).status == 200
        installed = oauth.emulator.issued_tokens(team_id, kind="bot")[-1]["token"]
        clients = team_clients(oauth.settings(), oauth.db)

        assert clients.for_team(team_id).auth_test()["team_id"] == team_id
    finally:
        oauth.emulator.enable_oauth(CLIENT_ID, secret, redirect_uri=redirect)

    refreshed = oauth.emulator.issued_tokens(team_id, kind="bot")[-1]["token"]
    assert refreshed != installed
    assert [c.token for c in oauth.emulator.calls("auth.test") if c.token in (installed, refreshed)][
        -1
    ] == refreshed
    # That token also expires within the rotation window: the next call rotates again (now for 12 hours)...
    assert clients.for_team(team_id).auth_test()["team_id"] == team_id
    issued = len(oauth.emulator.issued_tokens(team_id, kind="bot"))
    assert issued == 3
    # ...after which the token is reused from the cache, with no further refresh.
    assert clients.for_team(team_id).auth_test()["team_id"] == team_id
    assert len(oauth.emulator.issued_tokens(team_id, kind="bot")) == issued
    assert all(installed not in str(r) and refreshed not in str(r) for r in oauth.token_rows(team_id))
