"""Secrets (issue 9, item 10): names from a keyed hash, and unused Secrets collected.

Against the sandbox's Kubernetes and Vault emulators; the last test runs two staging releases
through the real flow (Prefect test server).
"""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml
from kubernetes import client, config
from pydantic import SecretStr

from blocks.vault import VaultServer
from tasks.release.catalogue import ServiceSpec
from tasks.release.history import ReleaseRecord, record_release
from tasks.release.secrets import (
    HASH_ANNOTATION,
    LEGACY_HASH_ANNOTATION,
    NAMING_KEY_SECRET,
    content_hash,
    sync_secrets,
)
from tasks.release.secrets_gc import collect_secrets, garbage, pod_spec_secrets, recorded_secrets
from tests.release import helpers as h

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def apis(sandbox_stack) -> tuple[client.CoreV1Api, client.AppsV1Api]:
    api = config.new_client_from_config(config_file=str(sandbox_stack.kubeconfig))
    return client.CoreV1Api(api), client.AppsV1Api(api)


@pytest.fixture()
def namespaces(apis):
    core, _ = apis
    names = [f"t-sec-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    for name in names:
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield names
    for name in names:
        core.delete_namespace(name)


@pytest.fixture()
def vault(sandbox_stack) -> VaultServer:
    return VaultServer(address=sandbox_stack.vault_addr, token=SecretStr(sandbox_stack.vault_token))


@pytest.fixture()
def seeded(sandbox_stack) -> tuple[ServiceSpec, dict[str, str]]:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    spec = ServiceSpec(name="veza-web", image_repository="veza/web", port=80,
                       vault_path=f"{prefix}/{{environment}}/{{service}}")
    values = {"database_url": f"postgresql://veza:{uuid.uuid4().hex}@db/veza",
              "jwt_secret": uuid.uuid4().hex}
    sandbox_stack.vault_client().secrets.kv.v2.create_or_update_secret(
        path=spec.vault_path_for("staging"), secret=values)
    return spec, values


def make_secret(core: Any, namespace: str, name: str, *, annotation: str | None = HASH_ANNOTATION,
                managed: bool = True) -> None:
    labels = {"app.kubernetes.io/managed-by": "veza-ops"} if managed else {"app": "other"}
    core.create_namespaced_secret(namespace, client.V1Secret(
        metadata=client.V1ObjectMeta(name=name, labels=labels,
                                     annotations={annotation: "x"} if annotation else {}),
        string_data={"k": "v"}))


def make_deployment(apps: Any, namespace: str, name: str, secret: str, replicas: int) -> None:
    labels = {"app": name}
    apps.create_namespaced_deployment(namespace, {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": labels}, "template": {
            "metadata": {"labels": labels},
            "spec": {"containers": [{"name": "web", "image": "veza/web:1.0.0",
                                     "envFrom": [{"secretRef": {"name": secret}}]}]}}}})


def record(core: Any, namespace: str, n: int, outcome: str, secret: str) -> None:
    started = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=n)
    record_release(core, namespace, ReleaseRecord(
        id=ReleaseRecord.new_id(started), environment="staging", version=f"1.{n}.0",
        started_at=started, outcome=outcome, secrets={"veza-web": secret}))


def names(core: Any, namespace: str) -> set[str]:
    return {s.metadata.name for s in core.list_namespaced_secret(namespace).items}


def test_names_are_keyed_stable_and_differ_per_environment(apis, namespaces, vault, seeded):
    core, _ = apis
    spec, values = seeded
    first = sync_secrets(core, vault, namespaces[0], spec, "staging")
    assert sync_secrets(core, vault, namespaces[0], spec, "staging") == first  # same data
    assert first.startswith("veza-web-secrets-")
    legacy = content_hash(values)
    assert first != f"veza-web-secrets-{legacy[:10]}"  # not confirmable from the data alone
    stored = core.read_namespaced_secret(first, namespaces[0])
    assert legacy not in str(stored.metadata.annotations)
    assert set(stored.metadata.annotations) == {HASH_ANNOTATION}
    key = core.read_namespaced_secret(NAMING_KEY_SECRET, namespaces[0])
    assert key.immutable and len(base64.b64decode(key.data["key"])) == 32
    # Another environment has its own key: the same data gets another name there.
    assert sync_secrets(core, vault, namespaces[1], spec, "staging") != first


def test_a_legacy_name_keeps_working_until_nothing_uses_it(apis, namespaces, vault, seeded):
    """Migration: a Deployment on an old SHA-256 name keeps it; the next sync makes the new
    name; once the Deployment moved to it, the old one is collected."""
    from tasks.release.staging import image_patch

    core, apps = apis
    ns = namespaces[0]
    spec, values = seeded
    legacy = f"veza-web-secrets-{content_hash(values)[:10]}"
    make_secret(core, ns, legacy, annotation=LEGACY_HASH_ANNOTATION)
    make_deployment(apps, ns, "veza-web-blue", legacy, replicas=0)
    new = sync_secrets(core, vault, ns, spec, "staging")
    assert new != legacy and {legacy, new} <= names(core, ns)
    assert collect_secrets(core, apps, ns, keep_releases=5).deleted == [new]  # used by nothing
    new = sync_secrets(core, vault, ns, spec, "staging")
    dep = apps.read_namespaced_deployment("veza-web-blue", ns)
    patch = image_patch(apps.api_client.sanitize_for_serialization(dep), container="web",
                        image="veza/web:1.0.0", secret_prefix="veza-web-secrets",
                        secret_name=new)
    apps.patch_namespaced_deployment("veza-web-blue", ns, patch)
    done = collect_secrets(core, apps, ns, keep_releases=5)
    assert done.deleted == [legacy] and done.kept == [new]
    assert NAMING_KEY_SECRET in names(core, ns)


def test_collection_keeps_what_is_used_or_recent_and_deletes_the_rest(apis, namespaces,
                                                                      sandbox_stack):
    from sandbox.registry import Behaviour

    core, apps = apis
    ns = namespaces[0]
    sandbox_stack.registry.push("veza/web:1.0.0", Behaviour())
    for name in ("s-live", "s-old-colour", "s-rec-old", "s-rec-1", "s-failed", "s-rec-2",
                 "s-orphan"):
        make_secret(core, ns, name)
    make_secret(core, ns, "s-legacy-orphan", annotation=LEGACY_HASH_ANNOTATION)
    make_secret(core, ns, "s-other-tool", managed=False)
    make_secret(core, ns, "s-by-hand", annotation=None)  # managed label, not content-named
    make_deployment(apps, ns, "web-blue", "s-live", replicas=1)  # running
    make_deployment(apps, ns, "web-green", "s-old-colour", replicas=0)
    record(core, ns, 1, "succeeded", "s-rec-old")
    record(core, ns, 2, "succeeded", "s-rec-1")
    record(core, ns, 3, "rolled-back", "s-failed")
    record(core, ns, 4, "succeeded", "s-rec-2")
    done = collect_secrets(core, apps, ns, keep_releases=2)
    assert done.deleted == ["s-failed", "s-legacy-orphan", "s-orphan", "s-rec-old"]
    assert done.kept == ["s-live", "s-old-colour", "s-rec-1", "s-rec-2"]
    left = names(core, ns)
    assert {"s-live", "s-old-colour", "s-rec-1", "s-rec-2", "s-other-tool", "s-by-hand"} <= left
    assert not left & set(done.deleted)


def test_the_pure_parts_of_the_collection():
    spec = {"containers": [{"envFrom": [{"secretRef": {"name": "a"}}, {"configMapRef": {}}],
                            "env": [{"valueFrom": {"secretKeyRef": {"name": "b"}}}]}],
            "initContainers": [{"envFrom": [{"secretRef": {"name": "c"}}]}],
            "volumes": [{"secret": {"secretName": "d"}},
                        {"projected": {"sources": [{"secret": {"name": "e"}}]}}],
            "imagePullSecrets": [{"name": "f"}]}
    assert pod_spec_secrets(spec) == set("abcdef")
    started = datetime(2026, 1, 1, tzinfo=UTC)
    records = [ReleaseRecord(id=f"r{i}", environment="e", version="v", started_at=started,
                             outcome=o, secrets={"s": f"x{i}"})
               for i, o in enumerate(["succeeded", "succeeded", "failed", "running"])]
    assert recorded_secrets(records, 1) == {"x1", "x3"}  # last committed, and the newest
    assert garbage(["x0", "x1", NAMING_KEY_SECRET], {"x1"}, set()) == ["x0"]


def staging_catalogue(sandbox: Any, staging: str, tmp_path: Any) -> Any:
    """A catalogue with the staging environment only (strategy ``rolling``)."""
    path = tmp_path / "catalogue.yaml"
    h.write_catalogue(path, staging_ns=staging, production_ns="unused",
                      blocks=h.register_blocks(sandbox), e2e_command=["{python}", "-c", ""])
    data = yaml.safe_load(path.read_text())
    del data["environments"]["production"]
    path.write_text(yaml.safe_dump(data))
    return path


def test_two_releases_keep_the_name_and_collect_an_orphan(sandbox_stack, sandbox_seed,
                                                          prefect_harness, tmp_path):
    """Two staging releases of unchanged Vault data: one Secret name for both (not the
    SHA-256 prefix); an orphan content-named Secret is deleted, the seeded ones stay."""
    from flows.release import release
    from tasks.release.history import release_history

    staging = sandbox_seed()[0]
    apps, core = h.apis(sandbox_stack)
    path = staging_catalogue(sandbox_stack, staging, tmp_path)
    make_secret(core, staging, "veza-web-secrets-0123456789")  # e.g. a revoked credential
    h.push_all(sandbox_stack, "7.1.0")
    h.push_all(sandbox_stack, "7.2.0")
    for version in ("7.1.0", "7.2.0"):
        summary = release(version=version, environment="staging", catalogue_path=str(path),
                          skip_build=True, services=["veza-web"])
        assert summary.outcome == "succeeded"
    first, second = [r for r in release_history(core, staging) if r.outcome == "succeeded"]
    assert first.secrets == second.secrets
    vault_data = sandbox_stack.vault_client().secrets.kv.v2.read_secret_version(
        path="veza/staging/veza-web", raise_on_deleted_version=True)["data"]["data"]
    assert second.secrets["veza-web"] != f"veza-web-secrets-{content_hash(vault_data)[:10]}"
    dep = apps.read_namespaced_deployment("veza-web-blue", staging)
    refs = pod_spec_secrets(apps.api_client.sanitize_for_serialization(dep)["spec"]["template"]
                            ["spec"])
    assert refs == {second.secrets["veza-web"]}
    left = names(core, staging)
    assert "veza-web-secrets-0123456789" not in left
    assert {"veza-web-secrets", "veza-backend-api-secrets", NAMING_KEY_SECRET} <= left
    gc = [c for c in first.checks if c.name == "secrets gc staging"]
    assert gc and gc[0].passed and "veza-web-secrets-0123456789" in gc[0].detail


def test_a_failed_collection_leaves_the_release_a_success_with_a_warning(
        sandbox_stack, sandbox_seed, prefect_harness, tmp_path):
    """Listing Secrets fails (500) for the whole release: it still succeeds, warned."""
    from flows.release import release
    from tasks.release.history import last_release

    staging = sandbox_seed()[0]
    _, core = h.apis(sandbox_stack)
    path = staging_catalogue(sandbox_stack, staging, tmp_path)
    h.push_all(sandbox_stack, "7.3.0")
    sandbox_stack.set_api_faults("list", "secrets", error_rate=1.0)
    try:
        summary = release(version="7.3.0", environment="staging", catalogue_path=str(path),
                          skip_build=True, services=["veza-web"])
    finally:
        sandbox_stack.clear_api_faults()
    assert summary.outcome == "succeeded"
    assert any("unused Secrets of staging not collected" in w for w in summary.warnings)
    record = last_release(core, staging)
    assert record.outcome == "succeeded" and "with warnings" in (record.reason or "")
