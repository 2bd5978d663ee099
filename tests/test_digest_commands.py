"""`/digest`: the subscription modal, its inline errors, list / edit / unsubscribe, permissions, preview, send."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any
from urllib.parse import unquote
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from bot.digests import service
from bot.digests.modal import DigestAction, DigestBlock, ModalMeta, builder_link
from bot.digests.service import InvalidSchedule
from bot.metrics.collector import next_run_after
from storage.models import DigestSubscription, Metric, MetricPoint
from storage.types import utcnow
from tests.conftest import Stack
from tests.helpers import unique, wait_for

# ---- the service, pure -------------------------------------------------------------------------------


def test_cadences_are_stored_as_cron() -> None:
    assert service.cron_for(cadence="daily", time="09:00") == "0 9 * * *"
    assert service.cron_for(cadence="weekly", time="09:00", weekday="mon") == "0 9 * * mon"
    assert service.cron_for(cadence="monthly", time="09:05", day="1") == "5 9 1 * *"
    assert service.cron_for(cadence="monthly", time="18:00", day="last") == "0 18 last * *"
    assert service.cron_for(cadence="cron", time=None, cron=" 0 9 * * 1-5 ") == "0 9 * * mon,tue,wed,thu,fri"
    with pytest.raises(InvalidSchedule) as missing:
        service.cron_for(cadence="weekly", time="09:00", weekday=None)
    assert missing.value.field == "weekday"
    with pytest.raises(InvalidSchedule) as bad_day:
        service.cron_for(cadence="monthly", time="09:00", day="31")
    assert bad_day.value.field == "day"


def test_numeric_weekdays_mean_what_standard_cron_means() -> None:
    # APScheduler 3 numbers weekdays from Monday = 0; standard cron from Sunday = 0 (and 7).
    assert service.normalize_cron("0 9 * * 1") == "0 9 * * mon"
    assert service.normalize_cron("0 9 * * 0") == "0 9 * * sun"
    assert service.normalize_cron("0 9 * * 7") == "0 9 * * sun"
    assert service.normalize_cron("0 9 * * 0-6") == "0 9 * * *"
    assert service.normalize_cron("0 9 * * */2") == "0 9 * * tue,thu,sat,sun"
    assert service.normalize_cron("0 9 * * mon-fri") == "0 9 * * mon-fri"
    monday = next_run_after(cron=service.normalize_cron("0 9 * * 1"), timezone="UTC", after=utcnow())
    assert monday.weekday() == 0


def test_validate_cron() -> None:
    assert service.validate_cron("0 9 * * mon-fri", "Europe/Berlin") is None
    assert "not a valid cron" in (service.validate_cron("0 25 * * *", "UTC") or "")
    assert "5" in (service.validate_cron("0 9 * *", "UTC") or "")
    assert "never fires" in (service.validate_cron("0 9 30 2 *", "UTC") or "")
    assert "hourly" in (service.validate_cron("*/5 * * * *", "UTC") or "")
    assert service.validate_cron("0 * * * *", "UTC") is None
    assert "time zone" in (service.validate_cron("0 9 * * *", "Mars/Olympus") or "")


def test_who_may_manage() -> None:
    assert service.may_manage(is_admin=True, user_in_channel=False)
    assert service.may_manage(is_admin=False, user_in_channel=True)
    assert not service.may_manage(is_admin=False, user_in_channel=False)


def test_builder_link_drops_blocks_that_do_not_fit() -> None:
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "x" * 500}} for _ in range(30)]
    url, fitted = builder_link(blocks)
    assert url is not None and url.startswith("https://app.slack.com/block-kit-builder/#")
    assert len(url) <= 8000 and 0 < fitted < 30
    assert json.loads(unquote(url.split("#", 1)[1])) == {"blocks": blocks[:fitted]}
    assert builder_link(blocks[:2])[1] == 2


# ---- through the real server -------------------------------------------------------------------------


def _channel(stack: Stack, *, tz: str = "Europe/Berlin") -> tuple[str, str]:
    user = stack.emulator.add_user(unique("pm"), tz=tz)["id"]
    channel = stack.emulator.add_channel(unique("product"), members=[user])["id"]
    return user, channel


def _metric(stack: Stack, *, points: bool = False) -> str:
    key = unique("signups").replace("-", "_")
    now = utcnow()
    with stack.db.session() as s:
        metric = Metric(team_id=stack.team_id, key=key, name="Signups", unit="count", direction="up_is_good",
                        summary="sum", period="day", source="manual")  # fmt: skip
        s.add(metric)
        s.flush()
        if points:
            for days in range(8):
                ts = now - timedelta(days=days, seconds=5)
                s.add(MetricPoint(team_id=stack.team_id, metric_id=metric.id, ts=ts, value=10.0 + days))
    return key


def _opened(stack: Stack, before: int, what: str = "modal") -> dict[str, Any]:
    return wait_for(lambda: stack.emulator.calls("views.open")[before:], what=what)[0].params["view"]


def _values(
    *,
    cadence: str = "weekly",
    time: str | None = "08:30",
    weekday: str | None = "wed",
    day: str | None = None,
    cron: str | None = None,
    timezone: str = "Europe/Berlin",
    sections: tuple[str, ...] = ("feedback", "requests"),
    metrics: tuple[str, ...] = (),
    name: str = "Weekly product digest",
) -> dict[str, Any]:
    def selected(block: str, action: str, value: str | None) -> dict[str, Any]:
        return {block: {action: {"selected_option": {"value": value} if value else None}}}

    def many(block: str, action: str, chosen: tuple[str, ...]) -> dict[str, Any]:
        return {block: {action: {"selected_options": [{"value": v} for v in chosen]}}}

    return {
        DigestBlock.name: {DigestAction.name: {"value": name}},
        **selected(DigestBlock.cadence, DigestAction.cadence, cadence),
        DigestBlock.time: {DigestAction.time: {"selected_time": time}},
        **selected(DigestBlock.weekday, DigestAction.weekday, weekday),
        **selected(DigestBlock.day, DigestAction.day, day),
        DigestBlock.cron: {DigestAction.cron: {"value": cron}},
        DigestBlock.timezone: {DigestAction.timezone: {"value": timezone}},
        **many(DigestBlock.sections, DigestAction.sections, sections),
        **many(DigestBlock.metrics, DigestAction.metrics, metrics),
        **selected(DigestBlock.feedback_top, DigestAction.feedback_top, "3"),
        **selected(DigestBlock.feedback_by, DigestAction.feedback_by, "arr"),
        **many(DigestBlock.request_types, DigestAction.request_types, ()),
        **many(DigestBlock.options, DigestAction.options, ("skip_if_empty",)),
    }


def _submit(stack: Stack, user: str, view: dict[str, Any], values: dict[str, Any]) -> Any:
    return stack.driver.send_interaction(stack.driver.view_submission(user=user, view=view, values=values))


def _subscriptions(stack: Stack, channel: str) -> list[DigestSubscription]:
    with stack.db.read() as s:
        query = select(DigestSubscription).where(DigestSubscription.channel_id == channel)
        return list(s.scalars(query.order_by(DigestSubscription.id)))


def _answers(stack: Stack, since: int) -> list[str]:
    return [json.dumps(p) for p in stack.emulator.response_url_posts()[since:]]


def _answer(stack: Stack, since: int, needle: str) -> str:
    return wait_for(lambda: [a for a in _answers(stack, since) if needle in a], what=needle)[0]


def _subscribe(stack: Stack, user: str, channel: str, **values: Any) -> DigestSubscription:
    before, known = len(stack.emulator.calls("views.open")), len(_subscriptions(stack, channel))
    stack.driver.command("/digest", "subscribe", user=user, channel=channel)
    view = _opened(stack, before)
    assert _submit(stack, user, view, _values(**values)).status == 200
    return wait_for(lambda: _subscriptions(stack, channel)[known:], what="subscription")[0]


def test_subscribe_through_the_modal(stack: Stack) -> None:
    user, channel = _channel(stack)
    key = _metric(stack)
    before, answers = len(stack.emulator.calls("views.open")), len(stack.emulator.response_url_posts())

    stack.driver.command("/digest", "subscribe", user=user, channel=channel)
    view = _opened(stack, before)
    blocks = {b.get("block_id"): b for b in view["blocks"]}
    assert blocks[DigestBlock.timezone]["element"]["initial_value"] == "Europe/Berlin"  # from users.info
    assert key in json.dumps(blocks[DigestBlock.metrics])
    assert ModalMeta.load(view["private_metadata"]).channel_id == channel

    values = _values(sections=("metrics", "feedback", "requests"), metrics=(key,))
    assert _submit(stack, user, view, values).status == 200
    row = wait_for(lambda: _subscriptions(stack, channel), what="subscription")[0]
    assert (row.cadence, row.cron, row.timezone) == ("weekly", "30 8 * * wed", "Europe/Berlin")
    assert row.sections == {
        "metrics": {"keys": [key]},
        "feedback": {"top": 3, "by": "arr"},
        "requests": {"types": []},
    }
    assert row.skip_if_empty and row.created_by_user_id == user and row.name == "Weekly product digest"
    assert row.next_run_at is not None and row.next_run_at > utcnow()
    assert row.next_run_at == next_run_after(cron=row.cron, timezone=row.timezone, after=row.created_at)
    local = row.next_run_at.astimezone(ZoneInfo("Europe/Berlin"))
    assert (local.weekday(), local.hour, local.minute) == (2, 8, 30)
    assert "Subscribed" in _answer(stack, answers, "Subscribed")


def test_inline_errors_keep_the_modal_open(stack: Stack) -> None:
    user, channel = _channel(stack)
    before = len(stack.emulator.calls("views.open"))
    stack.driver.command("/digest", "subscribe", user=user, channel=channel)
    view = _opened(stack, before)

    def errors(**values: Any) -> dict[str, str]:
        answer = _submit(stack, user, view, _values(**values))
        assert answer.status == 200
        return dict(answer.json()["errors"])

    assert "not a valid cron" in errors(cadence="cron", cron="0 25 * * *")[DigestBlock.cron]
    assert "Give a cron" in errors(cadence="cron", cron="")[DigestBlock.cron]
    assert "hourly" in errors(cadence="cron", cron="*/10 * * * *")[DigestBlock.cron]
    assert "day of the week" in errors(cadence="weekly", weekday=None)[DigestBlock.weekday]
    assert "day of the month" in errors(cadence="monthly", day=None)[DigestBlock.day]
    assert "time" in errors(cadence="daily", time=None)[DigestBlock.time].lower()
    assert "not a time zone" in errors(timezone="Mars/Olympus")[DigestBlock.timezone]
    assert "at least one" in errors(sections=())[DigestBlock.sections]
    _metric(stack)
    assert "Pick the metrics" in errors(sections=("metrics",))[DigestBlock.metrics]
    assert "no longer exist" in errors(sections=("metrics",), metrics=("nope_gone",))[DigestBlock.metrics]
    assert _subscriptions(stack, channel) == []


def test_list_edit_resume_and_unsubscribe(stack: Stack) -> None:
    user, channel = _channel(stack)
    row = _subscribe(stack, user, channel)
    answers = len(stack.emulator.response_url_posts())

    stack.driver.command("/digest", "list", user=user, channel=channel)
    listed = _answer(stack, answers, "Weekly product digest")
    assert f"`{row.id}`" in listed and "Every Wednesday at 08:30 (Europe/Berlin)" in listed
    assert DigestAction.manage in listed

    with stack.db.session() as s:  # paused by the outbox (say the bot was removed), and behind schedule
        stored = s.get(DigestSubscription, row.id)
        assert stored is not None
        stored.paused_at, stored.paused_reason = utcnow(), "not_in_channel"
        stored.last_period_end = utcnow() - timedelta(days=30)
    before = len(stack.emulator.calls("views.open"))
    stack.driver.command("/digest", "edit", user=user, channel=channel)  # the channel's only digest: no id
    view = _opened(stack, before)
    blocks = {b.get("block_id"): b for b in view["blocks"]}
    assert blocks[DigestBlock.cadence]["element"]["initial_option"]["value"] == "weekly"
    assert blocks[DigestBlock.weekday]["element"]["initial_option"]["value"] == "wed"
    assert blocks[DigestBlock.time]["element"]["initial_time"] == "08:30"
    assert ModalMeta.load(view["private_metadata"]).subscription_id == row.id

    answers = len(stack.emulator.response_url_posts())
    assert _submit(stack, user, view, _values(cadence="daily", time="07:15", timezone="UTC")).status == 200
    edited = wait_for(lambda: [r for r in _subscriptions(stack, channel) if r.cron == "15 7 * * *"])[0]
    assert edited.id == row.id and edited.cadence == "daily" and edited.timezone == "UTC"
    assert edited.paused_at is None and edited.paused_reason is None and edited.last_period_end is None
    assert edited.next_run_at == next_run_after(cron="15 7 * * *", timezone="UTC", after=edited.updated_at)
    _answer(stack, answers, "resumed")

    second = _subscribe(stack, user, channel, name="Monthly review", cadence="monthly", day="last")
    assert second.cron == "30 8 last * *"
    answers = len(stack.emulator.response_url_posts())
    stack.driver.command("/digest", "unsubscribe", user=user, channel=channel)
    assert "Say which" in _answer(stack, answers, "2 digests")
    stack.driver.command("/digest", "unsubscribe", user=user, channel=channel)  # still two: nothing removed
    stack.driver.command("/digest", f"unsubscribe {row.id}", user=user, channel=channel)
    _answer(stack, answers, "Unsubscribed")
    assert [r.id for r in _subscriptions(stack, channel)] == [second.id]
    stack.driver.command("/digest", "unsubscribe", user=user, channel=channel)  # one left: id optional
    wait_for(lambda: not _subscriptions(stack, channel), what="second unsubscribed")


def test_permissions(stack: Stack) -> None:
    owner, channel = _channel(stack)
    row = _subscribe(stack, owner, channel)
    outsider, elsewhere = _channel(stack)
    admin = stack.emulator.add_user(unique("admin"), is_admin=True)["id"]
    stack.emulator.add_member(elsewhere, admin)
    opens, answers = len(stack.emulator.calls("views.open")), len(stack.emulator.response_url_posts())

    stack.driver.command("/digest", f"edit {row.id}", user=outsider, channel=elsewhere)
    assert f"<#{channel}>" in _answer(stack, answers, "which you are not in")
    stack.driver.command("/digest", f"unsubscribe {row.id}", user=outsider, channel=elsewhere)
    stack.driver.command("/digest", "list all", user=outsider, channel=elsewhere)
    _answer(stack, answers, "Only ProdOps admins can list")
    stack.driver.command("/digest", "subscribe", user=outsider, channel=channel)  # not a member there either
    wait_for(lambda: len([a for a in _answers(stack, answers) if "which you are not in" in a]) >= 3)
    assert len(stack.emulator.calls("views.open")) == opens
    assert [r.id for r in _subscriptions(stack, channel)] == [row.id]

    stack.driver.command("/digest", f"edit {row.id}", user=admin, channel=elsewhere)  # admins: any channel
    view = _opened(stack, opens, "admin's edit modal")
    refused = _submit(stack, outsider, view, _values(name="Hijacked"))  # the modal re-checks on submit
    assert "channels you are in" in refused.json()["errors"][DigestBlock.name]
    assert _submit(stack, admin, view, _values(name="Renamed by admin")).status == 200
    wait_for(lambda: _subscriptions(stack, channel)[0].name == "Renamed by admin", what="admin's edit")

    stack.driver.command("/digest", "list all", user=admin, channel=elsewhere)
    everything = _answer(stack, answers, "Digests in this workspace")
    assert f"<#{channel}>" in everything and "Renamed by admin" in everything
    stack.driver.command("/digest", f"unsubscribe {row.id}", user=admin, channel=elsewhere)
    wait_for(lambda: not _subscriptions(stack, channel), what="admin unsubscribed")


def test_manage_button_opens_the_edit_modal(stack: Stack) -> None:
    user, channel = _channel(stack)
    row = _subscribe(stack, user, channel)
    message = stack.emulator.post_message(channel, user, "a digest would be here")
    before = len(stack.emulator.calls("views.open"))
    button = {
        "type": "button",
        "action_id": "digest_manage",
        "block_id": "digest_footer",
        "value": str(row.id),
    }
    payload = stack.driver.block_actions(user=user, actions=[button], channel=channel, message=message)
    assert stack.driver.send_interaction(payload).status == 200
    view = _opened(stack, before, "edit modal from the footer button")
    assert ModalMeta.load(view["private_metadata"]).subscription_id == row.id
    assert view["submit"]["text"] == "Save"


def test_help_and_unknown(stack: Stack) -> None:
    user, channel = _channel(stack)
    answer = stack.driver.command("/digest", "help", user=user, channel=channel)
    assert "/digest subscribe" in answer.body
    unknown = stack.driver.command("/digest", "frobnicate", user=user, channel=channel)
    assert "I don't know" in unknown.body and "/digest subscribe" in unknown.body


def test_preview_and_send(stack: Stack) -> None:
    user, channel = _channel(stack)
    key = _metric(stack, points=True)
    row = _subscribe(stack, user, channel, cadence="daily", time="00:00", timezone="UTC",
                     sections=("metrics", "feedback", "requests"), metrics=(key,))  # fmt: skip
    answers = len(stack.emulator.response_url_posts())

    stack.driver.command("/digest", "preview", user=user, channel=channel)
    preview = json.loads(_answer(stack, answers, "block-kit-builder"))
    assert preview["response_type"] == "ephemeral"
    assert "so far" in json.dumps(preview["blocks"]) and "Weekly product digest" in json.dumps(
        preview["blocks"]
    )
    link = next(
        e["text"]
        for b in preview["blocks"]
        for e in b.get("elements", [])
        if "block-kit-builder" in e.get("text", "")
    )
    encoded = link.split("#", 1)[1].split("|", 1)[0]
    assert json.loads(unquote(encoded))["blocks"][0]["type"] == "header"
    assert not [c for c in stack.emulator.calls("chat.postMessage") if c.params.get("channel") == channel]

    stack.driver.command("/digest", "send", user=user, channel=channel)
    _answer(stack, answers, "Sent *")
    posted = wait_for(lambda: [m for m in stack.emulator.messages(channel) if m.get("bot_id")], what="digest")
    digest = next(m for m in posted if "digest_manage" in json.dumps(m.get("blocks")))
    uploads = wait_for(lambda: stack.emulator.calls("files.completeUploadExternal"), what="chart upload")
    assert (uploads[-1].params["channel_id"], uploads[-1].params["thread_ts"]) == (channel, digest["ts"])
    with stack.db.read() as s:  # sending outside the schedule does not move it
        assert s.get(DigestSubscription, row.id).next_run_at == row.next_run_at  # type: ignore[union-attr]


def test_preview_from_the_list_button(stack: Stack) -> None:
    user, channel = _channel(stack)
    row = _subscribe(stack, user, channel)
    message = stack.emulator.post_message(channel, user, "the list")
    answers = len(stack.emulator.response_url_posts())
    button = {
        "type": "button",
        "action_id": DigestAction.preview,
        "block_id": f"dg_row_{row.id}",
        "value": str(row.id),
    }
    stack.driver.send_interaction(
        stack.driver.block_actions(user=user, actions=[button], channel=channel, message=message)
    )
    _answer(stack, answers, "block-kit-builder")
    assert not [m for m in stack.emulator.messages(channel) if m.get("bot_id")]  # only the asker saw it
