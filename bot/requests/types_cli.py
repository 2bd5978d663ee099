"""`prodops types load FILE.yml [--team T] [--dry-run]` and `prodops types list [--team T]`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from bot.cli_support import can_look_up, migrate, pick_team, slack_client, slack_problem, workspace_client
from bot.settings import ConfigError, load_settings

if TYPE_CHECKING:
    from slack_sdk import WebClient


SCOPES = "channels:read, groups:read"
QUESTION = "which workspace are the request types for?"

FORMAT_HELP = """\
The file is YAML: `types:` is a list of request types, each with
  name              required, 1-100 characters; an existing type with that name is updated
  description       free text
  triage_channel    a channel id (C0123ABC) or a #name (looked up in Slack: needs SLACK_BOT_TOKEN);
                    without one, requests are triaged in the channel where they were asked
  owners            Slack user ids, e.g. [U0123ABC]
  default_priority  urgent | high | normal | low (default normal)
  fields            extra intake fields: {key, label, kind: text|select|date|user, required, options}
  sla               per priority {first_response, resolution}: 30m, 4h, 2d (d = one working day of
                    the calendar, e.g. 8h for 09:00-17:00); priorities left out have no targets
  calendar          {timezone, working_days: [mon, ...], start: "09:00", end: "17:00", holidays: [...]}
A top-level `calendar:` is the default for types without one. Every type is checked first: if any is
bad, each problem is listed and nothing is written. Loading the same file twice changes nothing.
Exit codes: 0 loaded (or valid, with --dry-run), 1 the file has errors, 2 configuration problem."""


def register_types_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds `types load FILE.yml [--team T] [--dry-run]` and `types list [--team T]`."""
    types = sub.add_parser("types", help="request types: load them from a YAML file, list them")
    what = types.add_subparsers(dest="types_action", required=True, metavar="ACTION")
    load = what.add_parser(
        "load",
        help="create or update request types from a YAML file",
        description=FORMAT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    load.add_argument("file", type=Path, metavar="FILE.yml", help="the YAML file to load")
    load.add_argument(
        "--team", help="the Slack team id (default: the bot token's workspace, or the only one)"
    )
    load.add_argument("--dry-run", action="store_true", help="check the file and report; write nothing")
    load.set_defaults(run=cmd_types_load)
    listing = what.add_parser("list", help="list the request types of a workspace")
    listing.add_argument(
        "--team", help="the Slack team id (default: the bot token's workspace, or the only one)"
    )
    listing.add_argument("--archived", action="store_true", help="include archived types")
    listing.set_defaults(run=cmd_types_list)


def cmd_types_load(args: argparse.Namespace) -> None:
    """Validate the whole file, resolve #channels, then upsert in one transaction; exit 1 listing problems."""
    from bot.requests.types import load_types_yaml, resolve_channel_names, upsert_types
    from storage.db import Database

    settings = load_settings()
    path: Path = args.file
    console = Console(stderr=True, highlight=False, soft_wrap=True)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(f"ProdOps cannot read {path}: {reason}.") from None
    specs, errors = load_types_yaml(text, filename=str(path))
    if errors:
        _report(console, path, errors)
        raise SystemExit(1)
    names = sorted({n for s in specs if (n := s.channel_name())})
    if names and not can_look_up(settings):
        raise ConfigError(
            f"ProdOps configuration error: {path} names triage channels by name (#{names[0]}), and looking "
            "them up in Slack needs SLACK_BOT_TOKEN (a bot token with channels:read and groups:read), or a "
            "multi-workspace install. Set SLACK_BOT_TOKEN, or give channel ids (C0123ABC: channel details → "
            "About → Channel ID)."
        )
    migrate(settings)
    db = Database(settings.database_url)
    try:
        token_client = slack_client(settings) if settings.slack_bot_token else None
        team_id = pick_team(args.team, client=token_client, db=db, question=QUESTION, scopes=SCOPES)
        if names:
            problems = resolve_channel_names(
                specs, _channel_ids(token_client or workspace_client(settings, db, team_id))
            )
            if problems:
                _report(console, path, [f"{path}: {p}" for p in problems])
                raise SystemExit(1)
        with db.session() as session:
            result = upsert_types(db_session=session, team_id=team_id, specs=specs, dry_run=args.dry_run)
    finally:
        db.dispose()
    unchanged = len(specs) - len(result.created) - len(result.updated)
    counts = f"{len(result.created)} created, {len(result.updated)} updated, {unchanged} unchanged"
    if args.dry_run:
        print(f"Dry run: {path} is valid ({len(specs)} type(s) for {team_id}): would be {counts}.")
    else:
        print(f"Loaded {len(specs)} type(s) from {path} into {team_id}: {counts}.")
    for label, names_ in (("created", result.created), ("updated", result.updated)):
        if names_:
            console.print(f"  {label}: {', '.join(names_)}", markup=False)
    sys.stdout.flush()


def cmd_types_list(args: argparse.Namespace) -> None:
    """One line per type: name, triage channel, owners, default priority, SLA summary."""
    from bot.requests.types import ensure_default_type, list_types, spec_from_type
    from storage.db import Database

    settings = load_settings()
    migrate(settings)
    db = Database(settings.database_url)
    try:
        client = slack_client(settings) if settings.slack_bot_token and args.team is None else None
        team_id = pick_team(args.team, client=client, db=db, question=QUESTION, scopes=SCOPES)
        with db.session() as session:
            ensure_default_type(db_session=session, team_id=team_id)
            rows = list_types(db_session=session, team_id=team_id, include_archived=args.archived)
            lines = [(row, spec_from_type(row)) for row in rows]
    finally:
        db.dispose()
    for row, spec in lines:
        sla = " ".join(f"{p}={t.first_response or '-'}/{t.resolution or '-'}" for p, t in spec.sla.items())
        flags = " (default)" if row.is_default else " (archived)" if row.archived_at else ""
        print(
            f"{row.id}\t{row.name}{flags}\ttriage={row.triage_channel_id or 'where asked'}\t"
            f"owners={','.join(spec.owners) or '-'}\tpriority={spec.default_priority}\tsla {sla}\t"
            f"{spec.calendar.timezone} {spec.calendar.start:%H:%M}-{spec.calendar.end:%H:%M}"
        )
    sys.stdout.flush()


def _report(console: Console, path: Path, errors: list[str]) -> None:
    """Every problem, one per line, on stderr."""
    console.print(f"[bold red]{path}: {len(errors)} problem(s); nothing was loaded.[/]", markup=True)
    for error in errors:
        console.print(error, markup=False)


def _channel_ids(client: WebClient) -> dict[str, str]:
    """Every channel the token can see, name → id (one conversations.list walk)."""
    from slack_sdk.errors import SlackApiError

    found: dict[str, str] = {}
    try:
        for page in client.conversations_list(
            types="public_channel,private_channel", exclude_archived=True, limit=200
        ):
            for channel in page.get("channels", []):
                found.setdefault(str(channel.get("name", "")).lower(), str(channel["id"]))
    except (SlackApiError, OSError) as exc:
        raise slack_problem(exc, "conversations.list", scopes=SCOPES) from None
    return found
