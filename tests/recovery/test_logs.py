"""Recovery modules log through Prefect's run logger inside a run (their lines reach the UI)."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

from prefect import flow, task
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from prefect.logging.handlers import APILogWorker

from tasks.recovery.catalogue import latest_complete, list_backups
from tasks.release.logs import get_logger as release_get_logger
from tests.fixtures.recovery import PREFIX, put_backup

STARTED = datetime(2026, 11, 26, 3, 0, tzinfo=UTC)


def _incomplete_store(client: Any, bucket: str) -> str:
    """One complete backup and a newer one without its manifest; returns the newer's id."""
    put_backup(client, bucket, "veza_db", STARTED)
    return put_backup(client, bucket, "veza_db", STARTED + timedelta(hours=1), manifest=False)


def _newest(client: Any, bucket: str) -> str | None:
    manifest = latest_complete(client, bucket, list_backups(client, bucket, PREFIX))
    return manifest.backup_id if manifest else None


@task
def newest_task(client: Any, bucket: str) -> str | None:
    return _newest(client, bucket)


@flow
def newest_flow(client: Any, bucket: str) -> str | None:
    in_flow = _newest(client, bucket)
    assert newest_task(client, bucket) == in_flow
    return in_flow


def _run_logs(flow_run_id: Any) -> list[Any]:
    APILogWorker.drain_all(timeout=30)
    with get_client(sync_client=True) as client:
        return client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
        )


def test_a_recovery_module_logs_reach_the_flow_run(prefect_harness, s3_client, s3_bucket):
    skipped = _incomplete_store(s3_client, s3_bucket)

    state = newest_flow(s3_client, s3_bucket, return_state=True)
    assert state.is_completed()
    logs = _run_logs(state.state_details.flow_run_id)

    wanted = f"skipping incomplete backup veza_db/{skipped} (no manifest)"
    mine = [log for log in logs if wanted in log.message]
    # once from the flow itself, once from its task (linked to the task run)
    assert len(mine) == 2, [log.message for log in logs]
    assert {log.level for log in mine} == {logging.WARNING}
    assert sum(log.task_run_id is not None for log in mine) == 1


def test_outside_a_run_the_module_logger_is_used(s3_client, s3_bucket, caplog):
    skipped = _incomplete_store(s3_client, s3_bucket)
    caplog.set_level(logging.INFO)

    assert _newest(s3_client, s3_bucket) is not None
    record = next(r for r in caplog.records if skipped in r.getMessage())
    assert record.name == "tasks.recovery.catalogue"
    assert record.filename == "catalogue.py" and record.funcName == "latest_complete"


def test_a_thread_without_run_context_falls_back(prefect_harness, s3_client, s3_bucket, caplog):
    skipped = _incomplete_store(s3_client, s3_bucket)
    caplog.set_level(logging.INFO)
    found: list[str | None] = []

    @flow
    def threaded() -> None:
        worker = threading.Thread(target=lambda: found.append(_newest(s3_client, s3_bucket)))
        worker.start()
        worker.join()

    assert threaded(return_state=True).is_completed()
    assert found and found[0] is not None
    assert any(
        r.name == "tasks.recovery.catalogue" and skipped in r.getMessage() for r in caplog.records
    )


def test_the_release_helper_is_the_shared_one():
    from tasks.logs import get_logger

    assert release_get_logger is get_logger
    assert get_logger("x.y").name == "x.y"  # outside a run: the stdlib logger
