"""Request intake and triage over signed HTTP: every intake path, the card's buttons, permissions, first response."""

from __future__ import annotations

import json
import time
from typing import Any

from sqlalchemy import select

from bot.requests.ids import RequestAction, RequestBlock
from storage.models import Request, RequestEvent, RequestType
from tests.conftest import Stack
from tests.helpers import unique, wait_for


def _requests(stack: Stack, channel: str) -> list[Request]:
    with stack.db.read() as s:
        return list(s.scalars(select(Request).where(Request.channel_id == channel).order_by(Request.id)))


def _request(stack: Stack, request_id: int) -> Request:
    with stack.db.read() as s:
        found = s.get(Request, request_id)
        assert found is not None
        return found


def _people(stack: Stack):
    emu = stack.emulator
    requester, owner, other = (emu.add_user(unique(n))["id"] for n in ("asker", "owner", "bystander"))
    channel = emu.add_channel(unique("ops"), members=[requester, owner, other])["id"]
    triage = emu.add_channel(unique("triage"), members=[owner, other])["id"]
    return requester, owner, other, channel, triage


def _type(stack: Stack, *, owners: list[str], triage: str, fields: list[dict[str, Any]] | None = None) -> int:
    with stack.db.session() as s:
        row = RequestType(
            team_id=stack.team_id, name=unique("Data pull"), triage_channel_id=triage, owners=owners,
            fields=fields or [], default_priority="high",
            sla={"high": {"first_response_minutes": 120, "resolution_minutes": 960}},
            calendar={"timezone": "UTC", "working_days": [0, 1, 2, 3, 4, 5, 6], "start": "00:00", "end": "00:00"},
        )  # fmt: skip
        s.add(row)
        s.flush()
        return row.id


def _posts(stack: Stack, channel: str) -> list[dict[str, Any]]:
    return [c.params for c in stack.emulator.calls("chat.postMessage") if c.params.get("channel") == channel]


def test_typed_request_opens_with_card_and_dm(stack: Stack) -> None:
    requester, _, _, channel, _ = _people(stack)

    response = stack.driver.command(
        "/request", "Pull churn numbers by segment for Q3", user=requester, channel=channel
    )

    assert response.status == 200
    request = wait_for(lambda: _requests(stack, channel), what="request")[0]
    assert (request.source, request.status, request.requester_user_id) == ("command", "new", requester)
    assert request.title == "Pull churn numbers by segment for Q3"
    card = wait_for(lambda: _posts(stack, channel), what="card")  # default type: triage where it was asked
    assert f"#{request.id}" in json.dumps(card[0]["blocks"])
    dm = wait_for(lambda: _posts(stack, requester), what="DM confirmation")[0]
    assert "is open" in json.dumps(dm["blocks"])
    stored = wait_for(lambda: _request(stack, request.id).triage_ts and _request(stack, request.id))
    assert (
        stored.triage_channel_id == channel
        and stored.reply_channel_id
        and stored.reply_channel_id.startswith("D")
    )
    assert stored.first_response_due_at is not None and stored.due_at is not None


def test_ticket_reaction_opens_one_request_and_confirms_in_thread(stack: Stack) -> None:
    requester, owner, _, channel, _ = _people(stack)
    message = stack.emulator.post_message(channel, requester, "Can someone add me to the beta flag?")

    stack.driver.react(user=owner, channel=channel, ts=message["ts"], reaction="ticket")
    stack.driver.react(user=requester, channel=channel, ts=message["ts"], reaction="ticket")

    request = wait_for(lambda: _requests(stack, channel), what="request")[0]
    assert (request.source, request.message_ts, request.requester_user_id) == (
        "reaction",
        message["ts"],
        requester,
    )
    wait_for(lambda: stack.emulator.replies(channel, message["ts"]), what="thread confirmation")
    time.sleep(0.8)
    assert len(_requests(stack, channel)) == 1


def test_form_shows_type_fields_and_checks_them(stack: Stack) -> None:
    requester, owner, _, channel, triage = _people(stack)
    fields = [
        {
            "key": "segment",
            "label": "Segment",
            "kind": "select",
            "required": True,
            "options": ["SMB", "Enterprise"],
        },
        {"key": "deadline", "label": "Needed by", "kind": "date", "required": False},
    ]
    type_id = _type(stack, owners=[owner], triage=triage, fields=fields)
    before = len(stack.emulator.calls("views.open"))
    stack.driver.command("/request", "", user=requester, channel=channel)
    view = wait_for(lambda: stack.emulator.calls("views.open")[before:], what="form")[0].params["view"]
    opened = stack.emulator.views()[-1]

    pick = {"type": "static_select", "action_id": RequestAction.type, "block_id": RequestBlock.type,
            "selected_option": {"value": str(type_id)}, "action_ts": "1"}  # fmt: skip
    updates = len(stack.emulator.calls("views.update"))
    stack.driver.send_interaction(stack.driver.block_actions(user=requester, actions=[pick], view=opened))
    updated = wait_for(lambda: stack.emulator.calls("views.update")[updates:], what="views.update")[0].params[
        "view"
    ]
    assert any(b.get("block_id") == "rq_field_segment" for b in updated["blocks"])

    values = {
        RequestBlock.type: {RequestAction.type: {"selected_option": {"value": str(type_id)}}},
        RequestBlock.summary: {RequestAction.summary: {"value": "Churn by segment"}},
        RequestBlock.priority: {RequestAction.priority: {"selected_option": {"value": "high"}}},
    }
    missing = stack.driver.send_interaction(
        stack.driver.view_submission(user=requester, view=view, values=values)
    )
    assert missing.json()["errors"] == {"rq_field_segment": "Segment is required for this type."}
    values["rq_field_segment"] = {RequestAction.field: {"selected_option": {"value": "Enterprise"}}}
    values["rq_field_deadline"] = {RequestAction.field: {"selected_date": "2026-12-18"}}
    ok = stack.driver.send_interaction(stack.driver.view_submission(user=requester, view=view, values=values))
    assert ok.status == 200
    request = wait_for(lambda: _requests(stack, channel), what="request")[0]
    assert request.field_values == {"segment": "Enterprise", "deadline": "2026-12-18"}
    assert request.type_id == type_id and request.triage_channel_id == triage
    assert wait_for(lambda: _posts(stack, triage), what="card in the triage channel")


def _card_action(stack: Stack, user: str, triage: str, request: Request, action: dict[str, Any]) -> None:
    payload = stack.driver.block_actions(
        user=user,
        actions=[{"block_id": f"rq_card_{request.id}", "action_ts": "1", **action}],
        channel=triage,
        message={"ts": request.triage_ts, "blocks": []},
    )
    assert stack.driver.send_interaction(payload).status == 200


def _open_in_type(stack: Stack) -> tuple[str, str, str, str, str, Request]:
    requester, owner, other, channel, triage = _people(stack)
    type_id = _type(stack, owners=[owner], triage=triage)
    message = stack.emulator.post_message(channel, requester, "Please review the launch checklist")
    view = None
    before = len(stack.emulator.calls("views.open"))
    stack.driver.send_interaction(
        stack.driver.message_shortcut(
            callback_id="create_request", user=requester, channel=channel, message=message
        )
    )
    view = wait_for(lambda: stack.emulator.calls("views.open")[before:], what="form")[0].params["view"]
    assert "Please review the launch checklist" in json.dumps(view)
    values = {
        RequestBlock.type: {RequestAction.type: {"selected_option": {"value": str(type_id)}}},
        RequestBlock.summary: {RequestAction.summary: {"value": "Review the launch checklist"}},
        RequestBlock.priority: {RequestAction.priority: {"selected_option": {"value": "high"}}},
    }
    stack.driver.send_interaction(stack.driver.view_submission(user=requester, view=view, values=values))
    request = wait_for(
        lambda: [r for r in _requests(stack, channel) if r.triage_ts], what="request with its card"
    )[0]
    assert request.source == "shortcut" and request.message_ts == message["ts"]
    return requester, owner, other, channel, triage, request


def test_card_buttons_permissions_and_thread_sync(stack: Stack) -> None:
    requester, owner, other, channel, triage, request = _open_in_type(stack)
    updates = len(stack.emulator.calls("chat.update"))

    _card_action(stack, other, triage, request, {"type": "static_select", "action_id": RequestAction.set_priority,
                                                  "selected_option": {"value": "low"}})  # fmt: skip
    refusal = wait_for(lambda: stack.emulator.ephemerals(channel=triage, user=other), what="refusal")
    assert "Only the assignee" in json.dumps(refusal[-1])
    assert _request(stack, request.id).priority == "high"

    _card_action(stack, owner, triage, request, {"type": "button", "action_id": RequestAction.assign_me,
                                                  "value": str(request.id)})  # fmt: skip
    assigned = wait_for(
        lambda: _request(stack, request.id).assignee_user_id == owner and _request(stack, request.id)
    )
    assert assigned.status == "in_progress" and assigned.first_response_at is not None
    wait_for(lambda: len(stack.emulator.calls("chat.update")) > updates, what="card updated in place")
    wait_for(
        lambda: any(
            "In progress" in (m.get("text") or "")
            for m in stack.emulator.replies(channel, request.message_ts or "")
        ),
        what="requester told in their thread",
    )

    _card_action(stack, owner, triage, request, {"type": "static_select", "action_id": RequestAction.set_status,
                                                  "selected_option": {"value": "done"}})  # fmt: skip
    done = wait_for(lambda: _request(stack, request.id).status == "done" and _request(stack, request.id))
    assert done.resolved_at is not None
    with stack.db.read() as s:
        kinds = [(e.kind, e.from_value, e.to_value) for e in s.scalars(
            select(RequestEvent).where(RequestEvent.request_id == request.id).order_by(RequestEvent.id))]  # fmt: skip
    assert kinds == [
        ("created", None, "new"),
        ("status", "new", "in_progress"),
        ("first_response", None, None),
        ("assignee", None, owner),
        ("status", "in_progress", "done"),
    ]


def test_requester_may_cancel_and_a_reply_is_the_first_response(stack: Stack) -> None:
    requester, owner, other, channel, triage, request = _open_in_type(stack)
    stack.driver.say(user=requester, channel=triage, text="Any news?", thread_ts=request.triage_ts)
    time.sleep(0.5)
    assert _request(stack, request.id).first_response_at is None  # the requester's own reply does not count
    stack.driver.say(user=other, channel=triage, text="Looking at it now", thread_ts=request.triage_ts)
    wait_for(lambda: _request(stack, request.id).first_response_at is not None, what="first response")

    _card_action(stack, requester, triage, request, {"type": "static_select", "action_id": RequestAction.set_status,
                                                      "selected_option": {"value": "declined"}})  # fmt: skip
    wait_for(lambda: _request(stack, request.id).status == "declined", what="cancelled by the requester")
