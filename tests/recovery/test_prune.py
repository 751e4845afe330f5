"""The prune-backups flow (retention, deletion, local spool) against moto, under Prefect."""

from __future__ import annotations

import json
import os
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from blocks.s3 import S3BackupStore
from errors import BlockNotFoundError, InvalidInputError
from flows.prune import PruneReport, prune_backups
from tasks.recovery.catalogue import list_backups
from tasks.recovery.manifest import Manifest, backup_prefix
from tasks.recovery.pruning import delete_backup
from tests.fixtures.recovery import PREFIX, all_keys, put_backup


@pytest.fixture()
def store_block(prefect_harness, s3_server, s3_bucket):
    from prefect_aws import AwsCredentials

    name = f"store-{uuid.uuid4().hex[:12]}"
    S3BackupStore(
        bucket=s3_bucket,
        prefix=PREFIX,
        endpoint_url=s3_server.endpoint_url,
        region=s3_server.region,
        credentials=AwsCredentials(
            aws_access_key_id=s3_server.access_key,
            aws_secret_access_key=s3_server.secret_key,
            region_name=s3_server.region,
        ),
    ).save(name)
    return name


POLICY = {"daily": 3, "weekly": 0, "monthly": 0, "hourly_hours": 6}


def veza(*names: str, ids: dict[str, str]) -> set[str]:
    return {f"veza_db/{ids[n]}" for n in names}


def run_prune(**params: Any) -> tuple[PruneReport, Any]:
    state = prune_backups(**params, return_state=True)
    report = state.result()
    assert isinstance(report, PruneReport)
    return report, state.state_details.flow_run_id


def read_table(flow_run_id: Any) -> tuple[str, list[dict[str, str]]]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    tables = [a for a in artifacts if a.type == "table"]
    assert len(tables) == 1
    key, data = tables[0].key, tables[0].data
    rows = json.loads(data) if isinstance(data, str) else data
    assert key is not None and isinstance(rows, list)
    return key, rows


# --- deletion -------------------------------------------------------------------


def test_delete_backup_removes_data_and_manifest_together(s3_client, s3_bucket, backup_scenario):
    records = list_backups(s3_client, s3_bucket, PREFIX, database="veza_db")
    victim = next(r for r in records if r.backup_id == backup_scenario["full-5"])
    extra = backup_prefix(PREFIX, "veza_db", victim.backup_id) + "leftover.part"
    s3_client.put_object(Bucket=s3_bucket, Key=extra, Body=b"x")
    victim = next(
        r
        for r in list_backups(s3_client, s3_bucket, PREFIX, database="veza_db")
        if r.backup_id == victim.backup_id
    )
    before = all_keys(s3_client, s3_bucket)
    deleted = delete_backup(s3_client, s3_bucket, victim)
    assert set(deleted) == {victim.data_key, victim.manifest_key, extra}
    assert all_keys(s3_client, s3_bucket) == before - set(deleted)


# --- the flow ----------------------------------------------------------------------


def test_dry_run_deletes_nothing_and_reports_the_plan(
    s3_client, s3_bucket, backup_scenario, store_block
):
    before = all_keys(s3_client, s3_bucket)
    report, run_id = run_prune(store_block=store_block, **POLICY)

    assert all_keys(s3_client, s3_bucket) == before
    assert report.dry_run and report.deleted == []
    assert report.frozen == ["chat_db"]
    expected = veza(
        "full-3",
        "full-4",
        "full-5",
        "full-6",
        "full-7",
        "full-8",
        "full-9",
        "full-10",
        "hourly-old",
        ids=backup_scenario,
    )
    assert set(report.to_delete) == expected
    assert veza("full-1", "full-2", "hourly-new", "debris", ids=backup_scenario) <= set(report.kept)
    assert f"chat_db/{backup_scenario['chat-inflight']}" in report.kept

    key, rows = read_table(run_id)
    assert key == "prune-backups-all"
    by_id = {r["backup"]: r for r in rows}
    assert {
        f"{r['database']}/{r['backup']}" for r in rows if r["action"] == "would delete"
    } == expected
    assert "daily" in by_id[backup_scenario["full-2"]]["reasons"]
    assert "newest complete full" in by_id[backup_scenario["full-1"]]["reasons"]
    assert "frozen" in by_id[backup_scenario["chat-inflight"]]["reasons"]
    assert "hourly older than 6 h" == by_id[backup_scenario["hourly-old"]]["reasons"]


def test_real_run_deletes_exactly_the_plan(s3_client, s3_bucket, backup_scenario, store_block):
    before = all_keys(s3_client, s3_bucket)
    planned, _ = run_prune(store_block=store_block, delete_incomplete=True, **POLICY)
    report, run_id = run_prune(
        store_block=store_block, delete_incomplete=True, dry_run=False, **POLICY
    )
    assert set(report.deleted) == set(report.to_delete) == set(planned.to_delete)
    assert f"veza_db/{backup_scenario['debris']}" in report.deleted  # old debris, now opted in

    gone = set()
    for label in report.deleted:
        database, bid = label.split("/")
        base = backup_prefix(PREFIX, database, bid)
        gone |= {k for k in before if k.startswith(base)}
    assert all_keys(s3_client, s3_bucket) == before - gone
    for label in report.deleted:  # data and manifest went together
        database, bid = label.split("/")
        assert not any(
            k.startswith(backup_prefix(PREFIX, database, bid))
            for k in all_keys(s3_client, s3_bucket)
        )
    remaining = list_backups(s3_client, s3_bucket, PREFIX)
    assert {f"{r.database}/{r.backup_id}" for r in remaining} == set(report.kept)
    assert f"{PREFIX}/README.txt" in all_keys(s3_client, s3_bucket)
    assert len([r for r in remaining if r.database == "chat_db"]) == 6  # frozen: untouched

    _, rows = read_table(run_id)
    assert {r["action"] for r in rows} == {"keep", "delete"}

    again, _ = run_prune(store_block=store_block, delete_incomplete=True, dry_run=False, **POLICY)
    assert again.deleted == [], "a second run finds nothing more to delete"


def test_faulty_newest_manifest_freezes_its_database(
    s3_client, s3_bucket, backup_scenario, store_block
):
    key = backup_prefix(PREFIX, "veza_db", backup_scenario["hourly-new"]) + "manifest.json"
    doc = Manifest.model_validate_json(
        s3_client.get_object(Bucket=s3_bucket, Key=key)["Body"].read()
    )
    s3_client.put_object(
        Bucket=s3_bucket, Key=key, Body=doc.model_copy(update={"size_bytes": 999}).model_dump_json()
    )
    before = all_keys(s3_client, s3_bucket)
    report, run_id = run_prune(store_block=store_block, dry_run=False, **POLICY)
    assert report.deleted == [] and report.to_delete == []
    assert report.frozen == ["chat_db", "veza_db"]
    assert all_keys(s3_client, s3_bucket) == before
    _, rows = read_table(run_id)
    reasons = {r["backup"]: r["reasons"] for r in rows if r["database"] == "veza_db"}
    assert "manifest does not match the data object" in reasons[backup_scenario["full-5"]]


def test_one_database_only(s3_client, s3_bucket, backup_scenario, store_block):
    report, run_id = run_prune(store_block=store_block, database="veza_db", dry_run=False, **POLICY)
    assert report.deleted and all(label.startswith("veza_db/") for label in report.deleted)
    assert all(label.startswith("veza_db/") for label in report.kept)
    assert read_table(run_id)[0].startswith("prune-backups-veza-db-")


def test_stopped_fulls_fail_the_prune_naming_the_database_and_age(
    s3_client, s3_bucket, store_block
):
    now = datetime.now(UTC).replace(microsecond=0)
    for days in (5, 6, 7):  # veza_db: fulls stopped 5 days ago, hourlies go on
        put_backup(s3_client, s3_bucket, "veza_db", now - timedelta(days=days, hours=1))
    for hours in range(1, 40, 3):
        put_backup(s3_client, s3_bucket, "veza_db", now - timedelta(hours=hours), "hourly")
    put_backup(s3_client, s3_bucket, "chat_db", now - timedelta(days=3))  # chat_db: healthy
    put_backup(s3_client, s3_bucket, "chat_db", now - timedelta(hours=2))
    before = all_keys(s3_client, s3_bucket)

    state = prune_backups(store_block=store_block, dry_run=False, return_state=True, **POLICY)
    assert state.is_failed()
    assert state.message is not None
    assert "veza_db" in state.message and "5 d 1 h old" in state.message
    assert "max_full_age_h=48" in state.message
    gone = before - all_keys(s3_client, s3_bucket)
    assert gone and all(k.startswith(f"{PREFIX}/chat_db/") for k in gone), "only chat_db pruned"
    _, rows = read_table(state.state_details.flow_run_id)
    veza_rows = [r for r in rows if r["database"] == "veza_db"]
    assert veza_rows and all(
        r["action"] == "keep" and "no recent full backup" in r["reasons"] for r in veza_rows
    )


def test_bad_policy_is_refused_before_anything(s3_client, s3_bucket, backup_scenario, store_block):
    before = all_keys(s3_client, s3_bucket)
    with pytest.raises(InvalidInputError) as caught:
        prune_backups(store_block=store_block, dry_run=False, daily=-1)
    assert caught.value.field == "daily"
    assert all_keys(s3_client, s3_bucket) == before


def test_unknown_store_block_is_a_clear_error(prefect_harness):
    name = f"missing-{uuid.uuid4().hex[:8]}"
    with pytest.raises(BlockNotFoundError) as caught:
        prune_backups(store_block=name)
    assert caught.value.field == "store_block"
    assert name in str(caught.value) and "register" in str(caught.value)


# --- local spool -------------------------------------------------------------------


def make_spool(tmp_path: Path) -> tuple[Path, list[Path], list[Path]]:
    spool = tmp_path / "spool"
    (spool / "nested").mkdir(parents=True)
    now = datetime.now(UTC).timestamp()
    old = [spool / "veza_db_20261101.dump.gpg", spool / "nested" / "stray.tmp"]
    new = [spool / "veza_db_today.dump.gpg", spool / "nested" / "six-days.tmp"]
    for path, age_days in zip(old + new, (30, 8, 0, 6), strict=True):
        path.write_bytes(b"x")
        stamp = now - age_days * 86400
        os.utime(path, (stamp, stamp))
    (spool / "link").symlink_to(old[0])
    return spool, old, new


def test_spool_cleanup_dry_run_and_real(
    tmp_path, s3_client, s3_bucket, backup_scenario, store_block
):
    spool, old, new = make_spool(tmp_path)
    report, _ = run_prune(store_block=store_block, local_spool=str(spool), **POLICY)
    assert sorted(report.spool_stale) == sorted(str(p.resolve()) for p in old)
    assert report.spool_removed == []
    assert all(p.exists() for p in old + new)

    report, _ = run_prune(store_block=store_block, local_spool=str(spool), dry_run=False, **POLICY)
    assert sorted(report.spool_removed) == sorted(str(p.resolve()) for p in old)
    assert not any(p.exists() for p in old)
    assert all(p.exists() for p in new)
    assert (spool / "nested").is_dir()


def test_spool_age_is_configurable(tmp_path, store_block, backup_scenario):
    spool, _old, _new = make_spool(tmp_path)
    report, _ = run_prune(
        store_block=store_block, local_spool=str(spool), spool_max_age_days=5, **POLICY
    )
    assert len(report.spool_stale) == 3  # 30, 8 and 6 days old


def test_bad_spool_is_refused_before_anything(
    tmp_path, s3_client, s3_bucket, backup_scenario, store_block
):
    before = all_keys(s3_client, s3_bucket)
    with pytest.raises(InvalidInputError) as caught:
        prune_backups(store_block=store_block, dry_run=False, local_spool=str(tmp_path / "nope"))
    assert caught.value.field == "local_spool"
    assert all_keys(s3_client, s3_bucket) == before
