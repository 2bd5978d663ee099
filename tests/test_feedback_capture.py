"""Scenario tests: signed HTTP to the real server → rows in the database → calls to the Slack emulator."""

from __future__ import annotations

import json
import time

from bot import workspaces
from storage.models import FeedbackItem, InboxStatus, Workspace
from tests.conftest import Stack
from tests.helpers import inbox_rows, items_in_channel, unique, wait_for


def _channel_with_message(stack: Stack, *, private: bool = False, text: str = "Export to CSV drops a column"):
    emu = stack.emulator
    author = emu.add_user(unique("alice"))
    reactor = emu.add_user(unique("pm"))
    channel = emu.add_channel(unique("support"), is_private=private, members=[author["id"], reactor["id"]])
    message = emu.post_message(channel["id"], author["id"], text)
    return channel["id"], message, author["id"], reactor["id"]


def _thread_posts(stack: Stack, channel_id: str) -> list[dict]:
    return [c for c in stack.emulator.calls("chat.postMessage") if c.params.get("channel") == channel_id]


def test_reaction_captures_message_and_confirms_in_thread(stack: Stack) -> None:
    channel_id, message, author_id, reactor_id = _channel_with_message(stack)

    response = stack.driver.react(user=reactor_id, channel=channel_id, ts=message["ts"], reaction="bulb")

    assert response.status == 200
    items = wait_for(lambda: items_in_channel(stack.db, channel_id), what="feedback item")
    assert len(items) == 1
    item = items[0]
    assert item.team_id == stack.team_id
    assert item.text == "Export to CSV drops a column"
    assert item.message_ts == message["ts"] and item.thread_ts is None
    assert item.author_user_id == author_id and item.captured_by_user_id == reactor_id
    assert item.source == "reaction" and item.is_private is False
    assert item.permalink and item.permalink.endswith("/p" + message["ts"].replace(".", ""))
    posts = wait_for(lambda: _thread_posts(stack, channel_id), what="confirmation")
    assert len(posts) == 1
    assert posts[0].params["thread_ts"] == message["ts"]
    assert f"#{item.id}" in json.dumps(posts[0].params["blocks"])
    replies = stack.emulator.replies(channel_id, message["ts"])
    assert len(replies) == 1 and replies[0].get("bot_id")


def test_retried_and_repeated_reactions_capture_once(stack: Stack) -> None:
    channel_id, message, _, reactor_id = _channel_with_message(stack)
    other = stack.emulator.add_user(unique("bob"))
    event = stack.driver.event_callback(
        stack.driver.reaction_added_event(
            user=reactor_id, reaction="bulb", channel=channel_id, ts=message["ts"]
        )
    )

    first = stack.driver.send_event(event)
    retry = stack.driver.send_event(event, retry_num=1)
    assert (first.status, retry.status) == (200, 200)
    wait_for(lambda: _thread_posts(stack, channel_id), what="confirmation")
    stack.driver.react(user=other["id"], channel=channel_id, ts=message["ts"], reaction="bulb")
    time.sleep(1.0)  # give a wrong second capture every chance to happen

    assert len(items_in_channel(stack.db, channel_id)) == 1
    assert len(_thread_posts(stack, channel_id)) == 1
    rows = inbox_rows(stack.db, event["event_id"])
    assert len(rows) == 1 and rows[0].status == InboxStatus.done.value


def test_reaction_on_thread_reply_keeps_thread(stack: Stack) -> None:
    channel_id, parent, author_id, reactor_id = _channel_with_message(stack, text="Parent")
    reply = stack.emulator.post_message(
        channel_id, author_id, "The SSO login loops forever", thread_ts=parent["ts"]
    )

    stack.driver.react(user=reactor_id, channel=channel_id, ts=reply["ts"], reaction="bulb")

    item = wait_for(lambda: items_in_channel(stack.db, channel_id), what="item")[0]
    assert item.text == "The SSO login loops forever"
    assert item.message_ts == reply["ts"] and item.thread_ts == parent["ts"]
    assert "thread_ts=" in (item.permalink or "")
    post = wait_for(lambda: _thread_posts(stack, channel_id), what="confirmation")[0]
    assert post.params["thread_ts"] == parent["ts"]


def test_other_emoji_captures_nothing_and_skin_tones_count(stack: Stack) -> None:
    channel_id, message, _, reactor_id = _channel_with_message(stack)
    tada = stack.driver.event_callback(
        stack.driver.reaction_added_event(
            user=reactor_id, reaction="tada", channel=channel_id, ts=message["ts"]
        )
    )
    assert stack.driver.send_event(tada).status == 200
    time.sleep(0.8)
    assert items_in_channel(stack.db, channel_id) == []
    assert inbox_rows(stack.db, tada["event_id"]) == []  # answered before the inbox: nothing to keep

    stack.driver.react(user=reactor_id, channel=channel_id, ts=message["ts"], reaction="bulb::skin-tone-3")
    assert len(wait_for(lambda: items_in_channel(stack.db, channel_id), what="item")) == 1


def test_feedback_emoji_is_per_workspace(stack: Stack) -> None:
    channel_id, message, _, reactor_id = _channel_with_message(stack)
    with stack.db.session() as s:
        workspaces.get_or_create(db_session=s, team_id=stack.team_id).feedback_emoji = "star"
    try:
        stack.driver.react(user=reactor_id, channel=channel_id, ts=message["ts"], reaction="bulb")
        time.sleep(0.8)
        assert items_in_channel(stack.db, channel_id) == []
        stack.driver.react(user=reactor_id, channel=channel_id, ts=message["ts"], reaction="star")
        assert len(wait_for(lambda: items_in_channel(stack.db, channel_id), what="item")) == 1
    finally:
        with stack.db.session() as s:
            s.get(Workspace, stack.team_id).feedback_emoji = "bulb"


def test_private_channel_item_is_marked_private(stack: Stack) -> None:
    channel_id, message, _, reactor_id = _channel_with_message(stack, private=True)
    stack.driver.react(user=reactor_id, channel=channel_id, ts=message["ts"])
    item = wait_for(lambda: items_in_channel(stack.db, channel_id), what="item")[0]
    assert item.is_private is True


def test_rate_limited_reply_is_retried_after_retry_after(stack: Stack) -> None:
    channel_id, message, _, reactor_id = _channel_with_message(stack)
    stack.emulator.fail("chat.postMessage", status=429, retry_after=1, times=1)

    stack.driver.react(user=reactor_id, channel=channel_id, ts=message["ts"])

    wait_for(lambda: stack.emulator.replies(channel_id, message["ts"]), timeout=15, what="reply after 429")
    statuses = [
        c.http_status
        for c in stack.emulator.calls("chat.postMessage")
        if c.params.get("channel") == channel_id
    ]
    assert statuses == [429, 200]
    assert len(items_in_channel(stack.db, channel_id)) == 1


def test_failed_handler_is_retried_by_the_worker_without_bothering_the_user(stack: Stack) -> None:
    channel_id, message, _, reactor_id = _channel_with_message(stack)
    stack.emulator.fail("conversations.history", status=200, error="fatal_error", times=1)
    event = stack.driver.event_callback(
        stack.driver.reaction_added_event(
            user=reactor_id, reaction="bulb", channel=channel_id, ts=message["ts"]
        )
    )

    stack.driver.send_event(event)

    # The worker queues the failed delivery again after a backoff (about 2 s) and the second attempt works.
    items = wait_for(lambda: items_in_channel(stack.db, channel_id), timeout=20, what="item after retry")
    assert len(items) == 1
    row = wait_for(
        lambda: [r for r in inbox_rows(stack.db, event["event_id"]) if r.status == InboxStatus.done.value],
        what="inbox done",
    )[0]
    assert row.attempts == 2 and "fatal_error" in (row.last_error or "")
    # Only a delivery that fails every attempt is apologised for (tests/test_queue.py).
    assert stack.emulator.ephemerals(channel=channel_id, user=reactor_id) == []


def test_feedback_command_saves_item_and_answers_ephemerally(stack: Stack) -> None:
    emu = stack.emulator
    user = emu.add_user(unique("sam"))
    channel = emu.add_channel(unique("sales"), members=[user["id"]])

    response = stack.driver.command(
        "/feedback", "Acme wants SAML for the admin console", user=user["id"], channel=channel["id"]
    )

    assert response.status == 200
    items = wait_for(lambda: items_in_channel(stack.db, channel["id"]), what="item")
    assert len(items) == 1
    item: FeedbackItem = items[0]
    assert (item.source, item.text, item.captured_by_user_id) == (
        "command",
        "Acme wants SAML for the admin console",
        user["id"],
    )
    assert item.message_ts is None and item.is_private is False
    posts = wait_for(
        lambda: [p for p in emu.response_url_posts() if f"#{item.id}" in json.dumps(p)], what="reply"
    )
    assert posts[0]["response_type"] == "ephemeral"


def test_feedback_help_answers_in_the_ack(stack: Stack) -> None:
    user = stack.emulator.add_user(unique("help"))
    channel = stack.emulator.add_channel(unique("general"), members=[user["id"]])
    response = stack.driver.command("/feedback", "help", user=user["id"], channel=channel["id"])
    assert response.status == 200
    body = response.json()
    assert body["response_type"] == "ephemeral"
    assert "/feedback <text>" in json.dumps(body["blocks"])
    assert items_in_channel(stack.db, channel["id"]) == []


def test_feedback_command_too_long_is_refused_clearly(stack: Stack) -> None:
    user = stack.emulator.add_user(unique("long"))
    channel = stack.emulator.add_channel(unique("general"), members=[user["id"]])
    response = stack.driver.command("/feedback", "x" * 40_001, user=user["id"], channel=channel["id"])
    assert response.status == 200
    assert "at most 40,000" in json.dumps(response.json())
    assert items_in_channel(stack.db, channel["id"]) == []


def test_capture_survives_missing_channel_info_and_permalink(stack: Stack) -> None:
    channel_id, message, _, reactor_id = _channel_with_message(stack)
    stack.emulator.fail("conversations.info", status=200, error="unknown_method", times=1)
    stack.emulator.fail("chat.getPermalink", status=200, error="unknown_method", times=1)

    stack.driver.react(user=reactor_id, channel=channel_id, ts=message["ts"])

    item = wait_for(lambda: items_in_channel(stack.db, channel_id), what="item")[0]
    assert item.is_private is True  # could not tell, so the privacy rule errs on the private side
    assert item.permalink is None


def test_reaction_to_a_deleted_message_captures_nothing(stack: Stack) -> None:
    channel_id, _, _, reactor_id = _channel_with_message(stack)
    gone = stack.driver.reaction_added_event(
        user=reactor_id, reaction="bulb", channel=channel_id, ts="1500000000.000100"
    )
    response = stack.driver.send_event(stack.driver.event_callback(gone))
    assert response.status == 200
    time.sleep(0.8)
    assert items_in_channel(stack.db, channel_id) == []
    assert _thread_posts(stack, channel_id) == []
