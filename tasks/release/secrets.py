"""Vault -> Kubernetes: a service's secrets in an immutable Secret named by a keyed hash."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from secrets import token_bytes
from typing import Any

import hvac
from kubernetes import client
from prefect import task
from prefect.cache_policies import NO_CACHE

from blocks.vault import VaultServer
from errors import (
    ConflictError,
    NotFoundError,
    PermanentSystemError,
    SealedError,
    retry_on_transient,
)
from errors.kubernetes import translate_api_errors
from errors.vault import translate_vault_errors
from tasks.release.catalogue import ServiceSpec
from tasks.release.logs import get_logger
from tasks.release.redaction import remember

MANAGED_BY = "veza-ops"
NAMING_KEY_SECRET = "veza-ops-secret-naming-key"  # noqa: S105 - a Secret's name
NAMING_KEY_FIELD = "key"
HASH_ANNOTATION = "veza.io/content-hmac-sha256"
LEGACY_HASH_ANNOTATION = "veza.io/content-sha256"  # names before the keyed hash (still valid)


def content_hash(data: dict[str, str]) -> str:
    """SHA-256 of the secret data (keys sorted), hex: how names were derived before the key.

    Kept to recognise legacy Secrets; never used for a new name (anyone could confirm a
    guessed value against it offline).

    Args:
        data: key to value.

    Returns:
        64 hex digits.
    """
    return hashlib.sha256(_canonical(data)).hexdigest()


def _canonical(data: dict[str, str]) -> bytes:
    return json.dumps(sorted(data.items()), separators=(",", ":")).encode()


def keyed_hash(key: bytes, service: str, data: dict[str, str]) -> str:
    """HMAC-SHA256 of a service's secret data under the environment's naming key, hex.

    The same data gives the same value within an environment (an unchanged secret keeps its
    Secret, so pods do not roll), but without the key nobody can confirm a guessed value.

    Args:
        key: the environment's naming key.
        service: the service (two services with the same data get different names).
        data: key to value.

    Returns:
        64 hex digits.
    """
    return hmac.new(key, service.encode() + b"\n" + _canonical(data), hashlib.sha256).hexdigest()


def secret_name(service: str, data: dict[str, str], key: bytes) -> str:
    """Name of the immutable Secret holding ``data`` for ``service`` in one environment.

    Args:
        service: service name.
        data: the secret data.
        key: the environment's naming key (:func:`naming_key`).

    Returns:
        ``{service}-secrets-{hmac[:10]}``.
    """
    return f"{service}-secrets-{keyed_hash(key, service, data)[:10]}"


def naming_key(core_v1: client.CoreV1Api, namespace: str) -> bytes:
    """The environment's Secret-naming key, created once (32 random bytes) in its namespace.

    It lives in the cluster beside the Secrets it names (Secret ``veza-ops-secret-naming-key``,
    immutable): whoever can read it can read those Secrets anyway. Two runs creating it at
    once agree: the loser of the create reads the winner's.

    Args:
        core_v1: Kubernetes core API.
        namespace: the environment's namespace.

    Returns:
        The key.

    Raises:
        PermanentSystemError: the Secret exists without a usable key.
    """
    for _ in range(2):
        try:
            with translate_api_errors(f"read Secret {NAMING_KEY_SECRET} in {namespace}"):
                stored = core_v1.read_namespaced_secret(NAMING_KEY_SECRET, namespace)
        except NotFoundError:
            body = client.V1Secret(
                api_version="v1", kind="Secret", immutable=True, type="Opaque",
                metadata=client.V1ObjectMeta(name=NAMING_KEY_SECRET, labels={
                    "app.kubernetes.io/managed-by": MANAGED_BY, "veza.io/role": "naming-key"}),
                data={NAMING_KEY_FIELD: base64.b64encode(token_bytes(32)).decode()})
            try:
                with translate_api_errors(f"create Secret {NAMING_KEY_SECRET} in {namespace}"):
                    core_v1.create_namespaced_secret(namespace, body)
            except ConflictError:
                continue
            get_logger(__name__).info("secrets: naming key created in %s", namespace)
            return base64.b64decode((body.data or {})[NAMING_KEY_FIELD])
        encoded = (stored.data or {}).get(NAMING_KEY_FIELD, "")
        key = base64.b64decode(encoded) if encoded else b""
        if len(key) < 16:
            break
        return key
    raise PermanentSystemError(
        "kubernetes", f"Secret {NAMING_KEY_SECRET} in {namespace} holds no usable key",
        hint="delete it (a new key is made; every service then gets a new Secret name)")


def build_secret(
    spec: ServiceSpec, environment: str, data: dict[str, str], *, key: bytes,
    app_label: str = "app",
) -> client.V1Secret:
    """The immutable Secret object for a service's data.

    Args:
        spec: the service.
        environment: environment name (recorded as a label).
        data: key to value.
        key: the environment's naming key.
        app_label: label key naming the service.

    Returns:
        The Secret to create.
    """
    name = secret_name(spec.name, data, key)
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
            annotations={HASH_ANNOTATION: keyed_hash(key, spec.name, data)},
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
    """Copy a service's Vault secrets into an immutable Secret named by their keyed hash.

    Idempotent: when the Secret already exists with the same content, it is reused (the
    name is the HMAC of the data under the environment's naming key, see :func:`naming_key`).
    A Deployment still on a legacy name (plain SHA-256) keeps it until this release moves its
    references to the new name. Values are never logged nor put in error messages, and are
    remembered for redaction (``redaction.remember``).

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
    remember({f"{spec.name} {k}": v for k, v in data.items()})
    key = naming_key(core_v1, namespace)
    body = build_secret(spec, environment, data, key=key, app_label=app_label)
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
    if annotations.get(HASH_ANNOTATION) != keyed_hash(key, spec.name, data):
        raise PermanentSystemError(
            "kubernetes",
            f"Secret {name} in {namespace} exists with other content",
            hint="delete that Secret (it was not created by veza-ops), then re-run",
        )
    logger.info("secrets: %s already in %s, reused", name, namespace)
    return name


sync_secrets_task = task(
    name="sync-secrets",
    task_run_name="sync-secrets-{spec.name}-{environment}",
    cache_policy=NO_CACHE,
    retries=3,
    retry_delay_seconds=2,
    retry_condition_fn=retry_on_transient,
)(sync_secrets)
