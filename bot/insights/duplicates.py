"""Duplicate suggestions at capture: score a new item against recent ones, link or ask, decide, undo.

Plain functions over a Session; no Slack payloads. Bands (per workspace, NULL → the encoder's defaults):
score ≥ link → linked automatically (undoable); ask ≤ score < link → the capturer is asked; below → new.
"""

from __future__ import annotations

import enum
import functools
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, lazyload

from bot.insights import index as similarity_index
from bot.insights import text as model_text
from storage.models import DuplicateSuggestion, FeedbackItem, Visibility, Workspace
from storage.types import utcnow

RECENT_DAYS = 180  # a new item is compared with items captured in the last 180 days
CANDIDATES = 5  # distinct canonical items weighed by the duplicate model
NEIGHBOURS = 10  # how many nearest items are looked at before giving up (rejected or hidden ones are skipped)
MAX_CHAIN = 20  # duplicate_of links followed to find the canonical item
# A corpus-fitted model (TF-IDF) that learned from fewer items than this never links on its own: it asks.
COLD_FITTED_ITEMS = 50
MARGIN_CAP = 0.3

# The duplicate model: likelihood = logistic(bias + weights · features), fitted by `bench/insights.py --fit`
# on the training split of feedback_dev (see the bench's docstring for the split and the measured bands).
FEATURES = ("cosine", "word_overlap", "margin", "cue", "same_account")
MODEL: dict[str, tuple[tuple[float, ...], float]] = {
    "tfidf": ((-0.964, 6.418, 19.449, 1.64, 0.958), -5.429),
    "embeddings": ((7.049, 1.386, 10.652, 1.386, 0.859), -8.439),
}
# A text that repeats another's content words (nearly) exactly is a duplicate with this likelihood.
EXACT_OVERLAP, EXACT_COSINE, EXACT_LIKELIHOOD = 0.9, 0.95, 1.0
_WORD = re.compile(r"[a-z][a-z0-9]+")
_CUE = re.compile(
    r"\+1\b|(?:^|\s)\+\s?one\b|\bsame (?:as|issue|problem|thing|bug|request|ask|here|story|error|for)\b"
    r"|\bagain\b|\bstill\b|\bme too\b|\bhere too\b|\btoo\b[.!]*$|\bas well\b|\balso (?:seeing|hit|having|"
    r"asking|asked|want|wants|reported|reporting|getting)\b|\banother (?:customer|account|report|one|team)\b"
    r"|\bechoing\b|\bchiming in\b|\bseconding\b|\bsecond this\b|\bjoins? the\b|\b(?:already )?(?:reported|"
    r"raised|mentioned|flagged) (?:this |it )?(?:before|earlier|last)\b|\bsame\b",
    re.I | re.M,
)


class SuggestionStatus(enum.StrEnum):
    """Lifecycle of a duplicate suggestion."""

    linked = "linked"  # linked automatically at capture (score ≥ link threshold)
    asked = "asked"  # the capturer was asked (ask ≤ score < link)
    merged = "merged"  # the capturer (or an admin) said yes
    rejected = "rejected"  # "Not a duplicate": this pair is never suggested again
    undone = "undone"  # a link or merge was undone; the item is as it was before


LINKED_STATES = (SuggestionStatus.linked.value, SuggestionStatus.merged.value)
# The item fields a link may change, in the order they are recorded in `previous_state`.
LINK_FIELDS = ("duplicate_of_id", "duplicate_similarity", "theme_id", "theme_source", "theme_similarity")


@dataclass(frozen=True)
class Thresholds:
    """The workspace's duplicate bands and the backend's defaults they fall back to."""

    link: float
    ask: float
    default_link: float
    default_ask: float
    overridden: bool


@dataclass(frozen=True)
class Decision:
    """What a button click did: `changed` is False when it was already decided (nothing was touched)."""

    changed: bool
    suggestion: DuplicateSuggestion


@dataclass(frozen=True)
class DuplicateSummary:
    """A canonical item and the items linked to it: "+N duplicates, M accounts"."""

    canonical_id: int
    duplicate_ids: list[int]
    accounts: int  # distinct accounts over the canonical item and its duplicates

    @property
    def duplicates(self) -> int:
        return len(self.duplicate_ids)


def thresholds(*, db_session: Session, team_id: str, default_link: float, default_ask: float) -> Thresholds:
    """The workspace's bands: its own values where set, the backend's defaults otherwise."""
    workspace = db_session.get(Workspace, team_id)
    link = workspace.duplicate_link_threshold if workspace else None
    ask = workspace.duplicate_ask_threshold if workspace else None
    return Thresholds(
        link=default_link if link is None else link,
        ask=default_ask if ask is None else ask,
        default_link=default_link,
        default_ask=default_ask,
        overridden=link is not None or ask is not None,
    )


def validate_thresholds(link: float, ask: float) -> str | None:
    """Why these bands cannot be used, or None when they can (0 < ask < link ≤ 1)."""
    if not 0 < link <= 1:
        return f"The link threshold must be above 0 and at most 1; {link:g} is not."
    if not 0 < ask < link:
        return f"The ask threshold must be above 0 and below the link threshold ({link:g}); {ask:g} is not."
    return None


def set_thresholds(
    *, db_session: Session, workspace: Workspace, link: float | None, ask: float | None
) -> None:
    """Stores the workspace's bands (None, None → back to the backend's defaults)."""
    if link is not None and ask is not None and (problem := validate_thresholds(link, ask)):
        raise ValueError(problem)
    workspace.duplicate_link_threshold = link
    workspace.duplicate_ask_threshold = ask


def canonical_of(*, db_session: Session, item: FeedbackItem) -> FeedbackItem:
    """The item at the end of the duplicate_of chain (the item itself when it is no duplicate)."""
    seen = {item.id}
    current = item
    for _ in range(MAX_CHAIN):
        if current.duplicate_of_id is None:
            return current
        parent = db_session.get(FeedbackItem, current.duplicate_of_id)
        if parent is None or parent.team_id != item.team_id or parent.id in seen:
            return current
        seen.add(parent.id)
        current = parent
    return current


def _may_show(item: FeedbackItem, candidate: FeedbackItem) -> bool:
    """Private stays private: only a public item, or one from the same conversation, is named as the match."""
    return candidate.visibility == Visibility.public.value or candidate.channel_id == item.channel_id


def rejected_with(*, db_session: Session, team_id: str, item_id: int) -> set[int]:
    """Items a person said this one is not a duplicate of (either way round)."""
    rows = db_session.execute(
        select(DuplicateSuggestion.item_id, DuplicateSuggestion.candidate_id).where(
            DuplicateSuggestion.team_id == team_id,
            DuplicateSuggestion.status == SuggestionStatus.rejected.value,
            or_(DuplicateSuggestion.item_id == item_id, DuplicateSuggestion.candidate_id == item_id),
        )
    )
    return {a if b == item_id else b for a, b in rows}


@dataclass(frozen=True)
class Candidate:
    """A canonical item a new one may repeat, the evidence for it and the model's likelihood (0..1)."""

    item: FeedbackItem
    cosine: float  # the new item against the canonical item itself (not against a duplicate of it)
    features: tuple[float, ...]
    likelihood: float


def content_words(text: str) -> set[str]:
    """The content words of a cleaned text, crudely stemmed ("exports" and "exported" -> "export")."""
    words = set()
    for word in _WORD.findall(text.lower()):
        if len(word) < 3 or word in _stop_words():
            continue
        for suffix in ("ing", "ed", "es", "s"):
            if len(word) > len(suffix) + 3 and word.endswith(suffix):
                word = word[: -len(suffix)]
                break
        words.add(word)
    return words


@functools.lru_cache(maxsize=4096)
def _words_of(text: str, terms: tuple[str, ...]) -> frozenset[str]:
    """Content words of a raw text as the model sees it (cached: candidates come back again and again)."""
    return frozenset(content_words(model_text.clean_for_model(text, terms)))


def has_cue(text: str) -> bool:
    """True when a message says it repeats something ("+1", "same as", "again", "still", "me too"...)."""
    return bool(_CUE.search(text or ""))


def pair_features(
    *,
    cosine: float,
    margin: float,
    words: Collection[str],
    candidate_words: Collection[str],
    cue: bool,
    same_account: bool,
) -> tuple[float, ...]:
    """The duplicate model's inputs, in FEATURES order.

    Neither the candidate's theme nor the time between the two is an input: both depend on when the theme
    job ran and people accepted its proposals, and on how fast feedback arrives — the bench replays a
    stream in seconds with a tick every 10 captures, a workspace does neither — so what the model learned
    from them did not carry over (the fit gave "same theme" a weight of about −5: a repeat that joined its
    original's theme was judged unlikely to be one).
    """
    union = set(words) | set(candidate_words)
    overlap = len(set(words) & set(candidate_words)) / len(union) if union else 0.0
    return (
        cosine,
        overlap,
        margin,
        float(cue),
        float(same_account),
    )


def likelihood(features: Sequence[float], backend: str) -> float:
    """The calibrated chance that a pair is a duplicate (logistic model fitted on bench/insights.py's
    training split; `backend` "tfidf" or "embeddings")."""
    weights, bias = MODEL["tfidf" if backend == "tfidf" else "embeddings"]
    z = bias + float(np.dot(weights, features))
    chance = float(1.0 / (1.0 + np.exp(-z)))
    if features[1] >= EXACT_OVERLAP and features[0] >= EXACT_COSINE:
        chance = max(chance, EXACT_LIKELIHOOD)  # the same words again: a repeat, whatever the model says
    return chance


def is_cold(index: similarity_index.TeamIndex) -> bool:
    """True while a workspace's model learned from too few items to trust a link (TF-IDF in a new workspace)."""
    return index.fitted_on_corpus and index.fitted_items < COLD_FITTED_ITEMS


def candidates(
    *,
    db_session: Session,
    index: similarity_index.TeamIndex,
    item: FeedbackItem,
    vector: np.ndarray,
    now: datetime | None = None,
) -> list[Candidate]:
    """The canonical items this one may repeat, most likely first.

    Nearest recent items first; a match that is itself a duplicate stands for its canonical item and is
    scored against it (so one wrong link never pulls the next item in); pairs a person rejected and private
    items from other conversations are skipped.
    """
    since = (now or utcnow()) - timedelta(days=RECENT_DAYS)
    rejected = rejected_with(db_session=db_session, team_id=item.team_id, item_id=item.id)
    neighbours = index.nearest_items(vector, k=NEIGHBOURS, exclude_ids=[item.id], since=since)
    # One query for the neighbours, without their relationships (account, theme, replies).
    loaded = {
        found.id: found
        for found in db_session.scalars(
            select(FeedbackItem)
            .where(FeedbackItem.id.in_([n.item_id for n in neighbours]))
            .options(lazyload("*"))
        )
    }
    found_canonicals: dict[int, FeedbackItem] = {}
    for neighbour in neighbours:
        found = loaded.get(neighbour.item_id)
        if found is None or found.team_id != item.team_id or found.deleted_at is not None:
            continue
        canonical = canonical_of(db_session=db_session, item=found)
        if canonical.id == item.id or canonical.deleted_at is not None or canonical.id in found_canonicals:
            continue
        if {found.id, canonical.id} & rejected or not _may_show(item, canonical):
            continue
        found_canonicals[canonical.id] = canonical
        if len(found_canonicals) >= CANDIDATES:
            break
    if not found_canonicals:
        return []
    ids = list(found_canonicals)
    cosines = index.vectors_for(ids) @ np.asarray(vector, dtype=np.float32)
    order = np.argsort(-cosines, kind="stable")
    terms = model_text.workspace_terms(db_session, item.team_id)
    words = _words_of(item.text, terms)
    cue = has_cue(item.text)
    backend = "tfidf" if index.encoder.name == "tfidf" else "embeddings"
    result = []
    for _rank, position in enumerate(order):
        candidate = found_canonicals[ids[position]]
        cosine = float(cosines[position])
        others = [float(cosines[p]) for p in order if p != position]
        # How far it stands out from the next candidate; never more than its own score (a lone
        # candidate stands out from nothing) nor MARGIN_CAP (beyond it the training pairs say nothing).
        margin = min(max(cosine - (max(others) if others else 0.0), 0.0), max(cosine, 0.0), MARGIN_CAP)
        features = pair_features(
            cosine=cosine,
            margin=margin,
            words=words,
            candidate_words=_words_of(candidate.text, terms),
            cue=cue,
            same_account=item.account_id is not None and item.account_id == candidate.account_id,
        )
        result.append(Candidate(candidate, cosine, features, likelihood(features, backend)))
    return sorted(result, key=lambda c: -c.likelihood)


def best_match(
    *,
    db_session: Session,
    index: similarity_index.TeamIndex,
    item: FeedbackItem,
    vector: np.ndarray,
    now: datetime | None = None,
) -> tuple[FeedbackItem, float] | None:
    """The canonical item this one most likely repeats, with the likelihood that it does; None if none."""
    found = candidates(db_session=db_session, index=index, item=item, vector=vector, now=now)
    return (found[0].item, found[0].likelihood) if found else None


def suggestion_for_item(*, db_session: Session, team_id: str, item_id: int) -> DuplicateSuggestion | None:
    """The open or decided suggestion shown with an item's confirmation (the latest one), if any."""
    return db_session.scalar(
        select(DuplicateSuggestion)
        .where(DuplicateSuggestion.team_id == team_id, DuplicateSuggestion.item_id == item_id)
        .order_by(DuplicateSuggestion.id.desc())
        .limit(1)
    )


def record_prompt(
    *, db_session: Session, team_id: str, suggestion_id: int, channel_id: str, ts: str | None
) -> None:
    """Where the suggestion was shown (`ts` None: an ephemeral answer, updated through its response URL)."""
    suggestion = get(db_session=db_session, team_id=team_id, suggestion_id=suggestion_id)
    if suggestion is not None:
        suggestion.prompt_channel_id, suggestion.prompt_ts = channel_id, ts


def suggest(
    *,
    db_session: Session,
    index: similarity_index.TeamIndex,
    item: FeedbackItem,
    vector: np.ndarray,
    interactive: bool = True,
    now: datetime | None = None,
) -> DuplicateSuggestion | None:
    """Scores a newly captured item: links it (≥ link), records a question (ask band, interactive only), or None.

    Running it again for the same item returns what the first run decided and changes nothing.
    """
    existing = suggestion_for_item(db_session=db_session, team_id=item.team_id, item_id=item.id)
    if existing is not None and existing.status in (*LINKED_STATES, SuggestionStatus.asked.value):
        return existing
    if item.duplicate_of_id is not None:
        return None  # a person already linked it
    bands = thresholds(
        db_session=db_session,
        team_id=item.team_id,
        default_link=index.encoder.link_threshold,
        default_ask=index.encoder.ask_threshold,
    )
    match = best_match(db_session=db_session, index=index, item=item, vector=vector, now=now)
    if match is None:
        return None
    canonical, score = match
    if score >= bands.link and is_cold(index) and not bands.overridden:
        # The model learned from a handful of texts: a link would be a guess, so ask (or stay quiet).
        return (
            _record(db_session, item=item, candidate=canonical, score=score, status="asked")
            if interactive
            else None
        )
    if score >= bands.link:
        suggestion = _record(db_session, item=item, candidate=canonical, score=score, status="linked")
        if suggestion is not None:
            link(db_session=db_session, suggestion=suggestion, item=item, canonical=canonical)
        return suggestion
    if score >= bands.ask and interactive:
        return _record(db_session, item=item, candidate=canonical, score=score, status="asked")
    return None


def _record(
    db_session: Session, *, item: FeedbackItem, candidate: FeedbackItem, score: float, status: str
) -> DuplicateSuggestion | None:
    suggestion = DuplicateSuggestion(
        team_id=item.team_id, item_id=item.id, candidate_id=candidate.id, score=score, status=status
    )
    try:
        with db_session.begin_nested():
            db_session.add(suggestion)
    except IntegrityError:
        return None  # a concurrent run for the same item recorded it first
    return suggestion


def _snapshot(item: FeedbackItem, fields: Collection[str]) -> dict[str, Any]:
    values: dict[str, Any] = {name: getattr(item, name) for name in fields}
    values["updated_at"] = item.updated_at.isoformat() if item.updated_at else None
    return values


def link(
    *, db_session: Session, suggestion: DuplicateSuggestion, item: FeedbackItem, canonical: FeedbackItem
) -> None:
    """Points `item` at `canonical` (and into its theme, unless a person chose the item's theme).

    `previous_state` records exactly the fields that change, before and after, so Undo restores them.
    """
    before = _snapshot(item, LINK_FIELDS)
    item.duplicate_of_id = canonical.id
    item.duplicate_similarity = suggestion.score
    theme_moved = False
    if (
        canonical.theme_id is not None
        and canonical.theme_id != item.theme_id
        and item.theme_source != "human"
    ):
        # The duplicate is counted where its canonical item is; the score that put it there is the link's.
        item.theme_id, item.theme_source, item.theme_similarity = canonical.theme_id, "auto", suggestion.score
        theme_moved = True
    item.updated_at = utcnow()
    after = _snapshot(item, LINK_FIELDS)
    changed = [name for name in LINK_FIELDS if before[name] != after[name]]
    suggestion.previous_state = {
        "before": {name: before[name] for name in [*changed, "updated_at"]},
        "after": {name: after[name] for name in [*changed, "updated_at"]},
    }
    if theme_moved:
        similarity_index.bump_version(db_session, item.team_id)
    db_session.flush()


def _claim(
    db_session: Session,
    *,
    team_id: str,
    suggestion_id: int,
    expected: Collection[str],
    status: str,
    user_id: str,
) -> bool:
    """Moves a suggestion to `status` if it is still in one of `expected`; exactly one click wins."""
    result = db_session.execute(
        update(DuplicateSuggestion)
        .where(
            DuplicateSuggestion.team_id == team_id,
            DuplicateSuggestion.id == suggestion_id,
            DuplicateSuggestion.status.in_(list(expected)),
        )
        .values(status=status, decided_by_user_id=user_id, decided_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0))


def get(*, db_session: Session, team_id: str, suggestion_id: int) -> DuplicateSuggestion | None:
    """Gets a suggestion by its id, within one workspace."""
    return db_session.scalar(
        select(DuplicateSuggestion).where(
            DuplicateSuggestion.team_id == team_id, DuplicateSuggestion.id == suggestion_id
        )
    )


def _reload(db_session: Session, team_id: str, suggestion_id: int) -> DuplicateSuggestion:
    found = get(db_session=db_session, team_id=team_id, suggestion_id=suggestion_id)
    assert found is not None
    db_session.refresh(found)
    return found


def merge(*, db_session: Session, team_id: str, suggestion_id: int, user_id: str) -> Decision:
    """*Merge*: the asked item becomes a duplicate of the canonical one; both texts and accounts stay."""
    if not _claim(
        db_session,
        team_id=team_id,
        suggestion_id=suggestion_id,
        expected=[SuggestionStatus.asked.value],
        status=SuggestionStatus.merged.value,
        user_id=user_id,
    ):
        return Decision(False, _reload(db_session, team_id, suggestion_id))
    suggestion = _reload(db_session, team_id, suggestion_id)
    item = db_session.get(FeedbackItem, suggestion.item_id)
    candidate = db_session.get(FeedbackItem, suggestion.candidate_id)
    assert item is not None and candidate is not None  # rows cascade with their items
    canonical = canonical_of(db_session=db_session, item=candidate)  # it may have been merged meanwhile
    if canonical.id == item.id:
        canonical = candidate  # never a cycle: the candidate itself is the one asked about
    link(db_session=db_session, suggestion=suggestion, item=item, canonical=canonical)
    return Decision(True, suggestion)


def reject(*, db_session: Session, team_id: str, suggestion_id: int, user_id: str) -> Decision:
    """*Not a duplicate*: recorded, and this pair is never suggested again."""
    changed = _claim(
        db_session,
        team_id=team_id,
        suggestion_id=suggestion_id,
        expected=[SuggestionStatus.asked.value],
        status=SuggestionStatus.rejected.value,
        user_id=user_id,
    )
    return Decision(changed, _reload(db_session, team_id, suggestion_id))


def undo(*, db_session: Session, team_id: str, suggestion_id: int, user_id: str) -> Decision:
    """*Undo*: puts back exactly what the link changed — each field only if nobody changed it since."""
    if not _claim(
        db_session,
        team_id=team_id,
        suggestion_id=suggestion_id,
        expected=LINKED_STATES,
        status=SuggestionStatus.undone.value,
        user_id=user_id,
    ):
        return Decision(False, _reload(db_session, team_id, suggestion_id))
    suggestion = _reload(db_session, team_id, suggestion_id)
    item = db_session.get(FeedbackItem, suggestion.item_id)
    assert item is not None
    before = dict(suggestion.previous_state.get("before") or {})
    after = dict(suggestion.previous_state.get("after") or {})
    untouched = item.updated_at is not None and item.updated_at.isoformat() == after.get("updated_at")
    theme_moved = False
    for name in LINK_FIELDS:
        if name in before and getattr(item, name) == after.get(name):
            setattr(item, name, before[name])
            theme_moved = theme_moved or name == "theme_id"
    if untouched and before.get("updated_at"):
        item.updated_at = datetime.fromisoformat(before["updated_at"])  # exactly as before the link
    if theme_moved:
        similarity_index.bump_version(db_session, team_id)
    db_session.flush()
    return Decision(True, suggestion)


def may_decide(*, suggestion: DuplicateSuggestion, item: FeedbackItem, user_id: str, is_admin: bool) -> bool:
    """Only the person who captured the item, or a ProdOps admin, may merge, reject or undo."""
    return is_admin or item.captured_by_user_id == user_id


def duplicate_summary(session: Session, team_id: str, item_id: int) -> DuplicateSummary | None:
    """For an item (or the canonical item it duplicates): its live duplicates and how many accounts they span."""
    item = session.scalar(
        select(FeedbackItem).where(FeedbackItem.team_id == team_id, FeedbackItem.id == item_id)
    )
    if item is None:
        return None
    canonical = canonical_of(db_session=session, item=item)
    found: list[int] = []
    accounts = {canonical.account_id} - {None}
    frontier, seen = [canonical.id], {canonical.id}
    while frontier:  # duplicates of duplicates too (an item merged after others were linked to it)
        rows = session.execute(
            select(FeedbackItem.id, FeedbackItem.account_id).where(
                FeedbackItem.team_id == team_id,
                FeedbackItem.duplicate_of_id.in_(frontier),
                FeedbackItem.deleted_at.is_(None),
            )
        ).all()
        frontier = [row_id for row_id, _ in rows if row_id not in seen]
        for row_id, account_id in rows:
            if row_id not in seen:
                seen.add(row_id)
                found.append(row_id)
                if account_id is not None:
                    accounts.add(account_id)
    return DuplicateSummary(canonical_id=canonical.id, duplicate_ids=sorted(found), accounts=len(accounts))


@functools.cache
def _stop_words() -> frozenset[str]:
    """The theme job's stop words, imported when first needed (they come with scikit-learn)."""
    from bot.insights.clustering import FEEDBACK_STOP_WORDS

    return frozenset(FEEDBACK_STOP_WORDS)
