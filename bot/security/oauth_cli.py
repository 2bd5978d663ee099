"""`prodops keys generate|rotate`: the encryption key for Slack tokens stored by multi-workspace installs.

Rotating a key: put the new key first in PRODOPS_ENCRYPTION_KEY (`new,old`), restart the web and worker
processes, run `prodops keys rotate`, then remove the old key and restart again.
"""

from __future__ import annotations

import argparse
from typing import Any

from bot.cli_support import migrate
from bot.settings import ConfigError, load_settings

KEYS_HELP = """\
generate: print a new random key for PRODOPS_ENCRYPTION_KEY.
rotate:   re-encrypt every stored Slack token with the first key of PRODOPS_ENCRYPTION_KEY.

To replace a key: set PRODOPS_ENCRYPTION_KEY=<new key>,<old key> everywhere and restart, run
`prodops keys rotate`, then set PRODOPS_ENCRYPTION_KEY=<new key> and restart. Exit codes: 0 done,
2 a missing or wrong key (nothing changed)."""


def register_oauth_parser(sub: argparse._SubParsersAction[Any]) -> None:
    """Adds `keys generate` and `keys rotate [--dry-run]` to the `prodops` parser."""
    keys = sub.add_parser(
        "keys",
        help="the encryption key of stored Slack tokens: generate one, or rotate to a new one",
        description=KEYS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    keys.add_argument("action", choices=["generate", "rotate"])
    keys.add_argument(
        "--dry-run", action="store_true", help="rotate: check every token can be read; change nothing"
    )
    keys.set_defaults(run=cmd_keys)


def cmd_keys(args: argparse.Namespace) -> None:
    """`prodops keys generate` prints a key; `prodops keys rotate` re-encrypts the stored tokens."""
    from bot.security.crypto import SecretBox, UnreadableSecret, generate_key, rotate_tokens
    from storage.db import Database

    if args.action == "generate":
        print(generate_key())
        return
    settings = load_settings()
    settings.require_encryption_key()
    box = SecretBox.from_setting(
        settings.encryption_key.get_secret_value() if settings.encryption_key else None
    )
    migrate(settings)
    db = Database(settings.database_url)
    try:
        result = rotate_tokens(db, box, dry_run=args.dry_run)
    except UnreadableSecret as exc:
        raise ConfigError(f"ProdOps: nothing was re-encrypted: {exc}") from None
    finally:
        db.dispose()
    legacy = f" ({result.were_plaintext} of them were stored unencrypted)" if result.were_plaintext else ""
    if args.dry_run:
        print(f"Dry run: all {result.tokens} stored token(s) in {result.rows} row(s) can be read{legacy}.")
        return
    print(
        f"Re-encrypted {result.tokens} stored token(s) in {result.rows} row(s) with the first key of "
        f"PRODOPS_ENCRYPTION_KEY{legacy}. The other keys are no longer needed: remove them and restart."
    )
