"""Scenario tests for every capture mode, the modal, lists and monitoring — over signed HTTP, on both databases."""

from __future__ import annotations

import json
import time
from decimal import Decimal
from typing import Any

from sqlalchemy import select

from bot.feedback.ids import FeedbackAction, FeedbackBlock
from storage.models import Account, FeedbackItem, FeedbackTextVersion, Tag, WatchedChannel
from tests.conftest import Stack
from tests.helpers import inbox_rows, items_in_channel, unique, wait_for


def _setup(stack: Stack, *, private: bool = False, bot_in_channel: bool = True, admin: bool = False):
    emu = stack.emulator
    author = emu.add_user(unique("cust"))
    pm = emu.add_user(unique("pm"), is_admin=admin)
    channel = emu.add_channel(
        unique("fb"), is_private=private, members=[author["id"], pm["id"]], bot_is_member=bot_in_channel
    )
    return author["id"], pm["id"], channel["id"]


def _opened_views(stack: Stack, since: int) -> list[dict[str, Any]]:
    return [c.params["view"] for c in stack.emulator.calls("views.open")[since:] if c.response.get("ok")]


def _values(
    *,
    text: str | None = "",
    customer: str | None = None,
    kind: str | None = None,
    tags: list[str] | None = None,
    importance: str | None = None,
    note: str | None = None,
) -> dict[str, Any]:
    def selected(value: str | None) -> dict[str, Any]:
        return {"selected_option": {"value": value} if value else None}

    values: dict[str, Any] = {
        FeedbackBlock.customer: {FeedbackAction.customer: selected(customer)},
        FeedbackBlock.kind: {FeedbackAction.kind: selected(kind)},
        FeedbackBlock.tags: {FeedbackAction.tags: {"selected_options": [{"value": t} for t in tags or []]}},
        FeedbackBlock.importance: {FeedbackAction.importance: selected(importance)},
        FeedbackBlock.note: {FeedbackAction.note: {"value": note}},
    }
    if text is not None:
        values[FeedbackBlock.text] = {FeedbackAction.text: {"value": text}}
    return values


def _submit(stack: Stack, user: str, view: dict[str, Any], values: dict[str, Any]):
    return stack.driver.send_interaction(stack.driver.view_submission(user=user, view=view, values=values))


def _shortcut(stack: Stack, user: str, channel: str, message: dict[str, Any]) -> dict[str, Any]:
    before = len(stack.emulator.calls("views.open"))
    payload = stack.driver.message_shortcut(
        callback_id="capture_feedback", user=user, channel=channel, message=message
    )
    assert stack.driver.send_interaction(payload).status == 200
    return wait_for(lambda: _opened_views(stack, before), what="modal opened")[0]


def test_shortcut_opens_prefilled_modal_and_saves_everything(stack: Stack) -> None:
    author, pm, channel = _setup(stack)
    message = stack.emulator.post_message(channel, author, "Exports to CSV drop the last column")

    view = _shortcut(stack, pm, channel, message)

    assert view["callback_id"] == "feedback_modal"
    text_block = next(b for b in view["blocks"] if b.get("block_id") == FeedbackBlock.text)
    assert text_block["element"]["initial_value"] == "Exports to CSV drop the last column"
    company = unique("Globex")
    response = _submit(
        stack,
        pm,
        view,
        _values(
            text="Exports to CSV drop the last column (edited)",
            customer=f"new:{company}",
            kind="bug",
            tags=["new:csv-export", "new:Data Loss"],
            importance="critical",
            note="Renewal in March",
        ),
    )
    assert response.status == 200 and response.body in ("", "{}")
    item = wait_for(lambda: items_in_channel(stack.db, channel), what="item")[0]
    assert item.source == "shortcut" and item.message_ts == message["ts"]
    assert item.text == "Exports to CSV drop the last column (edited)"
    assert (item.kind, item.importance, item.note) == ("bug", "critical", "Renewal in March")
    assert item.tags == ["csv-export", "data-loss"]
    assert item.author_user_id == author and item.captured_by_user_id == pm
    assert item.permalink and item.visibility == "public"
    with stack.db.session() as s:
        account = s.get(Account, item.account_id)
        assert account is not None and account.name == company
        assert {"csv-export", "data-loss"} <= set(
            s.scalars(select(Tag.name).where(Tag.team_id == stack.team_id))
        )
    replies = wait_for(lambda: stack.emulator.replies(channel, message["ts"]), what="thread confirmation")
    assert f"#{item.id}" in json.dumps(replies[0]["blocks"]) and company in json.dumps(replies[0]["blocks"])


def test_same_message_through_reaction_then_shortcut_is_one_item(stack: Stack) -> None:
    author, pm, channel = _setup(stack)
    message = stack.emulator.post_message(channel, author, "SSO with Okta is a must for us")
    stack.driver.react(user=pm, channel=channel, ts=message["ts"])
    first = wait_for(lambda: items_in_channel(stack.db, channel), what="item")[0]

    view = _shortcut(stack, pm, channel, message)

    assert view["title"]["text"] == f"Feedback #{first.id}"
    _submit(stack, pm, view, _values(text="SSO with Okta is a must for us", kind="feature_request"))
    wait_for(lambda: items_in_channel(stack.db, channel)[0].kind == "feature_request", what="update")
    assert len(items_in_channel(stack.db, channel)) == 1


def test_invalid_submission_keeps_the_form_open_with_inline_errors(stack: Stack) -> None:
    author, pm, channel = _setup(stack)
    message = stack.emulator.post_message(channel, author, "Search is slow")
    view = _shortcut(stack, pm, channel, message)

    empty = _submit(stack, pm, view, _values(text="   "))
    tampered = _submit(stack, pm, view, _values(text="Search is slow", kind="urgent!!", customer="999999999"))

    assert empty.status == 200
    assert empty.json() == {
        "response_action": "errors",
        "errors": {FeedbackBlock.text: empty.json()["errors"][FeedbackBlock.text]},
    }
    errors = tampered.json()["errors"]
    assert set(errors) == {FeedbackBlock.kind, FeedbackBlock.customer}
    time.sleep(0.5)
    assert items_in_channel(stack.db, channel) == []


def test_customer_and_tag_options_search_as_you_type(stack: Stack) -> None:
    _, pm, _ = _setup(stack)
    name = unique("Initech")
    with stack.db.session() as s:
        s.add(
            Account(
                team_id=stack.team_id,
                name=name,
                name_key=name.lower(),
                domain=f"{name.lower()}.com",
                arr=Decimal("125000"),
            )
        )
        s.add(Tag(team_id=stack.team_id, name="billing"))
    payload = stack.driver.block_suggestion(
        user=pm, action_id=FeedbackAction.customer, block_id=FeedbackBlock.customer, value=name[:9]
    )
    options = stack.driver.send_interaction(payload).json()["options"]
    labels = [o["text"]["text"] for o in options]
    assert any(name in label and "$125,000 ARR" in label for label in labels)
    assert options[-1]["value"] == f"new:{name[:9]}"

    tags = stack.driver.send_interaction(
        stack.driver.block_suggestion(
            user=pm, action_id=FeedbackAction.tags, block_id=FeedbackBlock.tags, value="bill"
        )
    ).json()["options"]
    assert [o["value"] for o in tags] == ["billing", "new:bill"]


def test_edit_details_button_opens_the_item(stack: Stack) -> None:
    author, pm, channel = _setup(stack)
    message = stack.emulator.post_message(channel, author, "Mobile app crashes on login")
    stack.driver.react(user=pm, channel=channel, ts=message["ts"])
    reply = wait_for(lambda: stack.emulator.replies(channel, message["ts"]), what="confirmation")[0]
    button = reply["blocks"][0]["accessory"]
    before = len(stack.emulator.calls("views.open"))

    stack.driver.send_interaction(
        stack.driver.block_actions(
            user=pm, actions=[{**button, "block_id": "b", "action_ts": "1"}], channel=channel, message=reply
        )
    )

    view = wait_for(lambda: _opened_views(stack, before), what="edit modal")[0]
    item = items_in_channel(stack.db, channel)[0]
    assert view["title"]["text"] == f"Feedback #{item.id}"
    _submit(stack, pm, view, _values(text="Mobile app crashes on login (iOS 18)", importance="important"))
    wait_for(lambda: items_in_channel(stack.db, channel)[0].importance == "important", what="edit saved")
    with stack.db.session() as s:
        history = list(
            s.scalars(select(FeedbackTextVersion).where(FeedbackTextVersion.feedback_id == item.id))
        )
    assert [(h.text, h.reason, h.changed_by_user_id) for h in history] == [
        ("Mobile app crashes on login", "edited", pm)
    ]


def test_typed_feedback_links_a_named_customer_or_says_it_did_not(stack: Stack) -> None:
    _, pm, channel = _setup(stack)
    name = unique("Acme")
    with stack.db.session() as s:
        s.add(Account(team_id=stack.team_id, name=name, name_key=name.lower()))

    stack.driver.command(
        "/feedback", f"{name.upper()}: export to CSV drops the last column", user=pm, channel=channel
    )
    ghost = unique("Umbrella")  # other tests in the shared workspace may own an "Umbrella"
    stack.driver.command("/feedback", f"{ghost}: wants an API for audit logs", user=pm, channel=channel)

    items = wait_for(
        lambda: len(items_in_channel(stack.db, channel)) == 2 and items_in_channel(stack.db, channel)
    )
    by_text = {i.text: i for i in items}
    assert by_text["export to CSV drops the last column"].customer == name
    unknown = by_text[f"{ghost}: wants an API for audit logs"]
    assert unknown.account_id is None
    posts = wait_for(lambda: [p for p in stack.emulator.response_url_posts() if ghost in json.dumps(p)])
    assert "No account is called" in json.dumps(posts[0])


def test_bare_feedback_opens_the_form_and_saves_typed_feedback(stack: Stack) -> None:
    _, pm, channel = _setup(stack)
    before = len(stack.emulator.calls("views.open"))
    stack.driver.command("/feedback", "", user=pm, channel=channel)
    view = wait_for(lambda: _opened_views(stack, before), what="modal")[0]

    _submit(stack, pm, view, _values(text="Customers ask for a Linear integration", kind="feature_request"))

    item = wait_for(lambda: items_in_channel(stack.db, channel), what="item")[0]
    assert (item.source, item.kind, item.message_ts) == ("command", "feature_request", None)


def test_list_shows_private_items_only_to_channel_members(stack: Stack) -> None:
    emu = stack.emulator
    insider, outsider = emu.add_user(unique("in"))["id"], emu.add_user(unique("out"))["id"]
    secret = emu.add_channel(unique("deals"), is_private=True, members=[insider])["id"]
    public = emu.add_channel(unique("general"), members=[insider, outsider])["id"]
    tag = unique("t").lower()
    stack.driver.command("/feedback", f"Secret pricing concern {tag}", user=insider, channel=secret)
    stack.driver.command("/feedback", f"Public ask {tag}", user=insider, channel=public)
    wait_for(lambda: items_in_channel(stack.db, secret) and items_in_channel(stack.db, public), what="items")
    with stack.db.session() as s:
        for item in s.scalars(select(FeedbackItem).where(FeedbackItem.channel_id.in_([secret, public]))):
            item.tags = [tag]

    def listing(user: str) -> str:
        before = len(emu.response_url_posts())
        stack.driver.command("/feedback", f"list tag {tag}", user=user, channel=public)
        return json.dumps(wait_for(lambda: emu.response_url_posts()[before:], what="list")[0])

    assert "Secret pricing concern" in listing(insider) and "Public ask" in listing(insider)
    seen_by_outsider = listing(outsider)
    assert "Public ask" in seen_by_outsider and "Secret pricing concern" not in seen_by_outsider


def test_list_pages_and_filters(stack: Stack) -> None:
    emu = stack.emulator
    user = emu.add_user(unique("lister"))["id"]
    channel = emu.add_channel(unique("ideas"), members=[user])["id"]
    for n in range(12):
        stack.driver.command("/feedback", f"Idea number {n}", user=user, channel=channel)
    wait_for(lambda: len(items_in_channel(stack.db, channel)) == 12, what="12 items")
    # Each answer is read from its own response_url: capture confirmations and duplicate questions for the
    # twelve ideas may still be arriving.
    listed = stack.driver.command("/feedback", "list mine", user=user, channel=channel)
    first = wait_for(lambda: emu.response_url_posts(listed.response_key), what="page 1")[0]
    assert json.dumps(first).count("Idea number") == 10
    older = first["blocks"][-1]["elements"][-1]
    assert older["text"]["text"] == "Older →"
    paged = stack.driver.send_interaction(
        stack.driver.block_actions(
            user=user,
            actions=[{**older, "block_id": "p", "action_ts": "1"}],
            channel=channel,
            message={"ts": emu.next_ts(), "blocks": first["blocks"]},  # the ephemeral list message
        )
    )
    second = wait_for(lambda: emu.response_url_posts(paged.response_key), what="page 2")[0]
    assert json.dumps(second).count("Idea number") == 2 and "Idea number 0" in json.dumps(second)
    assert second.get("replace_original") is True

    nobody = stack.driver.command("/feedback", "list customer Nobody-Such", user=user, channel=channel)
    assert "No account matches" in json.dumps(
        wait_for(lambda: emu.response_url_posts(nobody.response_key))[0]
    )


def _prodops(stack: Stack, user: str, channel: str, text: str) -> str:
    response = stack.driver.command("/prodops", text, user=user, channel=channel)
    assert response.status == 200
    if response.body:
        return json.dumps(response.json())
    return json.dumps(
        wait_for(lambda: stack.emulator.response_url_posts(response.response_key), what="/prodops answer")[0]
    )


def test_watch_needs_an_admin_and_the_bot_in_the_channel(stack: Stack) -> None:
    author, admin, channel = _setup(stack, admin=True)
    lonely = stack.emulator.add_channel(unique("lonely"), members=[admin], bot_is_member=False)["id"]

    assert "Only ProdOps admins" in _prodops(stack, author, channel, f"watch <#{channel}>")
    assert "/invite @ProdOps" in _prodops(stack, admin, channel, f"watch <#{lonely}>")
    assert "Watching" in _prodops(stack, admin, channel, f"watch <#{channel}|x>")
    with stack.db.session() as s:
        assert s.get(WatchedChannel, (stack.team_id, channel)) is not None
    # An admin can make another person an admin, who can then watch channels.
    assert "is now a ProdOps admin" in _prodops(stack, admin, channel, f"admins add <@{author}>")
    other = stack.emulator.add_channel(unique("more"), members=[author])["id"]
    name = stack.emulator.channel(other)["name"]
    assert "Watching" in _prodops(stack, author, channel, f"watch #{name}")
    assert "Stopped watching" in _prodops(stack, author, channel, f"unwatch <#{other}>")


def test_watched_channel_captures_messages_skips_noise_and_follows_threads(stack: Stack) -> None:
    author, admin, channel = _setup(stack, admin=True)
    _prodops(stack, admin, channel, f"watch <#{channel}>")

    stack.driver.say(user=author, channel=channel, text="The new dashboard is too slow for our 500-seat team")
    stack.driver.say(user=author, channel=channel, text="thanks! 🙏")
    stack.driver.say(
        user=author, channel=channel, text="Automatic reply: I am out of the office until Monday"
    )
    items = wait_for(lambda: items_in_channel(stack.db, channel), what="channel item")
    item = items[0]
    assert item.source == "channel" and item.author_user_id == author
    wait_for(lambda: stack.emulator.message(channel, item.message_ts).get("reactions"), what="bulb reaction")

    stack.driver.say(user=admin, channel=channel, text="Which page exactly?", thread_ts=item.message_ts)
    stack.driver.say(user=author, channel=channel, text="The usage report", thread_ts=item.message_ts)
    edited = {**stack.emulator.message(channel, item.message_ts), "text": "The new dashboard is far too slow"}
    stack.driver.send_event(
        stack.driver.event_callback(
            {"type": "message", "subtype": "message_changed", "channel": channel, "hidden": True,
             "message": edited, "ts": stack.emulator.next_ts(), "event_ts": stack.emulator.next_ts()}
        )
    )  # fmt: skip

    def settled() -> FeedbackItem | None:
        with stack.db.session() as s:
            found = s.get(FeedbackItem, item.id)
            return found if found and len(found.replies) == 2 and "far too slow" in found.text else None

    final = wait_for(settled, what="replies and edit")
    assert [r.text for r in final.replies] == ["Which page exactly?", "The usage report"]
    assert len(items_in_channel(stack.db, channel)) == 1  # noise and replies made no items

    stack.driver.send_event(
        stack.driver.event_callback(
            {"type": "message", "subtype": "message_deleted", "channel": channel, "hidden": True,
             "deleted_ts": item.message_ts, "ts": stack.emulator.next_ts()}
        )
    )  # fmt: skip
    wait_for(lambda: items_in_channel(stack.db, channel)[0].deleted_at is not None, what="deleted")


def test_unwatched_channel_messages_are_not_captured(stack: Stack) -> None:
    author, _, channel = _setup(stack)
    stack.driver.say(user=author, channel=channel, text="Please add SAML support for the admin console")
    event_id = stack.driver.last_payload["event_id"]
    time.sleep(0.8)
    assert items_in_channel(stack.db, channel) == []
    assert inbox_rows(stack.db, event_id) == []  # chatter in unwatched channels is answered before the inbox


def test_shortcut_where_the_bot_is_not_a_member_teaches_invite(stack: Stack) -> None:
    author, pm, channel = _setup(stack, bot_in_channel=False)
    message = stack.emulator.post_message(channel, author, "Onboarding emails land in spam")
    view = _shortcut(stack, pm, channel, message)
    before = len(stack.emulator.response_url_posts())

    _submit(stack, pm, view, _values(text="Onboarding emails land in spam"))

    post = wait_for(lambda: stack.emulator.response_url_posts()[before:], what="invite hint")[0]
    assert "/invite @ProdOps" in json.dumps(post)
    assert len(items_in_channel(stack.db, channel)) == 1


def test_feedback_emoji_is_set_by_admins_only(stack: Stack) -> None:
    user, admin, channel = _setup(stack, admin=True)
    assert "Only ProdOps admins" in _prodops(stack, user, channel, "config feedback-emoji star")
    assert "is not an emoji name" in _prodops(stack, admin, channel, "config feedback-emoji <b>bold</b>")
    try:
        assert ":star:" in _prodops(stack, admin, channel, "config feedback-emoji :star:")
        message = stack.emulator.post_message(channel, user, "Please support webhooks")
        stack.driver.react(user=user, channel=channel, ts=message["ts"], reaction="star")
        wait_for(lambda: items_in_channel(stack.db, channel), what="captured with the new emoji")
    finally:
        _prodops(stack, admin, channel, "config feedback-emoji bulb")
    status = _prodops(stack, user, channel, "status")
    assert "ProdOps status" in status
    # the test server is pinned to TF-IDF (tests/conftest.py), and status names the similarity backend
    assert "Similarity: TF-IDF" in status and "PRODOPS_SIMILARITY_BACKEND" in status


def test_watched_message_then_reaction_is_one_item_and_retries_add_nothing(stack: Stack) -> None:
    author, admin, channel = _setup(stack, admin=True)
    _prodops(stack, admin, channel, f"watch <#{channel}>")
    stack.driver.say(user=author, channel=channel, text="Our auditors need a read-only role")
    event = stack.driver.last_payload
    item = wait_for(lambda: items_in_channel(stack.db, channel), what="channel item")[0]

    stack.driver.send_event(event, retry_num=1)  # Slack's retry of the message event
    stack.driver.react(user=admin, channel=channel, ts=item.message_ts)  # and a reaction on the same message
    time.sleep(1.0)

    items = items_in_channel(stack.db, channel)
    assert len(items) == 1 and items[0].source == "channel"


def test_replayed_command_delivery_saves_once(stack: Stack) -> None:
    _, pm, channel = _setup(stack)
    fields = stack.driver.slash_command(
        command="/feedback", text="Need an EU data residency option", user=pm, channel=channel
    )
    first = stack.driver.send_form(fields)
    again = stack.driver.send_form(fields)  # the same delivery (same trigger id) a second time
    assert (first.status, again.status) == (200, 200)
    wait_for(lambda: items_in_channel(stack.db, channel), what="item")
    time.sleep(0.8)
    assert len(items_in_channel(stack.db, channel)) == 1


def test_shortcut_on_a_message_too_long_for_the_form_keeps_it_whole(stack: Stack) -> None:
    author, pm, channel = _setup(stack)
    long_text = "The import wizard fails on large files. " * 130  # ~5,200 characters
    message = stack.emulator.post_message(channel, author, long_text)

    view = _shortcut(stack, pm, channel, message)

    item = wait_for(lambda: items_in_channel(stack.db, channel), what="item saved at once")[0]
    assert item.text == long_text.strip()
    assert view["title"]["text"] == f"Feedback #{item.id}"
    assert all(b.get("block_id") != FeedbackBlock.text for b in view["blocks"])
    _submit(stack, pm, view, _values(text=None, kind="bug"))
    wait_for(lambda: items_in_channel(stack.db, channel)[0].kind == "bug", what="details saved")
    assert items_in_channel(stack.db, channel)[0].text == long_text.strip()
