"""Noise filter for channel monitoring: which Slack `message` events are not customer feedback.

Order of checks (first hit wins): bot/app → subtype → hidden → thread reply → auto-reply →
(files or links: real) → empty / emoji only → acknowledgement → too short.

Decisions worth knowing:
* `thread_broadcast` ("also send to channel") counts as top-level, so it is not a `thread_reply`.
* A message with files or a link is real whatever its text says (the attachment is the content);
  only the bot, subtype, thread and auto-reply rules apply to it.
* Judging text ignores mentions, channel refs, `<!here>`, URLs, `:emoji:` codes, unicode emoji and
  punctuation. When `text` is empty, the text of `rich_text` blocks is used instead.
"""

from __future__ import annotations

import html
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

# Letters and digits left after normalising; wide (CJK) characters count twice. 12 would drop
# "SSO please!" (9) and "SOC2" (4), so the bar only catches fragments ("brb", "Why?", "SSO?"); the
# acknowledgement phrases do the rest. Losing real feedback costs more than an extra inbox item.
MIN_MEANINGFUL_CHARS = 4

ALLOWED_SUBTYPES = frozenset({"thread_broadcast", "file_share"})

# Compared after normalising ("+1" → "1", "you're" → "youre") and undoing elongation ("thanksss").
ACK_PHRASES = frozenset(
    {
        "thanks", "thank you", "thank u", "thankyou", "thanx", "thnx", "thx", "tx", "ty", "tysm",
        "tyvm", "many thanks", "cheers", "ta", "appreciate it", "appreciated", "much appreciated",
        "ok", "okay", "okey", "okie", "k", "kk", "got it", "gotcha", "will do", "sounds good", "sgtm",
        "lgtm", "1", "noted", "on it", "done", "cool", "great", "awesome", "nice", "perfect",
        "excellent", "amazing", "sweet", "brilliant", "fine", "good", "all good", "love it", "yay",
        "yes", "yep", "yup", "yeah", "yea", "no", "nope", "nah", "sure", "of course", "np",
        "no problem", "no worries", "youre welcome", "welcome", "ack", "roger", "roger that",
        "understood", "makes sense", "agreed", "same", "same here", "me too", "right", "true",
        "exactly", "will check", "checking", "looking into it", "oh", "ah", "oops", "wow",
        "so much", "very much", "a lot", "again", "all", "team", "everyone", "guys", "folks",
        "man", "mate", "you", "so", "really", "for that", "for this", "for the help",
        "for your help", "for the update", "for the info", "for sharing", "and",
        "danke", "danke schön", "vielen dank", "merci", "merci beaucoup", "daccord", "gracias",
        "muchas gracias", "vale", "obrigado", "obrigada", "grazie", "super", "hi", "hey", "hello",
        "morning", "good morning",
    }
)  # fmt: skip

_SLACK_TOKEN = re.compile(r"<([^<>]*)>")  # <@U1>, <#C1|x>, <!here>, <https://x|label>
_URL = re.compile(r"https?://\S+", re.I)
_EMOJI_CODE = re.compile(r":[a-z0-9_+'\-]+:", re.I)
_PUNCT = re.compile(r"[^\w\s]|_")
_LAUGH = re.compile(r"a?(?:ha|he|ja|je|hi)+h?|lo+l+(?:o+l+)*|lmf?ao|rofl|xd+|h+m+")

_AUTO_REPLY = [
    re.compile(p, re.I)
    for p in (
        r"^(?:re:\s*)?(?:automatic reply|auto[- ]?reply|autoreply|out of (?:the )?office|ooo|"
        r"abwesenheitsnotiz|réponse automatique|respuesta automática|risposta automatica)\s*[:\-–—|]",
        r"^abwesenheitsnotiz\b",
        r"\booo\s+(?:until|till|til|through|thru|from|today|tomorrow|this week|next week)\b",
        r"\bout of (?:the )?office (?:until|till|through|thru|from|on|and|with)\b",
        r"\b(?:i will|i'll|ill|i shall) be back (?:in the office |at work |online )?(?:(?:on|by|from|in|after) )?"
        r"(?:the )?(?:mon|tue|wed|thu|fri|sat|sun|jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec|\d|next|tomorrow)",
        r"(?:\bwill|\bshall|'ll) (?:respond|reply|answer|get back to you)\b.{0,40}"
        r"\b(?:when|once|upon|after) (?:i (?:return|am back|get back|'m back)|my return)",
        r"\blimited access to (?:e-?mail|slack|my (?:e-?mail|phone|laptop))",
        r"\bich bin\b.{0,40}\bnicht im büro\b",
        r"\b(?:je suis|je serai)\s+(?:actuellement\s+)?absente? du bureau\b",
        r"\b(?:estoy|estaré)\s+(?:\w+\s+)?fuera de la oficina\b",
        r"^(?:absente? du bureau|fuera de la oficina)\b",
    )
]
# "I'm on vacation" alone could be a customer's story, so it needs a return/contact signal too.
_AWAY = re.compile(
    r"\b(?:i am|i'm|im)\s+(?:currently\s+|now\s+)?(?:out of (?:the )?office|ooo|away|travell?ing|"
    r"on (?:vacation|holiday|leave|pto|annual leave|parental leave|sick leave|a business trip))\b"
)
_AWAY_SIGNAL = re.compile(
    r"\b(?:until|till|through|thru|returning|i return|back (?:on|in|at|from)|limited access|"
    r"for urgent|in my absence|please contact|reach out to)\b"
)


@dataclass(frozen=True)
class NoiseVerdict:
    """Whether a message is noise, and a short machine-readable reason ("" when it is not)."""

    is_noise: bool
    reason: str


REAL = NoiseVerdict(False, "")


def _noise(reason: str) -> NoiseVerdict:
    """A noise verdict with `reason`."""
    return NoiseVerdict(True, reason)


def _blocks_text(node: Any) -> str:
    """Text of rich_text elements (text, link, emoji) anywhere under `node`."""
    if isinstance(node, list):
        return " ".join(filter(None, (_blocks_text(n) for n in node)))
    if not isinstance(node, dict):
        return ""
    kind = node.get("type")
    if kind == "text" and isinstance(node.get("text"), str):
        return str(node["text"])
    if kind == "link":
        return str(node.get("url") or node.get("text") or "")
    if kind == "emoji" and node.get("name"):
        return f":{node['name']}:"
    return _blocks_text(node.get("elements"))


def _message_text(event: dict[str, Any]) -> str:
    """The event's `text`, or the text of its rich_text blocks when `text` is empty."""
    text = event.get("text")
    if isinstance(text, str) and text.strip():
        return text
    blocks = event.get("blocks")
    if isinstance(blocks, list):
        return _blocks_text([b for b in blocks if isinstance(b, dict) and b.get("type") == "rich_text"])
    return ""


def _has_link(text: str) -> bool:
    """True when the text carries an http(s) link, in Slack `<url|label>` form or bare."""
    return bool(_URL.search(text))


def _has_emoji(text: str) -> bool:
    """True when the text holds an `:emoji:` code or a unicode symbol."""
    return bool(_EMOJI_CODE.search(text)) or any(unicodedata.category(c) == "So" for c in text)


def _normalise(text: str) -> str:
    """Lowercase words only: no Slack tokens, URLs, emoji, apostrophes or other punctuation."""
    text = _URL.sub(" ", _SLACK_TOKEN.sub(" ", text))
    text = _EMOJI_CODE.sub(" ", html.unescape(text).lower())
    text = "".join(" " if unicodedata.category(c) in {"So", "Sk", "Mn", "Cf"} else c for c in text)
    text = _PUNCT.sub(" ", re.sub(r"['’]", "", text))
    return " ".join(text.split())


_ACK_PHRASE_TOKENS = frozenset(tuple(p.split()) for p in ACK_PHRASES)
_ACK_WORDS = frozenset(w for p in _ACK_PHRASE_TOKENS for w in p)
_ACK_MAX_LEN = max(len(p) for p in _ACK_PHRASE_TOKENS)


def _canonical(word: str) -> str:
    """Undo elongation ("thanksss", "cooool", "okkk") when that yields an acknowledgement word."""
    for candidate in (word, re.sub(r"(.)\1{2,}", r"\1", word), re.sub(r"(.)\1{2,}", r"\1\1", word)):
        if candidate in _ACK_WORDS:
            return candidate
    return word


def _is_ack_words(words: str) -> bool:
    """True when normalised `words` split entirely into acknowledgement phrases or laughter."""
    tokens = [_canonical(w) for w in words.split()]
    reach = [True] + [False] * len(tokens)
    for i in range(len(tokens)):
        if not reach[i]:
            continue
        if _LAUGH.fullmatch(tokens[i]):
            reach[i + 1] = True
        for n in range(1, min(_ACK_MAX_LEN, len(tokens) - i) + 1):
            if tuple(tokens[i : i + n]) in _ACK_PHRASE_TOKENS:
                reach[i + n] = True
    return bool(tokens) and reach[-1]


def is_acknowledgement(text: str) -> bool:
    """True when the text says nothing but thanks/ok/+1-style words (emoji-only text is False)."""
    return isinstance(text, str) and _is_ack_words(_normalise(text))


def _is_auto_reply(text: str) -> bool:
    """True for out-of-office / automatic replies, not for messages that merely mention them."""
    plain = " ".join(html.unescape(text).replace("’", "'").lower().split())
    if any(p.search(plain) for p in _AUTO_REPLY):
        return True
    return bool(_AWAY.search(plain) and _AWAY_SIGNAL.search(plain))


def _weight(words: str) -> int:
    """Letters and digits in `words`, wide (CJK) characters counting twice."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in words if c.isalnum())


def classify_message(event: dict[str, Any]) -> NoiseVerdict:
    """Classify a raw Slack `message` event; never raises on odd input."""
    ev: dict[str, Any] = event if isinstance(event, dict) else {}
    subtype = str(ev.get("subtype") or "")
    if ev.get("bot_id") or ev.get("bot_profile") or subtype == "bot_message":
        return _noise("bot_message")
    if ev.get("app_id") and not ev.get("user"):
        return _noise("bot_message")
    if subtype and subtype not in ALLOWED_SUBTYPES:
        return _noise(f"subtype:{subtype}")
    if ev.get("hidden"):
        return _noise("hidden")
    thread_ts = ev.get("thread_ts")
    if thread_ts and str(thread_ts) != str(ev.get("ts")) and subtype != "thread_broadcast":
        return _noise("thread_reply")
    text = _message_text(ev)
    if _is_auto_reply(text):
        return _noise("auto_reply")
    if ev.get("files") or _has_link(text):
        return REAL
    words = _normalise(text)
    if not words:
        return _noise("emoji_only" if _has_emoji(text) else "empty")
    if _is_ack_words(words):
        return _noise("acknowledgement")
    if _weight(words) < MIN_MEANINGFUL_CHARS:
        return _noise("too_short")
    return REAL


def is_noise(event: dict[str, Any]) -> bool:
    """True when the event should not become a feedback item."""
    return classify_message(event).is_noise
