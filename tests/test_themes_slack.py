"""`/feedback themes` through the real server: a proposal shown, accepted, renamed in the modal, and the
rename surviving a re-clustering; non-admins see the list but cannot change it."""

from __future__ import annotations

import json
from typing import Any

from bot.insights import theme_messaging as messaging
from bot.insights import themes, themes_job
from bot.insights.theme_messaging import ThemeAction, ThemeBlock, theme_list_blocks
from bot.insights.themes import ThemeOverview
from storage.models import FeedbackItem, Theme
from tests.conftest import Stack
from tests.helpers import unique, wait_for
from tests.themes_data import GROUPS, SCENARIO_GROUPS, TFIDF, add_items


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
    scanner = add_items(stack.db, team, SCENARIO_GROUPS["scanner"], channel_id=channel)
    invoices = add_items(stack.db, team, SCENARIO_GROUPS["invoices"], channel_id=channel)
    assert themes_job.run_for_team(stack.db, team, force=True, settings=TFIDF).ran
    scanner_theme, invoice_theme = _proposal_for(stack, scanner), _proposal_for(stack, invoices)
    assert scanner_theme.status == invoice_theme.status == "proposed"

    # Anyone sees the list; only admins get the buttons, and a forged click changes nothing.
    seen = _list(stack, member, channel)
    assert scanner_theme.name in json.dumps(seen, ensure_ascii=False) and "Only ProdOps admins" in json.dumps(
        seen, ensure_ascii=False
    )
    assert not any(b["type"] == "actions" for b in seen["blocks"])
    answer = _list(stack, admin, channel)
    accept = _button(answer, ThemeAction.accept, scanner_theme.id)
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
    assert _theme(stack, scanner_theme.id).status == "proposed"

    _click(stack, admin, channel, answer, accept)
    wait_for(lambda: _theme(stack, scanner_theme.id).status == "active", what="accepted")
    refreshed = wait_for(
        lambda: [
            p
            for p in stack.emulator.response_url_posts()[before:]
            if "Accepted" in json.dumps(p, ensure_ascii=False)
        ],
        what="refreshed list",
    )[0]
    assert refreshed.get("replace_original") is True

    # Rename the invoices proposal in the modal.
    new_name = unique("Spanish invoices")
    opens = len(stack.emulator.calls("views.open"))
    _click(stack, admin, channel, answer, _button(answer, ThemeAction.rename, invoice_theme.id))
    view = wait_for(lambda: stack.emulator.calls("views.open")[opens:], what="rename modal")[0].params["view"]
    view = json.loads(view) if isinstance(view, str) else view
    values = {
        ThemeBlock.name.value: {
            ThemeAction.name.value: {"type": "plain_text_input", "value": invoice_theme.name}
        },
        ThemeBlock.description.value: {
            ThemeAction.description.value: {"type": "plain_text_input", "value": None}
        },
    }
    taken = {**values, ThemeBlock.name.value: {ThemeAction.name.value: {"value": scanner_theme.name}}}
    refused = stack.driver.send_interaction(stack.driver.view_submission(user=admin, view=view, values=taken))
    assert "already called" in refused.json()["errors"][ThemeBlock.name.value]
    renamed = {**values, ThemeBlock.name.value: {ThemeAction.name.value: {"value": new_name}}}
    assert (
        stack.driver.send_interaction(
            stack.driver.view_submission(user=admin, view=view, values=renamed)
        ).status
        == 200
    )
    wait_for(lambda: _theme(stack, invoice_theme.id).name == new_name, what="renamed")
    assert _theme(stack, invoice_theme.id).name_source == "human"

    # More invoices feedback arrives and the job re-clusters: the person's name stays.
    add_items(stack.db, team, [f"{t} — again" for t in SCENARIO_GROUPS["invoices"][:5]], channel_id=channel)
    assert themes_job.run_for_team(stack.db, team, force=True, settings=TFIDF).ran
    assert _theme(stack, invoice_theme.id).name == new_name
    assert _theme(stack, invoice_theme.id).status == "proposed"
    assert new_name in json.dumps(_list(stack, admin, channel), ensure_ascii=False)


def test_list_blocks_without_themes_say_what_happens_next() -> None:
    blocks = theme_list_blocks(
        ThemeOverview(active=[], proposed=[], unsorted=4), can_manage=False, channel_id=None
    )
    text = json.dumps(blocks, ensure_ascii=False)
    assert "4 unsorted" in text and "No themes yet" in text
    assert messaging.UNSORTED == "unsorted"


def _manage(stack: Stack, user: str, channel: str, answer: dict[str, Any], verb: str, theme_id: int) -> None:
    """Picks Rename… / Merge into… / Move or split items… in a theme's ⋯ menu."""
    for block in answer["blocks"]:
        accessory = block.get("accessory") or {}
        elements = [accessory] + (block.get("elements") or [])
        for element in elements:
            if element.get("action_id") != ThemeAction.manage.value:
                continue
            for option in element["options"]:
                if option["value"].startswith(f"{verb}:{theme_id}:"):
                    action = {
                        "action_id": ThemeAction.manage.value,
                        "block_id": "b",
                        "type": "overflow",
                        "selected_option": option,
                    }
                    message = {"ts": stack.driver.new_ts(), "blocks": answer["blocks"]}
                    payload = stack.driver.block_actions(
                        user=user, actions=[action], channel=channel, message=message
                    )
                    assert stack.driver.send_interaction(payload).status == 200
                    return
    raise AssertionError(f"no {verb} option for theme #{theme_id}")


def _opened_view(stack: Stack, before: int) -> dict[str, Any]:
    view = wait_for(lambda: stack.emulator.calls("views.open")[before:], what="modal")[0].params["view"]
    return json.loads(view) if isinstance(view, str) else view


def test_dismiss_merge_and_move_through_modals(stack: Stack) -> None:
    team = stack.team_id
    admin = stack.emulator.add_user(unique("pm"), is_admin=True)["id"]
    channel = stack.emulator.add_channel(unique("feedback"), members=[admin])["id"]
    secret = stack.emulator.add_channel(unique("deals"), members=[admin], is_private=True)["id"]
    mobile = add_items(stack.db, team, GROUPS["mobile"][:6], channel_id=channel, settings=TFIDF)
    private = add_items(
        stack.db, team, ["Mobile app crashes for our biggest customer Initech"], channel_id=secret,
        visibility="private", settings=TFIDF,
    )  # fmt: skip
    sso = add_items(stack.db, team, GROUPS["sso"][:6], channel_id=channel, settings=TFIDF)
    with stack.db.session() as s:
        crashes = themes.create(s, team_id=team, name=unique("Crashes"), user_id=admin)
        login = themes.create(s, team_id=team, name=unique("Login"), user_id=admin)
        doomed = themes.create(s, team_id=team, name=unique("Okta maybe"), user_id=None)
        doomed.status, doomed.name_source = "proposed", "job"
        themes.move_items(s, team_id=team, item_ids=mobile + private, target_id=crashes.id)
        themes.move_items(s, team_id=team, item_ids=sso[:3], target_id=login.id)
        themes.move_items(s, team_id=team, item_ids=sso[3:], target_id=doomed.id)
        crashes_id, login_id, doomed_id = crashes.id, login.id, doomed.id

    answer = _list(stack, admin, channel)
    before = len(stack.emulator.response_url_posts())
    _click(stack, admin, channel, answer, _button(answer, ThemeAction.dismiss, doomed_id))
    wait_for(lambda: _theme(stack, doomed_id).status == "dismissed", what="dismissed")
    wait_for(
        lambda: [p for p in stack.emulator.response_url_posts()[before:] if "Dismissed" in json.dumps(p)],
        what="list after dismiss",
    )

    # Move: the modal lists the theme's items this channel may see (not the private one), and a new
    # name splits the checked ones off.
    opens = len(stack.emulator.calls("views.open"))
    _manage(stack, admin, channel, answer, "move", crashes_id)
    view = _opened_view(stack, opens)
    shown = json.dumps(view, ensure_ascii=False)
    assert "Initech" not in shown and "1 item(s) from private channels" in shown
    options = next(b for b in view["blocks"] if b.get("block_id") == ThemeBlock.items.value)["element"][
        "options"
    ]
    assert {int(o["value"]) for o in options} == set(mobile)
    checked = [o for o in options if int(o["value"]) in mobile[:2]]
    values = {
        ThemeBlock.items.value: {ThemeAction.items.value: {"selected_options": checked}},
        ThemeBlock.new_name.value: {ThemeAction.new_name.value: {"value": None}},
        ThemeBlock.target.value: {ThemeAction.target.value: {"selected_option": None}},
    }
    both = {**values, ThemeBlock.new_name.value: {ThemeAction.new_name.value: {"value": "Android crashes"}},
            ThemeBlock.target.value: {ThemeAction.target.value: {"selected_option": {"value": str(login_id)}}}}  # fmt: skip
    refused = stack.driver.send_interaction(stack.driver.view_submission(user=admin, view=view, values=both))
    assert "one of the two" in refused.json()["errors"][ThemeBlock.target.value]
    split = {**values, ThemeBlock.new_name.value: {ThemeAction.new_name.value: {"value": unique("Android")}}}
    assert (
        stack.driver.send_interaction(
            stack.driver.view_submission(user=admin, view=view, values=split)
        ).status
        == 200
    )
    wait_for(lambda: _item(stack, mobile[0]).theme_id not in (None, crashes_id), what="split")
    new_theme = _theme(stack, _item(stack, mobile[0]).theme_id or 0)
    assert new_theme.status == "active" and new_theme.name_source == "human"
    assert (
        _item(stack, mobile[1]).theme_id == new_theme.id and _item(stack, mobile[1]).theme_source == "human"
    )
    assert _item(stack, mobile[2]).theme_id == crashes_id

    # Merge: Login into Crashes, picked in the modal's select.
    opens = len(stack.emulator.calls("views.open"))
    _manage(stack, admin, channel, answer, "merge", login_id)
    view = _opened_view(stack, opens)
    select = next(b for b in view["blocks"] if b.get("block_id") == ThemeBlock.target.value)["element"]
    assert str(login_id) not in {o["value"] for o in select["options"]}
    pick = {
        ThemeBlock.target.value: {ThemeAction.target.value: {"selected_option": {"value": str(crashes_id)}}}
    }
    assert (
        stack.driver.send_interaction(stack.driver.view_submission(user=admin, view=view, values=pick)).status
        == 200
    )
    wait_for(lambda: _theme(stack, login_id).status == "merged", what="merged")
    assert _theme(stack, login_id).merged_into_id == crashes_id
    assert all(_item(stack, i).theme_id == crashes_id for i in sso[:3])
    assert all(_item(stack, i).theme_id == doomed_id for i in sso[3:])  # dismissed items stay put


def _item(stack: Stack, item_id: int) -> FeedbackItem:
    with stack.db.read() as s:
        item = s.get(FeedbackItem, item_id)
        assert item is not None
        return item
