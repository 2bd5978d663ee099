"""The `prodops` command line: serve, worker, migrate, demo, export, import, admins."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from bot import inbox_cli
from bot.accounts.cli import register_import_parser
from bot.cli_support import check_bot_token, known_team, migrate
from bot.insights.cli import register_insights_parser
from bot.logs import protect_command_line
from bot.metrics.cli import register_metrics_parser, register_tokens_parser
from bot.requests.types_cli import register_types_parser
from bot.security.cli import register_security_parser
from bot.security.oauth_cli import register_oauth_parser
from bot.settings import ConfigError, Settings, exit_on_config_error, load_settings


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the `prodops` console script."""
    parser = _parser()
    args = parser.parse_args(argv)
    protect_command_line()
    try:
        args.run(args)
    except ConfigError as exc:
        exit_on_config_error(exc)
    except KeyboardInterrupt:
        raise SystemExit(130) from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prodops", description="ProdOps: a Product Operations bot for Slack."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser(
        "serve", help="run the bot (HTTP on PORT, or Socket Mode when SLACK_APP_TOKEN is set)"
    )
    serve.add_argument("--bind", help="host:port to listen on (default 0.0.0.0:$PORT)")
    serve.set_defaults(run=cmd_serve)

    worker = sub.add_parser("worker", help="run scheduled work (inbox replays; digests, SLAs as they land)")
    worker.set_defaults(run=cmd_worker)

    migrate = sub.add_parser("migrate", help="upgrade the database schema to the latest version")
    migrate.set_defaults(run=cmd_migrate)

    demo = sub.add_parser(
        "demo", help="run the real bot against the bundled Slack emulator and show what it did"
    )
    demo.add_argument("--database-url", help="where the demo keeps its data (default: a fresh SQLite file)")
    demo.set_defaults(run=cmd_demo)

    export = sub.add_parser("export", help="write captured data to stdout")
    export.add_argument(
        "what",
        choices=["feedback", "requests", "request-events", "metrics", "points", "themes"],
        help="what to export",
    )
    export.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
    export.add_argument("--team", help="only this workspace (team id)")
    export.add_argument("--metric", help="points: only this metric (its key)")
    export.set_defaults(run=cmd_export)

    register_import_parser(sub)
    register_insights_parser(sub)
    register_security_parser(sub)
    register_oauth_parser(sub)
    register_types_parser(sub)
    register_metrics_parser(sub)
    register_tokens_parser(sub)
    inbox_cli.register(sub)

    admins = sub.add_parser("admins", help="manage ProdOps admins (besides Slack owners and admins)")
    admins.add_argument("action", choices=["add", "remove", "list"])
    admins.add_argument("--team", required=True, help="workspace (team id)")
    admins.add_argument("--user", help="Slack user id, e.g. U0123ABCD (for add/remove)")
    admins.set_defaults(run=cmd_admins)
    return parser


def _settings() -> Settings:
    return load_settings()


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def cmd_serve(args: argparse.Namespace) -> None:
    """Migrate, then serve."""
    from bot import server

    settings = _settings()
    settings.require_slack()
    server.prepare_metrics(settings)  # before the token check's Slack call records a metric
    check_bot_token(settings)
    migrate(settings)
    if settings.socket_mode:
        server.serve_socket_mode(settings)
    else:
        server.serve_http(settings, bind=args.bind)


def cmd_worker(args: argparse.Namespace) -> None:
    """Run the scheduler in the foreground."""
    from bot import worker

    settings = _settings()
    settings.require_slack()
    check_bot_token(settings)
    migrate(settings)
    worker.run_worker(settings)


def cmd_migrate(args: argparse.Namespace) -> None:
    """Upgrade the schema and say where it is."""
    from rich.console import Console

    from storage.migrate import current_revision

    settings = _settings()
    migrate(settings)
    Console(stderr=True).print(
        f"[green]Database is at revision {current_revision(settings.database_url)}[/] "
        f"({_safe_url(settings.database_url)})"
    )


def cmd_demo(args: argparse.Namespace) -> None:
    """Replay a short scenario through the real server and the emulator."""
    from bot import demo

    raise SystemExit(demo.run_demo(database_url=args.database_url))


def cmd_export(args: argparse.Namespace) -> None:
    """Stream rows to stdout; a count goes to stderr so pipes stay clean."""
    from rich.console import Console

    from bot.export import EXPORTS, write_rows
    from storage.db import Database

    settings = _settings()
    migrate(settings)
    rows, fields = EXPORTS[args.what]
    db = Database(settings.database_url)
    console = Console(stderr=True)
    extra = {"metric_key": args.metric} if args.what == "points" and args.metric else {}
    try:
        with console.status(f"Exporting {args.what}…"):
            count = write_rows(rows(db, team_id=args.team, **extra), fields, args.format, sys.stdout)
    except LookupError as exc:
        console.print(f"[red]{exc}[/] — `prodops export metrics` lists the metric keys.")
        raise SystemExit(2) from None
    sys.stdout.flush()
    console.print(f"[green]{exported(count, args.what, args.format)}[/]")
    db.dispose()


EXPORT_NOUNS = {
    "feedback": ("feedback item", "feedback items"),
    "requests": ("request", "requests"),
    "request-events": ("request event", "request events"),
    "metrics": ("metric", "metrics"),
    "points": ("metric point", "metric points"),
    "themes": ("theme", "themes"),
}


def exported(count: int, what: str, fmt: str) -> str:
    """`Exported 1 request as jsonl.`; `Nothing to export: no requests.` for none."""
    one, many = EXPORT_NOUNS.get(what, (what, what))
    if count == 0:
        return f"Nothing to export: no {many}."
    return f"Exported {count:,} {one if count == 1 else many} as {fmt}."


def cmd_admins(args: argparse.Namespace) -> None:
    """`prodops admins add|remove|list --team T [--user U]`."""
    import re

    from rich.console import Console

    from bot import admins
    from storage.db import Database

    console = Console(stderr=True)
    if args.action != "list" and not (args.user and re.fullmatch(r"[UW][A-Z0-9]{2,}", args.user)):
        console.print(
            "[red]Give the Slack user id with --user, e.g. --user U0123ABCD[/] (profile → ⋮ → Copy member ID)."
        )
        raise SystemExit(2)
    settings = _settings()
    migrate(settings)
    db = Database(settings.database_url)
    if args.action == "add":
        known_team(settings, db, args.team, doing="add an admin there")
    with db.session() as s:
        if args.action == "add":
            changed = admins.add(db_session=s, team_id=args.team, user_id=args.user, added_by_user_id=None)
            console.print(
                f"{args.user} {'is now' if changed else 'already was'} a ProdOps admin of {args.team}."
            )
        elif args.action == "remove":
            changed = admins.remove(db_session=s, team_id=args.team, user_id=args.user)
            console.print(f"{args.user} {'removed' if changed else 'was not an admin'}.")
        else:
            for user_id in admins.list_admins(db_session=s, team_id=args.team):
                print(user_id)
    db.dispose()


if __name__ == "__main__":
    main()
