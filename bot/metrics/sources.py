"""Metric sources that pull numbers: SQL queries against named data sources, and manual records.

A data source is named in the metric (`{"datasource": "WAREHOUSE", "query": "..."}`); its SQLAlchemy URL comes
from the environment variable ``PRODOPS_DATASOURCE_<NAME>``, so credentials never live in the database.

A query returns rows ``(ts, value)`` and runs so that it can neither write nor hang the worker:

- Postgres: ``SET TRANSACTION READ ONLY`` and ``SET LOCAL statement_timeout`` in the query's own transaction,
  the query sent with the extended protocol (one statement only: no ``COMMIT; DELETE ...``), rows streamed
  and capped.
- SQLite: the file opened read-only (``mode=ro``), ``PRAGMA query_only``, an authorizer that allows only
  reads (no ATTACH, PRAGMA or VACUUM INTO), and a progress handler that aborts the query at its deadline.

Every failure becomes a `SourceError` whose message says what went wrong in words a metric owner can act on.
"""

from __future__ import annotations

import math
import os
import re
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, date, datetime
from datetime import time as dt_time
from decimal import Decimal
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import Connection, create_engine
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from bot.metrics.points import Point, upsert_points
from storage.models import Metric

DATASOURCE_ENV_PREFIX = "PRODOPS_DATASOURCE_"
DEFAULT_TIMEOUT_S = 30.0
MAX_ROWS = 100_000
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,62}$")
# SQLite authorizer actions a read needs; everything else (writes, ATTACH, PRAGMA, ...) is denied.
_SQLITE_READ_ACTIONS = frozenset(
    {
        sqlite3.SQLITE_SELECT,
        sqlite3.SQLITE_READ,
        sqlite3.SQLITE_FUNCTION,
        getattr(sqlite3, "SQLITE_RECURSIVE", 33),
    }
)


class SourceError(Exception):
    """A source could not produce points; `message` says why and `hint` what to do about it."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


# ---- data sources -----------------------------------------------------------------------------------


def datasource_env_var(name: str) -> str:
    """The environment variable that holds a data source's URL (`warehouse` → PRODOPS_DATASOURCE_WAREHOUSE)."""
    cleaned = name.strip().replace("-", "_")
    if not _NAME.match(cleaned):
        raise SourceError(
            f"“{name}” is not a valid data source name",
            hint="Use letters, digits and underscores, starting with a letter (e.g. WAREHOUSE).",
        )
    return DATASOURCE_ENV_PREFIX + cleaned.upper()


def datasource_url(name: str, *, environ: Mapping[str, str] | None = None) -> str:
    """A named data source's SQLAlchemy URL, from PRODOPS_DATASOURCE_<NAME>."""
    variable = datasource_env_var(name)
    url = (os.environ if environ is None else environ).get(variable, "").strip()
    if not url:
        raise SourceError(
            f"the data source {name} is not configured: the environment variable {variable} is not set",
            hint=f"Ask whoever runs ProdOps to set {variable} to the database URL "
            "(e.g. postgresql+psycopg://reader@host/db) for the worker, then restart it.",
        )
    return url


# ---- values -----------------------------------------------------------------------------------------


def to_utc(ts: Any) -> datetime:
    """A row's timestamp as aware UTC: datetime (naive = UTC), date, ISO 8601 text, or epoch seconds."""
    if isinstance(ts, datetime):
        return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
    if isinstance(ts, date):
        return datetime.combine(ts, dt_time(0), UTC)
    if isinstance(ts, bool):
        raise ValueError(f"the timestamp {ts!r} is a boolean, not a time")
    if isinstance(ts, int | float | Decimal):
        seconds = float(ts)
        if not math.isfinite(seconds):
            raise ValueError(f"the timestamp {ts!r} is not a finite number of seconds")
        try:
            return datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError):
            raise ValueError(f"the timestamp {ts!r} is out of range for epoch seconds") from None
    if isinstance(ts, str):
        text = ts.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            return to_utc(datetime.fromisoformat(text))
        except ValueError:
            raise ValueError(f"the timestamp {ts!r} is not an ISO 8601 date or time") from None
    if ts is None:
        raise ValueError("the timestamp is empty (NULL)")
    raise ValueError(f"the timestamp {ts!r} ({type(ts).__name__}) is not a date or time")


def to_value(value: Any) -> float:
    """A row's value as a finite float (numbers, or text that reads as a number)."""
    if value is None:
        raise ValueError("the value is empty (NULL)")
    if isinstance(value, bool):
        raise ValueError(f"the value {value!r} is a boolean, not a number")
    if isinstance(value, int | float | Decimal | str):
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"the value {value!r} is not a number") from None
        if not math.isfinite(number):
            raise ValueError(f"the value {value!r} is not a finite number")
        return number
    raise ValueError(f"the value {value!r} ({type(value).__name__}) is not a number")


def rows_to_points(rows: Iterable[Sequence[Any]], *, max_rows: int = MAX_ROWS) -> list[Point]:
    """Converts `(ts, value)` rows; the first bad row raises a SourceError naming it (1-based)."""
    points: list[Point] = []
    for number, row in enumerate(rows, start=1):
        if number > max_rows:
            raise SourceError(
                f"the query returned more than {max_rows:,} rows",
                hint="Aggregate in the query (one row per day or week) or filter to a recent date range.",
            )
        if len(row) != 2:
            raise SourceError(
                f"row {number} has {len(row)} columns; the query must return exactly two: ts, value",
                hint="Select the time first and the number second, e.g. SELECT day AS ts, count(*) AS value ...",
            )
        try:
            points.append(Point(to_utc(row[0]), to_value(row[1])))
        except ValueError as exc:
            raise SourceError(
                f"row {number}: {exc}",
                hint="Return a date/time (or ISO text, or epoch seconds) and a finite number in every row.",
            ) from None
    return points


# ---- running queries --------------------------------------------------------------------------------


def _seconds(timeout_s: float) -> str:
    return f"{timeout_s:g} s"


def _timeout_error(timeout_s: float) -> SourceError:
    return SourceError(
        f"the query took longer than {_seconds(timeout_s)} and was stopped",
        hint="Make it cheaper: aggregate by day, filter to recent dates, or query an indexed or summary table.",
    )


def _write_error() -> SourceError:
    return SourceError(
        "the query tried to change data; queries must only read",
        hint="Use a single SELECT (or WITH ... SELECT) that returns ts, value.",
    )


def _single_statement_error() -> SourceError:
    return SourceError(
        "the query has more than one statement; it must be a single SELECT",
        hint="Remove everything after the first statement (and any trailing semicolon followed by more SQL).",
    )


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else exc.__class__.__name__


def _query_failed(exc: BaseException) -> SourceError:
    return SourceError(
        f"the query failed: {_first_line(exc)}",
        hint="Run the query by hand against the data source to see the problem, then fix the metric's query.",
    )


def run_sql_source(
    *, url: str, query: str, timeout_s: float = DEFAULT_TIMEOUT_S, max_rows: int = MAX_ROWS
) -> list[Point]:
    """Runs a read-only query returning `(ts, value)` rows, with a statement timeout and a row cap."""
    if not query or not query.strip():
        raise SourceError("the metric has no query", hint="Give it a SELECT that returns ts, value.")
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise SourceError(
            "the data source URL is not a valid SQLAlchemy URL",
            hint="Use a URL like postgresql+psycopg://user@host/db or sqlite:////path/to/file.db.",
        ) from None
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        return _run_postgres(parsed, query, timeout_s, max_rows)
    if backend == "sqlite":
        return _run_sqlite(parsed, query, timeout_s, max_rows)
    raise SourceError(
        f"{backend} data sources are not supported (only PostgreSQL and SQLite can be made read-only here)",
        hint="Point the data source at a PostgreSQL replica or a SQLite file.",
    )


@contextmanager
def _connect(url: URL, connect_args: dict[str, Any]) -> Iterator[Connection]:
    try:
        engine = create_engine(url, poolclass=NullPool, connect_args=connect_args)
    except (ArgumentError, NoSuchModuleError, ImportError) as exc:
        raise SourceError(
            f"the data source URL cannot be used: {_first_line(exc)}",
            hint="Check the driver part of the URL (e.g. postgresql+psycopg://...).",
        ) from None
    try:
        try:
            conn = engine.connect()
        except Exception as exc:
            if url.get_backend_name() == "sqlite":
                raise SourceError(
                    f"could not open the SQLite file: {_first_line(exc)}",
                    hint="Check that the file in the data source URL exists and the worker can read it.",
                ) from None
            raise SourceError(
                f"could not connect to the data source: {_first_line(exc)}",
                hint="Check that the database is reachable from the worker and the URL's credentials work.",
            ) from None
        with conn:
            yield conn
    finally:
        engine.dispose()


def _sqlstate(exc: BaseException) -> str | None:
    orig = getattr(exc, "orig", None) or exc
    return getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)


def _run_postgres(url: URL, query: str, timeout_s: float, max_rows: int) -> list[Point]:
    url = url.set(drivername="postgresql+psycopg")  # psycopg 3: streaming and one statement per query
    timeout_ms = max(1, int(timeout_s * 1000))
    with _connect(url, {"connect_timeout": max(1, min(10, int(timeout_s)))}) as conn:
        try:
            conn.exec_driver_sql("SET TRANSACTION READ ONLY")
            conn.exec_driver_sql(f"SET LOCAL statement_timeout = {timeout_ms}")
            raw: Any = conn.connection.dbapi_connection
            cursor = raw.cursor()
            try:
                # stream() uses the extended protocol: one statement only, rows fetched as they come.
                return rows_to_points(cursor.stream(query), max_rows=max_rows)
            finally:
                cursor.close()
        except SourceError:
            raise
        except Exception as exc:
            state = _sqlstate(exc)
            if state == "57014":  # query_canceled: the statement timeout
                raise _timeout_error(timeout_s) from None
            if state == "25006":  # read_only_sql_transaction
                raise _write_error() from None
            if "multiple commands" in str(exc):
                raise _single_statement_error() from None
            raise _query_failed(exc) from None
        finally:
            with suppress(Exception):  # the connection is closed next anyway
                conn.rollback()


def sqlite_read_only_url(url: URL) -> URL:
    """The same SQLite file as a read-only URI (`sqlite:///file:<path>?mode=ro&uri=true`)."""
    database = url.database or ""
    if database in ("", ":memory:") or "mode=memory" in database:
        raise SourceError(
            "the data source is an in-memory SQLite database, which holds no data to read",
            hint="Point it at a SQLite file: sqlite:////path/to/file.db.",
        )
    query = dict(url.query)
    if not database.startswith("file:"):
        database = "file:" + quote(database, safe="/")
    query.update({"mode": "ro", "uri": "true"})
    return url.set(database=database, query=query)


def _sqlite_authorizer(action: int, *_: object) -> int:
    return sqlite3.SQLITE_OK if action in _SQLITE_READ_ACTIONS else sqlite3.SQLITE_DENY


def _run_sqlite(url: URL, query: str, timeout_s: float, max_rows: int) -> list[Point]:
    deadline = time.monotonic() + timeout_s
    timed_out = False

    def past_deadline() -> int:
        nonlocal timed_out
        timed_out = time.monotonic() > deadline
        return 1 if timed_out else 0

    with _connect(sqlite_read_only_url(url), {"timeout": timeout_s, "check_same_thread": False}) as conn:
        raw: Any = conn.connection.dbapi_connection
        try:
            raw.execute("PRAGMA query_only = ON")
            raw.set_authorizer(_sqlite_authorizer)
            raw.set_progress_handler(past_deadline, 1000)
            cursor = raw.cursor()
            try:
                cursor.execute(query)
                return rows_to_points(_fetch(cursor.fetchmany), max_rows=max_rows)
            finally:
                cursor.close()
        except SourceError:
            raise
        except sqlite3.Error as exc:
            raise _sqlite_error(exc, timed_out=timed_out, timeout_s=timeout_s) from None
        finally:
            raw.set_progress_handler(None, 0)
            raw.set_authorizer(None)


def _fetch(fetchmany: Callable[[int], list[Any]]) -> Iterator[Any]:
    while rows := fetchmany(1000):
        yield from rows


def _sqlite_error(exc: sqlite3.Error, *, timed_out: bool, timeout_s: float) -> SourceError:
    name = getattr(exc, "sqlite_errorname", "")
    text = str(exc)
    if timed_out or name == "SQLITE_INTERRUPT":
        return _timeout_error(timeout_s)
    if (
        name in ("SQLITE_READONLY", "SQLITE_AUTH")
        or "not authorized" in text
        or "authorization denied" in text
    ):
        return _write_error()
    if "one statement at a time" in text:
        return _single_statement_error()
    if name == "SQLITE_CANTOPEN":
        return SourceError(
            f"could not open the SQLite file: {text}",
            hint="Check that the file in the data source URL exists and the worker can read it.",
        )
    return _query_failed(exc)


# ---- manual records ---------------------------------------------------------------------------------


def zone(name: str) -> ZoneInfo:
    """A metric's time zone, or a SourceError naming the bad one."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise SourceError(
            f"the time zone {name!r} is not known", hint="Use an IANA name such as Europe/London or UTC."
        ) from None


def record_manual(
    *, db_session: Session, metric: Metric, value: float, day: date | None, now: datetime
) -> Point:
    """`/metric record <key> <value> [YYYY-MM-DD]`: a point at that day's 00:00 in the metric's zone, or now."""
    if metric.source != "manual":
        raise SourceError(
            f"{metric.key} gets its numbers from its {metric.source} source, so values cannot be recorded by hand",
            hint="Only metrics with the manual source take /metric record.",
        )
    try:
        number = to_value(value)
    except ValueError as exc:
        raise SourceError(str(exc).capitalize(), hint="Give a finite number, e.g. 42 or 3.5.") from None
    if day is None:
        ts = to_utc(now)
    else:
        ts = datetime.combine(day, dt_time(0), zone(metric.schedule_timezone or "UTC")).astimezone(UTC)
    point = Point(ts, number)
    upsert_points(db_session=db_session, team_id=metric.team_id, metric_id=metric.id, points=[point])
    return point
