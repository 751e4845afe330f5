"""`veza-ops backups info` and the summary behind it, on the moto S3 server."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from blocks.s3 import S3BackupStore
from errors import InvalidInputError
from tasks.recovery.catalogue import list_backups
from tasks.recovery.info import store_dict, store_info
from tasks.recovery.manifest import DATA_NAME, backup_id, backup_prefix
from tasks.recovery.pruning import verify_newest
from tasks.recovery.retention import RetentionPolicy, plan_retention
from tests.fixtures.recovery import PREFIX, put_backup
from veza_ops.backups import render
from veza_ops.cli import main

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
POLICY = RetentionPolicy(daily=3, weekly=0, monthly=0, hourly_hours=6)


def make_store(s3_client: Any, s3_bucket: str, now: datetime) -> dict[str, Any]:
    """veza_db: 5 nightly fulls, 2 hourlies, a data object without manifest and a multipart
    upload in progress; chat_db: one full. Times relative to ``now``."""
    ids: dict[str, str] = {}
    for day in range(1, 6):  # fulls at 03:00 on each of the 5 days before now's day
        started = now.replace(hour=3) - timedelta(days=day)
        ids[f"full-{day}"] = put_backup(s3_client, s3_bucket, "veza_db", started)
    ids["hourly-new"] = put_backup(
        s3_client, s3_bucket, "veza_db", now - timedelta(minutes=40), "hourly"
    )
    ids["hourly-old"] = put_backup(
        s3_client, s3_bucket, "veza_db", now - timedelta(hours=20), "hourly"
    )
    ids["orphan"] = put_backup(
        s3_client, s3_bucket, "veza_db", now - timedelta(days=9), manifest=False
    )
    ids["chat"] = put_backup(s3_client, s3_bucket, "chat_db", now - timedelta(hours=5))
    running = backup_id(now - timedelta(minutes=5), "hourly")
    inflight = backup_prefix(PREFIX, "veza_db", running) + DATA_NAME
    upload = s3_client.create_multipart_upload(Bucket=s3_bucket, Key=inflight)
    s3_client.upload_part(
        Bucket=s3_bucket, Key=inflight, UploadId=upload["UploadId"], PartNumber=1, Body=b"x" * 99
    )
    ids["upload_key"], ids["upload_id"] = inflight, upload["UploadId"]
    s3_client.put_object(Bucket=s3_bucket, Key=f"{PREFIX}/README.txt", Body=b"not a backup")
    return ids


@pytest.fixture()
def store(s3_client: Any, s3_bucket: str) -> dict[str, Any]:
    """The store, its times relative to the fixed NOW the summaries are taken at."""
    return make_store(s3_client, s3_bucket, NOW)


def test_summary_counts_sizes_rpo_debris_and_prune_plan(s3_client, s3_bucket, store):
    info = store_info(s3_client, s3_bucket, PREFIX, policy=POLICY, now=NOW)

    assert [d.database for d in info.databases] == ["chat_db", "veza_db"]
    veza = info.databases[1]
    assert (veza.backups, veza.complete) == (8, 7)
    assert veza.total_bytes == 7 * 64 and veza.incomplete_bytes == 64  # put_backup: 64 B each
    assert veza.oldest is not None and veza.oldest.backup_id == store["full-5"]
    assert veza.newest is not None and veza.newest.backup_id == store["hourly-new"]
    # the manifest says it finished 2 minutes after it started, 40 minutes before NOW
    assert veza.rpo == timedelta(minutes=38) and veza.rpo_met
    assert [u.key for u in veza.uploads] == [store["upload_key"]]
    assert veza.uploads[0].upload_id == store["upload_id"]
    assert [r.backup_id for r in veza.orphans] == [store["orphan"]]
    assert veza.orphans[0].missing == "no manifest"

    # the prune's own planner on the prune's own view of the store decides the same
    records = verify_newest(s3_client, s3_bucket, list_backups(s3_client, s3_bucket, PREFIX))
    expected = plan_retention([r for r in records if r.database == "veza_db"], POLICY, NOW)
    assert [(d.record.backup_id, d.keep) for d in veza.decisions] == [
        (d.record.backup_id, d.keep) for d in expected
    ]
    assert {d.record.backup_id for d in veza.to_delete} == {
        store["full-3"], store["full-4"], store["full-5"], store["hourly-old"]
    }
    assert veza.frozen is None and veza.alarm is None

    chat = info.databases[0]
    assert (chat.backups, chat.complete, chat.total_bytes) == (1, 1, 64)
    assert chat.rpo == timedelta(hours=4, minutes=58) and not chat.rpo_met
    assert chat.uploads == [] and chat.orphans == []


def test_one_database_and_json(s3_client, s3_bucket, store):
    info = store_info(s3_client, s3_bucket, PREFIX, database="chat_db", policy=POLICY, now=NOW)
    assert [d.database for d in info.databases] == ["chat_db"]

    doc = json.loads(json.dumps(store_dict(info)))
    assert doc["policy"]["daily"] == 3 and doc["now"] == NOW.isoformat()
    chat = doc["databases"][0]
    assert chat["newest_complete"]["backup_id"] == store["chat"]
    assert chat["rpo_seconds"] == 4 * 3600 + 58 * 60 and chat["rpo_met"] is False
    assert chat["prune"] == {
        "keep": 1, "delete": 0, "frozen": None, "alarm": None,
        "decisions": [{
            "backup_id": store["chat"], "kind": "full", "complete": True, "action": "keep",
            "reasons": chat["prune"]["decisions"][0]["reasons"],
        }],
    }
    assert "newest complete" in chat["prune"]["decisions"][0]["reasons"]


def test_newest_incomplete_freezes_the_plan_and_says_why(s3_client, s3_bucket, store):
    # the newest backup's manifest names another size: the prune would freeze veza_db
    newest = backup_prefix(PREFIX, "veza_db", store["hourly-new"])
    s3_client.put_object(Bucket=s3_bucket, Key=newest + DATA_NAME, Body=b"y" * 10)

    veza = store_info(s3_client, s3_bucket, PREFIX, database="veza_db", policy=POLICY, now=NOW)
    veza_db = veza.databases[0]
    assert veza_db.to_delete == [] and veza_db.frozen and "incomplete" in veza_db.frozen
    assert store["hourly-new"] in [r.backup_id for r in veza_db.orphans]
    # the newest COMPLETE backup is now the last nightly full: the RPO says so
    assert veza_db.newest is not None and veza_db.newest.backup_id == store["hourly-old"]
    assert veza_db.rpo == timedelta(hours=19, minutes=58)


def test_unknown_database_is_named_with_the_ones_there(s3_client, s3_bucket, store):
    with pytest.raises(InvalidInputError) as caught:
        store_info(s3_client, s3_bucket, PREFIX, database="veza-db", now=NOW)
    assert caught.value.field == "database"
    assert "'veza-db'" in str(caught.value) and "chat_db, veza_db" in str(caught.value)
    with pytest.raises(InvalidInputError) as caught:
        store_info(s3_client, s3_bucket, PREFIX, database="a/b", now=NOW)
    assert caught.value.field == "database"


def test_empty_store(s3_client, s3_bucket):
    info = store_info(s3_client, s3_bucket, "nothing-here", now=NOW)
    assert info.databases == []
    assert "no backups found" in render(info)


def test_text_rendering_shows_what_an_operator_looks_for(s3_client, s3_bucket, store):
    text = render(store_info(s3_client, s3_bucket, PREFIX, policy=POLICY, now=NOW))
    assert f"backups in s3://{s3_bucket}/{PREFIX} at 2026-11-27 12:00:00 UTC" in text
    assert "database veza_db" in text and "database chat_db" in text
    assert "7 complete of 8 listed" in text and "448 B (complete backups' data objects)" in text
    assert "38 min (objective 1 h 0 min: met)" in text
    assert "4 h 58 min (objective 1 h 0 min: NOT MET)" in text
    assert f"upload in progress: {store['upload_key']}" in text
    assert f"without manifest: {store['orphan']} (no manifest)" in text
    assert f"prune would delete {store['full-5']}: full outside retention" in text
    assert "keep 4, delete 4" in text


# --- the command, against a saved block -----------------------------------------------


@pytest.fixture()
def live_store(s3_client: Any, s3_bucket: str) -> dict[str, Any]:
    """The same store relative to the real clock (the command reads the clock itself)."""
    return make_store(s3_client, s3_bucket, datetime.now(UTC).replace(second=0, microsecond=0))


@pytest.fixture()
def store_block_name(prefect_harness, s3_server, s3_bucket) -> str:
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


def run_cli(argv: list[str], capsys: Any) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_json_parses(store_block_name, live_store, capsys):
    store = live_store
    code, out, err = run_cli(
        ["backups", "info", "--store-block", store_block_name, "--json", "--daily", "3",
         "--weekly", "0", "--monthly", "0", "--hourly-hours", "6"],
        capsys,
    )
    assert code == 0, err
    doc = json.loads(out)
    veza = next(d for d in doc["databases"] if d["database"] == "veza_db")
    assert veza["complete"] == 7 and veza["total_bytes"] == 7 * 64
    assert [u["key"] for u in veza["incomplete_uploads"]] == [store["upload_key"]]
    assert [o["backup_id"] for o in veza["without_manifest"]] == [store["orphan"]]
    assert store["full-5"] in {
        d["backup_id"] for d in veza["prune"]["decisions"] if d["action"] == "delete"
    }
    assert veza["rpo_seconds"] >= 38 * 60 and veza["rpo_met"] is True  # the real clock


def test_cli_table_for_one_database(store_block_name, live_store, capsys):
    store = live_store
    code, out, _ = run_cli(
        ["backups", "info", "--store-block", store_block_name, "--database", "chat_db"], capsys
    )
    assert code == 0
    assert "database chat_db" in out and "database veza_db" not in out
    assert "newest complete" in out and store["chat"] in out


def test_cli_errors_name_the_option(store_block_name, live_store, capsys):
    code, out, err = run_cli(
        ["backups", "info", "--store-block", store_block_name, "--database", "nope"], capsys
    )
    assert code == 2 and out == ""
    assert err.startswith("veza-ops backups info: --database: no backup of 'nope'")
    assert "chat_db, veza_db" in err

    code, _, err = run_cli(["backups", "info", "--store-block", "no-such-store"], capsys)
    assert code == 2 and "--store-block" in err and "'no-such-store'" in err

    code, _, err = run_cli(
        ["backups", "info", "--store-block", store_block_name, "--daily", "-1"], capsys
    )
    assert code == 2 and "--daily: must not be negative" in err

    code, _, err = run_cli(
        ["backups", "info", "--store-block", store_block_name, "--rpo-objective-hours", "0"],
        capsys,
    )
    assert code == 2 and "--rpo-objective-hours" in err


def test_cli_says_when_the_prefect_api_cannot_be_reached(capsys):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:9/api"}):  # discard: closed
        code, out, err = run_cli(["backups", "info"], capsys)
    assert code == 2 and out == ""
    assert "Prefect API: load block 'veza-backups': cannot reach" in err
    assert "PREFECT_API_URL" in err
