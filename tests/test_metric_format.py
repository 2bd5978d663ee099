"""Values read the way people say them: $51K, not $5.1K."""

from __future__ import annotations

import pytest

from bot.metrics.messaging import format_value


@pytest.mark.parametrize(
    ("value", "unit", "shown"),
    [
        (51_000, "currency", "$51K"),
        (9_999, "currency", "$9,999"),
        (250_000, "currency", "$250K"),
        (1_250_000, "currency", "$1.25M"),
        (12.5, "percent", "12.5%"),
        (1_234, "count", "1,234"),
    ],
)
def test_format_value(value: float, unit: str, shown: str) -> None:
    assert format_value(value, unit) == shown
