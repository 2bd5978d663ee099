"""What the models see of a feedback text: Slack markup, links, ids, accounts and greetings taken out."""

from __future__ import annotations

import pytest

from bot.insights.text import account_terms, clean_for_model, has_markup

TERMS = account_terms(["Fennick & Rowe", "Primrose Lane Events", "Corvane Logistics Ltd"], ["corvane.io"])


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("<@U05ABC123> the export drops the due date", "the export drops the due date"),
        ("posted in <#C03RLSNOTES|release-notes>: search is slow", "posted in: search is slow"),
        (
            "see <https://support.example.com/tickets/60117|the ticket> for details",
            "see the ticket for details",
        ),
        ("see <https://app.example.com/board/9> please", "see please"),
        ("logs at https://logs.example.net/x?y=1 show a 500", "logs at show a 500"),
        (":rotating_light: board takes 20s to open :sob:", "board takes 20s to open"),
        (
            "error:\n```Traceback (most recent call last)\nKeyError: x```\nwhen exporting",
            "error: when exporting",
        ),
        ("the `due_date` column is empty", "the due_date column is empty"),
        (
            "Admin &gt; Billing shows 88 seats &amp; the invoice 97",
            "Admin > Billing shows 88 seats & the invoice 97",
        ),
        ("&gt; quoted: sync makes duplicates", "quoted: sync makes duplicates"),
        ("Fennick &amp; Rowe can't log in with SSO", "can't log in with SSO"),
        ("Fennick's admins want dark mode", "admins want dark mode"),
        ("Primrose Lane hires freelancers per event", "hires freelancers per event"),
        ("Corvane Logistics wants bulk edit (corvane.io)", "wants bulk edit"),
        ("Hi team, the calendar sync creates duplicates. Thanks!", "the calendar sync creates duplicates"),
        ("hey all - recurring tasks please\ncheers, Maya", "recurring tasks please"),
        ("Gantt arrows vanish after a drag - Tom", "Gantt arrows vanish after a drag"),
        ("same as ticket #60117, U05ABC1234 reported it", "same as, reported it"),
        ("", ""),
    ],
)
def test_clean_for_model(raw: str, expected: str) -> None:
    assert clean_for_model(raw, TERMS) == expected


def test_cleaning_keeps_the_words_people_report() -> None:
    text = "+1 — still seeing the burndown chart go flat again after the sprint closes"
    assert clean_for_model(text, TERMS) == text


def test_account_terms_cover_short_forms_and_domains() -> None:
    terms = set(TERMS)
    assert {
        "Fennick & Rowe",
        "Fennick",
        "Primrose Lane",
        "Corvane Logistics",
        "corvane.io",
        "corvane",
    } <= terms
    assert "Logistics" not in terms  # a common word alone is never taken for an account


@pytest.mark.parametrize(
    "name",
    ["<@U05ABC123> · Export", "Example com · https://app.example.com", "Fennick · SSO", ":tada: Dark mode",
     "U05ABCDEF9 · Billing", "CSV &amp; export", "corvane.io · Bulk edit"],
)  # fmt: skip
def test_has_markup_flags_what_a_name_must_not_hold(name: str) -> None:
    assert has_markup(name, TERMS)


@pytest.mark.parametrize(
    "name", ["CSV export · Missing fields", "SSO · Login loop", "Dark mode", "iOS widget"]
)
def test_has_markup_passes_plain_names(name: str) -> None:
    assert not has_markup(name, TERMS)
