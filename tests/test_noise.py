"""The channel-monitoring noise filter: a table of realistic Slack messages on each side, plus edge rules."""

from __future__ import annotations

from typing import Any

import pytest

from bot.feedback.noise import (
    MIN_MEANINGFUL_CHARS,
    NoiseVerdict,
    classify_message,
    is_acknowledgement,
    is_noise,
)


def msg(text: Any = "", **extra: Any) -> dict[str, Any]:
    """A top-level human `message` event in a watched channel."""
    event: dict[str, Any] = {
        "type": "message",
        "user": "U024BE7LH",
        "text": text,
        "ts": "1715000000.000100",
        "channel": "C0FEEDBAK",
    }
    event.update(extra)
    return event


def rich_text(*elements: dict[str, Any]) -> list[dict[str, Any]]:
    """A `blocks` list holding one rich_text section with `elements`."""
    return [
        {
            "type": "rich_text",
            "block_id": "b1",
            "elements": [{"type": "rich_text_section", "elements": list(elements)}],
        }
    ]


# (id, event, expected reason)
NOISE: list[tuple[str, dict[str, Any], str]] = [
    # bots and apps
    ("bot_id", msg("Deploy finished :rocket:", bot_id="B01"), "bot_message"),
    ("bot_subtype", msg("New ticket #4411", subtype="bot_message", user=None), "bot_message"),
    ("app_without_user", msg("Daily digest: 4 new items", app_id="A01", user=None), "bot_message"),
    ("bot_profile", msg("Standup reminder", bot_profile={"name": "Geekbot"}), "bot_message"),
    # subtypes
    ("join", msg("<@U024BE7LH> has joined the channel", subtype="channel_join"), "subtype:channel_join"),
    ("leave", msg("<@U024BE7LH> has left the channel", subtype="channel_leave"), "subtype:channel_leave"),
    ("topic", msg("set the channel topic: Feedback", subtype="channel_topic"), "subtype:channel_topic"),
    ("purpose", msg("set the purpose", subtype="channel_purpose"), "subtype:channel_purpose"),
    ("rename", msg("renamed the channel", subtype="channel_name"), "subtype:channel_name"),
    ("pinned", msg("pinned a message", subtype="pinned_item"), "subtype:pinned_item"),
    ("changed", msg(None, subtype="message_changed", hidden=True), "subtype:message_changed"),
    ("deleted", msg(None, subtype="message_deleted", hidden=True), "subtype:message_deleted"),
    ("reminder", msg("set up a reminder", subtype="reminder_add"), "subtype:reminder_add"),
    ("huddle", msg("", subtype="huddle_thread"), "subtype:huddle_thread"),
    ("hidden", msg("Export is broken for EU tenants", hidden=True), "hidden"),
    # thread replies
    (
        "reply",
        msg("Yes, the CSV export drops the last column", thread_ts="1714999999.000100"),
        "thread_reply",
    ),
    # auto-replies
    ("ooo_en", msg("I am out of the office until Monday 12 May with no access to email."), "auto_reply"),
    ("ooo_short", msg("OOO until Monday, ping <@U0BACKUP> for anything urgent"), "auto_reply"),
    ("auto_reply_subject", msg("Automatic reply: Re: Acme renewal"), "auto_reply"),
    ("auto_reply_dash", msg("Auto-reply - I'm away from my desk"), "auto_reply"),
    (
        "away_limited",
        msg("Hi! I'm currently on vacation with limited access to email. For urgent matters contact Dana."),
        "auto_reply",
    ),
    ("back_on", msg("Thanks for your message. I will be back on June 3rd."), "auto_reply"),
    ("respond_return", msg("I'll respond to your message when I return."), "auto_reply"),
    ("away_until", msg("I’m on parental leave until September, please reach out to Sam"), "auto_reply"),
    ("ooo_de", msg("Abwesenheitsnotiz: Ich bin bis zum 14.06. nicht im Büro."), "auto_reply"),
    ("ooo_de_body", msg("Ich bin derzeit nicht im Büro und ab Montag wieder erreichbar."), "auto_reply"),
    ("ooo_fr", msg("Je suis absent du bureau jusqu'au 20 août."), "auto_reply"),
    ("ooo_es", msg("Estoy fuera de la oficina hasta el lunes."), "auto_reply"),
    # acknowledgements
    ("thanks", msg("thanks!"), "acknowledgement"),
    ("thank_you_pray", msg("thank you so much 🙏"), "acknowledgement"),
    ("ty", msg("ty"), "acknowledgement"),
    ("thx", msg("thx"), "acknowledgement"),
    ("ok", msg("ok"), "acknowledgement"),
    ("okay_thumbs", msg("okay 👍"), "acknowledgement"),
    ("got_it", msg("Got it."), "acknowledgement"),
    ("will_do", msg("will do"), "acknowledgement"),
    ("sounds_good", msg("Sounds good!"), "acknowledgement"),
    ("plus_one", msg("+1"), "acknowledgement"),
    ("lgtm", msg("LGTM"), "acknowledgement"),
    ("noted", msg("noted"), "acknowledgement"),
    ("on_it", msg("on it"), "acknowledgement"),
    ("done", msg("Done ✅"), "acknowledgement"),
    ("cool", msg("cool"), "acknowledgement"),
    ("great_thanks_mention", msg("great, thanks <@U123ABC>"), "acknowledgement"),
    ("haha", msg("hahaha"), "acknowledgement"),
    ("lol", msg("lol"), "acknowledgement"),
    ("yes", msg("yes"), "acknowledgement"),
    ("no", msg("no"), "acknowledgement"),
    ("k", msg("k"), "acknowledgement"),
    ("elongated", msg("thanksss <!here> :raised_hands:"), "acknowledgement"),
    ("team_thanks", msg("Thanks for the update, team! <#C0FEEDBAK|feedback>"), "acknowledgement"),
    ("merci", msg("Merci beaucoup !"), "acknowledgement"),
    ("danke", msg("Vielen Dank 😊"), "acknowledgement"),
    ("gracias", msg("¡Muchas gracias!"), "acknowledgement"),
    ("no_worries", msg("no worries, sounds good 👌"), "acknowledgement"),
    # emoji only, empty, too short
    ("thumbs", msg("👍"), "emoji_only"),
    ("tada_codes", msg(":tada: :tada:"), "emoji_only"),
    ("pray_pray", msg("🙏🙏"), "emoji_only"),
    ("skin_tone", msg(":+1::skin-tone-3:"), "emoji_only"),
    ("zwj_emoji", msg("👩‍💻👨‍👩‍👧"), "emoji_only"),
    ("empty", msg(""), "empty"),
    ("whitespace", msg("   \n "), "empty"),
    ("mention_only", msg("<@U123ABC>"), "empty"),
    ("punctuation", msg("?!"), "empty"),
    ("brb", msg("brb"), "too_short"),
    ("why", msg("Why?"), "too_short"),
    ("ugh", msg("ugh…"), "too_short"),
    ("hello", msg("Hello <!channel> 👋"), "acknowledgement"),
]

# (id, event)
REAL: list[tuple[str, dict[str, Any]]] = [
    ("csv_broken", msg("CSV export is broken")),
    ("sso_please", msg("SSO please!")),
    ("dark_mode", msg("Need dark mode")),
    ("churned", msg("Acme churned")),
    ("thanks_but", msg("Thanks — but the export still drops the last column")),
    ("ooo_feature", msg("Customer says the out-of-office rule in our app doesn't work")),
    ("ooo_feature_2", msg("Out of office replies from Gmail users are being imported as tickets")),
    ("auto_reply_feature", msg("Auto-reply feature sends the same message twice to Zendesk")),
    ("vacation_story", msg("When I'm on vacation the mobile app logs me out every day")),
    ("abwesenheit_feature", msg("Kunde sagt, die Abwesenheitsnotiz in der App funktioniert nicht")),
    ("plus_one_content", msg("+1 to SAML support, Globex asked again today")),
    ("mention_request", msg("<@U0PM> Initech wants bulk edit on the roadmap view")),
    ("pricing", msg("Pricing page is confusing for annual plans")),
    ("churn_risk", msg("Hooli is threatening to churn over the API rate limits :rotating_light:")),
    ("emoji_mixed", msg("🔥 Dashboard takes 30s to load for big workspaces 🐢")),
    (
        "url_and_text",
        msg("Repro here <https://acme.zendesk.com/tickets/8812|#8812> — filters reset on refresh"),
    ),
    ("url_only", msg("<https://www.loom.com/share/abc123>")),
    ("german", msg("Der Export nach Excel schneidet Umlaute ab")),
    ("french", msg("Les notifications arrivent en double depuis hier")),
    ("spanish", msg("El informe mensual no se puede descargar")),
    ("japanese", msg("エクスポートが壊れています")),
    ("question", msg("Can we get Jira sync for sub-tasks?")),
    ("great_but", msg("Great demo, but they need audit logs before signing")),
    ("ok_but", msg("ok so Umbrella needs HIPAA, is that on the roadmap?")),
    ("short_content", msg("Webhooks flaky")),
    ("thread_parent", msg("Mobile app crashes on login", thread_ts="1715000000.000100")),
    (
        "broadcast",
        msg(
            "Also: the bulk import silently skips rows with emoji",
            subtype="thread_broadcast",
            thread_ts="1714999999.000100",
        ),
    ),
    ("file_share_text", msg("Screenshot of the broken chart", subtype="file_share", files=[{"id": "F1"}])),
    ("file_share_no_text", msg("", subtype="file_share", files=[{"id": "F1", "title": "error.png"}])),
    ("file_with_thanks", msg("thx", subtype="file_share", files=[{"id": "F2", "title": "invoice.pdf"}])),
    ("app_with_user", msg("Feature request: Gantt view for launches", app_id="A0WORKFLOW")),
    (
        "blocks_only",
        msg(
            "",
            blocks=rich_text(
                {"type": "text", "text": "Salesforce sync duplicates contacts "},
                {"type": "emoji", "name": "scream"},
            ),
        ),
    ),
    ("long_rant", msg("Honestly the onboarding checklist is too long, three customers gave up on step 4")),
    ("entities", msg("Search treats &lt;tags&gt; &amp; quotes weirdly")),
    ("numbers", msg("Invoice 4471 shows the wrong VAT")),
    ("soc2", msg("SOC2?")),
    ("back_on_it", msg("I will be back on this after lunch, the SSO bug needs a repro")),
    ("away_story", msg("I'm away at a conference but the export failed on my phone")),
    ("ooo_sync", msg("Please add OOO status sync from Google Calendar")),
]


@pytest.mark.parametrize(("event", "reason"), [(e, r) for _, e, r in NOISE], ids=[i for i, _, _ in NOISE])
def test_noise_examples(event: dict[str, Any], reason: str) -> None:
    assert classify_message(event) == NoiseVerdict(True, reason)
    assert is_noise(event)


@pytest.mark.parametrize("event", [e for _, e in REAL], ids=[i for i, _ in REAL])
def test_real_examples(event: dict[str, Any]) -> None:
    assert classify_message(event) == NoiseVerdict(False, "")
    assert not is_noise(event)


def test_tables_are_big_enough() -> None:
    assert len(NOISE) >= 40 and len(REAL) >= 30
    assert len({i for i, _, _ in NOISE} | {i for i, _ in REAL}) == len(NOISE) + len(REAL)


@pytest.mark.parametrize(
    "text",
    [
        "thanks!",
        "Thank you so much 🙏",
        "ok 👍",
        "+1",
        "LGTM",
        "great, thanks <@U123>",
        "haha",
        "okkk",
        "Merci",
    ],
)
def test_is_acknowledgement_true(text: str) -> None:
    assert is_acknowledgement(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "👍",
        ":tada:",
        "Thanks — but the export still drops the last column",
        "SSO please!",
        "Acme churned",
    ],
)
def test_is_acknowledgement_false(text: str) -> None:
    assert not is_acknowledgement(text)


def test_thread_parent_is_not_a_reply_but_a_reply_is() -> None:
    parent = msg("Export times out for 10k rows", thread_ts="1715000000.000100")
    reply = msg("Export times out for 10k rows", thread_ts="1715000000.000001")
    assert not is_noise(parent)
    assert classify_message(reply).reason == "thread_reply"


def test_allowed_subtypes() -> None:
    assert not is_noise(msg("Rollout broke SSO", subtype="thread_broadcast", thread_ts="1.0"))
    assert not is_noise(msg("Rollout broke SSO", subtype="file_share", files=[{"id": "F1"}]))
    assert classify_message(msg("", subtype="file_share")).reason == "empty"


def test_min_meaningful_chars_keeps_short_feedback() -> None:
    assert MIN_MEANINGFUL_CHARS == 4
    assert not is_noise(msg("SOC2?"))
    assert classify_message(msg("SSO?")).reason == "too_short"
    assert not is_noise(msg("バグ"))  # wide characters count twice


@pytest.mark.parametrize(
    "event",
    [
        {},
        {"type": "message"},
        msg(None),
        msg(42),
        msg(["a", "b"]),
        msg(None, blocks=None),
        msg("", blocks="nonsense"),
        msg("", blocks=[None, 3, {"type": "rich_text", "elements": "x"}]),
        msg("", blocks=[{"type": "rich_text", "elements": [{"type": "text", "text": None}]}]),
        msg("hi", subtype=["weird"]),
        msg("hi", thread_ts=1715000000.0001, ts=None),
        msg("hi", files="not-a-list"),
        None,
        "just a string",
    ],
)
def test_classify_never_raises(event: Any) -> None:
    verdict = classify_message(event)
    assert isinstance(verdict, NoiseVerdict)
    assert verdict.is_noise == bool(verdict.reason)


def test_blocks_text_is_judged_when_text_is_empty() -> None:
    thanks = msg("", blocks=rich_text({"type": "text", "text": "thanks "}, {"type": "emoji", "name": "pray"}))
    assert classify_message(thanks).reason == "acknowledgement"
    emoji = msg(None, blocks=rich_text({"type": "emoji", "name": "tada"}))
    assert classify_message(emoji).reason == "emoji_only"
    link = msg("", blocks=rich_text({"type": "link", "url": "https://example.com/bug"}))
    assert not is_noise(link)
