"""pitr-expire and pitr-check on real parts: one PG15 cluster archiving through pgBackRest.

The module's tests share the cluster and its repository (``pitr_module_cluster``): each
takes the backups it needs and asserts on those.
"""

from __future__ import annotations

import uuid

from flows.pitr import pitr_expire
from tasks.recovery.pitr import commands
from tests.fixtures.pitr import PitrCluster


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
