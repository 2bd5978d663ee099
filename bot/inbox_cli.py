"""`prodops inbox list|retry|drop`: look at the work queue and act on dead or stuck deliveries."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from bot.cli_support import migrate, team_arg
from bot.settings import load_settings
from storage.models import InboxStatus

if TYPE_CHECKING:
    from bot.inbox_admin import ChangeResult
    from storage.models import InboxEvent

LIST_LIMIT_MAX = 1000
ERROR_WIDTH = 60


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds `inbox list [--status S] [--team T] [--limit N]`, `inbox retry ID…|--dead`, `inbox drop ID…|--dead`."""
    inbox = sub.add_parser("inbox", help="the work queue: list deliveries, retry or drop dead ones")
    what = inbox.add_subparsers(dest="inbox_action", required=True, metavar="ACTION")

    listing = what.add_parser("list", help="deliveries from Slack, newest first")
    listing.add_argument("--status", choices=[s.value for s in InboxStatus], help="only this status")
    listing.add_argument("--team", type=_team, help="only this workspace (team id)")
    listing.add_argument(
        "--limit", type=_limit, default=50, help=f"at most N rows (default 50, max {LIST_LIMIT_MAX})"
    )
    listing.set_defaults(run=cmd_inbox_list)

    retry = what.add_parser(
        "retry",
        help="queue dead or failed deliveries again, with their attempts reset",
        description="Puts dead (or failed) deliveries back in the queue, available at once, with every "
        "attempt again. Others (done, queued, in progress, dropped) are left alone and listed.",
    )
    _targets(retry)
    retry.set_defaults(run=cmd_inbox_retry)

    drop = what.add_parser(
        "drop",
        help="give up on deliveries for good (kept as ignored, so Slack's retries stay deduplicated)",
        description="Marks queued, failed or dead deliveries as ignored with 'dropped by operator'. The row "
        "stays, so a retry from Slack with the same id is still recognised and skipped.",
    )
    _targets(drop)
    drop.set_defaults(run=cmd_inbox_drop)


def _targets(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "ids", nargs="*", type=_inbox_id, metavar="ID", help="inbox ids (see `prodops inbox list`)"
    )
    parser.add_argument("--dead", action="store_true", help="every dead delivery (of --team, when given)")
    parser.add_argument("--team", type=_team, help="only this workspace (team id)")


def _team(value: str) -> str:
    from bot.settings import ConfigError

    try:
        return team_arg(value)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _limit(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= LIST_LIMIT_MAX:
        raise argparse.ArgumentTypeError(f"--limit takes a number from 1 to {LIST_LIMIT_MAX}, not {value!r}")
    return int(value)


def _inbox_id(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not an inbox id (a number from the first column of `prodops inbox list`)"
        )
    return int(value)


def cmd_inbox_list(args: argparse.Namespace) -> None:
    """A table of deliveries: id, team, kind, status, attempts, received, last error, claimed by."""
    from bot.inbox_admin import list_deliveries
    from storage.db import Database
    from storage.types import utcnow

    settings = load_settings()
    migrate(settings)
    db = Database(settings.database_url)
    try:
        with db.inbox.read() as s:
            rows = list_deliveries(db_session=s, status=args.status, team_id=args.team, limit=args.limit)
    finally:
        db.dispose()
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    if not rows:
        err.print(f"No {args.status + ' ' if args.status else ''}deliveries{_where(args.team)}.")
        return
    # Piped output gets a wide table (rich would wrap it to 80 columns); a terminal gets its own width.
    width = None if sys.stdout.isatty() else 240
    Console(highlight=False, width=width).print(delivery_table(rows, now=utcnow()))
    err.print(f"{len(rows)} deliver{'y' if len(rows) == 1 else 'ies'} shown, newest first.")


def delivery_table(rows: list[InboxEvent], *, now: datetime) -> Table:
    """The rich table `prodops inbox list` prints."""
    from bot.metrics.messaging import format_duration

    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("id", "team", "kind", "status", "attempts", "received", "last error", "claimed by"):
        table.add_column(column, justify="right" if column in ("id", "attempts") else "left")
    for row in rows:
        age = format_duration(max(0.0, (now - row.received_at).total_seconds()))
        error = " ".join((row.last_error or "").split())
        table.add_row(
            str(row.id),
            row.team_id,
            row.kind,
            row.status,
            str(row.attempts),
            f"{row.received_at:%Y-%m-%d %H:%M:%S}Z ({age} ago)",
            error if len(error) <= ERROR_WIDTH else error[: ERROR_WIDTH - 1] + "…",
            row.claimed_by or "",
        )
    return table


def cmd_inbox_retry(args: argparse.Namespace) -> None:
    """Dead/failed → queued, available now, attempts reset; says how many."""
    from bot.inbox_admin import retry_deliveries

    result = _apply(args, retry_deliveries)
    _report(result, verb="queued again", args=args)


def cmd_inbox_drop(args: argparse.Namespace) -> None:
    """Queued/failed/dead → ignored ("dropped by operator"); says how many."""
    from bot.inbox_admin import drop_deliveries

    result = _apply(args, drop_deliveries)
    _report(result, verb="dropped", args=args)


def _apply(args: argparse.Namespace, change: Callable[..., ChangeResult]) -> ChangeResult:
    """Runs a retry/drop in one transaction; unknown ids exit 2 with nothing changed."""
    from bot.inbox_admin import UnknownDeliveries
    from storage.db import Database

    err = Console(stderr=True, highlight=False, soft_wrap=True)
    if bool(args.ids) == bool(args.dead):
        err.print(
            f"Give inbox ids or --dead (not both): `prodops inbox {args.inbox_action} 12 13` or "
            f"`prodops inbox {args.inbox_action} --dead`.",
            markup=False,
        )
        raise SystemExit(2)
    settings = load_settings()
    migrate(settings)
    db = Database(settings.database_url)
    try:
        with db.inbox.session() as s:
            return change(db_session=s, inbox_ids=args.ids, dead=args.dead, team_id=args.team)
    except UnknownDeliveries as exc:
        err.print(
            f"ProdOps: {exc}; nothing was changed. `prodops inbox list{_team_flag(args.team)}` shows the ids.",
            markup=False,
        )
        raise SystemExit(2) from None
    finally:
        db.dispose()


def _report(result: ChangeResult, *, verb: str, args: argparse.Namespace) -> None:
    count = len(result.changed)
    what = "delivery" if count == 1 else "deliveries"
    scope = " dead" if args.dead else ""
    ids = (
        f": {', '.join(str(i) for i in result.changed)}"
        if result.changed and len(result.changed) <= 20
        else ""
    )
    print(f"{count}{scope} {what}{_where(args.team)} {verb}{ids}.")
    if result.skipped:
        left = ", ".join(f"{i} ({status})" for i, status in result.skipped.items())
        Console(stderr=True, highlight=False, soft_wrap=True).print(
            f"Left alone (not {_allowed(args)}): {left}", markup=False
        )


def _allowed(args: argparse.Namespace) -> str:
    return "dead or failed" if args.inbox_action == "retry" else "queued, failed or dead"


def _where(team: str | None) -> str:
    return f" in {team}" if team else ""


def _team_flag(team: str | None) -> str:
    return f" --team {team}" if team else ""
