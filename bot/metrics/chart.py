"""Metric charts as small PNGs, drawn on a bare matplotlib Figure (Agg; no pyplot, so thread-safe)."""

from __future__ import annotations

from collections.abc import Sequence
from io import BytesIO

from bot.metrics.messaging import format_tick, format_value
from bot.metrics.points import PeriodValue, Point

WIDTH, HEIGHT, DPI = 800, 360, 100
LINE = "#1264a3"
HIGHLIGHT = "#e01e5a"
TARGET = "#2eb67d"
MAX_LABELS = 8


def _series(values: Sequence[PeriodValue] | Sequence[Point]) -> tuple[list[str], list[float]]:
    """X labels and y values from period values (their start) or points (their UTC date)."""
    labels: list[str] = []
    ys: list[float] = []
    for item in values:
        if isinstance(item, PeriodValue):
            labels.append(item.period_start[5:] if len(values) > 1 else item.period_start)
        else:
            labels.append(item.ts.strftime("%m-%d"))
        ys.append(float(item.value))
    return labels, ys


def render_chart(
    *,
    title: str,
    values: Sequence[PeriodValue] | Sequence[Point],
    unit: str,
    target: float | None = None,
    highlight: int | None = None,
    width: int = WIDTH,
    height: int = HEIGHT,
) -> bytes:
    """A line chart PNG: dashed target line, the highlighted point (the last one by default) labelled."""
    labels, ys = _series(values)
    # matplotlib is imported when a chart is drawn: a web process that never draws one stays small.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    figure = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    ax.set_title(title, loc="left", fontsize=12, fontweight="bold")
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis="y", color="#dddddd", linewidth=0.8)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: format_tick(v, unit)))
    ax.yaxis.set_major_locator(MaxNLocator(nbins=5))
    if not ys:
        ax.text(0.5, 0.5, "No data yet", ha="center", va="center", transform=ax.transAxes, color="#888888")
        ax.set_xticks([])
        ax.set_yticks([])
    else:
        xs = list(range(len(ys)))
        ax.plot(xs, ys, color=LINE, linewidth=2, marker="o", markersize=4)
        index = (len(ys) - 1) if highlight is None else highlight % len(ys)
        ax.scatter([index], [ys[index]], s=90, color=HIGHLIGHT, zorder=3)
        ax.annotate(
            format_value(ys[index], unit),
            (index, ys[index]),
            textcoords="offset points",
            xytext=(0, 9),
            ha="center",
            color=HIGHLIGHT,
            fontweight="bold",
        )
        if target is not None:
            ax.axhline(target, color=TARGET, linestyle="--", linewidth=1.5)
            ax.annotate(
                f"target {format_value(target, unit)}",
                (0, target),
                textcoords="offset points",
                xytext=(2, 4),
                color=TARGET,
                fontsize=9,
            )
        step = max(1, -(-len(xs) // MAX_LABELS))
        ticks = xs[::-1][::step][::-1]  # always label the last point
        ax.set_xticks(ticks, [labels[i] for i in ticks])
        ax.set_xlim(-0.5, len(xs) - 0.5)
        low, high = (
            min(ys + ([target] if target is not None else [])),
            max(ys + ([target] if target is not None else [])),
        )
        pad = (high - low) * 0.15 or abs(high) * 0.1 or 1.0
        ax.set_ylim(low - pad, high + pad * 1.5)
    ax.tick_params(labelsize=9, colors="#444444")
    figure.subplots_adjust(left=0.1, right=0.98, top=0.88, bottom=0.12)
    out = BytesIO()
    figure.savefig(out, format="png", dpi=DPI, metadata={"Software": None})
    return out.getvalue()
