"""`prodops import accounts FILE.csv [--team T] [--dry-run]`: argparse wiring, settings, progress, printing."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bot.cli_support import (
    can_look_up,
    migrate,
    only_workspace,
    slack_client,
    slack_problem,
    team_arg,
    workspace_client,
)
from bot.cli_support import token_team as token_of
from bot.settings import ConfigError, load_settings

if TYPE_CHECKING:
    from slack_sdk import WebClient

    from bot.accounts.importer import AccountRow, LineError
    from storage.db import Database

SCOPES = "a bot token with users:read and users:read.email"

COLUMNS_HELP = """\
The file is CSV (UTF-8) with a header row; columns, in any order and any case:
  name     required; matched case- and space-insensitively
  domain   e.g. acme.com (https://www.Acme.com/ is the same); matched before the name
  arr      annual revenue: 120000, 120,000, $120,000.50, 120k, 1.2M
  segment  free text, up to 64 characters
  owner    a Slack user id (U0123ABC) or an email looked up in Slack (needs SLACK_BOT_TOKEN)
Existing accounts (same domain, else same name) are updated; empty cells keep their values.
Every line is checked first: if any is bad, each problem is listed and nothing is imported.
Exit codes: 0 imported (or valid, with --dry-run), 1 the file has errors, 2 configuration problem."""


def register_import_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds `import accounts FILE.csv [--team T] [--dry-run]` to the `prodops` subcommands."""
    imp = sub.add_parser("import", help="load data from a file (accounts)")
    what = imp.add_subparsers(dest="import_what", required=True, metavar="WHAT")
    accounts = what.add_parser(
        "accounts",
        help="create or update customer accounts from a CSV file",
        description=COLUMNS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    accounts.add_argument("file", type=Path, metavar="FILE.csv", help="the CSV file to import")
    accounts.add_argument(
        "--team",
        help="the Slack team id to import into (default: the bot token's workspace, or the only one)",
    )
    accounts.add_argument("--dry-run", action="store_true", help="check the file and report; write nothing")
    accounts.set_defaults(run=cmd_import_accounts)


def cmd_import_accounts(args: argparse.Namespace) -> None:
    """Validate the whole file, resolve owners, then upsert in one transaction; exit 1 listing bad lines."""
    from bot.accounts.importer import (
        AccountImportError,
        import_accounts,
        owner_emails,
        parse_accounts_csv,
    )
    from storage.db import Database

    settings = load_settings()
    path: Path = args.file
    console = Console(stderr=True, highlight=False, soft_wrap=True)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"ProdOps cannot read {path}: {exc.strerror or exc}.") from None

    with _progress(console) as step:
        rows, errors = parse_accounts_csv(data, progress=step("Validating", max(data.count(b"\n") - 1, 1)))
        emails = owner_emails(rows)
        if emails and not can_look_up(settings):
            example = next(r for r in rows if r.owner_email)
            raise ConfigError(
                f"ProdOps configuration error: {path} gives {len(emails)} owner(s) by email "
                f'(e.g. "{example.owner}" on line {example.line}), and looking them up in Slack needs '
                "SLACK_BOT_TOKEN (a bot token with the users:read.email scope) or a multi-workspace install. "
                "Set SLACK_BOT_TOKEN, or give owners as Slack user ids (U0123ABC). See README.md#configuration."
            )
        migrate(settings)
        db = Database(settings.database_url)
        try:
            client = slack_client(settings) if settings.slack_bot_token else None
            team_id = _team(args.team, client=client, db=db, check=bool(emails))
            if emails:
                lookups = client or workspace_client(settings, db, team_id)
                errors += _resolve(rows, lookups, step("Resolving owners", len(emails)))
                errors.sort(key=lambda e: e.line)
            if errors:
                result = None
            else:
                try:
                    with db.session() as session:
                        result = import_accounts(
                            db_session=session,
                            team_id=team_id,
                            rows=rows,
                            dry_run=args.dry_run,
                            progress=step("Checking" if args.dry_run else "Writing", len(rows) or 1),
                        )
                except AccountImportError as exc:
                    result, errors = None, exc.errors
        finally:
            db.dispose()

    if result is None:
        _report(console, path, errors)
        raise SystemExit(1)
    counts = f"{result.created} created, {result.updated} updated, {result.unchanged} unchanged"
    if args.dry_run:
        print(f"Dry run: {path} is valid ({result.total} account(s) for {team_id}): would be {counts}.")
    else:
        print(f"Imported {result.total} account(s) from {path} into {team_id}: {counts}.")
    sys.stdout.flush()


def _report(console: Console, path: Path, errors: list[LineError]) -> None:
    """Every problem, one per line, on stderr."""
    lines = len({e.line for e in errors})
    console.print(
        f"[bold red]{path}: {len(errors)} problem(s) on {lines} line(s); nothing was imported.[/]",
        markup=True,
    )
    for error in errors:
        console.print(str(error), markup=False)


@contextmanager
def _progress(console: Console) -> Iterator[Callable[[str, int], Callable[[int], None]]]:
    """A rich progress display on stderr (only on a terminal); yields `step(label, total) -> advance`."""
    progress = Progress(
        TextColumn("{task.description:<17}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=not console.is_terminal,
    )

    def step(label: str, total: int) -> Callable[[int], None]:
        for task in progress.tasks:  # the previous step is finished
            progress.update(task.id, completed=task.total)
        task_id = progress.add_task(label, total=total)
        return lambda n: progress.advance(task_id, n)

    with progress:
        yield step
        for task in progress.tasks:
            progress.update(task.id, completed=task.total)


def _resolve(rows: list[AccountRow], client: WebClient, advance: Callable[[int], None]) -> list[LineError]:
    from slack_sdk.errors import SlackApiError

    from bot.accounts.importer import resolve_owners

    try:
        return resolve_owners(rows, client, progress=advance)
    except (SlackApiError, OSError) as exc:
        raise slack_problem(exc, "users.lookupByEmail", scopes=SCOPES) from None


def _team(team: str | None, *, client: WebClient | None, db: Database, check: bool) -> str:
    """--team; else the bot token's workspace; else the only workspace in the database."""

    if team is not None:
        team = team_arg(team)
    token_team: str | None = None
    if client is not None and (team is None or check):
        token_team = token_of(client, scopes=SCOPES)
    if team is not None:
        if token_team is not None and token_team != team:
            raise ConfigError(
                f"ProdOps: owner emails would be looked up in workspace {token_team} (the workspace of "
                f"SLACK_BOT_TOKEN), but you are importing into --team {team}. Use that workspace's bot "
                "token, or give owners as Slack user ids."
            )
        return team
    if token_team is not None:
        return token_team
    return only_workspace(db, question="which workspace should the accounts go to?")
