"""Vault -> Kubernetes Secret sync against the sandbox's Vault emulator and API emulator."""

from __future__ import annotations

import base64
import logging
import socket
import uuid

import pytest
from kubernetes import client, config
from pydantic import SecretStr

from blocks.vault import VaultServer
from errors import NotFoundError, SealedError, UnreachableError
from tasks.release.catalogue import ServiceSpec
from tasks.release.secrets import (
    NAMING_KEY_SECRET,
    content_hash,
    naming_key,
    secret_name,
    sync_secrets,
)


@pytest.fixture(scope="module")
def core(sandbox_stack) -> client.CoreV1Api:
    api = config.new_client_from_config(config_file=str(sandbox_stack.kubeconfig))
    return client.CoreV1Api(api)


@pytest.fixture()
def namespace(core):
    name = f"t-sync-{uuid.uuid4().hex[:8]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    core.delete_namespace(name)


@pytest.fixture()
def vault(sandbox_stack) -> VaultServer:
    return VaultServer(address=sandbox_stack.vault_addr, token=SecretStr(sandbox_stack.vault_token))


@pytest.fixture()
def seeded(sandbox_stack) -> tuple[ServiceSpec, dict[str, str]]:
    """A service whose Vault path is unique to the test, with random secret values."""
    prefix = f"t{uuid.uuid4().hex[:8]}"
    spec = ServiceSpec(
        name="veza-web",
        image_repository="veza/web",
        port=80,
        vault_path=f"{prefix}/{{environment}}/{{service}}",
    )
    values = {
        "database_url": f"postgresql://veza:{uuid.uuid4().hex}@db/veza",
        "jwt_secret": uuid.uuid4().hex,
    }
    sandbox_stack.vault_client().secrets.kv.v2.create_or_update_secret(
        path=spec.vault_path_for("staging"), secret=values
    )
    return spec, values


def secrets_in(core, namespace) -> list[client.V1Secret]:
    """The namespace's Secrets but the naming key (made by the first sync)."""
    return [s for s in core.list_namespaced_secret(namespace).items
            if s.metadata.name != NAMING_KEY_SECRET]


def test_creates_an_immutable_secret_named_by_content(core, namespace, vault, seeded, caplog):
    spec, values = seeded
    caplog.set_level(logging.DEBUG)
    name = sync_secrets(core, vault, namespace, spec, "staging")
    assert name == secret_name("veza-web", values, naming_key(core, namespace))
    assert name.startswith("veza-web-secrets-") and len(name) == len("veza-web-secrets-") + 10
    stored = core.read_namespaced_secret(name, namespace)
    assert stored.immutable is True
    assert stored.metadata.labels["app"] == "veza-web"
    assert stored.metadata.labels["managed-by"] == "veza-ops"
    decoded = {k: base64.b64decode(v).decode() for k, v in stored.data.items()}
    assert decoded == values
    # Idempotent: same content, same Secret, nothing new.
    assert sync_secrets(core, vault, namespace, spec, "staging") == name
    assert [s.metadata.name for s in secrets_in(core, namespace)] == [name]
    for value in values.values():
        assert value not in caplog.text


def test_new_values_give_a_new_secret_and_keep_the_old(
    sandbox_stack, core, namespace, vault, seeded
):
    spec, values = seeded
    first = sync_secrets(core, vault, namespace, spec, "staging")
    rotated = {**values, "jwt_secret": uuid.uuid4().hex}
    sandbox_stack.vault_client().secrets.kv.v2.create_or_update_secret(
        path=spec.vault_path_for("staging"), secret=rotated
    )
    second = sync_secrets(core, vault, namespace, spec, "staging")
    assert second != first and second == secret_name("veza-web", rotated,
                                                          naming_key(core, namespace))
    assert {s.metadata.name for s in secrets_in(core, namespace)} == {first, second}


def test_sealed_vault_fails_clearly_before_any_change(
    sandbox_stack, core, namespace, vault, seeded, caplog
):
    spec, values = seeded
    sandbox_stack.seal_vault()
    try:
        with pytest.raises(SealedError) as raised:
            sync_secrets(core, vault, namespace, spec, "staging")
    finally:
        sandbox_stack.unseal_vault()
    assert "sealed" in str(raised.value)
    assert secrets_in(core, namespace) == []
    for value in values.values():
        assert value not in str(raised.value) and value not in caplog.text


def test_missing_path_and_unreachable_vault(core, namespace, vault, seeded):
    spec, _ = seeded
    with pytest.raises(NotFoundError) as raised:
        sync_secrets(core, vault, namespace, spec, "production")
    assert "veza-web" in str(raised.value)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    gone = VaultServer(address=f"http://127.0.0.1:{port}", token=SecretStr("t"), timeout_s=3)
    with pytest.raises(UnreachableError):
        sync_secrets(core, gone, namespace, spec, "staging")
    assert secrets_in(core, namespace) == []


def test_hash_ignores_key_order():
    assert content_hash({"a": "1", "b": "2"}) == content_hash({"b": "2", "a": "1"})
    assert content_hash({"a": "1"}) != content_hash({"a": "2"})
