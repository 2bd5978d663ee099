"""The capture / edit modal: building it (pure) and reading a submission back (pure)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from pydantic import ValidationError

from bot.feedback.ids import NEW_OPTION_PREFIX, FeedbackAction, FeedbackBlock, FeedbackCallback
from bot.feedback.schemas import FeedbackDetails
from storage.models import Account, FeedbackKind, Importance

TEXT_INPUT_LIMIT = 3000  # Slack's plain_text_input maximum
KIND_LABELS = {
    FeedbackKind.bug: "Bug",
    FeedbackKind.feature_request: "Feature request",
    FeedbackKind.complaint: "Complaint",
    FeedbackKind.praise: "Praise",
    FeedbackKind.question: "Question",
}
IMPORTANCE_LABELS = {
    Importance.nice_to_have: "Nice to have",
    Importance.important: "Important",
    Importance.critical: "Critical (blocker / churn risk)",
}


@dataclass
class ModalSource:
    """Where the feedback comes from; travels in the modal's private_metadata."""

    channel_id: str
    source: str
    item_id: int | None = None
    message_ts: str | None = None
    thread_ts: str | None = None
    permalink: str | None = None
    author_user_id: str | None = None
    response_url: str | None = None

    def dump(self) -> str:
        """JSON for private_metadata (Slack allows 3,000 characters)."""
        return json.dumps({k: v for k, v in asdict(self).items() if v is not None})

    @classmethod
    def load(cls, raw: str) -> ModalSource:
        """Reads private_metadata back."""
        return cls(**json.loads(raw or "{}"))


@dataclass
class Prefill:
    """Current values shown in the modal."""

    text: str = ""
    account: Account | None = None
    kind: str | None = None
    tags: list[str] | None = None
    importance: str | None = None
    note: str | None = None


def _plain(text: str) -> dict[str, Any]:
    return {"type": "plain_text", "text": text, "emoji": True}


def _option(label: str, value: str) -> dict[str, Any]:
    return {"text": _plain(label[:75]), "value": value[:150]}


def account_option(account: Account) -> dict[str, Any]:
    """An account in the customer select: name, domain and ARR so people pick the right one."""
    parts = [account.name]
    if account.domain:
        parts.append(account.domain)
    if account.arr is not None:
        parts.append(f"${float(account.arr):,.0f} ARR")
    return _option(" · ".join(parts), str(account.id))


def _static_select(
    action_id: str, placeholder: str, labels: dict[Any, str], current: str | None
) -> dict[str, Any]:
    element: dict[str, Any] = {
        "type": "static_select",
        "action_id": action_id,
        "placeholder": _plain(placeholder),
        "options": [_option(label, str(value)) for value, label in labels.items()],
    }
    by_value = {str(value): label for value, label in labels.items()}
    if current in by_value:
        element["initial_option"] = _option(by_value[current], current)
    return element


def feedback_modal(*, source: ModalSource, prefill: Prefill, origin: str | None) -> dict[str, Any]:
    """The modal view: text (editable unless too long), customer, kind, tags, importance, note."""
    editing = source.item_id is not None
    blocks: list[dict[str, Any]] = []
    if origin:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": origin}]})
    if len(prefill.text) <= TEXT_INPUT_LIMIT:
        text_element: dict[str, Any] = {
            "type": "plain_text_input",
            "action_id": FeedbackAction.text,
            "multiline": True,
            "max_length": TEXT_INPUT_LIMIT,
        }
        if prefill.text:
            text_element["initial_value"] = prefill.text
        blocks.append(
            {
                "type": "input",
                "block_id": FeedbackBlock.text,
                "label": _plain("Feedback"),
                "element": text_element,
            }
        )
    else:
        preview = prefill.text[:600].rstrip() + "…"
        blocks.append(
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": f"*Feedback* ({len(prefill.text):,} characters — too long to edit here; "
                    f"the full text is kept)\n>{preview}",
                },
            }
        )
    customer: dict[str, Any] = {
        "type": "external_select",
        "action_id": FeedbackAction.customer,
        "placeholder": _plain("Search accounts by name or domain"),
        "min_query_length": 1,
    }
    if prefill.account is not None:
        customer["initial_option"] = account_option(prefill.account)
    tags: dict[str, Any] = {
        "type": "multi_external_select",
        "action_id": FeedbackAction.tags,
        "placeholder": _plain("Add tags"),
        "min_query_length": 1,
    }
    if prefill.tags:
        tags["initial_options"] = [_option(t, t) for t in prefill.tags]
    note: dict[str, Any] = {"type": "plain_text_input", "action_id": FeedbackAction.note, "multiline": True}
    if prefill.note:
        note["initial_value"] = prefill.note
    blocks += [
        _input(
            FeedbackBlock.customer,
            "Customer",
            customer,
            hint="Type to search; pick “New account” to add one.",
        ),
        _input(
            FeedbackBlock.kind,
            "Kind",
            _static_select(FeedbackAction.kind, "What is it?", KIND_LABELS, prefill.kind),
        ),
        _input(FeedbackBlock.tags, "Tags", tags),
        _input(
            FeedbackBlock.importance,
            "Importance",
            _static_select(
                FeedbackAction.importance, "How much does it matter?", IMPORTANCE_LABELS, prefill.importance
            ),
        ),
        _input(FeedbackBlock.note, "Note", note),
    ]
    return {
        "type": "modal",
        "callback_id": FeedbackCallback.modal,
        "private_metadata": source.dump(),
        "title": _plain(f"Feedback #{source.item_id}" if editing else "Capture feedback"),
        "submit": _plain("Save" if editing else "Capture"),
        "close": _plain("Cancel"),
        "blocks": blocks,
    }


def _input(block_id: str, label: str, element: dict[str, Any], hint: str | None = None) -> dict[str, Any]:
    block: dict[str, Any] = {
        "type": "input",
        "block_id": block_id,
        "label": _plain(label),
        "element": element,
        "optional": True,
    }
    if hint:
        block["hint"] = _plain(hint)
    return block


@dataclass
class Submission:
    """A read submission: typed details, plus names of things to create."""

    details: FeedbackDetails
    new_account_name: str | None
    errors: dict[str, str]
    account_id: int | None = None  # as chosen, even when another field is wrong


def read_submission(values: dict[str, dict[str, Any]]) -> Submission:
    """Turns view.state.values into typed details, or inline errors keyed by block id."""

    def value(block: FeedbackBlock, action: FeedbackAction) -> dict[str, Any]:
        return values.get(block, {}).get(action, {})

    errors: dict[str, str] = {}
    text_state = value(FeedbackBlock.text, FeedbackAction.text)
    text = text_state.get("value") if FeedbackBlock.text in values else None
    if FeedbackBlock.text in values and not (text or "").strip():
        errors[FeedbackBlock.text] = "Add the feedback text — what did the customer say?"
    customer = (value(FeedbackBlock.customer, FeedbackAction.customer).get("selected_option") or {}).get(
        "value"
    )
    account_id: int | None = None
    new_account: str | None = None
    if customer and customer.startswith(NEW_OPTION_PREFIX):
        new_account = customer.removeprefix(NEW_OPTION_PREFIX).strip() or None
    elif customer:
        try:
            account_id = int(customer)
        except ValueError:
            errors[FeedbackBlock.customer] = "Pick a customer from the list."
    kind = (value(FeedbackBlock.kind, FeedbackAction.kind).get("selected_option") or {}).get("value")
    importance = (
        value(FeedbackBlock.importance, FeedbackAction.importance).get("selected_option") or {}
    ).get("value")
    tags = [
        (o.get("value") or "").removeprefix(NEW_OPTION_PREFIX)
        for o in value(FeedbackBlock.tags, FeedbackAction.tags).get("selected_options") or []
    ]
    note = value(FeedbackBlock.note, FeedbackAction.note).get("value")
    details = FeedbackDetails()
    if not errors:
        try:
            details = FeedbackDetails(
                text=text, account_id=account_id, kind=kind, importance=importance, tags=tags, note=note
            )
        except ValidationError as exc:
            for error in exc.errors():
                field = str(error["loc"][0]) if error["loc"] else "text"
                errors[_FIELD_BLOCKS.get(field, FeedbackBlock.text)] = _friendly(field, error["msg"])
    return Submission(details=details, new_account_name=new_account, errors=errors, account_id=account_id)


_FIELD_BLOCKS = {
    "text": FeedbackBlock.text,
    "account_id": FeedbackBlock.customer,
    "kind": FeedbackBlock.kind,
    "importance": FeedbackBlock.importance,
    "tags": FeedbackBlock.tags,
    "note": FeedbackBlock.note,
}


def _friendly(field: str, message: str) -> str:
    """Pydantic's message, phrased for the person filling the form."""
    if field == "tags":
        return "Use at most 20 tags."
    if field in ("kind", "importance"):
        return "Pick one of the listed options."
    return message.removeprefix("Value error, ").capitalize()
