"""GPG blocks: recipients' public keys (backup hosts) and the private key (restore hosts).

Each hands out a ready temporary GNUPGHOME (private 0700 directory, removed afterwards)
with its keys imported, after checking them: a recipient key must be an unexpired public
key able to encrypt; the decryption key must be a private key that its passphrase unlocks.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from errors import InvalidInputError


@dataclass
class KeyInfo:
    """What gpg says about one key of an armored block."""

    fingerprint: str
    secret: bool
    expires: datetime | None
    invalid: str = ""  # "e" expired, "r" revoked (gpg validity letters)
    encrypt_subkeys: list[bool] = field(default_factory=list)  # usable encryption (sub)keys

    @property
    def expired(self) -> bool:
        """True when the primary key has expired."""
        now = datetime.now(UTC)
        return self.invalid == "e" or (self.expires is not None and self.expires <= now)


@dataclass(frozen=True)
class Keyring:
    """A temporary GNUPGHOME with keys imported."""

    home: Path
    fingerprints: list[str]


def _epoch(value: str) -> datetime | None:
    return datetime.fromtimestamp(int(value), UTC) if value.strip() else None


def parse_colons(listing: str) -> list[KeyInfo]:
    """Parse ``gpg --with-colons`` key records.

    Args:
        listing: gpg's colon output.

    Returns:
        One KeyInfo per primary key.
    """
    keys: list[KeyInfo] = []
    now = datetime.now(UTC)
    want_fpr = False
    for line in listing.splitlines():
        rec = line.split(":")
        kind = rec[0]
        if kind in ("pub", "sec"):
            validity = rec[1] if rec[1] in ("e", "r") else ""
            keys.append(KeyInfo("", kind == "sec", _epoch(rec[6]), validity))
            want_fpr = True
            caps = rec[11] if len(rec) > 11 else ""
            if "e" in caps:
                keys[-1].encrypt_subkeys.append(rec[1] not in ("e", "r"))
        elif kind in ("sub", "ssb") and keys:
            caps = rec[11] if len(rec) > 11 else ""
            if "e" in caps:
                exp = _epoch(rec[6])
                keys[-1].encrypt_subkeys.append(
                    rec[1] not in ("e", "r") and (exp is None or exp > now)
                )
            want_fpr = False
        elif kind == "fpr" and want_fpr and keys:
            keys[-1].fingerprint = rec[9]
            want_fpr = False
    return keys


def _gpg(home: Path, args: list[str], *, data: bytes = b"", pass_fds: tuple[int, ...] = ()) -> (
    subprocess.CompletedProcess[bytes]
):
    return subprocess.run(
        ["gpg", "--batch", "--no-tty", "--homedir", str(home), *args],
        input=data,
        capture_output=True,
        check=False,
        pass_fds=pass_fds,
    )


@contextlib.contextmanager
def temp_gnupghome() -> Iterator[Path]:
    """A private (0700) temporary GNUPGHOME, its agent stopped and files removed afterwards.

    Yields:
        The directory.
    """
    home = Path(tempfile.mkdtemp(prefix="veza-gnupg-"))
    os.chmod(home, 0o700)
    try:
        yield home
    finally:
        subprocess.run(
            ["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"],
            capture_output=True,
            check=False,
        )
        shutil.rmtree(home, ignore_errors=True)


def inspect_armored(home: Path, armored: str) -> list[KeyInfo]:
    """List the keys in an armored block without importing them.

    Args:
        home: a scratch GNUPGHOME.
        armored: the armored text.

    Returns:
        The keys found (empty when the text holds no OpenPGP key).
    """
    proc = _gpg(
        home,
        ["--with-colons", "--import-options", "show-only", "--import"],
        data=armored.encode(),
    )
    return parse_colons(proc.stdout.decode(errors="replace"))


def check_recipient(home: Path, armored: str, *, field_name: str) -> list[str]:
    """Check that an armored block holds only usable public keys.

    Args:
        home: a scratch GNUPGHOME.
        armored: the armored public key(s).
        field_name: the block field, for errors.

    Returns:
        The primary fingerprints.

    Raises:
        InvalidInputError: not a key, a private key, expired or unable to encrypt.
    """
    keys = inspect_armored(home, armored)
    if not keys:
        raise InvalidInputError(
            field_name,
            "is not an armored OpenPGP public key",
            fix="paste the output of `gpg --armor --export FINGERPRINT`",
        )
    for key in keys:
        if key.secret:
            raise InvalidInputError(
                field_name,
                f"holds a PRIVATE key ({key.fingerprint}); backup hosts must only get public keys",
                fix="paste `gpg --armor --export FINGERPRINT` (not --export-secret-keys) and "
                "keep the private key in a GpgDecryptionKey block on the restore host",
            )
        if key.expired:
            when = f" on {key.expires:%Y-%m-%d}" if key.expires else ""
            raise InvalidInputError(
                field_name,
                f"key {key.fingerprint} expired{when}",
                fix="extend it (`gpg --quick-set-expire FINGERPRINT 1y`) and re-export, "
                "or register a new recipient key",
            )
        if not any(key.encrypt_subkeys):
            raise InvalidInputError(
                field_name,
                f"key {key.fingerprint} has no valid encryption subkey",
                fix="add one (`gpg --quick-add-key FINGERPRINT cv25519 encr`) and re-export",
            )
    return [k.fingerprint for k in keys]


class GpgEncryption(Block):
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

        Yields:
            The keyring and the recipients' fingerprints.

        Raises:
            InvalidInputError: when a recipient key is missing or unusable.
        """
        if not self.recipients:
            raise InvalidInputError(
                "recipients", "no recipient key", fix="add at least one armored public key"
            )
        with temp_gnupghome() as home:
            fingerprints: list[str] = []
            for i, armored in enumerate(self.recipients):
                fingerprints += check_recipient(home, armored, field_name=f"recipients[{i}]")
                _gpg(home, ["--import"], data=armored.encode())
            yield Keyring(home, fingerprints)


class GpgDecryptionKey(Block):
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

    def _check_passphrase(self, home: Path, fingerprint: str) -> None:
        read_fd, write_fd = os.pipe()
        try:
            os.write(write_fd, self.passphrase_bytes())
            os.close(write_fd)
            write_fd = -1
            proc = _gpg(
                home,
                ["--pinentry-mode", "loopback", "--passphrase-fd", str(read_fd),
                 "--local-user", fingerprint, "--sign", "--output", "-"],
                data=b"passphrase check",
                pass_fds=(read_fd,),
            )
        finally:
            os.close(read_fd)
            if write_fd >= 0:
                os.close(write_fd)
        err = proc.stderr.decode(errors="replace").lower()
        if proc.returncode != 0 and ("bad passphrase" in err or "no passphrase" in err):
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
            InvalidInputError: missing key, a public key only, or a wrong passphrase.
        """
        armored = self.private_key.get_secret_value().strip()
        fix = "paste the output of `gpg --armor --export-secret-keys FINGERPRINT`"
        if not armored:
            raise InvalidInputError("private_key", "is empty", fix=fix)
        with temp_gnupghome() as home:
            keys = inspect_armored(home, armored)
            if not keys:
                raise InvalidInputError("private_key", "is not an armored OpenPGP key", fix=fix)
            if not all(k.secret for k in keys):
                raise InvalidInputError(
                    "private_key", "holds a public key, which cannot decrypt", fix=fix
                )
            proc = _gpg(home, ["--import"], data=armored.encode())
            if proc.returncode != 0:
                raise InvalidInputError("private_key", "gpg could not import it", fix=fix)
            for key in keys:
                self._check_passphrase(home, key.fingerprint)
            yield Keyring(home, [k.fingerprint for k in keys])
