"""Realistic feedback for theme tests: a few groups a person would name, and helpers to store them."""

from __future__ import annotations

from sqlalchemy import select

from bot.insights import index as similarity_index
from bot.settings import Settings
from storage.db import Database
from storage.models import FeedbackItem, Theme, Visibility

# The light default backend (the server under test uses it too); EMBEDDINGS when its extra is installed.
TFIDF = Settings(PRODOPS_SIMILARITY_BACKEND="tfidf")
EMBEDDINGS = Settings(PRODOPS_SIMILARITY_BACKEND="embeddings")

GROUPS: dict[str, list[str]] = {
    "export": [
        "CSV export drops the last column when a field contains a comma",
        "The CSV export is missing columns for custom fields",
        "Exporting to CSV loses the notes column",
        "Our finance team needs the CSV export to include every column",
        "CSV export cuts off columns after the twentieth one",
        "When I export the report to CSV some columns are empty",
        "CSV export of the pipeline view is missing the owner column",
        "Please fix the CSV export, columns are shifted by one",
    ],
    "sso": [
        "We need SSO login with Okta before we can roll out to the whole company",
        "SAML single sign-on with Azure AD keeps failing for our users",
        "Can you support SSO through Okta for login?",
        "Our IT team requires SAML SSO login for every tool",
        "SSO login redirects loop forever with Google Workspace SAML",
        "Single sign-on via Okta would make login so much easier",
        "Login with SSO fails after the SAML certificate was rotated",
        "Enterprise plan needs SSO login enforced for all members",
    ],
    "mobile": [
        "The mobile app crashes when I open a notification on Android",
        "iOS app crashes on launch since the last update",
        "Mobile app is very slow to load the dashboard on my phone",
        "Android app crashes whenever I upload a photo",
        "The iPhone app freezes and crashes when switching accounts",
        "Mobile app crashes offline when syncing",
        "App crashes on my Android tablet after login",
        "The mobile app keeps crashing when opening attachments",
    ],
}

# Only the HTTP scenarios use these: the server's workspace is shared with other tests' themes and items.
SCENARIO_GROUPS: dict[str, list[str]] = {
    "scanner": [
        "The warehouse barcode scanner beeps but the pallet count never updates",
        "Barcode scanner in the warehouse app skips every second pallet label",
        "Our warehouse team cannot scan pallet barcodes with the Zebra scanner",
        "Scanning a pallet barcode twice in the warehouse doubles the count",
        "Warehouse barcode scanner disconnects after ten pallet scans",
        "Pallet barcode labels printed by the warehouse scanner are unreadable",
        "Zebra barcode scanner support for warehouse pallet intake please",
        "Warehouse pallet scanning with the barcode scanner is painfully slow",
    ],
    "invoices": [
        "Invoice PDF should be available in Spanish for our Madrid office",
        "Please translate the invoice PDF into Spanish and Portuguese",
        "Spanish invoice PDF shows English tax labels",
        "Our accountants need the invoice PDF in Spanish with the VAT number",
        "Invoice PDF in Spanish has the wrong date format",
        "Can invoices be generated as Spanish PDF for Latin American customers?",
        "The Spanish invoice PDF cuts off the VAT line",
        "Invoice PDF language setting ignores Spanish",
    ],
}

NOISE = [
    "Love the new dashboard colours",
    "How do I invite a guest to a workspace?",
    "Pricing page typo in the third paragraph",
]


def add_items(
    db: Database,
    team_id: str,
    texts: list[str],
    *,
    channel_id: str = "C0THEMES",
    visibility: str = Visibility.public.value,
    vectors: bool = True,
    settings: Settings = TFIDF,
) -> list[int]:
    """Stores items (and, with `vectors`, their vectors via the index) and returns their ids."""
    ids = []
    with db.session() as s:
        for text in texts:
            item = FeedbackItem(
                team_id=team_id,
                channel_id=channel_id,
                text=text,
                captured_by_user_id="U0CAPTURE",
                source="command",
                visibility=visibility,
            )
            s.add(item)
            s.flush()
            ids.append(item.id)
    if vectors:
        index = similarity_index.get_index(db, team_id, settings=settings)
        with db.session() as s:
            for item_id, text in zip(ids, texts, strict=True):
                index.add(s, item_id, text)
    return ids


def themes_of(db: Database, team_id: str) -> list[Theme]:
    with db.read() as s:
        return list(s.scalars(select(Theme).where(Theme.team_id == team_id).order_by(Theme.id)))


def items_of(db: Database, team_id: str) -> dict[int, FeedbackItem]:
    with db.read() as s:
        rows = s.scalars(select(FeedbackItem).where(FeedbackItem.team_id == team_id)).unique()
        return {i.id: i for i in rows}
