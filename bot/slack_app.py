"""The Bolt app: context and inbox middleware, the one error handler, and the listeners."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from slack_bolt import App, BoltContext, BoltRequest, BoltResponse
from slack_bolt.error import BoltUnhandledRequestError
from slack_bolt.listener.listener_completion_handler import ListenerCompletionHandler
from slack_bolt.request.internals import extract_team_id
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

import handlers
from bot import inbox
from bot.feedback.noise import classify_message
from bot.inbox_writer import InboxWriter
from bot.security.ratelimit import CommandRateLimit
from bot.settings import Settings
from bot.slack_client import build_client
from bot.workspaces import SettingsCache
from storage.db import Database
from storage.models import InboxStatus

logger = logging.getLogger("prodops.app")

REPLAY_KEY = "prodops_replay_id"
INBOX_KEY = "prodops_inbox_id"
FAILED_KEY = "prodops_failed"
OUTCOME_KEY = "prodops_outcome"
FINAL_ATTEMPT_KEY = "prodops_final_attempt"


@dataclass(frozen=True)
class Outcome:
    """How a delivery's listener ended, for the worker that runs it: done, ignored, or failed (with why)."""

    status: InboxStatus
    error: str | None = None


APOLOGY = (
    "Sorry — something went wrong on our side while handling that (reference `{ref}`). "
    "Nothing you entered was lost; please try again in a minute, and if it keeps happening "
    "tell your ProdOps admin the reference."
)


WEB = "web"
WORKER = "worker"


def build_app(settings: Settings, db: Database, client: WebClient | None = None, *, role: str = WEB) -> App:
    """Builds the Bolt App with ProdOps middleware and every listener registered.

    `role` web: verify, record, ack. Events API deliveries are recorded in the inbox and acknowledged; no
    listener runs for them here. Interactive payloads run their listener (a `trigger_id` must open its modal
    within 3 s). `role` worker: runs deliveries a worker claimed (`run_claimed`), each listener to its end
    in the calling thread, so the worker knows the outcome and settles the delivery itself.
    """
    writer = InboxWriter(db.inbox, lease_seconds=settings.inbox_lease_seconds) if role == WEB else None
    cache = SettingsCache(db, ttl=settings.settings_cache_seconds)
    client = client or build_client(settings)
    oauth = None
    if settings.multi_workspace:
        # Each workspace's token comes from the encrypted installation store (bot/security/oauth.py).
        from bot.security.oauth import oauth_settings

        oauth = oauth_settings(settings, db, client)
        logger.info("multi-workspace mode: workspaces install the app at %s", oauth.install_path)
    app = App(
        signing_secret=settings.slack_signing_secret or "socket-mode-has-no-signing-secret",
        client=client,
        oauth_settings=oauth,
        raise_error_for_unhandled_request=True,
        # Web: Bolt acks first and runs interactive listeners in its executor. Worker: the listener runs in
        # the worker's own thread before dispatch returns.
        process_before_response=role == WORKER,
        listener_executor=ThreadPoolExecutor(
            max_workers=16 if role == WEB else 2, thread_name_prefix="listener"
        ),
    )

    def record_in_inbox(body: dict[str, Any], context: BoltContext, next: Any) -> BoltResponse | None:
        """Gives listeners their services, and records the delivery before anything acts on it."""
        context["db"] = db
        context["settings"] = settings
        context["workspace_cache"] = cache
        replay_id = context.get(REPLAY_KEY)
        if replay_id is not None:
            context[INBOX_KEY] = replay_id
            return next()
        if writer is None:  # a worker only runs what it claimed
            return BoltResponse(status=200, body="")
        if _is_idle_reaction(body, cache) or _is_idle_message(body, cache):
            # 👍 on anything, chatter in unwatched channels: no handler would act on it, nothing to keep.
            return BoltResponse(status=200, body="")
        delivery = inbox.identify_delivery(body)
        if delivery is None:
            return next()
        inbox_id = writer.record(delivery, body)
        if inbox_id is None:
            logger.info("duplicate delivery %s ignored (already in the inbox)", delivery.delivery_id)
            return BoltResponse(status=200, body="")
        if delivery.queued:
            return BoltResponse(status=200, body="")  # recorded: a worker handles it
        context[INBOX_KEY] = inbox_id
        return next()

    app.middleware(CommandRateLimit(skip_context_key=REPLAY_KEY))  # before the inbox: refused = no work
    app.middleware(record_in_inbox)
    app.error(_make_error_handler(writer))
    app.listener_runner.listener_completion_handler = InboxCompletionHandler(writer)
    if oauth is not None:
        from bot.security.oauth import EncryptedInstallationStore, register_revocation_listeners

        assert isinstance(oauth.installation_store, EncryptedInstallationStore)
        register_revocation_listeners(app, oauth.installation_store, db, settings)
    handlers.register(app)
    return app


def run_claimed(app: App, claimed: inbox.ClaimedDelivery, *, final_attempt: bool) -> Outcome:
    """Runs one claimed delivery through the listeners (worker role) and says how it went.

    The body was verified when it first arrived; "socket_mode" tells Bolt it is already parsed and trusted.
    """
    request = BoltRequest(
        body=claimed.body,
        mode="socket_mode",
        context={REPLAY_KEY: claimed.inbox_id, FINAL_ATTEMPT_KEY: final_attempt},
    )
    app.dispatch(request)
    return request.context.get(OUTCOME_KEY) or Outcome(InboxStatus.done)


def _is_idle_reaction(body: dict[str, Any], cache: SettingsCache) -> bool:
    """A reaction event with an emoji that no ProdOps feature uses (most reactions in a workspace)."""
    event = body.get("event")
    if body.get("type") != "event_callback" or not isinstance(event, dict):
        return False
    if event.get("type") not in ("reaction_added", "reaction_removed"):
        return False
    # The authorized workspace (a shared channel's events carry the other org's team_id at the top).
    team_id = extract_team_id(body) or ""
    return not cache.reactions(str(team_id)).acts_on(str(event.get("reaction", "")))


def _is_idle_message(body: dict[str, Any], cache: SettingsCache) -> bool:
    """A new top-level message that cannot become feedback: not in a watched channel, or noise there.

    Thread replies, edits and deletions are never idle: they may belong to a captured item or a request.
    """
    event = body.get("event")
    if body.get("type") != "event_callback" or not isinstance(event, dict) or event.get("type") != "message":
        return False
    if event.get("subtype") or event.get("thread_ts"):
        return False
    channel = event.get("channel")
    if not isinstance(channel, str) or channel not in cache.watched_channels(
        str(extract_team_id(body) or "")
    ):
        return True
    return classify_message(event).is_noise


class InboxCompletionHandler(ListenerCompletionHandler):
    """Marks the delivery done once its listener has finished (failed ones are left for a retry)."""

    def __init__(self, writer: InboxWriter | None) -> None:
        self.writer = writer

    def handle(self, request: BoltRequest, response: BoltResponse | None) -> None:
        inbox_id = request.context.get(INBOX_KEY)
        if inbox_id is None or request.context.get(FAILED_KEY):
            return
        if self.writer is None or request.context.get(REPLAY_KEY) is not None:
            request.context.setdefault(OUTCOME_KEY, Outcome(InboxStatus.done))  # the worker settles it
            return
        self.writer.finish(inbox_id, InboxStatus.done)


def delivery_reference(body: dict[str, Any]) -> str:
    """The id a person can quote to find this delivery in the logs."""
    return str(body.get("event_id") or body.get("trigger_id") or "unknown")


def _make_error_handler(writer: InboxWriter | None) -> Any:
    def handle_error(error: Exception, body: dict[str, Any], context: BoltContext, client: WebClient) -> Any:
        inbox_id = context.get(INBOX_KEY)
        in_worker = writer is None or context.get(REPLAY_KEY) is not None
        if isinstance(error, BoltUnhandledRequestError):
            # Nothing here wants this delivery; answer 200 so Slack does not retry it.
            if in_worker:
                context[OUTCOME_KEY] = Outcome(InboxStatus.ignored)
            elif inbox_id is not None and writer is not None:
                writer.finish(inbox_id, InboxStatus.ignored)
            return BoltResponse(status=200, body="")
        ref = delivery_reference(body)
        context[FAILED_KEY] = True
        logger.error("handler failed for delivery %s (inbox %s)", ref, inbox_id, exc_info=error)
        if in_worker:
            context[OUTCOME_KEY] = Outcome(InboxStatus.failed, repr(error)[:2000])
            if not context.get(FINAL_ATTEMPT_KEY):
                return None  # retried after a backoff; the person hears only if every attempt fails
        elif inbox_id is not None and writer is not None:
            writer.finish(inbox_id, InboxStatus.failed, repr(error)[:2000])
        _tell_user(body, context, client, APOLOGY.format(ref=ref))
        return None

    return handle_error


def _tell_user(body: dict[str, Any], context: BoltContext, client: WebClient, text: str) -> None:
    """Best effort: say sorry where the person is looking (command reply, or ephemeral in the channel)."""
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": f":warning: {text}"}}]
    try:
        if context.respond is not None and body.get("response_url"):
            context.respond(text=text, blocks=blocks, response_type="ephemeral", replace_original=False)
            return
        event: dict[str, Any] = body["event"] if isinstance(body.get("event"), dict) else {}
        item: dict[str, Any] = event["item"] if isinstance(event.get("item"), dict) else {}
        channel = item.get("channel") or event.get("channel") or context.channel_id
        user = event.get("user") or context.user_id
        if not isinstance(channel, str) or not isinstance(user, str):
            return  # a user_change-style object, not someone to answer
        if channel and user:
            client.chat_postEphemeral(channel=channel, user=user, text=text, blocks=blocks)
    except (SlackApiError, OSError) as exc:
        logger.warning("could not tell the user about the error: %s", exc)
