"""PITR operations on real parts: one PG15 cluster archiving through pgBackRest into moto.

pitr-expire, the guarded PITR restore, the PITR restore test, ``backups info`` and
pitr-check share the cluster and its repository (``pitr_module_cluster``) and its backups
(a full backup is the costly part): each test uses the newest backup (taking one when run
alone) and asserts on what it wrote itself. pitr-check runs last: it deletes a WAL segment.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest
from pydantic import SecretStr

from blocks.postgres import PostgresDatabase
from errors import ArchiveCheckError, RestoreRefusedError
from flows.pitr import pitr_expire
from flows.pitr_check import pitr_check
from flows.pitr_restore_test import pitr_restore_test_flow
from flows.restore import pitr_restore_flow
from sandbox.procs import free_port, wait_until
from tasks.recovery.pitr import cluster as restored_cluster
from tasks.recovery.pitr import commands
from tasks.recovery.pitr.archive import list_segments, position
from tasks.recovery.pitr.info import PitrBackup
from tasks.recovery.pitr.markers import read_markers, write_marker
from tests.fixtures.pitr import (
    PITR_DB_PASSWORD,
    PitrCluster,
    _moto_client,
    switch_and_wait_archived,
)


def _position(segment: str | None) -> str:
    assert segment
    return segment[8:]  # one timeline here: log and segment numbers order the names


def test_pitr_expire_applies_the_block_retention_and_reports_what_went(
    prefect_harness: None, pitr_module_cluster: PitrCluster
) -> None:
    repo, host = pitr_module_cluster.repo, pitr_module_cluster.host
    first = commands.backup(repo, host, "full", timeout_s=600)
    second = commands.backup(repo, host, "full", timeout_s=600)
    name = f"pitr-expire-{uuid.uuid4().hex[:8]}"

    # the default retention (a 30-day PITR window) keeps both
    repo.save(name)
    kept = pitr_expire(name, host=host)
    assert kept.expired == [] and not kept.wal_expired
    assert {first.label, second.label} <= {b.label for b in kept.kept}

    # keep one full: the older full goes, with the WAL before the kept one; the newest stays
    repo.model_copy(update={"pitr_window_days": None, "retention_full_count": 1}).save(
        name, overwrite=True)
    report = pitr_expire(name, host=host)
    assert [b.label for b in report.expired] == [first.label]
    assert [b.label for b in report.kept] == [second.label]
    assert report.wal_expired
    assert (_position(first.wal_start) < _position(report.oldest_wal_after)
            <= _position(second.wal_start))
    after = commands.info(repo, host)
    assert [b.label for b in after.backups] == [second.label]
    assert after.oldest_wal == report.oldest_wal_after


def database_block(cluster: PitrCluster) -> PostgresDatabase:
    """A PostgresDatabase block on the cluster's ``postgres`` database (TCP, password)."""
    return PostgresDatabase(host="127.0.0.1", port=cluster.server.port, user=cluster.server.user,
                            password=SecretStr(PITR_DB_PASSWORD), dbname="postgres",
                            sslmode="disable")


def _artifacts(flow_run_id: Any, key: str) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        ArtifactFilterKey,
    )

    with get_client(sync_client=True) as client:
        return client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]),
            key=ArtifactFilterKey(any_=[key])))


def newest_backup(cluster: PitrCluster) -> PitrBackup:
    """The repository's newest backup; a full is taken first when there is none (a test run
    alone). The module's tests share backups: a full costs more than anything they check."""
    backups = commands.info(cluster.repo, cluster.host).backups
    if backups:
        return backups[-1]
    return commands.backup(cluster.repo, cluster.host, "full", timeout_s=600)


def _server_now(cluster: PitrCluster) -> datetime:
    with cluster.server.connect() as conn:
        row = conn.execute("SELECT clock_timestamp()").fetchone()
    assert row
    return row[0]  # type: ignore[no-any-return]


def _past(cluster: PitrCluster, full: PitrBackup, *also: datetime) -> datetime:
    """A server time past the second the full's stop was recorded in (pgBackRest restores
    only from a backup that stopped before the target) and past ``also``."""
    floor = max([full.stopped_at + timedelta(seconds=1), *also])
    wait_until(lambda: _server_now(cluster) > floor, timeout=30, what="a later server time",
               interval=0.1)
    return _server_now(cluster)


def test_pitr_restore_refuses_a_busy_directory_or_port_then_recovers_to_the_time(
    prefect_harness: None, pitr_module_cluster: PitrCluster
) -> None:
    cluster = pitr_module_cluster
    repo, host, server = cluster.repo, cluster.host, cluster.server
    name = f"pitr-restore-{uuid.uuid4().hex[:8]}"
    repo.save(name)
    with server.connect() as conn:
        conn.execute("CREATE TABLE restore_marks (phase text NOT NULL)")
    full = newest_backup(cluster)
    with server.connect() as conn:
        conn.execute("INSERT INTO restore_marks SELECT 'before' FROM generate_series(1, 7)")
    target = _past(cluster, full)
    with server.connect() as conn:
        conn.execute("INSERT INTO restore_marks VALUES ('after')")
    switch_and_wait_archived(server)

    busy = cluster.scratch_dir("busy")
    busy.mkdir()
    (busy / "PG_VERSION").write_text("15\n")
    elsewhere = host.model_copy(update={"port": free_port()})
    refusals = [
        (str(busy), free_port(), host, "not empty"),
        (str(cluster.scratch_dir("x")), host.port, host, "live cluster"),
        (str(cluster.scratch_dir("x")), server.port, elsewhere, "is taken"),  # a running one
    ]
    for directory, port, where, why in refusals:
        with pytest.raises(RestoreRefusedError, match=why):
            pitr_restore_flow(name, target_time=target, target_directory=directory, port=port,
                              host=where)
    assert [p.name for p in busy.iterdir()] == ["PG_VERSION"]

    data = cluster.scratch_dir("restored")
    outcome = pitr_restore_flow(name, target_time=target, target_directory=str(data),
                                port=free_port(), host=host)
    try:
        conninfo = server.conninfo().replace(f"port={server.port}", f"port={outcome.port}")
        with psycopg.connect(conninfo, autocommit=True) as conn:
            counts: dict[str, int] = dict(conn.execute(
                "SELECT phase, count(*) FROM restore_marks GROUP BY phase").fetchall())
            in_recovery = conn.execute("SELECT pg_is_in_recovery()").fetchone()
            archive_mode = conn.execute("SHOW archive_mode").fetchone()
        assert counts == {"before": 7}
        assert in_recovery == (False,) and archive_mode == ("off",)
        assert outcome.recovered_to is not None and outcome.recovered_to <= target
        assert outcome.wal_replayed_bytes and outcome.seconds > 0
    finally:
        restored_cluster.stop(host, data)
    assert not (data / "postmaster.pid").exists()


def test_pitr_restore_test_recovers_markers_before_the_target_and_none_after(
    prefect_harness: None, pitr_module_cluster: PitrCluster
) -> None:
    cluster = pitr_module_cluster
    repo, host = cluster.repo, cluster.host
    name = f"pitr-rt-{uuid.uuid4().hex[:8]}"
    repo.save(name)
    db = database_block(cluster)
    db.save(f"{name}-db")
    full = newest_backup(cluster)
    before = write_marker(db, "test")
    target = _past(cluster, full, before.written_at + timedelta(seconds=3))

    state = pitr_restore_test_flow(name, f"{name}-db", host=host, target_time=target,
                                   scratch_root=str(cluster.root), return_state=True)
    report = state.result()
    assert report.passed, report.problems
    assert report.markers_checked >= 2  # ours before the target, the run's own after it
    assert report.recovered_to is not None and report.recovered_to <= target
    assert report.rto_seconds and "btree indexes checked" in report.amcheck
    (artifact,) = _artifacts(state.state_details.flow_run_id, "restore-test-pitr-veza")
    assert "PASSED" in artifact.data and "recovered to" in artifact.data
    # the scratch directory is gone and no server is left on it
    assert not list(cluster.root.glob("veza-pitr-test-*"))
    after = [m for m in read_markers(db, target) if m.written_by == "restore-test"]
    assert after  # the run's own marker, written after the target, in the source only


def test_backups_info_shows_the_pitr_tier_next_to_the_logical_one(
    prefect_harness: None, pitr_module_cluster: PitrCluster, s3_server: Any, capsys: Any
) -> None:
    import json

    from prefect_aws import AwsCredentials

    from blocks.s3 import S3BackupStore
    from veza_ops.cli import main

    cluster = pitr_module_cluster
    repo, host = cluster.repo, cluster.host
    newest_backup(cluster)
    name = f"pitr-info-{uuid.uuid4().hex[:8]}"
    repo.save(name)
    S3BackupStore(
        bucket=cluster.bucket, prefix="logical", endpoint_url=s3_server.endpoint_url,
        region=s3_server.region, credentials=AwsCredentials(
            aws_access_key_id=s3_server.access_key,
            aws_secret_access_key=SecretStr(s3_server.secret_key),
            region_name=s3_server.region),
    ).save(f"{name}-store")
    base = ["backups", "info", "--store-block", f"{name}-store", "--pitr-block", name]

    assert main([*base, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    pitr = doc["pitr"]
    info = commands.info(repo, host)
    assert [b["label"] for b in pitr["backups"]] == [b.label for b in info.backups]
    assert pitr["window_start"] == info.backups[0].started_at.isoformat()
    # the archive may grow between the two looks (archive_timeout is 1 s here)
    assert pitr["newest_wal"] and info.newest_wal and pitr["newest_wal"] <= info.newest_wal
    assert pitr["rpo_seconds"] is not None and pitr["stanza"] == "veza"

    assert main(base) == 0
    text = capsys.readouterr().out
    assert "pitr (pgBackRest) stanza veza" in text and "PITR window" in text
    assert "newest WAL" in text and " (archived " in text and "RPO" in text

    assert main([*base[:-1], f"{name}-missing"]) == 0
    assert "pitr (pgBackRest): not set up" in capsys.readouterr().out


# last in the module: it breaks the shared archive
def test_pitr_check_reports_the_rpo_writes_a_marker_and_finds_a_deleted_segment(
    prefect_harness: None, pitr_module_cluster: PitrCluster, s3_server: Any
) -> None:
    cluster = pitr_module_cluster
    repo, host = cluster.repo, cluster.host
    full = newest_backup(cluster)
    for _ in range(3):
        switch_and_wait_archived(cluster.server)
    name = f"pitr-check-{uuid.uuid4().hex[:8]}"
    repo.save(name)
    db = database_block(cluster)
    db.save(f"{name}-db")

    state = pitr_check(name, host=host, database_block=f"{name}-db", return_state=True)
    check = state.result()
    assert check.passed and check.missing_count == 0 and check.problems == []
    assert check.rpo_seconds is not None and check.newest_archived_at is not None
    assert check.newest and position(check.newest, 256) > position(full.wal_start or "", 256)
    (artifact,) = _artifacts(state.state_details.flow_run_id, "pitr-check-veza")
    assert "current RPO" in artifact.data
    assert f"`{check.newest}`" in artifact.data and "no gap" in artifact.data
    markers = read_markers(db, since=check.checked_at - timedelta(minutes=10))
    assert [m.written_by for m in markers][-1:] == ["pitr-check"]

    # delete one segment object between the backup's first WAL and the newest one
    segments = list_segments(repo, [a.id for a in commands.info(repo, host).archives])
    inside = [s for s in segments
              if position(check.oldest_needed or "", 256) < position(s.name, 256)
              < position(check.newest, 256)]
    victim = inside[0]
    _moto_client(s3_server).delete_object(Bucket=cluster.bucket, Key=victim.key)

    state = pitr_check(name, host=host, return_state=True)
    assert state.is_failed()
    with pytest.raises(ArchiveCheckError, match=f"missing.*{victim.name}"):
        state.result()
    (artifact,) = _artifacts(state.state_details.flow_run_id, "pitr-check-veza")
    assert "FAILED" in artifact.data and "1 segment(s) MISSING" in artifact.data
    assert victim.name in artifact.data
