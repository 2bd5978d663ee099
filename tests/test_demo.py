"""`make demo` (= `prodops demo`): the real server on SQLite and the bundled emulator, end to end.

Kept working at all times: this runs the whole scenario — every capture mode, themes proposed by the
worker's job and accepted through `/feedback themes`, a duplicate check, `/feedback trends`, and the digest
delivered exactly once — and checks what a person would see.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest

from bot.demo import run_demo


def test_the_demo_runs_every_scenario_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The light similarity backend, in this process and the demo's server (the model load is not what this
    # checks); demo-output/ is written to the test's own folder.
    monkeypatch.setenv("PRODOPS_SIMILARITY_BACKEND", "tfidf")
    monkeypatch.chdir(tmp_path)
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))

    code = run_demo()  # output is not a terminal here: as when piped to a file

    printed = capsys.readouterr().out
    shown = "\n".join(line for line in printed.splitlines() if not line.startswith("{"))
    assert code == 0, shown
    assert "Demo finished: 4 feedback items, one per capture mode" in shown
    assert "Theme job: 3 proposal(s)" in shown and "3 proposed" in shown
    assert "Dana clicks Accept on 3 proposal(s): 3 active theme(s) — “" in shown
    assert "Carol's new item joined the theme “" in shown
    assert "Feedback trends" in shown and "rising" in shown
    assert "Rising = at least 3 items this week and more than the week before" in shown
    assert "same feedback as" in shown or "Looks like a duplicate" in shown  # the duplicate check answered
    assert "Carol types /request Pull churn numbers by segment for the QBR → HTTP 200" in shown
    assert "Digest: #product-ops, weekly, Mon 09:00 Europe/London · clock set to " in shown  # not cut at 80
    assert "first queued 1 and delivered 1; the repeat queued 0" in shown
    assert list(temp.iterdir()) == []  # the run's server log and database went with it
    exported = [json.loads(line) for line in printed.splitlines() if line.startswith("{")]
    assert sorted(row["source"] for row in exported) == ["channel", "command", "reaction", "shortcut"]
    digest = json.loads((tmp_path / "demo-output" / "digest-blocks.json").read_text())
    assert any("rising" in json.dumps(block, ensure_ascii=False) for block in digest["blocks"])
