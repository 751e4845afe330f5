"""The catalogue: listing, "complete", manifests, the newest-backup selection and artifact keys."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime

import pytest

from errors import IntegrityError, InvalidInputError, NotFoundError
from tasks.recovery.catalogue import (
    artifact_key,
    latest_complete,
    list_backups,
    read_manifest,
)
from tasks.recovery.manifest import DATA_NAME, backup_prefix
from tasks.recovery.naming import check_database_name
from tasks.recovery.pruning import catalogue_markdown
from tasks.recovery.selection import find_backup
from tests.fixtures.recovery import PREFIX, put_backup


def test_catalogue_groups_keys_into_backups(s3_client, s3_bucket, backup_scenario):
    records = list_backups(s3_client, s3_bucket, PREFIX, page_size=3)  # forces pagination
    assert {r.database for r in records} == {"veza_db", "chat_db"}
    assert len(records) == 13 + 6
    debris = next(r for r in records if r.backup_id == backup_scenario["debris"])
    assert not debris.complete and debris.manifest_key is None and debris.data_size == 64
    assert debris.missing == "no manifest"
    veza = [r for r in records if r.database == "veza_db"]
    newest = latest_complete(s3_client, s3_bucket, veza)
    assert newest is not None and newest.backup_id == backup_scenario["hourly-new"]
    newest_full = latest_complete(s3_client, s3_bucket, [r for r in veza if r.kind == "full"])
    assert newest_full is not None and newest_full.backup_id == backup_scenario["full-1"]
    # the chat_db newest is in flight: the newest COMPLETE one is yesterday's full
    chat = latest_complete(s3_client, s3_bucket, [r for r in records if r.database == "chat_db"])
    assert chat is not None and chat.kind == "full"
    only = list_backups(s3_client, s3_bucket, PREFIX, database="chat_db")
    assert {r.database for r in only} == {"chat_db"} and len(only) == 6
    text = catalogue_markdown(records)
    assert backup_scenario["debris"] in text and "no (no manifest)" in text


def test_newest_selection_skips_a_backup_whose_data_object_is_missing(
    s3_client, s3_bucket, backup_scenario
):
    """Restore-test's choice (find_backup with no id) and prune agree on what is complete."""
    now = datetime.now(UTC).replace(microsecond=0)
    no_data = put_backup(s3_client, s3_bucket, "veza_db", now, "hourly", data=False)
    records = list_backups(s3_client, s3_bucket, PREFIX, database="veza_db")
    record = next(r for r in records if r.backup_id == no_data)
    assert record.manifest_key is not None and not record.complete
    assert record.missing == "no data"

    chosen = find_backup(s3_client, s3_bucket, PREFIX, "veza_db", None)
    assert chosen.backup_id == backup_scenario["hourly-new"]
    with pytest.raises(InvalidInputError, match="no data") as err:
        find_backup(s3_client, s3_bucket, PREFIX, "veza_db", no_data)
    assert err.value.field == "backup_id"

    # a data object whose size is not the manifest's is not complete either
    newest = backup_prefix(PREFIX, "veza_db", backup_scenario["hourly-new"]) + DATA_NAME
    s3_client.put_object(Bucket=s3_bucket, Key=newest, Body=b"truncated")
    chosen = find_backup(s3_client, s3_bucket, PREFIX, "veza_db", None)
    assert chosen.backup_id == max(backup_scenario["hourly-old"], backup_scenario["full-1"])
    with pytest.raises(IntegrityError, match="does not match the data object"):
        find_backup(s3_client, s3_bucket, PREFIX, "veza_db", backup_scenario["hourly-new"])


def test_no_complete_backup_is_a_clear_error(s3_client, s3_bucket):
    put_backup(s3_client, s3_bucket, "veza_db", datetime.now(UTC), data=False)
    with pytest.raises(NotFoundError, match="no complete backup"):
        find_backup(s3_client, s3_bucket, PREFIX, "veza_db", None)


def test_read_manifest_validates(s3_client, s3_bucket, backup_scenario):
    records = list_backups(s3_client, s3_bucket, PREFIX, database="veza_db")
    full = next(r for r in records if r.backup_id == backup_scenario["full-1"])
    manifest = read_manifest(s3_client, s3_bucket, full)
    assert manifest.backup_id == full.backup_id and manifest.size_bytes == full.data_size

    s3_client.put_object(Bucket=s3_bucket, Key=full.manifest_key, Body=b'{"backup_id": 3}')
    with pytest.raises(IntegrityError, match="not valid"):
        read_manifest(s3_client, s3_bucket, full)
    debris = next(r for r in records if r.backup_id == backup_scenario["debris"])
    with pytest.raises(NotFoundError, match="no manifest"):
        read_manifest(s3_client, s3_bucket, debris)


def test_missing_bucket_is_a_clear_error(s3_client):
    with pytest.raises(NotFoundError) as caught:
        list_backups(s3_client, f"no-such-{uuid.uuid4().hex[:8]}", PREFIX)
    assert "does not exist" in str(caught.value) and "bucket" in str(caught.value)


def test_database_with_slash_is_refused(s3_client, s3_bucket):
    with pytest.raises(InvalidInputError) as caught:
        list_backups(s3_client, s3_bucket, PREFIX, database="a/b")
    assert caught.value.field == "database"


def test_artifact_keys_are_valid_whatever_the_names():
    valid = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
    assert artifact_key("prune-backups", "all") == "prune-backups-all"  # lossless: as is
    assert artifact_key("backup-catalogue", "") == "backup-catalogue"
    assert artifact_key("prune-backups", "veza_db").startswith("prune-backups-veza-db-")
    assert artifact_key("restore-test", "Veza DB--2").startswith("restore-test-veza-db-2-")
    assert artifact_key("", "__").startswith("backups-")
    assert len(artifact_key("backup", "x" * 300)) == 100
    keys = [
        artifact_key("backup", name)
        for name in ("veza_db", "veza-db", "Veza_db", "veza db", "veza__db", "x" * 300, "x" * 301)
    ]
    assert len(set(keys)) == len(keys), "names differing only by -/_/case never share a key"
    assert all(valid.match(k) and len(k) <= 100 for k in keys)


@pytest.mark.parametrize("name", ["a/b", "", ".", "..", "tab\tname"])
def test_database_names_that_are_not_one_key_segment_are_refused(name):
    with pytest.raises(InvalidInputError) as caught:
        check_database_name(name)
    assert caught.value.field == "database" and "key segment" in str(caught.value)
