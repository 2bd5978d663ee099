"""The web process stays small: building the web app imports no scikit-learn, SciPy, matplotlib or torch
(those load in workers, or when a person asks for a chart)."""

from __future__ import annotations

import subprocess
import sys


def test_the_web_app_imports_no_heavy_libraries() -> None:
    code = (
        "import sys; import bot.slack_app, bot.web, bot.server; "
        "print(','.join(m for m in ('sklearn', 'scipy', 'matplotlib', 'torch', 'sentence_transformers') "
        "if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""
