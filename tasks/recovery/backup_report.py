"""The table artifact of a finished backup: what was dumped, uploaded and recorded."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from tasks.recovery.backup import BackupOutcome
from tasks.recovery.manifest import Manifest
from tasks.recovery.naming import artifact_key


def _globals_summary(m: Manifest) -> str:
    if m.globals is None:
        return "none"
    passwords = "included" if m.globals.role_passwords else "excluded"
    return f"{m.globals.size_bytes} bytes, role passwords {passwords}"


@task(name="publish-backup-result", cache_policy=NO_CACHE)
def publish_backup_table(outcome: BackupOutcome) -> None:
    """Prefect task: the table artifact of a finished backup.

    Args:
        outcome: the backup outcome.
    """
    m = outcome.manifest
    rows: list[dict[str, Any]] = [
        {"item": "backup id", "value": m.backup_id},
        {"item": "database", "value": m.database},
        {"item": "server version", "value": m.server_version},
        {"item": "started", "value": m.started_at.isoformat()},
        {"item": "finished", "value": m.finished_at.isoformat()},
        {"item": "duration (s)", "value": round(outcome.seconds, 1)},
        {"item": "dump bytes (plain)", "value": m.plain_bytes},
        {"item": "uploaded bytes", "value": m.size_bytes},
        {"item": "sha256", "value": m.sha256},
        {"item": "parts", "value": outcome.parts},
        {"item": "recipients", "value": ", ".join(m.recipients)},
        {"item": "globals (roles)", "value": _globals_summary(m)},
        {"item": "database owner, settings, grants",
         "value": "recorded (encrypted)" if m.database_state else "not recorded"},
        {"item": "encoding / collate / ctype",
         "value": f"{m.encoding} / {m.lc_collate} / {m.lc_ctype}"},
        {"item": "tables", "value": len(m.tables)},
        {"item": "rows", "value": sum(t.rows for t in m.tables)},
        {"item": "sequences", "value": len(m.sequences or [])},
        {"item": "large objects",
         "value": m.large_objects.count if m.large_objects else "not recorded"},
    ]
    create_table_artifact(
        table=rows,
        key=artifact_key("backup", m.database),
        description=f"backup {m.backup_id} of {m.database}",
    )
