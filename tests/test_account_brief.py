"""Account briefs: finding the account, the brief's numbers and requests, `/prodops account` through the server,
the subscribe buttons, and the monthly DM sent once per month even with two workers."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from slack_sdk import WebClient
from sqlalchemy import select

from bot.accounts import brief
from bot.devkit.emulator import SlackEmulator
from storage.db import Database
from storage.migrate import upgrade
from storage.models import Account, AccountBriefSubscription, FeedbackItem, Request, RequestType, Theme
from storage.types import utcnow
from tests.conftest import Stack
from tests.helpers import unique, wait_for


def _account(db: Database, team: str, name: str, **kw: Any) -> int:
    with db.session() as s:
        account = Account(team_id=team, name=name, name_key=" ".join(name.split()).casefold(), **kw)
        s.add(account)
        s.flush()
        return account.id


def _request(db: Database, team: str, title: str, *, status: str = "new", details: str | None = None,
             channel: str = "CREQ", ts: str | None = None) -> int:  # fmt: skip
    with db.session() as s:
        kind = s.scalar(select(RequestType).where(RequestType.team_id == team))
        if kind is None:
            kind = RequestType(team_id=team, name="General")
            s.add(kind)
            s.flush()
        request = Request(team_id=team, type_id=kind.id, title=title, details=details, status=status,
                          requester_user_id="UREQ", channel_id=channel, message_ts=ts, source="command")  # fmt: skip
        s.add(request)
        s.flush()
        return request.id


def test_find_account(db: Database) -> None:
    team = unique("T")
    _account(db, team, "Acme Corp", domain="acme.com")
    _account(db, team, "Acme Labs", domain="acmelabs.io")
    _account(db, team, "Globex", domain="globex.com")
    with db.read() as s:
        assert brief.find_account(db_session=s, team_id=team, query="  acme   CORP ").name == "Acme Corp"
        assert (
            brief.find_account(db_session=s, team_id=team, query="https://www.globex.com/").name == "Globex"
        )
        assert brief.find_account(db_session=s, team_id=team, query="glob").name == "Globex"
        with pytest.raises(brief.AmbiguousAccount) as many:
            brief.find_account(db_session=s, team_id=team, query="acme")
        assert set(many.value.names) == {"Acme Corp", "Acme Labs"}
        with pytest.raises(brief.AccountNotFound) as typo:
            brief.find_account(db_session=s, team_id=team, query="Globx")
        assert typo.value.close == ["Globex"]
        with pytest.raises(brief.AccountNotFound) as other_team:
            brief.find_account(db_session=s, team_id=unique("T"), query="Globex")
        assert other_team.value.close == []


def test_brief_numbers_and_requests(db: Database) -> None:
    team, now = unique("T"), datetime(2026, 11, 20, tzinfo=UTC)
    acme = _account(
        db, team, "Acme", domain="acme.com", arr=Decimal(120_000), segment="Enterprise", owner_user_id="UOWN"
    )
    other = _account(db, team, "Initech")
    with db.session() as s:
        export = Theme(team_id=team, name="Export", status="active")
        proposed = Theme(team_id=team, name="Maybe", status="proposed")
        s.add_all([export, proposed])
        s.flush()

        def item(days: float, theme: Theme | None, *, account: int = acme, visibility: str = "public",
                 channel: str = "CPUB", ts: str | None = None, text: str = "x") -> None:  # fmt: skip
            s.add(FeedbackItem(team_id=team, channel_id=channel, message_ts=ts, text=text, captured_by_user_id="U1",
                               source="command", visibility=visibility, account_id=account,
                               theme_id=theme.id if theme else None, permalink=f"https://x/{channel}/{text}",
                               created_at=now - timedelta(days=days)))  # fmt: skip

        item(1, export, text="newest export")
        item(2, export, visibility="private", channel="GPRIV", text="private export")
        item(3, proposed, text="proposal item")
        item(4, None, ts="111.222", text="from a thread")
        item(60, export, text="last quarter")  # before 1 October: not this quarter
        item(1, export, account=other, text="someone else")
    asked = _request(db, team, "Acme needs SSO")
    _request(db, team, "Pricing review", details="see acme.com contract")
    _request(db, team, "Opened from feedback", channel="CPUB", ts="111.222")
    _request(db, team, "Acmetastic unrelated")  # not the word Acme
    _request(db, team, "Acme old ask", status="done")  # closed
    with db.read() as s:
        account = s.get(Account, acme)
        assert account is not None
        public_view = brief.account_brief(db_session=s, team_id=team, account=account, now=now)
        member_view = brief.account_brief(db_session=s, team_id=team, account=account, now=now,
                                          visible_channels={"GPRIV"})  # fmt: skip
    assert public_view.quarter == "Q4 2026" and public_view.items == 4
    assert [(t.name, t.count) for t in public_view.themes] == [("Export", 2), ("Unsorted", 2)]
    assert [i.text for i in public_view.latest] == ["newest export", "proposal item", "from a thread"]
    assert "private export" in [i.text for i in member_view.latest]
    titles = [r.title for r in public_view.requests]
    assert set(titles) == {"Acme needs SSO", "Pricing review", "Opened from feedback"}
    assert public_view.requests[-1].id == asked  # newest first
    assert (public_view.arr, public_view.segment, public_view.owner_user_id) == (
        Decimal(120_000),
        "Enterprise",
        "UOWN",
    )


def test_first_working_day_and_next_brief() -> None:
    assert brief.first_working_day(2026, 11) == date(2026, 11, 2)  # 1 November 2026 is a Sunday
    assert brief.first_working_day(2026, 12) == date(2026, 12, 1)
    berlin = brief.next_brief_at(timezone="Europe/Berlin", after=datetime(2026, 11, 20, tzinfo=UTC))
    assert berlin == datetime(2026, 12, 1, 8, 0, tzinfo=UTC)  # 09:00 CET
    early = brief.next_brief_at(timezone="America/New_York", after=datetime(2026, 11, 1, tzinfo=UTC))
    assert early == datetime(2026, 11, 2, 14, 0, tzinfo=UTC)  # still ahead this month
    assert brief.next_brief_at(timezone="Mars/Olympus", after=datetime(2026, 11, 20, tzinfo=UTC)) == datetime(
        2026, 12, 1, 9, 0, tzinfo=UTC
    )
    assert brief.period_key(datetime(2026, 11, 30, 23, 30, tzinfo=UTC), "Asia/Tokyo") == "2026-12"


# ---- the monthly tick, on its own database and emulator ------------------------------------------------------


@pytest.fixture
def own(empty_db_url: str) -> Iterator[tuple[Database, SlackEmulator]]:
    """A database and an emulator no server ticks against."""
    upgrade(empty_db_url)
    database = Database(empty_db_url)
    emulator = SlackEmulator().start()
    yield database, emulator
    emulator.stop()
    database.dispose()


def test_monthly_brief_is_sent_once_with_two_workers(own: tuple[Database, SlackEmulator]) -> None:
    db, em = own
    team = em.team_id
    owner = em.add_user(unique("owner"), tz="Europe/Berlin")["id"]
    _account(db, team, "Acme", arr=Decimal(10_000), owner_user_id=owner)
    _account(db, team, "Globex", owner_user_id=owner)
    subscribed_at = datetime(2026, 11, 20, tzinfo=UTC)
    with db.session() as s:
        brief.subscribe(
            db_session=s, team_id=team, user_id=owner, timezone="Europe/Berlin", now=subscribed_at
        )
    client = WebClient(token=em.bot_token, base_url=em.url)
    not_yet = brief.run_brief_tick(db=db, client=client, now=datetime(2026, 12, 1, 7, 59, tzinfo=UTC))
    assert not_yet.due == 0

    due_at = datetime(2026, 12, 1, 8, 0, 30, tzinfo=UTC)
    results: list[brief.BriefTickResult] = []
    gate = threading.Barrier(2)

    def worker() -> None:
        gate.wait()
        results.append(brief.run_brief_tick(db=db, client=client, now=due_at))

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(r.sent for r in results) == [0, 1]
    dms = [c.params for c in em.calls("chat.postMessage") if c.params.get("channel") == owner]
    assert len(dms) == 1 and "2026-12" in dms[0]["text"]
    assert "Acme" in json.dumps(dms[0]["blocks"]) and "Globex" in json.dumps(dms[0]["blocks"])

    again = brief.run_brief_tick(db=db, client=client, now=due_at + timedelta(days=3))
    assert again.sent == 0
    with db.read() as s:
        row = s.scalar(select(AccountBriefSubscription).where(AccountBriefSubscription.user_id == owner))
        assert row is not None and row.last_period == "2026-12"
        assert row.next_run_at == datetime(2027, 1, 1, 8, 0, tzinfo=UTC)  # Friday 1 January, 09:00 Berlin
    january = brief.run_brief_tick(db=db, client=client, now=datetime(2027, 1, 1, 8, 1, tzinfo=UTC))
    assert january.sent == 1
    assert len([c for c in em.calls("chat.postMessage") if c.params.get("channel") == owner]) == 2


# ---- through the real server -----------------------------------------------------------------------------


def _answer(stack: Stack, since: int, needle: str) -> str:
    def found() -> list[str]:
        return [
            a for a in (json.dumps(p) for p in stack.emulator.response_url_posts()[since:]) if needle in a
        ]

    return wait_for(found, what=needle)[0]


def test_prodops_account_command_and_subscription(stack: Stack) -> None:
    em, team = stack.emulator, stack.team_id
    owner = em.add_user(unique("owner"), tz="America/New_York")["id"]
    member = em.add_user(unique("pm"))["id"]
    public = em.add_channel(unique("sales"), members=[owner, member])["id"]
    private = em.add_channel(unique("deal-room"), is_private=True, members=[owner])["id"]
    name = f"Umbrella {unique('u')}"
    account_id = _account(stack.db, team, name, domain=f"{unique('umbrella')}.com", arr=Decimal(75_000),
                          segment="Mid-market", owner_user_id=owner)  # fmt: skip
    with stack.db.session() as s:
        theme = Theme(team_id=team, name=f"Billing {unique('b')}", status="active")
        s.add(theme)
        s.flush()
        for channel, visibility, text in (
            (public, "public", "invoice is wrong"),
            (private, "private", "secret deal"),
        ):
            s.add(FeedbackItem(team_id=team, channel_id=channel, text=text, captured_by_user_id=owner, source="command",
                               visibility=visibility, account_id=account_id, theme_id=theme.id,
                               permalink=f"https://example.slack.com/archives/{channel}/p1"))  # fmt: skip
        theme_name = theme.name
    _request(stack.db, team, f"{name} wants net-60 terms")

    answers = len(em.response_url_posts())
    stack.driver.command("/prodops", f"account {name.lower()}", user=member, channel=public)
    seen_by_member = _answer(stack, answers, "Open requests")
    assert "$75K" in seen_by_member and "Mid-market" in seen_by_member and f"<@{owner}>" in seen_by_member
    assert f"{theme_name} (2)" in seen_by_member and "invoice is wrong" in seen_by_member
    assert "secret deal" not in seen_by_member  # not a member of the deal room
    assert "net-60" in seen_by_member
    assert "Subscribe to a monthly brief" not in seen_by_member  # not the owner

    answers = len(em.response_url_posts())
    stack.driver.command("/prodops", f"account {name}", user=owner, channel=public)
    seen_by_owner = _answer(stack, answers, "Open requests")
    assert "secret deal" in seen_by_owner and "Subscribe to a monthly brief of my accounts" in seen_by_owner

    answers = len(em.response_url_posts())
    stack.driver.command("/prodops", "account Umbrela", user=member, channel=public)
    assert name in _answer(stack, answers, "No account matches")

    message = em.post_message(public, owner, "the brief would be here")
    button = {"type": "button", "action_id": "account_brief_subscribe", "block_id": "b", "value": "subscribe"}
    answers = len(em.response_url_posts())
    stack.driver.send_interaction(stack.driver.block_actions(user=member, actions=[button], channel=public,
                                                             message=message))  # fmt: skip
    assert "Only account owners can subscribe" in _answer(stack, answers, "Only account owners")
    answers = len(em.response_url_posts())
    stack.driver.send_interaction(stack.driver.block_actions(user=owner, actions=[button], channel=public,
                                                             message=message))  # fmt: skip
    assert "America/New_York" in _answer(stack, answers, "Subscribed")
    with stack.db.read() as s:
        row = s.scalar(select(AccountBriefSubscription).where(AccountBriefSubscription.user_id == owner))
        assert row is not None and row.timezone == "America/New_York"
        assert row.next_run_at is not None and row.next_run_at > utcnow()

    stop = {
        "type": "button",
        "action_id": "account_brief_unsubscribe",
        "block_id": "b",
        "value": "unsubscribe",
    }
    answers = len(em.response_url_posts())
    stack.driver.send_interaction(stack.driver.block_actions(user=owner, actions=[stop], channel=public,
                                                             message=message))  # fmt: skip
    assert "stopped" in _answer(stack, answers, "monthly account brief")
    with stack.db.read() as s:
        assert (
            s.scalar(select(AccountBriefSubscription).where(AccountBriefSubscription.user_id == owner))
            is None
        )


def test_a_monthly_brief_slack_refused_is_sent_later_once(own: tuple[Database, SlackEmulator]) -> None:
    """Slack down (503, then 429) at 09:00: the brief is not lost and arrives once when Slack is back."""
    db, em = own
    team = em.team_id
    owner = em.add_user(unique("owner"), tz="UTC")["id"]
    _account(db, team, "Initech", owner_user_id=owner)
    with db.session() as s:
        brief.subscribe(db_session=s, team_id=team, user_id=owner, timezone="UTC",
                        now=datetime(2026, 11, 20, tzinfo=UTC))  # fmt: skip
    client = WebClient(token=em.bot_token, base_url=em.url)
    due_at = datetime(2026, 12, 1, 9, 0, 30, tzinfo=UTC)
    em.fail("chat.postMessage", status=503)
    down = brief.run_brief_tick(db=db, client=client, now=due_at)
    assert (down.queued, down.sent) == (1, 0)
    em.fail("chat.postMessage", status=429, retry_after=1)
    limited = brief.run_brief_tick(db=db, client=client, now=due_at + timedelta(minutes=1))
    assert (limited.queued, limited.sent, limited.due) == (0, 0, 0)
    back = brief.run_brief_tick(db=db, client=client, now=due_at + timedelta(minutes=2))
    assert back.sent == 1
    dms = [
        c for c in em.calls("chat.postMessage") if c.params.get("channel") == owner and c.http_status == 200
    ]
    assert len(dms) == 1 and "Initech" in json.dumps(dms[0].params["blocks"])
    assert brief.run_brief_tick(db=db, client=client, now=due_at + timedelta(days=1)).sent == 0
