"""`/feedback trends` through the real server: ranking, numbers, examples this channel may see, the ship button."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal
from typing import Any

from bot.insights.insight_messaging import trends_blocks
from bot.insights.trends import TrendReport
from storage.models import Account, FeedbackItem, Theme
from storage.types import utcnow
from tests.conftest import Stack
from tests.helpers import unique, wait_for


def _answer(stack: Stack, since: int, needle: str) -> dict[str, Any]:
    def found() -> list[dict[str, Any]]:
        return [p for p in stack.emulator.response_url_posts()[since:] if needle in json.dumps(p)]

    return wait_for(found, what=needle)[0]


def test_trends_command(stack: Stack) -> None:
    em, team, now = stack.emulator, stack.team_id, utcnow()
    admin = em.add_user(unique("admin"), is_admin=True)["id"]
    pm = em.add_user(unique("pm"))["id"]
    public = em.add_channel(unique("product"), members=[admin, pm])["id"]
    secret = em.add_channel(unique("secret"), is_private=True, members=[admin])["id"]
    rising, steady = f"Rising {unique('r')}", f"Steady {unique('s')}"
    with stack.db.session() as s:
        up, flat = (
            Theme(team_id=team, name=rising, status="active"),
            Theme(team_id=team, name=steady, status="active"),
        )
        big = Account(team_id=team, name=unique("Big"), name_key=unique("big"), arr=Decimal(250_000))
        s.add_all([up, flat, big])
        s.flush()

        def item(
            theme: Theme, days: float, *, channel: str = public, visibility: str = "public", text: str
        ) -> None:
            s.add(FeedbackItem(team_id=team, channel_id=channel, text=text, captured_by_user_id=pm,
                               source="command", visibility=visibility, theme_id=theme.id, account_id=big.id,
                               permalink=f"https://example.slack.com/archives/{channel}/p{unique('p')}",
                               created_at=now - timedelta(days=days)))  # fmt: skip

        for days in (1, 2, 3):
            item(up, days, text=f"rising public {days}")
        item(up, 0.5, channel=secret, visibility="private", text="the secret one")
        for days in (1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12, 13):
            item(flat, days, text=f"steady public {days}")

    answers = len(em.response_url_posts())
    stack.driver.command("/feedback", "trends", user=admin, channel=public)
    answer = _answer(stack, answers, rising)
    text = json.dumps(answer)
    assert answer["response_type"] == "ephemeral"
    assert text.index(rising) < text.index(steady)  # rising first, though Steady has more items
    assert "4 items (+4" not in text and "new this week" in text and ":chart_with_upwards_trend:" in text
    assert "6 items (\\u00b10 vs the previous week)" in text or "6 items (±0 vs the previous week)" in text
    assert "$250K ARR" in text
    assert "the secret one" not in text and "rising public 1" in text  # private: counted, not quoted here
    assert "Mark shipped" in text

    answers = len(em.response_url_posts())
    stack.driver.command("/feedback", "trends", user=admin, channel=secret)
    assert "the secret one" in json.dumps(_answer(stack, answers, rising))  # asked where it was said

    answers = len(em.response_url_posts())
    stack.driver.command("/feedback", "trends month", user=pm, channel=public)
    monthly = json.dumps(_answer(stack, answers, "last 30 days"))
    assert "12 items" in monthly and "Mark shipped" not in monthly  # only admins get the button

    bad = stack.driver.command("/feedback", "trends year", user=pm, channel=public)
    assert "/feedback trends month" in json.dumps(bad.json())


def test_empty_trends_say_what_to_do() -> None:
    now = utcnow()
    report = TrendReport(
        start=now - timedelta(days=7), end=now, previous_start=now - timedelta(days=14), themes=[]
    )
    text = json.dumps(trends_blocks(report, period="week", can_ship=True))
    assert "No themed feedback" in text and "/feedback themes" in text
