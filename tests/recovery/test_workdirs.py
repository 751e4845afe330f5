"""Restore temp dirs: a full disk is reported as such; a killed run's plaintext is cleaned."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from errors import DiskFullError
from tasks.recovery.backup import run_backup
from tasks.recovery.fetching import fetched_dump
from tasks.recovery.workdirs import PREFIX, check_free_space, clean_stale, needed_bytes

MIB = 1024 * 1024


def test_free_space_is_checked_against_the_plain_size():
    check_free_space(Path("/spool"), 100 * MIB, free_space=lambda _: needed_bytes(100 * MIB))
    with pytest.raises(DiskFullError) as caught:
        check_free_space(Path("/spool"), 100 * MIB, free_space=lambda _: 50 * MIB)
    text = str(caught.value)
    assert "/spool" in text and "50 MiB free" in text and "174 MiB needed" in text
    assert "backup itself is fine" in (caught.value.hint or "")


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_killed_runs_dir_is_removed_a_live_ones_kept(tmp_path):
    stale = tmp_path / f"{PREFIX}{_dead_pid()}-abc"
    stale.mkdir(mode=0o700)
    (stale / "dump.pgc").write_bytes(b"PGDMP plaintext")
    live = tmp_path / f"{PREFIX}{os.getpid()}-def"
    live.mkdir(mode=0o700)
    other = tmp_path / "veza-restore-notapid"
    other.mkdir()
    assert clean_stale(tmp_path) == [stale]
    assert not stale.exists() and live.exists() and other.exists()


def test_restore_download_refuses_a_full_disk_and_cleans_leftovers(
    seeded_db, store_block, encryption_block, decryption_block, s3_client, tmp_path
):
    m = run_backup(seeded_db, store_block, encryption_block).manifest
    leftover = tmp_path / f"{PREFIX}{_dead_pid()}-xyz"
    leftover.mkdir(mode=0o700)
    (leftover / "dump.pgc").write_bytes(b"PGDMP plaintext of a killed restore")
    client = store_block.get_client()
    gets: list[str] = []
    client.meta.events.register("before-call.s3.GetObject", lambda **_: gets.append("get"))
    with decryption_block.keyring() as keyring, pytest.raises(DiskFullError) as caught:
        with fetched_dump(client, bucket=store_block.bucket, manifest=m,
                          decryption=decryption_block, keyring=keyring, tmp_root=tmp_path,
                          free_space=lambda _: MIB):
            pass
    assert str(tmp_path) in str(caught.value) and "1 MiB free" in str(caught.value)
    assert gets == [], "nothing was downloaded"
    assert list(tmp_path.iterdir()) == [], "the killed run's plaintext is gone, no new dir"
    with decryption_block.keyring() as keyring, fetched_dump(
        client, bucket=store_block.bucket, manifest=m, decryption=decryption_block,
        keyring=keyring, tmp_root=tmp_path,
    ) as path:  # with room, the same call works
        assert path.parent.parent == tmp_path and path.stat().st_size == m.plain_bytes
