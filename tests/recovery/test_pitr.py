"""Point-in-time recovery on real parts: PG15 archiving through pgBackRest 2.45 into moto (TLS).

Every wait is a condition with a deadline: WAL archived (``pg_stat_archiver``), the restored
server promoted (``pg_is_in_recovery()``).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr

from errors import AuthenticationError, NotFoundError, UnreachableError
from sandbox.procs import free_port, wait_until
from tasks.recovery.pitr import commands
from tasks.recovery.pitr.info import pitr_window
from tasks.recovery.pitr.restore import restore_to_time
from tests.fixtures.pitr import (
    PitrCluster,
    RunningPostgres,
    make_repo,
    switch_and_wait_archived,
)


def _insert(server: RunningPostgres, phase: str, count: int) -> None:
    with server.connect() as conn:
        conn.execute(
            "INSERT INTO marks (phase, n) SELECT %s, g FROM generate_series(1, %s) g",
            (phase, count),
        )


def _server_now(server: RunningPostgres) -> datetime:
    with server.connect() as conn:
        row = conn.execute("SELECT clock_timestamp()").fetchone()
    assert row
    return row[0]  # type: ignore[no-any-return]


@contextmanager
def cmdlines_sampled() -> Iterator[list[str]]:
    """Sample every process's command line in a thread while the block runs."""
    seen: list[str] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            for proc in Path("/proc").iterdir():
                if proc.name.isdigit():
                    try:
                        raw = (proc / "cmdline").read_bytes()
                    except OSError:
                        continue
                    if b"pgbackrest" in raw:
                        seen.append(raw.replace(b"\0", b" ").decode(errors="replace"))
            done.wait(0.02)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        done.set()
        thread.join(timeout=10)


def test_restore_to_a_time_keeps_rows_before_and_drops_rows_after(
    pitr_cluster: PitrCluster,
) -> None:
    repo, host, server = pitr_cluster.repo, pitr_cluster.host, pitr_cluster.server
    secrets = repo.secrets()
    commands.check_bucket(repo)
    commands.stanza_create(repo, host)
    commands.check(repo, host)
    with server.connect() as conn:
        conn.execute("CREATE TABLE marks (phase text NOT NULL, n int NOT NULL)")
    _insert(server, "before-backup", 100)
    with cmdlines_sampled() as cmdlines:
        full = commands.backup(repo, host, "full", timeout_s=600)
    assert full.type == "full"
    assert any("backup" in line for line in cmdlines), "no pgbackrest process was seen"
    # pgBackRest keeps whole-second stop times and restores only from a backup that stopped
    # before the target: the target must lie past the second the full's stop was recorded in.
    wait_until(lambda: _server_now(server) > full.stopped_at + timedelta(seconds=1),
               timeout=30, what="the second after the full backup's recorded stop",
               interval=0.1)
    _insert(server, "before-target", 50)
    target = _server_now(server)
    _insert(server, "after-target", 30)
    switch_and_wait_archived(server)

    incr = commands.backup(repo, host, "incr", timeout_s=600)
    assert (incr.type, incr.prior) == ("incr", full.label)
    info = commands.info(repo, host)
    assert [b.type for b in info.backups] == ["full", "incr"]
    assert info.cipher == "aes-256-cbc"
    window = pitr_window(info)
    assert window is not None and window.start == full.started_at and window.end_wal

    restored_dir = pitr_cluster.scratch_dir("restored")
    restore_to_time(repo, host, restored_dir, target, timeout_s=600)
    restored = pitr_cluster.start_restored(restored_dir)
    try:
        def promoted() -> bool:
            with restored.connect() as conn:
                row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
            return row is not None and row[0] is False

        wait_until(promoted, timeout=120, what="the restored cluster to promote", interval=0.2)
        with restored.connect() as conn:
            counts = dict(conn.execute("SELECT phase, count(*) FROM marks GROUP BY phase"))
        assert counts == {"before-backup": 100, "before-target": 50}
    finally:
        restored.stop()

    # no secret on any command line seen, nor in pgBackRest's or PostgreSQL's logs
    logs = [p for p in pitr_cluster.root.rglob("*.log") if p.is_file()]
    assert logs
    texts = cmdlines + [p.read_text(errors="replace") for p in logs]
    for secret in secrets:
        assert not any(secret in text for text in texts)


def test_a_wrong_cipher_passphrase_is_refused_clearly(pitr_cluster: PitrCluster) -> None:
    repo, host = pitr_cluster.repo, pitr_cluster.host
    commands.stanza_create(repo, host)
    wrong = "wrong-passphrase-" + uuid.uuid4().hex
    bad = repo.model_copy(update={"cipher_passphrase": SecretStr(wrong)})
    for attempt in (lambda: commands.info(bad, host),
                    lambda: commands.backup(bad, host, "full", timeout_s=300)):
        with pytest.raises(AuthenticationError) as caught:
            attempt()
        text = str(caught.value)
        assert "cipher passphrase" in text and "cipher_passphrase" in text
        assert wrong not in text and repo.cipher_passphrase.get_secret_value() not in text
        assert text.isprintable()
    assert commands.info(repo, host).backups == []  # nothing was written


def test_an_unreachable_or_missing_bucket_is_refused_before_pgbackrest_runs(
    s3_server, s3_tls_front, tmp_path: Path
) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_bytes(Path(s3_tls_front.ca_file).read_bytes())
    closed = make_repo(s3_server, s3_tls_front, "no-such-bucket", ca, "p" * 24, port=free_port())
    with pytest.raises(UnreachableError):
        commands.check_bucket(closed)
    missing = make_repo(s3_server, s3_tls_front, f"missing-{uuid.uuid4().hex[:8]}", ca, "p" * 24)
    with pytest.raises(NotFoundError) as caught:
        commands.check_bucket(missing)
    assert "missing-" in str(caught.value)


def test_pitr_backup_flow_checks_then_backs_up_and_an_unreachable_bucket_stops_it_first(
    prefect_harness: None, pitr_cluster: PitrCluster, s3_client
) -> None:
    from flows.pitr import pitr_backup

    name = f"pitr-{uuid.uuid4().hex[:8]}"
    pitr_cluster.repo.save(name)
    # an incr without any full becomes a full (pgBackRest's rule), and the flow says so
    taken = pitr_backup(name, kind="incr", host=pitr_cluster.host)
    assert taken.type == "full"
    # The cluster's files went up bundled: a handful of objects, not one per file.
    prefix = f"{pitr_cluster.repo.path.strip('/')}/backup/{pitr_cluster.repo.stanza}/{taken.label}/"
    stored = [o["Key"] for page in s3_client.get_paginator("list_objects_v2").paginate(
        Bucket=pitr_cluster.bucket, Prefix=prefix) for o in page.get("Contents", [])]
    files = sum(1 for f in Path(pitr_cluster.host.data_directory).rglob("*") if f.is_file())
    assert any("/bundle/" in key for key in stored), stored[:5]
    assert 0 < len(stored) < files / 10, (len(stored), files)

    unreachable = pitr_cluster.repo.model_copy(update={"port": free_port(), "path": "/elsewhere"})
    unreachable.save(f"{name}-down")
    with pytest.raises(UnreachableError):
        pitr_backup(f"{name}-down", kind="full", host=pitr_cluster.host)
    listed = s3_client.list_objects_v2(Bucket=pitr_cluster.bucket, Prefix="elsewhere/")
    assert listed.get("KeyCount", 0) == 0
