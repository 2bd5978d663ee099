"""Metric registry: the YAML format, idempotent loading, DST-correct schedules, API tokens, the CLI and the
define modal — on SQLite and Postgres."""

from __future__ import annotations

import argparse
import hashlib
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.metrics.cli import register_metrics_parser, register_tokens_parser
from bot.metrics.registry import (
    MetricKeyTaken,
    MetricSpec,
    archive_metric,
    create_metric,
    get_metric,
    list_alerts,
    list_metrics,
    load_metrics_yaml,
    next_run,
    upsert_metrics,
)
from bot.metrics.tokens import authenticate, create_token, list_tokens, revoke_token
from bot.workspaces import get_or_create
from handlers import metrics_define
from handlers.metrics_define import DefineAction, DefineBlock, read_define_submission
from storage.db import Database
from storage.models import ApiToken, WorkspaceAdmin
from tests.helpers import unique

DATA = Path(__file__).parent / "data"
GOOD = DATA / "metrics.yml"
BAD = DATA / "metrics_bad.yml"
LONDON_SCHEDULE = {"cron": "0 9 * * *", "timezone": "Europe/London"}


def _specs(source: str | Path = GOOD) -> list[MetricSpec]:
    specs, errors = load_metrics_yaml(source)
    assert errors == []
    return specs


def _one(**overrides: Any) -> str:
    base = {"key": "signups", "name": "Signups", "unit": "count", "summary": "sum", "source": "push"}
    lines = [f"    {k}: {v}" for k, v in {**base, **overrides}.items()]
    return "metrics:\n  -" + "\n".join(lines)[3:] + "\n"


# ---- the file format --------------------------------------------------------------------------------


def test_good_file_loads_every_source() -> None:
    specs = {s.key: s for s in _specs()}
    assert list(specs) == ["weekly_signups", "requests_opened_weekly", "nps", "api_latency_p95"]
    sql = specs["weekly_signups"]
    assert sql.source_config() == {
        "datasource": "WAREHOUSE",
        "query": "select date_trunc('day', created_at) as ts, count(*) as value from accounts group by 1",
    }
    assert sql.schedule is not None and (sql.schedule.cron, sql.schedule.timezone) == (
        "0 6 * * *",
        "Europe/London",
    )
    assert sql.owner == "U0123ABC" and sql.target == 250.0
    assert [(a.kind, a.threshold, a.channel, a.cooldown) for a in sql.alerts] == [
        ("below", 200.0, "C0123ABCD", 1440),
        ("change", 20.0, "C0123ABCD", 360),
    ]
    builtin = specs["requests_opened_weekly"]
    assert builtin.source_config() == {"name": "requests_opened", "params": {}}
    assert (builtin.alerts[0].window, builtin.alerts[0].k) == (8, 3.0)  # anomaly defaults
    assert specs["nps"].period == "month" and specs["nps"].schedule is None
    assert specs["api_latency_p95"].alerts[0].cooldown == 90
    assert specs["api_latency_p95"].columns()["schedule_cron"] is None


def test_bad_file_lists_every_problem_with_file_metric_and_field() -> None:
    specs, errors = load_metrics_yaml(BAD)
    assert specs == []
    f = str(BAD)
    expected = [
        f"{f}: settings: is not a known setting (use `metrics:`)",
        f'{f}: metric "Weekly-Signups" (#1): key: "Weekly-Signups" is not a metric key',
        f"""{f}: metric "Weekly-Signups" (#1): unit: "people" is not one of 'count', 'percent'""",
        f'{f}: metric "Weekly-Signups" (#1): sql.datasource: "ware house" is not a datasource name',
        f'{f}: metric "Weekly-Signups" (#1): sql.query: must not be empty',
        f'{f}: metric "Weekly-Signups" (#1): schedule.cron: "0 6 * *" is not a 5-field cron expression',
        f'{f}: metric "Weekly-Signups" (#1): schedule.timezone: "Europe/Londn" is not a time zone — did you '
        'mean "Europe/London"?',
        f"{f}: metric #2: key: is required",
        f"""{f}: metric #2: summary: "total" is not one of 'last', 'sum'""",
        # Source rules are listed with the field problems, not only once those are fixed (issue 17).
        f"{f}: metric #2: schedule: push metrics get their points from the push API, not on a schedule",
        f'{f}: metric "churn" (#3): builtin.name: "requests_vanished" is not one of',
        f'{f}: metric "churn" (#3): alerts #1.threshold: an above alert needs a threshold',
        f'{f}: metric "churn" (#3): alerts #2.channel: "general" is not a channel id',
        f'{f}: metric "churn" (#3): alerts #2.cooldown: "soon" is not a cooldown',
        f'{f}: metric "churn" (#3): colour: is not a known setting',
        f'{f}: metric "churn" (#3): schedule: a builtin metric is pulled on a schedule',
        f'{f}: metric "churn" (#4): key: "churn" is also metric #3; keys must be unique',
        f'{f}: metric "churn" (#4): target: must be a finite number',
    ]
    for line in expected:
        assert any(e.startswith(line) for e in errors), f"missing: {line}\n" + "\n".join(errors)
    assert len(errors) == len(expected)


@pytest.mark.parametrize(
    ("yaml_text", "problem"),
    [
        (_one(source="sql"), "sql: a sql metric needs `sql: {datasource: NAME, query: ...}`"),
        (
            _one(source="sql", sql="{datasource: W, query: select 1}"),
            "schedule: a sql metric is pulled on a schedule",
        ),
        (_one(schedule='{cron: "0 6 * * *"}'), "schedule: push metrics get their points from the push API"),
        (
            _one(source="manual", schedule='{cron: "0 6 * * *"}'),
            "schedule: manual metrics get their points from",
        ),
        (
            _one(source="builtin", builtin="{name: feedback_items}", schedule='{cron: "0 9 31 2 *"}'),
            'schedule.cron: "0 9 31 2 *" never fires',
        ),
        (_one(builtin="{name: feedback_items}"), "builtin: only builtin metrics name a builtin"),
        (_one(alerts="[{kind: change, threshold: -5, channel: C0123ABCD}]"), "alerts #1.threshold: a change"),
        (
            _one(alerts="[{kind: below, threshold: 1, k: 2, channel: C0123ABCD}]"),
            "alerts #1: window and k are",
        ),
        (_one(owner="alice"), 'owner: "alice" is not a Slack user id'),
        (_one(key="x"), 'key: "x" is not a metric key'),
        (_one(period="year"), "period: \"year\" is not one of 'day', 'week' or 'month'"),
        ("metrics: [\n", "YAML syntax error"),
        ("types: []\n", "expected a mapping with a list of metrics under `metrics:`"),
    ],
)
def test_each_rule_is_named(yaml_text: str, problem: str) -> None:
    specs, errors = load_metrics_yaml(yaml_text, filename="m.yml")
    assert specs == []
    assert any(problem in e for e in errors), errors
    assert all(e.startswith("m.yml: ") for e in errors)


def test_next_run_is_dst_correct_across_the_october_change_in_london() -> None:
    # 2026-10-25 02:00 BST the clocks go back: 09:00 London is 08:00 UTC before, 09:00 UTC after.
    before = next_run(cron="0 9 * * *", timezone="Europe/London", now=datetime(2026, 10, 23, 12, tzinfo=UTC))
    after = next_run(cron="0 9 * * *", timezone="Europe/London", now=datetime(2026, 10, 24, 12, tzinfo=UTC))
    assert before == datetime(2026, 10, 24, 8, 0, tzinfo=UTC)
    assert after == datetime(2026, 10, 25, 9, 0, tzinfo=UTC)
    # 01:30 happens twice that night: the first (BST, 00:30 UTC) fires; the next is the day after, in GMT.
    twice = next_run(cron="30 1 * * *", timezone="Europe/London", now=datetime(2026, 10, 24, 23, tzinfo=UTC))
    assert twice == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)
    later = next_run(cron="30 1 * * *", timezone="Europe/London", now=datetime(2026, 10, 25, 2, tzinfo=UTC))
    assert later == datetime(2026, 10, 26, 1, 30, tzinfo=UTC)
    assert after is not None and after.tzinfo is UTC


# ---- services ---------------------------------------------------------------------------------------


def test_upsert_is_idempotent_and_schedules_in_the_metrics_zone(db: Database) -> None:
    team = unique("T")
    now = datetime(2026, 10, 24, 12, 0, tzinfo=UTC)  # the day before the clocks go back in London
    with db.session() as s:
        result = upsert_metrics(db_session=s, team_id=team, specs=_specs(), now=now)
    assert result.created == ["weekly_signups", "requests_opened_weekly", "nps", "api_latency_p95"]
    with db.read() as s:
        rows = {m.key: m for m in list_metrics(db_session=s, team_id=team)}
        signups = rows["weekly_signups"]
        assert signups.next_run_at == datetime(2026, 10, 25, 6, 0, tzinfo=UTC)  # 06:00 GMT, after the change
        assert rows["requests_opened_weekly"].next_run_at == datetime(2026, 10, 26, 1, 30, tzinfo=UTC)
        assert rows["nps"].next_run_at is None and rows["api_latency_p95"].next_run_at is None
        assert rows["weekly_signups"].source_config["datasource"] == "WAREHOUSE"
        alerts = list_alerts(db_session=s, team_id=team, metric_id=signups.id)
        first = [(a.id, a.kind, a.threshold, a.cooldown_minutes) for a in alerts]
        assert [a[1:] for a in first] == [("below", 200.0, 1440), ("change", 20.0, 360)]
        stamps = {m.key: (m.updated_at, m.next_run_at) for m in rows.values()}
    with db.session() as s:  # the same file again, a day later: nothing changes, not even next_run_at
        again = upsert_metrics(db_session=s, team_id=team, specs=_specs(), now=now + timedelta(days=1))
    assert (again.created, again.updated, len(again.unchanged)) == ([], [], 4)
    with db.read() as s:
        rows = {m.key: m for m in list_metrics(db_session=s, team_id=team)}
        assert {m.key: (m.updated_at, m.next_run_at) for m in rows.values()} == stamps
        alerts = list_alerts(db_session=s, team_id=team, metric_id=rows["weekly_signups"].id)
        assert [(a.id, a.kind, a.threshold, a.cooldown_minutes) for a in alerts] == first


def test_alerts_are_replaced_to_match_the_file_keeping_unchanged_rules(db: Database) -> None:
    team = unique("T")
    specs = _specs()
    with db.session() as s:
        upsert_metrics(db_session=s, team_id=team, specs=specs)
    with db.read() as s:
        metric_id = get_metric(db_session=s, team_id=team, key="weekly_signups").id  # type: ignore[union-attr]
        below_id = list_alerts(db_session=s, team_id=team, metric_id=metric_id)[0].id
    text = GOOD.read_text().replace("{kind: change, threshold: 20,", "{kind: change, threshold: 35,")
    text = text.replace('schedule: {cron: "0 6 * * *"', 'schedule: {cron: "0 7 * * *"')
    with db.session() as s:
        result = upsert_metrics(
            db_session=s, team_id=team, specs=_specs(text), now=datetime(2026, 11, 2, 12, tzinfo=UTC)
        )
    assert result.updated == ["weekly_signups"]
    with db.read() as s:
        metric = get_metric(db_session=s, team_id=team, key="weekly_signups")
        assert metric is not None and metric.schedule_cron == "0 7 * * *"
        assert metric.next_run_at == datetime(2026, 11, 3, 7, 0, tzinfo=UTC)
        alerts = list_alerts(db_session=s, team_id=team, metric_id=metric_id)
        assert [(a.kind, a.threshold) for a in alerts] == [("below", 200.0), ("change", 35.0)]
        assert alerts[0].id == below_id  # the unchanged rule kept its row (and its firing history)
    no_alerts = [s.model_copy(update={"alerts": []}) for s in _specs()]
    with db.session() as s:
        upsert_metrics(db_session=s, team_id=team, specs=no_alerts)
    with db.read() as s:
        assert list_alerts(db_session=s, team_id=team, metric_id=metric_id) == []


def test_dry_run_writes_nothing_and_archive_stops_the_schedule(db: Database) -> None:
    team = unique("T")
    with db.session() as s:
        dry = upsert_metrics(db_session=s, team_id=team, specs=_specs(), dry_run=True)
    assert len(dry.created) == 4
    with db.read() as s:
        assert list_metrics(db_session=s, team_id=team, include_archived=True) == []
    with db.session() as s:
        upsert_metrics(db_session=s, team_id=team, specs=_specs())
    with db.session() as s:
        assert archive_metric(db_session=s, team_id=team, key="weekly_signups") is True
        assert archive_metric(db_session=s, team_id=team, key="weekly_signups") is False
        assert archive_metric(db_session=s, team_id=unique("T"), key="nps") is False
    with db.read() as s:
        assert [m.key for m in list_metrics(db_session=s, team_id=team)] == [
            "api_latency_p95", "nps", "requests_opened_weekly"
        ]  # fmt: skip
        archived = get_metric(db_session=s, team_id=team, key="weekly_signups")
        assert archived is not None and archived.next_run_at is None
    with db.session() as s:  # loading the file again brings it back, scheduled
        assert upsert_metrics(db_session=s, team_id=team, specs=_specs()).updated == ["weekly_signups"]
    with db.read() as s:
        revived = get_metric(db_session=s, team_id=team, key="weekly_signups")
        assert revived is not None and revived.archived_at is None and revived.next_run_at is not None


def test_create_metric_refuses_a_taken_key(db: Database) -> None:
    team = unique("T")
    spec = _specs()[2]
    with db.session() as s:
        create_metric(db_session=s, team_id=team, spec=spec)
    with db.session() as s, pytest.raises(MetricKeyTaken, match="There already is a metric `nps`"):
        create_metric(db_session=s, team_id=team, spec=spec)
    with db.session() as s:  # another workspace may use the same key
        assert create_metric(db_session=s, team_id=unique("T"), spec=spec).key == "nps"


# ---- tokens -----------------------------------------------------------------------------------------


def test_tokens_are_hashed_shown_once_and_revocable(db: Database) -> None:
    team = unique("T")
    with db.session() as s:
        row, plaintext = create_token(db_session=s, team_id=team, name="warehouse export")
        token_id = row.id
    assert plaintext.startswith("prodops_") and len(plaintext) == len("prodops_") + 32
    with db.read() as s:
        stored = s.get(ApiToken, token_id)
        assert stored is not None
        assert stored.token_hash == hashlib.sha256(plaintext.encode()).hexdigest()
        assert plaintext not in (stored.token_hash, stored.prefix, stored.name)
        assert stored.prefix == plaintext[:12] and stored.last_used_at is None
    t0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
    with db.session() as s:
        found = authenticate(db_session=s, plaintext=plaintext, now=t0)
        assert found is not None and found.team_id == team and found.last_used_at == t0
    with db.session() as s:  # within the minute: not written again
        assert authenticate(db_session=s, plaintext=plaintext, now=t0 + timedelta(seconds=30)) is not None
    with db.read() as s:
        assert s.get(ApiToken, token_id).last_used_at == t0  # type: ignore[union-attr]
    with db.session() as s:
        authenticate(db_session=s, plaintext=plaintext, now=t0 + timedelta(seconds=61))
    with db.read() as s:
        assert s.get(ApiToken, token_id).last_used_at == t0 + timedelta(seconds=61)  # type: ignore[union-attr]
    with db.session() as s:
        assert authenticate(db_session=s, plaintext=plaintext + "x") is None
        assert authenticate(db_session=s, plaintext="not-a-token") is None
        assert revoke_token(db_session=s, team_id=unique("T"), token_id=token_id) is False  # not theirs
        assert revoke_token(db_session=s, team_id=team, token_id=token_id) is True
        assert revoke_token(db_session=s, team_id=team, token_id=token_id) is False
    with db.session() as s:
        assert authenticate(db_session=s, plaintext=plaintext) is None
        assert [t.id for t in list_tokens(db_session=s, team_id=team)] == [token_id]
        assert list_tokens(db_session=s, team_id=team, include_revoked=False) == []
    with db.session() as s, pytest.raises(ValueError, match="needs a name"):
        create_token(db_session=s, team_id=team, name="  ")


# ---- the CLI ----------------------------------------------------------------------------------------


def _run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="prodops")
    sub = parser.add_subparsers(dest="command", required=True)
    register_metrics_parser(sub)
    register_tokens_parser(sub)
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
    monkeypatch.delenv("PRODOPS_DATASOURCE_WAREHOUSE", raising=False)
    monkeypatch.setenv("DATABASE_URL", migrated_db_url)


def test_cli_metrics_load_dry_run_reload_and_list(
    cli_env: None, db: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    team = unique("T")
    assert _run_cli(["metrics", "load", str(GOOD), "--team", team, "--dry-run"]) == 0
    assert "would be 4 created, 0 updated, 0 unchanged" in capsys.readouterr().out
    with db.read() as s:
        assert list_metrics(db_session=s, team_id=team) == []
    assert _run_cli(["metrics", "load", str(GOOD), "--team", team]) == 0
    captured = capsys.readouterr()
    assert f"Loaded 4 metric(s) from {GOOD} into {team}: 4 created" in captured.out
    assert "PRODOPS_DATASOURCE_WAREHOUSE is not set here" in captured.err
    assert _run_cli(["metrics", "load", str(GOOD), "--team", team]) == 0
    assert "0 created, 0 updated, 4 unchanged" in capsys.readouterr().out
    assert _run_cli(["metrics", "list", "--team", team]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] for line in out] == [
        "api_latency_p95",
        "nps",
        "requests_opened_weekly",
        "weekly_signups",
    ]
    assert "schedule=0 6 * * * Europe/London" in out[3] and "source=sql" in out[3]


def test_cli_bad_file_exits_1_and_writes_nothing(
    cli_env: None, db: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    team = unique("T")
    assert _run_cli(["metrics", "load", str(BAD), "--team", team]) == 1
    err = capsys.readouterr().err
    assert "18 problem(s); nothing was loaded" in err and 'metric "churn" (#4): target' in err
    with db.read() as s:
        assert list_metrics(db_session=s, team_id=team, include_archived=True) == []
    assert _run_cli(["metrics", "load", str(DATA / "missing.yml"), "--team", team]) == 2


def test_cli_tokens_create_list_revoke(
    cli_env: None, db: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    team = unique("T")
    assert _run_cli(["tokens", "create", "--team", "TNOPE", "--name", "warehouse export"]) == 2
    assert capsys.readouterr().err.startswith(
        "ProdOps: TNOPE is not a workspace ProdOps knows, so it will not make a push-API token for it."
    )
    with db.session() as s:
        get_or_create(db_session=s, team_id=team)
    assert _run_cli(["tokens", "create", "--team", team, "--name", "warehouse export"]) == 0
    captured = capsys.readouterr()
    plaintext = captured.out.strip()
    assert plaintext.startswith("prodops_") and "\n" not in plaintext
    assert "shown only this once" in captured.err and plaintext not in captured.err
    with db.session() as s:
        token = authenticate(db_session=s, plaintext=plaintext)
        assert token is not None and token.team_id == team
        token_id = token.id
    assert _run_cli(["tokens", "list", "--team", team]) == 0
    listed = capsys.readouterr().out
    assert f"{token_id}\t{plaintext[:12]}…\twarehouse export" in listed and "active" in listed
    assert plaintext not in listed
    assert _run_cli(["tokens", "revoke", "--team", unique("T"), str(token_id)]) == 1
    assert _run_cli(["tokens", "revoke", "--team", team, str(token_id)]) == 0
    assert _run_cli(["tokens", "revoke", "--team", team, str(token_id)]) == 1
    capsys.readouterr()
    assert _run_cli(["tokens", "list", "--team", team]) == 0
    assert "revoked" in capsys.readouterr().out
    with db.session() as s:
        assert authenticate(db_session=s, plaintext=plaintext) is None


# ---- the define modal -------------------------------------------------------------------------------


def _values(**overrides: Any) -> dict[str, dict[str, Any]]:
    text = {"key": "weekly_signups", "name": "Weekly signups", "description": None, "target": "250"}
    text.update({k: v for k, v in overrides.items() if k in text})
    chosen = {
        "unit": "count",
        "direction": "up_is_good",
        "summary": "sum",
        "period": "week",
        "source": "push",
    }
    chosen.update({k: v for k, v in overrides.items() if k in chosen})
    values: dict[str, dict[str, Any]] = {}
    for name, value in text.items():
        values[DefineBlock[name]] = {DefineAction[name]: {"type": "plain_text_input", "value": value}}
    for name, value in chosen.items():
        values[DefineBlock[name]] = {DefineAction[name]: {"selected_option": {"value": value}}}
    values[DefineBlock.owner] = {DefineAction.owner: {"selected_user": overrides.get("owner", "U0OWNER1")}}
    return values


def test_define_submission_reads_a_spec_or_inline_errors() -> None:
    ok = read_define_submission(_values())
    assert ok.errors == {} and ok.spec is not None
    assert (ok.spec.key, ok.spec.source, ok.spec.target, ok.spec.owner) == (
        "weekly_signups",
        "push",
        250.0,
        "U0OWNER1",
    )
    bad = read_define_submission(_values(key="Weekly Signups", name="  ", target="lots", source="sql"))
    assert bad.spec is None
    assert bad.errors[DefineBlock.key].startswith('"Weekly Signups" is not a metric key')
    assert bad.errors[DefineBlock.name] == "Give the metric a name."
    assert bad.errors[DefineBlock.target].startswith("Give a number")
    assert bad.errors[DefineBlock.source].startswith("Pick manual or push")
    nan = read_define_submission(_values(target="nan"))
    assert nan.errors == {DefineBlock.target: "Must be a finite number"}


class _FakeClient:
    def __init__(self, *, slack_admin: bool) -> None:
        self.slack_admin = slack_admin
        self.opened: list[dict[str, Any]] = []

    def users_info(self, user: str) -> dict[str, Any]:
        return {"user": {"id": user, "is_admin": self.slack_admin}}

    def views_open(self, trigger_id: str, view: dict[str, Any]) -> None:
        self.opened.append(view)


def test_define_modal_is_for_admins_and_creates_the_metric(db: Database) -> None:
    team, admin, member = unique("T"), "U0ADMIN1", "U0MEMBER"
    with db.session() as s:
        s.add(WorkspaceAdmin(team_id=team, user_id=admin, added_by_user_id=None))
    client = _FakeClient(slack_admin=False)
    refusal = metrics_define.open_define_modal(client, db, team_id=team, user_id=member, trigger_id="1.2")  # type: ignore[arg-type]
    assert refusal is not None and "Only ProdOps admins can define metrics" in str(refusal)
    assert client.opened == []
    assert metrics_define.open_define_modal(client, db, team_id=team, user_id=admin, trigger_id="1.2") is None  # type: ignore[arg-type]
    (view,) = client.opened
    assert view["callback_id"] == "metric_define_modal"
    assert "prodops metrics load" in str(view)  # sql/builtin are YAML-only, and the modal says so

    acks: list[dict[str, Any]] = []

    class _Context(dict):  # BoltContext's team_id is an attribute
        @property
        def team_id(self) -> str:
            return team

    def submit_ctx(user: str, values: dict[str, Any]) -> dict[str, Any]:
        acks.clear()
        metrics_define.on_define_submit(
            ack=lambda **kw: acks.append(kw),  # type: ignore[arg-type]
            body={"user": {"id": user}},
            view={"state": {"values": values}},
            context=_Context(db=db),  # type: ignore[arg-type]
            client=client,  # type: ignore[arg-type]
        )
        return acks[0]

    assert submit_ctx(member, _values())["errors"] == {
        DefineBlock.key: "Only ProdOps admins can define metrics."
    }
    assert submit_ctx(admin, _values(key="x"))["response_action"] == "errors"
    done = submit_ctx(admin, _values())
    assert done["response_action"] == "update" and "/api/v1/metrics/weekly_signups/points" in str(
        done["view"]
    )
    with db.read() as s:
        metric = get_metric(db_session=s, team_id=team, key="weekly_signups")
        assert metric is not None and (metric.source, metric.target, metric.owner_user_id) == (
            "push",
            250.0,
            "U0OWNER1",
        )
    again = submit_ctx(admin, _values(name="Another"))
    assert again["errors"][DefineBlock.key].startswith("There already is a metric `weekly_signups`")
