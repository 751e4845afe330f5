"""Fetch a backup: key check, streamed download, size and SHA-256 check, decryption to a spool.

A legacy archive (no manifest, no checksum) is checked by gpg's own integrity check instead:
its exit status and its ``DECRYPTION_OKAY`` status line (the MDC or AEAD tag verified), then
``pg_restore --list`` must read the archive's table of contents.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from blocks.gpg import GpgDecryptionKey, Keyring
from errors import IntegrityError, InvalidInputError
from errors.s3 import s3_errors
from tasks.logs import ModuleLogger
from tasks.recovery.manifest import Manifest
from tasks.recovery.pipeline import Pipeline, Stage, StageResult
from tasks.recovery.progress import ProgressFn
from tasks.recovery.workdirs import (
    FreeSpaceFn,
    check_free_space,
    clean_stale,
    free_bytes,
    make_workdir,
)

logger = ModuleLogger(__name__)  # run logger inside a run: lines reach the UI
DOWNLOAD_CHUNK = 1 << 20


def check_key_matches(keyring: Keyring, manifest: Manifest) -> None:
    """Fail before downloading when the private key is not one the backup was encrypted to.

    Args:
        keyring: the imported decryption key.
        manifest: the backup's manifest.

    Raises:
        InvalidInputError: naming the decryption block and the expected fingerprints.
    """
    if manifest.legacy:
        return  # recipients unknown: gpg says "No secret key" if it is not one of them
    if not set(keyring.fingerprints) & set(manifest.recipients):
        raise InvalidInputError(
            "decryption_block",
            f"its key {', '.join(keyring.fingerprints)} is not a recipient of backup "
            f"{manifest.backup_id} (encrypted to {', '.join(manifest.recipients)})",
            fix="use the GpgDecryptionKey block holding one of those private keys",
        )


@contextlib.contextmanager
def _passphrase_fd(decryption: GpgDecryptionKey) -> Iterator[int]:
    read_fd, write_fd = os.pipe()
    try:
        os.write(write_fd, decryption.passphrase_bytes())
    finally:
        os.close(write_fd)
    try:
        yield read_fd
    finally:
        os.close(read_fd)


@contextlib.contextmanager
def fetched_dump(
    client: Any,
    *,
    bucket: str,
    manifest: Manifest,
    decryption: GpgDecryptionKey,
    keyring: Keyring,
    tmp_root: Path | None = None,
    free_space: FreeSpaceFn = free_bytes,
    on_progress: ProgressFn | None = None,
) -> Iterator[Path]:
    """Download, verify and decrypt a backup's dump (see :func:`fetched_object`).

    The temp dir's free space is checked against the manifest's plain size first (a legacy
    archive's plain size is unknown: against its stored size). A legacy archive is checked
    by gpg and then by ``pg_restore --list`` (:func:`check_archive`).

    Yields:
        Path of the plain pg_dump archive.
    """
    legacy = manifest.legacy
    with fetched_object(
        client, bucket=bucket, backup_id=manifest.backup_id, key=manifest.data_key,
        size_bytes=manifest.size_bytes, sha256=None if legacy else manifest.sha256,
        decryption=decryption, keyring=keyring,
        plain_bytes=manifest.size_bytes if legacy else manifest.plain_bytes,
        tmp_root=tmp_root, free_space=free_space, compressed=not legacy,
        on_progress=on_progress,
    ) as path:
        if legacy:
            check_archive(path, manifest)
        yield path


def check_archive(path: Path, manifest: Manifest) -> None:
    """``pg_restore --list``: the archive's table of contents must be readable.

    Args:
        path: the decrypted archive.
        manifest: its (legacy) manifest, for messages.

    Raises:
        IntegrityError: pg_restore cannot read it (nothing was restored).
    """
    with Pipeline([Stage("pg_restore --list", ["pg_restore", "--list", str(path)])],
                  stdout=subprocess.DEVNULL) as pipe:
        result = pipe.wait(timeout=600)[0]
    if not result.ok:
        raise IntegrityError(
            f"legacy archive {manifest.data_key}: pg_restore --list cannot read it "
            f"({result.describe()}: {result.stderr_tail.strip()[-200:]})",
            hint="nothing was restored; restore another archive",
        )
    logger.info("legacy archive %s: gpg integrity check and pg_restore --list passed",
                manifest.backup_id)


def _check_gpg_integrity(results: list[StageResult], backup_id: str, key: str) -> None:
    gpg = results[0]
    if not gpg.ok or "[GNUPG:] DECRYPTION_OKAY" not in gpg.stderr_tail:
        said = [line for line in gpg.stderr_tail.splitlines() if not line.startswith("[GNUPG:]")]
        raise IntegrityError(
            f"legacy archive {backup_id} ({key}): gpg's integrity check failed "
            f"({gpg.describe()}; {' / '.join(said[-2:]) or 'no DECRYPTION_OKAY'})",
            hint="the archive is damaged, altered or not encrypted to this key; nothing was "
            "restored; restore another archive",
        )


@contextlib.contextmanager
def fetched_object(
    client: Any,
    *,
    bucket: str,
    backup_id: str,
    key: str,
    size_bytes: int,
    sha256: str | None,
    decryption: GpgDecryptionKey,
    keyring: Keyring,
    name: str = "dump.pgc",
    plain_bytes: int | None = None,
    tmp_root: Path | None = None,
    free_space: FreeSpaceFn = free_bytes,
    compressed: bool = True,
    on_progress: ProgressFn | None = None,
) -> Iterator[Path]:
    """Download, verify and decrypt one object of a backup into a private temp dir.

    The object is streamed (never held in memory) through SHA-256 and ``gpg --decrypt``
    and ``zstd -d`` into ``name`` in a fresh 0700 directory (pg_restore -j needs a
    seekable file). Size and checksum are compared with the manifest before the path is
    handed out, so nothing is restored from a corrupted or altered object.

    Args:
        client: boto3 S3 client.
        bucket: the bucket.
        backup_id: the backup (for messages).
        key: the object's key.
        size_bytes: its size according to the manifest (a legacy archive: its listing).
        sha256: its SHA-256 according to the manifest; None for a legacy archive, whose
            integrity then rests on gpg (exit status and ``DECRYPTION_OKAY``).
        decryption: the private-key block (for the passphrase).
        keyring: its imported keyring.
        name: file name of the plain result in the temp dir.
        plain_bytes: its plain size (manifest): the free space is checked before download.
        tmp_root: where the private temp dir goes (default: the system's); our dirs left
            there by killed runs are removed first (they may hold plaintext).
        free_space: how free space is measured (injected by tests).
        compressed: zstd-compressed under the encryption (not a legacy archive).
        on_progress: called with (bytes downloaded, ``size_bytes``) after each chunk.

    Yields:
        Path of the plain (decrypted, decompressed) file, removed afterwards.

    Raises:
        IntegrityError: size or SHA-256 differs from the manifest, or gpg's integrity
            check of a legacy archive failed.
        DiskFullError: the plain file would not fit (nothing downloaded).
        PipelineError: gpg or zstd failed.
    """
    with s3_errors(action="read backup", bucket=bucket, key=key):
        head = client.head_object(Bucket=bucket, Key=key)
    if int(head["ContentLength"]) != size_bytes:
        raise IntegrityError(
            f"backup {backup_id}: s3://{bucket}/{key} has {head['ContentLength']} bytes, "
            f"the manifest says {size_bytes}",
            hint="the object or its manifest was altered; nothing was restored; use another backup",
        )
    root = tmp_root or Path(tempfile.gettempdir())
    clean_stale(root)
    if plain_bytes is not None:
        check_free_space(root, plain_bytes, free_space=free_space)
    workdir = make_workdir(root)
    try:
        path = workdir / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        digest, size = hashlib.sha256(), 0
        with os.fdopen(fd, "wb") as out, _passphrase_fd(decryption) as pass_fd:
            status = ["--status-fd", "2"] if sha256 is None else []
            stages = [
                Stage(
                    "gpg",
                    ["gpg", "--batch", "--no-tty", "--quiet", "--homedir", str(keyring.home),
                     "--pinentry-mode", "loopback", "--passphrase-fd", str(pass_fd), *status,
                     "--decrypt", "--output", "-"],
                    pass_fds=(pass_fd,),
                ),
            ]
            if compressed:
                stages.append(Stage("zstd", ["zstd", "-d", "-q", "-c"]))
            with Pipeline(stages, stdin=subprocess.PIPE, stdout=out) as pipe:
                with s3_errors(action="download backup", bucket=bucket, key=key):
                    body = client.get_object(Bucket=bucket, Key=key)["Body"]
                    for chunk in body.iter_chunks(DOWNLOAD_CHUNK):
                        digest.update(chunk)
                        size += len(chunk)
                        if on_progress is not None:
                            on_progress(size, size_bytes)
                        try:
                            pipe.input.write(chunk)
                        except BrokenPipeError:
                            break  # gpg stopped; its exit status says why
                with contextlib.suppress(BrokenPipeError):
                    pipe.input.close()
                results = pipe.wait(timeout=3600)
                if sha256 is None:
                    _check_gpg_integrity(results, backup_id, key)
                elif size != size_bytes or digest.hexdigest() != sha256:
                    raise IntegrityError(
                        f"backup {backup_id}: SHA-256 of s3://{bucket}/{key} is "
                        f"{digest.hexdigest()} ({size} bytes); the manifest says "
                        f"{sha256} ({size_bytes} bytes)",
                        hint="the object or its manifest was altered; nothing was restored; "
                        "use another backup",
                    )
                del results
                pipe.check()
        logger.info("backup %s downloaded and verified (%d bytes)", backup_id, size)
        yield path
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
