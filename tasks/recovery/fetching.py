"""Fetch a backup: key check, streamed download, size and SHA-256 check, decryption to a spool."""

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
from tasks.recovery.pipeline import Pipeline, Stage
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
) -> Iterator[Path]:
    """Download, verify and decrypt a backup's dump (see :func:`fetched_object`).

    The temp dir's free space is checked against the manifest's plain size first.

    Yields:
        Path of the plain pg_dump archive.
    """
    with fetched_object(
        client, bucket=bucket, backup_id=manifest.backup_id, key=manifest.data_key,
        size_bytes=manifest.size_bytes, sha256=manifest.sha256, decryption=decryption,
        keyring=keyring, plain_bytes=manifest.plain_bytes, tmp_root=tmp_root,
        free_space=free_space,
    ) as path:
        yield path


@contextlib.contextmanager
def fetched_object(
    client: Any,
    *,
    bucket: str,
    backup_id: str,
    key: str,
    size_bytes: int,
    sha256: str,
    decryption: GpgDecryptionKey,
    keyring: Keyring,
    name: str = "dump.pgc",
    plain_bytes: int | None = None,
    tmp_root: Path | None = None,
    free_space: FreeSpaceFn = free_bytes,
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
        size_bytes: its size according to the manifest.
        sha256: its SHA-256 according to the manifest.
        decryption: the private-key block (for the passphrase).
        keyring: its imported keyring.
        name: file name of the plain result in the temp dir.
        plain_bytes: its plain size (manifest): the free space is checked before download.
        tmp_root: where the private temp dir goes (default: the system's); our dirs left
            there by killed runs are removed first (they may hold plaintext).
        free_space: how free space is measured (injected by tests).

    Yields:
        Path of the plain (decrypted, decompressed) file, removed afterwards.

    Raises:
        IntegrityError: size or SHA-256 differs from the manifest.
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
            stages = [
                Stage(
                    "gpg",
                    ["gpg", "--batch", "--no-tty", "--quiet", "--homedir", str(keyring.home),
                     "--pinentry-mode", "loopback", "--passphrase-fd", str(pass_fd),
                     "--decrypt", "--output", "-"],
                    pass_fds=(pass_fd,),
                ),
                Stage("zstd", ["zstd", "-d", "-q", "-c"]),
            ]
            with Pipeline(stages, stdin=subprocess.PIPE, stdout=out) as pipe:
                with s3_errors(action="download backup", bucket=bucket, key=key):
                    body = client.get_object(Bucket=bucket, Key=key)["Body"]
                    for chunk in body.iter_chunks(DOWNLOAD_CHUNK):
                        digest.update(chunk)
                        size += len(chunk)
                        try:
                            pipe.input.write(chunk)
                        except BrokenPipeError:
                            break  # gpg stopped; its exit status says why
                with contextlib.suppress(BrokenPipeError):
                    pipe.input.close()
                results = pipe.wait(timeout=3600)
                if size != size_bytes or digest.hexdigest() != sha256:
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
