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
            # 1000 rows of 128 random bytes; the bench runs each variant once
            "--rows",
            "1000",
            "--random-bytes",
            "128",
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
    rows = {(r["phase"], r["variant"][:3]): r for r in summary["results"]}
    assert set(rows) == {(p, v) for p in ("backup", "restore") for v in ("(a)", "(b)", "(c)")}
    for (phase, _), row in rows.items():
        assert row["wall_s"] > 0 and row["tree_peak_rss_mib"] > 0
        if phase == "backup":
            assert row["output_mib"] > 0
        else:
            assert row["note"] == "data matches"
    assert len(summary["ratios"]) == 2
    assert "| backup | (c) backup flow |" in proc.stdout
    assert not (tmp_path / "work" / "scratch").exists(), "local dump files are cleaned up"


def _clean_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
