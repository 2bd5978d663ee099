"""`/feedback themes` through the real server: a proposal shown, accepted, renamed in the modal, and the
rename surviving a re-clustering; non-admins see the list but cannot change it."""

from __future__ import annotations

import json
from typing import Any

from bot.insights import theme_messaging as messaging
from bot.insights import themes_job
from bot.insights.theme_messaging import ThemeAction, ThemeBlock, theme_list_blocks
from bot.insights.themes import ThemeOverview
from storage.models import FeedbackItem, Theme
from tests.conftest import Stack
from tests.helpers import unique, wait_for
from tests.themes_data import GROUPS, TFIDF, add_items


def _theme(stack: Stack, theme_id: int) -> Theme:
    with stack.db.read() as s:
        theme = s.get(Theme, theme_id)
        assert theme is not None
        return theme


def _proposal_for(stack: Stack, item_ids: list[int]) -> Theme:
    with stack.db.read() as s:
        held = [s.get(FeedbackItem, i) for i in item_ids]
        theme_ids = [i.theme_id for i in held if i is not None and i.theme_id is not None]
    assert theme_ids, "not proposed"
    return _theme(stack, max(set(theme_ids), key=theme_ids.count))


def _list(stack: Stack, user: str, channel: str) -> dict[str, Any]:
    before = len(stack.emulator.response_url_posts())
    stack.driver.command("/feedback", "themes", user=user, channel=channel)
    return wait_for(lambda: stack.emulator.response_url_posts()[before:], what="themes list")[0]


def _button(answer: dict[str, Any], action: ThemeAction, theme_id: int) -> dict[str, Any]:
    for block in answer["blocks"]:
        for element in block.get("elements", []) if block["type"] == "actions" else []:
            if element.get("action_id") == action.value and json.loads(element["value"])["t"] == theme_id:
                return element
    raise AssertionError(f"no {action} button for theme #{theme_id}")


def _click(stack: Stack, user: str, channel: str, answer: dict[str, Any], button: dict[str, Any]) -> None:
    message = {"ts": stack.driver.new_ts(), "blocks": answer["blocks"], "text": answer.get("text", "")}
    action = {"action_id": button["action_id"], "block_id": "b", "type": "button", "value": button["value"]}
    payload = stack.driver.block_actions(user=user, actions=[action], channel=channel, message=message)
    assert stack.driver.send_interaction(payload).status == 200


def test_accept_rename_and_rename_survives_reclustering(stack: Stack) -> None:
    team = stack.team_id
    admin = stack.emulator.add_user(unique("pm"), is_admin=True)["id"]
    member = stack.emulator.add_user(unique("sales"))["id"]
    channel = stack.emulator.add_channel(unique("feedback"), members=[admin, member])["id"]
    sso = add_items(stack.db, team, GROUPS["sso"], channel_id=channel)
    export = add_items(stack.db, team, GROUPS["export"], channel_id=channel)
    assert themes_job.run_for_team(stack.db, team, force=True, settings=TFIDF).ran
    sso_theme, export_theme = _proposal_for(stack, sso), _proposal_for(stack, export)
    assert sso_theme.status == export_theme.status == "proposed"

    # Anyone sees the list; only admins get the buttons, and a forged click changes nothing.
    seen = _list(stack, member, channel)
    assert sso_theme.name in json.dumps(seen, ensure_ascii=False) and "Only ProdOps admins" in json.dumps(
        seen, ensure_ascii=False
    )
    assert not any(b["type"] == "actions" for b in seen["blocks"])
    answer = _list(stack, admin, channel)
    accept = _button(answer, ThemeAction.accept, sso_theme.id)
    before = len(stack.emulator.response_url_posts())
    _click(stack, member, channel, answer, accept)
    wait_for(
        lambda: [
            p
            for p in stack.emulator.response_url_posts()[before:]
            if "Only ProdOps admins" in json.dumps(p, ensure_ascii=False)
        ],
        what="refusal",
    )
    assert _theme(stack, sso_theme.id).status == "proposed"

    _click(stack, admin, channel, answer, accept)
    wait_for(lambda: _theme(stack, sso_theme.id).status == "active", what="accepted")
    refreshed = wait_for(
        lambda: [
            p
            for p in stack.emulator.response_url_posts()[before:]
            if "Accepted" in json.dumps(p, ensure_ascii=False)
        ],
        what="refreshed list",
    )[0]
    assert refreshed.get("replace_original") is True

    # Rename the export proposal in the modal.
    opens = len(stack.emulator.calls("views.open"))
    _click(stack, admin, channel, answer, _button(answer, ThemeAction.rename, export_theme.id))
    view = wait_for(lambda: stack.emulator.calls("views.open")[opens:], what="rename modal")[0].params["view"]
    view = json.loads(view) if isinstance(view, str) else view
    values = {
        ThemeBlock.name.value: {
            ThemeAction.name.value: {"type": "plain_text_input", "value": export_theme.name}
        },
        ThemeBlock.description.value: {
            ThemeAction.description.value: {"type": "plain_text_input", "value": None}
        },
    }
    taken = {**values, ThemeBlock.name.value: {ThemeAction.name.value: {"value": sso_theme.name}}}
    refused = stack.driver.send_interaction(stack.driver.view_submission(user=admin, view=view, values=taken))
    assert "already called" in refused.json()["errors"][ThemeBlock.name.value]
    renamed = {**values, ThemeBlock.name.value: {ThemeAction.name.value: {"value": "CSV export columns"}}}
    assert (
        stack.driver.send_interaction(
            stack.driver.view_submission(user=admin, view=view, values=renamed)
        ).status
        == 200
    )
    wait_for(lambda: _theme(stack, export_theme.id).name == "CSV export columns", what="renamed")
    assert _theme(stack, export_theme.id).name_source == "human"

    # More export feedback arrives and the job re-clusters: the person's name stays.
    add_items(stack.db, team, [f"{t} — again" for t in GROUPS["export"][:5]], channel_id=channel)
    assert themes_job.run_for_team(stack.db, team, force=True, settings=TFIDF).ran
    assert _theme(stack, export_theme.id).name == "CSV export columns"
    assert _theme(stack, export_theme.id).status == "proposed"
    assert "CSV export columns" in json.dumps(_list(stack, admin, channel), ensure_ascii=False)


def test_list_blocks_without_themes_say_what_happens_next() -> None:
    blocks = theme_list_blocks(
        ThemeOverview(active=[], proposed=[], unsorted=4), can_manage=False, channel_id=None
    )
    text = json.dumps(blocks, ensure_ascii=False)
    assert "4 unsorted" in text and "No themes yet" in text
    assert messaging.UNSORTED == "unsorted"
