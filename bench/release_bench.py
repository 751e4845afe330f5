"""Release benchmark on the sandbox: detection and restoration times, four-service wall time.

Run: ``.venv/bin/python -m bench.release_bench --runs 3 [--json out.json]`` from the project
root. Starts its own sandbox in a temporary directory and a temporary Prefect API, then for each
run seeds a fresh namespace pair and performs one good release (wall time) and one release of a
version answering 20 % errors (detection: first bad switch -> rollback decided; restoration:
decided -> last selector back).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

INTERVAL_S, INTERVALS, FAILURE_LIMIT, MAX_NO_DATA = 2.0, 3, 0, 1
ANALYSIS = {"interval_s": INTERVAL_S, "intervals": INTERVALS, "failure_limit": FAILURE_LIMIT,
            "max_no_data": MAX_NO_DATA}


def _stats(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print (or write) the numbers.

    Args:
        argv: command-line arguments.

    Returns:
        Exit status.
    """
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    from prefect.testing.utilities import prefect_test_harness

    from errors import VerificationError
    from flows.release import release
    from sandbox.stack import up
    from tasks.release.history import last_release
    from tests.release import helpers as h

    results: dict[str, Any] = {"analysis": ANALYSIS, "runs": []}
    with tempfile.TemporaryDirectory(prefix="release-bench-") as tmp, \
            prefect_test_harness(server_startup_timeout=180):
        sandbox = up(Path(tmp) / "sandbox", seed=False)
        try:
            blocks = h.register_blocks(sandbox)
            _, core = h.apis(sandbox)
            for run in range(args.runs):
                suffix = uuid.uuid4().hex[:6]
                staging, production = f"bench-s-{suffix}", f"bench-p-{suffix}"
                sandbox.seed_environment(staging, "staging")
                sandbox.seed_environment(production, "production")
                catalogue = h.write_catalogue(
                    Path(tmp) / f"catalogue-{run}.yaml", staging_ns=staging,
                    production_ns=production, blocks=blocks, keep_old_colour_s=0,
                    e2e_command=["{python}", "-c", "pass"], interval_s=INTERVAL_S,
                    intervals=INTERVALS, failure_limit=FAILURE_LIMIT, max_no_data=MAX_NO_DATA)
                good, bad = f"5.{run}.0", f"5.{run}.1"
                h.push_all(sandbox, good)
                started = time.monotonic()
                release(version=good, environment="production", skip_build=True,
                        catalogue_path=str(catalogue))
                wall = time.monotonic() - started
                h.push_all(sandbox, bad, error_rate=0.2)
                try:
                    release(version=bad, environment="production", skip_build=True,
                            catalogue_path=str(catalogue))
                except VerificationError:
                    pass
                record = last_release(core, production)
                assert record is not None and record.outcome == "rolled-back"
                entry = {"wall_s": wall, "detection_s": record.timings.get("detection_s"),
                         "restoration_s": record.timings.get("restoration_s")}
                results["runs"].append(entry)
                print(f"run {run}: " + ", ".join(f"{k} {v:.2f}" for k, v in entry.items()
                                                 if v is not None), flush=True)
                for ns in (staging, production):
                    core.delete_namespace(ns)
        finally:
            sandbox.down()
    for key in ("wall_s", "detection_s", "restoration_s"):
        results[key] = _stats([r[key] for r in results["runs"] if r.get(key) is not None])
    print(json.dumps({k: v for k, v in results.items() if k != "runs"}, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
