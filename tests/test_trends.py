"""Theme trends: the numbers on a seeded dataset, rising, week vs month, privacy of examples, the query plan."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session

from bot.insights import trends
from bot.insights.insight_messaging import trend_line
from storage.db import Database
from storage.models import Account, FeedbackItem, Theme, ThemeStatus
from tests.helpers import unique

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def _theme(s: Session, team: str, name: str, status: str = ThemeStatus.active.value) -> Theme:
    theme = Theme(team_id=team, name=name, status=status, name_source="human")
    s.add(theme)
    s.flush()
    return theme


def _account(s: Session, team: str, name: str, arr: int | None) -> Account:
    account = Account(team_id=team, name=name, name_key=name.casefold(), arr=Decimal(arr) if arr else None)
    s.add(account)
    s.flush()
    return account


def _item(
    s: Session,
    team: str,
    *,
    days_ago: float,
    theme: Theme | None = None,
    account: Account | None = None,
    visibility: str = "public",
    channel: str = "CPUBLIC",
    text_: str = "feedback",
    deleted: bool = False,
) -> FeedbackItem:
    item = FeedbackItem(
        team_id=team,
        channel_id=channel,
        message_ts=None,
        text=text_,
        captured_by_user_id="UCAP",
        source="command",
        visibility=visibility,
        theme_id=theme.id if theme else None,
        account_id=account.id if account else None,
        permalink=f"https://example.slack.com/archives/{channel}/p{unique('x')}",
        created_at=NOW - timedelta(days=days_ago),
        deleted_at=NOW if deleted else None,
    )
    s.add(item)
    s.flush()
    return item


def _seed(db: Database) -> tuple[str, dict[str, int]]:
    """Export: rising (5 this week from 3 accounts, 1 before); Billing: big but flat; SSO: 2 this week."""
    team = unique("T")
    with db.session() as s:
        export, billing, sso = _theme(s, team, "Export"), _theme(s, team, "Billing"), _theme(s, team, "SSO")
        proposed = _theme(s, team, "Maybe later", status=ThemeStatus.proposed.value)
        acme, globex, initech = (
            _account(s, team, "Acme", 100_000),
            _account(s, team, "Globex", 20_000),
            _account(s, team, "Initech", None),
        )
        for days, account in ((1, acme), (2, acme), (3, globex), (4, initech), (5, None)):
            _item(s, team, days_ago=days, theme=export, account=account, text_=f"export {days}")
        _item(s, team, days_ago=9, theme=export, account=globex)
        _item(s, team, days_ago=40, theme=export, account=globex)  # first seen, outside both windows
        _item(s, team, days_ago=0.5, theme=export, deleted=True)  # deleted: never counted
        for days in (1, 2, 3, 4, 5, 6):
            _item(s, team, days_ago=days, theme=billing, account=globex)
        for days in (8, 9, 10, 11, 12, 13):
            _item(s, team, days_ago=days, theme=billing, account=acme)
        _item(s, team, days_ago=1, theme=sso, account=acme)
        _item(s, team, days_ago=2, theme=sso)
        _item(s, team, days_ago=1, theme=proposed)  # a proposal does not group: unsorted
        _item(s, team, days_ago=2)
        _item(s, team, days_ago=10)
        _item(s, team, days_ago=20, theme=sso)  # in the month, not in the week
        ids = {"export": export.id, "billing": billing.id, "sso": sso.id}
    return team, ids


def test_week_numbers(db: Database) -> None:
    team, ids = _seed(db)
    start, end = trends.window_for("week", NOW)
    with db.read() as s:
        report = trends.theme_trends(db_session=s, team_id=team, start=start, end=end)
    by_name = {t.name: t for t in report.themes}
    assert [t.name for t in report.themes] == ["Export", "Billing", "SSO"]
    export, billing, sso = by_name["Export"], by_name["Billing"], by_name["SSO"]
    assert (export.count, export.previous_count, export.change) == (5, 1, 4)
    assert export.change_pct == 400.0
    assert (export.accounts, export.arr) == (
        3,
        Decimal(120_000),
    )  # Acme twice counts once; Initech has no ARR
    assert (export.previous_accounts, export.previous_arr) == (1, Decimal(20_000))
    assert export.first_seen == NOW - timedelta(days=40) and export.last_seen == NOW - timedelta(days=1)
    assert export.rising
    assert (billing.count, billing.previous_count, billing.change, billing.rising) == (6, 6, 0, False)
    assert (billing.accounts, billing.arr, billing.previous_arr) == (1, Decimal(20_000), Decimal(100_000))
    assert (sso.count, sso.previous_count, sso.rising) == (2, 0, False)  # growing, but below the minimum
    assert sso.change_pct is None
    assert (report.unsorted, report.previous_unsorted) == (2, 1)
    assert (report.total, report.previous_total) == (15, 8)
    assert report.rising == [export]


def test_minimum_count_is_a_parameter(db: Database) -> None:
    team, _ids = _seed(db)
    start, end = trends.window_for("week", NOW)
    with db.read() as s:
        report = trends.theme_trends(db_session=s, team_id=team, start=start, end=end, min_count=2)
    assert [t.name for t in report.rising] == ["Export", "SSO"]  # largest growth first
    assert [t.name for t in report.themes] == ["Export", "SSO", "Billing"]


def test_month_covers_thirty_days(db: Database) -> None:
    team, _ids = _seed(db)
    start, end = trends.window_for("month", NOW)
    assert end - start == timedelta(days=30)
    with db.read() as s:
        report = trends.theme_trends(db_session=s, team_id=team, start=start, end=end)
    by_name = {t.name: t for t in report.themes}
    assert by_name["Billing"].count == 12 and by_name["Billing"].accounts == 2
    assert by_name["Billing"].arr == Decimal(120_000)
    assert (by_name["Export"].count, by_name["Export"].previous_count) == (6, 1)
    assert by_name["SSO"].count == 3
    assert [t.name for t in report.themes][:2] == ["Billing", "Export"]  # Billing rises from 0 by 12
    assert report.unsorted == 3


def test_top_and_another_team_never_mixes_in(db: Database) -> None:
    team, _ids = _seed(db)
    other, _ = _seed(db)
    start, end = trends.window_for("week", NOW)
    with db.read() as s:
        report = trends.theme_trends(db_session=s, team_id=team, start=start, end=end, top=1)
        empty = trends.theme_trends(db_session=s, team_id=unique("T"), start=start, end=end)
    assert [t.name for t in report.themes] == ["Export"] and report.total == 15
    assert other != team
    assert empty.themes == [] and empty.total == 0


def test_examples_follow_the_privacy_rule(db: Database) -> None:
    team = unique("T")
    with db.session() as s:
        theme = _theme(s, team, "Dark mode")
        _item(s, team, days_ago=3, theme=theme, text_="public one")
        secret = _item(
            s, team, days_ago=1, theme=theme, visibility="private", channel="GSECRET", text_="secret"
        )
        only_private = _theme(s, team, "Hidden")
        _item(s, team, days_ago=1, theme=only_private, visibility="dm", channel="DSECRET", text_="dm text")
    start, end = trends.window_for("week", NOW)
    with db.read() as s:
        elsewhere = trends.theme_trends(
            db_session=s, team_id=team, start=start, end=end, channel_id="CPUBLIC"
        )
        there = trends.theme_trends(db_session=s, team_id=team, start=start, end=end, channel_id="GSECRET")
    shown = {t.name: t.example for t in elsewhere.themes}
    assert shown["Dark mode"] is not None and shown["Dark mode"].text == "public one"
    assert shown["Hidden"] is None  # counted, never quoted outside its DM
    assert {t.name: t.count for t in elsewhere.themes} == {"Dark mode": 2, "Hidden": 1}
    inside = {t.name: t.example for t in there.themes}
    assert (
        inside["Dark mode"] is not None and inside["Dark mode"].item_id == secret.id
    )  # newest, and it is here


def test_the_example_is_an_original_rather_than_its_duplicate(db: Database) -> None:
    team = unique("T")
    with db.session() as s:
        theme = _theme(s, team, "SSO")
        original = _item(s, team, days_ago=3, theme=theme, text_="Globex will not renew without Okta SSO")
        copy = _item(s, team, days_ago=1, theme=theme, text_="Globex: no renewal unless SSO via Okta")
        copy.duplicate_of_id = original.id
    start, end = trends.window_for("week", NOW)
    with db.read() as s:
        [sso] = trends.theme_trends(db_session=s, team_id=team, start=start, end=end).themes
    assert sso.count == 2  # both count
    assert sso.example is not None and sso.example.item_id == original.id  # the newer one is the duplicate


def test_the_query_reads_the_team_and_created_at_index(db: Database) -> None:
    """The grouped query is a range of ix_feedback_items_team_id_created_at (Postgres: when it may choose)."""
    start, end = trends.window_for("week", NOW)
    captured: list[tuple[str, Any]] = []

    def keep(
        conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool
    ) -> None:
        if "count(" in statement.lower() and "sum(" in statement.lower() and not captured:
            captured.append((statement, parameters))

    with db.read() as s:
        engine = s.get_bind()
        event.listen(engine, "before_cursor_execute", keep)
        try:
            trends.theme_trends(db_session=s, team_id="TPLAN", start=start, end=end)
        finally:
            event.remove(engine, "before_cursor_execute", keep)
        assert captured, "the grouped query was not seen"
        statement, parameters = captured[0]
        if db.backend == "sqlite":
            rows = s.connection().exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)
        else:
            # A near-empty test table is cheaper to scan; forbidding that shows the index serves the query.
            s.connection().exec_driver_sql("SET LOCAL enable_seqscan = off")
            rows = s.connection().exec_driver_sql("EXPLAIN " + statement, parameters)
        plan = " ".join(str(r[-1]) for r in rows)
    assert "ix_feedback_items_team_id_created_at" in plan, plan


def test_a_shipped_theme_says_so(db: Database) -> None:
    team, ids = _seed(db)
    with db.session() as s:
        theme = s.get(Theme, ids["export"])
        assert theme is not None
        theme.shipped_at = NOW - timedelta(days=2)
    start, end = trends.window_for("week", NOW)
    with db.read() as s:
        report = trends.theme_trends(db_session=s, team_id=team, start=start, end=end)
    export = next(t for t in report.themes if t.name == "Export")
    assert export.shipped_at == NOW - timedelta(days=2)
    line = trend_line(export, "week")
    assert ":rocket: shipped 24 Nov 2026" in line and "first seen 17 Oct 2026" in line
    assert "5 items (+4 vs the previous week, +400%)" in line and "$120K ARR (+$100K)" in line
    assert all(t.shipped_at is None for t in report.themes if t.name != "Export")
