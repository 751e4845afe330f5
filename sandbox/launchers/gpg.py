"""Generate throwaway GPG key pairs (ed25519 + cv25519) for tests and the demo."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sandbox.procs import SandboxError

TEST_S2K_COUNT = 65536
"""Iterations of the passphrase's key derivation in generated keys: gpg's minimum."""


@dataclass(frozen=True)
class TestKey:
    """A generated key pair, exported armored."""

    fingerprint: str
    public_armored: str
    private_armored: str
    passphrase: str


def _gpg(home: Path, args: list[str], *, stdin: str = "") -> str:
    proc = subprocess.run(
        ["gpg", "--batch", "--homedir", str(home), "--pinentry-mode", "loopback", *args],
        input=stdin.encode(),
        capture_output=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SandboxError(f"gpg {args[0]} failed: {proc.stderr.decode(errors='replace')}")
    return proc.stdout.decode()


def generate_key(
    name: str = "veza-backup",
    *,
    passphrase: str = "",
    expired: bool = False,
) -> TestKey:
    """Generate a key pair in a temporary keyring and export it.

    Args:
        name: the user id's name part.
        passphrase: protects the private key ("" for none).
        expired: make a key that expired in 2020 (for the bad-input tests).

    Returns:
        The fingerprint and the armored public and private keys.
    """
    home = Path(tempfile.mkdtemp(prefix="veza-gpg-"))
    # The passphrase's key derivation at the lowest count gpg allows (65536), here and in the
    # export: gpg's default for an exported key (65011712) makes every later use of a
    # protected test key cost ~1.1 s of gpg-agent CPU (its import converts the protection),
    # and keys are unlocked in every restore test. Only test keys: a real key keeps whatever
    # its owner chose.
    (home / "gpg-agent.conf").write_text(f"s2k-count {TEST_S2K_COUNT}\n")
    try:
        fake = ["--faked-system-time", "20200101T000000"] if expired else []
        expiry = "1d" if expired else "never"
        _gpg(
            home,
            [*fake, "--passphrase-fd", "0", "--quick-gen-key",
             f"{name} <{name}@veza.invalid>", "future-default", "default", expiry],
            stdin=passphrase,
        )
        listing = _gpg(home, ["--with-colons", "--list-keys"])
        fpr = next(
            line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:")
        )
        public = _gpg(home, ["--armor", "--export", fpr])
        private = _gpg(
            home,
            ["--passphrase-fd", "0", "--s2k-count", str(TEST_S2K_COUNT), "--armor",
             "--export-secret-keys", fpr],
            stdin=passphrase,
        )
        return TestKey(fpr, public, private, passphrase)
    finally:
        subprocess.run(
            ["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"],
            capture_output=True,
            check=False,
        )
        shutil.rmtree(home, ignore_errors=True)
