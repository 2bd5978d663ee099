"""Theme names are about topics: never markup, ids, URLs or account names, whatever the messages hold."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from bot.insights import themes_job
from bot.insights.text import account_terms, has_markup
from bot.settings import Settings
from storage.db import Database
from storage.models import Account, FeedbackItem, Theme, Workspace
from tests.helpers import unique

TFIDF = Settings(PRODOPS_SIMILARITY_BACKEND="tfidf")
DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"  # beside the repository, as in CI

ACCOUNTS = ["Quillstone Legal", "Harbourview Clinics", "Marrowfield Foods"]
# Three topics, each message dressed the way people post in Slack: mentions, links, emoji, an account.
TOPICS = {
    "export": [
        "the CSV export drops the due date column",
        "CSV export is missing the custom field columns",
        "exporting to CSV loses the assignee column",
        "CSV export leaves the tags column empty",
        "the CSV export cuts columns after the twentieth",
        "CSV export shifts every column by one",
        "CSV export of archived tasks misses the status column",
        "the CSV export has no column for the estimate",
    ],
    "sso": [
        "SSO login loops back to the SAML page",
        "SAML SSO redirects forever in Firefox",
        "SSO login fails after the SAML certificate rotated",
        "the SAML SSO loop locks admins out",
        "SSO with Okta SAML loops on the login page",
        "SAML SSO login keeps redirecting to itself",
        "SSO login loop with Azure SAML since Monday",
        "SAML SSO loop on the mobile login too",
    ],
    "dark": [
        "please add a dark mode to the web app",
        "dark mode for the board view would help at night",
        "a dark theme for the app please, the white hurts",
        "dark mode request from the night shift team",
        "any plans for dark mode in the web app?",
        "dark mode and a high contrast theme please",
        "dark mode on the timeline view please",
        "the app needs a dark mode setting",
    ],
}
DRESSING = [
    "<@U05QX81ZP> {account}: {text} :pray:",
    "{account} says {text} <https://support.example.com/tickets/60117|ticket 60117>",
    "Hi team, {text} (from {account}, see https://app.example.net/b/9) thanks!",
    "&gt; {text}\n{account} &amp; friends :thumbsup: <#C03FEEDBACK|feedback>",
]


def _dressed() -> list[tuple[str, str]]:
    """(text, account) pairs, each topic's messages spread over every account and dressing."""
    rows = []
    for t, texts in enumerate(TOPICS.values()):
        for i, text in enumerate(texts):
            account = ACCOUNTS[(i + t) % len(ACCOUNTS)]
            rows.append((DRESSING[(i + t) % len(DRESSING)].format(account=account, text=text), account))
    return rows


def test_proposals_are_named_by_topic_not_by_markup_or_accounts(db: Database) -> None:
    team = unique("TNAME")
    with db.session() as s:
        s.add(Workspace(team_id=team))
        ids = {}
        for name in ACCOUNTS:
            account = Account(team_id=team, name=name, name_key=name.lower())
            s.add(account)
            s.flush()
            ids[name] = account.id
        for text, account in _dressed():
            s.add(
                FeedbackItem(
                    team_id=team, channel_id="C0NAME", text=text, captured_by_user_id="U0CAP",
                    source="command", visibility="public", account_id=ids[account],
                )
            )  # fmt: skip
    result = themes_job.run_for_team(db, team, force=True, settings=TFIDF)
    assert result.ran and len(result.proposed) >= 2, result
    terms = account_terms(ACCOUNTS)
    with db.read() as s:
        proposals = [s.get(Theme, theme_id) for theme_id in result.proposed]
    for theme in proposals:
        assert theme is not None
        assert not has_markup(theme.name, terms), theme.name
        assert not has_markup(theme.description or "", terms), theme.description
        lowered = theme.name.lower()
        assert not any(
            word in lowered for word in ("quillstone", "harbourview", "marrowfield", "example", "u05")
        )
        assert 2 <= len(theme.name.replace("·", " ").split()) <= 4, theme.name
    named = " ".join(t.name.lower() for t in proposals if t is not None)
    assert sum(word in named for word in ("csv", "sso", "saml", "dark")) >= 2, named


@pytest.mark.skipif(
    not (DATA / "feedback_dev" / "feedback_dev.jsonl").exists(),
    reason=f"feedback_dev is not at {DATA} (it lives beside the repository; CI has it there)",
)
def test_every_proposal_of_the_bench_is_clean() -> None:
    """bench/insights.py's held-out stream (TF-IDF) through the capture path: every proposal's name."""
    from bench import insights as bench

    rows = bench.split(bench.load_feedback(DATA))["heldout"]
    with tempfile.TemporaryDirectory() as folder:
        database = bench._database(folder)
        try:
            out = bench.capture_stream(database, "TBENCHNAMES", rows, TFIDF)
        finally:
            database.dispose()
    terms = account_terms(out["customers"])
    assert len(out["proposals"]) >= 5
    assert [name for name in out["proposals"] if has_markup(name, terms)] == []
