"""`prodops themes list|create|rename|describe|accept|dismiss|merge|split|move|recluster [--team T]`.

A theme is named by its number (`12` or `#12`) or its name. Exit codes: 0 done, 2 the theme, item or
workspace does not exist or the change is not allowed (nothing is changed), or a configuration problem.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from bot.cli_support import migrate, pick_team, slack_client
from bot.settings import load_settings

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from storage.db import Database

SCOPES = "auth.test only"
QUESTION = "which workspace are the themes in?"
TEAM_HELP = "the Slack team id (default: the bot token's workspace, or the only one)"


def register_insights_parser(sub: argparse._SubParsersAction[Any]) -> None:
    """Adds `themes …` to the `prodops` parser."""
    themes = sub.add_parser(
        "themes",
        help="feedback themes: list, rename, merge, split, move items, accept or dismiss proposals",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    what = themes.add_subparsers(dest="themes_action", required=True, metavar="ACTION")

    def action(name: str, help_: str, run: Callable[[argparse.Namespace], None]) -> argparse.ArgumentParser:
        parser = what.add_parser(name, help=help_)
        parser.add_argument("--team", help=TEAM_HELP)
        parser.set_defaults(run=run)
        return parser

    listing = action("list", "themes with their item counts, proposals, and the unsorted count", cmd_list)
    listing.add_argument("--all", action="store_true", help="also merged and dismissed themes")
    create = action("create", "create an active theme", cmd_create)
    create.add_argument("name")
    create.add_argument("--description")
    rename = action("rename", "give a theme a name (the theme job keeps it)", cmd_rename)
    rename.add_argument("theme", help="its number or name")
    rename.add_argument("name", help="the new name")
    describe = action("describe", "set a theme's description", cmd_describe)
    describe.add_argument("theme")
    describe.add_argument("description")
    accept = action("accept", "accept a proposed theme", cmd_accept)
    accept.add_argument("theme")
    dismiss = action("dismiss", "dismiss a proposed theme (its items are not proposed again)", cmd_dismiss)
    dismiss.add_argument("theme")
    merge = action("merge", "move every item of a theme into another and close it", cmd_merge)
    merge.add_argument("theme")
    merge.add_argument("--into", required=True, help="the theme that takes the items")
    split = action("split", "move some items of a theme into a new theme", cmd_split)
    split.add_argument("theme")
    split.add_argument("--items", required=True, help="item ids, e.g. 12,15,18")
    split.add_argument("--name", required=True, help="the new theme's name")
    move = action("move", "put items in a theme (or `unsorted`); the job never moves them back", cmd_move)
    move.add_argument("--items", required=True, help="item ids, e.g. 12,15,18")
    move.add_argument("--to", required=True, help="a theme's number or name, or `unsorted`")
    action("recluster", "run the theme job for the workspace now", cmd_recluster)


class _Failed(Exception):
    """A problem the user can fix: printed in red, exit 2."""


def _run(args: argparse.Namespace, work: Callable[[Database, str], str]) -> None:
    """Opens the database, picks the workspace, runs `work` (one transaction inside it) and prints its line."""
    from bot.insights.themes import ThemeError
    from storage.db import Database

    settings = load_settings()
    migrate(settings)
    db = Database(settings.database_url)
    errors = Console(stderr=True, highlight=False)
    try:
        client = slack_client(settings) if settings.slack_bot_token and args.team is None else None
        team_id = pick_team(args.team, client=client, db=db, question=QUESTION, scopes=SCOPES)
        message = work(db, team_id)
    except (ThemeError, _Failed) as exc:
        errors.print(f"[red]{exc}[/] Nothing was changed. `prodops themes list` shows the themes.")
        raise SystemExit(2) from None
    finally:
        db.dispose()
    print(message)
    sys.stdout.flush()


def _item_ids(raw: str) -> list[int]:
    parts = [p for p in re.split(r"[,\s]+", raw.strip()) if p]
    if not parts or not all(re.fullmatch(r"#?\d+", p) for p in parts):
        raise _Failed(f"--items {raw!r}: give item ids separated by commas, e.g. --items 12,15,18.")
    return [int(p.lstrip("#")) for p in parts]


def _find(session: Session, team_id: str, ref: str) -> int:
    from bot.insights import themes

    return themes.find(session, team_id=team_id, ref=ref).id


def cmd_list(args: argparse.Namespace) -> None:
    """A table of themes: number, status, name, items this week and in total, who named it."""
    from bot.insights import themes
    from storage.models import ThemeStatus

    def work(db: Database, team_id: str) -> str:
        statuses = [s.value for s in ThemeStatus] if args.all else list(themes.OPEN_STATUSES)
        with db.read() as s:
            rows = themes.summaries(s, team_id=team_id, statuses=statuses)
            unsorted = themes.unsorted_count(s, team_id=team_id)
        table = Table(title=f"Themes of {team_id}")
        for column in ("#", "status", "name", "this week", "items", "named by"):
            table.add_column(column, justify="right" if column in ("#", "this week", "items") else "left")
        order = {"active": 0, "proposed": 1, "merged": 2, "dismissed": 3}
        for t in sorted(rows, key=lambda r: (order.get(r.status, 9), -r.items, r.id)):
            status = f"merged → #{t.merged_into_id}" if t.merged_into_id else t.status
            table.add_row(str(t.id), status, t.name, str(t.this_week), str(t.items), t.name_source)
        Console(width=160).print(table)
        return f"{unsorted} unsorted item(s)."

    _run(args, work)


def cmd_create(args: argparse.Namespace) -> None:
    """A new active theme."""
    from bot.insights import themes

    def work(db: Database, team_id: str) -> str:
        with db.session() as s:
            theme = themes.create(
                s, team_id=team_id, name=args.name, user_id=None, description=args.description
            )
            return f"Created theme #{theme.id} “{theme.name}”."

    _run(args, work)


def cmd_rename(args: argparse.Namespace) -> None:
    """A person's name for a theme."""
    from bot.insights import themes

    def work(db: Database, team_id: str) -> str:
        with db.session() as s:
            theme_id = _find(s, team_id, args.theme)
            theme = themes.rename(s, team_id=team_id, theme_id=theme_id, name=args.name)
            return f"Theme #{theme.id} is now “{theme.name}”; the theme job keeps that name."

    _run(args, work)


def cmd_describe(args: argparse.Namespace) -> None:
    """A person's description."""
    from bot.insights import themes

    def work(db: Database, team_id: str) -> str:
        with db.session() as s:
            theme_id = _find(s, team_id, args.theme)
            theme = themes.describe(s, team_id=team_id, theme_id=theme_id, description=args.description)
            return f"Described theme #{theme.id} “{theme.name}”."

    _run(args, work)


def cmd_accept(args: argparse.Namespace) -> None:
    """A proposal becomes active."""
    from bot.insights import themes

    def work(db: Database, team_id: str) -> str:
        with db.session() as s:
            theme = themes.accept(s, team_id=team_id, theme_id=_find(s, team_id, args.theme))
            return f"Accepted theme #{theme.id} “{theme.name}”."

    _run(args, work)


def cmd_dismiss(args: argparse.Namespace) -> None:
    """A proposal turned down."""
    from bot.insights import themes

    def work(db: Database, team_id: str) -> str:
        with db.session() as s:
            theme = themes.dismiss(s, team_id=team_id, theme_id=_find(s, team_id, args.theme))
            return f"Dismissed theme #{theme.id} “{theme.name}”; its items will not be proposed again."

    _run(args, work)


def cmd_merge(args: argparse.Namespace) -> None:
    """Every item of THEME into --into."""
    from bot.insights import themes

    def work(db: Database, team_id: str) -> str:
        with db.session() as s:
            source_id, target_id = _find(s, team_id, args.theme), _find(s, team_id, args.into)
            target = themes.merge(s, team_id=team_id, source_id=source_id, target_id=target_id)
            return f"Merged theme #{source_id} into #{target.id} “{target.name}”."

    _run(args, work)


def cmd_split(args: argparse.Namespace) -> None:
    """Some items of THEME into a new theme."""
    from bot.insights import themes

    def work(db: Database, team_id: str) -> str:
        item_ids = _item_ids(args.items)
        with db.session() as s:
            theme_id = _find(s, team_id, args.theme)
            new = themes.split(
                s, team_id=team_id, theme_id=theme_id, item_ids=item_ids, name=args.name, user_id=None
            )
            return (
                f"Moved {len(item_ids)} item(s) from #{theme_id} into the new theme #{new.id} “{new.name}”."
            )

    _run(args, work)


def cmd_move(args: argparse.Namespace) -> None:
    """Items into --to (a theme, or unsorted)."""
    from bot.insights import themes

    def work(db: Database, team_id: str) -> str:
        item_ids = _item_ids(args.items)
        with db.session() as s:
            target_id = None if args.to.strip().lower() == "unsorted" else _find(s, team_id, args.to)
            themes.move_items(s, team_id=team_id, item_ids=item_ids, target_id=target_id)
            where = f"theme #{target_id}" if target_id is not None else "unsorted"
            return f"Moved {len(item_ids)} item(s) to {where}; the theme job will not move them."

    _run(args, work)


def cmd_recluster(args: argparse.Namespace) -> None:
    """The theme job for one workspace, now."""
    from bot.insights.themes_job import run_for_team

    def work(db: Database, team_id: str) -> str:
        result = run_for_team(db, team_id, force=True, settings=load_settings())
        if not result.ran:
            return f"Nothing done: {result.reason}."
        return (
            f"{len(result.proposed)} proposal(s), {result.assigned} item(s) joined existing themes, "
            f"{result.removed} old proposal(s) replaced, {result.unsorted} item(s) left unsorted."
        )

    _run(args, work)
