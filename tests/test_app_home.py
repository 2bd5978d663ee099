"""App Home over signed HTTP: what the Home tab shows, and its Start / Waiting / Done buttons."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from bot.requests import views
from bot.requests.ids import RequestAction
from storage.models import FeedbackItem, Request, RequestType
from tests.conftest import Stack
from tests.helpers import unique, wait_for

ALWAYS = {"timezone": "UTC", "working_days": [0, 1, 2, 3, 4, 5, 6], "start": "00:00", "end": "00:00"}


def _open_home(stack: Stack, user: str, tab: str = "home") -> None:
    event = {
        "type": "app_home_opened",
        "user": user,
        "channel": "D" + user[1:],
        "tab": tab,
        "event_ts": stack.driver.new_ts(),
    }
    assert stack.driver.send_event(stack.driver.event_callback(event)).status == 200


def _publishes(stack: Stack, user: str) -> list[dict[str, Any]]:
    return [c.params for c in stack.emulator.calls("views.publish") if c.params.get("user_id") == user]


def _home_text(stack: Stack, user: str) -> str:
    view = stack.emulator.home_view(user)
    return json.dumps(view["blocks"], ensure_ascii=False) if view else ""


def _request(stack: Stack, request_id: int) -> Request:
    with stack.db.read() as s:
        found = s.get(Request, request_id)
        assert found is not None
        return found


def _add_request(stack: Stack, type_id: int, **columns: Any) -> int:
    values: dict[str, Any] = {
        "title": unique("request"),
        "channel_id": "C0HOME",
        "source": "command",
        "status": "new",
        "priority": "normal",
        **columns,
    }
    with stack.db.session() as s:
        row = Request(team_id=stack.team_id, type_id=type_id, **values)
        s.add(row)
        s.flush()
        return row.id


def test_home_tab_shows_your_requests_assignments_and_feedback(stack: Stack) -> None:
    emu = stack.emulator
    me, colleague = emu.add_user(unique("me"))["id"], emu.add_user(unique("colleague"))["id"]
    with stack.db.session() as s:
        request_type = RequestType(team_id=stack.team_id, name=unique("Home"), owners=[], fields=[], sla={},
                                   calendar=ALWAYS)  # fmt: skip
        s.add(request_type)
        s.flush()
        type_id = request_type.id
    now = datetime.now(UTC)
    asked = [
        _add_request(stack, type_id, requester_user_id=me, title=f"Asked {i}", created_at=now - timedelta(hours=i),
                     due_at=now + timedelta(days=i + 1))
        for i in range(11)
    ]  # fmt: skip
    overdue = _add_request(stack, type_id, requester_user_id=me, title="Asked overdue", status="in_progress",
                           created_at=now - timedelta(days=3), due_at=now - timedelta(hours=2))  # fmt: skip
    _add_request(stack, type_id, requester_user_id=me, title="Asked and closed", status="done",
                 created_at=now - timedelta(days=3), resolved_at=now - timedelta(days=1))  # fmt: skip
    mine_to_do = _add_request(stack, type_id, requester_user_id=colleague, assignee_user_id=me,
                              title="Assigned new one", created_at=now, due_at=now + timedelta(days=2))  # fmt: skip
    with stack.db.session() as s:
        for i in range(6):
            s.add(FeedbackItem(team_id=stack.team_id, channel_id="C0HOME", text=f"Captured idea {i}",
                               captured_by_user_id=me, source="command", visibility="private",
                               permalink=f"https://example.slack.com/archives/C0HOME/p{i}",
                               created_at=now - timedelta(minutes=10 - i)))  # fmt: skip
        s.add(FeedbackItem(team_id=stack.team_id, channel_id="C0SECRET", text="Someone else's secret",
                           captured_by_user_id=colleague, author_user_id=me, source="command",
                           visibility="private", created_at=now))  # fmt: skip

    _open_home(stack, me)

    text = wait_for(lambda: _home_text(stack, me), what="home view published")
    view = stack.emulator.home_view(me)
    assert view is not None and view["type"] == "home"
    headers = [b["text"]["text"] for b in view["blocks"] if b["type"] == "header"]
    assert headers == ["Requests you asked for", "Assigned to you", "Your recent feedback"]
    asked_sections = []
    for block in view["blocks"][1:]:
        if block["type"] != "section":
            break
        asked_sections.append(block["text"]["text"])
    assert len(asked_sections) == 10
    assert (
        asked_sections[0].startswith(f"*#{overdue} Asked overdue*")
        and ":rotating_light:" in asked_sections[0]
    )
    assert f"#{asked[8]} Asked 8" in asked_sections[9]
    assert "and 2 more — `/request list mine`" in text
    assert "Asked and closed" not in text
    assert f"#{mine_to_do} Assigned new one" in text
    actions = next(b for b in view["blocks"] if b.get("block_id") == f"rq_home_{mine_to_do}")
    assert [e["text"]["text"] for e in actions["elements"]] == ["Start", "Waiting", "Done"]
    assert "Captured idea 5" in text and "Captured idea 1" in text and "Captured idea 0" not in text
    assert "<https://example.slack.com/archives/C0HOME/p5|#" in text
    assert "secret" not in text
    assert "`/request list" in text and "`/feedback" in text

    _open_home(stack, colleague, tab="messages")
    time.sleep(0.8)
    assert _publishes(stack, colleague) == []


def _card_action(stack: Stack, user: str, request: Request, action: dict[str, Any]) -> None:
    payload = stack.driver.block_actions(
        user=user,
        actions=[{"block_id": f"rq_card_{request.id}", "action_ts": "1", **action}],
        channel=request.triage_channel_id,
        message={"ts": request.triage_ts, "blocks": []},
    )
    assert stack.driver.send_interaction(payload).status == 200


def _home_click(stack: Stack, user: str, action_id: str, request_id: int) -> None:
    view = stack.emulator.home_view(user)
    assert view is not None
    action = {"type": "button", "action_id": action_id, "block_id": f"rq_home_{request_id}",
              "value": str(request_id)}  # fmt: skip
    payload = stack.driver.block_actions(user=user, actions=[action], view={**view, "type": "home"})
    assert stack.driver.send_interaction(payload).status == 200


def test_done_from_home_closes_the_request_updates_the_card_and_the_tab(stack: Stack) -> None:
    emu = stack.emulator
    requester, worker, bystander = (emu.add_user(unique(n))["id"] for n in ("asker", "worker", "bystander"))
    channel = emu.add_channel(unique("ops"), members=[requester, worker, bystander])["id"]
    stack.driver.command("/request", "Refresh the pricing page screenshots", user=requester, channel=channel)

    def opened() -> Request | None:
        with stack.db.read() as s:
            found = s.scalar(
                select(Request).where(Request.channel_id == channel, Request.triage_ts.is_not(None))
            )
            return found

    found = wait_for(opened, what="request with its card")
    assert found is not None
    request = found
    _card_action(stack, worker, request, {"type": "button", "action_id": RequestAction.assign_me,
                                          "value": str(request.id)})  # fmt: skip
    wait_for(lambda: _request(stack, request.id).assignee_user_id == worker, what="assigned")
    _open_home(stack, worker)
    wait_for(lambda: f"#{request.id} " in _home_text(stack, worker), what="home lists the assignment")
    home = stack.emulator.home_view(worker)
    assert home is not None
    actions = next(b for b in home["blocks"] if b.get("block_id") == f"rq_home_{request.id}")
    assert [e["text"]["text"] for e in actions["elements"]] == ["Waiting", "Done"]

    # Someone who may not change it is told so on their own Home tab; nothing changes.
    _open_home(stack, bystander)
    wait_for(lambda: _home_text(stack, bystander), what="bystander's home")
    _home_click(stack, bystander, views.ReportAction.home_done, request.id)
    wait_for(lambda: "Only the assignee" in _home_text(stack, bystander), what="refusal on the home tab")
    assert _request(stack, request.id).status == "in_progress"

    updates = len(stack.emulator.calls("chat.update"))
    publishes = len(_publishes(stack, worker))
    _home_click(stack, worker, views.ReportAction.home_done, request.id)

    wait_for(lambda: _request(stack, request.id).status == "done", what="closed from the home tab")
    assert _request(stack, request.id).resolved_at is not None
    card_update = wait_for(
        lambda: [
            c.params
            for c in stack.emulator.calls("chat.update")[updates:]
            if c.params.get("ts") == request.triage_ts
        ],  # fmt: skip
        what="card updated",
    )[-1]
    assert "Done" in json.dumps(card_update["blocks"]) and card_update["channel"] == request.triage_channel_id
    wait_for(lambda: len(_publishes(stack, worker)) > publishes, what="home re-published")
    wait_for(lambda: f"#{request.id} " not in _home_text(stack, worker), what="done request gone from home")
    assert "Only the assignee" not in _home_text(stack, worker)
    wait_for(
        lambda: any(
            "Done" in json.dumps(m)
            for m in stack.emulator.replies(request.reply_channel_id or "", request.reply_thread_ts or "")
        ),
        what="requester told",
    )
