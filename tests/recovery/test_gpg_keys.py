"""GPG key checks of the GpgEncryption / GpgDecryptionKey blocks, with real gpg keys."""

from __future__ import annotations

import logging
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from blocks.gpg import GpgDecryptionKey, GpgEncryption, open_gpg
from errors import InvalidInputError
from sandbox.launchers.gpg import generate_key

PASSPHRASE = "keys-test-passphrase-5d0b"


class KeyFactory:
    """Makes odd keys in one scratch keyring (public and private halves exported armored)."""

    def __init__(self, home: Path) -> None:
        self.home = home

    def gpg(self, *args: str, faked: str | None = None) -> str:
        fake = ["--faked-system-time", faked] if faked else []
        proc = subprocess.run(
            ["gpg", "--batch", "--homedir", str(self.home), "--pinentry-mode", "loopback",
             "--passphrase", "", *fake, *args],
            capture_output=True, check=False,
        )
        assert proc.returncode == 0, proc.stderr.decode(errors="replace")
        return proc.stdout.decode()

    def fingerprint(self, uid: str) -> str:
        listing = self.gpg("--with-colons", "--list-keys", uid)
        return next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))

    def public(self, uid: str) -> str:
        return self.gpg("--armor", "--export", uid)

    def private(self, uid: str) -> str:
        return self.gpg("--armor", "--export-secret-keys", uid)

    def revoked(self) -> str:
        self.gpg("--quick-gen-key", "revoked <revoked@veza.invalid>", "future-default", "default",
                 "never")
        fpr = self.fingerprint("revoked@veza.invalid")
        certificate = (self.home / "openpgp-revocs.d" / f"{fpr}.rev").read_text()
        # gpg prefixes the armor line with ':' so the certificate is not imported by accident
        revocation = self.home / "revocation.asc"
        revocation.write_text(certificate.replace(":-----BEGIN", "-----BEGIN"))
        self.gpg("--import", str(revocation))
        return self.public("revoked@veza.invalid")

    def sign_only(self) -> str:
        email = f"signer-{uuid.uuid4().hex[:8]}@veza.invalid"
        self.gpg("--quick-gen-key", f"signer <{email}>", "ed25519", "sign", "never")
        return email

    def expired_subkey(self) -> str:
        """A valid primary (sign only) whose only encryption subkey expired in 2020."""
        when = "20200101T000000"
        self.gpg("--quick-gen-key", "oldsub <oldsub@veza.invalid>", "ed25519", "sign", "never",
                 faked=when)
        fpr = self.fingerprint("oldsub@veza.invalid")
        self.gpg("--quick-add-key", fpr, "cv25519", "encr", "1d", faked=when)
        return self.public("oldsub@veza.invalid")


@pytest.fixture(scope="module")
def keys() -> Iterator[KeyFactory]:
    home = Path(tempfile.mkdtemp(prefix="veza-test-keys-"))
    home.chmod(0o700)
    yield KeyFactory(home)
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"], check=False)
    subprocess.run(["rm", "-rf", str(home)], check=False)


@pytest.fixture(scope="module")
def good():
    return generate_key("veza-good", passphrase=PASSPHRASE)


def refused(block: GpgEncryption | GpgDecryptionKey) -> InvalidInputError:
    with pytest.raises(InvalidInputError) as caught, block.keyring():
        pass
    return caught.value


# --- recipients (backup hosts) ------------------------------------------------------


def test_a_good_recipient_is_imported_and_usable(good):
    with GpgEncryption(recipients=[good.public_armored]).keyring() as keyring:
        assert keyring.fingerprints == [good.fingerprint]
        gpg = open_gpg(keyring.home)
        encrypted = gpg.encrypt(b"hello", [good.fingerprint], always_trust=True, armor=False)
        assert encrypted.ok and encrypted.returncode == 0
        assert gpg.list_keys(secret=True) == []  # a backup host holds no private key


def test_a_revoked_recipient_is_refused(good, keys):
    error = refused(GpgEncryption(recipients=[good.public_armored, keys.revoked()]))
    assert error.field == "recipients[1]" and "is revoked" in error.problem
    assert "current public key" in error.fix


def test_an_expired_recipient_is_refused():
    error = refused(GpgEncryption(recipients=[generate_key("old", expired=True).public_armored]))
    assert error.field == "recipients[0]" and "expired on 2020-01-02" in error.problem
    assert "--quick-set-expire" in error.fix


def test_a_sign_only_recipient_is_refused(keys):
    error = refused(GpgEncryption(recipients=[keys.public(keys.sign_only())]))
    assert error.field == "recipients[0]" and "cannot encrypt" in error.problem
    assert "--quick-add-key" in error.fix


def test_a_recipient_whose_encryption_subkey_expired_is_refused(keys):
    error = refused(GpgEncryption(recipients=[keys.expired_subkey()]))
    assert error.field == "recipients[0]" and "cannot encrypt" in error.problem


@pytest.mark.parametrize("case", ["private", "garbage", "empty"])
def test_not_a_public_key_is_refused(good, case):
    armored = {"private": good.private_armored, "garbage": "hello", "empty": ""}[case]
    error = refused(GpgEncryption(recipients=[armored]))
    assert error.field == "recipients[0]"
    expected = "PRIVATE key" if case == "private" else "not an armored OpenPGP key"
    assert expected in error.problem
    assert PASSPHRASE not in str(error) and good.private_armored.splitlines()[3] not in str(error)


# --- the private key (restore hosts) --------------------------------------------------


def test_a_good_private_key_with_its_passphrase_decrypts(good):
    with GpgEncryption(recipients=[good.public_armored]).keyring() as enc:
        ciphertext = open_gpg(enc.home).encrypt(
            b"backup bytes", [good.fingerprint], always_trust=True, armor=False
        ).data
    block = GpgDecryptionKey(private_key=good.private_armored, passphrase=SecretStr(PASSPHRASE))
    with block.keyring() as keyring:
        assert keyring.fingerprints == [good.fingerprint]
        plain = open_gpg(keyring.home).decrypt(ciphertext, passphrase=PASSPHRASE)
        assert plain.ok and plain.data == b"backup bytes"


@pytest.mark.parametrize("passphrase", ["wrong", None, "two\nlines"])
def test_a_passphrase_that_does_not_unlock_is_refused(good, passphrase):
    secret = SecretStr(passphrase) if passphrase is not None else None
    error = refused(GpgDecryptionKey(private_key=good.private_armored, passphrase=secret))
    assert error.field == "passphrase"
    assert PASSPHRASE not in str(error)
    assert passphrase is None or passphrase not in str(error)


def test_an_unprotected_private_key_needs_no_passphrase():
    key = generate_key("veza-open")
    with GpgDecryptionKey(private_key=SecretStr(key.private_armored)).keyring() as keyring:
        assert keyring.fingerprints == [key.fingerprint]


def test_an_expired_private_key_still_decrypts_old_backups():
    key = generate_key("veza-retired", expired=True)
    with GpgDecryptionKey(private_key=SecretStr(key.private_armored)).keyring() as keyring:
        assert keyring.fingerprints == [key.fingerprint]


def test_a_private_key_without_encryption_subkey_is_refused(keys):
    error = refused(GpgDecryptionKey(private_key=SecretStr(keys.private(keys.sign_only()))))
    assert error.field == "private_key" and "no encryption subkey" in error.problem


def test_a_public_key_is_not_a_private_key(good):
    error = refused(GpgDecryptionKey(private_key=good.public_armored))
    assert error.field == "private_key" and "public key" in error.problem


def test_no_key_material_or_passphrase_reaches_the_logs(good, caplog):
    caplog.set_level(logging.DEBUG)  # python-gnupg logs the keys it imports at DEBUG
    block = GpgDecryptionKey(private_key=good.private_armored, passphrase=SecretStr(PASSPHRASE))
    with block.keyring():
        pass
    refused(GpgDecryptionKey(private_key=good.private_armored, passphrase=SecretStr("wrong-one")))
    assert any(r.name == "gnupg" for r in caplog.records)  # it did log, at DEBUG
    body = good.private_armored.splitlines()
    for secret in (PASSPHRASE, "wrong-one", *body[2:-2]):
        assert secret not in caplog.text
