"""`prodops themes …` (placeholder until it lands)."""

from __future__ import annotations

import argparse
from typing import Any


def register_insights_parser(sub: argparse._SubParsersAction[Any]) -> None:
    """Adds the insight subcommands to the `prodops` parser."""
