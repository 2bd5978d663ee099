"""Metric charts are small PNGs of a fixed size for any unit, series or emptiness; values format by unit."""

from __future__ import annotations

import struct
import threading
from datetime import UTC, datetime, timedelta

import pytest

from bot.metrics.chart import HEIGHT, WIDTH, render_chart
from bot.metrics.messaging import format_tick, format_value, parse_value, sparkline
from bot.metrics.points import PeriodValue, Point

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _size(png: bytes) -> tuple[int, int]:
    """Width and height from the IHDR chunk."""
    assert png[:8] == PNG_SIGNATURE
    assert png[12:16] == b"IHDR"
    width, height = struct.unpack(">II", png[16:24])
    return width, height


def _weeks(values: list[float]) -> list[PeriodValue]:
    start = datetime(2026, 9, 7, tzinfo=UTC)
    return [PeriodValue((start + timedelta(weeks=i)).date().isoformat(), v, 1) for i, v in enumerate(values)]


@pytest.mark.parametrize("unit", ["count", "percent", "currency", "duration", "ratio"])
def test_period_chart_is_a_png_of_the_fixed_size(unit: str) -> None:
    png = render_chart(title="Signups", values=_weeks([120, 135, 128, 150, 171, 160]), unit=unit, target=150)
    assert _size(png) == (WIDTH, HEIGHT)
    assert len(png) > 2000


def test_points_empty_single_and_long_series_render() -> None:
    t = datetime(2026, 11, 2, tzinfo=UTC)
    points = [Point(t + timedelta(days=i), float(i % 7) * 3.5) for i in range(90)]
    for values in ([], points[:1], points):
        png = render_chart(title="Daily", values=values, unit="duration", highlight=0)
        assert _size(png) == (WIDTH, HEIGHT)
    assert _size(
        render_chart(title="Flat", values=_weeks([5, 5, 5]), unit="ratio", width=400, height=200)
    ) == (
        400,
        200,
    )


def test_charts_render_in_parallel_threads() -> None:
    sizes: list[tuple[int, int]] = []

    def draw() -> None:
        sizes.append(
            _size(render_chart(title="NPS", values=_weeks([30, 32, 41, 38]), unit="count", target=40))
        )

    threads = [threading.Thread(target=draw) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sizes == [(WIDTH, HEIGHT)] * 6


@pytest.mark.parametrize(
    ("value", "unit", "shown", "tick"),
    [
        (1234, "count", "1,234", "1,234"),
        (12_345_678, "count", "12,345,678", "12.3M"),
        (12.5, "percent", "12.5%", "12.5%"),
        (40.0, "percent", "40%", "40%"),
        (1_200_000, "currency", "$1.2M", "$1.2M"),
        (1234, "currency", "$1,234", "$1,234"),
        (12.5, "currency", "$12.50", "$12.5"),
        (-2500, "currency", "-$2,500", "-$2,500"),
        (12_000, "duration", "3h 20m", "3.3h"),
        (2700, "duration", "45m", "45m"),
        (30, "duration", "30s", "30s"),
        (90_000, "duration", "1d 1h", "25h"),
        (0.4217, "ratio", "0.42", "0.42"),
    ],
)
def test_format_value_by_unit(value: float, unit: str, shown: str, tick: str) -> None:
    assert format_value(value, unit) == shown
    assert format_tick(value, unit) == tick


@pytest.mark.parametrize(
    ("text", "unit", "value"),
    [
        ("1,234", "count", 1234.0),
        ("1.5k", "count", 1500.0),
        ("12.5%", "percent", 12.5),
        ("$1.2M", "currency", 1_200_000.0),
        ("3h 20m", "duration", 12_000.0),
        ("90", "duration", 90.0),
        ("0.42", "ratio", 0.42),
        ("abc", "count", None),
        ("3h tea", "duration", None),
        ("nan", "count", None),
    ],
)
def test_parse_value_by_unit(text: str, unit: str, value: float | None) -> None:
    assert parse_value(text, unit) == value


def test_sparkline_scales_between_min_and_max() -> None:
    assert sparkline([1, 2, 3, 4, 5, 8]) == "▁▂▃▄▅█"
    assert sparkline([3, 3]) == "▅▅"
    assert sparkline([]) == ""
