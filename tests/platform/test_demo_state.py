"""The demo's stale-state cleanup: stops what a previous demo recorded, and nothing else."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from sandbox.procs import pid_alive, start_ticks, stop_pid, wait_until
from veza_ops.demo import Step, summary_table
from veza_ops.demo_stack import STATE_FILE, clean_stale

IDLE = [sys.executable, "-c", "import sys; sys.stdin.read()"]


def _idle() -> subprocess.Popen[bytes]:
    return subprocess.Popen(IDLE, stdin=subprocess.PIPE, start_new_session=True)


def test_clean_stale_stops_recorded_processes_only(tmp_path: Path) -> None:
    left_over, stranger = _idle(), _idle()
    try:
        (tmp_path / "prefect").mkdir()
        state = {
            "prefect-server": {"pid": left_over.pid, "ticks": start_ticks(left_over.pid)},
            # A recycled pid: same number, another start time: must not be signalled.
            "s3": {"pid": stranger.pid, "ticks": -1},
        }
        (tmp_path / STATE_FILE).write_text(json.dumps(state))
        clean_stale(tmp_path)
        wait_until(lambda: left_over.poll() is not None, timeout=30, what="the left-over")
        assert pid_alive(stranger.pid)
        assert not (tmp_path / STATE_FILE).exists()
        assert not (tmp_path / "prefect").exists()
    finally:
        for proc in (left_over, stranger):
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
