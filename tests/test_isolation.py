"""Tenant isolation: two workspaces do random things side by side; nothing of one is ever visible in the other.

A hypothesis state machine drives the real server over signed HTTP as two workspaces, A and B: feedback by
command and by reaction, requests, manual metric records, pushed points (each workspace with its own API
token), digest subscriptions, previews and sends, App Home, lists, `/metric <key>`, and probes with the other
workspace's ids. Every text a workspace creates carries its marker (`zqa…` / `zqb…`, letters no Slack id,
hex id or trigger id can contain in lowercase). After every step, everything each workspace can see — the
answers to its commands, what the bot posted or published to its people and channels, its exports, the API's
answers to its token, its digests — is searched for the other's marker, people, channels and team id.
The same checks also prove each workspace sees its own data (so an empty answer cannot pass).

The server runs in multi-workspace mode: both workspaces install the app through OAuth, each gets its own bot
token, people and channels in its own emulator workspace. So beyond the data layer, every Web API call the bot
makes about a workspace's people or channels must use that workspace's token.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import inspect, select, update

from bot.devkit.driver import Response, SlackDriver
from bot.digests.modal import DigestAction, DigestBlock
from bot.export import feedback_rows, request_event_rows, request_rows
from bot.metrics.export import metric_rows, point_rows
from bot.metrics.tokens import create_token
from bot.requests.views import ReportAction
from storage import models
from storage.models import DigestOutbox, DigestSubscription, FeedbackItem, Metric, Request
from storage.types import utcnow
from tests.helpers import wait_for
from tests.oauth_support import OAuthStack, oauth_stack
from tests.test_digest_commands import _values as digest_values

STEPS = 15
EXAMPLES = 6


@dataclass
class Tenant:
    """One workspace of the run: who is in it, what it created, and what it has been shown."""

    letter: str
    team_id: str
    driver: SlackDriver
    users: list[str]
    admin: str
    channels: list[str]
    token: str  # the push API token
    bot_tokens: list[str]
    manual_key: str
    push_key: str
    feedback_markers: list[str] = field(default_factory=list)
    request_markers: list[str] = field(default_factory=list)
    manual_values: set[float] = field(default_factory=set)
    pushed: dict[str, float] = field(default_factory=dict)  # ts -> value
    subscriptions: dict[str, int] = field(default_factory=dict)  # channel -> subscription id
    response_keys: list[str] = field(default_factory=list)
    seen: list[str] = field(default_factory=list)  # everything shown to this workspace, as JSON text

    @property
    def marker_prefix(self) -> str:
        return f"zq{self.letter}"

    def marker(self) -> str:
        return f"{self.marker_prefix}{uuid.uuid4().hex[:10]}"

    def forbidden(self) -> list[str]:
        """What must never be shown to any other workspace."""
        return [
            self.marker_prefix,
            self.team_id,
            *self.users,
            *self.channels,
            *(f"D{u[1:]}" for u in self.users),
            *self.bot_tokens,
        ]

    def ids(self) -> list[str]:
        """Strings that mark a Web API call as addressed to this workspace."""
        return [*self.users, *self.channels, *(f"D{u[1:]}" for u in self.users)]


def _make_tenant(stack: OAuthStack, letter: str) -> Tenant:
    """A new workspace with two people, an admin and two channels, that has installed the app."""
    emu = stack.emulator
    team_id = f"TZ{letter.upper()}{uuid.uuid4().hex[:8].upper()}"
    stack.add_team(team_id, f"Team {letter.upper()}")
    users = [emu.add_user(f"{letter}-pm-{uuid.uuid4().hex[:6]}", team_id=team_id)["id"] for _ in range(2)]
    admin = emu.add_user(f"{letter}-admin-{uuid.uuid4().hex[:6]}", is_admin=True, team_id=team_id)["id"]
    people = [*users, admin]
    channels = [
        emu.add_channel(f"{letter}-prod-{uuid.uuid4().hex[:6]}", members=people, team_id=team_id)["id"]
        for _ in range(2)
    ]
    assert stack.install(team_id, user=admin).status == 200
    bot_tokens = [str(t["token"]) for t in emu.issued_tokens(team_id)]
    assert bot_tokens
    driver = stack.driver(team_id)
    manual_key, push_key = (
        f"zq{letter}_manual_{uuid.uuid4().hex[:8]}",
        f"zq{letter}_push_{uuid.uuid4().hex[:8]}",
    )
    with stack.db.session() as s:
        for key, source in ((manual_key, "manual"), (push_key, "push")):
            s.add(Metric(team_id=team_id, key=key, name=f"{key} name", unit="count", direction="up_is_good",
                         summary="last", period="day", source=source))  # fmt: skip
        _, token = create_token(db_session=s, team_id=team_id, name=f"pipeline {letter}")
    return Tenant(
        letter, team_id, driver, [*users, admin], admin, channels, token, bot_tokens, manual_key, push_key
    )


def _api(
    stack: OAuthStack, method: str, path: str, token: str, body: object | None = None
) -> tuple[int, Any]:
    request = urllib.request.Request(
        stack.server.base_url + path,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        method=method,
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


LOOK_NAMES = [
    "feedback list", "request list", "app home", "metric manual", "metric push", "digest preview", "digest send",
]  # fmt: skip


class IsolationMachine(RuleBasedStateMachine):
    """Random operations in two workspaces; after each, neither has been shown anything of the other."""

    stack: OAuthStack  # set by the test
    last: IsolationMachine | None = None  # the last run, for the command-line check after it

    def __init__(self) -> None:
        super().__init__()
        self.tenants = {letter: _make_tenant(self.stack, letter) for letter in ("a", "b")}
        self.calls_seen = len(self.stack.emulator.calls())
        self.turn = 0
        self.looks = 0

    # ---- driving -----------------------------------------------------------------------------------

    def _other(self, me: Tenant) -> Tenant:
        return self.tenants["b" if me.letter == "a" else "a"]

    def _command(self, me: Tenant, command: str, text: str, user: str, channel: str | None = None) -> dict:
        fields = me.driver.slash_command(
            command=command, text=text, user=user, channel=channel or me.channels[0]
        )
        response = me.driver.send_form(fields)
        assert response.status == 200, response.body
        self._saw(me, response)
        me.response_keys.append(SlackDriver.response_key(fields))
        return fields

    def _answer(self, me: Tenant, fields: dict, what: str) -> str:
        key = SlackDriver.response_key(fields)
        posts = wait_for(lambda: self.stack.emulator.response_url_posts(key), what=what)
        return json.dumps(posts, ensure_ascii=False)

    @staticmethod
    def _saw(me: Tenant, response: Response) -> None:
        if response.body:
            me.seen.append(response.body)

    def _wait_row(self, model: Any, me: Tenant, column: Any, marker: str) -> Any:
        def found() -> Any:
            with self.stack.db.read() as s:
                return s.scalar(select(model).where(model.team_id == me.team_id, column.contains(marker)))

        return wait_for(found, what=f"{model.__name__} {marker}")

    # ---- rules -------------------------------------------------------------------------------------

    def _next_user(self, me: Tenant) -> str:
        """People take turns, so no one person nears the command rate limit."""
        self.turn += 1
        return me.users[self.turn % len(me.users)]

    def _published(self, user: str) -> int:
        return len([c for c in self.stack.emulator.calls("views.publish") if c.params.get("user_id") == user])

    def _wait_published(self, user: str, before: int) -> None:
        wait_for(lambda: self._published(user) > before, what=f"App Home published for {user}")

    # ---- looking: what a workspace can ask to see ----------------------------------------------------

    def _look(self, me: Tenant, what: str) -> None:
        """One way a workspace sees its data; the invariant then searches what it was shown.

        The way drawn is turned by the number of looks so far, so that even hypothesis's simplest examples
        (the same draw again and again) look every way.
        """
        self.looks += 1
        what = LOOK_NAMES[(LOOK_NAMES.index(what) + self.looks) % len(LOOK_NAMES)]
        user = self._next_user(me)
        if what == "feedback list":
            answer = self._answer(me, self._command(me, "/feedback", "list", user), what)
            assert me.feedback_markers[-1] in answer  # the newest item is on the first page
        elif what == "request list":
            self._answer(me, self._command(me, "/request", "list", user), what)
        elif what == "app home":
            before = self._published(user)
            event = {"type": "app_home_opened", "user": user, "channel": f"D{user[1:]}", "tab": "home",
                     "event_ts": me.driver.new_ts()}  # fmt: skip
            assert me.driver.send_event(me.driver.event_callback(event)).status == 200
            self._wait_published(user, before)
        elif what in ("metric manual", "metric push"):
            key = me.manual_key if what == "metric manual" else me.push_key
            assert f"{key} name" in self._answer(me, self._command(me, "/metric", key, user), what)
        elif what in ("digest preview", "digest send"):
            channel, subscription_id = next(iter(me.subscriptions.items()))
            verb = what.split()[1]
            answer = self._answer(
                me, self._command(me, "/digest", f"{verb} {subscription_id}", user, channel), what
            )
            assert "There is no digest" not in answer
        else:
            raise AssertionError(what)

    LOOKS = st.sampled_from(LOOK_NAMES)

    # ---- rules: each changes one workspace, then the other one looks -----------------------------------

    @initialize()
    def both_workspaces_have_data(self) -> None:
        """Some of everything in each, so every look in one is a real chance to see the other's data."""
        for letter in "ab":
            me = self.tenants[letter]
            self._capture_by_command(me, me.users[0])
            self._open_request(me, me.users[1])
            self._subscribe_digest(me)
        for letter in "ab":
            self.capture_by_reaction(letter, 1, "app home")
            self.record_manual_value(letter, 7, "metric manual")
            self.push_points(letter, 1, 5, "digest preview")

    @rule(letter=st.sampled_from("ab"), look=LOOKS)
    def capture_by_command(self, letter: str, look: str) -> None:
        me = self.tenants[letter]
        self._capture_by_command(me, self._next_user(me))
        self._look(self._other(me), look)

    def _capture_by_command(self, me: Tenant, user: str) -> None:
        marker = me.marker()
        fields = self._command(me, "/feedback", f"Export drops a column {marker}", user)
        self._wait_row(FeedbackItem, me, FeedbackItem.text, marker)
        self._answer(me, fields, "feedback confirmation")
        me.feedback_markers.append(marker)

    @rule(letter=st.sampled_from("ab"), where=st.integers(0, 1), look=LOOKS)
    def capture_by_reaction(self, letter: str, where: int, look: str) -> None:
        me = self.tenants[letter]
        marker = me.marker()
        channel, author, reactor = me.channels[where], self._next_user(me), self._next_user(me)
        message = self.stack.emulator.post_message(
            channel, author, f"The dashboard is slow {marker}", team_id=me.team_id
        )
        assert me.driver.react(user=reactor, channel=channel, ts=message["ts"], reaction="bulb").status == 200
        self._wait_row(FeedbackItem, me, FeedbackItem.text, marker)
        me.feedback_markers.append(marker)
        self._look(self._other(me), look)

    @rule(letter=st.sampled_from("ab"), look=LOOKS)
    def open_request(self, letter: str, look: str) -> None:
        me = self.tenants[letter]
        self._open_request(me, self._next_user(me))
        self._look(self._other(me), look)

    def _open_request(self, me: Tenant, user: str) -> None:
        marker = me.marker()
        self._command(me, "/request", f"Please pull the churn numbers {marker}", user)
        self._wait_row(Request, me, Request.title, marker)
        me.request_markers.append(marker)

    @rule(letter=st.sampled_from("ab"), value=st.integers(1, 999), look=LOOKS)
    def record_manual_value(self, letter: str, value: int, look: str) -> None:
        me = self.tenants[letter]
        fields = self._command(me, "/metric", f"record {me.manual_key} {value}", self._next_user(me))
        assert "Recorded" in self._answer(me, fields, "metric record")
        me.manual_values.add(float(value))  # recorded at now: each record is a point of its own
        self._look(self._other(me), look)

    @rule(letter=st.sampled_from("ab"), day=st.integers(1, 28), value=st.integers(1, 10_000), look=LOOKS)
    def push_points(self, letter: str, day: int, value: int, look: str) -> None:
        me, them = self.tenants[letter], self._other(self.tenants[letter])
        ts = f"2026-10-{day:02d}T00:00:00Z"
        status, answer = _api(self.stack, "POST", f"/api/v1/metrics/{me.push_key}/points", me.token,
                              {"ts": ts, "value": value})  # fmt: skip
        assert (status, answer) == (200, {"accepted": 1, "metric": me.push_key})
        me.seen.append(json.dumps(answer))
        me.pushed[ts] = float(value)
        # The other workspace's token cannot write here (its refusal echoes only the key it sent).
        status, answer = _api(self.stack, "POST", f"/api/v1/metrics/{me.push_key}/points", them.token,
                              {"ts": ts, "value": value + 1})  # fmt: skip
        assert status == 404, answer
        self._look(them, look)

    @precondition(lambda self: any(len(t.subscriptions) < len(t.channels) for t in self.tenants.values()))
    @rule(letter=st.sampled_from("ab"), look=LOOKS)
    def subscribe_digest(self, letter: str, look: str) -> None:
        me = self.tenants[letter]
        if len(me.subscriptions) < len(me.channels):
            self._subscribe_digest(me)
        self._look(self._other(me), look)

    def _subscribe_digest(self, me: Tenant) -> None:
        channel = next(c for c in me.channels if c not in me.subscriptions)
        fields = self._command(me, "/digest", "subscribe", me.admin, channel)
        opened = wait_for(
            lambda: [c for c in self.stack.emulator.calls("views.open") if c.params.get("trigger_id") == fields["trigger_id"]],
            what="digest modal",
        )[0].params["view"]  # fmt: skip
        assert me.manual_key in json.dumps(opened)  # the modal offers this workspace's metrics
        values = digest_values(sections=("metrics", "feedback", "requests"), metrics=(me.manual_key, me.push_key),
                               name=f"Digest {me.marker()}")  # fmt: skip
        values[DigestBlock.options][DigestAction.options]["selected_options"] = []  # sent even when quiet
        response = me.driver.send_interaction(
            me.driver.view_submission(user=me.admin, view=opened, values=values)
        )
        assert response.status == 200
        self._saw(me, response)

        def subscribed() -> Any:
            with self.stack.db.read() as s:
                return s.scalar(select(DigestSubscription.id).where(
                    DigestSubscription.team_id == me.team_id, DigestSubscription.channel_id == channel))  # fmt: skip

        me.subscriptions[channel] = wait_for(subscribed, what="subscription")

    @rule(letter=st.sampled_from("ab"), look=LOOKS)
    def scheduled_digest(self, letter: str, look: str) -> None:
        """The server's digest tick sends this workspace's digest when it falls due (time moved on here)."""
        me = self.tenants[letter]
        subscription_id = next(iter(me.subscriptions.values()))
        with self.stack.db.session() as s:
            s.execute(
                update(DigestSubscription)
                .where(DigestSubscription.team_id == me.team_id, DigestSubscription.id == subscription_id)
                .values(next_run_at=utcnow() - timedelta(minutes=1))
            )

        def delivered() -> bool:
            with self.stack.db.read() as s:
                due = s.scalar(
                    select(DigestSubscription.next_run_at).where(DigestSubscription.id == subscription_id)
                )
                status = s.scalar(select(DigestOutbox.status).where(DigestOutbox.subscription_id == subscription_id)
                                  .order_by(DigestOutbox.id.desc()))  # fmt: skip
            return due is not None and due > utcnow() and status == "sent"

        wait_for(delivered, timeout=20, what="the scheduled digest")
        self._look(self._other(me), look)

    @rule(letter=st.sampled_from("ab"), what=LOOKS)
    def look(self, letter: str, what: str) -> None:
        self._look(self.tenants[letter], what)

    @rule(letter=st.sampled_from("ab"), verb=st.sampled_from(["preview", "send", "unsubscribe"]))
    def use_the_other_workspace_ids(self, letter: str, verb: str) -> None:
        """An admin here names the other workspace's digest and request ids: refused, and nothing changes."""
        me, them = self.tenants[letter], self._other(self.tenants[letter])
        subscription_id = next(iter(them.subscriptions.values()))
        answer = self._answer(me, self._command(me, "/digest", f"{verb} {subscription_id}", me.admin), verb)
        assert f"There is no digest `{subscription_id}`" in answer
        with self.stack.db.read() as s:
            before = {
                r.id: r.status for r in s.scalars(select(Request).where(Request.team_id == them.team_id))
            }
            subscriptions = set(s.scalars(select(DigestSubscription.id).where(
                DigestSubscription.team_id == them.team_id, DigestSubscription.paused_at.is_(None))))  # fmt: skip
        request_id = max(before)
        published = self._published(me.admin)
        action = {"action_id": ReportAction.home_done.value, "block_id": "home", "type": "button",
                  "value": str(request_id)}  # fmt: skip
        payload = me.driver.block_actions(
            user=me.admin, actions=[action], view={"id": "VHOME", "type": "home"}
        )
        assert me.driver.send_interaction(payload).status == 200
        self._wait_published(me.admin, published)
        with self.stack.db.read() as s:
            after = {
                r.id: r.status for r in s.scalars(select(Request).where(Request.team_id == them.team_id))
            }
            still = set(s.scalars(select(DigestSubscription.id).where(
                DigestSubscription.team_id == them.team_id, DigestSubscription.paused_at.is_(None))))  # fmt: skip
        assert after == before and still == subscriptions

    # ---- what each workspace sees --------------------------------------------------------------------

    def _collect_calls(self) -> None:
        """Web API calls since the last check, filed under every workspace whose people or channels they address."""
        calls = self.stack.emulator.calls()
        fresh, self.calls_seen = calls[self.calls_seen :], len(calls)
        for call in fresh:
            text = json.dumps([call.method, call.params], ensure_ascii=False)
            for tenant in self.tenants.values():
                if any(i in text for i in tenant.ids()):
                    tenant.seen.append(text)
                    # About this workspace's people or channels: with this workspace's token, nothing else.
                    assert call.token in tenant.bot_tokens, (
                        f"{call.method} for {tenant.team_id} with another token"
                    )

    def _exports(self, me: Tenant) -> dict[str, list[dict[str, Any]]]:
        db = self.stack.db
        return {
            "feedback": list(feedback_rows(db, me.team_id)),
            "requests": list(request_rows(db, me.team_id)),
            "request_events": list(request_event_rows(db, me.team_id)),
            "metrics": list(metric_rows(db, me.team_id)),
            "points": list(point_rows(db, me.team_id)),
        }

    @invariant()
    def nothing_of_one_workspace_is_visible_in_the_other(self) -> None:
        self._collect_calls()
        for me in self.tenants.values():
            them = self._other(me)
            exports = self._exports(me)
            status, listed = _api(self.stack, "GET", "/api/v1/metrics", me.token)
            assert status == 200
            with self.stack.db.read() as s:
                digests = [
                    (d.channel_id, d.text, d.blocks)
                    for d in s.scalars(select(DigestOutbox).where(DigestOutbox.team_id == me.team_id))
                ]
            assert {channel for channel, _, _ in digests} <= set(me.channels)
            shown = [
                *me.seen,
                *(
                    json.dumps(self.stack.emulator.response_url_posts(k), ensure_ascii=False)
                    for k in me.response_keys
                ),
                json.dumps(exports, default=str, ensure_ascii=False),
                json.dumps(listed),
                json.dumps(digests, ensure_ascii=False),
            ]
            for text in shown:
                leaked = [f for f in them.forbidden() if f in text]
                assert not leaked, (
                    f"{them.letter.upper()}'s {leaked} shown to {me.letter.upper()}: {text[:600]}"
                )
            # Exports: only this workspace's rows, and all of them.
            for name, rows in exports.items():
                assert all(r.get("team_id", me.team_id) == me.team_id for r in rows), name
            assert {
                m for m in me.feedback_markers if any(m in r["text"] for r in exports["feedback"])
            } == set(me.feedback_markers)
            assert {
                m for m in me.request_markers if any(m in r["title"] for r in exports["requests"])
            } == set(me.request_markers)
            assert {r["key"] for r in exports["metrics"]} == {me.manual_key, me.push_key}
            assert {r["key"] for r in listed["metrics"]} == {me.manual_key, me.push_key}
            pushed = {r["value"] for r in exports["points"] if r["metric_key"] == me.push_key}
            manual = {r["value"] for r in exports["points"] if r["metric_key"] == me.manual_key}
            assert pushed == set(me.pushed.values()) and manual == me.manual_values
            self._ids_are_disjoint(me, them, exports)

    def _ids_are_disjoint(self, me: Tenant, them: Tenant, exports: dict[str, list[dict[str, Any]]]) -> None:
        with self.stack.db.read() as s:
            their_items = set(s.scalars(select(FeedbackItem.id).where(FeedbackItem.team_id == them.team_id)))
            their_requests = set(s.scalars(select(Request.id).where(Request.team_id == them.team_id)))
        assert not their_items & {r["id"] for r in exports["feedback"]}
        assert not their_requests & {r["id"] for r in exports["requests"]}
        assert not their_requests & {r["request_id"] for r in exports["request_events"]}

    def teardown(self) -> None:
        # Late side effects (a DM after the row was written) are checked too.
        self.nothing_of_one_workspace_is_visible_in_the_other()
        IsolationMachine.last = self


@pytest.fixture(scope="module")
def oauth(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OAuthStack]:
    # The digest tick runs in the server every half second, so a digest that falls due is sent at once.
    yield from oauth_stack(backend, tmp_path_factory.mktemp("isolation"), PRODOPS_DIGEST_TICK_SECONDS="0.5")


def test_two_workspaces_never_see_each_other(oauth: OAuthStack, tmp_path: Any) -> None:
    stack = IsolationMachine.stack = oauth
    run_state_machine_as_test(
        IsolationMachine,
        settings=settings(
            max_examples=EXAMPLES,
            stateful_step_count=STEPS,
            deadline=None,
            derandomize=True,  # a fixed sequence of seeds: the same runs in CI every time
            database=None,
            # No shrinking: replaying against a live server cannot reproduce a step exactly; the failing
            # run's steps are printed as they were.
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        ),
    )
    last = IsolationMachine.last
    assert last is not None
    b, a = last.tenants["b"], last.tenants["a"]
    # The command line export, as an operator runs it: only B's items, none of A's.
    result = subprocess.run(
        [sys.executable, "-m", "bot.cli", "export", "feedback", "--format", "jsonl", "--team", b.team_id],
        env={**os.environ, "DATABASE_URL": stack.db_url}, cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert not [f for f in a.forbidden() if f in result.stdout]
    assert all(m in result.stdout for m in b.feedback_markers)


# Tables with no team_id, and why each is safe.
NO_TEAM_ID = {
    "alembic_version": "Alembic's bookkeeping",
    "slack_oauth_states": "OAuth state values live minutes, before any team is known",
}


def test_every_table_is_keyed_by_workspace(db: Any) -> None:
    """Every table has a team_id column (the key of every query), except the documented few."""
    tables = inspect(db.engine).get_table_names()
    assert set(models.Base.metadata.tables) <= set(tables)
    missing = sorted(
        t for t in tables if "team_id" not in {c["name"] for c in inspect(db.engine).get_columns(t)}
    )
    assert missing == sorted(t for t in NO_TEAM_ID if t in tables), missing
    for name, table in models.Base.metadata.tables.items():
        if name not in NO_TEAM_ID:
            assert ("team_id" in table.c and not table.c.team_id.nullable) or name.startswith("slack_"), name


pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.NonInteractiveExampleWarning")
