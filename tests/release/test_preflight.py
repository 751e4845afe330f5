"""The pre-deployment checklist against a seeded sandbox (staging + production at 1.0.0)."""

from __future__ import annotations

import uuid

import pytest
from kubernetes import client, config
from pydantic import SecretStr

from blocks.prometheus import PrometheusServer
from blocks.vault import VaultServer
from errors import PreflightError
from tasks.release.catalogue import parse_catalogue
from tasks.release.locking import acquire_release_lock, release_lock
from tasks.release.preflight import Checklist, ChecklistItem, PreflightContext, run_preflight

SERVICES = {
    "veza-backend-api": {"image_repository": "veza/backend-api", "port": 8080},
    "veza-chat-server": {"image_repository": "veza/chat-server", "port": 8081},
    "veza-stream-server": {"image_repository": "veza/stream-server", "port": 8082},
    "veza-web": {"image_repository": "veza/web", "port": 80},
}


def catalogue_for(staging_ns: str, production_ns: str, required=("VezaHighErrorRate",),
                  services=SERVICES):
    blocks = {"kubernetes_block": "k", "prometheus_block": "p", "vault_block": "v"}
    return parse_catalogue(
        {
            "environments": {
                "staging": {"namespace": staging_ns, **blocks, "required_alerts": list(required)},
                "production": {
                    "namespace": production_ns,
                    "strategy": "blue-green",
                    "staging_environment": "staging",
                    "required_alerts": list(required),
                    **blocks,
                },
            },
            "services": services,
        }
    )


@pytest.fixture()
def apis(sandbox_stack):
    api = config.new_client_from_config(config_file=str(sandbox_stack.kubeconfig))
    return client.CoreV1Api(api), client.AppsV1Api(api), client.CoordinationV1Api(api)


def context(sandbox_stack, apis, catalogue, environment, version, **overrides):
    core, apps, coordination = apis
    values = {
        "catalogue": catalogue,
        "environment": environment,
        "version": version,
        "prometheus": PrometheusServer(url=sandbox_stack.prometheus_url),
        "vault": VaultServer(
            address=sandbox_stack.vault_addr, token=SecretStr(sandbox_stack.vault_token)
        ),
        "core_v1": core,
        "apps_v1": apps,
        "coordination_v1": coordination,
        "staging_core_v1": core,
        "staging_apps_v1": apps,
        "holder": "release/me",
    }
    values.update(overrides)
    return PreflightContext(**values)


def names(checklist: Checklist) -> list[str]:
    return [item.name for item in checklist.items]


def failed(error: pytest.ExceptionInfo[PreflightError]) -> dict[str, str]:
    checklist = error.value.checklist  # type: ignore[attr-defined]
    return {item.name: item.detail for item in checklist.failures()}


def test_preflight_on_a_seeded_sandbox(sandbox_stack, sandbox_shared_namespaces, apis):
    staging_ns, production_ns = sandbox_shared_namespaces
    catalogue = catalogue_for(staging_ns, production_ns)

    # Production of the version staging runs: every item passes, in order.
    ok = run_preflight(context(sandbox_stack, apis, catalogue, "production", "1.0.0"))
    window = next(i for i in ok.items if i.name == "verification window covers two scrapes")
    assert window.detail.startswith("scrape interval 1 s; windows: veza-backend-api 60 s")
    assert names(ok) == [
        "parameters valid",
        "prometheus reachable",
        "verification window covers two scrapes",
        "alert rules loaded",
        "vault reachable and unsealed",
        "staging runs this version",
        "rollback target known",
        "no other release running",
    ]
    assert ok.passed
    assert ok.live["veza-web"].colour == "blue"
    assert ok.live["veza-web"].image == "veza/web:1.0.0"
    assert ok.live["veza-backend-api"].deployment == "veza-backend-api-blue"
    markdown = ok.to_markdown()
    assert "- [x] rollback target known" in markdown and "FAILED" not in markdown

    # Staging has no staging check.
    assert "staging runs this version" not in names(
        run_preflight(context(sandbox_stack, apis, catalogue, "staging", "2.0.0"))
    )

    # A version staging does not run is refused for production.
    with pytest.raises(PreflightError) as raised:
        run_preflight(context(sandbox_stack, apis, catalogue, "production", "2.0.0"))
    assert list(failed(raised)) == ["staging runs this version"]
    assert "veza/web:1.0.0" in failed(raised)["staging runs this version"]

    # A rate window shorter than two of Prometheus' scrapes (1 s here) is refused by name.
    short = catalogue_for(staging_ns, production_ns, services={
        **SERVICES, "veza-web": {**SERVICES["veza-web"], "analysis": {"window_s": 1}}})
    with pytest.raises(PreflightError) as raised:
        run_preflight(context(sandbox_stack, apis, short, "production", "1.0.0"))
    detail = failed(raised)["verification window covers two scrapes"]
    assert "veza-web: verification window 1 s" in detail and "veza-backend-api" not in detail
    assert "analysis.window_s >= 2" in detail

    # Bad parameters are named.
    with pytest.raises(PreflightError) as raised:
        run_preflight(
            context(sandbox_stack, apis, catalogue, "staging", "1.0;rm", services=["veza-nope"])
        )
    assert "parameters valid" in failed(raised)

    # A required alert rule that is not loaded.
    strict = catalogue_for(staging_ns, production_ns, required=("VezaNoSuchAlert",))
    with pytest.raises(PreflightError) as raised:
        run_preflight(context(sandbox_stack, apis, strict, "staging", "1.0.0"))
    assert "VezaNoSuchAlert" in failed(raised)["alert rules loaded"]

    # Another release holds the lock; our own holder is fine.
    _, _, coordination = apis
    lock = acquire_release_lock(coordination, staging_ns, "release/other-run", 300)
    try:
        with pytest.raises(PreflightError) as raised:
            run_preflight(context(sandbox_stack, apis, catalogue, "staging", "1.0.0"))
        assert "release/other-run" in failed(raised)["no other release running"]
        assert run_preflight(
            context(sandbox_stack, apis, catalogue, "staging", "1.0.0", holder="release/other-run")
        ).passed
    finally:
        release_lock(lock)


def test_preflight_with_vault_sealed_and_prometheus_unreachable(sandbox_stack, apis):
    catalogue = catalogue_for(f"t-{uuid.uuid4().hex[:8]}", f"t-{uuid.uuid4().hex[:8]}")
    sandbox_stack.seal_vault()
    try:
        with pytest.raises(PreflightError) as raised:
            run_preflight(
                context(
                    sandbox_stack,
                    apis,
                    catalogue,
                    "staging",
                    "1.0.0",
                    prometheus=PrometheusServer(url="http://127.0.0.1:9", timeout_s=2),
                )
            )
    finally:
        sandbox_stack.unseal_vault()
    failures = failed(raised)
    assert "sealed" in failures["vault reachable and unsealed"]
    assert "prometheus reachable" in failures and "alert rules loaded" in failures
    # The namespaces do not exist: no rollback target.
    assert "rollback target known" in failures
    assert sandbox_stack.vault_token not in str(raised.value)


def test_checklist_markdown():
    checklist = Checklist(
        environment="production",
        version="1.2.0",
        items=[
            ChecklistItem(name="parameters valid", passed=True, detail="ok"),
            ChecklistItem(name="vault reachable and unsealed", passed=False, detail="sealed"),
        ],
    )
    text = checklist.to_markdown()
    assert "- [x] parameters valid: ok" in text
    assert "- [ ] vault reachable and unsealed **FAILED**: sealed" in text
