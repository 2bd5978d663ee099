"""`forget`: nothing a person wrote or captured stays readable in their workspace; others and other workspaces are untouched."""

from __future__ import annotations

import io
import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import insert, select

from bot.security.forget import InvalidUserId, forget
from bot.security.records import REMOVED_TEXT, pseudonym, subject_hash
from storage.db import Database
from storage.models import (
    Account,
    AccountBriefSubscription,
    ApiToken,
    Base,
    DataRightsRecord,
    DigestOutbox,
    DigestSubscription,
    DuplicateSuggestion,
    FeedbackItem,
    FeedbackReply,
    FeedbackTextVersion,
    FeedbackVector,
    InboxEvent,
    InsightTask,
    Metric,
    MetricAlert,
    MetricAlertEvent,
    MetricPoint,
    Request,
    RequestEvent,
    RequestType,
    ShipNotice,
    SimilarityModel,
    SlackOutbox,
    SlaNotice,
    Tag,
    Theme,
    WatchedChannel,
    Workspace,
    WorkspaceAdmin,
    slack_bots,
    slack_installations,
)
from storage.types import utcnow

OWN_DATABASE = True  # whole tables are compared before and after: no shared server may touch them


PSEUDONYM_SECRET = "test-signing-secret-for-pseudonyms"


@pytest.fixture(autouse=True)
def pseudonym_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pseudonyms are keyed by the deployment's secret: here the signing secret (no encryption key)."""
    monkeypatch.delenv("PRODOPS_ENCRYPTION_KEY", raising=False)
    monkeypatch.setenv("SLACK_SIGNING_SECRET", PSEUDONYM_SECRET)


def new_team() -> str:
    return "T" + uuid.uuid4().hex[:10].upper()


def new_user() -> str:
    return "U" + uuid.uuid4().hex[:9].upper()


@dataclass
class Seed:
    """What was put in one workspace: the person to forget, someone else, and texts only they wrote."""

    team_id: str
    user: str
    other: str
    their_texts: list[str] = field(default_factory=list)
    other_texts: list[str] = field(default_factory=list)
    ids: dict[str, int] = field(default_factory=dict)


def seed_workspace(
    db: Database,
    team_id: str,
    user: str,
    other: str,
    *,
    created_at: datetime | None = None,
    with_workspace: bool = True,
) -> Seed:
    """A row in every table of the workspace; `user` wrote, captured, owns or is named in many of them."""
    tag = uuid.uuid4().hex[:6]
    seed = Seed(team_id, user, other)
    mine = f"Export drops the currency column ({tag}) when I filter by region"
    mine_old = f"Export is broken ({tag}), first version of my message"
    my_reply = f"Same here ({tag}), it happens every Monday morning"
    my_request = f"Please pull the churn numbers for EMEA ({tag})"
    my_details = f"Needed for the board deck on Thursday ({tag})"
    my_note = f"Heard this twice on calls this week ({tag})"
    theirs = f"Customer says SSO login loops ({tag}) after the upgrade"
    their_reply = f"Engineering is looking into it ({tag})"
    their_request = f"Launch checklist review for billing ({tag})"
    seed.their_texts = [mine, mine_old, my_reply, my_request, my_details, my_note]
    seed.other_texts = [theirs, their_reply, their_request]
    when = created_at or utcnow()
    with db.session() as s:
        if with_workspace:
            s.add(Workspace(team_id=team_id, name="Acme", retention_days=None))
        account = Account(team_id=team_id, name=f"Acme {tag}", name_key=f"acme {tag}", arr=Decimal("1000"),
                          owner_user_id=user)  # fmt: skip
        other_account = Account(
            team_id=team_id, name=f"Globex {tag}", name_key=f"globex {tag}", owner_user_id=other
        )
        theme = Theme(team_id=team_id, name="Exports", status="active", created_by_user_id=user)
        s.add_all([account, other_account, theme])
        s.flush()
        item = FeedbackItem(team_id=team_id, channel_id="C1", message_ts=f"1.{tag}1", text=mine, author_user_id=user,
                            captured_by_user_id=other, source="reaction", account_id=account.id, theme_id=theme.id,
                            visibility="public", created_at=when)  # fmt: skip
        captured = FeedbackItem(team_id=team_id, channel_id="C1", message_ts=f"1.{tag}2", text=theirs,
                                author_user_id=other, captured_by_user_id=user, source="shortcut", note=my_note,
                                created_at=when)  # fmt: skip
        mention = FeedbackItem(team_id=team_id, channel_id="C1", message_ts=f"1.{tag}3",
                               text=f"<@{user}> said the export is slow", author_user_id=other,
                               captured_by_user_id=other, source="channel", created_at=when)  # fmt: skip
        s.add_all([item, captured, mention])
        s.flush()
        seed.ids.update(item=item.id, captured=captured.id, mention=mention.id)
        s.add_all([
            FeedbackTextVersion(team_id=team_id, feedback_id=item.id, text=mine_old, reason="edited",
                                changed_by_user_id=user),
            FeedbackReply(team_id=team_id, feedback_id=captured.id, message_ts=f"2.{tag}1", user_id=user, text=my_reply),
            FeedbackReply(team_id=team_id, feedback_id=captured.id, message_ts=f"2.{tag}2", user_id=other,
                          text=their_reply),
            FeedbackVector(team_id=team_id, feedback_id=item.id, model_version=1, vector=b"\x00" * 16),
            InsightTask(team_id=team_id, item_id=captured.id, mode="private", channel_id="C1", user_id=user),
            FeedbackVector(team_id=team_id, feedback_id=captured.id, model_version=1, vector=b"\x01" * 16),
            SimilarityModel(team_id=team_id, version=1 if with_workspace else 2, backend="tfidf", state=b"{}", item_count=3),
            DuplicateSuggestion(team_id=team_id, item_id=mention.id, candidate_id=item.id, score=0.91, status="asked",
                                previous_state={"text": mine, "by": user}, decided_by_user_id=user),
            ShipNotice(team_id=team_id, item_id=item.id, target_kind="reporter", target=user,
                       message=f"Shipped: {mine}", requested_by_user_id=other),
            ShipNotice(team_id=team_id, item_id=item.id, target_kind="thread", target=f"C1:1.{tag}1",
                       message=f"Shipped: {mine}", requested_by_user_id=other),
            ShipNotice(team_id=team_id, item_id=captured.id, target_kind="thread", target=f"C1:1.{tag}2",
                       message="Shipped: SSO fixed", requested_by_user_id=user),
            Tag(team_id=team_id, name=f"export-{tag}"),
            WatchedChannel(team_id=team_id, channel_id=f"C{tag}", added_by_user_id=user),
            WorkspaceAdmin(team_id=team_id, user_id=user, added_by_user_id=other),
            WorkspaceAdmin(team_id=team_id, user_id=other, added_by_user_id=user),
            AccountBriefSubscription(team_id=team_id, user_id=user),
            AccountBriefSubscription(team_id=team_id, user_id=other),
            ApiToken(team_id=team_id, name="warehouse", token_hash=uuid.uuid4().hex * 2, prefix="po_abc"),
        ])  # fmt: skip
        rtype = RequestType(team_id=team_id, name=f"Data pull {tag}", owners=[user, other],
                            fields=[{"key": "who", "label": "For whom", "kind": "user"}])  # fmt: skip
        s.add(rtype)
        s.flush()
        asked = Request(team_id=team_id, type_id=rtype.id, title=my_request, details=my_details,
                        field_values={"who": user, "region": "EMEA"}, requester_user_id=user, channel_id="C2",
                        source="command", created_at=when)  # fmt: skip
        assigned_open = Request(team_id=team_id, type_id=rtype.id, title=their_request, requester_user_id=other,
                                assignee_user_id=user, channel_id="C2", source="command", status="in_progress",
                                created_at=when)  # fmt: skip
        assigned_done = Request(team_id=team_id, type_id=rtype.id, title=f"Old ask ({tag})", requester_user_id=other,
                                assignee_user_id=user, channel_id="C2", source="command", status="done",
                                created_at=when)  # fmt: skip
        s.add_all([asked, assigned_open, assigned_done])
        s.flush()
        seed.ids.update(asked=asked.id, assigned_open=assigned_open.id, assigned_done=assigned_done.id)
        s.add_all([
            RequestEvent(team_id=team_id, request_id=assigned_open.id, actor_user_id=user, kind="assigned",
                         from_value=None, to_value=user),
            RequestEvent(team_id=team_id, request_id=asked.id, actor_user_id=other, kind="status",
                         from_value="new", to_value="in_progress"),
            SlaNotice(team_id=team_id, request_id=asked.id, target="first_response", kind="reminder"),
        ])  # fmt: skip
        metric = Metric(team_id=team_id, key=f"signups_{tag}", name="Signups", unit="count", direction="up_is_good",
                        summary="sum", source="manual", owner_user_id=user)  # fmt: skip
        s.add(metric)
        s.flush()
        alert = MetricAlert(team_id=team_id, metric_id=metric.id, kind="above", threshold=5, channel_id="C3",
                            created_by_user_id=user)  # fmt: skip
        s.add_all([alert, MetricPoint(team_id=team_id, metric_id=metric.id, ts=when, value=3.0)])
        s.flush()
        s.add(MetricAlertEvent(team_id=team_id, alert_id=alert.id, point_ts=when, value=3.0))
        subscription = DigestSubscription(team_id=team_id, channel_id="C4", cadence="weekly", cron="0 9 * * mon",
                                          created_by_user_id=user)  # fmt: skip
        s.add(subscription)
        s.flush()
        seed.ids["subscription"] = subscription.id
        quote = mine[:60]
        s.add_all([
            DigestOutbox(team_id=team_id, subscription_id=subscription.id, period_key=f"a-{tag}", channel_id="C4",
                         text=f"Top themes: “{quote}…”", blocks=[{"type": "section", "text": {"type": "mrkdwn",
                         "text": f">“{quote}…”"}}], status="sent", created_at=when),
            DigestOutbox(team_id=team_id, subscription_id=subscription.id, period_key=f"b-{tag}", channel_id="C4",
                         text="Requests: 3 open", blocks=[], status="sent", created_at=when),
            SlackOutbox(team_id=team_id, kind="sla", idempotency_key=f"sla:1:C5:{tag}", channel_id="C5",
                        text=f"SLA breached: {my_request}", status="sent", created_at=when, next_attempt_at=when),
            SlackOutbox(team_id=team_id, kind="brief", idempotency_key=f"brief:1:{tag}", channel_id=user,
                        text="Your accounts this month", status="sent", created_at=when, next_attempt_at=when),
            SlackOutbox(team_id=team_id, kind="alert", idempotency_key=f"alert-event:1:{tag}", channel_id="C6",
                        text="Signups is above 100", status="sent", created_at=when, next_attempt_at=when),
        ])  # fmt: skip
        s.execute(insert(slack_installations).values(client_id="111.222", app_id="A1", team_id=team_id,
                                                     user_id=user, bot_token="gAAAA-encrypted", installed_at=when))  # fmt: skip
        s.execute(insert(slack_bots).values(client_id="111.222", app_id="A1", team_id=team_id,
                                            bot_token="gAAAA-encrypted", installed_at=when))  # fmt: skip
    with db.inbox.session() as s:  # the inbox's own database (a file of its own on SQLite)
        for n, (status, who) in enumerate([("done", user), ("pending", user), ("done", other)]):
            s.add(InboxEvent(team_id=team_id, delivery_id=f"Ev{tag}{n}", kind="event:message", status=status,
                             body={"event": {"user": who, "text": mine if who == user else theirs}},
                             lease_until=when, received_at=when))  # fmt: skip
    return seed


def team_rows(db: Database, team_id: str) -> dict[str, list[dict[str, Any]]]:
    """Every row of the workspace in every table, as plain values (for scans and before/after snapshots)."""
    rows: dict[str, list[dict[str, Any]]] = {}
    for table in Base.metadata.sorted_tables:
        if "team_id" not in table.c:
            continue
        with (db.inbox if table.name == InboxEvent.__tablename__ else db).read() as s:
            found = s.execute(select(table).where(table.c.team_id == team_id)).mappings().all()
            rows[table.name] = sorted(
                ({k: _plain(v) for k, v in row.items() if k not in ("updated_at",)} for row in found),
                key=lambda r: json.dumps(r, sort_keys=True, default=str),
            )
    return rows


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, datetime | Decimal):
        return str(value)
    return value


def readable(rows: dict[str, list[dict[str, Any]]], needle: str) -> list[str]:
    """Where `needle` appears (a user id as a whole token, or a text) in any column of any row."""
    pattern = re.compile(rf"(?<![A-Za-z0-9]){re.escape(needle)}(?![A-Za-z0-9])")
    return [
        f"{table}: {json.dumps(row, default=str)[:200]}"
        for table, table_rows in rows.items()
        for row in table_rows
        if pattern.search(json.dumps(row, default=str, ensure_ascii=False))
    ]


def tables_with_rows(db: Database, team_id: str) -> set[str]:
    return {name for name, rows in team_rows(db, team_id).items() if rows}


# ---- tests -------------------------------------------------------------------------------------------


def test_the_seed_fills_every_table(db: Database) -> None:
    seed = seed_workspace(db, new_team(), new_user(), new_user())
    every = {t.name for t in Base.metadata.sorted_tables if "team_id" in t.c}
    assert every - tables_with_rows(db, seed.team_id) == {"data_rights_records"}
    assert readable(team_rows(db, seed.team_id), seed.user)  # the scan below can find what it looks for


def test_forget_leaves_nothing_of_the_person_readable(db: Database) -> None:
    user, other = new_user(), new_user()
    a = seed_workspace(db, new_team(), user, other)
    b = seed_workspace(db, new_team(), user, other)  # the same person in another workspace
    b_before = team_rows(db, b.team_id)

    result = forget(db, a.team_id, user, requested_by="cli:test")

    after = team_rows(db, a.team_id)
    assert readable(after, user) == []
    for text in a.their_texts:
        assert readable(after, text) == [], text
    alias = pseudonym(a.team_id, user)
    assert result.pseudonym == alias and result.recorded and result.previously_done_at is None
    assert result.deleted["inbox_events"] == 2  # the handled and the unhandled payload that named them
    assert result.deleted["feedback_text_versions"] == 1 and result.deleted["feedback_vectors"] == 1
    assert result.deleted["workspace_admins"] == 1 and result.deleted["account_brief_subscriptions"] == 1
    assert result.deleted["ship_notices"] == 1
    assert result.changed["feedback_items"] == 3 and result.changed["requests"] == 3
    assert b_before == team_rows(db, b.team_id)  # the other workspace is untouched

    with db.read() as s:
        item = s.get(FeedbackItem, a.ids["item"])
        captured = s.get(FeedbackItem, a.ids["captured"])
        mention = s.get(FeedbackItem, a.ids["mention"])
        assert item and item.text == REMOVED_TEXT and item.author_user_id == alias
        assert item.captured_by_user_id == other and item.theme_id is not None  # the rest of the item stays
        assert captured and captured.text.startswith("Customer says SSO") and captured.note is None
        assert captured.captured_by_user_id == alias and captured.author_user_id == other
        assert mention and mention.text == f"<@{alias}> said the export is slow"
        replies = {
            r.user_id: r.text
            for r in s.scalars(select(FeedbackReply).where(FeedbackReply.team_id == a.team_id))
        }
        assert replies == {alias: REMOVED_TEXT, other: a.other_texts[1]}
        # The removed text's vector was deleted and the model fitted again without it (vectors re-encoded).
        rows = s.execute(
            select(FeedbackVector.feedback_id, FeedbackVector.model_version).where(
                FeedbackVector.team_id == a.team_id
            )
        ).all()
        vectors = {r.feedback_id: r.model_version for r in rows}
        assert vectors == {a.ids["item"]: 2, a.ids["captured"]: 2, a.ids["mention"]: 2}
        models = s.scalars(select(SimilarityModel.version).where(SimilarityModel.team_id == a.team_id)).all()
        assert sorted(models) == [1, 2]
        asked = s.get(Request, a.ids["asked"])
        assert asked and asked.title == REMOVED_TEXT and asked.details is None and asked.field_values == {}
        assert asked.requester_user_id == alias
        open_one, done_one = s.get(Request, a.ids["assigned_open"]), s.get(Request, a.ids["assigned_done"])
        assert open_one and open_one.assignee_user_id is None and open_one.title == a.other_texts[2]
        assert done_one and done_one.assignee_user_id == alias
        types = list(s.scalars(select(RequestType).where(RequestType.team_id == a.team_id)))
        assert [t.owners for t in types] == [[other]]
        admins = list(s.scalars(select(WorkspaceAdmin).where(WorkspaceAdmin.team_id == a.team_id)))
        assert [(x.user_id, x.added_by_user_id) for x in admins] == [(other, alias)]
        owners = {
            x.name.split()[0]: x.owner_user_id
            for x in s.scalars(select(Account).where(Account.team_id == a.team_id))
        }
        assert owners == {"Acme": None, "Globex": other}
        subscription = s.get(DigestSubscription, a.ids["subscription"])
        assert subscription and subscription.created_by_user_id == alias and subscription.paused_at is None
        outbox = {
            o.period_key[0]: o.text
            for o in s.scalars(select(DigestOutbox).where(DigestOutbox.team_id == a.team_id))
        }
        assert outbox == {"a": REMOVED_TEXT, "b": "Requests: 3 open"}
        records = list(s.scalars(select(DataRightsRecord).where(DataRightsRecord.team_id == a.team_id)))
    with db.inbox.read() as s:
        inbox = list(s.scalars(select(InboxEvent).where(InboxEvent.team_id == a.team_id)))
    assert [e.body["event"]["user"] for e in inbox] == [other]
    assert len(records) == 1
    assert records[0].action == "forget" and records[0].subject_hash == subject_hash(a.team_id, user)
    assert records[0].requested_by == "cli:test" and records[0].counts["deleted"]["inbox_events"] == 2
    assert user not in json.dumps(records[0].counts)


def test_forget_twice_changes_nothing_more(db: Database) -> None:
    a = seed_workspace(db, new_team(), new_user(), new_user())
    first = forget(db, a.team_id, a.user, requested_by="cli:test")
    before = team_rows(db, a.team_id)
    second = forget(db, a.team_id, a.user, requested_by="cli:test")
    assert first.total > 0
    assert second.total == 0 and not second.recorded and second.previously_done_at is not None
    assert team_rows(db, a.team_id) == before


def test_what_arrives_after_forgetting_is_forgotten_next_time(db: Database) -> None:
    a = seed_workspace(db, new_team(), new_user(), new_user())
    forget(db, a.team_id, a.user, requested_by="cli:test")
    alias = pseudonym(a.team_id, a.user)
    with (
        db.session() as s
    ):  # they edited their message in Slack after being forgotten: the bot took the new text
        item = s.get(FeedbackItem, a.ids["item"])
        assert item is not None
        item.text = "Edited after the fact: export still drops the column"
        s.add(FeedbackItem(team_id=a.team_id, channel_id="C9", text="A brand new one", author_user_id=a.user,
                           captured_by_user_id=a.user, source="command"))  # fmt: skip
    again = forget(db, a.team_id, a.user, requested_by="cli:test")
    assert again.changed == {"feedback_items": 2} and again.recorded
    rows = team_rows(db, a.team_id)
    assert readable(rows, "Edited after the fact") == [] and readable(rows, "A brand new one") == []
    assert readable(rows, a.user) == [] and readable(rows, alias)
    with db.read() as s:
        records = s.scalars(select(DataRightsRecord).where(DataRightsRecord.team_id == a.team_id)).all()
    assert len(records) == 2


def test_a_person_with_nothing_is_recorded_once(db: Database) -> None:
    a = seed_workspace(db, new_team(), new_user(), new_user())
    before = team_rows(db, a.team_id)
    stranger = new_user()
    first = forget(db, a.team_id, stranger, requested_by="cli:test")
    second = forget(db, a.team_id, stranger, requested_by="cli:test")
    assert first.total == 0 and first.recorded and second.total == 0 and not second.recorded
    after = team_rows(db, a.team_id)
    assert len(after.pop("data_rights_records")) == 1
    before.pop("data_rights_records")
    assert after == before


def test_a_user_id_is_a_whole_token(db: Database) -> None:
    a = seed_workspace(db, new_team(), new_user(), new_user())
    longer = a.other + "X"  # U123 must not match inside U123X
    with db.session() as s:
        s.add(FeedbackItem(team_id=a.team_id, channel_id="C8", text=f"ping <@{longer}>", author_user_id=longer,
                           captured_by_user_id=longer, source="command"))  # fmt: skip
    forget(db, a.team_id, a.other, requested_by="cli:test")
    with db.read() as s:
        row = s.scalars(
            select(FeedbackItem).where(FeedbackItem.channel_id == "C8", FeedbackItem.team_id == a.team_id)
        ).one()
    assert row.text == f"ping <@{longer}>" and row.author_user_id == longer


@pytest.mark.parametrize("bad", ["alice", "u123abc", "U1", "U123; DROP", "%"])
def test_bad_user_ids_are_refused_before_anything_changes(db: Database, bad: str) -> None:
    a = seed_workspace(db, new_team(), new_user(), new_user())
    before = team_rows(db, a.team_id)
    with pytest.raises(InvalidUserId):
        forget(db, a.team_id, bad, requested_by="cli:test")
    assert team_rows(db, a.team_id) == before


def test_installation_rows_do_not_keep_the_installer(db: Database) -> None:
    a = seed_workspace(db, new_team(), new_user(), new_user())
    forget(db, a.team_id, a.user, requested_by="cli:test")
    with db.read() as s:
        installs = s.execute(
            select(slack_installations).where(slack_installations.c.team_id == a.team_id)
        ).all()
    assert [row.user_id for row in installs] == [pseudonym(a.team_id, a.user)]
    assert installs[0].bot_token == "gAAAA-encrypted"  # the app keeps working


def test_pseudonyms_are_keyed_by_a_secret_outside_the_database(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hashlib

    from bot.security.records import pseudonym_key
    from bot.settings import ConfigError

    team, user = new_team(), new_user()
    # A plain hash would let anyone with the member list re-identify the person; a keyed one does not.
    assert subject_hash(team, user) != hashlib.sha256(f"{team}:{user}".encode()).hexdigest()
    assert pseudonym(team, user) == pseudonym(team, user, PSEUDONYM_SECRET.encode())
    assert pseudonym(team, user, b"another deployment") != pseudonym(team, user)
    key = Fernet.generate_key().decode()
    monkeypatch.setenv("PRODOPS_ENCRYPTION_KEY", f"{key}, {Fernet.generate_key().decode()}")
    assert pseudonym_key() == key.encode()  # the newest encryption key wins over the signing secret

    a = seed_workspace(db, new_team(), new_user(), new_user())
    before = team_rows(db, a.team_id)
    monkeypatch.delenv("PRODOPS_ENCRYPTION_KEY")
    monkeypatch.delenv("SLACK_SIGNING_SECRET")
    with pytest.raises(ConfigError, match="PRODOPS_ENCRYPTION_KEY.*Nothing was changed"):
        forget(db, a.team_id, a.user, requested_by="cli:test")
    assert team_rows(db, a.team_id) == before


# ---- prodops forget ------------------------------------------------------------------------------------


def _run(monkeypatch: pytest.MonkeyPatch, *argv: str, answer: str = "") -> int:
    from bot.cli import main

    monkeypatch.setattr("sys.stdin", io.StringIO(answer))
    try:
        main(list(argv))
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def test_prodops_forget(
    db: Database, migrated_db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", migrated_db_url)
    monkeypatch.setenv("COLUMNS", "160")
    a = seed_workspace(db, new_team(), new_user(), new_user())
    before = team_rows(db, a.team_id)

    assert _run(monkeypatch, "forget", "--team", a.team_id, "--user", "alice", "--yes") == 2
    assert "not a Slack user id" in capsys.readouterr().err
    assert _run(monkeypatch, "forget", "--team", "TNOSUCHTEAM", "--user", a.user, "--yes") == 2
    assert "No workspace TNOSUCHTEAM" in capsys.readouterr().err
    assert _run(monkeypatch, "forget", "--team", a.team_id, "--user", a.user, answer="n\n") == 1
    assert "Nothing was changed" in capsys.readouterr().err
    assert team_rows(db, a.team_id) == before
    with monkeypatch.context() as no_secret:
        no_secret.delenv("SLACK_SIGNING_SECRET")
        assert _run(monkeypatch, "forget", "--team", a.team_id, "--user", a.user, "--yes") == 2
        assert "set PRODOPS_ENCRYPTION_KEY" in capsys.readouterr().err
    assert team_rows(db, a.team_id) == before

    assert _run(monkeypatch, "forget", "--team", a.team_id, "--user", a.user, answer="y\n") == 0
    out = capsys.readouterr().out
    assert f"Forgot {a.user} in {a.team_id}" in out and "inbox_events" in out and "Done." in out
    assert readable(team_rows(db, a.team_id), a.user) == []

    assert _run(monkeypatch, "forget", "--team", a.team_id, "--user", a.user, "--yes") == 0
    assert "Nothing left to forget" in capsys.readouterr().out
