"""The Slack emulator, driven only through the unmodified slack_sdk.WebClient plus its seeding/inspection API."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler, ServerErrorRetryHandler

from bot.devkit.emulator import SlackEmulator

BLOCKS = [{"type": "section", "block_id": "b1", "text": {"type": "mrkdwn", "text": "*hello*"}}]
MODAL = {
    "type": "modal",
    "title": {"type": "plain_text", "text": "Edit"},
    "blocks": BLOCKS,
    "callback_id": "edit",
}


@pytest.fixture
def emu() -> Iterator[SlackEmulator]:
    """A fresh emulator per test."""
    with SlackEmulator() as emulator:
        yield emulator


@pytest.fixture
def client(emu: SlackEmulator) -> WebClient:
    """A WebClient with the bot token, pointed at the emulator."""
    return WebClient(token=emu.bot_token, base_url=emu.url)


@pytest.fixture
def general(emu: SlackEmulator) -> dict:
    """A public channel with alice and bob in it (and the bot)."""
    alice = emu.add_user("alice")
    bob = emu.add_user("bob")
    return emu.add_channel("general", members=[alice["id"], bob["id"]])


def slack_error(call) -> SlackApiError:
    """Run a call expected to fail and return the SlackApiError."""
    with pytest.raises(SlackApiError) as info:
        call()
    return info.value


def error_of(call) -> str:
    """Run a call expected to fail and return Slack's error code."""
    return slack_error(call).response["error"]


# ---- auth and plumbing ------------------------------------------------------------


def test_url_shape_and_auth_test(emu: SlackEmulator, client: WebClient) -> None:
    assert emu.url == emu.root_url + "/api/" and emu.root_url.startswith("http://127.0.0.1:")
    answer = client.auth_test()
    assert answer["url"] == "https://acme.slack.com/"
    assert (answer["team_id"], answer["user_id"], answer["bot_id"], answer["team"]) == (
        "T0PRODOPS",
        "U0BOT",
        "B0BOT",
        "Acme Corp",
    )
    headers = {k.lower(): v for k, v in answer.headers.items()}
    assert headers["content-type"] == "application/json; charset=utf-8"


def test_auth_errors_and_unknown_method_are_recorded(emu: SlackEmulator) -> None:
    assert error_of(lambda: WebClient(base_url=emu.url).auth_test()) == "not_authed"
    assert error_of(lambda: WebClient(token="xoxb-wrong", base_url=emu.url).auth_test()) == "invalid_auth"
    good = WebClient(token=emu.bot_token, base_url=emu.url)
    assert error_of(lambda: good.api_call("chat.doesNotExist")) == "unknown_method"
    calls = emu.calls()
    assert [(c.method, c.token, c.http_status) for c in calls] == [
        ("auth.test", None, 200),
        ("auth.test", "xoxb-wrong", 200),
        ("chat.doesNotExist", emu.bot_token, 200),
    ]
    assert calls[1].response == {"ok": False, "error": "invalid_auth"}
    emu.reset_calls()
    assert emu.calls() == []


def test_token_param_and_get_with_query_string(emu: SlackEmulator) -> None:
    with urllib.request.urlopen(f"{emu.url}auth.test?token={emu.bot_token}", timeout=5) as answer:
        body = json.loads(answer.read())
    assert body["ok"] is True and body["user_id"] == "U0BOT"
    assert emu.calls("auth.test")[0].token == emu.bot_token


def test_calls_record_decoded_blocks_from_form_and_json(
    emu: SlackEmulator, client: WebClient, general
) -> None:
    client.chat_postMessage(channel=general["id"], text="json body", blocks=BLOCKS)
    client.api_call(
        "chat.postMessage", params={"channel": general["id"], "text": "form", "blocks": json.dumps(BLOCKS)}
    )
    calls = emu.calls("chat.postMessage")
    assert [c.params["blocks"] for c in calls] == [BLOCKS, BLOCKS]
    assert [m.get("blocks") for m in emu.messages(general["id"])] == [BLOCKS, BLOCKS]
    assert calls[0].response["ok"] is True and calls[0].at <= calls[1].at


def test_ts_values_are_unique_and_increasing_across_threads(
    emu: SlackEmulator, client: WebClient, general
) -> None:
    results: list[str] = []

    def post(n: int) -> None:
        for i in range(5):
            results.append(client.chat_postMessage(channel=general["id"], text=f"{n}-{i}")["ts"])

    workers = [threading.Thread(target=post, args=(n,)) for n in range(6)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    stored = [m["ts"] for m in emu.messages(general["id"])]
    assert len(set(results)) == 30 and sorted(results) == stored
    assert all(len(ts.split(".")[1]) == 6 for ts in stored)
    assert stored == sorted(stored, key=float)


# ---- chat -------------------------------------------------------------------------


def test_thread_replies_update_parent_counters(emu: SlackEmulator, client: WebClient, general) -> None:
    alice, bob = (general_members := emu.channel("general")["members"])[0], general_members[1]
    parent = emu.post_message("general", alice, "Export to CSV drops a column")
    first = client.chat_postMessage(channel=general["id"], text="Got it", thread_ts=parent["ts"])
    emu.post_message(general["id"], bob, "Me too", thread_ts=parent["ts"])
    last = client.chat_postMessage(channel=general["id"], text="Tracked as #1", thread_ts=parent["ts"])

    assert first["channel"] == general["id"] and first["message"]["bot_id"] == "B0BOT"
    assert first["message"]["user"] == "U0BOT" and first["message"]["app_id"] == "A0PRODOPS"
    history = client.conversations_history(channel=general["id"])["messages"]
    assert len(history) == 1
    top = history[0]
    assert (top["ts"], top["thread_ts"], top["reply_count"], top["latest_reply"]) == (
        parent["ts"],
        parent["ts"],
        3,
        last["ts"],
    )
    assert top["reply_users"] == ["U0BOT", bob] and top["reply_users_count"] == 2
    thread = client.conversations_replies(channel=general["id"], ts=parent["ts"])["messages"]
    assert [m["text"] for m in thread] == [
        "Export to CSV drops a column",
        "Got it",
        "Me too",
        "Tracked as #1",
    ]
    assert [m["text"] for m in emu.replies(general["id"], parent["ts"])] == [
        "Got it",
        "Me too",
        "Tracked as #1",
    ]
    assert all(r["thread_ts"] == parent["ts"] and r["parent_user_id"] == alice for r in thread[1:])
    via_reply = client.conversations_replies(channel=general["id"], ts=first["ts"])["messages"]
    assert via_reply[0]["ts"] == parent["ts"]
    assert (
        error_of(lambda: client.conversations_replies(channel=general["id"], ts="1.000001"))
        == "thread_not_found"
    )


def test_post_message_to_user_id_opens_dm(emu: SlackEmulator, client: WebClient) -> None:
    carol = emu.add_user("carol")
    answer = client.chat_postMessage(channel=carol["id"], text="Hi Carol")
    assert answer["channel"].startswith("D")
    again = client.chat_postMessage(channel=carol["id"], text="Again")
    assert again["channel"] == answer["channel"]
    assert [m["text"] for m in emu.messages(answer["channel"])] == ["Hi Carol", "Again"]
    info = client.conversations_info(channel=answer["channel"])["channel"]
    assert info["is_im"] is True and info["user"] == carol["id"]


def test_post_message_errors(emu: SlackEmulator, client: WebClient, general) -> None:
    emu.add_channel("outside", bot_is_member=False)
    emu.add_channel("secret", is_private=True, bot_is_member=False)
    old = emu.add_channel("old")
    emu.archive_channel(old["id"])
    assert error_of(lambda: client.api_call("chat.postMessage", json={"channel": general["id"]})) == "no_text"
    assert error_of(lambda: client.chat_postMessage(channel="C9999999", text="x")) == "channel_not_found"
    assert error_of(lambda: client.chat_postMessage(channel="outside", text="x")) == "not_in_channel"
    assert error_of(lambda: client.chat_postMessage(channel="secret", text="x")) == "channel_not_found"
    assert error_of(lambda: client.chat_postMessage(channel=old["id"], text="x")) == "is_archived"
    assert emu.messages("outside") == [] and emu.messages(old["id"]) == []
    assert len(emu.calls("chat.postMessage")) == 5


def test_permalinks_for_top_level_and_reply(emu: SlackEmulator, client: WebClient, general) -> None:
    parent = emu.post_message(general["id"], "alice", "Parent")
    reply = emu.post_message(general["id"], "bob", "Reply", thread_ts=parent["ts"])
    top = client.chat_getPermalink(channel=general["id"], message_ts=parent["ts"])["permalink"]
    nested = client.chat_getPermalink(channel=general["id"], message_ts=reply["ts"])["permalink"]
    cid, p_top, p_reply = general["id"], parent["ts"].replace(".", ""), reply["ts"].replace(".", "")
    assert top == f"https://acme.slack.com/archives/{cid}/p{p_top}"
    assert nested == f"https://acme.slack.com/archives/{cid}/p{p_reply}?thread_ts={parent['ts']}&cid={cid}"
    missing = lambda: client.chat_getPermalink(channel=cid, message_ts="1.000001")  # noqa: E731
    assert error_of(missing) == "message_not_found"


def test_history_cursor_pagination_across_three_pages(emu: SlackEmulator, client: WebClient, general) -> None:
    posted = [emu.post_message(general["id"], "alice", f"m{i}")["ts"] for i in range(8)]
    pages, cursor = [], None
    while True:
        answer = client.conversations_history(channel=general["id"], limit=3, cursor=cursor)
        pages.append([m["ts"] for m in answer["messages"]])
        cursor = answer["response_metadata"]["next_cursor"]
        assert answer["has_more"] is bool(cursor)
        if not cursor:
            break
    assert [len(p) for p in pages] == [3, 3, 2]
    assert [ts for p in pages for ts in p] == posted[::-1]
    window = client.conversations_history(channel=general["id"], oldest=posted[2], latest=posted[5])[
        "messages"
    ]
    assert [m["ts"] for m in window] == [posted[4], posted[3]]
    inclusive = client.conversations_history(
        channel=general["id"], oldest=posted[2], latest=posted[5], inclusive=True
    )
    assert len(inclusive["messages"]) == 4
    assert (
        error_of(lambda: client.conversations_history(channel=general["id"], cursor="bad!"))
        == "invalid_cursor"
    )


def test_history_needs_membership(emu: SlackEmulator, client: WebClient) -> None:
    emu.add_channel("outside", bot_is_member=False)
    emu.add_channel("secret", is_private=True, bot_is_member=False)
    assert error_of(lambda: client.conversations_history(channel="outside")) == "not_in_channel"
    assert error_of(lambda: client.conversations_history(channel="secret")) == "channel_not_found"
    joined = client.conversations_join(channel="outside")["channel"]
    assert joined["is_member"] is True
    assert client.conversations_history(channel=joined["id"])["messages"] == []
    assert (
        error_of(lambda: client.conversations_join(channel="secret"))
        == "method_not_supported_for_channel_type"
    )


def test_ephemeral_messages(emu: SlackEmulator, client: WebClient, general) -> None:
    alice = emu.user("alice")
    outsider = emu.add_user("eve")
    answer = client.chat_postEphemeral(
        channel=general["id"], user=alice["id"], text="Only you", blocks=BLOCKS
    )
    assert answer["message_ts"]
    stored = emu.ephemerals(channel=general["id"], user=alice["id"])
    assert len(stored) == 1 and stored[0]["text"] == "Only you" and stored[0]["blocks"] == BLOCKS
    assert emu.ephemerals(user=outsider["id"]) == [] and emu.messages(general["id"]) == []
    eve_ephemeral = lambda: client.chat_postEphemeral(channel=general["id"], user=outsider["id"], text="x")  # noqa: E731
    assert error_of(eve_ephemeral) == "user_not_in_channel"


def test_chat_update_and_delete_only_own_messages(emu: SlackEmulator, client: WebClient, general) -> None:
    human = emu.post_message(general["id"], "alice", "Human words")
    mine = client.chat_postMessage(channel=general["id"], text="Draft", thread_ts=human["ts"])
    updated = client.chat_update(channel=general["id"], ts=mine["ts"], text="Final", blocks=BLOCKS)
    assert updated["text"] == "Final" and updated["message"]["edited"]["user"] == "U0BOT"
    assert emu.replies(general["id"], human["ts"])[0]["blocks"] == BLOCKS
    assert (
        error_of(lambda: client.chat_update(channel=general["id"], ts=human["ts"], text="x"))
        == "cant_update_message"
    )
    assert (
        error_of(lambda: client.chat_update(channel=general["id"], ts="1.000001", text="x"))
        == "message_not_found"
    )
    assert (
        error_of(lambda: client.chat_delete(channel=general["id"], ts=human["ts"])) == "cant_delete_message"
    )
    client.chat_delete(channel=general["id"], ts=mine["ts"])
    assert emu.replies(general["id"], human["ts"]) == []
    assert "reply_count" not in emu.messages(general["id"])[0]


# ---- conversations and users ---------------------------------------------------------


def test_conversations_list_filters_and_paginates(emu: SlackEmulator, client: WebClient) -> None:
    for i in range(5):
        emu.add_channel(f"pub{i}")
    emu.add_channel("private-in", is_private=True)
    emu.add_channel("private-out", is_private=True, bot_is_member=False)
    emu.archive_channel(emu.channel("pub4")["id"])
    names, cursor = [], None
    while True:
        answer = client.conversations_list(limit=2, cursor=cursor, exclude_archived=True)
        names += [c["name"] for c in answer["channels"]]
        cursor = answer["response_metadata"]["next_cursor"]
        if not cursor:
            break
    assert names == ["pub0", "pub1", "pub2", "pub3"]
    private = client.conversations_list(types="private_channel")["channels"]
    assert [c["name"] for c in private] == ["private-in"] and private[0]["is_private"] is True
    both = client.conversations_list(types="public_channel,private_channel")["channels"]
    assert len(both) == 6


def test_conversations_info_and_members(emu: SlackEmulator, client: WebClient, general) -> None:
    info = client.conversations_info(channel=general["id"])["channel"]
    assert (info["name"], info["is_channel"], info["is_private"], info["is_member"]) == (
        "general",
        True,
        False,
        True,
    )
    members = client.conversations_members(channel=general["id"], limit=2)
    assert len(members["members"]) == 2 and members["response_metadata"]["next_cursor"]
    rest = client.conversations_members(
        channel=general["id"], cursor=members["response_metadata"]["next_cursor"]
    )
    assert set(members["members"] + rest["members"]) == set(emu.channel("general")["members"])
    assert "U0BOT" in rest["members"] + members["members"]


def test_users_info_and_list(emu: SlackEmulator, client: WebClient) -> None:
    ny = emu.add_user(
        "nina", real_name="Nina Park", tz="America/New_York", is_admin=True, email="nina@acme.test"
    )
    user = client.users_info(user=ny["id"])["user"]
    assert user["id"].startswith("U") and len(user["id"]) == 8
    assert user["tz"] == "America/New_York" and user["tz_offset"] in (-18000, -14400)
    assert user["is_admin"] is True and user["is_bot"] is False
    assert user["profile"]["real_name"] == "Nina Park" and user["profile"]["email"] == "nina@acme.test"
    assert user["profile"]["display_name"] == "nina"
    assert error_of(lambda: client.users_info(user="U404")) == "user_not_found"
    for i in range(4):
        emu.add_user(f"user{i}")
    first = client.users_list(limit=3)
    second = client.users_list(limit=3, cursor=first["response_metadata"]["next_cursor"])
    ids = [u["id"] for u in first["members"] + second["members"]]
    assert len(ids) == 6 and "U0BOT" in ids and second["response_metadata"]["next_cursor"] == ""


# ---- reactions ---------------------------------------------------------------------


def test_reactions_add_get_and_already_reacted(emu: SlackEmulator, client: WebClient, general) -> None:
    message = emu.post_message(general["id"], "alice", "Dark mode please")
    emu.add_reaction(general["id"], message["ts"], "bob", "bulb")
    client.reactions_add(channel=general["id"], timestamp=message["ts"], name="bulb")
    client.reactions_add(channel=general["id"], timestamp=message["ts"], name="eyes")
    again = lambda: client.reactions_add(channel=general["id"], timestamp=message["ts"], name="bulb")  # noqa: E731
    assert error_of(again) == "already_reacted"
    got = client.reactions_get(channel=general["id"], timestamp=message["ts"])["message"]
    bob = emu.user("bob")["id"]
    assert got["reactions"] == [
        {"name": "bulb", "users": [bob, "U0BOT"], "count": 2},
        {"name": "eyes", "users": ["U0BOT"], "count": 1},
    ]
    client.reactions_remove(channel=general["id"], timestamp=message["ts"], name="eyes")
    assert [r["name"] for r in emu.messages(general["id"])[0]["reactions"]] == ["bulb"]


# ---- views -------------------------------------------------------------------------


def test_views_open_update_hash_conflict_and_push(emu: SlackEmulator, client: WebClient) -> None:
    opened = client.views_open(trigger_id="123.456.abc", view={**MODAL, "external_id": "ext-1"})["view"]
    assert opened["id"].startswith("V") and opened["hash"] and opened["state"] == {"values": {}}
    assert opened["callback_id"] == "edit" and opened["root_view_id"] == opened["id"]
    stale = lambda: client.views_update(view_id=opened["id"], hash="1.deadbeef", view=MODAL)  # noqa: E731
    assert error_of(stale) == "hash_conflict"
    new_title = {**MODAL, "external_id": "ext-1", "title": {"type": "plain_text", "text": "Edited"}}
    updated = client.views_update(view_id=opened["id"], hash=opened["hash"], view=new_title)["view"]
    assert updated["id"] == opened["id"] and updated["hash"] != opened["hash"]
    by_external = client.views_update(external_id="ext-1", view=MODAL)["view"]
    assert by_external["id"] == opened["id"]
    assert error_of(lambda: client.views_update(view_id="V404", view=MODAL)) == "not_found"
    pushed = client.views_push(trigger_id="123.456.def", view=MODAL)["view"]
    assert pushed["previous_view_id"] == opened["id"]
    assert [v["id"] for v in emu.views()] == [opened["id"], pushed["id"]]
    assert emu.views()[0]["title"]["text"] == "Edit"


def test_views_open_rejects_bad_view_and_missing_trigger(emu: SlackEmulator, client: WebClient) -> None:
    bad_json = lambda: client.api_call("views.open", params={"trigger_id": "1.2.x", "view": "{not json"})  # noqa: E731
    assert error_of(bad_json) == "invalid_arguments"
    assert (
        error_of(lambda: client.views_open(trigger_id="1.2.x", view={"type": "home"})) == "invalid_arguments"
    )
    assert error_of(lambda: client.api_call("views.open", json={"view": MODAL})) == "invalid_arguments"
    assert emu.views() == []


def test_emulator_trigger_ids_expire_and_are_single_use() -> None:
    with SlackEmulator(trigger_ttl=0.2) as emu:
        client = WebClient(token=emu.bot_token, base_url=emu.url)
        fresh = emu.new_trigger_id()
        client.views_open(trigger_id=fresh, view=MODAL)
        assert error_of(lambda: client.views_open(trigger_id=fresh, view=MODAL)) == "exchanged_trigger_id"
        old = emu.new_trigger_id()
        time.sleep(0.3)
        assert error_of(lambda: client.views_open(trigger_id=old, view=MODAL)) == "expired_trigger_id"


def test_views_publish_home(emu: SlackEmulator, client: WebClient) -> None:
    alice = emu.add_user("alice")
    home = {"type": "home", "blocks": BLOCKS}
    first = client.views_publish(user_id=alice["id"], view=home)["view"]
    assert emu.home_view(alice["id"])["blocks"] == BLOCKS and emu.views() == []
    stale = lambda: client.views_publish(user_id=alice["id"], view=home, hash="1.bad")  # noqa: E731
    assert error_of(stale) == "hash_conflict"
    second = client.views_publish(user_id=alice["id"], view=home, hash=first["hash"])["view"]
    assert second["id"] == first["id"] and emu.home_view("U404") is None
    assert error_of(lambda: client.views_publish(user_id=alice["id"], view=MODAL)) == "invalid_arguments"


# ---- files -------------------------------------------------------------------------


def test_files_upload_v2_three_step_flow_shares_file(emu: SlackEmulator, client: WebClient, general) -> None:
    answer = client.files_upload_v2(
        channel=general["id"],
        content="a,b\n1,2\n",
        filename="export.csv",
        title="Export",
        initial_comment="Here",
    )
    file_id = answer["file"]["id"]
    assert [c.method for c in emu.calls()] == ["files.getUploadURLExternal", "files.completeUploadExternal"]
    assert emu.calls()[0].response["upload_url"] == f"{emu.root_url}/upload/{file_id}"
    assert emu.file_content(file_id) == b"a,b\n1,2\n"
    shared = emu.messages(general["id"])[-1]
    assert shared["text"] == "Here" and shared["files"][0]["id"] == file_id
    assert shared["files"][0]["title"] == "Export" and shared["files"][0]["size"] == 8
    assert [f["id"] for f in emu.files()] == [file_id] and emu.files()[0]["channels"] == [general["id"]]
    unknown = lambda: client.files_completeUploadExternal(files=[{"id": "F404", "title": "x"}])  # noqa: E731
    assert error_of(unknown) == "invalid_arguments"


def test_file_upload_in_thread_without_bytes_is_refused(
    emu: SlackEmulator, client: WebClient, general
) -> None:
    parent = emu.post_message(general["id"], "alice", "Send me the CSV")
    reserved = client.files_getUploadURLExternal(filename="x.txt", length=3)
    not_uploaded = lambda: client.files_completeUploadExternal(files=[{"id": reserved["file_id"]}])  # noqa: E731
    assert error_of(not_uploaded) == "invalid_arguments"
    client.files_upload_v2(channel=general["id"], content="abc", filename="x.txt", thread_ts=parent["ts"])
    assert emu.replies(general["id"], parent["ts"])[0]["files"][0]["name"] == "x.txt"


# ---- faults ------------------------------------------------------------------------


def test_rate_limit_then_retry_handler_succeeds(emu: SlackEmulator, general) -> None:
    emu.fail("chat.postMessage", status=429, retry_after=1)
    client = WebClient(
        token=emu.bot_token, base_url=emu.url, retry_handlers=[RateLimitErrorRetryHandler(max_retry_count=1)]
    )
    started = time.monotonic()
    answer = client.chat_postMessage(channel=general["id"], text="after the limit")
    assert answer["ok"] is True and time.monotonic() - started >= 1.0
    calls = emu.calls("chat.postMessage")
    assert [c.http_status for c in calls] == [429, 200]
    assert calls[0].response == {"ok": False, "error": "ratelimited"} and calls[1].response["ok"] is True
    assert [m["text"] for m in emu.messages(general["id"])] == ["after the limit"]


def test_rate_limit_without_retry_handler_shows_retry_after(emu: SlackEmulator, client: WebClient) -> None:
    emu.fail("auth.test", status=429, retry_after=7, times=2)
    for _ in range(2):
        error = slack_error(client.auth_test)
        headers = {k.lower(): v for k, v in error.response.headers.items()}
        assert error.response.status_code == 429 and headers["retry-after"] in ("7", ["7"])
        assert error.response["error"] == "ratelimited"
    assert client.auth_test()["ok"] is True


def test_server_error_then_retry_handler_succeeds(emu: SlackEmulator) -> None:
    emu.fail("users.list", status=500)
    client = WebClient(token=emu.bot_token, base_url=emu.url, retry_handlers=[ServerErrorRetryHandler()])
    assert client.users_list()["ok"] is True
    calls = emu.calls("users.list")
    assert [c.http_status for c in calls] == [500, 200]
    assert calls[0].response == {"ok": False, "error": "internal_error"}


def test_fail_with_slack_error_at_http_200(emu: SlackEmulator, client: WebClient) -> None:
    emu.fail("auth.test", status=200, error="fatal_error", times=2)
    assert error_of(client.auth_test) == "fatal_error"
    assert error_of(client.auth_test) == "fatal_error"
    assert client.auth_test()["ok"] is True
    assert [c.http_status for c in emu.calls()] == [200, 200, 200]


def test_delay_does_not_block_other_calls(emu: SlackEmulator, client: WebClient) -> None:
    emu.delay("users.list", 1.0)
    finished: dict[str, float] = {}
    started = time.monotonic()

    def slow() -> None:
        client.users_list()
        finished["slow"] = time.monotonic() - started

    worker = threading.Thread(target=slow)
    worker.start()
    time.sleep(0.1)
    client.auth_test()
    finished["fast"] = time.monotonic() - started
    worker.join()
    assert finished["fast"] < 0.8 <= 1.0 <= finished["slow"]
    assert [c.method for c in emu.calls()] == ["auth.test", "users.list"]
    quick = time.monotonic()
    client.users_list()
    assert time.monotonic() - quick < 0.5


# ---- isolation ----------------------------------------------------------------------


def test_two_emulators_in_parallel_do_not_share_state() -> None:
    with SlackEmulator() as one, SlackEmulator(team_id="T0OTHER", team_domain="other") as two:
        assert one.url != two.url
        one.add_channel("only-in-one")
        c1 = WebClient(token=one.bot_token, base_url=one.url)
        c2 = WebClient(token=two.bot_token, base_url=two.url)
        c1.chat_postMessage(channel="only-in-one", text="hello")
        assert error_of(lambda: c2.chat_postMessage(channel="only-in-one", text="x")) == "channel_not_found"
        assert c2.auth_test()["team_id"] == "T0OTHER"
        assert [c.method for c in one.calls()] == ["chat.postMessage"]
        assert [c.method for c in two.calls()] == ["chat.postMessage", "auth.test"]


def test_second_workspace_is_selected_by_token(emu: SlackEmulator, client: WebClient) -> None:
    emu.add_team("T0SECOND", "Globex", "globex", "xoxb-second", bot_id="B0SECOND")
    second = WebClient(token="xoxb-second", base_url=emu.url)
    assert second.auth_test()["url"] == "https://globex.slack.com/"
    channel = emu.add_channel("general", team_id="T0SECOND")
    second.chat_postMessage(channel=channel["id"], text="hi globex")
    assert error_of(lambda: client.chat_postMessage(channel=channel["id"], text="x")) == "channel_not_found"
    assert emu.messages(channel["id"], team_id="T0SECOND")[0]["bot_id"] == "B0SECOND"


def test_response_urls_record_posted_bodies(emu: SlackEmulator) -> None:
    url = emu.new_response_url("cmd-1")
    assert url == emu.root_url + "/response/cmd-1"
    body = json.dumps({"response_type": "ephemeral", "text": "Saved #1"}).encode()
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=5) as answer:
        assert json.loads(answer.read()) == {"ok": True}
    assert emu.response_url_posts("cmd-1") == [{"response_type": "ephemeral", "text": "Saved #1"}]
    assert emu.response_url_posts("other") == [] and len(emu.response_url_posts()) == 1


def test_seeding_rejects_unknown_references(emu: SlackEmulator) -> None:
    with pytest.raises(ValueError):
        emu.add_channel("c", members=["nobody"])
    emu.add_channel("c")
    with pytest.raises(ValueError):
        emu.add_channel("c")
    with pytest.raises(ValueError):
        emu.post_message("c", "U404", "x")
    emu.add_user("alice")
    with pytest.raises(ValueError):
        emu.post_message("c", "alice", "x", thread_ts="1.000001")


def test_malformed_arguments_get_slack_errors(emu: SlackEmulator, client: WebClient, general) -> None:
    assert error_of(lambda: client.conversations_list(cursor="bad!")) == "invalid_cursor"
    assert (
        error_of(lambda: client.conversations_history(channel=general["id"], latest="soon"))
        == "invalid_arguments"
    )
    assert error_of(lambda: client.users_list(limit="many")) == "invalid_arguments"
    bad_json = urllib.request.Request(
        emu.url + "auth.test", data=b"{nope", headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(bad_json, timeout=5) as answer:
        assert json.loads(answer.read()) == {"ok": False, "error": "invalid_json"}
    assert client.auth_test()["ok"] is True  # the server is still fine


def test_reply_broadcast_dm_open_and_lookup_by_email(emu: SlackEmulator, client: WebClient, general) -> None:
    parent = emu.post_message(general["id"], "alice", "Parent")
    client.chat_postMessage(
        channel=general["id"], text="Also here", thread_ts=parent["ts"], reply_broadcast=True
    )
    history = client.conversations_history(channel=general["id"])["messages"]
    assert [m["text"] for m in history] == ["Also here", "Parent"] and history[1]["reply_count"] == 1
    alice = client.users_lookupByEmail(email="alice@acme.example")["user"]
    assert alice["name"] == "alice"
    assert error_of(lambda: client.users_lookupByEmail(email="x@y.z")) == "users_not_found"
    dm = client.conversations_open(users=alice["id"])["channel"]
    assert (
        dm["id"].startswith("D")
        and client.chat_postMessage(channel=alice["id"], text="hi")["channel"] == dm["id"]
    )


def test_upload_url_accepts_multipart_and_rejects_unknown_ids(
    emu: SlackEmulator, client: WebClient, general
) -> None:
    reserved = client.files_getUploadURLExternal(filename="notes.txt", length=5)
    boundary = "XyZ123"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="notes.txt"\r\n'
        f"Content-Type: text/plain\r\n\r\nhello\r\n--{boundary}--\r\n"
    ).encode()
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    upload = urllib.request.Request(reserved["upload_url"], data=body, headers=headers, method="POST")
    with urllib.request.urlopen(upload, timeout=5) as answer:
        assert answer.read() == b"OK - 5"
    client.files_completeUploadExternal(
        files=[{"id": reserved["file_id"], "title": "Notes"}], channel_id=general["id"]
    )
    assert emu.file_content(reserved["file_id"]) == b"hello"
    missing = urllib.request.Request(emu.root_url + "/upload/F404", data=b"x", method="POST")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(missing, timeout=5)
    assert info.value.code == 404
