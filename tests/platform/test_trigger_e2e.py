"""CI's path end to end: a real Prefect server with basic auth, a worker, `veza-ops trigger`."""

from __future__ import annotations

import re
import secrets
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from sandbox.procs import wait_until
from tests.fixtures.recovery import SEED_SQL, create_empty_db
from tests.release import helpers as h

# The module's fixture (its own Prefect server, `prefect deploy --all`, a worker) took 285 s on
# a loaded machine: the limit is for each test's own call (the fixture has its own deadlines).
pytestmark = pytest.mark.timeout(300, func_only=True)
PROJECT_ROOT = Path(__file__).resolve().parents[2]
PREFECT = str(Path(sys.executable).with_name("prefect"))
RUN_ID = re.compile(r"flow run \S+ \(([0-9a-f-]{36})\)")


@dataclass
class Platform:
    """The module's Prefect server (basic auth), its worker, and what was registered on it."""

    server: Any
    sandbox: Any
    blocks: str
    bucket: str
    s3: Any

    def env(self, *, with_auth: bool = True) -> dict[str, str]:
        env: dict[str, str] = self.server.client_env(with_auth=with_auth)
        env["PYTHONPATH"] = str(PROJECT_ROOT)
        return env

    def trigger(self, *args: str, with_auth: bool = True) -> subprocess.CompletedProcess[str]:
        """Run the real ``veza-ops trigger`` CLI in a subprocess."""
        return subprocess.run(
            [sys.executable, "-m", "veza_ops", "trigger", *args],
            cwd=PROJECT_ROOT, env=self.env(with_auth=with_auth), capture_output=True,
            text=True, timeout=240, check=False,
        )

    def count_runs(self) -> int:
        """How many flow runs the server has, read over HTTP with basic auth."""
        user, password = self.server.auth_string.split(":", 1)
        answer = httpx.post(f"{self.server.api_url}/flow_runs/count", json={},
                            auth=(user, password), timeout=10)
        answer.raise_for_status()
        return int(answer.json())


def _prefect(argv: list[str], env: dict[str, str]) -> None:
    done = subprocess.run([PREFECT, "--no-prompt", *argv], cwd=PROJECT_ROOT, env=env,
                          capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="module")
def platform(
    tmp_path_factory: pytest.TempPathFactory, sandbox_stack: Any, pg_server: Any,
    s3_server: Any, gpg_key: Any,
) -> Iterator[Platform]:
    from sandbox.launchers.prefect_server import start_prefect_server
    from veza_ops.blocks_setup import (
        register_recovery_blocks,
        register_release_blocks,
        sandbox_recovery_blocks,
    )
    from veza_ops.demo_stack import prefect_settings

    home = tmp_path_factory.mktemp("prefect-e2e")
    with pytest.MonkeyPatch.context() as patch:
        # No scheduled runs appear behind the tests' backs (the run counts stay exact).
        patch.setenv("PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED", "false")
        server = start_prefect_server(home, auth_string=f"ci:{secrets.token_urlsafe(16)}",
                                      ui=False, timeout=300)  # a loaded machine
    try:
        env = {**server.client_env(), "PYTHONPATH": str(PROJECT_ROOT)}
        _prefect(["work-pool", "create", "veza-ops", "--type", "process"], env)
        _prefect(["deploy", "--all"], env)
        dbname = f"veza_{uuid.uuid4().hex[:8]}"
        create_empty_db(pg_server, dbname)
        import psycopg

        with psycopg.connect(pg_server.conninfo(dbname)) as conn:
            conn.execute(SEED_SQL)
        bucket = f"veza-backups-{uuid.uuid4().hex[:8]}"
        boto3.client("s3", endpoint_url=s3_server.endpoint_url,
                     aws_access_key_id=s3_server.access_key,
                     aws_secret_access_key=s3_server.secret_key,
                     region_name=s3_server.region).create_bucket(Bucket=bucket)
        blocks = f"e2e-{uuid.uuid4().hex[:8]}"
        with prefect_settings(server):
            register_release_blocks(sandbox_stack, name=blocks)
            register_recovery_blocks(**sandbox_recovery_blocks(
                pg=pg_server, dbname=dbname, s3=s3_server, bucket=bucket, key=gpg_key))
        server.start_worker(cwd=PROJECT_ROOT, log_dir=home,
                            extra_env={**sandbox_stack.env(), "PYTHONPATH": str(PROJECT_ROOT),
                                       "PREFECT_WORKER_QUERY_SECONDS": "1"})
        yield Platform(server, sandbox_stack, blocks, bucket, s3_server)
    finally:
        server.stop()


@pytest.fixture
def sandbox_namespaces(sandbox_seed: Any) -> tuple[str, str]:
    """Production alone: what is tested is CI's path, not staging (tests/release/ covers it)."""
    result: tuple[str, str] = sandbox_seed(staging=False)
    return result


@pytest.fixture
def catalogue(platform: Platform, sandbox_namespaces: tuple[str, str], tmp_path: Path) -> str:
    staging, production = sandbox_namespaces
    path = h.write_catalogue(tmp_path / "catalogue.yaml", staging_ns=staging,
                             production_ns=production, blocks=platform.blocks)
    return str(path)


# What is tested here is CI's path (trigger, wait, exit status), not the release itself
# (tests/release/ covers all four services): one service keeps this file's runs short.
SERVICE = h.ORDER[0]
ONE_SERVICE = f'services=["{SERVICE}"]'



def _selectors(platform: Platform, catalogue_path: str) -> dict[str, Any]:
    import yaml

    namespace = yaml.safe_load(Path(catalogue_path).read_text())["environments"]["production"][
        "namespace"]
    _, core = h.apis(platform.sandbox)
    return h.selectors(core, namespace)


def test_release_to_production_exits_0(platform: Platform, catalogue: str) -> None:
    h.push_all(platform.sandbox, "7.1.0")
    done = platform.trigger("release/production", "--param", "version=7.1.0",
                            "--param", "skip_build=true", "--param", f"catalogue_path={catalogue}",
                            "--param", ONE_SERVICE, "--wait", "--timeout", "200")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Completed" in done.stdout and "/runs/flow-run/" in done.stdout
    assert _selectors(platform, catalogue) == {
        s: "green" if s == SERVICE else "blue" for s in h.ORDER}


def test_failed_run_exits_1(platform: Platform, tmp_path: Path) -> None:
    """A run that ends Failed fails CI: exit status 1 and the state on stderr.

    What fails does not matter here (tests/release/ covers failing and rolled-back releases):
    a catalogue that does not exist fails the run at its first step, before any change.
    """
    before = platform.count_runs()
    done = platform.trigger("release/production", "--param", "version=7.2.0",
                            "--param", "skip_build=true", "--param",
                            f"catalogue_path={tmp_path / 'no-such-catalogue.yaml'}",
                            "--param", ONE_SERVICE, "--wait", "--timeout", "200")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Failed" in done.stderr
    assert platform.count_runs() == before + 1  # it did run: refused input would exit 2


def _api(platform: Platform, method: str, path: str, body: Any = None) -> Any:
    user, password = platform.server.auth_string.split(":", 1)
    answer = httpx.request(method, f"{platform.server.api_url}{path}", json=body,
                           auth=(user, password), timeout=10)
    answer.raise_for_status()
    return answer.json() if answer.content else None


def _start(platform: Platform, catalogue: str, version: str) -> str:
    """Trigger a one-service release without waiting; return its flow run id."""
    started = platform.trigger("release/production", "--param", f"version={version}",
                               "--param", "skip_build=true", "--param",
                               f"catalogue_path={catalogue}", "--param", ONE_SERVICE)
    assert started.returncode == 0, started.stdout + started.stderr
    found = RUN_ID.search(started.stdout)
    assert found, started.stdout
    return found.group(1)


def _cancel(platform: Platform, run_id: str) -> None:
    """Cancel a run as the UI's Cancel button does, and wait until the worker ended it."""
    _api(platform, "POST", f"/flow_runs/{run_id}/set_state",
         {"state": {"type": "CANCELLING", "message": "cancelled by the test"}})

    def cancelled() -> bool:
        return _api(platform, "GET", f"/flow_runs/{run_id}")["state"]["type"] == "CANCELLED"

    wait_until(cancelled, timeout=120, what="the run Cancelled")


def _assert_cancelled_and_unlocked(core: Any, production: str) -> None:
    from kubernetes import client as k8s

    from tasks.release.history import last_release
    from tasks.release.leases import LEASE_NAME

    record = last_release(core, production)
    assert record is not None and record.outcome == "cancelled", record
    coordination = k8s.CoordinationV1Api(core.api_client)
    with pytest.raises(k8s.ApiException) as gone:
        coordination.read_namespaced_lease(LEASE_NAME, production)
    assert gone.value.status == 404


def test_a_release_cancelled_through_the_api_puts_traffic_back_and_frees_the_lock(
        platform: Platform, sandbox_namespaces: tuple[str, str], tmp_path: Path) -> None:
    """A real Prefect cancel mid-verification: its hook reconciles, marks, unlocks."""
    staging, production = sandbox_namespaces
    catalogue = str(h.write_catalogue(
        tmp_path / "catalogue.yaml", staging_ns=staging, production_ns=production,
        blocks=platform.blocks, intervals=600, lock_ttl_s=900))  # verifies until cancelled
    h.push_all(platform.sandbox, "7.3.0")
    run_id = _start(platform, catalogue, "7.3.0")
    _, core = h.apis(platform.sandbox)
    wait_until(lambda: h.selectors(core, production)[SERVICE] == "green", timeout=180,
                 what="the switch to green")

    _cancel(platform, run_id)
    # The hook put the uncommitted switch back, marked the record, gave the lock back.
    wait_until(lambda: h.selectors(core, production) == {s: "blue" for s in h.ORDER},
                 timeout=60, what="traffic back on blue")
    _assert_cancelled_and_unlocked(core, production)


def test_a_release_cancelled_during_staging_puts_staging_back(
        platform: Platform, sandbox_seed: Any, tmp_path: Path) -> None:
    """A real Prefect cancel while staging waits on a rollout: the captured templates go back.

    The new image never becomes ready and the rollout deadline is far away, so the run is
    cancelled while staging waits; production was never touched.
    """
    from sandbox.registry import Behaviour

    staging, production = sandbox_seed(traffic=False)
    catalogue = str(h.write_catalogue(
        tmp_path / "catalogue.yaml", staging_ns=staging, production_ns=production,
        blocks=platform.blocks, rollout_timeout_s=600, lock_ttl_s=900))
    image = f"{h.SERVICES[SERVICE][0]}:7.4.0"
    platform.sandbox.registry.push(image, Behaviour(never_ready=True))
    apps, core = h.apis(platform.sandbox)
    deployment = f"{SERVICE}-blue"

    def staging_image() -> str:
        found = apps.read_namespaced_deployment(deployment, staging)
        return str(found.spec.template.spec.containers[0].image)

    before = staging_image()
    run_id = _start(platform, catalogue, "7.4.0")
    wait_until(lambda: staging_image() == image, timeout=180, what="staging rolling out 7.4.0")

    _cancel(platform, run_id)
    assert staging_image() == before  # put back before the process went away
    assert h.selectors(core, production) == {s: "blue" for s in h.ORDER}
    _assert_cancelled_and_unlocked(core, production)


def test_backup_exits_0_and_leaves_a_manifest(platform: Platform) -> None:
    done = platform.trigger("backup/nightly-full", "--wait", "--timeout", "200")
    assert done.returncode == 0, done.stdout + done.stderr
    s3 = boto3.client("s3", endpoint_url=platform.s3.endpoint_url,
                      aws_access_key_id=platform.s3.access_key,
                      aws_secret_access_key=platform.s3.secret_key, region_name=platform.s3.region)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=platform.bucket).get("Contents", [])]
    assert any("manifest" in key for key in keys), keys


def test_trigger_without_credentials_is_refused_clearly(platform: Platform) -> None:
    before = platform.count_runs()
    done = platform.trigger("backup/hourly", "--wait", with_auth=False)
    assert done.returncode == 2
    assert "PREFECT_API_AUTH_STRING" in done.stderr and "401" in done.stderr
    assert platform.server.auth_string.split(":", 1)[1] not in done.stdout + done.stderr
    assert platform.count_runs() == before


def test_same_idempotency_key_reuses_the_run(platform: Platform) -> None:
    key = f"sha-{uuid.uuid4().hex}"
    first = platform.trigger("prune-backups/daily", "--idempotency-key", key)
    assert first.returncode == 0, first.stdout + first.stderr
    count = platform.count_runs()
    second = platform.trigger("prune-backups/daily", "--idempotency-key", key)
    assert second.returncode == 0, second.stdout + second.stderr
    first_id = RUN_ID.search(first.stdout)
    second_id = RUN_ID.search(second.stdout)
    assert first_id and second_id and first_id.group(1) == second_id.group(1)
    assert platform.count_runs() == count


def test_unknown_parameter_is_refused_before_any_run(platform: Platform) -> None:
    before = platform.count_runs()
    done = platform.trigger("backup/hourly", "--param", "kindd=full", "--wait")
    assert done.returncode == 2
    assert "unknown parameter" in done.stderr and "kindd" in done.stderr
    assert platform.count_runs() == before



def test_blocks_cli_registers_the_sandbox_blocks(platform: Platform) -> None:
    name = f"cli-{uuid.uuid4().hex[:8]}"
    done = subprocess.run(
        [sys.executable, "-m", "veza_ops", "blocks", "register-sandbox",
         "--dir", str(platform.sandbox.dir), "--name", name],
        cwd=PROJECT_ROOT, env=platform.env(), capture_output=True, text=True, timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    user, password = platform.server.auth_string.split(":", 1)
    answer = httpx.post(f"{platform.server.api_url}/block_documents/filter",
                        json={"block_documents": {"name": {"any_": [name]}}},
                        auth=(user, password), timeout=10)
    answer.raise_for_status()
    types = sorted(doc["block_type"]["slug"] for doc in answer.json())
    assert len(types) == 3, types
    assert platform.sandbox.vault_token not in answer.text
