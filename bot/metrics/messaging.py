"""Metric values in words and Block Kit: formatting by unit, change and target status, the `/metric` views.

Units and how their values are stored: count (a number), percent (percent points: 12.5 means 12.5%),
currency (dollars), duration (seconds), ratio (a plain fraction, e.g. 0.42).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bot.metrics.points import PeriodValue

UNITS = ("count", "percent", "currency", "duration", "ratio")
SPARKS = "▁▂▃▄▅▆▇█"
TABLE_PERIODS = 8
PERIOD_WORDS = {"day": "day", "week": "week", "month": "month"}
HELP = (
    "*Metrics*\n"
    "• `/metric <key>` — the current value, the change vs the previous period, the target, and the last "
    f"{TABLE_PERIODS} periods (only you see it).\n"
    "• `/metric <key> share` — posts the same summary with a chart to this channel.\n"
    "• `/metric list` — every metric: latest value, target, source.\n"
    "• `/metric record <key> <value> [YYYY-MM-DD]` — records a value of a manual metric (today by default).\n"
    "• `/metric define` — defines a new metric.\n"
    "• `/metric help` — this help."
)


# ---- numbers -------------------------------------------------------------------------------------------


def _trim(text: str) -> str:
    """Drops a fractional part made only of zeros: 12.0 → 12, 1.50 → 1.5."""
    return text.rstrip("0").rstrip(".") if "." in text else text


def _scaled(value: float, decimals: int = 1) -> str:
    """1.2B / 3.4M / 12.3K for large magnitudes, else the number with thousands separators."""
    value = float(value)
    size = abs(value)
    # (from what size, divide by, suffix): below 10,000 the full number reads better than "9.9K".
    for threshold, divisor, suffix in ((1e9, 1e9, "B"), (1e6, 1e6, "M"), (1e4, 1e3, "K")):
        if size >= threshold:
            return _trim(f"{value / divisor:,.{decimals}f}") + suffix
    if float(value).is_integer():
        return f"{value:,.0f}"
    return _trim(f"{value:,.2f}")


def format_duration(seconds: float) -> str:
    """3h 20m, 2d 4h, 45m, 30s."""
    sign = "-" if seconds < 0 else ""
    total = abs(seconds)
    if total < 60:
        return f"{sign}{_trim(f'{total:.1f}')}s"
    minutes = round(total / 60)
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    if days:
        return f"{sign}{days}d {hours}h" if hours else f"{sign}{days}d"
    if hours:
        return f"{sign}{hours}h {mins}m" if mins else f"{sign}{hours}h"
    return f"{sign}{mins}m"


def format_value(value: float, unit: str) -> str:
    """A value as people read it: 1,234 / 12.5% / $1.2M / 3h 20m / 0.42."""
    value = float(value)
    if math.isnan(value) or math.isinf(value):
        return str(value)
    if unit == "percent":
        return _trim(f"{value:,.1f}") + "%"
    if unit == "currency":
        sign = "-" if value < 0 else ""
        size = abs(value)
        body = (
            _scaled(size, decimals=2)
            if size >= 1e4
            else (f"{size:,.0f}" if size.is_integer() else f"{size:,.2f}")
        )
        return f"{sign}${body}"
    if unit == "duration":
        return format_duration(value)
    if unit == "ratio":
        return f"{value:.2f}"
    if float(value).is_integer():
        return f"{value:,.0f}"
    return _trim(f"{value:,.2f}")


def format_tick(value: float, unit: str) -> str:
    """A short axis label: 12%, $1.2M, 3.5h, 12.3K, 0.42."""
    value = float(value)
    if unit == "percent":
        return _trim(f"{value:.1f}") + "%"
    if unit == "currency":
        return ("-" if value < 0 else "") + "$" + _scaled(abs(value))
    if unit == "duration":
        if 0 < abs(value) < 60:
            return f"{value:.0f}s"
        if 0 < abs(value) < 3600:
            return f"{value / 60:.0f}m"
        return _trim(f"{value / 3600:.1f}") + "h"
    if unit == "ratio":
        return f"{value:.2f}"
    return _scaled(value)


_SUFFIXES = {"k": 1e3, "m": 1e6, "b": 1e9}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([dhms])")
_DURATION_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1}


def parse_value(text: str, unit: str) -> float | None:
    """A typed value in the metric's unit (1,234 / 12.5% / $1.2M / 3h 20m / 0.42); None when unreadable."""
    raw = text.strip().lower().replace(",", "").replace("_", "")
    if not raw:
        return None
    if unit == "duration" and _DURATION_PART.search(raw):
        rest = _DURATION_PART.sub("", raw).strip()
        if rest:
            return None
        return float(sum(float(n) * _DURATION_SECONDS[u] for n, u in _DURATION_PART.findall(raw)))
    if unit == "percent":
        raw = raw.removesuffix("%")
    if unit == "currency":
        raw = raw.replace("$", "", 1) if raw.startswith(("$", "-$")) else raw
    scale = 1.0
    if raw and raw[-1] in _SUFFIXES and unit in ("count", "currency"):
        scale, raw = _SUFFIXES[raw[-1]], raw[:-1]
    try:
        value = float(raw) * scale
    except ValueError:
        return None
    return value if math.isfinite(value) else None


# ---- change and target ---------------------------------------------------------------------------------


def is_good(delta: float, direction: str) -> bool:
    """Whether a move of `delta` is the good way for this metric."""
    return delta > 0 if direction == "up_is_good" else delta < 0


def change_emoji(delta: float, direction: str) -> str:
    """Up and good, down and bad, up and bad, down and good, flat."""
    if delta == 0:
        return ":heavy_minus_sign:"
    if delta > 0:
        return ":chart_with_upwards_trend:" if is_good(delta, direction) else ":small_red_triangle:"
    return ":chart_with_downwards_trend:" if is_good(delta, direction) else ":small_red_triangle_down:"


def change_text(*, current: float, previous: float | None, unit: str, direction: str, period: str) -> str:
    """E.g. ':chart_with_upwards_trend: +120 (+10.8%) vs the previous week — good'."""
    if previous is None:
        return f"No previous {PERIOD_WORDS.get(period, period)} to compare with"
    delta = current - previous
    sign = "+" if delta > 0 else ("-" if delta < 0 else "±")
    amount = _trim(f"{abs(delta):.1f}") + " pts" if unit == "percent" else format_value(abs(delta), unit)
    relative = (
        f" ({sign}{abs(delta) / abs(previous) * 100:.1f}%)" if previous != 0 and unit != "percent" else ""
    )
    verdict = "" if delta == 0 else (" — good" if is_good(delta, direction) else " — bad")
    return (
        f"{change_emoji(delta, direction)} {sign}{amount}{relative} "
        f"vs the previous {PERIOD_WORDS.get(period, period)} ({format_value(previous, unit)}){verdict}"
    )


def target_text(*, value: float, target: float | None, unit: str, direction: str) -> str:
    """':white_check_mark: On target (≥ 1,000)', ':warning: Below target (1,000)' or 'No target'."""
    if target is None:
        return "No target"
    shown = format_value(target, unit)
    if direction == "down_is_good":
        return (
            f":white_check_mark: On target (≤ {shown})"
            if value <= target
            else f":warning: Above target ({shown})"
        )
    return (
        f":white_check_mark: On target (≥ {shown})"
        if value >= target
        else f":warning: Below target ({shown})"
    )


def sparkline(values: Sequence[float]) -> str:
    """▁▃▅█ — one bar per value, scaled between the series' min and max."""
    if not values:
        return ""
    low, high = min(values), max(values)
    if high == low:
        return SPARKS[len(SPARKS) // 2] * len(values)
    return "".join(SPARKS[round((v - low) / (high - low) * (len(SPARKS) - 1))] for v in values)


def period_label(period_start: str, period: str) -> str:
    """'week of 2026-11-23', 'day 2026-11-23', 'month 2026-11'."""
    if period == "month":
        return f"month {period_start[:7]}"
    if period == "day":
        return f"day {period_start}"
    return f"week of {period_start}"


# ---- views ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricView:
    """What the `/metric` views show about one metric, read before any Slack call."""

    key: str
    name: str
    unit: str
    direction: str
    target: float | None
    period: str
    summary: str
    source: str
    periods: tuple[PeriodValue, ...]  # oldest first, the current period last

    @property
    def current(self) -> PeriodValue | None:
        """The latest period with data."""
        return self.periods[-1] if self.periods else None

    @property
    def previous(self) -> PeriodValue | None:
        """The period before the latest one with data."""
        return self.periods[-2] if len(self.periods) >= 2 else None


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def _context(*texts: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": t} for t in texts]}


def headline(view: MetricView) -> str:
    """'*Signups* — *1,234* (week of 2026-11-23)' or a no-data line."""
    current = view.current
    if current is None:
        return f"*{view.name}* (`{view.key}`) — no data yet"
    return f"*{view.name}* — *{format_value(current.value, view.unit)}* ({period_label(current.period_start, view.period)})"


def status_lines(view: MetricView) -> list[str]:
    """The change vs the previous period and the target status."""
    current = view.current
    if current is None:
        return []
    previous = view.previous
    return [
        change_text(
            current=current.value,
            previous=previous.value if previous else None,
            unit=view.unit,
            direction=view.direction,
            period=view.period,
        ),
        target_text(value=current.value, target=view.target, unit=view.unit, direction=view.direction),
    ]


def period_table(view: MetricView, limit: int = TABLE_PERIODS) -> str:
    """A sparkline and the last `limit` periods, as a code block (ephemeral messages carry no images)."""
    shown = view.periods[-limit:]
    if not shown:
        return ""
    width = max(len(format_value(p.value, view.unit)) for p in shown)
    rows = [f"{p.period_start}  {format_value(p.value, view.unit).rjust(width)}" for p in shown]
    return "```" + sparkline([p.value for p in shown]) + "\n" + "\n".join(rows) + "```"


def metric_blocks(view: MetricView) -> list[dict[str, Any]]:
    """The ephemeral `/metric <key>` answer: value, change, target, the last periods as a table."""
    blocks = [_section(headline(view))]
    lines = status_lines(view)
    if lines:
        blocks.append(_section("\n".join(lines)))
        blocks.append(_section(period_table(view)))
    else:
        hint = (
            "`/metric record " + view.key + " <value>`"
            if view.source == "manual"
            else f"its {view.source} source"
        )
        blocks.append(_context(f"Values will appear once {hint} records some."))
    blocks.append(
        _context(
            f"`{view.key}` · {view.summary} per {view.period} · source: {view.source} · "
            f"`/metric {view.key} share` posts it with a chart"
        )
    )
    return blocks


def metric_text(view: MetricView) -> str:
    """The plain-text fallback (and the shared message's comment)."""
    return "\n".join([headline(view), *status_lines(view)])


def list_blocks(views: Sequence[MetricView]) -> list[dict[str, Any]]:
    """`/metric list`: key, name, latest value, target and source for each metric."""
    if not views:
        return [_section("No metrics yet. `/metric define` adds one.")]
    lines = []
    for view in views:
        current = view.current
        value = format_value(current.value, view.unit) if current else "—"
        target = format_value(view.target, view.unit) if view.target is not None else "—"
        lines.append(f"• `{view.key}` *{view.name}* — {value} · target {target} · {view.source}")
    blocks: list[dict[str, Any]] = [_section(f"*Metrics* ({len(views)})")]
    chunk: list[str] = []
    for line in lines:  # a section holds at most 3,000 characters
        if sum(len(x) + 1 for x in chunk) + len(line) > 2900:
            blocks.append(_section("\n".join(chunk)))
            chunk = []
        chunk.append(line)
    blocks.append(_section("\n".join(chunk)))
    blocks.append(_context("`/metric <key>` for one metric · `/metric help`"))
    return blocks


def text_blocks(text: str) -> list[dict[str, Any]]:
    """One mrkdwn section."""
    return [_section(text)]


# ---- alerts --------------------------------------------------------------------------------------------


def describe_rule(
    *, kind: str, threshold: float | None, window: int | None, k: float | None, unit: str, period: str
) -> str:
    """An alert rule in words."""
    noun = PERIOD_WORDS.get(period, period)
    if kind == "above":
        return f"above {format_value(threshold, unit) if threshold is not None else '?'}"
    if kind == "below":
        return f"below {format_value(threshold, unit) if threshold is not None else '?'}"
    if kind == "change":
        return f"changes by more than {_trim(f'{threshold or 0:.1f}')}% vs the previous {noun}"
    return f"outside {_trim(f'{k or 0:.1f}')}σ of the last {window or 0} {noun}s"


def alert_blocks(
    *, view: MetricView, value: float, period_start: str, rule_text: str, reason: str
) -> list[dict[str, Any]]:
    """The alert posted to the rule's channel."""
    target = target_text(value=value, target=view.target, unit=view.unit, direction=view.direction)
    return [
        _section(
            f":rotating_light: *{view.name}* is *{format_value(value, view.unit)}* "
            f"({period_label(period_start, view.period)})"
        ),
        _section(f"*Alert:* {rule_text}\n{reason}\n{target}"),
        _context(f"`/metric {view.key}` for the details"),
    ]


def alert_text(*, view: MetricView, value: float, rule_text: str) -> str:
    """The alert's plain-text fallback."""
    return f"{view.name} is {format_value(value, view.unit)} — alert: {rule_text}"
