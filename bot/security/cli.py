"""`prodops forget --team T --user U` and `prodops purge --team T`: data rights from the command line.

Exit codes: 0 done (or nothing left to do), 1 not confirmed (nothing changed), 2 bad input or a
workspace that is unknown or still installed.
"""

from __future__ import annotations

import argparse
import getpass
from typing import Any, NoReturn

from rich.console import Console
from rich.prompt import Confirm
from rich.table import Table

from bot.cli_support import migrate, team_arg
from bot.settings import load_settings

FORGET_HELP = """\
Removes what a person wrote in one workspace (feedback texts, replies, requests, notes, Slack payloads
and digests quoting them) and replaces their Slack id everywhere else with a stable pseudonym. A record
that it was done is kept, with a hash of the id, never the id. Running it again changes nothing more.
Exit codes: 0 done, 1 not confirmed (nothing changed), 2 bad input or unknown workspace."""

PURGE_HELP = """\
Deletes every row of a workspace in every table (feedback, requests, metrics, digests, settings, its
Slack installation), keeping only a record of how many rows were deleted. The worker does this on its
own once an uninstalled workspace's grace period has passed; this does it now. A workspace that is
still installed is refused unless --force is given.
Exit codes: 0 done (or nothing left), 1 not confirmed (nothing changed), 2 bad input, unknown workspace,
or still installed without --force."""


def register_security_parser(sub: argparse._SubParsersAction[Any]) -> None:
    """Adds `forget --team T --user U [--yes]` and `purge --team T [--yes] [--force]`."""
    forget = sub.add_parser(
        "forget",
        help="remove what one person wrote and pseudonymise their id in a workspace",
        description=FORGET_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    forget.add_argument("--team", required=True, help="the Slack team id, e.g. T0123ABCD")
    forget.add_argument("--user", required=True, help="the person's Slack user id, e.g. U0123ABCD")
    forget.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    forget.set_defaults(run=cmd_forget)
    purge = sub.add_parser(
        "purge",
        help="delete all of a workspace's data now",
        description=PURGE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    purge.add_argument("--team", required=True, help="the Slack team id, e.g. T0123ABCD")
    purge.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    purge.add_argument("--force", action="store_true", help="purge even though the app is still installed")
    purge.set_defaults(run=cmd_purge)


def cmd_forget(args: argparse.Namespace) -> None:
    """Forget one person in one workspace, after confirmation."""
    from bot.security.forget import forget
    from bot.security.records import USER_ID, team_row_counts, when
    from storage.db import Database

    console = Console(stderr=True, highlight=False)
    team_id = team_arg(args.team)
    user_id = args.user.strip()
    if not USER_ID.match(user_id):
        _fail(
            console,
            f"{args.user!r} is not a Slack user id. Give it like --user U0123ABCD (profile → ⋮ → Copy member ID).",
        )
    settings = load_settings()
    migrate(settings)
    db = Database(settings.database_url)
    try:
        if not team_row_counts(db, team_id):
            _unknown_team(console, db, team_id)
        if not args.yes and not _confirm(
            console,
            f"Forget {user_id} in {team_id}? What they wrote is removed for good and their id is replaced "
            "by a pseudonym.",
        ):
            console.print("Nothing was changed.")
            raise SystemExit(1)
        result = forget(db, team_id, user_id, requested_by=_operator())
    finally:
        db.dispose()
    out = Console(highlight=False)
    if not result.total:
        since = f" on {when(result.previously_done_at)}" if result.previously_done_at else ""
        out.print(f"Nothing left to forget: {user_id} has no data in {team_id} (already forgotten{since}).")
        if result.recorded:
            out.print(f"Recorded the request (subject {result.subject[:12]}…).")
        return
    table = Table(title=f"Forgot {user_id} in {team_id} (now {result.pseudonym})")
    table.add_column("table")
    table.add_column("rows changed", justify="right")
    table.add_column("rows deleted", justify="right")
    for name in sorted(set(result.changed) | set(result.deleted)):
        table.add_row(name, f"{result.changed.get(name, 0):,}", f"{result.deleted.get(name, 0):,}")
    out.print(table)
    out.print(f"[green]Done.[/] Recorded as data-rights record for subject {result.subject[:12]}….")


def cmd_purge(args: argparse.Namespace) -> None:
    """Delete every row of one workspace, after confirmation."""
    from bot.security.purge import purge_team
    from bot.security.records import team_row_counts
    from storage.db import Database
    from storage.models import Workspace

    console = Console(stderr=True, highlight=False)
    team_id = team_arg(args.team)
    settings = load_settings()
    migrate(settings)
    db = Database(settings.database_url)
    try:
        counts = team_row_counts(db, team_id)
        if not counts:
            _unknown_team(console, db, team_id, purged_is_fine=True)
            return
        with db.read() as s:
            workspace = s.get(Workspace, team_id)
            installed = workspace is not None and workspace.uninstalled_at is None
        if installed and not args.force:
            _fail(
                console,
                f"{team_id} is still installed. Uninstall the app from that workspace first (its data is then "
                "purged after the grace period, or at once with this command), or add --force to delete its "
                "data while it stays installed.",
            )
        out = Console(highlight=False)
        out.print(_counts_table(f"{team_id} has", counts, "rows"))
        if not args.yes and not _confirm(
            console, f"Delete all {sum(counts.values()):,} rows of {team_id}? This cannot be undone."
        ):
            console.print("Nothing was changed.")
            raise SystemExit(1)
        result = purge_team(db, team_id, requested_by=_operator())
    finally:
        db.dispose()
    out.print(_counts_table(f"Purged {team_id}", result.counts, "rows deleted"))
    out.print(f"[green]Done.[/] {result.total:,} rows deleted; a record of the counts is kept.")


def _counts_table(title: str, counts: dict[str, int], label: str) -> Table:
    table = Table(title=title)
    table.add_column("table")
    table.add_column(label, justify="right")
    for name, count in sorted(counts.items()):
        table.add_row(name, f"{count:,}")
    return table


def _unknown_team(console: Console, db: Any, team_id: str, *, purged_is_fine: bool = False) -> None:
    """Exits: 0 when the workspace was purged already (and that is fine), else 2 naming the known ones."""
    from bot.security.records import known_teams, last_record, when

    with db.read() as s:
        purged = last_record(db_session=s, team_id=team_id, action="purge")
    if purged is not None and purged_is_fine:
        Console(highlight=False).print(f"Nothing to purge: {team_id} was purged on {when(purged.done_at)}.")
        return
    teams = known_teams(db)
    listed = (
        f"Workspaces in this database: {', '.join(teams)}." if teams else "This database has no workspace."
    )
    _fail(console, f"No workspace {team_id} here. {listed} Check --team (the Slack team id, like T0123ABCD).")


def _confirm(console: Console, question: str) -> bool:
    try:
        return Confirm.ask(question, console=console, default=False)
    except EOFError:
        return False


def _operator() -> str:
    """Who ran the command, for the record."""
    try:
        return f"cli:{getpass.getuser()}"[:64]
    except (KeyError, OSError):
        return "cli"


def _fail(console: Console, message: str) -> NoReturn:
    console.print(message, style="red", markup=False)
    raise SystemExit(2)
