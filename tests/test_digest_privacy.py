"""Privacy, end to end: feedback typed in a private channel never reaches a digest posted in a public one."""

from __future__ import annotations

import json

from sqlalchemy import select

from bot.digests.outbox import delivery_client
from bot.digests.scheduler import run_digest_tick
from bot.digests.schemas import DigestSections, FeedbackSection
from bot.digests.service import SubscriptionSpec, create_subscription
from bot.feedback import service as feedback_service
from bot.feedback.schemas import FeedbackCapture
from storage.models import FeedbackItem, FeedbackSource, Visibility
from storage.types import utcnow
from tests.conftest import Stack
from tests.helpers import items_in_channel, unique, wait_for


def test_private_feedback_stays_out_of_a_public_digest(stack: Stack) -> None:
    emu = stack.emulator
    pm = emu.add_user(unique("pm"))["id"]
    secret = emu.add_channel(unique("deal-desk"), is_private=True, members=[pm])["id"]
    public = emu.add_channel(unique("general"), members=[pm])["id"]
    digest_channel = emu.add_channel(unique("product-ops"), members=[pm])["id"]
    tag = unique("pricing").lower()
    stack.driver.command(
        "/feedback", f"Hooli threatens to churn over the secret discount {tag}", user=pm, channel=secret
    )
    stack.driver.command("/feedback", f"Public ask: annual billing {tag}", user=pm, channel=public)
    wait_for(
        lambda: items_in_channel(stack.db, secret) and items_in_channel(stack.db, public), what="both items"
    )
    with stack.db.session() as s:
        # Tag both (and a few more public ones) so their group ranks near the top whatever else the shared
        # test workspace holds.
        for item in s.scalars(select(FeedbackItem).where(FeedbackItem.channel_id.in_([secret, public]))):
            item.tags = [tag]
        for n in range(8):
            feedback_service.capture(
                db_session=s,
                item_in=FeedbackCapture(
                    team_id=stack.team_id, channel_id=public, text=f"More on annual billing {n}",
                    captured_by_user_id=pm, source=FeedbackSource.command, visibility=Visibility.public,
                    tags=[tag],
                ),
            )  # fmt: skip
        subscription = create_subscription(
            db_session=s,
            team_id=stack.team_id,
            channel_id=digest_channel,
            spec=SubscriptionSpec(
                cadence="daily", cron="0 9 * * *", sections=DigestSections(feedback=FeedbackSection(top=10))
            ),
            user_id=pm,
            now=utcnow(),
        )
        due = subscription.next_run_at
    assert due is not None

    run_digest_tick(db=stack.db, client=delivery_client(emu.bot_token, emu.url), now=due)

    posted = [m for m in emu.messages(digest_channel) if m.get("bot_id")]
    assert len(posted) == 1
    text = json.dumps(posted[0])
    assert tag in text and "annual billing" in text  # the group is there, quoted from public items
    assert "secret discount" not in text and "Hooli" not in text  # the private one never is
