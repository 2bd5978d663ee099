"""Cron expressions as people write them (standard crontab), turned into APScheduler triggers.

Standard cron numbers weekdays 0/7 = Sunday, 1 = Monday; APScheduler 3's `from_crontab` reads 0 = Monday,
so `0 9 * * 1` would fire on Tuesdays. Numeric weekdays are spelt as names first; names mean the same to both.
"""

from __future__ import annotations

import re
from typing import Any

from apscheduler.triggers.cron import CronTrigger

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_CRON_DOW = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


class CronError(ValueError):
    """An expression that is not a five-field crontab."""


def _expand_dow(item: str) -> list[str]:
    """One numeric day-of-week item (`1`, `1-5`, `*/2`, `0-6/2`) in standard numbering → weekday names."""
    body, _, step_text = item.partition("/")
    try:
        step = int(step_text) if step_text else 1
        if body == "*":
            low, high = 0, 6
        elif "-" in body:
            low_text, high_text = body.split("-", 1)
            low, high = int(low_text), int(high_text)
        else:
            low = high = int(body)
            if step_text:
                high = 6
    except ValueError:
        raise CronError(f"`{item}` is not a day of the week") from None
    if not (0 <= low <= 7 and 0 <= high <= 7 and low <= high and step >= 1):
        raise CronError(f"`{item}` is not a day of the week (0–7; 0 and 7 are Sunday)")
    return [_CRON_DOW[n % 7] for n in range(low, high + 1, step)]


def standard_crontab(expr: str) -> str:
    """The expression with numeric weekdays spelt as names, so it means what standard cron means."""
    fields = expr.split()
    if len(fields) != 5:
        raise CronError(f"`{expr.strip()}` has {len(fields)} fields, not 5")
    dow = fields[4].lower()
    if dow != "*" and not re.search(r"[a-z]", dow):
        names: list[str] = []
        for item in dow.split(","):
            names += [n for n in _expand_dow(item) if n not in names]
        names.sort(key=WEEKDAYS.index)
        fields[4] = "*" if len(names) == 7 else ",".join(names)
    return " ".join(fields)


def cron_trigger(expr: str, timezone: Any) -> CronTrigger:
    """An APScheduler trigger for a standard crontab expression in a timezone (DST-correct)."""
    return CronTrigger.from_crontab(standard_crontab(expr), timezone=timezone)
