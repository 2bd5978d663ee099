"""Secrets at rest: Fernet keys from PRODOPS_ENCRYPTION_KEY, sealing and opening stored Slack tokens.

PRODOPS_ENCRYPTION_KEY holds one or more Fernet keys, comma-separated, newest first. The first key encrypts;
every key decrypts (MultiFernet), so a key is rotated in three steps: put the new key first, run
`prodops keys rotate` (re-encrypts every stored token with it), then drop the old key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import select, update

if TYPE_CHECKING:
    from storage.db import Database

# Stored values carry this prefix, so ciphertext is told apart from a token stored before encryption.
SEALED_PREFIX = "fernet:"
GENERATE_HINT = (
    'Generate a key with `prodops keys generate` (or python -c "from cryptography.fernet import Fernet; '
    'print(Fernet.generate_key().decode())"), keep it with your other secrets, and never lose it: '
    "stored Slack tokens cannot be read without it."
)


class EncryptionKeyError(ValueError):
    """PRODOPS_ENCRYPTION_KEY is missing or is not a list of Fernet keys."""


class UnreadableSecret(ValueError):
    """A stored secret was encrypted with a key that is not in PRODOPS_ENCRYPTION_KEY."""


def generate_key() -> str:
    """A new random Fernet key (url-safe base64, 44 characters)."""
    return Fernet.generate_key().decode()


def parse_keys(value: str | None) -> list[Fernet]:
    """The Fernet keys in a comma-separated PRODOPS_ENCRYPTION_KEY value, newest first.

    Raises EncryptionKeyError naming which key (by position, never by value) is malformed.
    """
    parts = [part.strip() for part in (value or "").split(",") if part.strip()]
    if not parts:
        raise EncryptionKeyError("is not set")
    keys = []
    for position, part in enumerate(parts, start=1):
        try:
            keys.append(Fernet(part.encode()))
        except (ValueError, TypeError):
            which = "" if len(parts) == 1 else f" (key {position} of {len(parts)})"
            raise EncryptionKeyError(
                f"is not a valid Fernet key{which}: it must be 32 random bytes in url-safe base64, "
                "44 characters ending in '='"
            ) from None
    return keys


class SecretBox:
    """Seals and opens stored secrets with the configured keys (the first key seals)."""

    def __init__(self, keys: list[Fernet]) -> None:
        if not keys:
            raise EncryptionKeyError("is not set")
        self._fernet = MultiFernet(keys)

    @classmethod
    def from_setting(cls, value: str | None) -> SecretBox:
        """A box for a PRODOPS_ENCRYPTION_KEY value (EncryptionKeyError when it is missing or malformed)."""
        return cls(parse_keys(value))

    @staticmethod
    def is_sealed(value: str | None) -> bool:
        """True for a value this module wrote (ciphertext), False for plaintext or None."""
        return bool(value) and str(value).startswith(SEALED_PREFIX)

    def seal(self, value: str | None) -> str | None:
        """Ciphertext for a secret, with the newest key (None stays None; sealed input is kept as is)."""
        if value is None or self.is_sealed(value):
            return value
        return SEALED_PREFIX + self._fernet.encrypt(value.encode()).decode()

    def open(self, value: str | None) -> str | None:
        """The secret in a stored value; plaintext from before encryption is returned unchanged."""
        if value is None or not self.is_sealed(value):
            return value
        try:
            return self._fernet.decrypt(value[len(SEALED_PREFIX) :].encode()).decode()
        except InvalidToken:
            raise UnreadableSecret(
                "a stored Slack token was encrypted with a key that is not in PRODOPS_ENCRYPTION_KEY. "
                "Put the key it was encrypted with back (any position after the first), run "
                "`prodops keys rotate`, then remove it."
            ) from None

    def reseal(self, value: str | None) -> str | None:
        """The value sealed with the newest key (plaintext is sealed; None stays None)."""
        if value is None:
            return None
        if not self.is_sealed(value):
            return self.seal(value)
        return self.seal(self.open(value))


@dataclass
class RotationResult:
    """What `rotate_tokens` did."""

    rows: int = 0  # installation and bot rows with at least one token
    tokens: int = 0  # token values re-encrypted with the newest key
    were_plaintext: int = 0  # of those, values stored before encryption was on


def rotate_tokens(db: Database, box: SecretBox, *, dry_run: bool = False) -> RotationResult:
    """Re-encrypts every stored Slack token with the newest key, in one transaction (all or nothing).

    Every token must be readable with some key in `box`; otherwise UnreadableSecret and nothing changes.
    This is maintenance across all workspaces, so it deliberately reads every team's rows.
    """
    from storage.models import slack_bots, slack_installations

    result = RotationResult()
    with db.engine.begin() as conn:
        for table in (slack_installations, slack_bots):
            columns = [c for c in table.columns if c.name.endswith("_token")]
            for row in conn.execute(select(table.c.id, *columns)).mappings().all():
                present = {c.name: row[c.name] for c in columns if row[c.name] is not None}
                if not present:
                    continue
                result.rows += 1
                result.tokens += len(present)
                result.were_plaintext += sum(1 for v in present.values() if not box.is_sealed(v))
                resealed = {name: box.reseal(value) for name, value in present.items()}
                if not dry_run:
                    conn.execute(update(table).where(table.c.id == row["id"]).values(**resealed))
    return result
