"""One backup of a database at a time: the global concurrency limit, on a real Prefect API."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from errors import BackupBusyError, InvalidInputError, NotFoundError
from flows.backup import backup_flow
from tasks.recovery.backup_slot import (
    HOURLY_MAX_WAIT_S,
    backup_limit_name,
    slot_wait_s,
)

DEADLINE_S = 120


def wait_for(condition: Callable[[], bool], what: str, deadline_s: float = DEADLINE_S) -> None:
    end = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


class Waiting(logging.Handler):
    """Counts the "waiting for the slot" records of the backup flows of this process."""

    def __init__(self, limit: str) -> None:
        super().__init__(logging.INFO)
        self.limit = limit
        self.count = 0  # emit() runs under the handler's own lock

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "waiting up to" in message and repr(self.limit) in message:
            self.count += 1


def test_limit_name_is_per_database_and_valid_for_prefect():
    assert backup_limit_name("veza_db") == "veza-ops-backup-veza_db"
    assert backup_limit_name("a%b&c<d>e") == "veza-ops-backup-a-b-c-d-e"


def test_wait_depends_on_the_kind_and_can_be_set():
    assert slot_wait_s("full", 3 * 3600) == 3 * 3600  # a full waits out a running attempt
    assert slot_wait_s("hourly", 3 * 3600) == HOURLY_MAX_WAIT_S  # never into the next hour
    assert slot_wait_s("hourly", 600) == 600
    assert slot_wait_s("hourly", 3 * 3600, wait_minutes=2) == 120
    for bad in (0, -1, float("nan"), float("inf")):
        with pytest.raises(InvalidInputError) as err:
            slot_wait_s("full", 60, wait_minutes=bad)
        assert err.value.field == "wait_minutes"


def _hold(limit: str) -> tuple[threading.Event, threading.Event, threading.Thread]:
    """Hold the limit's slot in a thread (like a running backup) until `release` is set."""
    from prefect.concurrency.sync import concurrency

    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        with concurrency(limit, timeout_seconds=30, strict=True):
            held.set()
            release.wait(DEADLINE_S)

    thread = threading.Thread(target=holder, daemon=True)
    thread.start()
    assert held.wait(DEADLINE_S), "the test could not take the slot"
    return held, release, thread


def test_a_nightly_and_an_hourly_never_overlap(saved_blocks, seeded_db):
    """Both wait while the slot is held; released, they run one after the other."""
    limit = backup_limit_name(seeded_db.dbname)
    handler = Waiting(limit)
    run_logs = logging.getLogger("prefect.flow_runs")  # the flows' run loggers
    run_logs.addHandler(handler)
    results: dict[str, Any] = {}

    def run(kind: str) -> None:
        state = backup_flow(
            database_block=saved_blocks["database_block"],
            store_block=saved_blocks["store_block"],
            encryption_block=saved_blocks["encryption_block"],
            kind=kind, retries=0, return_state=True,
        )
        results[kind] = state.result(raise_on_failure=False)

    try:
        _, release, holder = _hold(limit)
        runs = [threading.Thread(target=run, args=(kind,)) for kind in ("full", "hourly")]
        for thread in runs:
            thread.start()
        wait_for(lambda: handler.count >= 2, "both backups to wait for the slot")
        released_at = _utc_now()
        release.set()
        holder.join(DEADLINE_S)
        for thread in runs:
            thread.join(DEADLINE_S)
    finally:
        run_logs.removeHandler(handler)

    full, hourly = results["full"], results["hourly"]
    assert not isinstance(full, BaseException), full
    assert not isinstance(hourly, BaseException), hourly
    first, second = sorted((full, hourly), key=lambda m: m.started_at)
    assert first.started_at >= released_at  # neither ran while the slot was held
    assert first.finished_at <= second.started_at  # and never both at once


def _utc_now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


def test_a_backup_that_waits_too_long_is_refused_naming_the_limit(saved_blocks, seeded_db):
    limit = backup_limit_name(seeded_db.dbname)
    _, release, holder = _hold(limit)
    try:
        with pytest.raises(BackupBusyError) as err:
            backup_flow(database_block=saved_blocks["database_block"],
                        store_block=saved_blocks["store_block"],
                        encryption_block=saved_blocks["encryption_block"],
                        kind="hourly", wait_minutes=0.05)
    finally:
        release.set()
        holder.join(DEADLINE_S)
    message = str(err.value)
    assert limit in message and "refused" in message and "Prefect UI" in message


def test_a_missing_limit_fails_the_backup_and_names_the_fix(saved_blocks, seeded_db):
    name = f"db-nolimit-{uuid.uuid4().hex[:8]}"
    dbname = f"veza_nolimit_{uuid.uuid4().hex[:8]}"  # no limit was created for it
    seeded_db.model_copy(update={"dbname": dbname}).save(name)
    with pytest.raises(NotFoundError) as err:
        backup_flow(database_block=name, store_block=saved_blocks["store_block"],
                    encryption_block=saved_blocks["encryption_block"])
    message = str(err.value)
    assert backup_limit_name(dbname) in message
    assert "veza-ops automations install" in message and "prefect gcl create" in message


def test_ensure_backup_limit_is_idempotent_and_repairs_the_limit(prefect_harness):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate

    from veza_ops.automations import ensure_backup_limit

    database = f"veza_{uuid.uuid4().hex[:8]}"
    name = ensure_backup_limit(database)
    assert name == backup_limit_name(database)
    with get_client(sync_client=True) as client:
        client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(limit=3))
    assert ensure_backup_limit(database) == name
    with get_client(sync_client=True) as client:
        limit = client.read_global_concurrency_limit_by_name(name)
        same, offset = [], 0
        while page := client.read_global_concurrency_limits(limit=200, offset=offset):
            same += [x for x in page if x.name == name]  # the server is shared: page it all
            offset += len(page)
    assert limit.limit == 1 and limit.active and len(same) == 1
