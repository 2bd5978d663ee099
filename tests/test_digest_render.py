"""Digest rendering on a fixed data set: exact blocks, privacy of quotes, ARR vs count ranking, Slack limits."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from bot.digests import render
from bot.digests.render import build_digest, fit_limits
from bot.digests.schemas import DigestPeriod, RenderedDigest
from bot.digests.sections import MetricsData, MetricSeries
from storage.db import Database
from storage.models import (
    Account,
    DigestSubscription,
    FeedbackItem,
    Metric,
    MetricPoint,
    Request,
    RequestType,
    Theme,
)
from tests.helpers import unique

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ALWAYS = {"timezone": "UTC", "working_days": [0, 1, 2, 3, 4, 5, 6], "start": "00:00", "end": "00:00"}
START = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)  # Monday 09:00
END = START + timedelta(weeks=1)
NOW = END + timedelta(minutes=1)
PERIOD = DigestPeriod(
    start=START, end=END, label="Mon 2 – Sun 8 Nov 2026", key="2026-11-02T09:00Z/2026-11-09T09:00Z"
)
PUBLIC, PRIVATE, TRIAGE = "CPUBLIC01", "CPRIVATE1", "CTRIAGE01"
JUICY = "We will churn unless exports get 10x faster, says our CFO"


def day(d: int, hour: int = 12, month: int = 11) -> datetime:
    return datetime(2026, month, d, hour, tzinfo=UTC)


@dataclass
class Fixture:
    team: str
    request_ids: dict[str, int]


def _subscription(team: str, channel: str, sections: dict[str, Any], **extra: Any) -> DigestSubscription:
    """A subscription as the scheduler would load it (not stored: the renderer only reads it)."""
    values: dict[str, Any] = {
        "id": 4242,
        "team_id": team,
        "channel_id": channel,
        "name": "Product Ops digest",
        "cadence": "weekly",
        "cron": "0 9 * * 1",
        "timezone": "UTC",
        "sections": sections,
        "skip_if_empty": False,
        "created_by_user_id": "UOWNER",
        **extra,
    }
    return DigestSubscription(**values)


_THEMES: dict[tuple[str, str], Theme] = {}


def _theme(team: str, name: str | None) -> Theme | None:
    """One accepted theme per (workspace, name), shared by the items of a seed."""
    if name is None:
        return None
    return _THEMES.setdefault((team, name), Theme(team_id=team, name=name, status="active", keywords=[]))


def _item(team: str, *, at: datetime, theme: str | None = None, tags: list[str] | None = None,
          account: int | None = None, channel: str = PUBLIC, visibility: str = "public", text: str = "feedback",
          permalink: str | None = None, deleted: bool = False) -> FeedbackItem:  # fmt: skip
    return FeedbackItem(
        team_id=team, channel_id=channel, text=text, captured_by_user_id="UCAP", source="reaction",
        account_id=account, theme=_theme(team, theme), tags=tags or [], visibility=visibility, permalink=permalink,
        created_at=at, deleted_at=at if deleted else None,
    )  # fmt: skip


def _seed(db: Database) -> Fixture:
    team = unique("TDIG")
    with db.session() as s:
        # Metrics: signups (sum of daily points) and churn (the last value of the week, down is good).
        signups = Metric(team_id=team, key="signups", name="Signups", unit="count", direction="up_is_good",
                         target=100, summary="sum", period="day", source="push")  # fmt: skip
        churn = Metric(team_id=team, key="churn", name="Churn rate", unit="percent", direction="down_is_good",
                       target=2.0, summary="last", period="week", source="manual")  # fmt: skip
        s.add_all([signups, churn])
        s.flush()
        for i in range(56):  # eight weeks of daily signups ending with the digest's week
            ts = START - timedelta(weeks=7) + timedelta(days=i, hours=3)
            value = 20.0 if ts >= START else (15.0 if ts >= START - timedelta(weeks=1) else 10.0)
            s.add(MetricPoint(team_id=team, metric_id=signups.id, ts=ts, value=value))
        s.add(MetricPoint(team_id=team, metric_id=signups.id, ts=END, value=999.0))  # after the period
        s.add(MetricPoint(team_id=team, metric_id=signups.id, ts=START - timedelta(weeks=40), value=999.0))
        for ts, value in ((day(27, month=10), 3.0), (day(3), 2.8), (day(6), 2.5)):
            s.add(MetricPoint(team_id=team, metric_id=churn.id, ts=ts, value=value))

        accounts = {
            name: Account(team_id=team, name=name, name_key=name.lower(), arr=Decimal(arr))
            for name, arr in (("BigCo", 500_000), ("MidCo", 50_000), ("SmallA", 1_000), ("SmallB", 1_000),
                              ("SmallC", 1_000))
        }  # fmt: skip
        s.add_all(accounts.values())
        s.flush()
        acc = {name: a.id for name, a in accounts.items()}
        items = [
            # Slow exports: BigCo twice; the newer one is a juicy quote from a private channel.
            _item(
                team,
                at=day(3),
                theme="Slow exports",
                account=acc["BigCo"],
                text="Exports time out",
                permalink="https://x.slack.com/archives/CPUBLIC01/p1",
            ),
            _item(
                team,
                at=day(5),
                theme="Slow exports",
                account=acc["BigCo"],
                channel=PRIVATE,
                visibility="private",
                text=JUICY,
                permalink="https://x.slack.com/archives/CPRIVATE1/p2",
            ),
            # Dark mode: four small accounts' worth (one without an account), plus a deleted item.
            _item(
                team,
                at=day(2, 10),
                theme="Dark mode",
                account=acc["SmallA"],
                text="Dark mode please",
                permalink="https://x.slack.com/archives/CPUBLIC01/p3",
            ),
            _item(team, at=day(4), theme="Dark mode", account=acc["SmallB"], text="Too bright <at night>"),
            _item(team, at=day(6), theme="Dark mode", account=acc["SmallC"], text="dark\nmode"),
            _item(team, at=day(7), theme="Dark mode", text="Eyes hurt"),
            _item(team, at=day(7), theme="Dark mode", account=acc["BigCo"], text="deleted", deleted=True),
            # SSO: MidCo twice and SmallA.
            _item(team, at=day(3), theme="SSO", account=acc["MidCo"], text="Need Okta"),
            _item(team, at=day(4), theme="SSO", account=acc["MidCo"], text="SAML too"),
            _item(team, at=day(5), theme="SSO", account=acc["SmallA"], text="SSO for SMB"),
            # Unthemed: grouped by their most common tag (billing and invoices tie: billing), else Unsorted.
            _item(team, at=day(3), tags=["billing"], text="Invoice PDF broken"),
            _item(team, at=day(4), tags=["invoices", "billing"], text="Invoices wrong"),
            _item(team, at=day(5), tags=["invoices"], text="Invoice numbering"),
            _item(team, at=day(6), text="Something else"),
            # The previous week: Dark mode twice, SSO three times.
            _item(team, at=day(27, month=10), theme="Dark mode", account=acc["SmallA"]),
            _item(team, at=day(28, month=10), theme="Dark mode", account=acc["SmallB"]),
            *[_item(team, at=day(29, month=10), theme="SSO", account=acc["MidCo"]) for _ in range(3)],
            # Outside both windows, and another team's item.
            _item(team, at=day(1, month=9), theme="Slow exports", account=acc["BigCo"], text="old"),
            _item(unique("TOTHER"), at=day(4), theme="Dark mode", text="other team"),
        ]
        s.add_all(items)

        bug = RequestType(team_id=team, name="Bug", owners=[], fields=[], sla={}, calendar=ALWAYS,
                          triage_channel_id=TRIAGE)  # fmt: skip
        access = RequestType(team_id=team, name="Access", owners=[], fields=[], sla={}, calendar=ALWAYS)
        s.add_all([bug, access])
        s.flush()

        def request(type_id: int, title: str, **columns: Any) -> Request:
            return Request(team_id=team, type_id=type_id, title=title, requester_user_id="UASK",
                           channel_id="CASK", source="command", priority="normal", **columns)  # fmt: skip

        rows = {
            "done": request(bug.id, "Export fails", status="done", created_at=day(3, 10),
                            first_response_at=day(3, 11), resolved_at=day(4, 10), due_at=day(5, 10)),
            "overdue": request(bug.id, "Login <broken>", status="in_progress", created_at=day(4, 9),
                               first_response_at=day(4, 12), due_at=day(6, 9), triage_channel_id=TRIAGE,
                               triage_ts="1.1"),
            "open": request(access.id, "Grant access", status="new", created_at=day(5, 9), due_at=day(20, 9),
                            permalink="https://x.slack.com/archives/CASK/p9"),
            "old": request(access.id, "Old one", status="done", created_at=day(20, 9, month=10),
                           resolved_at=day(22, 9, month=10)),
        }  # fmt: skip
        s.add_all(rows.values())
        s.flush()
        return Fixture(team=team, request_ids={k: r.id for k, r in rows.items()})


@pytest.fixture
def data(db: Database) -> Fixture:
    return _seed(db)


def _build(db: Database, subscription: DigestSubscription, period: DigestPeriod = PERIOD) -> RenderedDigest:
    with db.read() as s:
        return build_digest(db_session=s, subscription=subscription, period=period, team_name="Acme", now=NOW)


def _texts(value: Any) -> list[str]:
    """Every `text` string anywhere in the blocks."""
    if isinstance(value, dict):
        found = [value["text"]] if isinstance(value.get("text"), str) else []
        return found + [t for v in value.values() for t in _texts(v)]
    if isinstance(value, list):
        return [t for v in value for t in _texts(v)]
    return []


ALL = {
    "metrics": {"keys": ["signups", "churn", "nope"]},
    "feedback": {"top": 3, "by": "count"},
    "requests": {"types": []},
}


def test_golden_blocks(db: Database, data: Fixture) -> None:
    started = time.perf_counter()
    digest = _build(db, _subscription(data.team, PUBLIC, ALL))
    print(f"\nbuild_digest on the fixture ({db.backend}): {(time.perf_counter() - started) * 1000:.1f} ms")
    overdue = data.request_ids["overdue"]
    expected = [
        {"type": "header", "text": {"type": "plain_text", "text": "Product Ops digest · Acme", "emoji": True}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": ":calendar: Mon 2 – Sun 8 Nov 2026"}]},
        {"type": "divider"},
        {"type": "section", "text": {"type": "mrkdwn", "text": "*:bar_chart: Metrics*"}},
        {"type": "section", "text": {"type": "mrkdwn", "text": (
            "*Signups* — *140*\n"
            ":chart_with_upwards_trend: +35 (+33.3%) vs the previous week (105) — good\n"
            ":white_check_mark: On target (≥ 100)")}},
        {"type": "section", "text": {"type": "mrkdwn", "text": (
            "*Churn rate* — *2.5%*\n"
            ":chart_with_downwards_trend: -0.5 pts vs the previous week (3%) — good\n"
            ":warning: Above target (2%)")}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text":
            ":grey_question: unknown metric `nope` — check `/metric list`"}]},
        {"type": "context", "elements": [{"type": "mrkdwn", "text":
            ":chart_with_upwards_trend: Chart of the last 8 weeks in the thread (dashed lines: targets)."}]},
        {"type": "divider"},
        {"type": "section", "text": {"type": "mrkdwn", "text":
            "*:bulb: Feedback* — 13 items this week (+8 vs last week) · top themes by items"}},
        {"type": "section", "text": {"type": "mrkdwn", "text": (
            # rising (the rule of /feedback trends: ≥ 3 items and more than last week); SSO (±0) and
            # Slow exports (2, new) are not
            "1. *Dark mode* — 4 items (+2 vs last week) · 3 accounts · $3,000 ARR (+$1,000)"
            " · :chart_with_upwards_trend: rising\n"
            ">“dark mode” — SmallC\n"
            ">“Too bright &lt;at night&gt;” — SmallB")}},
        {"type": "section", "text": {"type": "mrkdwn", "text": (
            "2. *SSO* — 3 items (±0 vs last week) · 2 accounts · $51K ARR (+$1,000)\n"
            ">“SAML too” — MidCo\n"
            ">“Need Okta” — MidCo")}},
        {"type": "section", "text": {"type": "mrkdwn", "text": (
            "3. *Slow exports* — 2 items (new) · 1 account · $500K ARR\n"
            ">“Exports time out” — BigCo <https://x.slack.com/archives/CPUBLIC01/p1|view>")}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": "and 3 more themes"}]},
        {"type": "divider"},
        {"type": "section", "text": {"type": "mrkdwn", "text": "*:ticket: Requests* — all types"}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": t} for t in (
            "*Opened this week*\n3", "*Closed this week*\n1", "*Open now*\n2", "*Overdue now*\n1",
            "*First response (p50)*\n1h", "*Resolution SLA breached*\n50% (1 of 2)")]},
        {"type": "section", "text": {"type": "mrkdwn", "text": (
            "*Oldest overdue* (1)\n"
            f"• <https://slack.com/app_redirect?channel={TRIAGE}|#{overdue}> “Login &lt;broken&gt;” — Bug · "
            "overdue by 3d")}},
        {"type": "divider"},
        {"type": "actions", "block_id": "digest_footer", "elements": [{
            "type": "button", "action_id": "digest_manage",
            "text": {"type": "plain_text", "text": "Manage subscription", "emoji": True}, "value": "4242"}]},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": "`/digest edit` · `/digest unsubscribe`"}]},
    ]  # fmt: skip
    assert digest.blocks == expected
    assert digest.text == (
        "Product Ops digest — Mon 2 – Sun 8 Nov 2026: 2 of 2 metrics with data; "
        "13 feedback items (top: Dark mode); 3 requests opened, 1 closed, 1 overdue"
    )
    assert digest.is_empty is False
    assert digest.chart_png is not None and digest.chart_png.startswith(PNG_SIGNATURE)


def test_private_quote_only_in_its_own_channel(db: Database, data: Fixture) -> None:
    sections = {"feedback": {"top": 5, "by": "arr"}}
    elsewhere = _build(db, _subscription(data.team, PUBLIC, sections))
    dumped = json.dumps(elsewhere.blocks, ensure_ascii=False)
    assert JUICY not in dumped and "CPRIVATE1/p2" not in dumped and JUICY not in elsewhere.text
    # The private item still counts: two items from BigCo.
    assert "1. *Slow exports* — 2 items (new) · 1 account · $500K ARR" in dumped
    at_home = _build(db, _subscription(data.team, PRIVATE, sections))
    slow = next(t for t in _texts(at_home.blocks) if "Slow exports" in t)
    assert slow.splitlines()[1] == f">“{JUICY}” — BigCo <https://x.slack.com/archives/CPRIVATE1/p2|view>"
    assert slow.splitlines()[2].startswith(">“Exports time out”")


def test_arr_ranking_differs_from_count_ranking(db: Database, data: Fixture) -> None:
    def order(by: str) -> list[str]:
        digest = _build(db, _subscription(data.team, PUBLIC, {"feedback": {"top": 6, "by": by}}))
        titles = [t.split(" — ")[0] for t in _texts(digest.blocks) if t[:2] in {f"{i}." for i in range(1, 7)}]
        return [t.split(" ", 1)[1] for t in titles]

    assert order("count") == ["*Dark mode*", "*SSO*", "*Slow exports*", "*#billing* _(tag)_",
                               "*#invoices* _(tag)_", "*Unsorted*"]  # fmt: skip
    assert order("arr") == ["*Slow exports*", "*SSO*", "*Dark mode*", "*#billing* _(tag)_",
                            "*#invoices* _(tag)_", "*Unsorted*"]  # fmt: skip


def test_an_item_and_its_duplicate_are_not_both_quoted(db: Database) -> None:
    team = unique("TDUP")
    with db.session() as s:
        big = Account(team_id=team, name="BigCo", name_key="bigco", arr=Decimal(900_000))
        s.add(big)
        s.flush()
        original = _item(team, at=day(3), theme="SSO", text="Okta SSO before renewal")
        other = _item(team, at=day(4), theme="SSO", text="SAML login for admins")
        s.add_all([original, other])
        s.flush()
        copy = _item(team, at=day(5), theme="SSO", account=big.id, text="BigCo: no renewal without Okta SSO")
        copy.duplicate_of_id = original.id
        s.add(copy)
    digest = _build(db, _subscription(team, PUBLIC, {"feedback": {"top": 5, "by": "arr"}}))
    sso = next(t for t in _texts(digest.blocks) if "*SSO*" in t)
    assert "3 items" in sso and "$900K ARR" in sso  # the duplicate counts, with its account
    assert "Okta SSO before renewal" in sso and "SAML login for admins" in sso
    assert "no renewal without Okta SSO" not in sso  # the biggest account's item, but a duplicate


def test_requests_filtered_by_type_names(db: Database, data: Fixture) -> None:
    sections = {"requests": {"types": ["access", "Bug", "Nope"]}}
    both = _build(db, _subscription(data.team, PUBLIC, sections))
    texts = _texts(both.blocks)
    assert "*:ticket: Requests* — Bug, Access" in texts or "*:ticket: Requests* — Access, Bug" in texts
    assert "*First response (p50)*\n1h" in texts  # over both types, computed across them
    assert any("unknown request type `Nope`" in t for t in texts)
    only = _build(db, _subscription(data.team, PUBLIC, {"requests": {"types": ["Access"]}}))
    texts = _texts(only.blocks)
    assert (
        "*Opened this week*\n1" in texts and "*Overdue now*\n0" in texts and "*Closed this week*\n0" in texts
    )
    assert not any("Oldest overdue" in t for t in texts)


def test_empty_period_and_no_chart(db: Database, data: Fixture) -> None:
    quiet = DigestPeriod(start=datetime(2030, 1, 7, tzinfo=UTC), end=datetime(2030, 1, 14, tzinfo=UTC),
                         label="a quiet week", key="quiet")  # fmt: skip
    digest = _build(db, _subscription(data.team, PUBLIC, ALL), period=quiet)
    assert digest.is_empty is True
    assert digest.chart_png is None
    texts = _texts(digest.blocks)
    assert "*Signups* — no data this week" in texts
    assert not any("Chart of" in t for t in texts)
    # Open and overdue requests are a snapshot: they do not make a period eventful.
    assert "*Overdue now*\n1" in texts
    no_metrics = _build(db, _subscription(data.team, PUBLIC, {"feedback": {}}))
    assert no_metrics.chart_png is None and no_metrics.is_empty is False


def test_missed_periods_are_said_once(db: Database, data: Fixture) -> None:
    period = DigestPeriod(start=START, end=END, label=PERIOD.label, key=PERIOD.key, missed=2)
    digest = _build(db, _subscription(data.team, PUBLIC, {"feedback": {}}), period=period)
    assert digest.blocks[2] == {"type": "context", "elements": [{"type": "mrkdwn", "text": (
        ":warning: 2 earlier weeks went unsent while the bot was down; this digest covers the latest week only."
    )}]}  # fmt: skip


def test_limits_with_300_themes_and_12_metrics(db: Database) -> None:
    team = unique("TBIG")
    long = "x" * 5000
    with db.session() as s:
        metrics = [Metric(team_id=team, key=f"m{i:02d}", name=f"Metric {i} " + "n" * 180, unit="count",
                          direction="up_is_good", summary="avg", period="week", source="push")
                   for i in range(12)]  # fmt: skip
        s.add_all(metrics)
        s.flush()
        for metric in metrics:
            s.add_all(MetricPoint(team_id=team, metric_id=metric.id, ts=START - timedelta(days=d), value=d)
                      for d in range(-6, 50, 3))  # fmt: skip
        s.add_all(_item(team, at=day(3) + timedelta(minutes=i), theme=f"Theme {i:03d} " + "t" * 240,
                        text=long, permalink="https://x.slack.com/archives/C/p" + "9" * 900)
                  for i in range(300) for _ in range(1 + i % 3))  # fmt: skip
    sections = {
        "metrics": {"keys": [m.key for m in metrics]},
        "feedback": {"top": 10},
        "requests": {"types": [f"type{i}" for i in range(40)]},
    }
    started = time.perf_counter()
    digest = _build(db, _subscription(team, PUBLIC, sections, name="N" * 100))
    print(f"\nbuild_digest with 300 themes and 12 metrics ({db.backend}): "
          f"{(time.perf_counter() - started) * 1000:.1f} ms")  # fmt: skip
    assert len(digest.blocks) <= 50
    assert all(len(t) <= 3000 for t in _texts(digest.blocks))
    assert len(digest.blocks[0]["text"]["text"]) <= 150
    assert all(len(b.get("fields", [])) <= 10 for b in digest.blocks)
    texts = _texts(digest.blocks)
    assert "and 290 more themes" in texts
    assert any("and 30 more" in t for t in texts)  # unknown request types
    assert sum(1 for t in texts if t.startswith("*Metric ")) == 12
    assert digest.chart_png is not None and digest.chart_png.startswith(PNG_SIGNATURE)
    assert len(digest.text) <= 3000


def test_fit_limits_cuts_blocks_fields_and_texts() -> None:
    footer = render.footer_blocks(7)
    many = [render.section("y" * 4000) for _ in range(80)]
    fields = {"type": "section", "fields": [{"type": "mrkdwn", "text": str(i)} for i in range(14)]}
    fitted = fit_limits([fields, *many, *footer])
    assert len(fitted) == 50
    assert fitted[-3:] == footer
    assert fitted[-4] == render.context("and 35 more (Slack shows at most 50 blocks)")
    assert [f["text"] for f in fitted[0]["fields"]][-2:] == ["8", "and 5 more"]
    assert len(fitted[0]["fields"]) == 10
    assert all(len(t) <= 3000 for t in _texts(fitted))


def test_chart_is_one_png_for_several_metrics_or_none() -> None:
    starts = tuple(START - timedelta(weeks=w) for w in range(7, -1, -1))

    def series(key: str, values: tuple[float | None, ...], unit: str = "count") -> MetricSeries:
        return MetricSeries(key=key, name=key.title(), unit=unit, direction="up_is_good", target=5.0,
                            summary="sum", window_starts=starts, values=values)  # fmt: skip

    gappy = series("a", (1.0, None, 3.0, 4.0, None, 6.0, 7.0, 8.0))
    empty = series("b", (None,) * 8, unit="percent")
    png = render.metrics_chart([gappy, empty, series("c", (None,) * 7 + (2.0,), unit="currency")])
    assert png is not None and png.startswith(PNG_SIGNATURE)
    assert render.metrics_chart([empty]) is None
    assert render.metrics_blocks(MetricsData(series=[empty], unknown=[]), noun="week", chart=False)[-1] == (
        render.section("*B* — no data this week")
    )
