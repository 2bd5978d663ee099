"""Block Kit for `/feedback trends` and `/feedback ship`: small pure functions over the services' dataclasses."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from bot.digests.render import clip, context, escape, format_arr, plural, section, signed, signed_arr
from bot.insights.ship import ShipPlan
from bot.insights.trends import ThemeTrend, TrendReport

Blocks = list[dict[str, Any]]
QUOTE = 140


class InsightAction(enum.StrEnum):
    """Action ids of the insight buttons."""

    ship_theme = "insights_ship_theme"


def _day(when: datetime | None) -> str:
    return f"{when:%-d %b %Y}" if when else "—"


def trend_line(trend: ThemeTrend, noun: str) -> str:
    """'*Export* :chart_with_upwards_trend: rising — 5 items (+4 vs the previous week) · 3 accounts · $120K ARR'."""
    flag = " :chart_with_upwards_trend: *rising*" if trend.rising else ""
    change = f"{signed(trend.change)} vs the previous {noun}" if trend.previous_count else f"new this {noun}"
    if trend.change_pct is not None and trend.change:
        change += f", {trend.change_pct:+.0f}%"
    numbers = f"{plural(trend.count, 'item')} ({change}) · {plural(trend.accounts, 'account')}"
    if trend.arr or trend.previous_arr:
        numbers += f" · {format_arr(trend.arr)} ARR"
        if trend.previous_arr:
            numbers += f" ({signed_arr(trend.arr - trend.previous_arr)})"
    seen = f"first seen {_day(trend.first_seen)} · last {_day(trend.last_seen)}"
    if trend.shipped_at:
        seen += f" · :rocket: shipped {_day(trend.shipped_at)}"
    lines = [f"*{escape(trend.name)}*{flag} — {numbers}", seen]
    if trend.example is not None:
        who = f" — {escape(trend.example.customer)}" if trend.example.customer else ""
        link = f" <{trend.example.permalink}|view>" if trend.example.permalink else ""
        lines.append(f">“{escape(clip(' '.join(trend.example.text.split()), QUOTE))}”{who}{link}")
    return "\n".join(lines)


def ship_button(trend: ThemeTrend) -> dict[str, Any]:
    """'Mark shipped', with a confirmation saying who will be told."""
    return {
        "type": "button",
        "action_id": InsightAction.ship_theme.value,
        "text": {"type": "plain_text", "text": "Mark shipped"},
        "value": str(trend.theme_id),
        "confirm": {
            "title": {"type": "plain_text", "text": "Mark as shipped?"},
            "text": {
                "type": "mrkdwn",
                "text": clip(
                    f"Everyone who reported *{escape(trend.name)}* will hear it shipped: a reply in each source "
                    "thread and a DM to reporters and account owners. Use `/feedback ship <theme> <message>` "
                    "to write the message yourself.",
                    300,
                ),
            },
            "confirm": {"type": "plain_text", "text": "Ship it"},
            "deny": {"type": "plain_text", "text": "Cancel"},
        },
    }


def trends_blocks(report: TrendReport, *, period: str, can_ship: bool) -> Blocks:
    """`/feedback trends`: rising themes first, then by count; numbers, one example each, the unsorted rest."""
    noun = period
    days = (report.end - report.start).days
    head = (
        f"*:bar_chart: Feedback trends* — last {days} days vs the {days} before · "
        f"{plural(report.total, 'item')} ({signed(report.total - report.previous_total)})"
    )
    blocks: Blocks = [section(head)]
    if not report.themes:
        blocks.append(
            section(
                "No themed feedback in this period yet. Themes group items as they are captured; "
                "`/feedback themes` shows and manages them."
            )
        )
    for trend in report.themes:
        block = section(trend_line(trend, noun))
        if can_ship:
            block["accessory"] = ship_button(trend)
        blocks.append(block)
    notes = [
        f"Unsorted: {plural(report.unsorted, 'item')} ({signed(report.unsorted - report.previous_unsorted)}) "
        "not in an accepted theme",
        f"Rising: at least {report.min_count} items and more than the {noun} before",
    ]
    blocks.append(context(*notes))
    return blocks


def trends_text(report: TrendReport) -> str:
    """Notification text for the trends answer."""
    return f"Feedback trends: {plural(len(report.themes), 'theme')}, {plural(report.total, 'item')}"


def ship_summary(plan: ShipPlan) -> str:
    """'3 threads, 2 reporters, 1 account owner'."""
    parts = [
        plural(plan.threads, "thread"),
        plural(plan.reporters, "reporter"),
        plural(plan.owners, "account owner"),
    ]
    return ", ".join(parts)


def ship_blocks(plan: ShipPlan) -> Blocks:
    """The answer to shipping: how many notices go out (or why none do)."""
    title = f":rocket: *{escape(plan.theme_name)}* is marked shipped: “Shipped: {escape(plan.message)}”."
    if plan.notices:
        body = (
            f"Telling {ship_summary(plan)} — sent in the background; I'll DM you if any can't be delivered."
        )
    elif plan.items == 0:
        body = "It has no feedback items yet, so there is nobody to tell."
    else:
        body = "Everyone who reported it was already told; nothing new to send."
    if plan.already_told and plan.notices:
        body += f" ({plural(plan.already_told, 'item')} had been told before and are skipped.)"
    return [section(f"{title}\n{body}")]


def error_blocks(text: str) -> Blocks:
    """A problem the user can fix, and how."""
    return [section(f":warning: {text}")]
