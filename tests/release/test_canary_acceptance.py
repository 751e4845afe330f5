"""The pre-rollout acceptance command of a canary environment: validated at load, run against
the canaries before any traffic shifts; a failure scales them down with no weight ever moved."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from errors import E2EError, InvalidInputError
from tasks.release.canary_acceptance import env_var_for
from tasks.release.canary_analysis import plan_lines
from tasks.release.canary_mesh import ISTIO
from tasks.release.catalogue import parse_catalogue
from tests.release import helpers as h
from tests.release.test_canary import canary_catalogue, catalogue_data

pytestmark = pytest.mark.timeout(420)

# Asks the canary it is given for its page: the new image answers, or exit 4.
CHECK_CANARY = ("import os, sys, httpx; url = os.environ['VEZA_CANARY_VEZA_WEB_URL']; "
                "page = httpx.get(url + '/', timeout=5).text; "
                "sys.exit(0 if 'veza/web:' + sys.argv[1] in page else 4)")
# Prints what it is given to read (a secret here), then fails.
LEAK_AND_FAIL = ("import sys; print('checking', open(sys.argv[1]).read()); "
                 "print('acceptance: 2 of 5 journeys failed'); sys.exit(3)")


@pytest.mark.parametrize(("command", "problem"), [
    ([], "at least the program name"),
    (["{python}", "check.py", "{image}"], "unknown placeholder {image}"),
])
def test_a_bad_acceptance_command_is_refused_naming_the_field(command, problem):
    with pytest.raises(InvalidInputError) as refused:
        parse_catalogue(catalogue_data(acceptance_command=command))
    assert "environments.production.acceptance_command" in str(refused.value)
    assert problem in str(refused.value)


def test_the_acceptance_command_is_in_the_plan_before_step_1():
    catalogue = parse_catalogue(catalogue_data(
        acceptance_command=["{python}", "accept.py", "{version}"]))
    env = catalogue.environment("production")
    lines = plan_lines(env, catalogue.select(), "2.0.0")
    accept = next(i for i, line in enumerate(lines) if "pre-rollout acceptance" in line)
    assert accept < next(i for i, line in enumerate(lines) if ": step 1:" in line)
    assert env_var_for("veza-web") == "VEZA_CANARY_VEZA_WEB_URL"


# --- on the sandbox ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def blocks(prefect_harness, sandbox_stack) -> str:
    return h.register_blocks(sandbox_stack)


def run(sandbox_seed: Any, blocks: str, tmp_path: Path, version: str,
        command: list[str]) -> tuple[str, Any]:
    """A one-service canary (veza-web, one step at 100 %) with an acceptance command."""
    from flows.release import release

    _, production = sandbox_seed(rate=20.0, staging=False)
    path = canary_catalogue(tmp_path / "c.yaml", "", production, blocks, canary_steps=[100],
                            acceptance_command=command)
    try:
        return production, release(version=version, environment="production",
                                   catalogue_path=path, services=["veza-web"], skip_build=True)
    except E2EError as exc:
        return production, exc


def test_a_passing_acceptance_command_reaches_the_canary_before_any_traffic(
        sandbox_stack, sandbox_seed, blocks, tmp_path):
    from tasks.release.history import last_release

    h.push_all(sandbox_stack, "4.10.0")
    production, summary = run(sandbox_seed, blocks, tmp_path, "4.10.0",
                              ["{python}", "-c", CHECK_CANARY, "{version}"])

    assert not isinstance(summary, BaseException), summary
    assert summary.outcome == "succeeded", summary.reason
    _, core = h.apis(sandbox_stack)
    record = last_release(core, production)
    assert record is not None
    names = [c.name for c in record.checks]
    assert names.index("pre-rollout acceptance") < names.index("canary step 1 at 100 %")
    assert record.checks[names.index("pre-rollout acceptance")].passed


def test_a_failing_acceptance_command_scales_the_canaries_down_with_no_weight_moved(
        sandbox_stack, sandbox_seed, blocks, tmp_path):
    import hvac

    from tasks.release.history import last_release

    vault = hvac.Client(url=sandbox_stack.vault_addr, token=sandbox_stack.vault_token)
    secret = vault.secrets.kv.v2.read_secret_version(
        path="veza/production/veza-web", raise_on_deleted_version=True)["data"]["data"][
        "jwt_secret"]
    leak = tmp_path / "leak.txt"
    leak.write_text(secret)
    h.push_all(sandbox_stack, "4.11.0")
    production, failed = run(sandbox_seed, blocks, tmp_path, "4.11.0",
                             [sys.executable, "-c", LEAK_AND_FAIL, str(leak)])

    assert isinstance(failed, E2EError), failed
    assert failed.message.startswith("pre-rollout acceptance of production failed")
    assert "exit 3" in failed.message and "2 of 5 journeys failed" in failed.message
    assert secret not in str(failed) and "[redacted" in failed.message
    apps, core = h.apis(sandbox_stack)
    assert apps.read_namespaced_deployment("veza-web-canary", production).spec.replicas == 0
    with pytest.raises(k8s.ApiException) as missing:  # no VirtualService was ever written
        k8s.CustomObjectsApi(apps.api_client).get_namespaced_custom_object(
            *ISTIO, production, "virtualservices", "veza-web")
    assert missing.value.status == 404
    assert dict(core.read_namespaced_service("veza-web", production).spec.selector) == {
        "app": "veza-web", "color": "blue"}
    assert h.images(apps, production, "blue")["veza-web"] == ("veza/web:1.0.0", 1)
    record = last_release(core, production)
    assert record is not None and record.outcome == "failed"
    assert "pre-rollout acceptance" in (record.reason or "")
    assert secret not in (record.reason or "")
    check = next(c for c in record.checks if c.name == "pre-rollout acceptance")
    assert not check.passed and "2 of 5 journeys failed" in check.detail
    assert secret not in check.detail
    assert not [c for c in record.checks if c.name.startswith("canary step")]
