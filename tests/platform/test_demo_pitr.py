"""The demo's PITR tier: its cluster archives WAL through the rendered config; the RPO lines."""

from __future__ import annotations

import re
import secrets
import shutil
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sandbox.launchers.postgres import start_postgres
from sandbox.procs import free_port
from tasks.recovery.pitr import commands
from tasks.recovery.pitr.tier import pitr_tier, tier_dict
from tests.fixtures.pitr import _moto_client
from veza_ops.blocks_setup import sandbox_pitr_block
from veza_ops.demo_pitr import prepare_archiving, rpo_lines

PITR_LINE = re.compile(r"^RPO \(PITR, live WAL archive\): \d+ s \(newest WAL [0-9A-F]{24}; "
                       r"objective 60 min: met\)$")


def test_the_demo_cluster_archives_wal_and_its_rpo_line_gives_seconds(
    s3_server: Any, s3_tls_front: Any
) -> None:
    """Set up like build_stack does: pgBackRest's config rendered from the block, PostgreSQL
    started with postgresql_settings' archive_command; pgBackRest's own ``check`` proves a
    segment went through archive_command into the repository."""
    if shutil.which("pgbackrest") is None:
        pytest.skip("pgbackrest is not installed (apt-get install pgbackrest)")
    bucket = f"veza-demo-pitr-{uuid.uuid4().hex[:8]}"
    _moto_client(s3_server).create_bucket(Bucket=bucket)
    repo = sandbox_pitr_block(s3=s3_server, front=s3_tls_front, bucket=bucket,
                              passphrase=secrets.token_urlsafe(24))
    setup = prepare_archiving(repo, port=free_port(), archive_timeout_s=5)
    assert setup.repo.ca_file and setup.repo.ca_file.startswith(str(setup.root))
    pg = start_postgres(user=setup.superuser, port=setup.host.port, root=setup.root,
                        local_auth="peer", settings=setup.settings)
    try:
        import psycopg

        with psycopg.connect(pg.conninfo(), autocommit=True) as conn:
            row = conn.execute("SHOW archive_command").fetchone()
        assert row and f"--config={setup.host.config_path}" in row[0]
        commands.stanza_create(setup.repo, setup.host)
        commands.check(setup.repo, setup.host)  # switches WAL, waits until it is archived
        tier = pitr_tier(setup.repo, setup.host, now=datetime.now(UTC),
                         rpo_objective=timedelta(hours=1))
        assert tier.newest_wal and tier.rpo is not None and tier.rpo < timedelta(hours=1)
        lines = rpo_lines({"pitr": tier_dict(tier), "databases": []})
        assert len(lines) == 1 and PITR_LINE.match(lines[0]), lines
    finally:
        pg.stop()
    assert not setup.root.exists()


def test_rpo_lines_put_the_pitr_seconds_next_to_each_database_s_logical_rpo() -> None:
    doc = {
        "pitr": {"rpo_seconds": 12.4, "rpo_met": True, "rpo_objective_seconds": 3600.0,
                 "newest_wal": "000000010000000000000003"},
        "databases": [
            {"database": "veza", "rpo_seconds": 400.0, "rpo_met": True, "complete": 1,
             "rpo_objective_seconds": 3600.0},
            {"database": "other", "rpo_seconds": None, "rpo_met": False, "complete": 0,
             "rpo_objective_seconds": 3600.0},
        ],
    }
    assert rpo_lines(doc) == [
        "RPO (PITR, live WAL archive): 12 s (newest WAL 000000010000000000000003; "
        "objective 60 min: met)",
        "RPO (logical backups of veza): 7 min (1 complete; objective 60 min: met)",
        "RPO (logical backups of other): no complete backup",
    ]
    broken = rpo_lines({"pitr": {"error": "ERROR: bucket unreachable"}, "databases": []})
    assert broken == ["RPO (PITR, live WAL archive): none (ERROR: bucket unreachable)"]
