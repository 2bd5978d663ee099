"""Forgetting a person in one workspace: what they wrote is removed, their id is replaced by a pseudonym.

Removed (text replaced by REMOVED_TEXT, or the row deleted):
- feedback items they authored (text; their old texts and similarity vectors are deleted) and the notes
  of items they captured; their thread replies; requests they asked (title, details, field answers);
  ship notices sent to them or quoting their items; Slack payloads in the inbox that mention them
  (also unhandled ones, so nothing of theirs is captured after they were forgotten); digests in the
  outbox that quote them or their items;
- their ProdOps admin row and monthly brief subscription; their name on request types' owner lists;
  their ownership of accounts and metrics (set to nobody); open requests assigned to them are unassigned.
Pseudonymised: every other mention of their id in any text or JSON column of any table (author,
captured by, requester, actor, creator, decided by, `<@U…>` in other people's texts, …) becomes
`pseudonym(team, user)`, so digests they created keep working and counts stay right.

Strictly one workspace: the same id elsewhere is untouched. Running it again changes nothing more;
a DataRightsRecord(action="forget") with the subject's hash (never the id) and the counts is written
the first time, and again only when something new was found.
"""

from __future__ import annotations

import json
import logging
import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from sqlalchemy import JSON, String, Text, delete, or_, select, update
from sqlalchemy import cast as sql_cast
from sqlalchemy.orm import Session

from bot.digests.render import escape
from bot.security.records import (
    REMOVED_TEXT,
    USER_ID,
    chunks,
    last_record,
    pseudonym,
    pseudonym_key,
    record,
    subject_hash,
    team_tables,
)
from storage.db import Database
from storage.models import (
    Account,
    AccountBriefSubscription,
    DigestOutbox,
    DuplicateSuggestion,
    FeedbackItem,
    FeedbackReply,
    FeedbackTextVersion,
    FeedbackVector,
    InboxEvent,
    Metric,
    Request,
    RequestStatus,
    RequestType,
    ShipNotice,
    SlackOutbox,
    WorkspaceAdmin,
)

logger = logging.getLogger("prodops.security")

CLOSED_REQUESTS = (RequestStatus.done.value, RequestStatus.declined.value)
# A quoted text is recognised by its first characters (digests shorten and escape what they quote).
NEEDLE_CHARS = 40
MIN_NEEDLE_CHARS = 8


class InvalidUserId(ValueError):
    """Not a Slack user id."""


@dataclass
class ForgetResult:
    """What forgetting changed and deleted, per table; `recorded` says whether a new record was written."""

    team_id: str
    subject: str
    pseudonym: str
    changed: dict[str, int] = field(default_factory=dict)
    deleted: dict[str, int] = field(default_factory=dict)
    recorded: bool = False
    previously_done_at: datetime | None = None

    @property
    def total(self) -> int:
        return sum(self.changed.values()) + sum(self.deleted.values())


class _Tally:
    """Distinct rows changed per table (a row touched by two steps counts once), and rows deleted."""

    def __init__(self) -> None:
        self.changed: dict[str, set[Any]] = defaultdict(set)
        self.deleted: dict[str, int] = defaultdict(int)

    def change(self, table: str, keys: list[Any]) -> None:
        self.changed[table].update(keys)

    def delete(self, table: str, count: int) -> None:
        if count:
            self.deleted[table] += count


def forget(db: Database, team_id: str, user_id: str, requested_by: str | None) -> ForgetResult:
    """Removes or pseudonymises everything `user_id` authored or captured in workspace `team_id`."""
    if not USER_ID.match(user_id):
        raise InvalidUserId(f"{user_id!r} is not a Slack user id (like U0123ABCD).")
    key = pseudonym_key()  # a missing key stops here, before anything changes
    alias = pseudonym(team_id, user_id, key)
    tally = _Tally()
    quoted: list[str] = []
    with db.session() as s:
        quoted += _remove_feedback(s, team_id, user_id, alias, tally)
    with db.session() as s:
        quoted += _remove_requests(s, team_id, user_id, alias, tally)
    with db.session() as s:
        _remove_links(s, team_id, user_id, alias, tally)
    _remove_inbox(db, team_id, user_id, tally)
    _remove_quoting_digests(db, team_id, user_id, quoted, tally)
    _pseudonymise_everywhere(db, team_id, user_id, alias, tally)
    if tally.deleted.get("feedback_vectors"):
        _refit_similarity(db, team_id)

    subject = subject_hash(team_id, user_id, key)
    result = ForgetResult(
        team_id=team_id,
        subject=subject,
        pseudonym=alias,
        changed={t: len(keys) for t, keys in tally.changed.items() if keys},
        deleted={t: n for t, n in tally.deleted.items() if n},
    )
    with db.session() as s:
        previous = last_record(db_session=s, team_id=team_id, action="forget", subject=subject)
        result.previously_done_at = previous.done_at if previous else None
        if result.total or previous is None:
            record(
                db_session=s,
                team_id=team_id,
                action="forget",
                subject=subject,
                requested_by=requested_by,
                counts={"changed": result.changed, "deleted": result.deleted},
            )
            result.recorded = True
    return result


def _remove_feedback(s: Session, team_id: str, user_id: str, alias: str, tally: _Tally) -> list[str]:
    """Their items' texts, old texts and vectors, the notes of items they captured, their replies."""
    who = (user_id, alias)  # an item re-captured (e.g. edited in Slack) after a first forget is theirs too
    authored = s.execute(
        select(FeedbackItem.id, FeedbackItem.text).where(
            FeedbackItem.team_id == team_id,
            FeedbackItem.author_user_id.in_(who),
            FeedbackItem.text != REMOVED_TEXT,
        )
    ).all()
    ids = [row.id for row in authored]
    for part in chunks(ids):
        s.execute(
            update(FeedbackItem)
            .where(FeedbackItem.id.in_(part))
            .values(text=REMOVED_TEXT, author_user_id=alias)
        )
        tally.delete(
            "feedback_text_versions",
            _rowcount(
                s.execute(delete(FeedbackTextVersion).where(FeedbackTextVersion.feedback_id.in_(part)))
            ),
        )
        tally.delete(
            "feedback_vectors",
            _rowcount(s.execute(delete(FeedbackVector).where(FeedbackVector.feedback_id.in_(part)))),
        )
    tally.change("feedback_items", ids)
    captured = list(
        s.scalars(
            select(FeedbackItem.id).where(
                FeedbackItem.team_id == team_id,
                FeedbackItem.captured_by_user_id == user_id,
            )
        )
    )
    for part in chunks(captured):
        s.execute(
            update(FeedbackItem).where(FeedbackItem.id.in_(part)).values(captured_by_user_id=alias, note=None)
        )
    tally.change("feedback_items", captured)
    replies = s.execute(
        select(FeedbackReply.id, FeedbackReply.text).where(
            FeedbackReply.team_id == team_id,
            FeedbackReply.user_id.in_(who),
            FeedbackReply.text != REMOVED_TEXT,
        )
    ).all()
    for part in chunks([r.id for r in replies]):
        s.execute(
            update(FeedbackReply).where(FeedbackReply.id.in_(part)).values(text=REMOVED_TEXT, user_id=alias)
        )
    tally.change("feedback_replies", [r.id for r in replies])
    notices = list(
        s.scalars(
            select(ShipNotice.id).where(
                ShipNotice.team_id == team_id,
                or_(ShipNotice.target == user_id, ShipNotice.target == alias),
            )
        )
    )
    tally.delete("ship_notices", _rowcount(s.execute(delete(ShipNotice).where(ShipNotice.id.in_(notices)))))
    quoting = list(
        s.scalars(
            select(ShipNotice.id).where(
                ShipNotice.team_id == team_id,
                ShipNotice.message != REMOVED_TEXT,
                ShipNotice.item_id.in_(
                    select(FeedbackItem.id).where(
                        FeedbackItem.team_id == team_id, FeedbackItem.author_user_id.in_(who)
                    )
                ),
            )
        )
    )
    s.execute(update(ShipNotice).where(ShipNotice.id.in_(quoting)).values(message=REMOVED_TEXT))
    tally.change("ship_notices", quoting)
    removed = [row.text for row in authored] + [r.text for r in replies]
    # A duplicate link keeps a snapshot of the item (for Undo); the snapshot must not keep their text.
    suggestions = s.scalars(
        select(DuplicateSuggestion).where(
            DuplicateSuggestion.team_id == team_id,
            or_(DuplicateSuggestion.item_id.in_(ids), DuplicateSuggestion.candidate_id.in_(ids)),
        )
    ).all()
    for suggestion in suggestions:
        redacted = _redact(suggestion.previous_state, removed)
        if redacted != suggestion.previous_state:
            suggestion.previous_state = redacted
            tally.change("duplicate_suggestions", [suggestion.id])
    return removed


def _remove_requests(s: Session, team_id: str, user_id: str, alias: str, tally: _Tally) -> list[str]:
    """What they asked for is removed; open requests assigned to them go back to the queue."""
    asked = s.execute(
        select(Request.id, Request.title, Request.details).where(
            Request.team_id == team_id,
            Request.requester_user_id.in_((user_id, alias)),
            Request.title != REMOVED_TEXT,
        )
    ).all()
    ids = [row.id for row in asked]
    for part in chunks(ids):
        s.execute(
            update(Request)
            .where(Request.id.in_(part))
            .values(title=REMOVED_TEXT, details=None, field_values={}, requester_user_id=alias)
        )
    tally.change("requests", ids)
    unassigned = list(
        s.scalars(
            select(Request.id).where(
                Request.team_id == team_id,
                Request.assignee_user_id == user_id,
                Request.status.not_in(CLOSED_REQUESTS),
            )
        )
    )
    for part in chunks(unassigned):
        s.execute(update(Request).where(Request.id.in_(part)).values(assignee_user_id=None))
    tally.change("requests", unassigned)
    return [row.title for row in asked] + [row.details for row in asked if row.details]


def _remove_links(s: Session, team_id: str, user_id: str, alias: str, tally: _Tally) -> None:
    """Rows that exist only because of them go; ownerships of accounts and metrics go to nobody."""
    tally.delete(
        "workspace_admins",
        _rowcount(
            s.execute(
                delete(WorkspaceAdmin).where(
                    WorkspaceAdmin.team_id == team_id, WorkspaceAdmin.user_id == user_id
                )
            )
        ),
    )
    tally.delete(
        "account_brief_subscriptions",
        _rowcount(
            s.execute(
                delete(AccountBriefSubscription).where(
                    AccountBriefSubscription.team_id == team_id, AccountBriefSubscription.user_id == user_id
                )
            )
        ),
    )
    for model in (Account, Metric):
        keys = list(
            s.scalars(select(model.id).where(model.team_id == team_id, model.owner_user_id == user_id))
        )
        s.execute(update(model).where(model.id.in_(keys)).values(owner_user_id=None))
        tally.change(model.__tablename__, keys)
    for request_type in s.scalars(select(RequestType).where(RequestType.team_id == team_id)):
        if user_id in (request_type.owners or []) or alias in (request_type.owners or []):
            request_type.owners = [o for o in request_type.owners if o not in (user_id, alias)]
            tally.change("request_types", [request_type.id])


def _remove_inbox(db: Database, team_id: str, user_id: str, tally: _Tally) -> None:
    """Raw Slack payloads that mention them (they carry message text): deleted, handled or not."""
    pattern = _id_pattern(user_id)
    with db.inbox.session() as s:
        rows = s.execute(
            select(InboxEvent.id, InboxEvent.body).where(
                InboxEvent.team_id == team_id, _as_text(InboxEvent.body).contains(user_id, autoescape=True)
            )
        ).all()
        ids = [row.id for row in rows if pattern.search(json.dumps(row.body))]
        for part in chunks(ids):
            tally.delete(
                "inbox_events", _rowcount(s.execute(delete(InboxEvent).where(InboxEvent.id.in_(part))))
            )


def _remove_quoting_digests(
    db: Database, team_id: str, user_id: str, quoted: list[str], tally: _Tally
) -> None:
    """A digest in the outbox that names them or quotes what they wrote keeps only REMOVED_TEXT."""
    pattern = _id_pattern(user_id)
    needles = {
        escape(" ".join(text.split())[:NEEDLE_CHARS])
        for text in quoted
        if len(" ".join(text.split())) >= MIN_NEEDLE_CHARS
    } | {" ".join(text.split())[:NEEDLE_CHARS] for text in quoted if len(text.strip()) >= MIN_NEEDLE_CHARS}
    blanked = [{"type": "section", "text": {"type": "mrkdwn", "text": REMOVED_TEXT}}]
    with db.session() as s:  # messages queued for them (DMs) go with them
        direct = s.execute(
            delete(SlackOutbox).where(SlackOutbox.team_id == team_id, SlackOutbox.channel_id == user_id)
        )
        tally.delete("slack_outbox", _rowcount(direct))
    for model in (DigestOutbox, SlackOutbox):
        _blank_quoting(db, model, team_id, pattern, needles, blanked, tally)


def _blank_quoting(
    db: Database,
    model: type[DigestOutbox] | type[SlackOutbox],
    team_id: str,
    pattern: re.Pattern[str],
    needles: set[str],
    blanked: list[dict[str, Any]],
    tally: _Tally,
) -> None:
    """Outbox messages (digests, alerts, SLA notices, briefs) that name them or quote them keep REMOVED_TEXT."""
    with db.session() as s:
        last_id = 0
        while True:
            rows = s.execute(
                select(model.id, model.text, model.blocks)
                .where(model.team_id == team_id, model.id > last_id)
                .order_by(model.id)
                .limit(200)
            ).all()
            if not rows:
                return
            last_id = rows[-1].id
            hits = [
                row.id
                for row in rows
                if row.text != REMOVED_TEXT
                and _mentions(f"{row.text}\n{json.dumps(row.blocks, ensure_ascii=False)}", pattern, needles)
            ]
            if hits:
                s.execute(update(model).where(model.id.in_(hits)).values(text=REMOVED_TEXT, blocks=blanked))
                tally.change(str(model.__tablename__), hits)


def _refit_similarity(db: Database, team_id: str) -> None:
    """A fitted similarity model learnt its vocabulary from their texts too: fit it again without them.

    The new model version also makes every process reload its vectors, so none keeps the removed ones.
    """
    from bot.insights.index import refit

    try:
        refit(db, team_id)
    except Exception:  # the texts are gone already; the model is fitted again when the corpus grows
        logger.exception("forget in %s: could not refit the similarity model", team_id)


def _mentions(content: str, pattern: re.Pattern[str], needles: set[str]) -> bool:
    return bool(pattern.search(content)) or any(needle in content for needle in needles)


def _pseudonymise_everywhere(db: Database, team_id: str, user_id: str, alias: str, tally: _Tally) -> None:
    """Every remaining mention of the id, in any text or JSON column of the workspace, becomes the alias."""
    pattern = _id_pattern(user_id)
    for table in team_tables():
        columns = [
            c
            for c in table.c
            if isinstance(c.type, String | JSON)
            and not c.primary_key
            and c.name != "team_id"
            and not c.name.endswith("_token")
        ]
        pk = list(table.primary_key.columns)
        if not columns or not pk:
            continue
        target = db.inbox if table.name == InboxEvent.__tablename__ else db  # a file of its own on SQLite
        with target.session() as s:
            rows = s.execute(
                select(*pk, *columns).where(
                    table.c.team_id == team_id,
                    or_(*[_as_text(c).contains(user_id, autoescape=True) for c in columns]),
                )
            ).all()
            for row in rows:
                values = {}
                for column in columns:
                    old = row._mapping[column]
                    new = _replace(old, pattern, alias)
                    if new != old:
                        values[column.name] = new
                if not values:
                    continue
                key = tuple(row._mapping[c] for c in pk)
                s.execute(
                    update(table).where(*[c == k for c, k in zip(pk, key, strict=True)]).values(**values)
                )
                tally.change(table.name, [key if len(key) > 1 else key[0]])


def _redact(value: Any, texts: list[str]) -> Any:
    """`value` with every string that contains one of `texts` replaced by REMOVED_TEXT."""
    if isinstance(value, str):
        return REMOVED_TEXT if any(text and text in value for text in texts) else value
    if isinstance(value, list):
        return [_redact(v, texts) for v in value]
    if isinstance(value, dict):
        return {k: _redact(v, texts) for k, v in value.items()}
    return value


def _replace(value: Any, pattern: re.Pattern[str], alias: str) -> Any:
    """`value` with every whole-token occurrence of the id replaced, inside JSON structures too."""
    if isinstance(value, str):
        return pattern.sub(alias, value)
    if isinstance(value, list):
        return [_replace(v, pattern, alias) for v in value]
    if isinstance(value, dict):
        return {_replace(k, pattern, alias): _replace(v, pattern, alias) for k, v in value.items()}
    return value


def _id_pattern(user_id: str) -> re.Pattern[str]:
    """The id as a whole token (U12 must not match inside U123)."""
    return re.compile(rf"(?<![A-Za-z0-9]){re.escape(user_id)}(?![A-Za-z0-9])")


def _as_text(column: Any) -> Any:
    """A column as text, so JSON can be searched with LIKE on SQLite and Postgres alike."""
    return column if isinstance(column.type, String) else sql_cast(column, Text)


def _rowcount(result: Any) -> int:
    return int(cast(Any, result).rowcount or 0)
