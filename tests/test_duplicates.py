"""Duplicate suggestions through the real server: auto-link + Undo, ask + Merge, ask + Not a duplicate,
who may decide, replays, a failing hook, and `/prodops duplicates` — on SQLite and Postgres.

Every test sets the workspace's bands (link 0.999, ask 0.35 on the duplicate likelihood) so its texts fall clearly into one band with
either backend: the same text scores ~1.0; a paraphrase on the same odd topic 0.45–0.92; another topic less.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import select, text, update

from bot import workspaces
from bot.insights import duplicates
from bot.insights.batch import run_insight_batch
from bot.insights.index import refit
from bot.settings import Settings
from bot.slack_client import TeamClients
from storage.db import Database
from storage.models import (
    DuplicateSuggestion,
    FeedbackItem,
    FeedbackVector,
    InsightTask,
    SimilarityModel,
    Workspace,
)
from storage.types import utcnow
from tests.conftest import Stack, run_stack
from tests.helpers import drain_insights, items_in_channel, unique, wait_for

# These tests run the insight batches themselves: their server's worker runs deliveries only.
OWN_DATABASE = True


@pytest.fixture(scope="module")
def stack(own_db_url: str, db: Database, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A real server and emulator of this module's own, whose worker leaves the insight tasks to the tests."""
    yield from run_stack(own_db_url, db, tmp_path_factory, PRODOPS_WORKER_QUEUES="inbox")


SLOW = 60.0  # the first capture in a server process loads (or fits) the similarity model
TFIDF = Settings(PRODOPS_SIMILARITY_BACKEND="tfidf")


def _topic(kind: str) -> tuple[str, str]:
    """A feedback text on an unusual topic and a paraphrase of it, both with a marker of this test."""
    marker = unique("case")
    pairs = {
        "rota": (
            f"Lighthouse rota {marker}: the night shifts disappear from the keeper spreadsheet after importing "
            "the harbour calendar",
            f"{marker} the harbour calendar import wipes the night shifts in our lighthouse keeper rota",
        ),
        "sensor": (
            f"Greenhouse humidity sensor {marker} reports 0% every Monday morning after the firmware update",
            f"{marker} since the firmware update the greenhouse sensor shows zero humidity on Mondays",
        ),
        "ferry": (
            f"Ferry ticket refunds {marker} take three weeks to reach customers who paid with gift cards",
            f"{marker} customers who pay ferry tickets by gift card wait weeks for their refunds",
        ),
        "choir": (
            f"Choir rehearsal bookings {marker}: the room planner double-books the organ loft on Thursdays",
            f"{marker} the organ loft gets double booked for Thursday choir rehearsals in the room planner",
        ),
        "bakery": (
            f"Bakery orders {marker}: the sourdough preorder form forgets the pickup time when paying by card",
            f"{marker} paying by card makes the sourdough preorder lose its pickup time",
        ),
    }
    return pairs[kind]


@contextmanager
def _bands(stack: Stack, link: float = 0.999, ask: float = 0.35) -> Iterator[None]:
    with stack.db.session() as s:
        workspace = workspaces.get_or_create(db_session=s, team_id=stack.team_id)
        workspace.duplicate_link_threshold, workspace.duplicate_ask_threshold = link, ask
    try:
        yield
    finally:
        with stack.db.session() as s:
            workspace = workspaces.get_or_create(db_session=s, team_id=stack.team_id)
            workspace.duplicate_link_threshold = workspace.duplicate_ask_threshold = None


def _refit_if_tfidf(stack: Stack, after_item: int) -> None:
    """A TF-IDF model learns its words from the corpus: refit so this test's words are known to it (once the
    item's insights have stored its vector, so the two never write it at once)."""
    drain_insights(stack.db, stack.emulator, item_ids=[after_item])

    def stored() -> bool:
        with stack.db.read() as s:
            return s.get(FeedbackVector, after_item) is not None

    wait_for(stored, timeout=SLOW, what="the item's vector")
    with stack.db.read() as s:
        backend = s.scalar(
            select(SimilarityModel.backend)
            .where(SimilarityModel.team_id == stack.team_id)
            .order_by(SimilarityModel.version.desc())
            .limit(1)
        )
    if backend == "tfidf":
        refit(stack.db, stack.team_id, settings=TFIDF)


def _people(stack: Stack) -> tuple[str, str, str]:
    emu = stack.emulator
    author, pm = emu.add_user(unique("cust"))["id"], emu.add_user(unique("pm"))["id"]
    channel = emu.add_channel(unique("dup"), members=[author, pm])["id"]
    return author, pm, channel


def _react_capture(
    stack: Stack,
    channel: str,
    author: str,
    pm: str,
    words: str,
    *,
    duplicate: bool = False,
    drain: bool = True,
) -> tuple[FeedbackItem, dict]:
    """Posts a message, reacts to it, and returns the item and its confirmation in the thread — once the
    confirmation shows the duplicate link or question, when one is expected (it is added in place)."""
    emu = stack.emulator
    message = emu.post_message(channel, author, words)
    stack.driver.react(user=pm, channel=channel, ts=message["ts"])
    reply = wait_for(
        lambda: [r for r in emu.replies(channel, message["ts"]) if r.get("bot_id")],
        timeout=SLOW,
        what="reply",
    )[0]
    item = next(i for i in items_in_channel(stack.db, channel) if i.message_ts == message["ts"])
    if drain:  # the worker's part: insights in a batch
        drain_insights(stack.db, stack.emulator, item_ids=[item.id])
    if duplicate:

        def shown() -> Any:
            found = emu.message(channel, reply["ts"])
            return found if found and _buttons(found["blocks"]) else None

        reply = wait_for(shown, timeout=SLOW, what="duplicate shown")
    return item, reply


def _prompted(stack: Stack, item_id: int) -> DuplicateSuggestion:
    """The suggestion once its prompt's place is recorded (just after the confirmation is posted)."""

    def recorded() -> Any:
        found = _suggestion(stack, item_id)
        return found if found.prompt_channel_id else None

    return wait_for(recorded, what="prompt")


def _suggestion(stack: Stack, item_id: int) -> DuplicateSuggestion:
    with stack.db.session() as s:
        found = s.scalar(select(DuplicateSuggestion).where(DuplicateSuggestion.item_id == item_id))
        assert found is not None, f"no suggestion for item {item_id}"
        return found


def _row(stack: Stack, item_id: int) -> dict[str, Any]:
    with stack.db.session() as s:
        item = s.get(FeedbackItem, item_id)
        assert item is not None
        return {c.key: getattr(item, c.key) for c in FeedbackItem.__table__.columns}


def _buttons(blocks: list[dict]) -> dict[str, str]:
    """action_id → value of the duplicate buttons in a message."""
    return {
        e["action_id"]: e.get("value", "")
        for b in blocks
        if b.get("type") == "actions"
        for e in b["elements"]
        if str(e.get("action_id", "")).startswith("dup_")
    }


def _click(
    stack: Stack, user: str, action_id: str, value: str, channel: str, message: dict | None, **kw: Any
) -> dict[str, Any]:
    payload = stack.driver.block_actions(
        user=user,
        actions=[{"type": "button", "action_id": action_id, "block_id": "dup", "value": value}],
        channel=channel,
        message=message,
        **kw,
    )
    assert stack.driver.send_interaction(payload).status == 200
    return payload


def _updates_of(stack: Stack, channel: str, ts: str) -> list[dict]:
    return [
        c.params
        for c in stack.emulator.calls("chat.update")
        if c.params.get("channel") == channel and c.params.get("ts") == ts
    ]


def _next_update(stack: Stack, channel: str, ts: str, seen: int) -> dict:
    """The first chat.update of a confirmation after the `seen` ones before a click."""
    return wait_for(lambda: _updates_of(stack, channel, ts)[seen:], what="prompt updated")[0]


def _answers(stack: Stack, key: str) -> list[dict]:
    return stack.emulator.response_url_posts(key)


def test_identical_feedback_is_linked_with_undo_that_restores_it(stack: Stack) -> None:
    author, pm, channel = _people(stack)
    words, _ = _topic("rota")
    with _bands(stack):
        first, _ = _react_capture(stack, channel, author, pm, words)
        _refit_if_tfidf(stack, first.id)
        second, confirmation = _react_capture(stack, channel, author, pm, words, duplicate=True)

        shown = json.dumps(confirmation["blocks"], ensure_ascii=False)
        assert "Looks like a duplicate of" in shown and f"#{first.id}" in shown and "— linked." in shown
        assert "% similar" in shown and str(first.permalink) in shown
        assert confirmation["blocks"][0]["accessory"]["text"]["text"] == "Edit details"
        suggestion = _prompted(stack, second.id)
        assert (suggestion.status, suggestion.candidate_id) == ("linked", first.id)
        assert (suggestion.prompt_channel_id, suggestion.prompt_ts) == (channel, confirmation["ts"])
        assert _buttons(confirmation["blocks"]) == {"dup_undo": str(suggestion.id)}
        linked = _row(stack, second.id)
        assert linked["duplicate_of_id"] == first.id and linked["duplicate_similarity"] >= 0.97

        message = stack.emulator.message(channel, confirmation["ts"])
        seen = len(_updates_of(stack, channel, confirmation["ts"]))  # the link itself was an update
        _click(stack, pm, "dup_undo", str(suggestion.id), channel, message)

        update = _next_update(stack, channel, confirmation["ts"], seen)
    assert f"Undone by <@{pm}>" in json.dumps(update["blocks"], ensure_ascii=False)
    assert _buttons(update["blocks"]) == {}  # buttons gone, the rest of the confirmation kept
    assert update["blocks"][0] == confirmation["blocks"][0]
    after = _row(stack, second.id)
    undone = _suggestion(stack, second.id)
    assert undone.status == "undone" and undone.decided_by_user_id == pm
    # Exactly the row before the link: what the link recorded as "before", and every other column untouched.
    before = dict(undone.previous_state["before"])
    assert before["duplicate_of_id"] is None and before["duplicate_similarity"] is None
    expected = {**linked, **{k: v for k, v in before.items() if k != "updated_at"}}
    expected["updated_at"] = after["updated_at"]
    assert after == expected and after["updated_at"].isoformat() == before["updated_at"]


def test_similar_feedback_asks_in_the_thread_and_merge_links_it(stack: Stack) -> None:
    author, pm, channel = _people(stack)
    words, paraphrase = _topic("sensor")
    with _bands(stack):
        first, _ = _react_capture(stack, channel, author, pm, words)
        _refit_if_tfidf(stack, first.id)
        second, confirmation = _react_capture(stack, channel, author, pm, paraphrase, duplicate=True)

        shown = json.dumps(confirmation["blocks"], ensure_ascii=False)
        assert "Is this the same feedback as" in shown and f"#{first.id}" in shown
        suggestion = _prompted(stack, second.id)
        assert suggestion.status == "asked" and 0.35 <= suggestion.score < 0.999
        assert suggestion.prompt_ts == confirmation["ts"]
        assert _buttons(confirmation["blocks"]) == {
            "dup_merge": str(suggestion.id),
            "dup_reject": str(suggestion.id),
        }
        assert _row(stack, second.id)["duplicate_of_id"] is None  # nothing linked before the answer

        seen = len(_updates_of(stack, channel, confirmation["ts"]))  # the question was added by an update
        _click(
            stack,
            pm,
            "dup_merge",
            str(suggestion.id),
            channel,
            stack.emulator.message(channel, confirmation["ts"]),
        )
        update = _next_update(stack, channel, confirmation["ts"], seen)
    assert f"by <@{pm}>" in json.dumps(update["blocks"], ensure_ascii=False) and "Merged with" in json.dumps(
        update["blocks"], ensure_ascii=False
    )
    assert _buttons(update["blocks"]) == {}
    assert _suggestion(stack, second.id).status == "merged"
    merged, canonical = _row(stack, second.id), _row(stack, first.id)
    assert (
        merged["duplicate_of_id"] == first.id and merged["text"] == paraphrase and canonical["text"] == words
    )
    with stack.db.session() as s:
        summary = duplicates.duplicate_summary(s, stack.team_id, first.id)
    assert summary is not None and summary.duplicate_ids == [second.id]


def test_typed_feedback_asks_in_its_answer_and_not_a_duplicate_is_final(stack: Stack) -> None:
    _, pm, channel = _people(stack)
    words, paraphrase = _topic("ferry")
    emu = stack.emulator
    with _bands(stack):
        stack.driver.command("/feedback", words, user=pm, channel=channel)
        first = wait_for(lambda: items_in_channel(stack.db, channel), timeout=SLOW, what="first item")[0]
        _refit_if_tfidf(stack, first.id)
        stack.driver.command("/feedback", paraphrase, user=pm, channel=channel)
        typed = wait_for(
            lambda: len(items_in_channel(stack.db, channel)) == 2, timeout=SLOW, what="second item"
        )
        assert typed
        drain_insights(stack.db, stack.emulator, item_ids=[i.id for i in items_in_channel(stack.db, channel)])
        # No thread: the question comes to the capturer only, as an ephemeral message after the answer.
        asking = wait_for(
            lambda: [
                e for e in emu.ephemerals(channel, user=pm) if "Is this the same feedback" in json.dumps(e)
            ],
            timeout=SLOW,
            what="the question",
        )
        answer = asking[0]
        second = next(i for i in items_in_channel(stack.db, channel) if i.id != first.id)
        assert f"#{first.id}" in json.dumps(answer)
        suggestion = _prompted(stack, second.id)
        assert (suggestion.status, suggestion.prompt_channel_id, suggestion.prompt_ts) == (
            "asked",
            channel,
            None,
        )

        ts = emu.next_ts()
        payload = _click(
            stack,
            pm,
            "dup_reject",
            str(suggestion.id),
            channel,
            {"ts": ts, "blocks": answer["blocks"]},
            container={"type": "message", "message_ts": ts, "channel_id": channel, "is_ephemeral": True},
        )
        replaced = wait_for(
            lambda: _answers(stack, stack.driver.response_key(payload)), what="answer updated"
        )[0]
    assert replaced.get("replace_original") is True
    assert "Not a duplicate of" in json.dumps(
        replaced["blocks"], ensure_ascii=False
    ) and f"<@{pm}>" in json.dumps(replaced["blocks"])
    assert _buttons(replaced["blocks"]) == {}
    rejected = _suggestion(stack, second.id)
    assert rejected.status == "rejected" and rejected.decided_by_user_id == pm
    assert _row(stack, second.id)["duplicate_of_id"] is None
    with stack.db.session() as s:  # the pair is never suggested again
        assert first.id in duplicates.rejected_with(db_session=s, team_id=stack.team_id, item_id=second.id)


def test_only_the_capturer_or_an_admin_may_decide(stack: Stack) -> None:
    author, pm, channel = _people(stack)
    stranger = stack.emulator.add_user(unique("stranger"))["id"]
    boss = stack.emulator.add_user(unique("boss"), is_admin=True)["id"]
    for user in (stranger, boss):
        stack.emulator.add_member(channel, user)
    words, paraphrase = _topic("choir")
    with _bands(stack):
        first, _ = _react_capture(stack, channel, author, pm, words)
        _refit_if_tfidf(stack, first.id)
        second, confirmation = _react_capture(stack, channel, author, pm, paraphrase, duplicate=True)
        suggestion = _suggestion(stack, second.id)
        assert suggestion.status == "asked"
        row_before = _row(stack, second.id)
        message = stack.emulator.message(channel, confirmation["ts"])
        seen = len(_updates_of(stack, channel, confirmation["ts"]))

        refused = _click(stack, stranger, "dup_merge", str(suggestion.id), channel, message)
        answer = wait_for(lambda: _answers(stack, stack.driver.response_key(refused)), what="refusal")[0]
        assert f"Only <@{pm}>" in json.dumps(answer, ensure_ascii=False) and "ProdOps admin" in json.dumps(
            answer, ensure_ascii=False
        )
        assert answer.get("replace_original") is False
        assert _suggestion(stack, second.id).status == "asked" and _row(stack, second.id) == row_before
        assert len(_updates_of(stack, channel, confirmation["ts"])) == seen

        _click(stack, boss, "dup_reject", str(suggestion.id), channel, message)  # admins may
        _next_update(stack, channel, confirmation["ts"], seen)
    decided = _suggestion(stack, second.id)
    assert (decided.status, decided.decided_by_user_id) == ("rejected", boss)


def test_replayed_and_repeated_clicks_change_nothing(stack: Stack) -> None:
    author, pm, channel = _people(stack)
    words, _ = _topic("bakery")
    with _bands(stack):
        first, _ = _react_capture(stack, channel, author, pm, words)
        _refit_if_tfidf(stack, first.id)
        second, confirmation = _react_capture(stack, channel, author, pm, words, duplicate=True)
        suggestion = _suggestion(stack, second.id)
        message = stack.emulator.message(channel, confirmation["ts"])
        seen = len(_updates_of(stack, channel, confirmation["ts"]))
        payload = _click(stack, pm, "dup_undo", str(suggestion.id), channel, message)
        _next_update(stack, channel, confirmation["ts"], seen)
        decided = _suggestion(stack, second.id)
        row = _row(stack, second.id)

        assert stack.driver.send_interaction(payload).status == 200  # Slack delivers the same click again
        again = _click(stack, pm, "dup_undo", str(suggestion.id), channel, message)  # a second click
        answer = wait_for(lambda: _answers(stack, stack.driver.response_key(again)), what="second answer")[0]
    assert "Already decided: undone" in json.dumps(
        answer, ensure_ascii=False
    ) and "Nothing changed" in json.dumps(answer, ensure_ascii=False)
    assert len(_updates_of(stack, channel, confirmation["ts"])) == seen + 1
    assert _row(stack, second.id) == row
    after = _suggestion(stack, second.id)
    assert (after.status, after.decided_at, after.previous_state) == (
        decided.status,
        decided.decided_at,
        decided.previous_state,
    )


def test_a_failing_hook_still_saves_and_confirms_and_is_retried(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    author, pm, channel = _people(stack)
    words, _ = _topic("rota")
    rename = "ALTER TABLE {} RENAME TO {}"
    with stack.db.engine.begin() as conn:  # the engine cannot read or write vectors
        conn.execute(text(rename.format("feedback_vectors", "feedback_vectors_away")))
    try:
        item, confirmation = _react_capture(stack, channel, author, pm, words, drain=False)
        wait_for(lambda: _task(stack, item.id).message_ts, what="confirmation recorded on the task")
        with caplog.at_level(logging.ERROR, logger="prodops.insights.batch"):
            assert run_insight_batch(db=stack.db, clients=_clients(stack), settings=TFIDF) == 0
    finally:
        with stack.db.engine.begin() as conn:
            conn.execute(text(rename.format("feedback_vectors_away", "feedback_vectors")))
    assert item.text == words
    assert (
        f"#{item.id}" in json.dumps(confirmation["blocks"], ensure_ascii=False)
        and _buttons(confirmation["blocks"]) == {}
    )
    with stack.db.session() as s:
        assert s.scalar(select(DuplicateSuggestion).where(DuplicateSuggestion.item_id == item.id)) is None
    log = caplog.text + stack.server.log_tail(400)
    assert f"could not encode feedback #{item.id}" in log or f"feedback #{item.id}" in log
    failed = _task(stack, item.id)
    assert (failed.status, failed.attempts) == ("queued", 1) and failed.last_error
    assert failed.available_at > utcnow()  # backing off

    with stack.db.session() as s:  # time passes: the retry is due
        s.execute(update(InsightTask).where(InsightTask.id == failed.id).values(available_at=utcnow()))
    drain_insights(stack.db, stack.emulator, item_ids=[item.id])
    done = _task(stack, item.id)
    assert (done.status, done.attempts) == ("done", 2)
    with stack.db.read() as s:
        assert s.get(FeedbackVector, item.id) is not None  # the retry stored what the first attempt could not


def _task(stack: Stack, item_id: int) -> InsightTask:
    with stack.db.read() as s:
        found = s.scalar(select(InsightTask).where(InsightTask.item_id == item_id))
        assert found is not None, f"no insight task for item {item_id}"
        return found


def _clients(stack: Stack) -> TeamClients:
    return TeamClients(token=stack.emulator.bot_token, base_url=stack.emulator.url)


def _prodops(stack: Stack, user: str, channel: str, words: str) -> str:
    command = stack.driver.slash_command(command="/prodops", text=words, user=user, channel=channel)
    response = stack.driver.send_form(command)
    assert response.status == 200
    key = stack.driver.response_key(command)
    answer = wait_for(lambda: _answers(stack, key), timeout=SLOW, what="/prodops answer")[0]
    return json.dumps(answer, ensure_ascii=False)


def _stored_bands(stack: Stack) -> tuple[float | None, float | None]:
    with stack.db.session() as s:
        workspace = s.get(Workspace, stack.team_id)
        assert workspace is not None
        return workspace.duplicate_link_threshold, workspace.duplicate_ask_threshold


def test_prodops_duplicates_shows_validates_and_sets_the_bands(stack: Stack) -> None:
    _, member, channel = _people(stack)
    admin = stack.emulator.add_user(unique("admin"), is_admin=True)["id"]
    stack.emulator.add_member(channel, admin)
    with _bands(stack, link=0.97, ask=0.35):
        with stack.db.session() as s:  # start from the defaults
            workspace = workspaces.get_or_create(db_session=s, team_id=stack.team_id)
            workspace.duplicate_link_threshold = workspace.duplicate_ask_threshold = None

        shown = _prodops(stack, member, channel, "duplicates")
        assert (
            "Duplicate suggestions" in shown
            and "the backend's defaults" in shown
            and "defaults: link" in shown
        )

        assert "Only ProdOps admins" in _prodops(stack, member, channel, "duplicates 0.9 0.75")
        assert "below the link threshold" in _prodops(stack, admin, channel, "duplicates 0.7 0.9")
        assert "at most 1" in _prodops(stack, admin, channel, "duplicates 1.5 0.5")
        assert "not two numbers" in _prodops(stack, admin, channel, "duplicates high low")
        assert "0 < ask < link" in _prodops(stack, admin, channel, "duplicates 0.9")
        assert _stored_bands(stack) == (None, None)  # no bad input was stored

        assert "Duplicate thresholds set" in _prodops(stack, admin, channel, "duplicates 0.9 75%")
        assert _stored_bands(stack) == (0.9, 0.75)
        shown = _prodops(stack, member, channel, "duplicates")
        assert "set for this workspace" in shown and "0.90" in shown and "0.75" in shown

        assert "back to the" in _prodops(stack, admin, channel, "duplicates default")
        assert _stored_bands(stack) == (None, None)
