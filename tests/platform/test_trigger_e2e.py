"""CI's path end to end: a real Prefect server with basic auth, a worker, `veza-ops trigger`;
and its UI in a real browser (headless Chromium), after those runs."""

from __future__ import annotations

import contextlib
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
from playwright.sync_api import expect

from sandbox.procs import wait_until
from tests.fixtures.recovery import SEED_SQL, create_empty_db
from tests.platform.browser import PrefectUI, prefect_ui, screenshots_dir
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
    database: str

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
    from tests.fixtures.prefect import own_server
    from veza_ops.blocks_setup import (
        register_recovery_blocks,
        register_release_blocks,
        sandbox_recovery_blocks,
    )
    from veza_ops.demo_stack import prefect_settings

    home = tmp_path_factory.mktemp("prefect-e2e")
    with contextlib.ExitStack() as stack:
        with pytest.MonkeyPatch.context() as patch:
            # No scheduled runs appear behind the tests' backs (the run counts stay exact).
            patch.setenv("PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED", "false")
            patch.setenv("PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT", "false")  # screenshots
            server = stack.enter_context(own_server(  # the UI: test_ui_*; a loaded machine
                pg_server, home, auth_string=f"ci:{secrets.token_urlsafe(16)}", ui=True,
                timeout=300))
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
        yield Platform(server, sandbox_stack, blocks, bucket, s3_server, dbname)


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
    wait_until(lambda: h.selected(core, production, SERVICE) == "green", timeout=180,
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


# ------------------------------------------------------------------ the UI in a real browser
# Headless Chromium (Debian's) through the Prefect UI of the module's server (tests/platform/
# browser.py). These tests reuse what the tests above left on the server (a completed release,
# a backup, a prune run's catalogue) and make it themselves only when run alone. Screenshots
# go to a tmp dir, or to docs/img with `make screenshots`.

# How the UI words each cron of prefect.yaml (a new cron there needs its line here).
SCHEDULE_TEXTS = {
    "0 3 * * *": "At 03:00 AM",
    "15 * * * *": "At 15 minutes past the hour",
    "30 4 * * *": "At 04:30 AM",
    "0 5 1 * *": "At 05:00 AM, on day 1 of the month",
    "0 2 * * 0": "At 02:00 AM, only on Sunday",
    "0 2 * * 1-6": "At 02:00 AM, Monday through Saturday",
    "30 * * * *": "At 30 minutes past the hour",
    "0 4 * * *": "At 04:00 AM",
    "*/5 * * * *": "Every 5 minutes",
    "0 6 1 * *": "At 06:00 AM, on day 1 of the month",
    "0 6 * * *": "At 06:00 AM",
}


@pytest.fixture(scope="module")
def ui(platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectUI]:
    """Chromium logged in to the module's server (through the UI's login form)."""
    assert platform.server.auth_string
    with prefect_ui(platform.server.ui_url, platform.server.auth_string,
                    screenshots=screenshots_dir(tmp_path_factory.mktemp("screenshots"))) as page:
        yield page


def _deployments_of_prefect_yaml() -> list[tuple[str, str, list[str]]]:
    """(flow name, deployment name, crons) of every deployment in prefect.yaml."""
    import importlib

    import yaml

    found = []
    for spec in yaml.safe_load((PROJECT_ROOT / "prefect.yaml").read_text())["deployments"]:
        path, function = spec["entrypoint"].split(":")
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        crons = [schedule["cron"] for schedule in spec.get("schedules") or []]
        found.append((getattr(module, function).name, spec["name"], crons))
    return found


def _deployment_id(platform: Platform, name: str) -> str:
    return str(_api(platform, "GET", f"/deployments/name/{name}")["id"])


def _runs(platform: Platform, deployment: str, states: list[str]) -> list[dict[str, Any]]:
    """The deployment's runs in those states, newest first."""
    body = {"deployments": {"id": {"any_": [_deployment_id(platform, deployment)]}},
            "flow_runs": {"state": {"type": {"any_": states}}}, "sort": "START_TIME_DESC"}
    runs: list[dict[str, Any]] = _api(platform, "POST", "/flow_runs/filter", body)
    return runs


def _run_to_completion(platform: Platform, deployment: str, *params: str) -> dict[str, Any]:
    done = platform.trigger(deployment, *params, "--wait", "--timeout", "200")
    assert done.returncode == 0, done.stdout + done.stderr
    found = RUN_ID.search(done.stdout)
    assert found, done.stdout
    run: dict[str, Any] = _api(platform, "GET", f"/flow_runs/{found.group(1)}")
    return run


def _completed_release(platform: Platform, request: pytest.FixtureRequest) -> dict[str, Any]:
    """The newest completed release to production (test_release_to_production_exits_0's)."""
    completed = _runs(platform, "release/production", ["COMPLETED"])
    if completed:
        return completed[0]
    catalogue_path: str = request.getfixturevalue("catalogue")
    h.push_all(platform.sandbox, "7.9.0")
    return _run_to_completion(platform, "release/production", "--param", "version=7.9.0",
                              "--param", "skip_build=true", "--param",
                              f"catalogue_path={catalogue_path}", "--param", ONE_SERVICE)


def _fresh_catalogue_run(platform: Platform) -> dict[str, Any]:
    """A completed prune-backups run that started after the newest completed backup."""
    backups = _runs(platform, "backup/nightly-full", ["COMPLETED"])
    backup = backups[0] if backups else _run_to_completion(platform, "backup/nightly-full")
    # test_same_idempotency_key_reuses_the_run starts a prune run without waiting on it.
    wait_until(lambda: not [r for r in _runs(platform, "prune-backups/daily", ["SCHEDULED",
                                                                                "PENDING",
                                                                                "RUNNING"])],
               timeout=200, what="the prune-backups runs under way to end")
    prunes = [r for r in _runs(platform, "prune-backups/daily", ["COMPLETED"])
              if r["start_time"] > backup["end_time"]]
    return prunes[0] if prunes else _run_to_completion(platform, "prune-backups/daily")


def test_ui_lists_every_deployment_with_its_schedule(platform: Platform, ui: PrefectUI) -> None:
    expected = _deployments_of_prefect_yaml()
    page = ui.open("/deployments?page=1&sort=NAME_ASC&limit=25")
    expect(page.get_by_text(f"{len(expected)} Deployments", exact=True)).to_be_visible()
    for flow_name, name, crons in expected:
        row = (page.get_by_role("row")
               .filter(has=page.get_by_role("link", name=name, exact=True))
               .filter(has=page.get_by_text(flow_name, exact=True)))
        expect(row, f"{flow_name}/{name}").to_have_count(1)
        for cron in crons:
            assert cron in SCHEDULE_TEXTS, f"add the UI's wording of {cron!r} to SCHEDULE_TEXTS"
            expect(row).to_contain_text(SCHEDULE_TEXTS[cron])
    ui.screenshot("deployments")


def test_ui_release_form_shows_the_typed_parameters(platform: Platform, ui: PrefectUI) -> None:
    """The run form of release/production: choices from the catalogue, the version pattern."""
    from flows.models import ENVIRONMENTS, SERVICES

    page = ui.open(f"/deployments/deployment/{_deployment_id(platform, 'release/production')}"
                   "/run")
    expect(page.get_by_role("textbox", name="version")).to_be_visible()
    for switch in ("skip_build (Optional)", "dry_run (Optional)"):
        expect(page.get_by_role("switch", name=switch)).to_be_visible()
    expect(page.get_by_role("textbox", name="catalogue_path (Optional)")).to_have_value(
        "deployments/catalogue.yaml")
    page.get_by_role("button", name="Select environment").click()
    expect(page.get_by_role("option")).to_have_text(list(ENVIRONMENTS))
    page.keyboard.press("Escape")
    page.get_by_role("tab", name="list").first.click()  # services: the first list parameter
    page.get_by_role("button").filter(has_text=re.compile(r"^Select$")).click()
    expect(page.get_by_role("option")).to_have_text(list(SERVICES))
    page.keyboard.press("Escape")
    ui.screenshot("release-form")

    before = platform.count_runs()
    page.get_by_role("textbox", name="version").fill("bad tag!")
    page.get_by_role("button", name="Submit").click()
    expect(page.get_by_text("'bad tag!' does not match").first).to_be_visible()
    assert platform.count_runs() == before  # the server refused it: no run was created


def test_ui_shows_a_completed_release_with_its_task_runs_and_report(
        platform: Platform, ui: PrefectUI, request: pytest.FixtureRequest) -> None:
    run = _completed_release(platform, request)
    version = run["parameters"]["version"]
    task_runs = _api(platform, "POST", "/task_runs/count",
                     {"flow_runs": {"id": {"any_": [run["id"]]}}})
    # The run page's graph keeps Chromium busy (~1 core, software rendering) while it is open:
    # straight to its Task Runs tab, a screenshot of the viewport, then on to the artifact.
    page = ui.open(f"/runs/flow-run/{run['id']}?tab=TaskRuns")
    expect(page.get_by_text(f"release-production-{version}").first).to_be_visible()
    expect(page.get_by_role("tab", name="Task Runs")).to_have_attribute("aria-selected", "true")
    # The count shows in the tab's panel, and (once the page has loaded it) in the header too.
    panel = page.get_by_role("tabpanel", name="Task Runs")
    expect(panel.get_by_text(f"{task_runs} Task runs", exact=True)).to_be_visible()
    expect(page.get_by_text(f"({task_runs} Completed)", exact=True).first).to_be_visible()
    # Task runs named by the service they act on (parallel per-service tasks told apart).
    for name in (f"bring-up-colour-{SERVICE}", f"switch-{SERVICE}", f"verify-{SERVICE}"):
        expect(page.get_by_role("link", name=name, exact=True)).to_be_visible()
    ui.screenshot("release-run", full_page=False)

    page.get_by_role("tab", name="Artifacts").click()
    page.get_by_role("link").filter(has=page.get_by_role("heading", name="release-report",
                                                         exact=True)).click()
    expect(page.get_by_role("heading", name=f"Release {version} to production: succeeded")
           ).to_be_visible()
    expect(page.get_by_role("row").filter(has=page.get_by_role("cell", name=SERVICE,
                                                               exact=True))
           ).to_contain_text(f"{version}")
    ui.screenshot("release-report")


def test_ui_renders_the_backup_catalogue(platform: Platform, ui: PrefectUI) -> None:
    prune = _fresh_catalogue_run(platform)
    artifacts = _api(platform, "POST", "/artifacts/filter", {
        "artifacts": {"key": {"any_": ["backup-catalogue-all"]},
                      "flow_run_id": {"any_": [prune["id"]]}}})
    assert len(artifacts) == 1, artifacts
    page = ui.open("/artifacts/key/backup-catalogue-all")
    page.get_by_role("link", name=artifacts[0]["id"][:8], exact=True).click()
    expect(page.get_by_role("heading", name="Backup catalogue", exact=True)).to_be_visible()
    row = page.get_by_role("row").filter(has=page.get_by_role("cell", name=platform.database,
                                                              exact=True)).first
    expect(row).to_contain_text("full")
    expect(row).to_contain_text("yes")  # complete: its manifest is there
    ui.screenshot("backup-catalogue")
