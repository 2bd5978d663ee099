"""What the models see of a feedback text: Slack markup, links, ids, account names, greetings taken out.

Every text is cleaned by `clean_for_model` before it is embedded, clustered or named, so a theme is about
what people report, never about who reported it, where, or which link they pasted.
"""

from __future__ import annotations

import functools
import html
import re
import threading
import time
from collections.abc import Iterable, Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.models import Account

_FENCED = re.compile(r"```.*?(?:```|$)", re.S)
_INLINE_CODE = re.compile(r"`([^`\n]*)`")
_SLACK_TOKEN = re.compile(r"<([^<>\n]*)>")  # <@U1>, <#C1|name>, <!here>, <https://x|label>, <mailto:a|b>
_URL = re.compile(r"\b(?:https?://|www\.)\S+", re.I)
_EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b")
_DOMAIN = re.compile(r"\b[\w-]+(?:\.[\w-]+)*\.(?:com|net|org|io|co|ai|app|dev)\b", re.I)
_EMOJI = re.compile(r":[a-z0-9_+'\-]+:", re.I)
_SLACK_ID = re.compile(r"(?<![\w@])@?\b[UWCGB][A-Z0-9]{7,}\b")  # bare user/channel ids: U05AB12CD
_TICKET = re.compile(r"(?:#|\b(?:ticket|case|issue)\s*#?\s*)\d{3,}\b", re.I)
_QUOTE_MARK = re.compile(r"(?m)^\s*>\s?")
_GREETING = re.compile(
    r"^\s*(?:hi|hey|hello|hiya|yo|morning|good (?:morning|afternoon|evening)|greetings|dear)\b"
    r"(?:[ \t]+(?:all|team|everyone|folks|guys|y'all|there|friends|people|product(?: team)?|pm|pms))?"
    r"[ \t]*[,!.:;\-–—]*[ \t]*",
    re.I,
)
_SIGNATURE = re.compile(
    r"(?:[\s,.!;:\-–—]+|^)(?:(?:many |big |thanks? (?:so much|a lot)[ ,]*)?"
    r"(?:thanks|thank you|thx|ty|cheers|regards|best|br|kind regards|best regards)"
    r"(?:[ \t]+(?:all|team|everyone|folks|guys|in advance))?)[ \t]*[!.]*"
    r"(?:[ \t]*[,\-–—]?[ \t]*[A-Z][\w'.-]*(?:[ \t]+[A-Z][\w'.-]*)?)?[ \t]*[!.]*\s*$",
    re.I,
)
_DASH_NAME = re.compile(r"\s+[\-–—~]\s*[A-Z][a-z]+(?:\s+[A-Z][a-z]*\.?)?\s*$")
_SPACE = re.compile(r"\s+")
_EMPTY_BRACKETS = re.compile(r"\(\s*\)|\[\s*\]")
_PUNCT_RUN = re.compile(r"\s+([,.;:!?])")
_LEFTOVER = re.compile(r"(?:^[\s,.;:!?\-–—]+|[\s,;:\-–—]+$)")

# Words an account name is often cut down to ("Fennick & Rowe" -> "Fennick"); common words are not cut.
_LEGAL_SUFFIX = re.compile(
    r"[\s,]+(?:inc|llc|ltd|limited|gmbh|ag|sa|bv|plc|co|corp|corporation|group|holdings)\.?$", re.I
)
_COMMON = frozenset(
    [
        "the",
        "and",
        "for",
        "with",
        "blue",
        "green",
        "red",
        "north",
        "south",
        "east",
        "west",
        "global",
        "united",
        "first",
        "new",
        "big",
        "little",
        "great",
        "best",
        "bright",
        "smart",
        "data",
        "cloud",
        "digital",
        "health",
        "care",
        "media",
        "labs",
        "studio",
        "studios",
        "partners",
        "solutions",
        "systems",
        "software",
        "tech",
        "technologies",
        "services",
        "logistics",
        "consulting",
        "capital",
        "foundation",
        "school",
        "city",
        "bank",
        "insurance",
        "energy",
        "foods",
        "design",
        "works",
        "apps",
        "team",
    ]
)
ACCOUNT_TERMS_SECONDS = 60.0  # how long a workspace's account terms are reused before they are re-read


def account_terms(names: Iterable[str | None], domains: Iterable[str | None] = ()) -> tuple[str, ...]:
    """What an account is called in text: its full name, the name without a legal suffix, a distinctive
    first word of a longer name, and its domain with and without the top-level part."""
    terms: set[str] = set()
    for raw in names:
        name = html.unescape(" ".join((raw or "").split()))
        if len(name) < 3:
            continue
        terms.add(name)
        short = _LEGAL_SUFFIX.sub("", name)
        terms.add(short)
        words = re.findall(r"[A-Za-z][\w'-]*", short)
        if len(words) > 1 and len(words[0]) >= 4 and words[0].lower() not in _COMMON:
            terms.add(words[0])
        if len(words) > 2:
            terms.add(" ".join(words[:2]))
    for raw in domains:
        domain = (raw or "").strip().lower()
        if not domain:
            continue
        domain = re.sub(r"^(?:https?://)?(?:www\.)?", "", domain).split("/")[0]
        terms.add(domain)
        stem = domain.split(".")[0]
        if len(stem) >= 4 and stem not in _COMMON:
            terms.add(stem)
    return tuple(sorted((t for t in terms if len(t) >= 3), key=lambda t: (-len(t), t.lower())))


@functools.lru_cache(maxsize=64)
def _terms_pattern(terms: tuple[str, ...]) -> re.Pattern[str] | None:
    if not terms:
        return None
    parts = [r"\s*(?:&|&amp;|and)\s*".join(re.escape(p) for p in re.split(r"\s*&\s*", t)) for t in terms]
    return re.compile(r"(?<![\w])(?:" + "|".join(parts) + r")(?:'s|’s|s')?(?![\w])", re.I)


def _slack_token(match: re.Match[str]) -> str:
    body = match.group(1)
    if body.startswith(("@", "!")):
        return " "
    if body.startswith("#"):  # a channel: where it was said, not what
        return " "
    target, _, label = body.partition("|")
    label = label.strip()
    if label and not _URL.fullmatch(label) and not _EMAIL.fullmatch(label) and "." not in label.split()[-1]:
        return f" {label} "
    return " "


def clean_for_model(text: str | None, account_terms: Sequence[str] = ()) -> str:
    """The words of a Slack message as a model should see them (mentions, links, emoji, code blocks,
    ids, ticket numbers, account names and domains, greetings and sign-offs removed; HTML escapes undone)."""
    if not text:
        return ""
    out = _FENCED.sub(" ", text)
    out = _SLACK_TOKEN.sub(_slack_token, out)
    out = html.unescape(out)
    out = _INLINE_CODE.sub(r" \1 ", out)
    out = _QUOTE_MARK.sub(" ", out)
    out = _URL.sub(" ", out)
    out = _EMAIL.sub(" ", out)
    pattern = _terms_pattern(tuple(account_terms))
    if pattern is not None:
        out = pattern.sub(" ", out)
    out = _DOMAIN.sub(" ", out)
    out = _EMOJI.sub(" ", out)
    out = _SLACK_ID.sub(" ", out)
    out = _TICKET.sub(" ", out)
    out = _EMPTY_BRACKETS.sub(" ", out)
    out = _SPACE.sub(" ", out).strip()
    out = _GREETING.sub("", out, count=1)
    for _ in range(2):
        out = _SIGNATURE.sub("", out).strip()
        out = _DASH_NAME.sub("", out).strip()
    out = _PUNCT_RUN.sub(r"\1", out)
    out = _LEFTOVER.sub("", out)
    return _SPACE.sub(" ", out).strip()


def has_markup(text: str, account_terms: Sequence[str] = ()) -> bool:
    """True when `text` holds Slack markup, a URL, an id, an emoji code or an account name (name hygiene)."""
    if _SLACK_TOKEN.search(text) or _URL.search(text) or _EMAIL.search(text) or _DOMAIN.search(text):
        return True
    if _EMOJI.search(text) or _SLACK_ID.search(text) or re.search(r"&(?:amp|lt|gt);|```|`", text):
        return True
    pattern = _terms_pattern(tuple(account_terms))
    return bool(pattern is not None and pattern.search(text))


_cache_lock = threading.Lock()
_cache: dict[str, tuple[float, tuple[str, ...]]] = {}


def workspace_terms(session: Session, team_id: str, *, fresh: bool = False) -> tuple[str, ...]:
    """The account terms of a workspace's accounts table (re-read at most every ACCOUNT_TERMS_SECONDS)."""
    now = time.monotonic()
    with _cache_lock:
        cached = _cache.get(team_id)
    if cached is not None and not fresh and now - cached[0] < ACCOUNT_TERMS_SECONDS:
        return cached[1]
    rows = session.execute(select(Account.name, Account.domain).where(Account.team_id == team_id)).all()
    terms = account_terms([r.name for r in rows], [r.domain for r in rows])
    with _cache_lock:
        _cache[team_id] = (now, terms)
    return terms


def forget_terms(team_id: str | None = None) -> None:
    """Drops cached account terms (one workspace, or all), e.g. after an accounts import."""
    with _cache_lock:
        if team_id is None:
            _cache.clear()
        else:
            _cache.pop(team_id, None)
