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

from bot.settings import ConfigError, Settings, load_settings

if TYPE_CHECKING:
    from slack_sdk import WebClient

    from bot.accounts.importer import AccountRow, LineError
    from storage.db import Database

TEAM_ID_MAX = 32

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
        if emails and not settings.slack_bot_token:
            example = next(r for r in rows if r.owner_email)
            raise ConfigError(
                f"ProdOps configuration error: {path} gives {len(emails)} owner(s) by email "
                f'(e.g. "{example.owner}" on line {example.line}), and looking them up in Slack needs '
                "SLACK_BOT_TOKEN (a bot token with the users:read.email scope). Set SLACK_BOT_TOKEN, "
                "or give owners as Slack user ids (U0123ABC). See README.md#configuration."
            )
        _migrate(settings)
        db = Database(settings.database_url)
        try:
            client = _client(settings) if settings.slack_bot_token else None
            team_id = _team(args.team, client=client, db=db, check=bool(emails))
            if emails and client is not None:
                errors += _resolve(rows, client, step("Resolving owners", len(emails)))
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


def _migrate(settings: Settings) -> None:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import OperationalError

    from storage.migrate import upgrade

    try:
        upgrade(settings.database_url)
    except OperationalError as exc:
        where = make_url(settings.database_url).render_as_string(hide_password=True)
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise ConfigError(
            f"ProdOps could not reach the database at DATABASE_URL ({where}): {reason}. Check that the "
            "database server is running and that DATABASE_URL is right (see README.md#configuration)."
        ) from None


def _client(settings: Settings) -> WebClient:
    from bot.slack_client import build_client

    return build_client(settings)


def _slack_problem(exc: Exception, method: str) -> ConfigError:
    """A Slack failure that is not about one line of the file (bad token, scope, unreachable)."""
    from slack_sdk.errors import SlackApiError

    if isinstance(exc, SlackApiError):
        error = exc.response.get("error")
        needed = exc.response.get("needed")
        scope = f" (the token needs the {needed} scope)" if needed else ""
        return ConfigError(
            f"ProdOps configuration error: Slack refused {method} with {error}{scope}. Check "
            "SLACK_BOT_TOKEN (a bot token with users:read and users:read.email) and SLACK_API_URL; "
            "see README.md#configuration."
        )
    return ConfigError(
        f"ProdOps configuration error: could not reach Slack for {method} ({exc.__class__.__name__}: {exc}). "
        "Check SLACK_API_URL and your network; see README.md#configuration."
    )


def _resolve(rows: list[AccountRow], client: WebClient, advance: Callable[[int], None]) -> list[LineError]:
    from slack_sdk.errors import SlackApiError

    from bot.accounts.importer import resolve_owners

    try:
        return resolve_owners(rows, client, progress=advance)
    except (SlackApiError, OSError) as exc:
        raise _slack_problem(exc, "users.lookupByEmail") from None


def _team(team: str | None, *, client: WebClient | None, db: Database, check: bool) -> str:
    """--team; else the bot token's workspace; else the only workspace in the database."""
    from slack_sdk.errors import SlackApiError
    from sqlalchemy import select

    from storage.models import Workspace

    if team is not None and (not team.strip() or len(team.strip()) > TEAM_ID_MAX):
        raise ConfigError(f"ProdOps: --team {team!r} is not a Slack team id (like T0123ABC).")
    token_team: str | None = None
    if client is not None and (team is None or check):
        try:
            token_team = str(client.auth_test()["team_id"])
        except (SlackApiError, OSError) as exc:
            raise _slack_problem(exc, "auth.test") from None
    if team is not None:
        team = team.strip()
        if token_team is not None and token_team != team:
            raise ConfigError(
                f"ProdOps: owner emails would be looked up in workspace {token_team} (the workspace of "
                f"SLACK_BOT_TOKEN), but you are importing into --team {team}. Use that workspace's bot "
                "token, or give owners as Slack user ids."
            )
        return team
    if token_team is not None:
        return token_team
    with db.session() as session:
        teams = list(session.scalars(select(Workspace.team_id).limit(2)))
    if len(teams) == 1:
        return teams[0]
    found = "no workspace" if not teams else "several workspaces"
    raise ConfigError(
        f"ProdOps: which workspace should the accounts go to? SLACK_BOT_TOKEN is not set and the database "
        f"has {found}. Pass --team T0123ABC (the Slack team id), or set SLACK_BOT_TOKEN."
    )
