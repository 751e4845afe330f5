"""The release form: parameters typed so the UI renders choices and the API refuses bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from prefect.utilities.callables import parameter_schema
from prefect.utilities.schema_tools.validation import is_valid

from errors import InvalidInputError
from flows.models import ENVIRONMENTS, SERVICES
from flows.release import release
from flows.rollback import rollback
from tasks.release.build import check_version

ROOT = Path(__file__).resolve().parents[2]
TAGS = ["1.4.2", "v1.4.2", "1.10", "main_2026-12-02", "a" * 128,
        "", "-1", ".hidden", "bad tag!", "1.4.2;rm", "a" * 129, "ü1"]


def _flow_schema(flow) -> dict:  # type: ignore[no-untyped-def]
    return parameter_schema(flow).model_dump()


def test_choices_are_the_shipped_catalogue() -> None:
    catalogue = yaml.safe_load((ROOT / "deployments" / "catalogue.yaml").read_text())
    assert set(ENVIRONMENTS) == set(catalogue["environments"])
    assert set(SERVICES) == set(catalogue["services"])


def test_release_schema_carries_the_version_pattern_and_the_choices() -> None:
    schema = _flow_schema(release)
    props = schema["properties"]
    assert props["environment"]["enum"] == list(ENVIRONMENTS)
    services = next(a for a in props["services"]["anyOf"] if a.get("type") == "array")
    assert services["items"]["enum"] == list(SERVICES)
    for tag in TAGS:  # the schema and the flow's own check agree on every tag
        try:
            check_version(tag)
            checked = True
        except InvalidInputError:
            checked = False
        assert is_valid({"version": tag}, schema) is checked, tag
    assert not is_valid({"version": "1.0", "environment": "moon"}, schema)
    assert not is_valid({"version": "1.0", "services": ["veza-nope"]}, schema)
    assert is_valid({"version": "1.0", "environment": "staging", "services": ["veza-web"]},
                    schema)


def test_rollback_schema_has_the_same_choices() -> None:
    props = _flow_schema(rollback)["properties"]
    assert props["environment"]["enum"] == list(ENVIRONMENTS)
    services = next(a for a in props["services"]["anyOf"] if a.get("type") == "array")
    assert services["items"]["enum"] == list(SERVICES)


@pytest.fixture
def registry_env(tmp_path: Path) -> dict[str, str]:
    return {"VEZA_SANDBOX_REGISTRY": str(tmp_path / "registry.json"), "PYTHONPATH": str(ROOT)}


def test_per_service_task_runs_are_named_by_their_service(prefect_harness: None,
                                                          registry_env: dict[str, str]) -> None:
    """Parallel per-service tasks: the run's task runs say which service each one is."""
    from prefect import flow

    from tasks.release.build import run_build_task
    from tasks.release.catalogue import BuildCommands, ServiceSpec
    from tests.events import read_task_runs

    ok = ["{python}", "-c", "pass"]
    specs = [ServiceSpec(name=name, image_repository=f"veza/{name}", port=80,
                         build=BuildCommands(push=ok, inspect=ok, push_backoff_s=0.01))
             for name in ("veza-web", "veza-chat-server")]

    @flow
    def builds() -> str:
        from prefect import runtime

        for future in [run_build_task.submit(s, "1.0.0", registry_env) for s in specs]:
            future.result()
        return str(runtime.flow_run.id)

    run_id = builds()
    # Until both are final: a run is first recorded from its Pending event, which carries
    # the generated name; the name given by the service comes with the later states.
    runs = read_task_runs(run_id, until=lambda found: len(found) == 2 and all(
        t.state is not None and t.state.is_final() for t in found))
    assert sorted(t.name for t in runs) == ["build-veza-chat-server", "build-veza-web"]


@pytest.mark.parametrize("task_name", [
    "tasks.release.canary:bring_up_canary_task", "tasks.release.colours:bring_up_colour_task",
    "tasks.release.staging:stage_service_task", "tasks.release.switching:switch_traffic",
    "tasks.release.verifying:verify_task", "tasks.release.rollback:restore_service_task"])
def test_every_per_service_task_names_its_runs_by_service(task_name: str) -> None:
    import importlib
    import inspect

    module, attribute = task_name.split(":")
    task = getattr(importlib.import_module(module), attribute)
    assert "spec" in inspect.signature(task.fn).parameters
    assert task.task_run_name.endswith("{spec.name}")


def test_secrets_task_runs_name_service_and_environment() -> None:
    from tasks.release.secrets import sync_secrets_task

    assert sync_secrets_task.task_run_name == "sync-secrets-{spec.name}-{environment}"
