"""Import accounts from a CSV file: parse and validate every line, resolve owners, then upsert in one go.

The steps are separate so each can be tested alone and the CLI can show progress between them:

1. `parse_accounts_csv` reads the file and returns valid rows plus an error for every bad line;
2. `resolve_owners` turns owner emails into Slack user ids (one `users.lookupByEmail` per distinct email);
3. `import_accounts` upserts the rows into one workspace, matching existing accounts by domain, then name.

Nothing is written unless every line is valid (`import_accounts` raises `AccountImportError` before
touching the session when rows conflict with existing accounts).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ValidationError, field_validator
from slack_sdk.errors import SlackApiError
from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.accounts.service import name_key, normalise_domain
from storage.models import Account

COLUMNS = ("name", "domain", "arr", "segment", "owner")
NAME_MAX = 255
DOMAIN_MAX = 255
SEGMENT_MAX = 64
ARR_MAX = Decimal("99999999999999.99")  # Numeric(16, 2)
FLUSH_EVERY = 1000

Progress = Callable[[int], None]

_SPACES = re.compile(r"\s+")
_ARR = re.compile(
    r"(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d*)?|\d+(?:\.\d*)?|\.\d+)\s*(?P<suffix>[kmb]|bn|mm)?",
    re.IGNORECASE,
)
_MULTIPLIERS = {"": 1, "k": 1_000, "m": 1_000_000, "mm": 1_000_000, "b": 1_000_000_000, "bn": 1_000_000_000}
_CURRENCY = "$€£¥"
_DOMAIN = re.compile(r"^(?:[\w-]+\.)+[\w-]{2,}$")
_USER_ID = re.compile(r"^[UW][A-Z0-9]{2,}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


@dataclass(frozen=True)
class LineError:
    """One problem, on one line of the file (the header is line 1)."""

    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


def by_line(errors: Iterable[LineError]) -> list[LineError]:
    """Errors in file order (several on one line keep the order they were found in)."""
    return sorted(errors, key=lambda e: e.line)


class AccountImportError(Exception):
    """The rows cannot be imported as they are; nothing was written."""

    def __init__(self, errors: Sequence[LineError]) -> None:
        self.errors = by_line(errors)
        super().__init__("; ".join(str(e) for e in self.errors))


@dataclass(frozen=True)
class ImportResult:
    """What an import did (or, for a dry run, would do)."""

    created: int
    updated: int
    unchanged: int

    @property
    def total(self) -> int:
        """Rows in the file."""
        return self.created + self.updated + self.unchanged


def parse_arr(value: str) -> Decimal:
    """`"$120,000.50"`, `"120k"`, `"1.2M"` → Decimal with cents; raises ValueError saying why not."""
    text = value.strip()
    negative = False
    if text.startswith("(") and text.endswith(")"):  # accounting style: (500) is -500
        negative, text = True, text[1:-1].strip()
    if text.startswith("-"):
        negative, text = True, text[1:].strip()
    if text[:1] in _CURRENCY:
        text = text[1:].strip()
    if text.startswith("-"):  # "$-5"
        negative, text = True, text[1:].strip()
    if text[-1:] in _CURRENCY:  # "120 000€" is not accepted, but "120000€" is
        text = text[:-1].strip()
    match = _ARR.fullmatch(text)
    if not match:
        raise ValueError(f'arr "{value}" is not a number')
    try:
        amount = Decimal(match["num"].replace(",", "")) * _MULTIPLIERS[(match["suffix"] or "").lower()]
    except InvalidOperation as exc:  # pragma: no cover - the regex only lets digits through
        raise ValueError(f'arr "{value}" is not a number') from exc
    if negative and amount != 0:
        raise ValueError(f'arr "{value}" is negative')
    amount = amount.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    if amount > ARR_MAX:
        raise ValueError(f'arr "{value}" is too large')
    return amount


def _blank_to_none(value: Any) -> Any:
    if isinstance(value, str):
        value = value.strip()
        return value or None
    return value


class AccountRow(BaseModel):
    """One valid line of the file. Optional fields left empty (None) keep what an existing account has."""

    line: int
    name: str
    domain: str | None = None
    arr: Decimal | None = None
    segment: str | None = None
    owner: str | None = None  # as written: a Slack user id or an email
    owner_user_id: str | None = None  # the Slack user id (set by `resolve_owners` for emails)

    @field_validator("name", mode="before")
    @classmethod
    def _name(cls, value: Any) -> Any:
        value = _SPACES.sub(" ", value).strip() if isinstance(value, str) else value
        if not value:
            raise ValueError("name is missing")
        if len(value) > NAME_MAX:
            raise ValueError(f"name is longer than {NAME_MAX} characters")
        return value

    @field_validator("domain", mode="before")
    @classmethod
    def _domain(cls, value: Any) -> Any:
        value = _blank_to_none(value)
        if value is None:
            return None
        domain = normalise_domain(value)
        if not domain or not _DOMAIN.match(domain) or len(domain) > DOMAIN_MAX:
            raise ValueError(f'domain "{value}" is not a domain name (like acme.com)')
        return domain

    @field_validator("arr", mode="before")
    @classmethod
    def _arr(cls, value: Any) -> Any:
        value = _blank_to_none(value)
        return parse_arr(value) if isinstance(value, str) else value

    @field_validator("segment", mode="before")
    @classmethod
    def _segment(cls, value: Any) -> Any:
        value = _blank_to_none(value)
        if isinstance(value, str) and len(value) > SEGMENT_MAX:
            raise ValueError(f"segment is longer than {SEGMENT_MAX} characters")
        return value

    @field_validator("owner", mode="before")
    @classmethod
    def _owner(cls, value: Any) -> Any:
        value = _blank_to_none(value)
        if value is None:
            return None
        if isinstance(value, str) and (_USER_ID.match(value) or _EMAIL.match(value)):
            return value
        raise ValueError(f'owner "{value}" is neither a Slack user id (like U0123ABC) nor an email')

    def model_post_init(self, _context: Any) -> None:
        """An owner given as a user id needs no look-up."""
        if self.owner and self.owner_user_id is None and _USER_ID.match(self.owner):
            self.owner_user_id = self.owner

    @property
    def name_key(self) -> str:
        """The comparable form of the name."""
        return name_key(self.name)

    @property
    def owner_email(self) -> str | None:
        """The owner's email, lower-cased, when the owner was given as one."""
        return self.owner.lower() if self.owner and "@" in self.owner else None


def _messages(exc: ValidationError) -> list[str]:
    """Our validators' own words, without pydantic's "Value error, " prefix."""
    out = []
    for err in exc.errors():
        cause = (err.get("ctx") or {}).get("error")
        field = ".".join(str(part) for part in err.get("loc", ()))
        out.append(str(cause) if cause is not None else f"{field}: {err.get('msg')}")
    return out


def _decode(source: str | bytes | Path) -> tuple[str | None, LineError | None]:
    """The file's text (UTF-8, BOM or not), or where it stops being UTF-8."""
    data = source.read_bytes() if isinstance(source, Path) else source
    if isinstance(data, str):
        return data.removeprefix("\ufeff"), None
    try:
        return data.decode("utf-8-sig"), None
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        return None, LineError(line, "is not valid UTF-8 (save the file as CSV UTF-8)")


def _csv_problem(exc: csv.Error) -> str:
    """What a CSV syntax error means for the person who wrote the file."""
    if "unexpected end of data" in str(exc):
        return (
            "a quoted value starts on this line but its closing quote is missing, so the rest of the file "
            'would become one value; close the quote (write "" for a quote inside a value)'
        )
    if "expected after" in str(exc):
        return 'a quoted value has text after its closing quote; quote the whole value (write "" for a quote inside it)'
    return f"is not valid CSV ({exc})"


def parse_accounts_csv(
    source: str | bytes | Path, *, progress: Progress | None = None
) -> tuple[list[AccountRow], list[LineError]]:
    """Valid rows, and an error for every bad line (a `Path` is read; a `str` is the CSV text itself)."""
    text, decode_error = _decode(source)
    if text is None:
        return [], [decode_error] if decode_error else []
    # strict: an unclosed quote is an error, not a value that swallows the rest of the file
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    errors: list[LineError] = []
    try:
        header = next(reader)
    except StopIteration:
        return [], [LineError(1, "the file is empty; expected a header row with at least a name column")]
    except csv.Error as exc:
        return [], [LineError(1, f"is not valid CSV ({exc})")]
    columns = [h.strip().lower() for h in header]
    known: dict[str, int] = {}
    for index, column in enumerate(columns):
        if not column:
            errors.append(LineError(1, f"column {index + 1} has no name"))
        elif column not in COLUMNS:
            errors.append(
                LineError(1, f'unknown column "{header[index].strip()}" (expected {", ".join(COLUMNS)})')
            )
        elif column in known:
            errors.append(LineError(1, f'column "{column}" appears twice'))
        else:
            known[column] = index
    if "name" not in known:
        errors.append(
            LineError(1, "the header has no name column (columns: name, domain, arr, segment, owner)")
        )
        return [], by_line(errors)

    rows: list[AccountRow] = []
    first_by_key: dict[str, int] = {}
    first_by_domain: dict[str, int] = {}
    line_end = reader.line_num
    while True:
        line = line_end + 1  # a quoted value may span lines; report where the record starts
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            errors.append(LineError(line, _csv_problem(exc)))
            break
        line_end = reader.line_num
        if progress is not None:
            progress(1)
        if not any(cell.strip() for cell in record):
            continue  # blank line
        if len(record) > len(header):
            errors.append(LineError(line, f"has {len(record)} fields but the header has {len(header)}"))
            continue
        values = {column: record[index] if index < len(record) else "" for column, index in known.items()}
        try:
            row = AccountRow.model_validate({"line": line, **values})
        except ValidationError as exc:
            errors.extend(LineError(line, message) for message in _messages(exc))
            continue
        key = row.name_key
        if key in first_by_key:
            errors.append(LineError(line, f'name "{row.name}" is already on line {first_by_key[key]}'))
            continue
        if row.domain and row.domain in first_by_domain:
            errors.append(
                LineError(line, f'domain "{row.domain}" is already on line {first_by_domain[row.domain]}')
            )
            continue
        first_by_key[key] = line
        if row.domain:
            first_by_domain[row.domain] = line
        rows.append(row)
    return rows, by_line(errors)


class UserLookup(Protocol):
    """The part of slack_sdk's WebClient that `resolve_owners` needs."""

    def users_lookupByEmail(self, *, email: str, **kwargs: Any) -> Any: ...


def owner_emails(rows: Iterable[AccountRow]) -> set[str]:
    """The distinct owner emails that need looking up."""
    return {email for row in rows if (email := row.owner_email)}


def resolve_owners(
    rows: Sequence[AccountRow], client: UserLookup, *, progress: Progress | None = None
) -> list[LineError]:
    """Sets `owner_user_id` for owners given by email (one look-up per distinct email); errors for unknown ones.

    Slack errors other than `users_not_found` (bad token, missing `users:read.email` scope) are raised.
    """
    found: dict[str, str | None] = {}
    reasons: dict[str, str] = {}
    errors: list[LineError] = []
    for row in rows:
        email = row.owner_email
        if email is None:
            continue
        if email not in found:
            found[email] = None
            try:
                user = client.users_lookupByEmail(email=email)["user"]
            except SlackApiError as exc:
                if exc.response.get("error") != "users_not_found":
                    raise
                reasons[email] = f'owner "{row.owner}" is not a user in this Slack workspace'
            else:
                if user.get("deleted"):
                    reasons[email] = f'owner "{row.owner}" is a deactivated Slack user'
                else:
                    found[email] = str(user["id"])
            if progress is not None:
                progress(1)
        user_id = found[email]
        if user_id is None:
            errors.append(LineError(row.line, reasons[email]))
        else:
            row.owner_user_id = user_id
    return errors


def _changes(account: Account, row: AccountRow) -> dict[str, Any]:
    """The attributes that differ between an account and a row (empty cells change nothing)."""
    wanted: dict[str, Any] = {"name": row.name, "name_key": row.name_key}
    if row.domain is not None:
        wanted["domain"] = row.domain
    if row.arr is not None:
        wanted["arr"] = row.arr
    if row.segment is not None:
        wanted["segment"] = row.segment
    if row.owner_user_id is not None:
        wanted["owner_user_id"] = row.owner_user_id
    return {field: value for field, value in wanted.items() if getattr(account, field) != value}


def import_accounts(
    *,
    db_session: Session,
    team_id: str,
    rows: Sequence[AccountRow],
    dry_run: bool = False,
    progress: Progress | None = None,
) -> ImportResult:
    """Upserts rows into a workspace, matching by domain then name; raises AccountImportError on conflicts.

    Existing accounts are loaded once; nothing is added or changed until every row has been checked.
    Empty optional cells leave the existing value alone. The caller owns the transaction.
    """
    existing = list(db_session.scalars(select(Account).where(Account.team_id == team_id)))
    by_domain = {a.domain: a for a in existing if a.domain}
    by_key = {a.name_key: a for a in existing}

    errors: list[LineError] = []
    claimed: dict[int, int] = {}  # account id → line that matched it
    plan: list[tuple[AccountRow, Account | None, dict[str, Any]]] = []
    for row in rows:
        key = row.name_key
        account = by_domain.get(row.domain) if row.domain else None
        if account is None:
            account = by_key.get(key)
        if account is None:
            plan.append((row, None, {}))
            continue
        if account.id in claimed:
            errors.append(
                LineError(
                    row.line, f'matches the same account as line {claimed[account.id]} ("{account.name}")'
                )
            )
            continue
        claimed[account.id] = row.line
        other = by_key.get(key)
        if other is not None and other is not account:
            errors.append(
                LineError(
                    row.line,
                    f'domain "{row.domain}" belongs to account "{account.name}" but name "{row.name}" '
                    "belongs to another account",
                )
            )
            continue
        plan.append((row, account, _changes(account, row)))
    if errors:
        raise AccountImportError(errors)

    created = updated = unchanged = reported = 0
    for done, (row, account, changes) in enumerate(plan, start=1):
        if account is None:
            created += 1
            if not dry_run:
                db_session.add(
                    Account(
                        team_id=team_id,
                        name=row.name,
                        name_key=row.name_key,
                        domain=row.domain,
                        arr=row.arr,
                        segment=row.segment,
                        owner_user_id=row.owner_user_id,
                    )
                )
        elif changes:
            updated += 1
            if not dry_run:
                for field, value in changes.items():
                    setattr(account, field, value)
        else:
            unchanged += 1
        if done % FLUSH_EVERY == 0 or done == len(plan):
            if not dry_run:
                db_session.flush()
            if progress is not None:
                progress(done - reported)
            reported = done
    return ImportResult(created=created, updated=updated, unchanged=unchanged)
