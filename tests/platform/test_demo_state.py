"""The demo's state: stale-state cleanup (what a previous demo recorded, nothing else), the
summary, and the PITR deployments pointed at the demo's archiving cluster."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from sandbox.procs import pid_alive, stop_pid, wait_until
from sandbox.stack import STATE_FILE, read_state
from veza_ops.demo import Step, summary_table
from veza_ops.demo_stack import Stack, clean_stale

IDLE = [sys.executable, "-c", "import sys; sys.stdin.read()"]


def _idle() -> subprocess.Popen[bytes]:
    return subprocess.Popen(IDLE, stdin=subprocess.PIPE, start_new_session=True)


def test_demo_records_in_the_sandbox_state_and_clean_stale_stops_it_only(tmp_path: Path) -> None:
    left_over, recycled = _idle(), _idle()
    try:
        (tmp_path / "prefect").mkdir()
        pg_root = tmp_path / "pg-root"
        pg_root.mkdir()
        stack = Stack(tmp_path)
        stack.record("postgres", left_over.pid, remove=[pg_root])
        stack.record("prefect-worker", recycled.pid, stop_children=True)
        state = read_state(stack.sandbox_dir)
        assert state is not None and state["extras"] == ["postgres", "prefect-worker"]
        # A recycled pid: same number, another start time: must not be signalled.
        state["processes"]["prefect-worker"]["ticks"] = -1
        (stack.sandbox_dir / STATE_FILE).write_text(json.dumps(state))
        clean_stale(tmp_path)
        wait_until(lambda: left_over.poll() is not None, timeout=30, what="the left-over")
        assert pid_alive(recycled.pid)
        assert read_state(stack.sandbox_dir) is None
        assert not (tmp_path / "prefect").exists() and not pg_root.exists()
    finally:
        for proc in (left_over, recycled):
            stop_pid(proc.pid)


def test_summary_flags_unexpected_outcomes() -> None:
    good = Step("good release", "release/production", {}, 0, exit_code=0, state="Completed",
                link="http://ui/runs/flow-run/1", duration_s=12.3)
    bad = Step("bad release", "release/production", {}, 1, exit_code=0, state="Completed")
    table = summary_table([good, bad])
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["run", "outcome", "expected"]
    assert "http://ui/runs/flow-run/1" in lines[2] and "12 s" in lines[2]
    assert " NO " in lines[3] and not bad.as_expected and good.as_expected


def test_the_demo_points_the_pitr_deployments_at_its_cluster_and_leaves_them_active(
    prefect_harness: None,
) -> None:
    """The demo's cluster archives WAL: its PITR schedules run against it, none paused."""
    import uuid

    from prefect.client.orchestration import get_client

    from blocks.pgbackrest import DatabaseHost
    from veza_ops.demo_pitr import point_pitr_deployments

    suffix = uuid.uuid4().hex[:6]
    host = DatabaseHost(data_directory=f"/tmp/demo-{suffix}/data", port=54321)
    with get_client(sync_client=True) as client:
        made = {}
        for flow, name, entrypoint in [
            ("pitr-check", f"every-5-min-{suffix}", "flows/pitr_check.py:pitr_check"),
            ("restore-test", f"pitr-monthly-{suffix}",
             "flows/pitr_restore_test.py:pitr_restore_test_flow"),
            ("restore-test", f"monthly-{suffix}", "flows/restore_test.py:restore_test_flow"),
        ]:
            made[name] = client.create_deployment(
                flow_id=client.create_flow_from_name(flow), name=name, entrypoint=entrypoint,
                parameters={"repository_block": "veza-pitr"}, paused=True)
        pointed = point_pitr_deployments(host, check_database_block="veza-db")
        read = {name: client.read_deployment(i) for name, i in made.items()}
    assert f"pitr-check/every-5-min-{suffix}" in pointed
    assert f"restore-test/monthly-{suffix}" not in pointed
    for name in (f"every-5-min-{suffix}", f"pitr-monthly-{suffix}"):
        assert not read[name].paused
        assert read[name].parameters["host"] == host.model_dump(mode="json")
    # pitr-check writes a marker each run: WAL keeps flowing on the idle demo database
    assert read[f"every-5-min-{suffix}"].parameters["database_block"] == "veza-db"
    assert "database_block" not in read[f"pitr-monthly-{suffix}"].parameters
    assert read[f"monthly-{suffix}"].paused
    assert read[f"monthly-{suffix}"].parameters == {"repository_block": "veza-pitr"}
