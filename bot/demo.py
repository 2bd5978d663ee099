"""`prodops demo`: the real server on SQLite, the bundled Slack emulator, every capture mode over signed HTTP."""

from __future__ import annotations

import io
import json
import re
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from sqlalchemy import select

from bot.accounts.importer import import_accounts, parse_accounts_csv
from bot.devkit.driver import SlackDriver
from bot.devkit.emulator import SlackEmulator
from bot.devkit.server_process import ServerProcess
from bot.export import EXPORTS, write_rows
from bot.feedback.ids import FeedbackAction, FeedbackBlock
from bot.insights.trends import MIN_RISING_COUNT
from storage.db import Database
from storage.models import Account, FeedbackItem

DEMO_WIDTH = 120  # columns when the output is not a terminal
# reaction (its retry ignored), shortcut + form, /feedback, channel monitoring ("thanks!" skipped)
EXPECTED_SOURCES = ["reaction", "shortcut", "command", "channel"]
ACCOUNTS_CSV = """name,domain,arr,segment
Acme Corp,acme.com,"$120,000",Mid-market
Globex,globex.io,1.2M,Enterprise
Initech,initech.com,45k,SMB
"""


def run_demo(database_url: str | None = None, console: Console | None = None) -> int:
    """Runs the scenario; returns the process exit code (0 when the bot did what it should)."""
    # Piped or redirected output has no terminal width; 80 columns would cut the headings short.
    console = console or Console(width=None if sys.stdout.isatty() else DEMO_WIDTH)
    workdir = Path(tempfile.mkdtemp(prefix="prodops-demo-"))
    database_url = database_url or f"sqlite:///{workdir / 'prodops-demo.db'}"
    secret = secrets.token_hex(16)
    with SlackEmulator(team_name="Acme Corp", team_domain="acme") as emu:
        cast = _seed_workspace(emu)
        server = ServerProcess(
            {
                "SLACK_BOT_TOKEN": emu.bot_token,
                "SLACK_SIGNING_SECRET": secret,
                "SLACK_API_URL": emu.url,
                "SLACK_APP_TOKEN": "",
                "DATABASE_URL": database_url,
                "WEB_CONCURRENCY": "1",
            },
            log_path=workdir / "server.log",
        )
        with console.status("Starting the ProdOps server (migrating the database)…"):
            try:
                server.start(timeout=60)
            except RuntimeError as exc:
                console.print(f"[red]The server did not start.[/] {exc}")
                return 1
        db = Database(database_url)
        try:
            console.print(
                f"[green]✓[/] Server up at {server.base_url} · emulator at {emu.url} · {database_url}"
            )
            _import_accounts(console, db, emu.team_id)
            driver = SlackDriver(events_url=server.events_url, signing_secret=secret, emulator=emu)
            _play_scenario(console, driver, emu, db, cast)
            ok = _wait(lambda: _sources(db) == sorted(EXPECTED_SOURCES) and _replies_in(db) >= 1, timeout=30)
            _show_bot_posts(console, emu, cast)
            count = _show_export(console, db)
            insights_ok = _insights_scenario(console, driver, emu, db, cast)
            digest_ok = _digest_scenario(console, driver, emu, db, cast)
        finally:
            db.dispose()
            server.stop()
    failure = None
    if not ok or count != len(EXPECTED_SOURCES):
        failure = f"Expected one item per capture mode {EXPECTED_SOURCES}, got {count} items."
    elif not insights_ok:
        failure = "Themes were not proposed, accepted and shown in the trends."
    elif not digest_ok:
        failure = "The digest was not delivered exactly once."
    if failure:
        console.print(f"[red]✗ {failure}[/] The server log and database are kept in {workdir}.")
        return 1
    shutil.rmtree(workdir, ignore_errors=True)  # a run that worked leaves nothing behind but demo-output/
    console.print(
        f"[bold green]✓ Demo finished: {count} feedback items, one per capture mode; the retried delivery and "
        "the “thanks!” were ignored; the thread reply joined its item; themes were proposed, accepted and "
        "trended; the digest was delivered once.[/]"
    )
    return 0


def _seed_workspace(emu: SlackEmulator) -> dict[str, Any]:
    """Four people, three channels, a few customer conversations."""
    alice = emu.add_user("alice", real_name="Alice Support")
    bob = emu.add_user("bob", real_name="Bob PM")
    carol = emu.add_user("carol", real_name="Carol Sales")
    dana = emu.add_user("dana", real_name="Dana Product Ops", is_admin=True)
    members = [alice["id"], bob["id"], carol["id"], dana["id"]]
    support = emu.add_channel("support", members=members)
    sales = emu.add_channel("sales-calls", members=members)
    voice = emu.add_channel("customer-voice", members=members)
    messages = {
        "csv": emu.post_message(
            support["id"],
            alice["id"],
            "Acme says the CSV export drops the last column when a field has a comma.",
        ),
        "sso": emu.post_message(
            sales["id"], carol["id"], "Globex call recap: they will not renew without SSO via Okta."
        ),
    }
    return {
        "alice": alice, "bob": bob, "carol": carol, "dana": dana,
        "support": support, "sales": sales, "voice": voice, "messages": messages,
    }  # fmt: skip


def _import_accounts(console: Console, db: Database, team_id: str) -> None:
    rows, errors = parse_accounts_csv(ACCOUNTS_CSV)
    assert not errors, errors
    with db.session() as s:
        result = import_accounts(db_session=s, team_id=team_id, rows=rows)
    console.print(
        f"[green]✓[/] prodops import accounts: {result.created} accounts (Acme Corp, Globex, Initech)"
    )


def _play_scenario(
    console: Console, driver: SlackDriver, emu: SlackEmulator, db: Database, cast: dict[str, Any]
) -> None:
    """Every capture mode, each a signed POST to /slack/events."""
    msgs, bob, carol, dana = cast["messages"], cast["bob"]["id"], cast["carol"]["id"], cast["dana"]["id"]
    support, sales, voice = cast["support"]["id"], cast["sales"]["id"], cast["voice"]["id"]
    csv_event = driver.event_callback(
        driver.reaction_added_event(user=bob, reaction="bulb", channel=support, ts=msgs["csv"]["ts"])
    )
    steps: list[tuple[str, Callable[[], Any]]] = [
        ("Dana (admin) types /prodops watch #customer-voice",
         lambda: driver.command("/prodops", f"watch <#{voice}|customer-voice>", user=dana, channel=voice)),
        ("1 · Bob reacts :bulb: to Alice's CSV message in #support", lambda: driver.send_event(csv_event)),
        ("    Slack retries that same event (X-Slack-Retry-Num: 1)",
         lambda: driver.send_event(csv_event, retry_num=1)),
        ("2 · Bob: message menu → Capture feedback on Carol's SSO recap",
         lambda: _shortcut_and_submit(driver, emu, db, bob, sales, msgs["sso"])),
        ("3 · Carol types /feedback Initech: wants Slack alerts when an export fails",
         lambda: driver.command("/feedback", "Initech: wants Slack alerts when an export fails", user=carol,
                                channel=sales)),
        ("4 · A customer-facing teammate posts in #customer-voice (watched)",
         lambda: driver.say(user=carol, channel=voice,
                            text="Acme's admins can't find bulk edit; they export, edit and re-import every week.")),
        ("    …then just “thanks!” in #customer-voice (noise)",
         lambda: driver.say(user=carol, channel=voice, text="thanks!")),
    ]  # fmt: skip
    table = Table(title="Scenario (signed HTTP to /slack/events)")
    table.add_column("step")
    table.add_column("HTTP", justify="right")
    table.add_column("ack ms", justify="right")
    for label, action in steps:
        started = time.perf_counter()
        response = action()
        table.add_row(label, str(response.status), f"{(time.perf_counter() - started) * 1000:.0f}")
        time.sleep(0.3)
    _wait(lambda: "channel" in _sources(db), timeout=10)
    captured = _item_ts(db, "channel")
    if captured:
        started = time.perf_counter()
        response = driver.say(
            user=bob, channel=voice, text="Which screen do they start from?", thread_ts=captured
        )
        table.add_row(
            "    Bob replies in that thread (joins the item's conversation)",
            str(response.status),
            f"{(time.perf_counter() - started) * 1000:.0f}",
        )
    console.print(table)


def _shortcut_and_submit(
    driver: SlackDriver, emu: SlackEmulator, db: Database, user: str, channel: str, message: dict[str, Any]
) -> Any:
    """The message shortcut opens the form; Bob picks Globex, Feature request, Critical and a new tag."""
    before = len(emu.calls("views.open"))
    driver.send_interaction(
        driver.message_shortcut(callback_id="capture_feedback", user=user, channel=channel, message=message)
    )
    _wait(lambda: len(emu.calls("views.open")) > before, timeout=10)
    view = emu.calls("views.open")[-1].params["view"]
    with db.read() as s:
        globex = s.scalar(select(Account.id).where(Account.name == "Globex"))
    values = {
        FeedbackBlock.text: {FeedbackAction.text: {"value": message["text"]}},
        FeedbackBlock.customer: {FeedbackAction.customer: {"selected_option": {"value": str(globex)}}},
        FeedbackBlock.kind: {FeedbackAction.kind: {"selected_option": {"value": "feature_request"}}},
        FeedbackBlock.tags: {FeedbackAction.tags: {"selected_options": [{"value": "new:sso"}]}},
        FeedbackBlock.importance: {FeedbackAction.importance: {"selected_option": {"value": "critical"}}},
        FeedbackBlock.note: {FeedbackAction.note: {"value": "Renewal on March 31"}},
    }
    return driver.send_interaction(driver.view_submission(user=user, view=view, values=values))


def _wait(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def _sources(db: Database) -> list[str]:
    with db.read() as s:
        return sorted(s.scalars(select(FeedbackItem.source)))


def _item_ts(db: Database, source: str) -> str | None:
    with db.read() as s:
        return s.scalar(select(FeedbackItem.message_ts).where(FeedbackItem.source == source))


def _replies_in(db: Database) -> int:
    with db.read() as s:
        return sum(len(i.replies) for i in s.scalars(select(FeedbackItem)))


def _blocks_text(message: dict[str, Any], emu: SlackEmulator | None = None) -> str:
    """The readable text of a Block Kit message, as a person would see it (mentions shown as names)."""
    parts = []
    for block in message.get("blocks") or []:
        kind = block.get("type")
        if kind in ("section", "header"):
            if block.get("text"):
                parts.append(block["text"]["text"])
            parts.extend(f.get("text", "") for f in block.get("fields") or [])
            if block.get("accessory", {}).get("type") == "button":
                parts.append(f"[ {block['accessory']['text']['text']} ]")
        elif kind == "context":
            parts.extend(e.get("text", "") for e in block.get("elements", []))
        elif kind == "actions":
            parts.append(
                "  ".join(f"[ {e['text']['text']} ]" for e in block.get("elements", []) if e.get("text"))
            )
        elif kind == "divider":
            parts.append("─" * 40)
    text = "\n".join(parts) or message.get("text", "")
    if emu is not None:
        text = re.sub(
            r"<@(U\w+)>", lambda m: "@" + ((emu.user(m.group(1)) or {}).get("name") or m.group(1)), text
        )
        text = re.sub(
            r"<#(C\w+)(?:\|[^>]*)?>",
            lambda m: "#" + ((emu.channel(m.group(1)) or {}).get("name") or ""),
            text,
        )
    return text


def _show_bot_posts(console: Console, emu: SlackEmulator, cast: dict[str, Any]) -> None:
    for channel in (cast["support"], cast["sales"], cast["voice"]):
        for message in emu.messages(channel["id"]):
            reactions = " ".join(f":{r['name']}:" for r in message.get("reactions") or [])
            for reply in emu.replies(channel["id"], message["ts"]):
                if reply.get("bot_id"):
                    title = f"#{channel['name']} · thread of “{message['text'][:45]}…”"
                    console.print(Panel(_blocks_text(reply, emu), title=title, title_align="left"))
            if channel is cast["voice"] and reactions:
                console.print(f"#{channel['name']}: the bot reacted {reactions} to “{message['text'][:50]}…”")
    for post in emu.response_url_posts():
        console.print(
            Panel(_blocks_text(post, emu), title="only visible to the person who asked", title_align="left")
        )


def _show_export(console: Console, db: Database) -> int:
    rows, fields = EXPORTS["feedback"]
    out = io.StringIO()
    count = write_rows(rows(db), fields, "jsonl", out)
    console.print("[bold]prodops export feedback --format jsonl[/]")
    sys.stdout.write(out.getvalue())
    sys.stdout.flush()
    return count


# Earlier feedback (days ago, customer, text): three topics, one of them rising this week.
EARLIER_FEEDBACK = [
    (1, "Initech", "Initech wants SSO with Okta for all of their admins"),
    (2, "Acme Corp", "SAML single sign-on through Okta is blocking the Acme rollout"),
    (3, None, "Can we log in with Okta SSO? Their IT team asked again"),
    (4, "Globex", "Globex security review: Okta SAML SSO login is mandatory"),
    (9, None, "A prospect asked whether we support SSO login via Okta"),
    (2, "Acme Corp", "CSV export loses the last column when a note contains a comma"),
    (5, None, "The exported CSV has its columns shifted by one"),
    (8, "Initech", "CSV export is missing the custom field columns"),
    (10, None, "The CSV export cuts off columns after the twentieth one"),
    (12, "Globex", "Finance needs every column in the CSV export"),
    (1, "Acme Corp", "Admins want to bulk edit records instead of exporting and re-importing"),
    (3, None, "Bulk edit for user roles would save our admins hours every week"),
    (6, "Initech", "Please add bulk edit to the records table"),
]


def _insights_scenario(
    console: Console, driver: SlackDriver, emu: SlackEmulator, db: Database, cast: dict[str, Any]
) -> bool:
    """Earlier feedback; the worker's theme job proposes themes; Dana accepts them in `/feedback themes`;
    a new capture joins its theme (and is checked for duplicates); `/feedback trends` shows what is rising."""
    from datetime import UTC, datetime, timedelta

    from bot.insights import index as similarity_index
    from bot.insights.similarity import backend_description
    from bot.insights.theme_messaging import ThemeAction
    from bot.insights.themes_job import run_for_team
    from bot.settings import Settings

    team, dana, carol = emu.team_id, cast["dana"]["id"], cast["carol"]["id"]
    sales = cast["sales"]["id"]
    settings = Settings()  # the server's own choice of similarity backend (the embeddings extra if installed)
    console.rule(f"[bold]Insights: {len(EARLIER_FEEDBACK)} earlier items · {backend_description(settings)}")
    now = datetime.now(UTC)
    with db.session() as s:
        accounts = {a.name: a.id for a in s.scalars(select(Account).where(Account.team_id == team))}
        items = []
        for days, customer, text in EARLIER_FEEDBACK:
            item = FeedbackItem(team_id=team, channel_id=sales, text=text, captured_by_user_id=carol,
                                source="command", account_id=accounts.get(customer) if customer else None,
                                created_at=now - timedelta(days=days, hours=1))  # fmt: skip
            s.add(item)
            s.flush()
            items.append((item.id, text))
    with console.status("The worker's theme job: encoding and clustering the unsorted feedback…"):
        index = similarity_index.get_index(db, team, settings=settings)
        with db.session() as s:
            for item_id, text in items:
                index.add(s, item_id, text)
        job = run_for_team(db, team, force=True, settings=settings)
    console.print(
        f"Theme job: {len(job.proposed)} proposal(s) for a person to accept; {job.unsorted} item(s) left unsorted"
    )

    listed = driver.command("/feedback", "themes", user=dana, channel=sales)
    posts = _wait_for_posts(emu, listed.response_key)
    if not posts:
        return False
    console.print(
        Panel(_blocks_text(posts[0], emu), title="/feedback themes (Dana, admin)", title_align="left")
    )
    accepts = [e for b in posts[0].get("blocks", []) if b.get("type") == "actions"
               for e in b.get("elements", []) if e.get("action_id") == ThemeAction.accept.value]  # fmt: skip
    for button in accepts:  # Dana clicks Accept on each proposal
        driver.send_interaction(driver.block_actions(
            user=dana, channel=sales, message={"ts": emu.next_ts(), "blocks": posts[0]["blocks"]},
            actions=[{**button, "block_id": "themes", "action_ts": emu.next_ts()}],
        ))  # fmt: skip
    _wait(lambda: len(_active_themes(db, team)) >= len(accepts), timeout=10)
    accepted = _active_themes(db, team)
    console.print(
        f"Dana clicks Accept on {len(accepts)} proposal(s): {len(accepted)} active theme(s) — "
        + ", ".join(f"“{name}”" for name in accepted)
    )

    ephemerals = len(emu.calls("chat.postEphemeral"))
    typed = driver.command(
        "/feedback",
        "Globex: security review again, Okta SAML SSO login is still mandatory",
        user=carol,
        channel=sales,
    )
    answers = _wait_for_posts(emu, typed.response_key)
    # The duplicate check runs after the answer; a link (with Undo) or a question reaches Carol privately.
    _wait(lambda: len(emu.calls("chat.postEphemeral")) > ephemerals, timeout=15)
    for call in emu.calls("chat.postEphemeral")[ephemerals:]:
        blocks = call.params.get("blocks")
        answers.append({"blocks": json.loads(blocks) if isinstance(blocks, str) else blocks or []})
    for answer in answers:
        console.print(Panel(_blocks_text(answer, emu), title="/feedback (Carol) · only she sees this",
                            title_align="left"))  # fmt: skip
    _wait(lambda: _newest_item_theme(db, team) is not None, timeout=10)  # assigned after the ack
    joined = _newest_item_theme(db, team)
    console.print(
        f"Carol's new item joined the theme “{joined}”." if joined
        else "Carol's new item joined no theme (it stays unsorted until the next theme job)."
    )  # fmt: skip
    trends = driver.command("/feedback", "trends", user=dana, channel=sales)
    shown = _wait_for_posts(emu, trends.response_key)
    if shown:
        console.print(Panel(_blocks_text(shown[0], emu), title="/feedback trends (Dana)", title_align="left"))
        console.print(
            f"Rising = at least {MIN_RISING_COUNT} items this week and more than the week before (largest growth "
            "first). ARR is the total of the accounts that asked this week; the amount in brackets is its "
            "change against the week before."
        )
    names = _active_themes(db, team)
    return (
        bool(accepts)
        and bool(names)
        and bool(shown)
        and any(n in json.dumps(shown[0], ensure_ascii=False) for n in names)
    )


def _wait_for_posts(emu: SlackEmulator, key: str | None, timeout: float = 30) -> list[dict[str, Any]]:
    """What the bot posted to one command's response_url (waits for the first answer)."""
    if key is None:
        return []
    _wait(lambda: bool(emu.response_url_posts(key)), timeout=timeout)
    time.sleep(0.5)  # a second answer (e.g. a duplicate question after the confirmation) may follow
    return emu.response_url_posts(key)


def _newest_item_theme(db: Database, team_id: str) -> str | None:
    """The name of the theme the workspace's latest feedback item is in (None when unsorted)."""
    with db.read() as s:
        item = s.scalars(
            select(FeedbackItem)
            .where(FeedbackItem.team_id == team_id)
            .order_by(FeedbackItem.id.desc())
            .limit(1)
        ).first()
        return item.theme.name if item is not None and item.theme is not None else None


def _active_themes(db: Database, team_id: str) -> list[str]:
    """The names of the workspace's accepted themes."""
    from storage.models import Theme, ThemeStatus

    with db.read() as s:
        return list(s.scalars(select(Theme.name).where(
            Theme.team_id == team_id, Theme.status == ThemeStatus.active.value)))  # fmt: skip


OUTPUT_DIR = Path("demo-output")


def _digest_scenario(
    console: Console, driver: SlackDriver, emu: SlackEmulator, db: Database, cast: dict[str, Any]
) -> bool:
    """Two metrics with history and a few requests; #product-ops subscribes; the worker's tick posts the digest."""
    from datetime import UTC, datetime, timedelta

    from bot.digests.outbox import delivery_client
    from bot.digests.scheduler import run_digest_tick
    from bot.digests.schemas import DigestSections, FeedbackSection, MetricsSection, RequestsSection
    from bot.digests.service import SubscriptionSpec, create_subscription
    from bot.metrics.points import Point, upsert_points
    from storage.models import DigestOutbox, Metric

    team, dana = emu.team_id, cast["dana"]["id"]
    ops = emu.add_channel("product-ops", members=[dana, cast["bob"]["id"]])
    console.rule("[bold]Requests: Carol asks Product Ops for two things")
    for text in ("Pull churn numbers by segment for the QBR", "Review the launch checklist for Bulk edit"):
        response = driver.command("/request", text, user=cast["carol"]["id"], channel=cast["sales"]["id"])
        console.print(f"Carol types /request {text} → HTTP {response.status}; a tracked request with an SLA")
    now = datetime.now(UTC)
    with db.session() as s:
        for key, name, unit, direction, target, base, step in (
            ("weekly_active_accounts", "Weekly active accounts", "count", "up_is_good", 1200.0, 900.0, 25.0),
            ("churned_arr", "Churned ARR", "currency", "down_is_good", 20000.0, 42000.0, -2500.0),
        ):
            metric = Metric(team_id=team, key=key, name=name, unit=unit, direction=direction, target=target,
                            summary="last", period="week", source="push", owner_user_id=dana)  # fmt: skip
            s.add(metric)
            s.flush()
            points = [Point(now - timedelta(days=7 * w), base + step * (8 - w)) for w in range(8, -1, -1)]
            upsert_points(db_session=s, team_id=team, metric_id=metric.id, points=points)
        subscription = create_subscription(
            db_session=s,
            team_id=team,
            channel_id=ops["id"],
            spec=SubscriptionSpec(
                cadence="weekly",
                cron="0 9 * * mon",
                timezone="Europe/London",
                sections=DigestSections(
                    metrics=MetricsSection(keys=["weekly_active_accounts", "churned_arr"]),
                    feedback=FeedbackSection(top=5, by="arr"),
                    requests=RequestsSection(),
                ),
            ),
            user_id=dana,
            now=now,
        )
        due, subscription_id = subscription.next_run_at, subscription.id
    _wait(lambda: len(emu.messages(cast["sales"]["id"])) >= 4, timeout=10)  # the two request cards
    assert due is not None
    console.rule(
        f"[bold]Digest: #product-ops, weekly, Mon 09:00 Europe/London · clock set to {due:%a %d %b %H:%M} UTC"
    )
    client = delivery_client(emu.bot_token, emu.url)
    first = run_digest_tick(db=db, client=client, now=due)
    again = run_digest_tick(db=db, client=client, now=due)  # a second worker, or a restart: nothing more
    posted = [m for m in emu.messages(ops["id"]) if m.get("bot_id")]
    with db.read() as s:
        outbox = s.scalar(select(DigestOutbox).where(DigestOutbox.subscription_id == subscription_id))
        blocks, chart = (outbox.blocks, outbox.chart_png) if outbox else ([], None)
    OUTPUT_DIR.mkdir(exist_ok=True)
    (OUTPUT_DIR / "digest-blocks.json").write_text(json.dumps({"blocks": blocks}, indent=2))
    if chart:
        (OUTPUT_DIR / "digest-chart.png").write_bytes(chart)
    if posted:
        console.print(
            Panel(_blocks_text(posted[0], emu), title="#product-ops · the digest", title_align="left")
        )
    console.print(
        f"Worker ticks: first queued {first.queued} and delivered {first.delivery.sent if first.delivery else 0}; "
        f"the repeat queued {again.queued}. Blocks → {OUTPUT_DIR / 'digest-blocks.json'}"
        + (f", chart → {OUTPUT_DIR / 'digest-chart.png'}" if chart else "")
    )
    return len(posted) == 1 and bool(blocks)
