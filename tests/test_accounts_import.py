"""`prodops import accounts`: parsing, validation per line, owners via Slack, upsert, and the CLI, on both backends."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
import time
from collections.abc import Collection, Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from slack_sdk import WebClient
from sqlalchemy import event, func, select

from bot.accounts.importer import (
    AccountImportError,
    AccountRow,
    ImportResult,
    import_accounts,
    parse_accounts_csv,
    parse_arr,
    resolve_owners,
)
from bot.devkit.emulator import SlackEmulator
from storage.db import Database
from storage.models import Account, Workspace
from tests.helpers import unique

DATA = Path(__file__).parent / "data"
CONTRACT_VARS = (
    "SLACK_BOT_TOKEN",
    "SLACK_SIGNING_SECRET",
    "SLACK_APP_TOKEN",
    "SLACK_API_URL",
    "DATABASE_URL",
)


# ---- helpers -------------------------------------------------------------------------------------


def _csv(rows: list[dict[str, str]], columns: tuple[str, ...] = ("name", "domain", "arr", "segment")) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def _generated(count: int, *, arr_bump: Collection[int] = ()) -> str:
    return _csv(
        [
            {
                "name": f"Customer {i:05d}",
                "domain": f"customer{i:05d}.example.com",
                "arr": f"${(i * 1000 + (7 if i in arr_bump else 0)):,}",
                "segment": ("Enterprise", "Mid-market", "SMB")[i % 3],
            }
            for i in range(count)
        ]
    )


def _parse_ok(text: str) -> list[AccountRow]:
    rows, errors = parse_accounts_csv(text)
    assert errors == []
    return rows


def _import(db: Database, team: str, text: str, *, dry_run: bool = False) -> ImportResult:
    rows = _parse_ok(text)
    with db.session() as session:
        return import_accounts(db_session=session, team_id=team, rows=rows, dry_run=dry_run)


def _accounts(db: Database, team: str) -> dict[str, Account]:
    with db.session() as session:
        return {a.name: a for a in session.scalars(select(Account).where(Account.team_id == team))}


def _count(db: Database, team: str) -> int:
    with db.session() as session:
        return session.scalar(select(func.count()).select_from(Account).where(Account.team_id == team)) or 0


def _client(emu: SlackEmulator) -> WebClient:
    return WebClient(token=emu.bot_token, base_url=emu.url)


@pytest.fixture
def emu() -> Iterator[SlackEmulator]:
    with SlackEmulator() as emulator:
        yield emulator


# ---- parsing (no database) -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("120000", "120000.00"),
        ("120,000", "120000.00"),
        ("$120,000.50", "120000.50"),
        ("120k", "120000.00"),
        ("120K", "120000.00"),
        ("1.2M", "1200000.00"),
        ("$1.5m", "1500000.00"),
        ("2bn", "2000000000.00"),
        ("€ 99.999", "100.00"),
        ("0", "0.00"),
        ("  42  ", "42.00"),
        ("1,234,567.891", "1234567.89"),
        (".5k", "500.00"),
    ],
)
def test_arr_accepts_the_usual_ways_of_writing_money(text: str, expected: str) -> None:
    assert parse_arr(text) == Decimal(expected)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("abc", 'arr "abc" is not a number'),
        ("-5", 'arr "-5" is negative'),
        ("$-1,000", 'arr "$-1,000" is negative'),
        ("(500)", 'arr "(500)" is negative'),
        ("1.234,56", 'arr "1.234,56" is not a number'),
        ("12,34", 'arr "12,34" is not a number'),
        ("1.2.3", 'arr "1.2.3" is not a number'),
        ("10x", 'arr "10x" is not a number'),
        ("k", 'arr "k" is not a number'),
        ("1e6", 'arr "1e6" is not a number'),
        ("999999999999999", 'arr "999999999999999" is too large'),
    ],
)
def test_arr_rejects_negative_and_non_numbers_saying_why(text: str, reason: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_arr(text)
    assert str(info.value) == reason


def test_header_is_case_insensitive_order_free_and_bom_is_ignored() -> None:
    text = "\ufeffOwner, ARR ,Name,DOMAIN,Segment\nU0123ABC,120k,  ACME   Corp ,https://www.Acme.com/,Enterprise\n"
    rows, errors = parse_accounts_csv(text.encode("utf-8"))
    assert errors == []
    (row,) = rows
    assert (row.line, row.name, row.name_key, row.domain, row.arr, row.segment) == (
        2,
        "ACME Corp",
        "acme corp",
        "acme.com",
        Decimal("120000.00"),
        "Enterprise",
    )
    assert row.owner_user_id == "U0123ABC"  # a user id needs no look-up
    assert parse_accounts_csv("name\nAcme\n")[0][0].domain is None  # only name is required


def test_every_bad_line_is_reported_with_its_number_and_reason() -> None:
    text = (
        "name,domain,arr,segment,owner\n"  # 1
        "Good One,good.com,1k,,\n"  # 2
        "Bad Arr,badarr.com,abc,,\n"  # 3
        ",noname.com,5,,\n"  # 4
        "\n"  # 5 blank lines are skipped
        "good one,other.com,,,\n"  # 6 same name as line 2
        "Other,https://GOOD.com/,,,\n"  # 7 same domain as line 2
        f"Long Segment,,,{'x' * 65},\n"  # 8
        "Bad Owner,,,,someone\n"  # 9
        "Bad Domain,not a domain,,,\n"  # 10
        'Two Problems,,-3,,"nobody"\n'  # 11
        "Too many,a.com,1,s,U1,extra\n"  # 12
        '"Multi\nline",multi.com,"1,000",,\n'  # 13-14: reported at the line it starts on
        "Last,,12,34,\n"  # 15 -- "12" is arr, "34" segment: valid
    )
    rows, errors = parse_accounts_csv(text)
    assert [str(e) for e in errors] == [
        'line 3: arr "abc" is not a number',
        "line 4: name is missing",
        'line 6: name "good one" is already on line 2',
        'line 7: domain "good.com" is already on line 2',
        "line 8: segment is longer than 64 characters",
        'line 9: owner "someone" is neither a Slack user id (like U0123ABC) nor an email',
        'line 10: domain "not a domain" is not a domain name (like acme.com)',
        'line 11: arr "-3" is negative',
        'line 11: owner "nobody" is neither a Slack user id (like U0123ABC) nor an email',
        "line 12: has 6 fields but the header has 5",
    ]
    assert [(r.line, r.name) for r in rows] == [(2, "Good One"), (13, "Multi line"), (15, "Last")]


def test_an_unclosed_quote_is_refused_at_its_line_and_nothing_is_kept() -> None:
    text = 'name,domain,arr\nAcme,acme.com,1k\n"Globex,globex.com,2k\nInitech,initech.com,3k\nUmbrella,u.com,4k\n'
    rows, errors = parse_accounts_csv(text)
    assert [str(e) for e in errors] == [
        "line 3: a quoted value starts on this line but its closing quote is missing, so the rest of the file "
        'would become one value; close the quote (write "" for a quote inside a value)'
    ]
    assert all("Initech" not in row.name for row in rows)  # nothing swallowed the rest of the file
    _, after_quote = parse_accounts_csv('name,domain\n"Acme" Corp,acme.com\n')
    assert [str(e) for e in after_quote] == [
        'line 2: a quoted value has text after its closing quote; quote the whole value (write "" for a quote '
        "inside it)"
    ]


def test_header_problems_are_line_1_and_typos_are_caught() -> None:
    _, errors = parse_accounts_csv("name,segmnet,Domain,domain\nAcme,x,a.com,b.com\n")
    assert [str(e) for e in errors] == [
        'line 1: unknown column "segmnet" (expected name, domain, arr, segment, owner)',
        'line 1: column "domain" appears twice',
    ]
    _, errors = parse_accounts_csv("company,arr\nAcme,1\n")
    assert [e.line for e in errors] == [1, 1]
    assert "no name column" in errors[-1].message
    assert [str(e) for e in parse_accounts_csv("")[1]] == [
        "line 1: the file is empty; expected a header row with at least a name column"
    ]
    rows, errors = parse_accounts_csv(b"name\nAcme\n\xff\xfeBad\n")
    assert (rows, [str(e) for e in errors]) == (
        [],
        ["line 3: is not valid UTF-8 (save the file as CSV UTF-8)"],
    )


# ---- import (both backends) ------------------------------------------------------------------------


def test_ten_thousand_rows_in_one_transaction_then_reimport_and_change_some(db: Database) -> None:
    team = unique("T")
    text = _generated(10_000)
    commits: list[int] = []
    listener = lambda _conn: commits.append(1)  # noqa: E731
    event.listen(db.engine, "commit", listener)
    try:
        started = time.perf_counter()
        rows = _parse_ok(text)
        parsed = time.perf_counter()
        with db.session() as session:
            result = import_accounts(db_session=session, team_id=team, rows=rows)
        finished = time.perf_counter()
    finally:
        event.remove(db.engine, "commit", listener)
    print(
        f"\n[{db.backend}] 10,000 rows: parse+validate {parsed - started:.2f}s, "
        f"import {finished - parsed:.2f}s, total {finished - started:.2f}s"
    )
    assert result == ImportResult(created=10_000, updated=0, unchanged=0)
    assert len(commits) == 1
    assert _count(db, team) == 10_000

    started = time.perf_counter()
    again = _import(db, team, text)
    print(f"[{db.backend}] re-import of the same 10,000 rows: {time.perf_counter() - started:.2f}s")
    assert again == ImportResult(created=0, updated=0, unchanged=10_000)

    bumped = {3, 4_321, 9_999}
    changed = _import(db, team, _generated(10_000, arr_bump=bumped))
    assert changed == ImportResult(created=0, updated=3, unchanged=9_997)
    accounts = _accounts(db, team)
    assert len(accounts) == 10_000
    assert accounts["Customer 04321"].arr == Decimal("4321007.00")
    assert accounts["Customer 04322"].arr == Decimal("4322000.00")


def test_three_bad_lines_are_reported_and_nothing_is_imported(db: Database, emu: SlackEmulator) -> None:
    team = unique("T")
    _import(db, team, _csv([{"name": "Kept", "domain": "kept.com", "arr": "10", "segment": ""}]))
    before = {name: (a.arr, a.updated_at) for name, a in _accounts(db, team).items()}
    emu.add_user("ann", email="ann@vendor.test")
    text = (
        "name,domain,arr,owner\n"
        "Kept,kept.com,999,ann@vendor.test\n"  # 2 good (would update)
        "Bad Arr,badarr.com,abc,\n"  # 3
        "New One,new.com,5,\n"  # 4 good (would create)
        ",noname.com,5,\n"  # 5
        "Also New,,7,U0SOMEONE\n"  # 6 good
        "Ghost Owned,ghost.com,1,ghost@vendor.test\n"  # 7
    )
    rows, errors = parse_accounts_csv(text)
    errors += resolve_owners(rows, _client(emu))
    errors.sort(key=lambda e: e.line)
    assert [str(e) for e in errors] == [
        'line 3: arr "abc" is not a number',
        "line 5: name is missing",
        'line 7: owner "ghost@vendor.test" is not a user in this Slack workspace',
    ]
    # The CLI never calls import_accounts when there are errors; the database is untouched.
    assert {name: (a.arr, a.updated_at) for name, a in _accounts(db, team).items()} == before


def test_domain_is_normalised_for_matching(db: Database) -> None:
    team = unique("T")
    _import(db, team, _csv([{"name": "Acme", "domain": "acme.com", "arr": "100", "segment": "SMB"}]))
    result = _import(
        db,
        team,
        _csv([{"name": "Acme Corporation", "domain": "https://www.Acme.com/", "arr": "", "segment": ""}]),
    )
    assert result == ImportResult(created=0, updated=1, unchanged=0)
    (account,) = _accounts(db, team).values()
    # Matched by domain, so renamed; empty cells keep what was there.
    assert (account.name, account.name_key, account.domain, account.arr, account.segment) == (
        "Acme Corporation",
        "acme corporation",
        "acme.com",
        Decimal("100.00"),
        "SMB",
    )
    # Then by name (any case and spacing) when the domain is new or missing: the domain is filled in.
    result = _import(
        db, team, _csv([{"name": "ACME  corporation", "domain": "acme.io", "arr": "1.5k", "segment": ""}])
    )
    assert result == ImportResult(created=0, updated=1, unchanged=0)
    (account,) = _accounts(db, team).values()
    assert (account.name, account.domain, account.arr) == ("ACME corporation", "acme.io", Decimal("1500.00"))


def test_rows_that_would_merge_two_accounts_are_rejected_before_writing(db: Database) -> None:
    team = unique("T")
    _import(
        db,
        team,
        _csv(
            [
                {"name": "Acme", "domain": "acme.com", "arr": "1", "segment": ""},
                {"name": "Acme Inc", "domain": "", "arr": "2", "segment": ""},
            ]
        ),
    )
    text = _csv(
        [
            {"name": "Brand New", "domain": "", "arr": "3", "segment": ""},
            {
                "name": "Acme Inc",
                "domain": "acme.com",
                "arr": "4",
                "segment": "",
            },  # 3: domain→Acme, name→Acme Inc
            {"name": "Acme", "domain": "acme.io", "arr": "5", "segment": ""},  # 4: Acme by name (new domain)
        ]
    )
    with pytest.raises(AccountImportError) as info:
        _import(db, team, text)
    assert [str(e) for e in info.value.errors] == [
        'line 3: domain "acme.com" belongs to account "Acme" but name "Acme Inc" belongs to another account',
        'line 4: matches the same account as line 3 ("Acme")',
    ]
    assert set(_accounts(db, team)) == {"Acme", "Acme Inc"}
    assert _accounts(db, team)["Acme"].arr == Decimal("1.00")

    twice = _csv(
        [
            {"name": "Renamed", "domain": "acme.com", "arr": "", "segment": ""},  # 2: Acme by domain
            {"name": "Acme", "domain": "", "arr": "9", "segment": ""},  # 3: Acme again, by name
        ]
    )
    with pytest.raises(AccountImportError) as info:
        _import(db, team, twice)
    assert [str(e) for e in info.value.errors] == ['line 3: matches the same account as line 2 ("Acme")']


def test_dry_run_counts_but_writes_nothing(db: Database) -> None:
    team = unique("T")
    _import(db, team, _generated(5))
    result = _import(db, team, _generated(8, arr_bump={1}), dry_run=True)
    assert result == ImportResult(created=3, updated=1, unchanged=4)
    assert _count(db, team) == 5
    assert _accounts(db, team)["Customer 00001"].arr == Decimal("1000.00")


def test_owner_emails_are_resolved_once_each(db: Database, emu: SlackEmulator) -> None:
    team = unique("T")
    ann = emu.add_user("ann", email="ann@vendor.test")
    bob = emu.add_user("bob", email="bob@vendor.test")
    gone = emu.add_user("gone", email="gone@vendor.test")
    emu.reset_calls()
    text = (
        "name,owner\n"
        "One,ann@vendor.test\n"
        "Two,ANN@Vendor.test\n"
        "Three,bob@vendor.test\n"
        "Four,U0DIRECT\n"
        "Five,\n"
        "Six,ann@vendor.test\n"
    )
    rows = _parse_ok(text)
    assert resolve_owners(rows, _client(emu)) == []
    assert len(emu.calls("users.lookupByEmail")) == 2
    with db.session() as session:
        import_accounts(db_session=session, team_id=team, rows=rows)
    owners = {name: a.owner_user_id for name, a in _accounts(db, team).items()}
    assert owners == {
        "One": ann["id"],
        "Two": ann["id"],
        "Three": bob["id"],
        "Four": "U0DIRECT",
        "Five": None,
        "Six": ann["id"],
    }
    # Unknown and deactivated users are line errors; each distinct email is still asked about once.
    emu._state.team().users[gone["id"]]["deleted"] = True
    emu.reset_calls()
    rows = _parse_ok("name,owner\nA,nobody@vendor.test\nB,gone@vendor.test\nC,NOBODY@vendor.test\n")
    assert [str(e) for e in resolve_owners(rows, _client(emu))] == [
        'line 2: owner "nobody@vendor.test" is not a user in this Slack workspace',
        'line 3: owner "gone@vendor.test" is a deactivated Slack user',
        'line 4: owner "nobody@vendor.test" is not a user in this Slack workspace',
    ]
    assert len(emu.calls("users.lookupByEmail")) == 2


# ---- the command line ------------------------------------------------------------------------------


# Until bot/cli.py registers `import`, run the command through the same wiring main() will use.
def _prodops(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in CONTRACT_VARS and not k.startswith("PRODOPS_")}
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", *args],
        cwd=cwd,
        env={**clean, "PYTHONPATH": str(Path(__file__).parent.parent), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_end_to_end(empty_db_url: str, emu: SlackEmulator, tmp_path: Path) -> None:
    ann = emu.add_user("ann", email="ann@vendor.test")
    slack = {"DATABASE_URL": empty_db_url, "SLACK_BOT_TOKEN": emu.bot_token, "SLACK_API_URL": emu.url}
    good = DATA / "accounts.csv"

    dry = _prodops(["import", "accounts", str(good), "--team", emu.team_id, "--dry-run"], tmp_path, **slack)
    assert dry.returncode == 0, dry.stderr
    assert "would be 4 created, 0 updated, 0 unchanged" in dry.stdout

    done = _prodops(["import", "accounts", str(good), "--team", emu.team_id], tmp_path, **slack)
    assert done.returncode == 0, done.stderr
    assert (
        done.stdout.strip()
        == f"Imported 4 account(s) from {good} into {emu.team_id}: 4 created, 0 updated, 0 unchanged."
    )
    db = Database(empty_db_url)
    try:
        accounts = _accounts(db, emu.team_id)
        assert accounts["Acme Corp"].owner_user_id == ann["id"]
        assert accounts["Acme Corp"].arr == Decimal("120000.50")
        assert accounts["Globex"].domain == "globex.com"

        # No --team: the bot token's workspace (auth.test). Same file again: nothing changes.
        again = _prodops(["import", "accounts", str(good)], tmp_path, **slack)
        assert again.returncode == 0, again.stderr
        assert "0 created, 0 updated, 4 unchanged" in again.stdout

        bad = tmp_path / "bad.csv"
        bad.write_text(
            "name,domain,arr,owner\nAcme Corp,acme.com,1,\nOops,,abc,\n,x.com,,\nWho,,,ghost@vendor.test\n",
            encoding="utf-8",
        )
        failed = _prodops(["import", "accounts", str(bad), "--team", emu.team_id], tmp_path, **slack)
        assert failed.returncode == 1
        assert failed.stdout == ""
        assert 'line 3: arr "abc" is not a number' in failed.stderr
        assert "line 4: name is missing" in failed.stderr
        assert 'line 5: owner "ghost@vendor.test" is not a user in this Slack workspace' in failed.stderr
        assert "nothing was imported" in failed.stderr
        assert accounts["Acme Corp"].arr == _accounts(db, emu.team_id)["Acme Corp"].arr

        # Configuration problems exit 2: emails without a token; no way to tell the workspace.
        no_token = _prodops(
            ["import", "accounts", str(good), "--team", "T1"], tmp_path, DATABASE_URL=empty_db_url
        )
        assert no_token.returncode == 2
        assert "SLACK_BOT_TOKEN" in no_token.stderr and "Traceback" not in no_token.stderr
        ids_only = tmp_path / "ids.csv"
        ids_only.write_text("name,owner\nSolo,U0123ABC\n", encoding="utf-8")
        no_team = _prodops(["import", "accounts", str(ids_only)], tmp_path, DATABASE_URL=empty_db_url)
        assert no_team.returncode == 2
        assert "--team" in no_team.stderr and "Traceback" not in no_team.stderr
        missing = _prodops(
            ["import", "accounts", str(tmp_path / "nope.csv")], tmp_path, DATABASE_URL=empty_db_url
        )
        assert missing.returncode == 2 and "nope.csv" in missing.stderr

        # Exactly one workspace in the database: that one.
        with db.session() as session:
            session.add(Workspace(team_id="T0ONLY", name="Only"))
        solo = _prodops(["import", "accounts", str(ids_only)], tmp_path, DATABASE_URL=empty_db_url)
        assert solo.returncode == 0, solo.stderr
        assert _accounts(db, "T0ONLY")["Solo"].owner_user_id == "U0123ABC"
    finally:
        db.dispose()
