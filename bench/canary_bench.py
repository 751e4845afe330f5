"""Canary benchmark on the sandbox: a bad canary taking traffic -> every weight back at 0 %.

Run: ``.venv/bin/python -m bench.canary_bench --runs 3 [--interval 2] [--json out.json]`` from
the project root. Starts its own sandbox in a temporary directory and a temporary Prefect API
(or uses ``--prefect-api-url``), then for each run seeds a fresh production namespace (the four
services, one replica each, ``--rate`` requests a second per Service) and releases a version
whose last service answers ``--error-rate`` 5xx (the others are healthy) with the canary
strategy. An observer thread reads every VirtualService's canary weight every
``--poll`` seconds from the emulator: the span measured is from the first reading with any
weight above 0 (the canary takes traffic) to the first reading after it with every weight at 0.
The run's own record gives the same span from inside (``detection_s`` + ``restoration_s``: the
step's weights written -> the failing verdict -> the last weight restored). Each is reported in
seconds and as a ratio to the analysis interval; the goal (issue #13) is at most two intervals
plus 2 s.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

Sample = tuple[float, dict[str, int]]


def traffic_span(samples: Sequence[Sample]) -> tuple[float, float] | None:
    """When the canary first took traffic and when every weight was next at 0 (pure).

    Args:
        samples: (monotonic time, service -> canary weight) readings in time order; a
            service missing from a reading (its VirtualService not written yet) counts as 0.

    Returns:
        ``(first reading with any weight > 0, first later reading with every weight at 0)``,
        or None when the canary never took traffic or its weights never all came back to 0.
    """
    start = next((t for t, w in samples if any(v > 0 for v in w.values())), None)
    if start is None:
        return None
    end = next((t for t, w in samples if t > start and not any(w.values())), None)
    return None if end is None else (start, end)


def _stats(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


class Observer:
    """Reads every VirtualService's canary weight at a fixed pace, in a thread."""

    def __init__(self, read: Callable[[], dict[str, int]], poll_s: float) -> None:
        self.read = read
        self.poll_s = poll_s
        self.samples: list[Sample] = []
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Observer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append((time.monotonic(), self.read()))
            except Exception:  # a reading the emulator refused: the next one counts
                self.errors += 1
            self._stop.wait(self.poll_s)


def _weights(custom: Any, namespace: str, services: list[str]) -> dict[str, int]:
    from kubernetes import client as k8s

    from tasks.release.canary_mesh import ISTIO, canary_weight

    out = {}
    for service in services:
        try:
            vs = custom.get_namespaced_custom_object(*ISTIO, namespace, "virtualservices",
                                                     service)
        except k8s.ApiException as exc:
            if exc.status != 404:
                raise
            vs = None
        out[service] = canary_weight(vs if isinstance(vs, dict) else None)
    return out


def _catalogue(path: Path, namespace: str, blocks: str, interval_s: float,
               min_requests: int) -> Path:
    from tests.release import helpers as h

    h.write_catalogue(path, staging_ns="unused", production_ns=namespace, blocks=blocks,
                      staging=False, interval_s=interval_s, intervals=2, failure_limit=0,
                      max_no_data=15)
    data = yaml.safe_load(path.read_text())
    data["environments"]["production"]["strategy"] = "canary"
    for service in data["services"].values():
        service["smoke_paths"] = ["/health"]  # the bad version fails its analysis, not smoke
        service["analysis"]["min_requests"] = min_requests
    path.write_text(yaml.safe_dump(data))
    return path


def one_run(sandbox: Any, blocks: str, workdir: Path, *, run: int, interval_s: float,
            error_rate: float, rate: float, poll_s: float,
            min_requests: int = 0) -> dict[str, Any]:
    """Seed a namespace, release a bad canary, measure, delete the namespace.

    Args:
        sandbox: the sandbox (``sandbox.stack.Sandbox``).
        blocks: the registered blocks' name.
        workdir: where the catalogue is written.
        run: the run's number (names the version).
        interval_s: the analysis interval.
        error_rate: the bad service's share of 5xx answers.
        rate: requests a second per Service.
        poll_s: the observer's pace.
        min_requests: the analysis' ``min_requests`` (fewer requests in the window: no data).

    Returns:
        The run's numbers.
    """
    from kubernetes import client as k8s

    from errors import VerificationError
    from flows.release import release
    from sandbox.registry import Behaviour
    from tasks.release.history import last_release
    from tests.release import helpers as h

    namespace = f"bench-canary-{uuid.uuid4().hex[:6]}"
    sandbox.seed_environment(namespace, "production", replicas=1, traffic_rate=rate)
    apps, core = h.apis(sandbox)
    custom = k8s.CustomObjectsApi(apps.api_client)
    catalogue = _catalogue(workdir / f"catalogue-{run}.yaml", namespace, blocks, interval_s,
                           min_requests)
    version, bad = f"6.{run}.0", h.ORDER[-1]
    for name, (repo, _, _) in h.SERVICES.items():
        sandbox.registry.push(f"{repo}:{version}",
                              Behaviour(error_rate=error_rate if name == bad else 0.0))
    try:
        with Observer(lambda: _weights(custom, namespace, h.ORDER), poll_s) as observer:
            try:
                release(version=version, environment="production", skip_build=True,
                        catalogue_path=str(catalogue))
                raise RuntimeError(f"the bad canary {version} was promoted")
            except VerificationError:
                pass
            final = _weights(custom, namespace, h.ORDER)
        record = last_release(core, namespace)
        assert record is not None and record.outcome == "rolled-back", record
        assert not any(final.values()), final
        span = traffic_span(observer.samples)
        assert span is not None, "the observer never saw the canary take traffic"
        inside = record.timings.get("detection_s", 0.0) + record.timings.get(
            "restoration_s", 0.0)
        observed = span[1] - span[0]
        promoted = [c.name for c in record.checks if c.name.startswith("canary step")]
        return {"observed_s": observed, "observed_intervals": observed / interval_s,
                "record_s": inside, "record_intervals": inside / interval_s,
                "detection_s": record.timings.get("detection_s"),
                "restoration_s": record.timings.get("restoration_s"),
                "readings": len(observer.samples), "reading_errors": observer.errors,
                "steps_passed": len(promoted), "reason": record.reason}
    finally:
        core.delete_namespace(namespace)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print (or write) the numbers.

    Args:
        argv: command-line arguments.

    Returns:
        Exit status (1 when the goal was missed by the median).
    """
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--interval", type=float, default=2.0, help="analysis interval (s)")
    parser.add_argument("--error-rate", type=float, default=0.5)
    parser.add_argument("--rate", type=float, default=50.0,
                        help="requests/s per Service (the sandbox allows up to 50)")
    parser.add_argument("--poll", type=float, default=0.05, help="observer pace (s)")
    parser.add_argument("--min-requests", type=int, default=0,
                        help="analysis.min_requests: fewer requests in the window is no data "
                             "(default 0, the catalogue's default; see README_canary.md)")
    parser.add_argument("--prefect-api-url", default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    from contextlib import AbstractContextManager

    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    from sandbox.stack import up
    from tests.release import helpers as h

    goal_s = 2 * args.interval + 2.0
    results: dict[str, Any] = {
        "interval_s": args.interval, "error_rate": args.error_rate, "rate": args.rate,
        "poll_s": args.poll, "min_requests": args.min_requests, "goal_s": goal_s, "runs": []}
    harness: AbstractContextManager[Any] = (
        temporary_settings({PREFECT_API_URL: args.prefect_api_url}) if args.prefect_api_url
        else prefect_test_harness(server_startup_timeout=180))
    with tempfile.TemporaryDirectory(prefix="canary-bench-") as tmp, harness:
        sandbox = up(Path(tmp) / "sandbox", seed=False)
        try:
            blocks = h.register_blocks(sandbox)
            for run in range(args.runs):
                entry = one_run(sandbox, blocks, Path(tmp), run=run, interval_s=args.interval,
                                error_rate=args.error_rate, rate=args.rate, poll_s=args.poll,
                                min_requests=args.min_requests)
                results["runs"].append(entry)
                print(f"run {run}: observed {entry['observed_s']:.2f} s "
                      f"({entry['observed_intervals']:.2f} intervals), record "
                      f"{entry['record_s']:.2f} s (detection {entry['detection_s']:.2f} + "
                      f"restoration {entry['restoration_s']:.2f}), failed after "
                      f"{entry['steps_passed']} passed step(s)", flush=True)
        finally:
            sandbox.down()
    for key in ("observed_s", "observed_intervals", "record_s", "record_intervals",
                "detection_s", "restoration_s"):
        results[key] = _stats([r[key] for r in results["runs"] if r.get(key) is not None])
    median = results["observed_s"].get("median", float("inf"))
    results["goal_met"] = median <= goal_s
    print(json.dumps({k: v for k, v in results.items() if k != "runs"}, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0 if results["goal_met"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
