"""`prodops metrics load|list` and `prodops tokens create|list|revoke`."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from bot.cli_support import known_team, migrate, pick_team, slack_client, team_arg
from bot.settings import ConfigError, load_settings

if TYPE_CHECKING:
    pass

SCOPES = "channels:read, groups:read"
QUESTION = "which workspace are the metrics for?"
TEAM_HELP = "the Slack team id (default: the bot token's workspace, or the only one)"

FORMAT_HELP = """\
The file is YAML: `metrics:` is a list of metrics, each with
  key          required slug, 2-64 of a-z 0-9 _ (starting with a letter); an existing metric with
               that key is updated
  name         required, 1-200 characters;  description  free text
  unit         count | percent | currency | duration | ratio
  direction    up_is_good (default) | down_is_good;  target  a number (optional)
  summary      last | sum | avg | max | min: how a period's points become one value
  period       day | week (default) | month;  owner  a Slack user id (U0123ABC)
  source       manual (people record values) | push (the HTTP API; see `prodops tokens`)
               | sql: needs `sql: {datasource: NAME, query: "..."}` (URL in PRODOPS_DATASOURCE_<NAME>)
               | builtin: needs `builtin: {name: requests_opened, params: {...}}`
  schedule     {cron: "0 6 * * mon", timezone: Europe/London}: required for sql and builtin,
               not allowed for manual and push
  alerts       [{kind: above|below|change|anomaly, threshold, window, k, channel: C0123ABC,
               cooldown: 1d}]; they are replaced to match the file
Every metric is checked first: if any is bad, each problem is listed and nothing is written. Loading
the same file twice changes nothing; metrics not in the file are left alone.
Exit codes: 0 loaded (or valid, with --dry-run), 1 the file has errors, 2 configuration problem."""


def register_metrics_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds `metrics load FILE.yml [--team T] [--dry-run]` and `metrics list [--team T] [--archived]`."""
    metrics = sub.add_parser("metrics", help="business metrics: load definitions from a YAML file, list them")
    what = metrics.add_subparsers(dest="metrics_action", required=True, metavar="ACTION")
    load = what.add_parser(
        "load",
        help="create or update metrics from a YAML file",
        description=FORMAT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    load.add_argument("file", type=Path, metavar="FILE.yml", help="the YAML file to load")
    load.add_argument("--team", help=TEAM_HELP)
    load.add_argument("--dry-run", action="store_true", help="check the file and report; write nothing")
    load.set_defaults(run=cmd_metrics_load)
    listing = what.add_parser("list", help="list the metrics of a workspace")
    listing.add_argument("--team", help=TEAM_HELP)
    listing.add_argument("--archived", action="store_true", help="include archived metrics")
    listing.set_defaults(run=cmd_metrics_list)


def register_tokens_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds `tokens create --team T --name N`, `tokens list --team T` and `tokens revoke --team T ID`."""
    tokens = sub.add_parser("tokens", help="push-API tokens: create (shown once), list, revoke")
    what = tokens.add_subparsers(dest="tokens_action", required=True, metavar="ACTION")
    create = what.add_parser("create", help="make a token for POST /api/v1/metrics/KEY/points")
    create.add_argument("--team", required=True, help="the Slack team id the token writes to")
    create.add_argument("--name", required=True, help="what uses it, e.g. 'warehouse export'")
    create.set_defaults(run=cmd_tokens_create)
    listing = what.add_parser("list", help="list a workspace's tokens (never the tokens themselves)")
    listing.add_argument("--team", required=True, help="the Slack team id")
    listing.set_defaults(run=cmd_tokens_list)
    revoke = what.add_parser("revoke", help="revoke a token: requests with it are refused from now on")
    revoke.add_argument("--team", required=True, help="the Slack team id")
    revoke.add_argument("id", type=int, help="the token's id (from `prodops tokens list`)")
    revoke.set_defaults(run=cmd_tokens_revoke)


# ---- metrics ---------------------------------------------------------------------------------------


def cmd_metrics_load(args: argparse.Namespace) -> None:
    """Validate the whole file, then upsert in one transaction; exit 1 listing every problem."""
    from bot.metrics.registry import datasource_env, load_metrics_yaml, upsert_metrics
    from storage.db import Database

    settings = load_settings()
    path: Path = args.file
    console = Console(stderr=True, highlight=False, soft_wrap=True)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(f"ProdOps cannot read {path}: {reason}.") from None
    specs, errors = load_metrics_yaml(text, filename=str(path))
    if errors:
        console.print(f"[bold red]{path}: {len(errors)} problem(s); nothing was loaded.[/]", markup=True)
        for error in errors:
            console.print(error, markup=False)
        raise SystemExit(1)
    migrate(settings)
    db = Database(settings.database_url)
    try:
        client = slack_client(settings) if settings.slack_bot_token and args.team is None else None
        team_id = pick_team(args.team, client=client, db=db, question=QUESTION, scopes=SCOPES)
        with db.session() as session:
            result = upsert_metrics(db_session=session, team_id=team_id, specs=specs, dry_run=args.dry_run)
    finally:
        db.dispose()
    counts = (
        f"{len(result.created)} created, {len(result.updated)} updated, {len(result.unchanged)} unchanged"
    )
    if args.dry_run:
        print(f"Dry run: {path} is valid ({len(specs)} metric(s) for {team_id}): would be {counts}.")
    else:
        print(f"Loaded {len(specs)} metric(s) from {path} into {team_id}: {counts}.")
    for label, keys in (("created", result.created), ("updated", result.updated)):
        if keys:
            console.print(f"  {label}: {', '.join(keys)}", markup=False)
    missing = sorted({datasource_env(s.sql.datasource) for s in specs if s.sql} - set(os.environ))
    for variable in missing:
        console.print(
            f"  note: {variable} is not set here; the worker needs it to run the sql metrics that use it.",
            markup=False,
        )
    sys.stdout.flush()


def cmd_metrics_list(args: argparse.Namespace) -> None:
    """One line per metric: key, name, source, unit/summary/period, schedule, next and last run."""
    from bot.metrics.registry import list_metrics
    from storage.db import Database

    settings = load_settings()
    migrate(settings)
    db = Database(settings.database_url)
    try:
        client = slack_client(settings) if settings.slack_bot_token and args.team is None else None
        team_id = pick_team(args.team, client=client, db=db, question=QUESTION, scopes=SCOPES)
        with db.read() as session:
            rows = list_metrics(db_session=session, team_id=team_id, include_archived=args.archived)
    finally:
        db.dispose()
    for row in rows:
        schedule = f"{row.schedule_cron} {row.schedule_timezone}" if row.schedule_cron else "-"
        next_run = f"{row.next_run_at:%Y-%m-%d %H:%M}Z" if row.next_run_at else "-"
        flags = " (archived)" if row.archived_at else ""
        error = f"\terror={row.last_error[:80]}" if row.last_error else ""
        print(
            f"{row.key}{flags}\t{row.name}\tsource={row.source}\t{row.unit}/{row.summary}/{row.period}\t"
            f"schedule={schedule}\tnext={next_run}{error}"
        )
    if not rows:
        print(f"No metrics in {team_id}: load some with `prodops metrics load FILE.yml`.")
    sys.stdout.flush()


# ---- tokens ----------------------------------------------------------------------------------------


def cmd_tokens_create(args: argparse.Namespace) -> None:
    """Creates a token and prints it once."""
    from bot.metrics.tokens import create_token
    from storage.db import Database

    settings = load_settings()
    team_arg(args.team)
    migrate(settings)
    db = Database(settings.database_url)
    try:
        team_id = known_team(settings, db, args.team, doing="make a push-API token for it")
        with db.session() as session:
            try:
                row, plaintext = create_token(db_session=session, team_id=team_id, name=args.name)
            except ValueError as exc:
                raise ConfigError(f"ProdOps: --name: {exc}.") from None
            token_id, prefix = row.id, row.prefix
    finally:
        db.dispose()
    console = Console(stderr=True, highlight=False, soft_wrap=True)
    console.print(
        f"Created token {token_id} ({prefix}…) “{args.name.strip()}” for {team_id}. Store it now, in a "
        "secret manager: it is shown only this once (ProdOps keeps only its hash). Revoke it with "
        f"`prodops tokens revoke --team {team_id} {token_id}`.",
        markup=False,
    )
    print(plaintext)  # alone on stdout, so `TOKEN=$(prodops tokens create ...)` works
    sys.stdout.flush()


def cmd_tokens_list(args: argparse.Namespace) -> None:
    """One line per token: id, prefix, name, created, last used, revoked."""
    from bot.metrics.tokens import list_tokens
    from storage.db import Database

    settings = load_settings()
    team_id = team_arg(args.team)
    migrate(settings)
    db = Database(settings.database_url)
    try:
        with db.read() as session:
            rows = list_tokens(db_session=session, team_id=team_id)
    finally:
        db.dispose()
    for row in rows:
        used = f"{row.last_used_at:%Y-%m-%d %H:%M}Z" if row.last_used_at else "never"
        state = f"revoked {row.revoked_at:%Y-%m-%d %H:%M}Z" if row.revoked_at else "active"
        print(
            f"{row.id}\t{row.prefix}…\t{row.name}\tcreated {row.created_at:%Y-%m-%d}\tlast used {used}\t{state}"
        )
    if not rows:
        print(f"No tokens in {team_id}: make one with `prodops tokens create --team {team_id} --name NAME`.")
    sys.stdout.flush()


def cmd_tokens_revoke(args: argparse.Namespace) -> None:
    """Revokes one token; exit 1 when there is no such live token in the workspace."""
    from bot.metrics.tokens import revoke_token
    from storage.db import Database

    settings = load_settings()
    team_id = team_arg(args.team)
    migrate(settings)
    db = Database(settings.database_url)
    try:
        with db.session() as session:
            revoked = revoke_token(db_session=session, team_id=team_id, token_id=args.id)
    finally:
        db.dispose()
    if not revoked:
        print(
            f"No active token {args.id} in {team_id} (see `prodops tokens list --team {team_id}`).",
            file=sys.stderr,
        )
        raise SystemExit(1)
    print(f"Revoked token {args.id} of {team_id}: requests with it are refused from now on.")
    sys.stdout.flush()


# ---- the workspace ---------------------------------------------------------------------------------
