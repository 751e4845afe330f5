"""GPG blocks: recipients' public keys (backup hosts) and the private key (restore hosts).

Each hands out a ready temporary GNUPGHOME (private 0700 directory, removed afterwards)
with its keys imported, after checking them through python-gnupg (every gpg call's exit
status and result checked): a recipient key must be a public key that gpg itself rates
usable for encryption (not revoked, not expired, with an encryption subkey); the decryption
key must be a private key holding a decryption subkey, which its passphrase unlocks.

An expired or revoked PRIVATE key is accepted on purpose: it must still decrypt the backups
made while it was valid (expiry and revocation stop new encryption, not decryption).

python-gnupg logs the first bytes of every key it imports or scans at DEBUG level; a filter
on its logger drops those records so no private key material reaches a log.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import gnupg
from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from blocks.schema_cache import CachedSchema
from errors import InvalidInputError, PermanentSystemError

# python-gnupg's DEBUG records that carry key material (see the module docstring)
_KEY_DATA_FORMATS = frozenset({"import_keys: %r", "scan_keys: %r"})
# gpg error codes (low 16 bits of a FAILURE status) meaning "the passphrase did not unlock it"
_PASSPHRASE_ERRORS = frozenset({11, 85, 99, 177})  # bad, no pinentry, canceled, no passphrase


class _DropKeyData(logging.Filter):
    """Drop python-gnupg's records that would log the key being imported or scanned."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg not in _KEY_DATA_FORMATS


if not any(isinstance(f, _DropKeyData) for f in logging.getLogger("gnupg").filters):
    logging.getLogger("gnupg").addFilter(_DropKeyData())


@dataclass(frozen=True)
class KeyInfo:
    """What gpg says about one primary key (and its subkeys) of an armored block.

    Attributes:
        fingerprint: the primary key's fingerprint.
        secret: True for a private key (``sec``), False for a public one (``pub``).
        validity: gpg's validity letter of the primary key (``r`` revoked, ``e`` expired).
        expires: the primary key's expiry, if any.
        capabilities: gpg's capability field: lowercase letters are the primary key's own,
            UPPERCASE ones what the whole key is usable for now (gpg leaves ``E`` out when
            the key is revoked or expired or no encryption subkey is valid).
        encryption_keys: how many of its (sub)keys carry the encryption capability, usable
            or not (a private key needs one to decrypt).
    """

    fingerprint: str
    secret: bool
    validity: str
    expires: datetime | None
    capabilities: str
    encryption_keys: int

    @property
    def revoked(self) -> bool:
        """True when the primary key is revoked."""
        return self.validity == "r"

    @property
    def expired(self) -> bool:
        """True when the primary key has expired."""
        return self.validity == "e" or (
            self.expires is not None and self.expires <= datetime.now(UTC)
        )

    @property
    def can_encrypt(self) -> bool:
        """True when gpg rates the key usable for encryption now."""
        return "E" in self.capabilities


@dataclass(frozen=True)
class Keyring:
    """A temporary GNUPGHOME with keys imported."""

    home: Path
    fingerprints: list[str]


def _epoch(value: str) -> datetime | None:
    return datetime.fromtimestamp(int(value), UTC) if value.strip() else None


def key_info(raw: dict[str, Any]) -> KeyInfo:
    """Turn one key of a python-gnupg listing (``scan_keys_mem``, ``list_keys``) into a KeyInfo.

    Args:
        raw: the key's dict as python-gnupg returns it.

    Returns:
        The key's facts.
    """
    subkeys = (raw.get("subkey_info") or {}).values()
    encryption = ("e" in str(raw.get("cap", ""))) + sum("e" in str(sub.get("cap", "")).lower()
                                                      for sub in subkeys)
    return KeyInfo(
        fingerprint=str(raw.get("fingerprint", "")), secret=raw.get("type") == "sec",
        validity=str(raw.get("trust", "")),
        expires=_epoch(str(raw.get("expires", ""))),
        capabilities=str(raw.get("cap", "")),
        encryption_keys=int(encryption),
    )


def open_gpg(home: Path) -> gnupg.GPG:
    """A python-gnupg handle on a GNUPGHOME.

    Args:
        home: the directory (private, 0700).

    Returns:
        The handle.

    Raises:
        PermanentSystemError: gpg cannot be run.
    """
    try:
        return gnupg.GPG(gnupghome=str(home))
    except (OSError, ValueError) as exc:  # no gpg binary, or `gpg --version` failed
        raise PermanentSystemError(
            "gpg", f"cannot run gpg ({type(exc).__name__})",
            hint="install GnuPG 2.2+ (Debian: apt-get install gnupg) on the worker",
        ) from None


@contextlib.contextmanager
def temp_gnupghome() -> Iterator[Path]:
    """A private (0700) temporary GNUPGHOME, its agent stopped and files removed afterwards.

    Its agent protects an imported secret key, for this directory's life only, at gpg's lowest
    count (``s2k-count 65536``) rather than a calibrated one (~1 s of agent CPU per decryption):
    whoever can read this 0700 directory can read the process and its passphrase too.

    Yields:
        The directory.
    """
    home = Path(tempfile.mkdtemp(prefix="veza-gnupg-"))
    os.chmod(home, 0o700)
    (home / "gpg-agent.conf").write_text("s2k-count 65536\n")
    try:
        yield home
    finally:
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"],
                       capture_output=True, check=False)
        shutil.rmtree(home, ignore_errors=True)


def scan_armored(gpg: gnupg.GPG, armored: str, *, field_name: str, fix: str) -> list[KeyInfo]:
    """List the keys of an armored block without importing them (``gpg --dry-run`` import).

    Args:
        gpg: a python-gnupg handle on a scratch GNUPGHOME.
        armored: the armored text.
        field_name: the block field it came from, for errors.
        fix: what to paste instead, for errors.

    Returns:
        The keys found (at least one).

    Raises:
        InvalidInputError: gpg failed or found no OpenPGP key in the text.
    """
    result = gpg.scan_keys_mem(armored)
    keys = [key_info(raw) for raw in result]
    if result.returncode != 0 or not keys or not all(k.fingerprint for k in keys):
        raise InvalidInputError(field_name, "is not an armored OpenPGP key gpg can read", fix=fix)
    return keys


def import_armored(
    gpg: gnupg.GPG, armored: str, keys: list[KeyInfo], *, field_name: str, fix: str
) -> None:
    """Import an armored block already scanned, and check every key of it was imported.

    Args:
        gpg: a python-gnupg handle on the keyring's GNUPGHOME.
        armored: the armored text.
        keys: its keys, from :func:`scan_armored`.
        field_name: the block field, for errors.
        fix: the fix, for errors.

    Raises:
        InvalidInputError: gpg failed, or a key is missing from the keyring afterwards (the
            message gives gpg's exit status only: its output may describe the key).
    """
    result = gpg.import_keys(armored)
    wanted = {k.fingerprint for k in keys}
    listing = gpg.list_keys(secret=keys[0].secret)
    listed = {str(raw["fingerprint"]) for raw in listing} if listing.returncode == 0 else set()
    if result.returncode != 0 or not wanted <= set(result.fingerprints) or not wanted <= listed:
        raise InvalidInputError(
            field_name, f"gpg could not import it (gpg exit status {result.returncode})", fix=fix
        )


RECIPIENT_FIX = "paste the output of `gpg --armor --export FINGERPRINT`"


def check_recipient(key: KeyInfo, *, field_name: str) -> None:
    """Refuse a recipient key that is private, revoked, expired or cannot encrypt.

    Args:
        key: one key of a ``recipients`` entry (from :func:`scan_armored`).
        field_name: the block field, e.g. ``recipients[1]``.

    Raises:
        InvalidInputError: naming the field, the fingerprint and the fix.
    """
    if key.secret:
        raise InvalidInputError(
            field_name,
            f"holds a PRIVATE key ({key.fingerprint}); backup hosts must only get public keys",
            fix="paste `gpg --armor --export FINGERPRINT` (not --export-secret-keys) and "
            "keep the private key in a GpgDecryptionKey block on the restore host",
        )
    if key.revoked:
        raise InvalidInputError(
            field_name,
            f"key {key.fingerprint} is revoked",
            fix="replace it with the recipient's current public key (`gpg --armor --export "
            "FINGERPRINT` of the new key); keep the revoked key's private half for old backups",
        )
    if key.expired:
        when = f" on {key.expires:%Y-%m-%d}" if key.expires else ""
        raise InvalidInputError(
            field_name,
            f"key {key.fingerprint} expired{when}",
            fix="extend it (`gpg --quick-set-expire FINGERPRINT 1y`) and re-export, "
            "or register a new recipient key",
        )
    if not key.can_encrypt:
        raise InvalidInputError(
            field_name,
            f"key {key.fingerprint} cannot encrypt (no valid encryption subkey: sign-only, "
            "or its encryption subkeys expired or were revoked)",
            fix="add one (`gpg --quick-add-key FINGERPRINT cv25519 encr`) and re-export",
        )


class GpgEncryption(CachedSchema, Block):
    """Recipients of backups: armored PUBLIC keys only (a backup host never holds a private key)."""

    _block_type_name = "Veza GPG Encryption"
    _block_type_slug = "veza-gpg-encryption"
    _description = "Public keys that veza-ops backups are encrypted to."

    recipients: list[str] = Field(
        description="Armored public keys (`gpg --armor --export FPR`), one per recipient."
    )

    @contextlib.contextmanager
    def keyring(self) -> Iterator[Keyring]:
        """Check the recipient keys and import them into a temporary GNUPGHOME.

        Every key is checked before any is imported, then checked again as imported: gpg
        must list it in the keyring as usable for encryption.

        Yields:
            The keyring and the recipients' fingerprints.

        Raises:
            InvalidInputError: when a recipient key is missing or unusable, naming
                ``recipients[i]``.
        """
        if not self.recipients:
            raise InvalidInputError(
                "recipients", "no recipient key", fix="add at least one armored public key"
            )
        with temp_gnupghome() as home:
            gpg = open_gpg(home)
            scanned: list[tuple[str, str, list[KeyInfo]]] = []
            for i, armored in enumerate(self.recipients):
                name = f"recipients[{i}]"
                keys = scan_armored(gpg, armored, field_name=name, fix=RECIPIENT_FIX)
                for key in keys:
                    check_recipient(key, field_name=name)
                scanned.append((name, armored, keys))
            for name, armored, keys in scanned:
                import_armored(gpg, armored, keys, field_name=name, fix=RECIPIENT_FIX)
                listing = gpg.list_keys(keys=[k.fingerprint for k in keys])
                if listing.returncode != 0 or len(listing) != len(keys):
                    raise InvalidInputError(
                        name, f"gpg could not list it once imported (gpg exit status "
                        f"{listing.returncode})", fix=RECIPIENT_FIX,
                    )
                for raw in listing:
                    check_recipient(key_info(raw), field_name=name)
            yield Keyring(home, [k.fingerprint for _, _, keys in scanned for k in keys])


class GpgDecryptionKey(CachedSchema, Block):
    """The private key (and its passphrase) that decrypts backups; for restore hosts only."""

    _block_type_name = "Veza GPG Decryption Key"
    _block_type_slug = "veza-gpg-decryption-key"
    _description = "Private key that decrypts veza-ops backups."

    private_key: SecretStr = Field(
        description="Armored private key (`gpg --armor --export-secret-keys FPR`)."
    )
    passphrase: SecretStr | None = Field(default=None, description="Its passphrase, if any.")

    def passphrase_bytes(self) -> bytes:
        """The passphrase followed by a newline, for ``--passphrase-fd``.

        Returns:
            Bytes to write into the passphrase pipe.
        """
        value = self.passphrase.get_secret_value() if self.passphrase else ""
        return value.encode() + b"\n"

    def _check_passphrase(self, gpg: gnupg.GPG, fingerprint: str) -> None:
        """Sign a few bytes with the key: gpg must unlock it with the passphrase.

        The passphrase goes to gpg through a pipe (python-gnupg writes it on stdin), never
        on the command line. Only a failure to unlock is refused here: a key that cannot
        sign (a subkeys-only export, an expired primary) may still decrypt, which the
        restore then proves on the backup itself.
        """
        secret = self.passphrase.get_secret_value() if self.passphrase else ""
        if any(c in secret for c in "\r\n\x00"):
            raise InvalidInputError(
                "passphrase", "contains a line break or NUL, which gpg cannot read from a pipe",
                fix="set the passphrase field to the key's passphrase without line breaks",
            )
        result = gpg.sign(b"veza-ops passphrase check", keyid=fingerprint, detach=True,
                          passphrase=secret or None,
                          extra_args=None if secret else ["--pinentry-mode", "error"])
        if result.returncode == 0 and result.fingerprint:
            return
        codes = {
            int(line.split()[-1]) & 0xFFFF
            for line in str(result.stderr).splitlines()
            if line.startswith("[GNUPG:] FAILURE") and line.split()[-1].isdigit()
        }
        if result.status == "bad passphrase" or codes & _PASSPHRASE_ERRORS:
            raise InvalidInputError(
                "passphrase",
                f"does not unlock private key {fingerprint}",
                fix="set the passphrase field of the GpgDecryptionKey block to the key's "
                "passphrase",
            )

    @contextlib.contextmanager
    def keyring(self) -> Iterator[Keyring]:
        """Check the private key and import it into a temporary GNUPGHOME.

        Yields:
            The keyring and the key's primary fingerprint(s).

        Raises:
            InvalidInputError: missing key, a public key only, no decryption subkey, an
                import gpg refused, or a wrong passphrase. Messages never quote the key.
        """
        armored = self.private_key.get_secret_value().strip()
        fix = "paste the output of `gpg --armor --export-secret-keys FINGERPRINT`"
        if not armored:
            raise InvalidInputError("private_key", "is empty", fix=fix)
        with temp_gnupghome() as home:
            gpg = open_gpg(home)
            keys = scan_armored(gpg, armored, field_name="private_key", fix=fix)
            if not all(k.secret for k in keys):
                raise InvalidInputError(
                    "private_key", "holds a public key, which cannot decrypt", fix=fix
                )
            for key in keys:
                if not key.encryption_keys:
                    raise InvalidInputError(
                        "private_key",
                        f"key {key.fingerprint} has no encryption subkey, so it decrypts nothing",
                        fix="export the key whose public half backups are encrypted to "
                        "(the recipient of the GpgEncryption block)",
                    )
            import_armored(gpg, armored, keys, field_name="private_key", fix=fix)
            for key in keys:
                self._check_passphrase(gpg, key.fingerprint)
            yield Keyring(home, [k.fingerprint for k in keys])
