"""A digest as Block Kit: the header, the metrics, feedback and requests sections, and the footer.

`build_digest` reads the data (`bot.digests.sections`) and hands it to small pure functions, one per part,
that return blocks. The metrics chart is one PNG with one small panel per metric (their units differ, so
they do not share an axis), returned as `RenderedDigest.chart_png`; the outbox uploads it
(`files_upload_v2`) as a reply in the digest's thread, so the metrics section ends with a line saying the
chart is in the thread.

Slack's limits are kept by construction (at most 10 themes, 12 metrics, 3 overdue requests, one line for
unknown keys) and enforced at the end by `fit_limits`: at most 50 blocks, every text at most 3,000
characters (a header 150), at most 10 fields per section; what is cut says "and N more".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from io import BytesIO
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from bot.digests import sections
from bot.digests.schemas import DigestPeriod, DigestSections, RenderedDigest
from bot.digests.sections import FeedbackData, MetricsData, MetricSeries, RequestsData, ThemeStat
from bot.metrics.chart import HIGHLIGHT, LINE, TARGET
from bot.metrics.messaging import change_text, format_tick, format_value, target_text
from bot.requests.sla import humanize
from storage.models import DigestSubscription

Block = dict[str, Any]

MAX_BLOCKS = 50
MAX_TEXT = 3000
MAX_HEADER = 150
MAX_FIELDS = 10
MAX_FIELD_TEXT = 2000
MAX_CONTEXT_ELEMENTS = 10
QUOTE_LENGTH = 200
MANAGE_ACTION = "digest_manage"
CADENCE_NOUNS = {"daily": "day", "weekly": "week", "monthly": "month"}
CHART_NOTE = ":chart_with_upwards_trend: Chart of the last {n} {noun}s in the thread."


# ---- small helpers -------------------------------------------------------------------------------------


def clip(text: str, limit: int = MAX_TEXT) -> str:
    """The text, cut to `limit` characters with an ellipsis."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def escape(text: str) -> str:
    """User text made safe for mrkdwn (no accidental links or mentions)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def section(text: str) -> Block:
    """A mrkdwn section."""
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def context(*texts: str) -> Block:
    """A context line of mrkdwn elements."""
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": t} for t in texts]}


def divider() -> Block:
    """A divider."""
    return {"type": "divider"}


def period_noun(cadence: str) -> str:
    """What one period of a cadence is called: day, week, month, or period (cron)."""
    return CADENCE_NOUNS.get(cadence, "period")


def plural(n: int, word: str) -> str:
    """'1 item', '3 items'."""
    return f"{n:,} {word}" if n == 1 else f"{n:,} {word}s"


def signed(delta: float) -> str:
    """'+3', '-2', '±0'."""
    if delta == 0:
        return "±0"
    return ("+" if delta > 0 else "-") + format_value(abs(delta), "count")


def format_arr(value: Decimal | float) -> str:
    """'$3,000', '$51K', '$1.25M' (ARR is shown whole: cents do not matter here)."""
    amount = float(value)
    sign, size = ("-" if amount < 0 else ""), abs(amount)
    for limit, suffix in ((1e9, "B"), (1e6, "M"), (1e4, "K")):
        if size >= limit:
            scale = 1e3 if suffix == "K" else limit
            number = f"{size / scale:,.2f}".rstrip("0").rstrip(".")
            return f"{sign}${number}{suffix}"
    return f"{sign}${size:,.0f}"


def signed_arr(delta: Decimal | float) -> str:
    """'+$1,000', '-$51K', '±$0'."""
    if delta == 0:
        return "±$0"
    return ("+" if delta > 0 else "-") + format_arr(abs(float(delta)))


# ---- header and footer ---------------------------------------------------------------------------------


def header_blocks(*, title: str, team_name: str | None, period: DigestPeriod, noun: str) -> list[Block]:
    """The digest's name and team, its period, and how many periods were missed while the bot was down."""
    heading = f"{title} · {team_name}" if team_name else title
    blocks = [
        {"type": "header", "text": {"type": "plain_text", "text": clip(heading, MAX_HEADER), "emoji": True}},
        context(f":calendar: {escape(period.label)}"),
    ]
    if period.missed > 0:
        blocks.append(
            context(
                f":warning: {plural(period.missed, 'earlier ' + noun)} went unsent while the bot was down; "
                f"this digest covers the latest {noun} only."
            )
        )
    return blocks


def footer_blocks(subscription_id: int) -> list[Block]:
    """Manage button and the commands to change or stop the digest."""
    return [
        divider(),
        {
            "type": "actions",
            "block_id": "digest_footer",
            "elements": [
                {
                    "type": "button",
                    "action_id": MANAGE_ACTION,
                    "text": {"type": "plain_text", "text": "Manage subscription", "emoji": True},
                    "value": str(subscription_id),
                }
            ],
        },
        context("`/digest edit` · `/digest unsubscribe`"),
    ]


# ---- metrics -------------------------------------------------------------------------------------------


def metric_text(series: MetricSeries, noun: str) -> str:
    """'*Signups* — *1,234*' then the change vs the previous window and the target status."""
    name = escape(series.name)
    current = series.current
    if current is None:
        last = next((v for v in reversed(series.values) if v is not None), None)
        earlier = f" (last value {format_value(last, series.unit)})" if last is not None else ""
        return f"*{name}* — no data this {noun}{earlier}"
    lines = [
        f"*{name}* — *{format_value(current, series.unit)}*",
        change_text(
            current=current,
            previous=series.previous,
            unit=series.unit,
            direction=series.direction,
            period=noun,
        ),
        target_text(value=current, target=series.target, unit=series.unit, direction=series.direction),
    ]
    return "\n".join(lines)


def unknown_keys_text(keys: Sequence[str], shown: int = 10) -> str:
    """One line naming the keys that match no metric."""
    names = ", ".join(f"`{escape(k)}`" for k in keys[:shown])
    more = f" and {len(keys) - shown} more" if len(keys) > shown else ""
    word = "metric" if len(keys) == 1 else "metrics"
    return f":grey_question: unknown {word} {names}{more} — check `/metric list`"


def metrics_blocks(data: MetricsData, *, noun: str, chart: bool) -> list[Block]:
    """One section per metric, a line for unknown keys, and the note that the chart follows."""
    blocks = [divider(), section("*:bar_chart: Metrics*")]
    blocks += [section(clip(metric_text(s, noun))) for s in data.series]
    if not data.series and not data.unknown:
        blocks.append(context("No metrics selected."))
    if data.unknown:
        blocks.append(context(clip(unknown_keys_text(data.unknown))))
    if chart:
        count = len(data.series[0].values) if data.series else 0
        targets = any(s.target is not None and s.has_data for s in data.series)
        note = CHART_NOTE.format(n=count, noun=noun)
        blocks.append(context(note[:-1] + " (dashed lines: targets)." if targets else note))
    return blocks


def metrics_chart(series: Sequence[MetricSeries], *, timezone: str = "UTC") -> bytes | None:
    """One PNG, one panel per metric with data (its windows, the digest's own highlighted); None if none has."""
    drawn = [s for s in series if s.has_data]
    if not drawn:
        return None
    try:
        zone = ZoneInfo(timezone)
    except (KeyError, ValueError):
        zone = ZoneInfo("UTC")
    columns = 1 if len(drawn) <= 3 else 2
    rows = math.ceil(len(drawn) / columns)
    height = 0.3 + 2.1 * rows
    # Fixed margins instead of layout="constrained": the layout engine alone took half the chart's time.
    # matplotlib is imported when a chart is drawn: a web process that never draws one stays small.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    figure = Figure(figsize=(8.0, height), dpi=100)
    figure.subplots_adjust(
        left=0.09 if columns == 2 else 0.07,
        right=0.98,
        top=1 - 0.45 / height,
        bottom=0.35 / height,
        hspace=0.55,
        wspace=0.28,
    )
    FigureCanvasAgg(figure)
    for position, item in enumerate(drawn, start=1):
        ax = figure.add_subplot(rows, columns, position)
        ys = [math.nan if v is None else v for v in item.values]
        xs = list(range(len(ys)))
        ax.set_title(clip(item.name, 60 // columns), loc="left", fontsize=10, fontweight="bold")
        ax.spines[["top", "right"]].set_visible(False)
        ax.grid(axis="y", color="#dddddd", linewidth=0.8)
        ax.plot(xs, ys, color=LINE, linewidth=2, marker="o", markersize=3)
        unit = item.unit
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos, unit=unit: format_tick(v, unit)))
        ax.yaxis.set_major_locator(MaxNLocator(nbins=4))
        if item.current is not None:
            ax.scatter([xs[-1]], [item.current], s=50, color=HIGHLIGHT, zorder=3)
            ax.annotate(
                format_value(item.current, unit),
                (xs[-1], item.current),
                textcoords="offset points",
                xytext=(0, 6),
                ha="right",
                color=HIGHLIGHT,
                fontsize=8,
                fontweight="bold",
            )
        if item.target is not None:
            ax.axhline(item.target, color=TARGET, linestyle="--", linewidth=1.2)
        labels = [start.astimezone(zone).strftime("%m-%d") for start in item.window_starts]
        step = max(1, math.ceil(len(xs) / (4 if columns == 2 else 8)))
        ticks = xs[::-1][::step][::-1]
        ax.set_xticks(ticks, [labels[i] for i in ticks])
        ax.set_xlim(-0.5, len(xs) - 0.5)
        ax.tick_params(labelsize=8, colors="#444444")
    out = BytesIO()
    figure.savefig(out, format="png", dpi=100, metadata={"Software": None})
    return out.getvalue()


# ---- feedback ------------------------------------------------------------------------------------------


def quote(text: str, limit: int = QUOTE_LENGTH) -> str:
    """One line of an item's text, escaped and shortened."""
    flat = " ".join(text.split())
    return escape(clip(flat, limit))


def theme_title(theme: ThemeStat) -> str:
    """'*Pricing*', '*#billing* _(tag)_' or '*Unsorted*'."""
    if theme.kind == "tag":
        return f"*#{escape(theme.name)}* _(tag)_"
    return f"*{escape(theme.name)}*"


def theme_text(rank: int, theme: ThemeStat, noun: str) -> str:
    """The theme's numbers against the previous window, then up to two quoted examples."""
    change = f"{signed(theme.count - theme.previous_count)} vs last {noun}" if theme.previous_count else "new"
    numbers = f"{plural(theme.count, 'item')} ({change}) · {plural(theme.accounts, 'account')}"
    if theme.arr or theme.previous_arr:
        arr_delta = f" ({signed_arr(theme.arr - theme.previous_arr)})" if theme.previous_arr else ""
        numbers += f" · {format_arr(theme.arr)} ARR{arr_delta}"
    if theme.rising:
        numbers += " · :chart_with_upwards_trend: rising"
    lines = [f"{rank}. {theme_title(theme)} — {numbers}"]
    for example in theme.examples:
        who = f" — {escape(example.customer)}" if example.customer else ""
        link = f" <{example.permalink}|view>" if example.permalink else ""
        lines.append(f">“{quote(example.text)}”{who}{link}")
    return "\n".join(lines)


def feedback_blocks(data: FeedbackData, *, by: str, noun: str) -> list[Block]:
    """The top themes (by items or ARR), one section each, and how many more there were."""
    ranking = "ARR" if by == "arr" else "items"
    title = (
        f"*:bulb: Feedback* — {plural(data.items, 'item')} this {noun} "
        f"({signed(data.items - data.previous_items)} vs last {noun}) · top themes by {ranking}"
    )
    blocks = [divider(), section(title)]
    if not data.themes:
        blocks.append(context(f"No feedback this {noun}."))
        return blocks
    blocks += [section(clip(theme_text(i, t, noun))) for i, t in enumerate(data.themes, start=1)]
    if data.more:
        blocks.append(context(f"and {plural(data.more, 'more theme')}"))
    return blocks


# ---- requests ------------------------------------------------------------------------------------------


def breach_text(data: RequestsData) -> str:
    """'25% (1 of 4)' or '—' when nothing came due."""
    rate = data.breach_rate
    return "—" if rate is None else f"{rate:.0%} ({data.breached} of {data.judged})"


def overdue_line(item: sections.OverdueRequest, now: datetime) -> str:
    """'• <link|#12> “Title” — Type · overdue by 2d 3h'."""
    ref = f"<{item.link}|#{item.id}>" if item.link else f"#{item.id}"
    late = humanize(item.due_at - now)
    return f"• {ref} “{escape(clip(item.title, 150))}” — {escape(item.type_name)} · {late}"


def requests_blocks(data: RequestsData, *, noun: str, now: datetime) -> list[Block]:
    """Opened and closed in the period, open and overdue now, p50 first response, breach rate, oldest overdue."""
    if data.types:
        scope = ", ".join(escape(t) for t in data.types)
    else:
        scope = "no matching types" if data.unknown_types else "all types"
    blocks: list[Block] = [divider(), section(clip(f"*:ticket: Requests* — {scope}"))]
    p50 = humanize(data.first_response_p50) if data.first_response_p50 is not None else "—"
    fields = [
        f"*Opened this {noun}*\n{data.opened:,}",
        f"*Closed this {noun}*\n{data.closed:,}",
        f"*Open now*\n{data.open_now:,}",
        f"*Overdue now*\n{data.overdue_now:,}",
        f"*First response (p50)*\n{p50}",
        f"*Resolution SLA breached*\n{breach_text(data)}",
    ]
    blocks.append({"type": "section", "fields": [{"type": "mrkdwn", "text": f} for f in fields]})
    if data.oldest_overdue:
        lines = [f"*Oldest overdue* ({data.overdue_now:,})"] + [
            overdue_line(r, now) for r in data.oldest_overdue
        ]
        blocks.append(section(clip("\n".join(lines))))
    if data.unknown_types:
        names = ", ".join(f"`{escape(n)}`" for n in data.unknown_types[:10])
        more = f" and {len(data.unknown_types) - 10} more" if len(data.unknown_types) > 10 else ""
        blocks.append(
            context(clip(f":grey_question: unknown request type {names}{more} — check `/request types`"))
        )
    return blocks


# ---- the whole message ---------------------------------------------------------------------------------


def _clip_text_object(obj: dict[str, Any], limit: int) -> dict[str, Any]:
    return {**obj, "text": clip(str(obj.get("text", "")), limit)}


def fit_limits(blocks: list[Block], *, keep_tail: int = 3) -> list[Block]:
    """Slack's limits: ≤ 50 blocks (the last `keep_tail`, the footer, always kept), texts ≤ 3,000, ≤ 10 fields."""
    fitted: list[Block] = []
    for block in blocks:
        block = dict(block)
        if block["type"] == "header":
            block["text"] = _clip_text_object(block["text"], MAX_HEADER)
        if "text" in block and block["type"] == "section":
            block["text"] = _clip_text_object(block["text"], MAX_TEXT)
        if "fields" in block:
            fields = [_clip_text_object(f, MAX_FIELD_TEXT) for f in block["fields"]]
            if len(fields) > MAX_FIELDS:
                hidden = len(fields) - (MAX_FIELDS - 1)
                fields = fields[: MAX_FIELDS - 1] + [{"type": "mrkdwn", "text": f"and {hidden} more"}]
            block["fields"] = fields
        if block["type"] == "context":
            elements = [_clip_text_object(e, MAX_TEXT) for e in block["elements"]]
            if len(elements) > MAX_CONTEXT_ELEMENTS:
                hidden = len(elements) - (MAX_CONTEXT_ELEMENTS - 1)
                elements = elements[: MAX_CONTEXT_ELEMENTS - 1] + [
                    {"type": "mrkdwn", "text": f"and {hidden} more"}
                ]
            block["elements"] = elements
        fitted.append(block)
    if len(fitted) <= MAX_BLOCKS:
        return fitted
    tail = fitted[-keep_tail:] if keep_tail else []
    room = MAX_BLOCKS - len(tail) - 1
    hidden = len(fitted) - len(tail) - room
    return [*fitted[:room], context(f"and {hidden} more (Slack shows at most {MAX_BLOCKS} blocks)"), *tail]


def digest_text(
    *,
    title: str,
    period: DigestPeriod,
    metrics: MetricsData | None,
    feedback: FeedbackData | None,
    requests: RequestsData | None,
) -> str:
    """The plain-text fallback: what the notification and screen readers get."""
    parts = []
    if metrics is not None:
        with_data = sum(1 for s in metrics.series if s.current is not None)
        parts.append(f"{with_data} of {plural(len(metrics.series), 'metric')} with data")
    if feedback is not None:
        top = f" (top: {feedback.themes[0].name})" if feedback.themes else ""
        parts.append(f"{plural(feedback.items, 'feedback item')}{top}")
    if requests is not None:
        parts.append(
            f"{requests.opened:,} requests opened, {requests.closed:,} closed, {requests.overdue_now:,} overdue"
        )
    summary = "; ".join(parts) if parts else "no sections"
    return clip(f"{title} — {period.label}: {summary}", MAX_TEXT)


def is_empty(
    metrics: MetricsData | None, feedback: FeedbackData | None, requests: RequestsData | None
) -> bool:
    """Nothing happened in the period in any shown section (snapshots such as "open now" do not count)."""
    if metrics is not None and any(s.current is not None for s in metrics.series):
        return False
    if feedback is not None and feedback.items:
        return False
    return not (requests is not None and (requests.opened or requests.closed))


def build_digest(
    *,
    db_session: Session,
    subscription: DigestSubscription,
    period: DigestPeriod,
    team_name: str | None = None,
    now: datetime,
) -> RenderedDigest:
    """The digest of one subscription for one period: blocks, fallback text, chart PNG, and emptiness."""
    chosen = DigestSections.load(subscription.sections)
    team_id = subscription.team_id
    noun = period_noun(subscription.cadence)
    metrics = feedback = requests = None
    if chosen.metrics is not None:
        metrics = sections.gather_metrics(
            db_session=db_session, team_id=team_id, keys=chosen.metrics.keys, period=period
        )
    if chosen.feedback is not None:
        feedback = sections.gather_feedback(
            db_session=db_session,
            team_id=team_id,
            channel_id=subscription.channel_id,
            period=period,
            by=chosen.feedback.by,
            top=chosen.feedback.top,
        )
    if chosen.requests is not None:
        requests = sections.gather_requests(
            db_session=db_session, team_id=team_id, type_names=chosen.requests.types, period=period, now=now
        )
    chart = metrics_chart(metrics.series, timezone=subscription.timezone) if metrics is not None else None
    blocks = header_blocks(title=subscription.name, team_name=team_name, period=period, noun=noun)
    if metrics is not None:
        blocks += metrics_blocks(metrics, noun=noun, chart=chart is not None)
    if feedback is not None:
        blocks += feedback_blocks(feedback, by=chosen.feedback.by if chosen.feedback else "count", noun=noun)
    if requests is not None:
        blocks += requests_blocks(requests, noun=noun, now=now)
    if metrics is None and feedback is None and requests is None:
        blocks.append(section("This digest has no sections yet — `/digest edit` adds some."))
    blocks += footer_blocks(subscription.id)
    return RenderedDigest(
        text=digest_text(
            title=subscription.name, period=period, metrics=metrics, feedback=feedback, requests=requests
        ),
        blocks=fit_limits(blocks),
        chart_png=chart,
        is_empty=is_empty(metrics, feedback, requests),
    )
