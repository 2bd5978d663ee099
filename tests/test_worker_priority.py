"""Workers yield the CPU to web processes: `prodops worker` lowers its own priority (PRODOPS_WORKER_NICE)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROBE = (
    "import os; from bot.settings import Settings; from bot.worker import _lower_priority; "
    "before = os.nice(0); _lower_priority(Settings()); print(before, os.nice(0))"
)


def _niceness_after(value: str | None) -> tuple[int, int]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SLACK_BOT_TOKEN": "xoxb-test", "SLACK_SIGNING_SECRET": "s"}
    env.pop("PRODOPS_WORKER_NICE", None)
    if value is not None:
        env["PRODOPS_WORKER_NICE"] = value
    done = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    before, after = (int(n) for n in done.stdout.split())
    return before, after


def test_a_worker_runs_at_niceness_10_by_default_and_as_configured() -> None:
    before, after = _niceness_after(None)
    assert after == max(before, 10)
    before, after = _niceness_after("15")
    assert after == max(before, 15)
    before, after = _niceness_after("0")
    assert after == before  # 0: the same priority as web processes


def test_a_niceness_out_of_range_is_refused_with_the_variable_named() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PRODOPS_WORKER_NICE": "25"}
    done = subprocess.run(
        [sys.executable, "-m", "bot.cli", "worker"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "PRODOPS_WORKER_NICE" in done.stderr and "Traceback" not in done.stderr


if not hasattr(os, "nice"):  # pragma: no cover - Windows
    pytestmark = pytest.mark.skip(reason="os.nice is POSIX only")
