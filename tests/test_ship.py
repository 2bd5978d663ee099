"""Closing the loop: `/feedback ship` tells each thread, reporter and owner once; delivery through 429s and
permanent errors; theme names, permissions."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select

from bot.devkit.emulator import SlackEmulator
from bot.digests.outbox import delivery_client
from bot.insights import ship
from bot.insights.ship_delivery import deliver_ship_notices
from storage.db import Database
from storage.migrate import upgrade
from storage.models import Account, FeedbackItem, ShipNotice, Theme
from storage.types import utcnow
from tests.conftest import Stack
from tests.helpers import unique, wait_for


@dataclass
class World:
    """An admin, two reporters, an account owner, a public and a private channel, and a theme."""

    admin: str
    alice: str
    bob: str
    owner: str
    public: str
    private: str
    theme_id: int
    theme_name: str


def _item(
    db: Database,
    team: str,
    *,
    channel: str,
    ts: str | None,
    author: str,
    theme_id: int,
    account_id: int | None = None,
    visibility: str = "public",
    thread_ts: str | None = None,
) -> int:
    with db.session() as s:
        item = FeedbackItem(
            team_id=team,
            channel_id=channel,
            message_ts=ts,
            thread_ts=thread_ts,
            text="the export drops a column",
            author_user_id=author,
            captured_by_user_id=author,
            source="reaction" if ts else "command",
            visibility=visibility,
            theme_id=theme_id,
            account_id=account_id,
            permalink=f"https://example.slack.com/archives/{channel}/p{(ts or '0').replace('.', '')}",
        )
        s.add(item)
        s.flush()
        return item.id


def _world(emulator: SlackEmulator, db: Database, team: str) -> World:
    admin = emulator.add_user(unique("admin"), is_admin=True, team_id=team)["id"]
    alice = emulator.add_user(unique("alice"), team_id=team)["id"]
    bob = emulator.add_user(unique("bob"), team_id=team)["id"]
    owner = emulator.add_user(unique("owner"), team_id=team)["id"]
    public = emulator.add_channel(unique("feedback"), members=[alice, bob], team_id=team)["id"]
    private = emulator.add_channel(unique("deals"), is_private=True, members=[bob], team_id=team)["id"]
    name = f"CSV export {unique('t')}"
    with db.session() as s:
        theme = Theme(team_id=team, name=name, status="active", name_source="human")
        account = Account(
            team_id=team,
            name=unique("Acme"),
            name_key=unique("acme"),
            arr=Decimal(50_000),
            owner_user_id=owner,
        )
        s.add_all([theme, account])
        s.flush()
        theme_id, account_id = theme.id, account.id
    m1 = emulator.post_message(public, alice, "export drops a column", team_id=team)["ts"]
    m2 = emulator.post_message(public, bob, "csv export is broken for us", team_id=team)["ts"]
    reply = emulator.post_message(public, alice, "same here", thread_ts=m2, team_id=team)["ts"]
    m3 = emulator.post_message(private, bob, "Acme wants full CSV", team_id=team)["ts"]
    _item(db, team, channel=public, ts=m1, author=alice, theme_id=theme_id, account_id=account_id)
    _item(db, team, channel=public, ts=m2, author=bob, theme_id=theme_id)
    # A reply captured too: same thread as m2, so that thread is told once.
    _item(db, team, channel=public, ts=reply, thread_ts=m2, author=alice, theme_id=theme_id)
    _item(db, team, channel=private, ts=m3, author=bob, theme_id=theme_id, account_id=account_id,
          visibility="private")  # fmt: skip
    _item(db, team, channel=public, ts=None, author=alice, theme_id=theme_id)  # typed: no thread
    return World(admin, alice, bob, owner, public, private, theme_id, name)


def _posts(emulator: SlackEmulator, channel: str, since: int = 0) -> list[dict]:
    return [
        c.params for c in emulator.calls("chat.postMessage")[since:] if c.params.get("channel") == channel
    ]


def _answer(stack: Stack, since: int, needle: str) -> str:
    def found() -> list[str]:
        return [
            a for a in (json.dumps(p) for p in stack.emulator.response_url_posts()[since:]) if needle in a
        ]

    return wait_for(found, what=needle)[0]


def _deliver(stack: Stack) -> None:
    client = delivery_client(stack.emulator.bot_token, stack.emulator.url)
    deliver_ship_notices(db=stack.db, client=client)


def _notices(db: Database, theme_id: int) -> list[ShipNotice]:
    with db.read() as s:
        return list(
            s.scalars(select(ShipNotice).where(ShipNotice.theme_id == theme_id).order_by(ShipNotice.id))
        )


# ---- through the real server -----------------------------------------------------------------------------


def test_ship_notifies_each_thread_once(stack: Stack) -> None:
    em, team = stack.emulator, stack.team_id
    w = _world(em, stack.db, team)
    answers, calls = len(em.response_url_posts()), len(em.calls("chat.postMessage"))
    stack.driver.command("/feedback", f"ship {w.theme_name.upper()} Exports keep every column", user=w.admin,
                         channel=w.public)  # fmt: skip
    answer = _answer(stack, answers, "marked shipped")
    assert "3 threads, 2 reporters, 1 account owner" in answer
    assert "Shipped: Exports keep every column" in answer
    with stack.db.read() as s:
        assert s.get(Theme, w.theme_id).shipped_at is not None  # type: ignore[union-attr]
    _deliver(stack)
    wait_for(
        lambda: all(n.status in ("sent", "covered") for n in _notices(stack.db, w.theme_id)), what="sent"
    )

    public_posts = _posts(em, w.public, calls)
    assert len(public_posts) == 2  # m1's thread, and m2's thread (its reply is an item too: told once)
    assert {p["thread_ts"] for p in public_posts} == {m["ts"] for m in em.messages(w.public)[:2]}
    assert all("Shipped: Exports keep every column" in p["text"] for p in public_posts)
    private_posts = _posts(em, w.private, calls)
    assert len(private_posts) == 1  # the private item's own channel is where it is told
    alice_dm, bob_dm, owner_dm = (_posts(em, u, calls) for u in (w.alice, w.bob, w.owner))
    assert len(alice_dm) == 1 and len(bob_dm) == 1 and len(owner_dm) == 1
    assert "these 3 items" in alice_dm[0]["text"] and "thank you" in alice_dm[0]["text"]
    assert "Acme wants full CSV" not in bob_dm[0]["text"]  # nothing private is quoted in a DM
    assert "private conversation" in bob_dm[0]["text"]
    assert "these 2 items" in owner_dm[0]["text"] and w.private not in owner_dm[0]["text"]

    # Shipping again sends nothing new.
    answers, calls = len(em.response_url_posts()), len(em.calls("chat.postMessage"))
    stack.driver.command("/feedback", f"ship {w.theme_name}", user=w.admin, channel=w.public)
    assert "nothing new to send" in _answer(stack, answers, "marked shipped")
    _deliver(stack)
    assert len(em.calls("chat.postMessage")) == calls

    # A new item later gets its notices, and only those.
    later = em.post_message(w.public, w.bob, "still missing columns", team_id=team)["ts"]
    _item(stack.db, team, channel=w.public, ts=later, author=w.bob, theme_id=w.theme_id)
    answers = len(em.response_url_posts())
    stack.driver.command("/feedback", f"ship {w.theme_name} Now with columns", user=w.admin, channel=w.public)
    assert "1 thread, 1 reporter, 0 account owners" in _answer(stack, answers, "marked shipped")
    _deliver(stack)
    wait_for(lambda: len(em.calls("chat.postMessage")) == calls + 2, what="two new notices")
    assert [p["thread_ts"] for p in _posts(em, w.public, calls)] == [later]
    assert len(_posts(em, w.bob, calls)) == 1


def test_only_admins_ship_and_theme_names_are_checked(stack: Stack) -> None:
    em, team = stack.emulator, stack.team_id
    w = _world(em, stack.db, team)
    answers = len(em.response_url_posts())
    stack.driver.command("/feedback", f"ship {w.theme_name}", user=w.alice, channel=w.public)
    assert "Only ProdOps admins can mark themes shipped" in _answer(stack, answers, "Only ProdOps admins")
    assert _notices(stack.db, w.theme_id) == []

    answers = len(em.response_url_posts())
    stack.driver.command("/feedback", "ship CSV exprt fixed", user=w.admin, channel=w.public)
    error = _answer(stack, answers, "No accepted theme")
    assert w.theme_name in error  # a close match is offered

    twin = w.theme_name.lower()
    with stack.db.session() as s:
        s.add(Theme(team_id=team, name=twin, status="active", name_source="human"))
    answers = len(em.response_url_posts())
    stack.driver.command("/feedback", f"ship {w.theme_name} done", user=w.admin, channel=w.public)
    assert "Several themes are called" in _answer(stack, answers, "Several themes")
    answers = len(em.response_url_posts())
    stack.driver.command("/feedback", f"ship #{w.theme_id} done", user=w.admin, channel=w.public)
    assert "3 threads" in _answer(stack, answers, "marked shipped")

    usage = stack.driver.command("/feedback", "ship", user=w.admin, channel=w.public)
    assert "/feedback ship <theme> [message]" in json.dumps(usage.json())


def test_mark_shipped_button(stack: Stack) -> None:
    em, team = stack.emulator, stack.team_id
    w = _world(em, stack.db, team)
    message = em.post_message(w.public, w.alice, "a trends list would be here", team_id=team)
    button = {"type": "button", "action_id": "insights_ship_theme", "block_id": "b", "value": str(w.theme_id)}
    answers = len(em.response_url_posts())
    payload = stack.driver.block_actions(user=w.alice, actions=[button], channel=w.public, message=message)
    assert stack.driver.send_interaction(payload).status == 200
    assert "Only ProdOps admins" in _answer(stack, answers, "Only ProdOps admins")
    answers = len(em.response_url_posts())
    payload = stack.driver.block_actions(user=w.admin, actions=[button], channel=w.public, message=message)
    assert stack.driver.send_interaction(payload).status == 200
    assert "3 threads, 2 reporters, 1 account owner" in _answer(stack, answers, "marked shipped")
    assert len([n for n in _notices(stack.db, w.theme_id) if n.status == "pending"]) == 6


# ---- delivery, on its own database and emulator ------------------------------------------------------------


@pytest.fixture
def own(empty_db_url: str) -> Iterator[tuple[Database, SlackEmulator]]:
    """A database and an emulator no server ticks against, so the test decides when notices go out."""
    upgrade(empty_db_url)
    database = Database(empty_db_url)
    emulator = SlackEmulator().start()
    yield database, emulator
    emulator.stop()
    database.dispose()


def test_retry_after_is_honoured_and_permanent_errors_are_reported(
    own: tuple[Database, SlackEmulator],
) -> None:
    db, em = own
    team = em.team_id
    w = _world(em, db, team)
    with db.session() as s:
        plan = ship.plan_ship(db_session=s, team_id=team, theme_id=w.theme_id, message="Fixed",
                              requested_by_user_id=w.admin)  # fmt: skip
    assert (plan.threads, plan.reporters, plan.owners) == (3, 2, 1)
    em.archive_channel(w.private, team_id=team)
    client = delivery_client(em.bot_token, em.url)
    em.fail("chat.postMessage", status=429, retry_after=2)
    t0 = utcnow()

    first = deliver_ship_notices(db=db, client=client, now=t0)
    assert (first.rate_limited, first.sent, first.deferred) == (1, 0, 5)
    assert len(em.calls("chat.postMessage")) == 1  # nothing else tried once Slack said wait
    waiting = [n for n in _notices(db, w.theme_id) if n.status == "pending"]
    assert len(waiting) == 6 and all(n.next_attempt_at >= t0 + timedelta(seconds=2) for n in waiting)
    assert all(n.attempts == 0 for n in waiting)  # a 429 is not an attempt

    early = deliver_ship_notices(db=db, client=client, now=t0 + timedelta(seconds=1))
    assert early.due == 0 and len(em.calls("chat.postMessage")) == 1

    later = deliver_ship_notices(db=db, client=client, now=t0 + timedelta(seconds=3))
    assert (later.sent, later.failed, later.summaries) == (5, 1, 1)
    failed = [n for n in _notices(db, w.theme_id) if n.status == "failed"]
    assert len(failed) == 1 and failed[0].last_error == "is_archived" and failed[0].target_kind == "thread"
    summary = _posts(em, w.admin)
    assert (
        len(summary) == 1 and "is_archived" in summary[0]["text"] and f"<#{w.private}>" in summary[0]["text"]
    )
    assert w.theme_name in summary[0]["text"]

    again = deliver_ship_notices(db=db, client=client, now=t0 + timedelta(minutes=10))
    assert again.due == 0 and len(_posts(em, w.admin)) == 1


def test_a_retry_after_a_server_error_finds_its_reply_in_the_thread(
    own: tuple[Database, SlackEmulator],
) -> None:
    db, em = own
    team = em.team_id
    w = _world(em, db, team)
    with db.session() as s:
        ship.plan_ship(
            db_session=s, team_id=team, theme_id=w.theme_id, message="Fixed", requested_by_user_id=w.admin
        )
    client = delivery_client(em.bot_token, em.url)
    first_thread = min(
        (n for n in _notices(db, w.theme_id) if n.target_kind == "thread" and n.status == "pending"),
        key=lambda n: n.id,
    )
    channel, thread_ts = first_thread.target.split(":")
    # Slack posted it, but the answer was lost: the claim's lease runs out and the next pass takes over.
    client.chat_postMessage(channel=channel, thread_ts=thread_ts, text="Shipped: Fixed",
                            metadata={"event_type": "prodops_ship", "event_payload": {"notice_id": first_thread.id}})  # fmt: skip
    with db.session() as s:
        row = s.get(ShipNotice, first_thread.id)
        assert row is not None
        row.status, row.attempts, row.next_attempt_at = "sending", 1, utcnow() - timedelta(seconds=1)
    result = deliver_ship_notices(db=db, client=client, now=utcnow())
    assert result.recovered == 1
    replies = [r for r in em.replies(channel, thread_ts, team_id=team) if "Shipped" in r.get("text", "")]
    assert len(replies) == 1


def test_parse_ship_args(db: Database) -> None:
    team = unique("T")
    with db.session() as s:
        s.add_all(
            [
                Theme(team_id=team, name="CSV", status="active"),
                Theme(team_id=team, name="CSV export", status="active"),
                Theme(team_id=team, name="Dark mode", status="proposed"),
            ]
        )
    with db.session() as s:
        theme, message = ship.parse_ship_args(db_session=s, team_id=team, args="csv EXPORT now keeps columns")
        assert (theme.name, message) == ("CSV export", "now keeps columns")
        theme, message = ship.parse_ship_args(db_session=s, team_id=team, args='"CSV" export fixed')
        assert (theme.name, message) == ("CSV", "export fixed")
        theme, message = ship.parse_ship_args(db_session=s, team_id=team, args="CSV")
        assert (theme.name, message) == ("CSV", None)
        with pytest.raises(ship.ThemeNotFound) as proposal:
            ship.parse_ship_args(db_session=s, team_id=team, args="Dark mode shipped")
        assert "Dark mode" not in proposal.value.close  # only accepted themes ship
        with pytest.raises(ship.ThemeNotFound) as typo:
            ship.parse_ship_args(db_session=s, team_id=team, args="CVS export")
        assert "CSV export" in typo.value.close


def test_duplicates_of_a_themes_items_are_told_too(db: Database) -> None:
    team = unique("T")
    with db.session() as s:
        theme = Theme(team_id=team, name="Webhooks", status="active")
        s.add(theme)
        s.flush()
        original = FeedbackItem(team_id=team, channel_id="C1", message_ts="1.1", text="webhooks retry", source="reaction",
                                author_user_id="UAUTHOR1", captured_by_user_id="UCAP1", visibility="public",
                                theme_id=theme.id)  # fmt: skip
        s.add(original)
        s.flush()
        s.add(FeedbackItem(team_id=team, channel_id="C2", message_ts="2.2", text="retries for webhooks?", source="reaction",
                           author_user_id=None, captured_by_user_id="UCAP2", visibility="public",
                           duplicate_of_id=original.id))  # fmt: skip
        s.add(FeedbackItem(team_id=team, channel_id="C3", message_ts="3.3", text="gone", source="reaction",
                           author_user_id="UGONE", captured_by_user_id="UGONE", visibility="public",
                           theme_id=theme.id, deleted_at=utcnow()))  # fmt: skip
        theme_id = theme.id
    with db.session() as s:
        plan = ship.plan_ship(
            db_session=s, team_id=team, theme_id=theme_id, message=None, requested_by_user_id="UADM"
        )
    assert (plan.items, plan.threads, plan.reporters, plan.owners) == (2, 2, 2, 0)
    assert plan.message == "Webhooks"  # the theme's name when no message is given
    targets = {(n.target_kind, n.target) for n in _notices(db, theme_id)}
    assert ("reporter", "UCAP2") in targets and ("thread", "C2:2.2") in targets  # captured_by when no author
    assert not any("UGONE" in t or "C3" in t for _k, t in targets)  # deleted items are not told
