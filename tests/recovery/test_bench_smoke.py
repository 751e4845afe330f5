"""The recovery benchmark runs end to end once on the smallest database (no timing asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from prefect.settings import PREFECT_API_URL

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_bench_runs_tiny(prefect_harness, tmp_path):
    out = tmp_path / "bench.json"
    env_api = PREFECT_API_URL.value()  # reuse the session's API: no second server to start
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.recovery_bench",
            # smallest data whose output still shows in the table (0.1 MiB after rounding):
            # 1000 rows of 128 random bytes; each variant once (the full run repeats 3 times)
            "--rows",
            "1000",
            "--random-bytes",
            "128",
            "--repeat",
            "1",
            "--prefect-api-url",
            env_api,
            "--json",
            str(out),
            "--workdir",
            str(tmp_path / "work"),
        ],
        cwd=tmp_path,
        env={**_clean_env(), "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=560,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads(out.read_text())
    rows = {(r["phase"], r["variant"].split()[0]): r for r in summary["results"]}
    assert len(rows) == len(summary["results"]), "one run per variant with --repeat 1"
    assert set(rows) == {("backup", v) for v in ("(a)", "(b)", "(c)", "(c0)")} | {
        ("restore", v) for v in ("(a)", "(b)", "(c)")
    }
    for (phase, variant), row in rows.items():
        assert row["wall_s"] > 0 and row["tree_peak_rss_mib"] > 0 and row["rep"] == 1
        if phase == "backup":
            assert row["output_mib"] > 0
        else:
            assert row["note"] == "data matches"
        if variant.startswith("(c"):  # the flows: their own timings, read from the Prefect API
            assert {"start+imports", "flow call", "exit", "flow_run"} <= set(row["prefect"])
    assert rows[("backup", "(c)")]["note"] == "2/2 tables checksummed"
    assert rows[("backup", "(c0)")]["note"] == "0/2 tables checksummed", "the switch works"
    assert "run_backup" in rows[("backup", "(c)")]["prefect"]
    assert "task:backup-attempt" in rows[("backup", "(c)")]["prefect"]
    assert set(summary["ratios"]) == {
        "backup (c)/(b)", "backup (c)/(a)", "backup (c0)/(b)", "backup (c)/(c0)",
        "restore (c)/(b)", "restore (c)/(a)", "backup run_backup(c)/(b)",
    }
    assert [s["runs"] for s in summary["summary"]] == [1] * 7
    assert summary["commit"] and len(summary["load_1min_range"]) == 2
    assert "| backup | (c) backup flow | 1 |" in proc.stdout
    assert "| backup | (c0) backup flow, no checksums | 1 |" in proc.stdout
    assert not (tmp_path / "work" / "scratch").exists(), "local dump files are cleaned up"


def _clean_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
