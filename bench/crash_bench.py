"""Crash benchmark on the sandbox: a release SIGKILLed mid-verification, then production restored.

Run: ``.venv/bin/python -m bench.crash_bench --runs 3 [--scenario manual|auto|both]
[--json out.json]`` from the project root. Starts its own sandbox and a real Prefect server
(``prefect server start``, SQLite, scheduler off) in a temporary directory, creates the
``veza-ops`` process work pool and registers ``prefect.yaml``'s deployments
(``prefect deploy --all``).

Every run seeds a fresh namespace pair (every service on 1.0.0, blue), records 1.0.0 as the
last committed release, and uses a copy of the shipped ``deployments/catalogue.yaml`` in which
only the namespaces and block names change: the lock settings stay the shipped ones (TTL 900 s,
no wait), so the old Lease blocks recovery unless its holder's run is known to be over.

- ``manual``: a release of a healthy 2.x version runs in its own process (as
  ``tests/release/helpers.release_killed_after_first_switch``, against the real server), is
  SIGKILLed a few seconds after its first switch (first service in verification), its run is
  marked Crashed through the API as ``tests/release/test_crash_recovery.py`` does (what the
  zombie automation or an operator does), and the ``rollback`` flow runs at once. Measured:
  SIGKILL -> every Service selects the last committed colour with all its pods ready, and the
  rollback flow's own wall time.
- ``auto``: a process worker (``PREFECT_FLOWS_HEARTBEAT_FREQUENCY=30``) runs the release through
  the ``release/production`` deployment; the zombie and crash-rollback automations are
  installed (``veza_ops.automations``). A few seconds after the first switch the worker's
  process group and the flow-run process (Prefect 3.9 starts it in its own session) are
  SIGKILLed, and a fresh worker is started at once (as a supervisor would restart it).
  Measured from the SIGKILL: run marked Crashed, the rollback deployment's run started, every
  Service back on the last committed release. Nobody touches anything.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHIPPED_CATALOGUE = ROOT / "deployments" / "catalogue.yaml"
COMMITTED, COMMITTED_COLOUR = "1.0.0", "blue"
KILL_AFTER_SWITCH_S = 3.0   # first service's verification: 4 intervals of 5 s (shipped pacing)
AUTO_TIMEOUT_S = 600.0
RELEASE_SCRIPT = """
import sys
sys.path.insert(0, sys.argv[1])
from flows.release import release
release(version=sys.argv[2], environment="production", catalogue_path=sys.argv[3],
        skip_build=True)
"""


def _stats(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    return {"min": min(values), "median": statistics.median(values), "max": max(values),
            "n": len(values)}


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def bench_catalogue(path: Path, *, staging: str, production: str, blocks: str) -> Path:
    """Copy the shipped catalogue, changing only namespaces and block names.

    Args:
        path: where to write the copy.
        staging: staging namespace.
        production: production namespace.
        blocks: the block name of the Kubernetes, Prometheus and Vault blocks.

    Returns:
        ``path``.
    """
    data = yaml.safe_load(SHIPPED_CATALOGUE.read_text())
    for name, ns in (("staging", staging), ("production", production)):
        env = data["environments"][name]
        env["namespace"] = ns
        env["kubernetes_block"] = env["prometheus_block"] = env["vault_block"] = blocks
        # The point of the bench: the shipped lock settings, untouched.
        assert env["lock_ttl_s"] == 900 and env.get("lock_wait_s", 0) == 0, env
    path.write_text(yaml.safe_dump(data))
    return path


def seed_committed(core: Any, namespace: str) -> None:
    """Record the seeded state (every service on 1.0.0, blue live) as a committed release."""
    from tasks.release.history import ReleaseRecord, record_release
    from tests.release import helpers as h

    now = datetime.now(UTC)
    record_release(core, namespace, ReleaseRecord(
        id=ReleaseRecord.new_id(now, "seeded"), environment="production", version=COMMITTED,
        started_at=now, finished_at=now, outcome="succeeded", triggered_by="crash-bench",
        images={n: f"{repo}:{COMMITTED}" for n, (repo, _, _) in h.SERVICES.items()},
        previous_images={n: f"{repo}:0.9.0" for n, (repo, _, _) in h.SERVICES.items()},
        colours={n: COMMITTED_COLOUR for n in h.ORDER},
        previous_colours={n: "green" for n in h.ORDER}))


def restored(apps: Any, core: Any, namespace: str) -> bool:
    """Every Service selects the committed colour, whose Deployment has all its pods ready."""
    from tests.release import helpers as h

    try:
        if set(h.selectors(core, namespace).values()) != {COMMITTED_COLOUR}:
            return False
        for name in h.ORDER:
            dep = apps.read_namespaced_deployment(f"{name}-{COMMITTED_COLOUR}", namespace)
            want = dep.spec.replicas or 0
            if want == 0 or (dep.status.ready_replicas or 0) < want:
                return False
            if dep.spec.template.spec.containers[0].image.rsplit(":", 1)[1] != COMMITTED:
                return False
    except Exception:  # an API hiccup while polling proves nothing either way
        return False
    return True


class Watch:
    """Polls a condition in a thread; remembers the first moment it held (time.time())."""

    def __init__(self, check: Callable[[], bool], interval: float = 0.1) -> None:
        self.at: float | None = None
        self._check, self._interval = check, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._check():
                self.at = time.time()
                return
            time.sleep(self._interval)

    def wait(self, timeout: float) -> float | None:
        self._thread.join(timeout)
        self._stop.set()
        return self.at


def wait_for(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _kill_tree(pid: int) -> int:
    """SIGKILL ``pid``'s process group and every descendant's; returns how many processes."""
    pids = [pid, *_descendants(pid)]
    groups = set()
    for p in pids:
        try:
            groups.add(os.getpgid(p))
        except ProcessLookupError:
            pass
    for group in groups:
        try:
            os.killpg(group, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for p in pids:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return len(pids)


class Bench:
    """The sandbox, the Prefect server and what each run needs."""

    def __init__(self, tmp: Path, sandbox: Any, server: Any, blocks: str) -> None:
        from tests.release import helpers as h

        self.tmp, self.sandbox, self.server, self.blocks = tmp, sandbox, server, blocks
        self.apps, self.core = h.apis(sandbox)
        self.worker_pid: int | None = None
        self.workers = 0

    def env(self) -> dict[str, str]:
        env: dict[str, str] = self.server.client_env()
        env["PYTHONPATH"] = str(ROOT)
        return env

    def prefect(self, *argv: str) -> None:
        done = subprocess.run([str(Path(sys.executable).with_name("prefect")), "--no-prompt",
                               *argv], cwd=ROOT, env=self.env(), capture_output=True,
                              text=True, timeout=600, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"prefect {' '.join(argv)}: {done.stdout}{done.stderr}")

    def start_worker(self) -> int:
        pid: int = self.server.start_worker(
            cwd=ROOT, log_dir=self.tmp / f"worker-{self.workers}",
            extra_env={**self.sandbox.env(), "PYTHONPATH": str(ROOT),
                       "PREFECT_WORKER_QUERY_SECONDS": "2"},
            heartbeat_s=30)
        self.worker_pid = pid
        self.workers += 1
        return pid

    def prepare(self, run: int, label: str) -> tuple[str, Path, str]:
        from tests.release import helpers as h

        suffix = uuid.uuid4().hex[:6]
        staging, production = f"crash-s-{suffix}", f"crash-p-{suffix}"
        self.sandbox.seed_environment(staging, "staging", version=COMMITTED)
        self.sandbox.seed_environment(production, "production", version=COMMITTED)
        seed_committed(self.core, production)
        catalogue = bench_catalogue(self.tmp / f"catalogue-{label}-{run}.yaml",
                                    staging=staging, production=production, blocks=self.blocks)
        version = f"2.{run}.{0 if label == 'manual' else 1}"
        h.push_all(self.sandbox, version)
        return production, catalogue, version

    def cleanup(self, production: str, catalogue: Path) -> None:
        staging = yaml.safe_load(catalogue.read_text())["environments"]["staging"]["namespace"]
        for ns in (staging, production):
            try:
                self.core.delete_namespace(ns)
            except Exception as exc:
                print(f"  (could not delete {ns}: {exc})", flush=True)

    def switched(self, production: str) -> bool:
        from tests.release import helpers as h

        try:
            return bool(h.selectors(self.core, production)["veza-backend-api"] == "green")
        except Exception:
            return False

    # --- 1. SIGKILL -> manual rollback ----------------------------------------------------

    def manual(self, run: int) -> dict[str, Any]:
        from prefect.client.orchestration import get_client
        from prefect.states import Crashed

        from flows.rollback import rollback
        from tasks.release.leases import LEASE_NAME, RUN_ANNOTATION

        production, catalogue, version = self.prepare(run, "manual")
        workdir = self.tmp / f"manual-{run}"
        workdir.mkdir()
        log = open(workdir / "release.log", "wb")
        proc = subprocess.Popen([sys.executable, "-c", RELEASE_SCRIPT, str(ROOT), version,
                                 str(catalogue)], env=self.env(), cwd=workdir, stdout=log,
                                stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: self.switched(production) or proc.poll() is not None, 600,
                     "the first switch")
            if proc.poll() is not None:
                raise RuntimeError(f"the release ended before its first switch: {workdir}")
            time.sleep(KILL_AFTER_SWITCH_S)
            killed_at = time.time()
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
            log.close()
        watch = Watch(lambda: restored(self.apps, self.core, production))
        from kubernetes import client as k8s

        lease = k8s.CoordinationV1Api(self.core.api_client).read_namespaced_lease(
            LEASE_NAME, production)
        run_id = ((lease.metadata.annotations if lease.metadata else None) or {})[RUN_ANNOTATION]
        with get_client(sync_client=True) as client:  # as test_crash_recovery does
            client.set_flow_run_state(run_id, Crashed(message="SIGKILLed (crash bench)"),
                                      force=True)
        marked_at = time.time()
        summary = rollback(environment="production", catalogue_path=str(catalogue),
                           triggered_by="crash-bench")
        rollback_done = time.time()
        back = watch.wait(120)
        self.cleanup(production, catalogue)
        return {
            "outcome": summary.outcome,
            "mark_crashed_s": marked_at - killed_at,
            "rollback_wall_s": rollback_done - marked_at,
            "kill_to_restored_s": None if back is None else back - killed_at,
            "load": _load(),
        }

    # --- 2. worker SIGKILL -> automatic rollback ------------------------------------------

    def auto(self, run: int) -> dict[str, Any]:
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.actions import DeploymentUpdate
        from prefect.client.schemas.filters import (
            DeploymentFilter,
            DeploymentFilterId,
            FlowRunFilter,
            FlowRunFilterStartTime,
        )
        from prefect.deployments import run_deployment

        production, catalogue, version = self.prepare(run, "auto")
        with get_client(sync_client=True) as client:
            # The automation passes environment and triggered_by; the catalogue comes from
            # the deployment's own parameters: point them at this run's copy.
            rollback_dep = client.read_deployment_by_name("rollback/production")
            client.update_deployment(rollback_dep.id, DeploymentUpdate(
                parameters={**rollback_dep.parameters, "catalogue_path": str(catalogue)}))
        flow_run: Any = run_deployment("release/production", timeout=0, parameters={
            "version": version, "skip_build": True, "catalogue_path": str(catalogue)})
        release_id = flow_run.id
        wait_for(lambda: self.switched(production), 600, "the first switch")
        time.sleep(KILL_AFTER_SWITCH_S)
        killed_at = time.time()
        assert self.worker_pid is not None
        killed = _kill_tree(self.worker_pid)
        self.server.worker_pids.remove(self.worker_pid)
        watch = Watch(lambda: restored(self.apps, self.core, production))
        self.start_worker()  # the supervisor's restart
        restarted_at = time.time()
        since = datetime.fromtimestamp(killed_at, UTC)

        def crashed() -> Any:
            with get_client(sync_client=True) as client:
                state = client.read_flow_run(release_id).state
            return state if state is not None and state.type.value == "CRASHED" else None

        def rollback_run() -> Any:
            with get_client(sync_client=True) as client:
                runs = client.read_flow_runs(
                    deployment_filter=DeploymentFilter(id=DeploymentFilterId(
                        any_=[rollback_dep.id])),
                    flow_run_filter=FlowRunFilter(
                        start_time=FlowRunFilterStartTime(after_=cast(Any, since))))
            return next((r for r in runs if r.start_time is not None), None)

        crash_state = wait_for(crashed, AUTO_TIMEOUT_S, "the release run to be Crashed", 1)
        rb = wait_for(rollback_run, AUTO_TIMEOUT_S, "the rollback run to start", 1)
        back = watch.wait(AUTO_TIMEOUT_S)

        def finished() -> Any:
            with get_client(sync_client=True) as client:
                state = client.read_flow_run(rb.id).state
            return state if state is not None and state.is_final() else None

        rb_state = wait_for(finished, AUTO_TIMEOUT_S, "the rollback run to finish", 1)
        with get_client(sync_client=True) as client:
            rb = client.read_flow_run(rb.id)
        assert rb.start_time is not None
        self.cleanup(production, catalogue)
        return {
            "outcome": rb_state.type.value,
            "processes_killed": killed,
            "worker_restart_s": restarted_at - killed_at,
            "kill_to_crashed_s": crash_state.timestamp.timestamp() - killed_at,
            "kill_to_rollback_created_s": (rb.created.timestamp() - killed_at
                                           if rb.created else None),
            "kill_to_rollback_started_s": rb.start_time.timestamp() - killed_at,
            "kill_to_restored_s": None if back is None else back - killed_at,
            "rollback_run_s": rb.total_run_time.total_seconds(),
            "rollback_triggered_by": rb.parameters.get("triggered_by"),
            "load": _load(),
        }


MANUAL_KEYS = ("kill_to_restored_s", "rollback_wall_s", "mark_crashed_s")
AUTO_KEYS = ("kill_to_crashed_s", "kill_to_rollback_created_s", "kill_to_rollback_started_s",
             "kill_to_restored_s", "rollback_run_s", "worker_restart_s")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print (or write) the numbers.

    Args:
        argv: command-line arguments.

    Returns:
        Exit status.
    """
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--scenario", choices=("manual", "auto", "both"), default="both")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary directory (logs) when done")
    args = parser.parse_args(argv)

    from sandbox.launchers.prefect_server import start_prefect_server
    from sandbox.stack import up
    from tests.release import helpers as h
    from veza_ops.automations import ensure_crash_rollback_automation, ensure_zombie_automation
    from veza_ops.demo_stack import prefect_settings

    results: dict[str, Any] = {"catalogue": "deployments/catalogue.yaml (namespaces and blocks "
                               "changed only)", "load_before": _load(), "manual": [],
                               "auto": []}
    tmp = Path(tempfile.mkdtemp(prefix="crash-bench-"))
    print(f"working directory {tmp}", flush=True)
    os.environ["PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED"] = "false"  # no scheduled backups
    sandbox = up(tmp / "sandbox", seed=False)
    server = None
    try:
        server = start_prefect_server(tmp / "prefect", ui=False, timeout=300)
        with prefect_settings(server):
            bench = Bench(tmp, sandbox, server, h.register_blocks(sandbox))
            bench.prefect("work-pool", "create", "veza-ops", "--type", "process", "--overwrite")
            bench.prefect("deploy", "--all")
            scenarios = ["manual", "auto"] if args.scenario == "both" else [args.scenario]
            for scenario in scenarios:
                if scenario == "auto":
                    # Installed only now: in `manual` the crash is marked by hand and the
                    # crash-rollback automation would race the manual rollback.
                    ensure_zombie_automation()
                    ensure_crash_rollback_automation()
                    bench.start_worker()
                for run in range(args.runs):
                    entry = getattr(bench, scenario)(run)
                    results[scenario].append(entry)
                    print(f"{scenario} run {run}: " + ", ".join(
                        f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}"
                        for k, v in entry.items()), flush=True)
    finally:
        if server is not None:
            server.stop()
        sandbox.down()
    for scenario, keys in (("manual", MANUAL_KEYS), ("auto", AUTO_KEYS)):
        runs = results[scenario]
        results[f"{scenario}_stats"] = {
            k: _stats([r[k] for r in runs if isinstance(r.get(k), float)]) for k in keys}
    print(f"\n{'measure':<42} {'min':>8} {'median':>8} {'max':>8} {'n':>3}")
    for scenario in ("manual", "auto"):
        for key, st in results[f"{scenario}_stats"].items():
            if st:
                print(f"{scenario + ': ' + key:<42} {st['min']:8.1f} {st['median']:8.1f} "
                      f"{st['max']:8.1f} {st['n']:3d}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    if not args.keep:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
