"""`prodops forget|purge …` (placeholder until it lands)."""

from __future__ import annotations

import argparse
from typing import Any


def register_security_parser(sub: argparse._SubParsersAction[Any]) -> None:
    """Adds the data-rights subcommands to the `prodops` parser."""
