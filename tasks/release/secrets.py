"""Vault -> Kubernetes: a service's secrets copied into an immutable Secret named by content."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import hvac
from kubernetes import client
from prefect import task
from prefect.cache_policies import NO_CACHE

from blocks.vault import VaultServer
from errors import ConflictError, PermanentSystemError, SealedError, retry_on_transient
from errors.kubernetes import translate_api_errors
from errors.vault import translate_vault_errors
from tasks.release.catalogue import ServiceSpec
from tasks.release.logs import get_logger

MANAGED_BY = "veza-ops"


def content_hash(data: dict[str, str]) -> str:
    """SHA-256 of the secret data (keys sorted), hex.

    Args:
        data: key to value.

    Returns:
        64 hex digits.
    """
    canonical = json.dumps(sorted(data.items()), separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def secret_name(service: str, data: dict[str, str]) -> str:
    """Name of the immutable Secret holding ``data`` for ``service``.

    Args:
        service: service name.
        data: the secret data.

    Returns:
        ``{service}-secrets-{hash[:10]}``.
    """
    return f"{service}-secrets-{content_hash(data)[:10]}"


def build_secret(
    spec: ServiceSpec, environment: str, data: dict[str, str], *, app_label: str = "app"
) -> client.V1Secret:
    """The immutable Secret object for a service's data.

    Args:
        spec: the service.
        environment: environment name (recorded as a label).
        data: key to value.
        app_label: label key naming the service.

    Returns:
        The Secret to create.
    """
    name = secret_name(spec.name, data)
    return client.V1Secret(
        api_version="v1",
        kind="Secret",
        metadata=client.V1ObjectMeta(
            name=name,
            labels={
                app_label: spec.name,
                "app.kubernetes.io/managed-by": MANAGED_BY,
                "managed-by": MANAGED_BY,
                "veza.io/environment": environment,
            },
            annotations={"veza.io/content-sha256": content_hash(data)},
        ),
        immutable=True,
        type="Opaque",
        string_data=dict(data),
    )


def ensure_vault_ready(client_: hvac.Client, address: str) -> None:
    """Fail clearly when Vault is sealed or unreachable.

    Args:
        client_: an hvac client.
        address: the Vault address, for the message.

    Raises:
        SealedError: Vault is sealed.
        UnreachableError: Vault cannot be reached.
    """
    with translate_vault_errors(f"health of {address}"):
        sealed = client_.sys.is_sealed()
    if sealed:
        raise SealedError("vault", f"{address} is sealed", hint="unseal Vault, then re-run")


def read_vault_secret(vault: VaultServer, path: str) -> dict[str, str]:
    """Read a KV v2 secret (latest version) as strings.

    Args:
        vault: the Vault block.
        path: path below the KV mount.

    Returns:
        Key to value.

    Raises:
        SealedError: Vault is sealed.
        UnreachableError: Vault cannot be reached.
        NotFoundError: no secret at the path.
        AuthenticationError: the credentials were refused.
    """
    with translate_vault_errors(f"log in to {vault.address}"):
        hv = vault.get_client()
    ensure_vault_ready(hv, vault.address)
    with translate_vault_errors(f"read {vault.kv_mount}/{path}"):
        answer: Any = hv.secrets.kv.v2.read_secret_version(
            path=path, mount_point=vault.kv_mount, raise_on_deleted_version=True
        )
    data = answer.get("data", {}).get("data") if isinstance(answer, dict) else None
    if not isinstance(data, dict) or not data:
        raise PermanentSystemError(
            "vault", f"{vault.kv_mount}/{path} holds no keys", hint="write the service's secrets"
        )
    return {str(k): str(v) for k, v in data.items()}


def sync_secrets(
    core_v1: client.CoreV1Api,
    vault: VaultServer,
    namespace: str,
    spec: ServiceSpec,
    environment: str,
    *,
    app_label: str = "app",
) -> str:
    """Copy a service's Vault secrets into an immutable Secret named by their hash.

    Idempotent: when the Secret already exists with the same content, it is reused.
    Values are never logged nor put in error messages.

    Args:
        core_v1: Kubernetes core API.
        vault: the Vault block.
        namespace: target namespace.
        spec: the service (its ``vault_path``).
        environment: environment name (fills ``{environment}`` in the path).
        app_label: label key naming the service.

    Returns:
        The name of the Secret.

    Raises:
        SealedError: Vault is sealed (nothing was changed in the cluster).
        UnreachableError: Vault or the API server cannot be reached.
        PermanentSystemError: a Secret of that name exists with other content.
    """
    logger = get_logger(__name__)
    path = spec.vault_path_for(environment)
    data = read_vault_secret(vault, path)
    body = build_secret(spec, environment, data, app_label=app_label)
    name = body.metadata.name if body.metadata and body.metadata.name else ""
    try:
        with translate_api_errors(f"create Secret {name} in {namespace}"):
            core_v1.create_namespaced_secret(namespace, body)
        logger.info("secrets: created %s in %s (%d keys from %s)", name, namespace, len(data), path)
        return name
    except ConflictError:
        pass
    with translate_api_errors(f"read Secret {name} in {namespace}"):
        existing = core_v1.read_namespaced_secret(name, namespace)
    annotations = (existing.metadata.annotations or {}) if existing.metadata else {}
    if annotations.get("veza.io/content-sha256") != content_hash(data):
        raise PermanentSystemError(
            "kubernetes",
            f"Secret {name} in {namespace} exists with other content",
            hint="delete that Secret (it was not created by veza-ops), then re-run",
        )
    logger.info("secrets: %s already in %s, reused", name, namespace)
    return name


sync_secrets_task = task(
    name="sync-secrets",
    cache_policy=NO_CACHE,
    retries=3,
    retry_delay_seconds=2,
    retry_condition_fn=retry_on_transient,
)(sync_secrets)
