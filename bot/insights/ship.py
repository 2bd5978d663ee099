"""Closing the loop: when a theme ships, tell each source thread, each reporter and each account owner, once.

Planning (``plan_ship``, in the command's transaction). The theme row is locked (``FOR UPDATE`` on
Postgres; SQLite's ``BEGIN IMMEDIATE`` serialises writers) and one ``ship_notices`` row is written per item
and recipient that has none yet — the unique ``(team_id, item_id, target_kind, target)`` constraint is the
record, so shipping again writes nothing for items already told and only the new items' notices.
A recipient is told once per shipping: when several items share a thread or a reporter or an owner, one
row is ``pending`` (its text names all of them) and the others are ``covered``. A thread already told
about this theme is not told again for a later item.

Delivery: bot/insights/ship_delivery.py (a worker tick).

Privacy. Thread replies go to the thread the item came from (private channels included: that is where it
was said). DMs quote no item text, and link only public items.
"""

from __future__ import annotations

import difflib
import logging
import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from storage.models import Account, FeedbackItem, ShipNotice, Theme, ThemeStatus, Visibility
from storage.types import utcnow

logger = logging.getLogger("prodops.insights.ship")

THREAD, REPORTER, OWNER = "thread", "reporter", "owner"
PENDING, SENDING, SENT, FAILED, COVERED = "pending", "sending", "sent", "failed", "covered"
MAX_MESSAGE = 1000
LINKS_PER_DM = 5


# ---- finding the theme ----------------------------------------------------------------------------------


class ThemeNotFound(Exception):
    """No active theme has that name; `close` are names that look like it."""

    def __init__(self, name: str, close: list[str]) -> None:
        super().__init__(name)
        self.name, self.close = name, close


class AmbiguousTheme(Exception):
    """Several active themes have that name; `matches` are (id, name)."""

    def __init__(self, name: str, matches: list[tuple[int, str]]) -> None:
        super().__init__(name)
        self.name, self.matches = name, matches


def _key(name: str) -> str:
    return " ".join(name.split()).casefold()


def parse_ship_args(*, db_session: Session, team_id: str, args: str) -> tuple[Theme, str | None]:
    """`<theme> [message]` → (theme, message). The theme is `"quoted"`, `#id`, or the longest run of leading
    words that is an active theme's name (any case); raises ThemeNotFound / AmbiguousTheme."""
    args = args.strip()
    themes = list(
        db_session.scalars(
            select(Theme).where(Theme.team_id == team_id, Theme.status == ThemeStatus.active.value)
        )
    )
    if match := re.match(r"^#(\d+)\b\s*(.*)$", args, re.DOTALL):
        found = next((t for t in themes if t.id == int(match.group(1))), None)
        if found is None:
            raise ThemeNotFound(f"#{match.group(1)}", _close(themes, ""))
        return found, match.group(2).strip() or None
    if match := re.match(r'^["“”](.+?)["“”]\s*(.*)$', args, re.DOTALL):
        name, rest = match.group(1), match.group(2)
        return _one(themes, name), rest.strip() or None
    words = args.split(" ")
    by_key: dict[str, list[Theme]] = defaultdict(list)
    for theme in themes:
        by_key[_key(theme.name)].append(theme)
    for cut in range(len(words), 0, -1):
        candidates = by_key.get(_key(" ".join(words[:cut])))
        if candidates:
            return _one(candidates, " ".join(words[:cut])), " ".join(words[cut:]).strip() or None
    raise ThemeNotFound(args, _close(themes, args))


def _one(themes: list[Theme], name: str) -> Theme:
    matches = [t for t in themes if _key(t.name) == _key(name)]
    if not matches:
        raise ThemeNotFound(name, _close(themes, name))
    if len(matches) > 1:
        raise AmbiguousTheme(name, [(t.id, t.name) for t in matches])
    return matches[0]


def _close(themes: list[Theme], text: str, limit: int = 5) -> list[str]:
    """Theme names that contain the text's first words, or look like its start."""
    names = sorted({t.name for t in themes}, key=str.casefold)
    words = _key(text).split()
    found = [n for n in names if words and _key(" ".join(words[:2])) in _key(n)]
    head = " ".join(words[:4])
    by_key = {_key(n): n for n in names}
    for key in difflib.get_close_matches(head, list(by_key), n=limit, cutoff=0.5):
        if by_key[key] not in found:
            found.append(by_key[key])
    return found[:limit] or names[:limit]


# ---- planning -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShipPlan:
    """What shipping a theme will send (new notices only)."""

    theme_id: int
    theme_name: str
    message: str
    items: int  # items of the theme (and their duplicates)
    threads: int
    reporters: int
    owners: int
    already_told: int  # items that had been shipped before (nothing new for them)

    @property
    def notices(self) -> int:
        """Messages that will go out."""
        return self.threads + self.reporters + self.owners


@dataclass
class _Recipient:
    kind: str
    target: str
    items: list[FeedbackItem] = field(default_factory=list)
    accounts: list[str] = field(default_factory=list)


def may_ship(*, is_admin: bool) -> bool:
    """Who may ship: ProdOps admins (the one admin rule, bot/admins.py)."""
    return is_admin


def plan_ship(
    *,
    db_session: Session,
    team_id: str,
    theme_id: int,
    message: str | None,
    requested_by_user_id: str,
    now: datetime | None = None,
) -> ShipPlan:
    """Writes the pending notices for every item of the theme not yet told, and marks the theme shipped."""
    now = now or utcnow()
    theme = db_session.scalar(
        select(Theme).where(Theme.team_id == team_id, Theme.id == theme_id).with_for_update()
    )
    if theme is None or theme.status != ThemeStatus.active.value:
        raise ThemeNotFound(theme.name if theme else f"#{theme_id}", [])
    text = " ".join((message or theme.name).split())[:MAX_MESSAGE]
    in_theme = select(FeedbackItem.id).where(
        FeedbackItem.team_id == team_id, FeedbackItem.theme_id == theme.id
    )
    items = list(
        db_session.scalars(
            select(FeedbackItem)
            .where(
                FeedbackItem.team_id == team_id,
                FeedbackItem.deleted_at.is_(None),
                or_(FeedbackItem.theme_id == theme.id, FeedbackItem.duplicate_of_id.in_(in_theme)),
            )
            .order_by(FeedbackItem.created_at, FeedbackItem.id)
        ).unique()
    )
    existing = _existing(db_session, team_id, [i.id for i in items])
    told_threads = set(
        db_session.scalars(
            select(ShipNotice.target).where(
                ShipNotice.team_id == team_id,
                ShipNotice.theme_id == theme.id,
                ShipNotice.target_kind == THREAD,
                ShipNotice.status != FAILED,
            )
        )
    )
    recipients: dict[tuple[str, str], _Recipient] = {}
    rows: list[tuple[FeedbackItem, str, str]] = []
    already = 0
    for item in items:
        new = [(kind, target) for kind, target in _targets(item) if (item.id, kind, target) not in existing]
        if not new:
            already += 1
            continue
        for kind, target in new:
            rows.append((item, kind, target))
            recipient = recipients.setdefault((kind, target), _Recipient(kind, target))
            recipient.items.append(item)
            if kind == OWNER and item.account is not None:
                recipient.accounts.append(item.account.name)
    reporters = {target for kind, target in recipients if kind == REPORTER}
    leaders: dict[tuple[str, str], ShipNotice] = {}
    for item, kind, target in rows:
        covered = (kind, target) in leaders or (kind == THREAD and target in told_threads)
        # An owner who reported an item of this shipping already gets the reporter's DM.
        covered = covered or (kind == OWNER and target in reporters)
        notice = ShipNotice(
            team_id=team_id,
            theme_id=theme.id,
            item_id=item.id,
            target_kind=kind,
            target=target,
            message=_notice_text(recipients[(kind, target)], text),
            requested_by_user_id=requested_by_user_id,
            status=COVERED if covered else PENDING,
            next_attempt_at=now,
            created_at=now,
        )
        db_session.add(notice)
        if not covered:
            leaders[(kind, target)] = notice
    theme.shipped_at = now
    db_session.flush()
    counts: dict[str, int] = defaultdict(int)
    for kind, _target in leaders:
        counts[kind] += 1
    return ShipPlan(
        theme_id=theme.id,
        theme_name=theme.name,
        message=text,
        items=len(items),
        threads=counts[THREAD],
        reporters=counts[REPORTER],
        owners=counts[OWNER],
        already_told=already,
    )


def _existing(db_session: Session, team_id: str, item_ids: list[int]) -> set[tuple[int, str, str]]:
    found: set[tuple[int, str, str]] = set()
    for i in range(0, len(item_ids), 500):
        chunk = item_ids[i : i + 500]
        found.update(
            (item_id, kind, target)
            for item_id, kind, target in db_session.execute(
                select(ShipNotice.item_id, ShipNotice.target_kind, ShipNotice.target).where(
                    ShipNotice.team_id == team_id, ShipNotice.item_id.in_(chunk)
                )
            )
        )
    return found


def _targets(item: FeedbackItem) -> list[tuple[str, str]]:
    """The item's thread (when it came from a message), its reporter, its account's owner."""
    targets = []
    if item.message_ts:
        targets.append((THREAD, f"{item.channel_id}:{item.thread_ts or item.message_ts}"))
    reporter = item.author_user_id or item.captured_by_user_id
    if reporter and reporter[:1] in ("U", "W"):
        targets.append((REPORTER, reporter))
    account: Account | None = item.account
    if account is not None and account.owner_user_id:
        targets.append((OWNER, account.owner_user_id))
    return targets


def _links(items: list[FeedbackItem]) -> str:
    """Links to the public items only; private ones are counted, never linked or quoted."""
    public = [i for i in items if i.visibility == Visibility.public.value and i.permalink]
    hidden = len(items) - len(public)
    links = [f"<{i.permalink}|#{i.id}>" for i in public[:LINKS_PER_DM]]
    if len(public) > LINKS_PER_DM:
        links.append(f"and {len(public) - LINKS_PER_DM} more")
    if hidden:
        links.append(f"{hidden} in a private conversation" if links else f"{hidden} in private conversations")
    return ", ".join(links)


def _notice_text(recipient: _Recipient, message: str) -> str:
    """What the recipient reads (mrkdwn). Thread: "Shipped: …"; DMs: why they are told, without quotes."""
    shipped = f"Shipped: {escape(message)}"
    if recipient.kind == THREAD:
        return f":rocket: {shipped}"
    n = len(recipient.items)
    what = "this" if n == 1 else f"these {n} items"
    if recipient.kind == REPORTER:
        return f":rocket: *{shipped}*\nYou reported {what} — thank you. {_links(recipient.items)}".rstrip()
    names = ", ".join(f"*{escape(a)}*" for a in dict.fromkeys(recipient.accounts))
    return (
        f":rocket: *{shipped}*\nFeedback from your account{'s' if ',' in names else ''} {names} asked for "
        f"{what} — a good moment to let them know. {_links(recipient.items)}"
    ).rstrip()


def escape(text: str) -> str:
    """User text made safe for mrkdwn (no accidental links or mentions)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
