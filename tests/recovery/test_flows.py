"""The backup, restore-test and restore flows end to end under a real Prefect API."""

from __future__ import annotations

import logging
import uuid

import psycopg
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterKey,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.logging.handlers import APILogWorker

from errors import BlockNotFoundError, IntegrityError
from flows.backup import backup_flow
from flows.restore import restore_flow
from flows.restore_test import restore_test_flow
from tasks.recovery.catalogue import artifact_key
from tasks.recovery.manifest import Manifest
from tests.events import read_events, read_task_runs
from tests.fixtures.recovery import SEED_COUNTS, drop_db


def _checksum(server, dbname):
    with psycopg.connect(server.conninfo(dbname)) as conn:
        counts = {
            t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in ("artists", "tracks", "chat.messages", "empty_table")
        }
        digest = conn.execute(
            "SELECT md5(string_agg(t::text, ',' ORDER BY id)) FROM tracks t"
        ).fetchone()[0]
    return counts, digest


def _run(flow_fn, **params):
    state = flow_fn(return_state=True, **params)
    return state.state_details.flow_run_id, state.result()


def test_round_trip_through_the_flows_and_no_secret_in_any_log(
    saved_blocks, seeded_db, store_block, gpg_key, pg_server, s3_server, caplog
):
    caplog.set_level(logging.DEBUG)
    blocks = saved_blocks
    run_ids = []

    run_id, manifest = _run(
        backup_flow, database_block=blocks["database_block"],
        store_block=blocks["store_block"], encryption_block=blocks["encryption_block"],
    )
    run_ids.append(run_id)
    assert isinstance(manifest, Manifest)
    assert {(t.schema_name, t.table): t.rows for t in manifest.tables} == SEED_COUNTS

    # the catalogue lists it as complete
    from tasks.recovery.catalogue import list_backups

    records = list_backups(store_block.get_client(), store_block.bucket, store_block.prefix,
                           database=seeded_db.dbname)
    assert [(r.backup_id, r.complete) for r in records] == [(manifest.backup_id, True)]

    run_id, report = _run(
        restore_test_flow, database_block=blocks["database_block"],
        store_block=blocks["store_block"], decryption_block=blocks["decryption_block"],
        smoke_sql=["SELECT count(*) > 0 FROM tracks"],
    )
    run_ids.append(run_id)
    assert report.passed and report.backup_id == manifest.backup_id
    assert 0 <= report.rpo_seconds < 3600 and report.rto_seconds > 0

    target = f"restored_{uuid.uuid4().hex[:8]}"
    try:
        run_id, outcome = _run(
            restore_flow, database_block=blocks["database_block"],
            store_block=blocks["store_block"], decryption_block=blocks["decryption_block"],
            backup_id=manifest.backup_id, target_database=target,
        )
        run_ids.append(run_id)
        assert outcome.target_database == target
        assert _checksum(pg_server, target) == _checksum(pg_server, seeded_db.dbname)
    finally:
        drop_db(pg_server, target)

    bars = {artifact_key("backup-progress", seeded_db.dbname),
            artifact_key("restore-test-progress", seeded_db.dbname),
            artifact_key("restore-progress", target)}
    wanted = bars | {artifact_key(kind, seeded_db.dbname) for kind in ("backup", "restore-test")}
    APILogWorker.drain_all(timeout=30)
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=sorted(wanted))))
        keys = {a.key for a in artifacts}
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=run_ids)))
    assert keys == wanted
    # every progress bar, the restore's included, ends at 100 % once its run is done
    assert {a.key: a.data for a in artifacts if a.key in bars} == dict.fromkeys(bars, 100.0)
    restore_bar = next(a for a in artifacts if a.key == artifact_key("restore-progress", target))
    assert "downloaded" in (restore_bar.description or "")
    assert logs  # the flow runs did log
    text = caplog.text + "\n".join(log.message for log in logs)
    text += "\n".join(str(a.data) + str(a.description) for a in artifacts)
    assert manifest.backup_id in text
    secrets = [
        pg_server.password,
        gpg_key.passphrase,
        s3_server.secret_key,
        gpg_key.private_armored.splitlines()[3],
    ]
    for secret in secrets:
        assert secret not in text


def test_flow_fails_on_unknown_block_name(prefect_harness, saved_blocks):
    with pytest.raises(BlockNotFoundError) as err:
        backup_flow(database_block="no-such-db", store_block=saved_blocks["store_block"],
                    encryption_block=saved_blocks["encryption_block"])
    assert err.value.field == "database_block" and "no-such-db" in str(err.value)


def test_restore_test_flow_fails_loudly_on_smoke_failure(saved_blocks, seeded_db):
    backup_flow(database_block=saved_blocks["database_block"],
                store_block=saved_blocks["store_block"],
                encryption_block=saved_blocks["encryption_block"], kind="hourly")
    with pytest.raises(IntegrityError, match="smoke query 1"):
        restore_test_flow(database_block=saved_blocks["database_block"],
                          store_block=saved_blocks["store_block"],
                          decryption_block=saved_blocks["decryption_block"],
                          smoke_sql=["SELECT false"])
    events = read_events(f"veza-ops.database.{seeded_db.dbname}",
                         until=lambda found: len(found) >= 4)
    assert [e.event for e in events] == [
        "veza-ops.backup.started", "veza-ops.backup.succeeded",
        "veza-ops.restore-test.started", "veza-ops.restore-test.failed"]
    assert events[1].payload == {"kind": "hourly", "outcome": "succeeded",
                                 "duration_s": events[1].payload["duration_s"]}
    assert "smoke query 1" in events[3].payload["reason"]


@pytest.mark.parametrize(("change", "attempts"), [("port", 2), ("password", 1)])
def test_transient_failures_retry_the_whole_attempt(saved_blocks, seeded_db, change, attempts):
    from pydantic import SecretStr

    from sandbox.procs import free_port

    update = ({"port": free_port(), "connect_timeout": 1} if change == "port"
              else {"password": SecretStr("wrong")})
    name = f"db-bad-{uuid.uuid4().hex[:8]}"
    seeded_db.model_copy(update=update).save(name)
    state = backup_flow(database_block=name, store_block=saved_blocks["store_block"],
                        encryption_block=saved_blocks["encryption_block"],
                        retries=1, retry_delay_seconds=0, return_state=True)
    assert state.is_failed()
    runs = read_task_runs(state.state_details.flow_run_id, until=lambda found: any(
        r.name.startswith("backup-attempt") and r.state and r.state.is_final() for r in found))
    attempt = next(r for r in runs if r.name.startswith("backup-attempt"))
    assert attempt.run_count == attempts  # unreachable (transient) retried; bad login not


def test_backup_attempt_timeout_is_checked_before_anything(prefect_harness):
    from errors import InvalidInputError

    with pytest.raises(InvalidInputError) as caught:  # not BlockNotFoundError: checked first
        backup_flow("no-such-db", "no-such-store", "no-such-key", expected_minutes=0)
    assert caught.value.field == "expected_minutes"
