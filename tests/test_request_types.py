"""Request types: the YAML format, loading and reloading, the default type, SLA policies, the CLI, and the
`/prodops types` list + modal through a real server — on SQLite and Postgres."""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, time, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from bot.devkit.driver import SlackDriver
from bot.devkit.emulator import SlackEmulator
from bot.devkit.server_process import ServerProcess
from bot.requests.sla import Priority
from bot.requests.types import (
    DEFAULT_TYPE,
    DEFAULT_TYPE_NAME,
    RequestTypeSpec,
    archive_type,
    ensure_default_type,
    format_duration,
    get_type_by_name,
    list_types,
    load_types_yaml,
    parse_duration,
    policy_for,
    spec_from_type,
    upsert_types,
)
from bot.requests.types_cli import register_types_parser
from bot.requests.types_modal import (
    ModalMeta,
    TypesAction,
    TypesBlock,
    read_type_submission,
    sla_block,
    type_modal,
    types_list_blocks,
)
from storage.db import Database
from storage.models import RequestType
from tests.conftest import SIGNING_SECRET, server_env
from tests.helpers import unique, wait_for

DATA = Path(__file__).parent / "data"
GOOD = DATA / "request_types.yml"
BAD = DATA / "request_types_bad.yml"


def _load_ok(source: str | Path) -> list[RequestTypeSpec]:
    specs, errors = load_types_yaml(source)
    assert errors == []
    return specs


def _types(db: Database, team: str) -> dict[str, RequestType]:
    with db.read() as s:
        return {t.name: t for t in s.scalars(select(RequestType).where(RequestType.team_id == team))}


# ---- the format (no database) --------------------------------------------------------------------


def test_durations_count_days_as_working_days_of_the_calendar() -> None:
    assert parse_duration("30m", day_minutes=480) == 30
    assert parse_duration("4h", day_minutes=480) == 240
    assert parse_duration("2d", day_minutes=480) == 960  # 09:00-17:00: two 8-hour days
    assert parse_duration("1d4h", day_minutes=510) == 750
    assert parse_duration("1 h 30 m", day_minutes=480) == 90
    for bad in ("4x", "", "h", "4", "-1h", "1.5h"):
        with pytest.raises(ValueError, match="is not a duration like 30m, 4h or 2d"):
            parse_duration(bad, day_minutes=480)
    assert [format_duration(m, day_minutes=480) for m in (30, 240, 90, 960, 1000)] == [
        "30m",
        "4h",
        "1h30m",
        "2d",
        "2d40m",
    ]


def test_good_file_reads_both_types_with_calendars_and_sla_minutes() -> None:
    data_pull, access = _load_ok(GOOD)

    assert data_pull.name == "Data pull" and data_pull.triage_channel_id == "C0DATAREQ1"
    assert data_pull.owners == ["U0DATA0001", "U0DATA0002"]
    assert data_pull.default_priority == Priority.high
    assert [(f.key, f.kind, f.required) for f in data_pull.fields] == [
        ("region", "select", True),
        ("needed_by", "date", False),
    ]
    cal = data_pull.calendar  # the file's shared calendar; 9:00 unquoted is YAML's 540
    assert (cal.timezone, cal.working_days, cal.start, cal.end) == (
        "Europe/London",
        [0, 1, 2, 3, 4],
        time(9, 0),
        time(17, 30),
    )
    assert cal.holidays == [date(2026, 12, 25), date(2026, 12, 26)]
    assert data_pull.sla_minutes() == {
        "urgent": {"first_response_minutes": 30, "resolution_minutes": 240},
        "high": {"first_response_minutes": 120, "resolution_minutes": 2 * 510},
        "normal": {"first_response_minutes": 510, "resolution_minutes": 750},
    }
    assert access.triage_channel_id == "C0ACCESS01"
    assert access.calendar.timezone == "America/New_York" and access.calendar.end == time(0, 0)
    assert access.sla_minutes()["low"] == {"first_response_minutes": None, "resolution_minutes": 3 * 24 * 60}
    assert access.default_priority == Priority.normal


def test_bad_file_reports_every_problem_with_type_and_field_path() -> None:
    specs, errors = load_types_yaml(BAD)

    assert specs == []
    f = str(BAD)
    expected = [
        f'{f}: type "Data pull" (#1): sla.urgent.first_response: "4x" is not a duration like 30m, 4h or 2d',
        f'{f}: type "Data pull" (#1): sla.urgnt: "urgnt" is not one of',
        f'{f}: type "Data pull" (#1): owners: "alice" is not a Slack user id',
        f"{f}: type #2: name: is required",
        f'{f}: type #2: default_priority: "sometimes" is not one of',
        f'{f}: type "Access request" (#3): fields #1.key: "Region" is not a key',
        f'{f}: type "Access request" (#3): fields #2.kind: "dropdown" is not one of',
        f'{f}: type "Access request" (#3): calendar.timezone: "Europe/Londn" is not a time zone — did you mean '
        '"Europe/London"?',
        f'{f}: type "Access request" (#3): calendar.working_days: "funday" is not a weekday',
        f'{f}: type "Access request" (#3): calendar.holidays #1: "2026-13-01" is not a date like 2026-12-25',
        f'{f}: type "Access request" (#3): colour: is not a known setting',
        f'{f}: type "data PULL" (#4): name: "data PULL" is also type #1; names must be unique',
    ]
    for line in expected:
        assert any(e.startswith(line) for e in errors), f"missing: {line}\nin:\n" + "\n".join(errors)
    # The select without options is reported once its key is fixed: nothing else is invented.
    assert len(errors) == len(expected)


def test_cross_field_problems_and_duplicate_names() -> None:
    text = """
types:
  - name: A
    sla: {high: {first_response: 4h, resolution: 1h}}
  - name: B
    calendar: {start: "18:00", end: "17:00"}
  - name: C
    fields: [{key: region, label: Region, kind: select}]
  - name: a
"""
    _, errors = load_types_yaml(text, filename="t.yml")
    assert errors == [
        't.yml: type "A" (#1): sla.high: resolution (1h) is shorter than first response (4h)',
        't.yml: type "B" (#2): calendar: end (17:00) must be later than start (18:00); use 24:00 '
        "for midnight",
        't.yml: type "C" (#3): fields #1: field "region": a select field needs a non-empty list of options',
        't.yml: type "a" (#4): name: "a" is also type #1; names must be unique',
    ]


def test_yaml_syntax_errors_name_the_line() -> None:
    _, errors = load_types_yaml(
        "types:\n  - name: A\n    sla: {urgent: {first_response: 1h}\n", filename="x.yml"
    )
    assert len(errors) == 1 and errors[0].startswith("x.yml: line 4, column 1: YAML syntax error:")
    _, errors = load_types_yaml("- just a list\n", filename="x.yml")
    assert errors == ["x.yml: expected a mapping with a list of types under `types:` (see the docs)"]
    _, errors = load_types_yaml("types: []\nextra: 1\n", filename="x.yml")
    assert errors == [
        "x.yml: extra: is not a known setting (use `types:` and optionally `calendar:`)",
        "x.yml: types: the list is empty",
    ]


def test_default_type_is_general_request_with_documented_targets() -> None:
    columns = DEFAULT_TYPE.columns()
    assert columns["name"] == DEFAULT_TYPE_NAME == "General request"
    assert columns["triage_channel_id"] is None and columns["default_priority"] == "normal"
    hour, day = 60, 8 * 60
    assert columns["sla"] == {
        "urgent": {"first_response_minutes": hour, "resolution_minutes": 8 * hour},
        "high": {"first_response_minutes": 4 * hour, "resolution_minutes": 2 * day},
        "normal": {"first_response_minutes": day, "resolution_minutes": 5 * day},
        "low": {"first_response_minutes": 2 * day, "resolution_minutes": 10 * day},
    }
    assert columns["calendar"] == {
        "timezone": "UTC",
        "working_days": [0, 1, 2, 3, 4],
        "start": "09:00",
        "end": "17:00",
        "holidays": [],
    }


# ---- services (both databases) -------------------------------------------------------------------


def test_load_good_file_then_reload_changes_nothing(db: Database) -> None:
    team = unique("T")
    specs = _load_ok(GOOD)
    with db.session() as s:
        first = upsert_types(db_session=s, team_id=team, specs=specs)
    stored = _types(db, team)
    before = {name: (t.id, t.updated_at) for name, t in stored.items()}

    with db.session() as s:
        again = upsert_types(db_session=s, team_id=team, specs=_load_ok(GOOD))

    assert first == (["Data pull", "Access request"], [])
    assert again == ([], [])
    assert {name: (t.id, t.updated_at) for name, t in _types(db, team).items()} == before
    data_pull = stored["Data pull"]
    assert data_pull.triage_channel_id == "C0DATAREQ1" and data_pull.owners == ["U0DATA0001", "U0DATA0002"]
    assert data_pull.fields[0] == {
        "key": "region",
        "label": "Region",
        "kind": "select",
        "required": True,
        "options": ["EU", "US"],
    }
    assert data_pull.sla["high"] == {"first_response_minutes": 120, "resolution_minutes": 1020}
    assert data_pull.calendar["holidays"] == ["2026-12-25", "2026-12-26"] and not data_pull.is_default


def test_reload_with_a_change_updates_only_that_type_and_restores_archived(db: Database) -> None:
    team = unique("T")
    with db.session() as s:
        upsert_types(db_session=s, team_id=team, specs=_load_ok(GOOD))
        access = get_type_by_name(db_session=s, team_id=team, name="access REQUEST")
        assert access is not None
        assert archive_type(db_session=s, team_id=team, type_id=access.id)
    changed = GOOD.read_text().replace("default_priority: high", "default_priority: urgent")

    with db.session() as s:
        dry = upsert_types(db_session=s, team_id=team, specs=_load_ok(changed), dry_run=True)
    assert _types(db, team)["Data pull"].default_priority == "high"  # the dry run wrote nothing
    with db.session() as s:
        result = upsert_types(db_session=s, team_id=team, specs=_load_ok(changed))

    assert dry == result == ([], ["Data pull", "Access request"])
    stored = _types(db, team)
    assert stored["Data pull"].default_priority == "urgent" and stored["Access request"].archived_at is None


def test_bad_file_writes_nothing(db: Database) -> None:
    team = unique("T")
    specs, errors = load_types_yaml(BAD)
    assert errors and specs == []
    with db.session() as s:
        assert upsert_types(db_session=s, team_id=team, specs=specs) == ([], [])
    assert _types(db, team) == {}


def test_default_type_is_created_once_and_cannot_be_archived(db: Database) -> None:
    team = unique("T")
    with db.session() as s:
        first = ensure_default_type(db_session=s, team_id=team)
    with db.session() as s:
        second = ensure_default_type(db_session=s, team_id=team)
        listed = list_types(db_session=s, team_id=team)
        with pytest.raises(ValueError, match="default type cannot be archived"):
            archive_type(db_session=s, team_id=team, type_id=second.id)

    assert first.id == second.id and second.is_default and second.name == "General request"
    assert [t.id for t in listed] == [first.id]
    with db.read() as s:
        count = s.scalar(select(func.count()).select_from(RequestType).where(RequestType.team_id == team))
    assert count == 1


def test_a_loaded_general_request_becomes_the_default(db: Database) -> None:
    team = unique("T")
    with db.session() as s:
        upsert_types(db_session=s, team_id=team, specs=_load_ok("types: [{name: General Request}]"))
    with db.session() as s:
        default = ensure_default_type(db_session=s, team_id=team)
    assert default.name == "General Request" and default.is_default and len(_types(db, team)) == 1


def test_policy_for_round_trips_the_json_columns(db: Database) -> None:
    team = unique("T")
    data_pull, access = _load_ok(GOOD)
    with db.session() as s:
        upsert_types(db_session=s, team_id=team, specs=[data_pull, access])
    stored = _types(db, team)

    policy = policy_for(stored["Data pull"])
    assert policy.calendar.timezone == "Europe/London"
    assert policy.calendar.start == time(9, 0) and policy.calendar.end == time(17, 30)
    assert policy.calendar.holidays == [date(2026, 12, 25), date(2026, 12, 26)]
    assert policy.target(Priority.urgent, "first_response") == timedelta(minutes=30)
    assert policy.target(Priority.high, "resolution") == timedelta(hours=17)  # 2d of 8h30m
    assert policy.target(Priority.normal, "resolution") == timedelta(hours=12, minutes=30)
    assert policy.target(Priority.low, "first_response") is None  # no targets for low
    access_policy = policy_for(stored["Access request"])
    assert access_policy.target(Priority.low, "first_response") is None
    assert access_policy.target(Priority.low, "resolution") == timedelta(days=3)
    assert access_policy.calendar.all_day

    # spec → row → spec → row is stable, and the spec reads back as the file meant it
    for name, original in (("Data pull", data_pull), ("Access request", access)):
        back = spec_from_type(stored[name])
        assert back.columns() == original.columns()
    assert spec_from_type(stored["Data pull"]).sla[Priority.high].resolution == "2d"
    with db.session() as s:
        default = ensure_default_type(db_session=s, team_id=team)
    assert policy_for(default).target(Priority.low, "resolution") == timedelta(hours=80)


# ---- the modal and the list (pure) ---------------------------------------------------------------


def _state_of(view: dict[str, Any]) -> dict[str, Any]:
    """The values Slack would submit for an untouched, prefilled modal."""
    values: dict[str, Any] = {}
    for block in view["blocks"]:
        if block["type"] != "input":
            continue
        element = block["element"]
        kind, action = element["type"], element["action_id"]
        if kind == "plain_text_input":
            state = {"type": kind, "value": element.get("initial_value")}
        elif kind == "conversations_select":
            state = {"type": kind, "selected_conversation": element.get("initial_conversation")}
        elif kind == "multi_users_select":
            state = {"type": kind, "selected_users": element.get("initial_users", [])}
        elif kind == "static_select":
            state = {"type": kind, "selected_option": element.get("initial_option")}
        elif kind == "checkboxes":
            state = {"type": kind, "selected_options": element.get("initial_options", [])}
        else:
            state = {"type": kind, "selected_time": element.get("initial_time")}
        values[block["block_id"]] = {action: state}
    return values


def _check_block_kit(view: dict[str, Any]) -> None:
    assert len(view["blocks"]) <= 100 and len(view["title"]["text"]) <= 24
    assert len(view["private_metadata"]) <= 3000
    ids = [b["block_id"] for b in view["blocks"] if "block_id" in b]
    assert len(ids) == len(set(ids))
    for block in view["blocks"]:
        if block["type"] == "input":
            assert len(block["label"]["text"]) <= 2000


def test_modal_prefills_a_type_and_reads_it_back_unchanged() -> None:
    data_pull = _load_ok(GOOD)[0]
    view = type_modal(spec=data_pull, meta=ModalMeta(type_id=7, response_url="https://hooks/x"))

    _check_block_kit(view)
    assert (
        view["title"]["text"] == "Edit request type" and ModalMeta.load(view["private_metadata"]).type_id == 7
    )
    submission = read_type_submission(_state_of(view), fields=data_pull.fields)

    assert submission.errors == {}
    assert submission.spec is not None and submission.spec.columns() == data_pull.columns()


def test_new_type_modal_starts_from_the_default_hours_and_targets() -> None:
    view = type_modal(spec=None, meta=ModalMeta())
    _check_block_kit(view)
    values = _state_of(view)
    values[TypesBlock.name][TypesAction.name]["value"] = "Laptop"

    submission = read_type_submission(values, fields=[])

    assert view["title"]["text"] == "New request type" and submission.errors == {}
    assert submission.spec is not None
    assert submission.spec.sla_minutes() == DEFAULT_TYPE.sla_minutes()
    assert submission.spec.calendar == DEFAULT_TYPE.calendar and submission.spec.triage_channel_id is None


def test_bad_submission_gives_inline_errors_on_each_block() -> None:
    values = _state_of(type_modal(spec=_load_ok(GOOD)[0], meta=ModalMeta(type_id=1)))
    values[TypesBlock.name][TypesAction.name]["value"] = "  "
    values[sla_block("urgent", "first_response")][TypesAction.sla]["value"] = "4x"
    values[TypesBlock.timezone][TypesAction.timezone]["value"] = "Mars/Olympus"
    values[TypesBlock.holidays][TypesAction.holidays]["value"] = "2026-12-25, 26/12/2026"
    values[TypesBlock.days][TypesAction.days]["selected_options"] = []

    submission = read_type_submission(values, fields=[])

    assert submission.spec is None
    assert set(submission.errors) == {
        TypesBlock.name,
        sla_block("urgent", "first_response"),
        TypesBlock.timezone,
        TypesBlock.holidays,
        TypesBlock.days,
    }
    assert submission.errors[TypesBlock.name] == "Give the type a name."
    assert (
        "is not a duration like 30m, 4h or 2d (or empty"
        in submission.errors[sla_block("urgent", "first_response")]
    )
    assert submission.errors[TypesBlock.holidays].startswith('"26/12/2026" is not a date')


def test_cross_field_submission_errors_land_on_the_right_block() -> None:
    values = _state_of(type_modal(spec=None, meta=ModalMeta()))
    values[TypesBlock.name][TypesAction.name]["value"] = "X"
    values[sla_block("high", "resolution")][TypesAction.sla]["value"] = "1h"
    assert read_type_submission(values, fields=[]).errors == {
        sla_block("high", "resolution"): "Resolution (1h) is shorter than first response (4h)"
    }
    values[sla_block("high", "resolution")][TypesAction.sla]["value"] = ""
    values[TypesBlock.end][TypesAction.end]["selected_time"] = "08:00"
    errors = read_type_submission(values, fields=[]).errors
    assert list(errors) == [TypesBlock.end] and "must be later than start" in errors[TypesBlock.end]


def test_list_shows_buttons_only_to_admins() -> None:
    specs = _load_ok(GOOD)
    listed = [(1, DEFAULT_TYPE, True), (2, specs[0], False)]

    admin = types_list_blocks(listed, can_edit=True)
    everyone = types_list_blocks(listed, can_edit=False)

    actions = [e for b in admin if b["type"] == "actions" for e in b["elements"]]
    assert [(e["action_id"], e["value"]) for e in actions] == [
        ("rt_edit", "1"),
        ("rt_edit", "2"),
        ("rt_archive", "2"),
        ("rt_new", "new"),
    ]
    assert not [b for b in everyone if b["type"] == "actions"]
    text = json.dumps(everyone, ensure_ascii=False)
    assert "General request" in text and "the channel where it was asked" in text
    assert "<#C0DATAREQ1>" in text and "urgent 30m/4h" in text and "Mon–Fri 09:00–17:30 Europe/London" in text


# ---- the CLI ---------------------------------------------------------------------------------------


def _run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="prodops")
    register_types_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    from bot.settings import ConfigError

    try:
        args.run(args)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, migrated_db_url: str) -> None:
    for name in ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "SLACK_APP_TOKEN", "SLACK_API_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATABASE_URL", migrated_db_url)


def test_cli_load_dry_run_load_reload_and_list(
    cli_env: None, db: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    team = unique("T")
    assert _run_cli(["types", "load", str(GOOD), "--team", team, "--dry-run"]) == 0
    assert "would be 2 created, 0 updated, 0 unchanged" in capsys.readouterr().out
    assert _types(db, team) == {}

    assert _run_cli(["types", "load", str(GOOD), "--team", team]) == 0
    assert f"Loaded 2 type(s) from {GOOD} into {team}: 2 created" in capsys.readouterr().out
    assert _run_cli(["types", "load", str(GOOD), "--team", team]) == 0
    assert "0 created, 0 updated, 2 unchanged" in capsys.readouterr().out

    assert _run_cli(["types", "list", "--team", team]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[1] for line in out] == [
        "General request (default)",
        "Access request",
        "Data pull",
    ]
    assert "triage=C0DATAREQ1" in out[2] and "sla urgent=30m/4h high=2h/2d normal=1d/1d4h" in out[2]


def test_cli_bad_file_exits_1_listing_problems(
    cli_env: None, db: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    team = unique("T")
    assert _run_cli(["types", "load", str(BAD), "--team", team]) == 1
    err = capsys.readouterr().err
    assert "12 problem(s); nothing was loaded" in err and 'sla.urgent.first_response: "4x"' in err
    assert _types(db, team) == {}
    assert _run_cli(["types", "load", str(DATA / "missing.yml"), "--team", team]) == 2


def test_cli_channel_names_need_a_token_and_resolve_through_slack(
    cli_env: None,
    db: Database,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    team = unique("T")
    file = tmp_path / "types.yml"
    file.write_text(
        "types:\n  - {name: Data pull, triage_channel: '#data-requests'}\n  - {name: B, triage_channel: '#nope'}\n"
    )
    assert _run_cli(["types", "load", str(file), "--team", team]) == 2
    assert "needs SLACK_BOT_TOKEN" in capsys.readouterr().err

    with SlackEmulator(team_id=team) as emu:
        channel = emu.add_channel("data-requests")
        monkeypatch.setenv("SLACK_BOT_TOKEN", emu.bot_token)
        monkeypatch.setenv("SLACK_API_URL", emu.url)
        assert _run_cli(["types", "load", str(file)]) == 1
        assert 'type "B" (#2): triage_channel: there is no channel called #nope' in capsys.readouterr().err
        file.write_text("types:\n  - {name: Data pull, triage_channel: '#Data-Requests'}\n")
        assert _run_cli(["types", "load", str(file)]) == 0  # the team is the token's workspace
    assert _types(db, team)["Data pull"].triage_channel_id == channel["id"]


# ---- `/prodops types` through a real server -----------------------------------------------------------


@dataclass
class TypesStack:
    emulator: SlackEmulator
    driver: SlackDriver
    db: Database

    @property
    def team_id(self) -> str:
        return self.emulator.team_id


@pytest.fixture(scope="module")
def types_stack(
    migrated_db_url: str, db: Database, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TypesStack]:
    """An emulator with its own workspace, and a real `prodops serve` talking to it."""
    emulator = SlackEmulator(team_id="TRT" + uuid.uuid4().hex[:8].upper()).start()
    log = tmp_path_factory.mktemp("types-server") / "server.log"
    server = ServerProcess(server_env(emulator, migrated_db_url, WEB_CONCURRENCY="1"), log_path=log)
    try:
        server.start()
    except RuntimeError:
        emulator.stop()
        raise
    driver = SlackDriver(events_url=server.events_url, signing_secret=SIGNING_SECRET, emulator=emulator)
    yield TypesStack(emulator=emulator, driver=driver, db=db)
    server.stop()
    emulator.stop()


def _prodops_types(stack: TypesStack, user: str, channel: str) -> tuple[list[dict[str, Any]], str]:
    fields = stack.driver.slash_command(command="/prodops", text="types", user=user, channel=channel)
    assert stack.driver.send_form(fields).status == 200
    key = SlackDriver.response_key(fields)
    posts = wait_for(lambda: stack.emulator.response_url_posts(key), what="/prodops types answer")
    return posts[0]["blocks"], str(fields["response_url"])


def _buttons(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for b in blocks if b["type"] == "actions" for e in b["elements"]]


def _click(stack: TypesStack, user: str, channel: str, button: dict[str, Any], response_url: str) -> dict:
    before = len(stack.emulator.calls("views.open"))
    payload = stack.driver.block_actions(
        user=user,
        channel=channel,
        message={"ts": stack.emulator.next_ts(), "text": "types"},
        actions=[
            {"type": "button", "action_id": button["action_id"], "block_id": "b", "value": button["value"]}
        ],
    )
    payload["response_url"] = response_url
    assert stack.driver.send_interaction(payload).status == 200
    calls = wait_for(
        lambda: [c for c in stack.emulator.calls("views.open")[before:] if c.response.get("ok")], what="modal"
    )
    return (
        calls[0].params["view"]
        if isinstance(calls[0].params["view"], dict)
        else json.loads(calls[0].params["view"])
    )


def test_admin_creates_and_edits_a_type_through_the_modal(types_stack: TypesStack) -> None:
    stack, emu = types_stack, types_stack.emulator
    admin = emu.add_user(unique("ops"), is_admin=True)["id"]
    member = emu.add_user(unique("dev"))["id"]
    channel = emu.add_channel(unique("ops"), members=[admin, member])["id"]
    triage = emu.add_channel(unique("triage"))["id"]

    member_view, _ = _prodops_types(stack, member, channel)
    assert _buttons(member_view) == [] and "General request" in json.dumps(member_view)

    blocks, response_url = _prodops_types(stack, admin, channel)
    new = next(b for b in _buttons(blocks) if b["action_id"] == TypesAction.new)
    view = _click(stack, admin, channel, new, response_url)
    assert view["callback_id"] == "request_type_modal"

    values = _state_of(view)
    values[TypesBlock.name][TypesAction.name]["value"] = "general REQUEST"  # clashes with the default
    values[sla_block("urgent", "first_response")][TypesAction.sla]["value"] = "4x"
    bad = stack.driver.send_interaction(stack.driver.view_submission(user=admin, view=view, values=values))
    assert bad.status == 200 and bad.json()["response_action"] == "errors"
    assert set(bad.json()["errors"]) == {sla_block("urgent", "first_response")}
    values[sla_block("urgent", "first_response")][TypesAction.sla]["value"] = "20m"
    clash = stack.driver.send_interaction(stack.driver.view_submission(user=admin, view=view, values=values))
    assert clash.json()["errors"] == {TypesBlock.name: "There already is a type called “General request”."}

    values[TypesBlock.name][TypesAction.name]["value"] = "Laptop"
    values[TypesBlock.channel][TypesAction.channel]["selected_conversation"] = triage
    values[TypesBlock.owners][TypesAction.owners]["selected_users"] = [admin]
    values[TypesBlock.holidays][TypesAction.holidays]["value"] = "2026-12-25"
    ok = stack.driver.send_interaction(stack.driver.view_submission(user=admin, view=view, values=values))
    assert ok.status == 200 and ok.body in ("", "{}")

    laptop = wait_for(lambda: _types(stack.db, stack.team_id).get("Laptop"), what="type saved")
    assert laptop.triage_channel_id == triage and laptop.owners == [admin]
    assert laptop.sla["urgent"]["first_response_minutes"] == 20 and laptop.calendar["holidays"] == [
        "2026-12-25"
    ]
    key = response_url.rsplit("/", 1)[-1]
    refreshed = wait_for(
        lambda: [p for p in emu.response_url_posts(key) if "Created request type" in json.dumps(p)],
        what="list",
    )[0]
    assert refreshed["replace_original"] is True and "Laptop" in json.dumps(refreshed["blocks"])

    edit = next(
        b
        for b in _buttons(refreshed["blocks"])
        if b["action_id"] == TypesAction.edit and b["value"] == str(laptop.id)
    )
    view = _click(stack, admin, channel, edit, response_url)
    values = _state_of(view)
    assert values[TypesBlock.channel][TypesAction.channel]["selected_conversation"] == triage
    values[TypesBlock.priority][TypesAction.priority]["selected_option"] = {"value": "high"}
    ok = stack.driver.send_interaction(stack.driver.view_submission(user=admin, view=view, values=values))
    assert ok.status == 200
    wait_for(lambda: _types(stack.db, stack.team_id)["Laptop"].default_priority == "high", what="edit saved")
    assert _types(stack.db, stack.team_id)["Laptop"].sla == laptop.sla  # untouched fields kept

    # A non-admin who forges a submission is refused inline, and nothing changes.
    values[TypesBlock.priority][TypesAction.priority]["selected_option"] = {"value": "low"}
    forged = stack.driver.send_interaction(
        stack.driver.view_submission(user=member, view=view, values=values)
    )
    assert forged.json()["errors"] == {TypesBlock.name: "Only ProdOps admins can change request types."}
    assert _types(stack.db, stack.team_id)["Laptop"].default_priority == "high"

    # Archive (after Slack's confirm dialog): the list is refreshed without it; the default has no button.
    archive = next(
        b
        for b in _buttons(refreshed["blocks"])
        if b["action_id"] == TypesAction.archive and b["value"] == str(laptop.id)
    )
    assert archive["confirm"]["confirm"]["text"] == "Archive"
    assert not [
        b for b in _buttons(refreshed["blocks"]) if b["action_id"] == TypesAction.archive and b is not archive
    ]
    payload = stack.driver.block_actions(
        user=admin,
        channel=channel,
        message={"ts": emu.next_ts(), "text": "types"},
        actions=[
            {"type": "button", "action_id": TypesAction.archive, "block_id": "b", "value": archive["value"]}
        ],
    )
    payload["response_url"] = response_url
    assert stack.driver.send_interaction(payload).status == 200
    after = wait_for(
        lambda: [p for p in emu.response_url_posts(key) if "Type archived." in json.dumps(p)], what="archived"
    )[0]
    assert after["replace_original"] is True and "Laptop" not in json.dumps(after["blocks"])
    assert _types(stack.db, stack.team_id)["Laptop"].archived_at is not None
