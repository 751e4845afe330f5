"""Container environment resolution: env values, secretKeyRef/configMapKeyRef and envFrom."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from sandbox.k8s.errors import NotFound
from sandbox.k8s.resources import CONFIGMAPS, SECRETS, Resource
from sandbox.k8s.store import Store

_VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


class ContainerConfigError(Exception):
    """The container cannot be configured (``CreateContainerConfigError``)."""


def _source_data(store: Store, res: Resource, namespace: str, name: str) -> dict[str, str] | None:
    try:
        obj = store.get(res, namespace, name)
    except NotFound:
        return None
    if res.plural == SECRETS.plural:
        out: dict[str, str] = {}
        for key, value in (obj.get("data") or {}).items():
            try:
                out[key] = base64.b64decode(str(value)).decode("utf-8", errors="replace")
            except (binascii.Error, ValueError):
                out[key] = ""
        for key, value in (obj.get("stringData") or {}).items():
            out.setdefault(key, str(value))
        return out
    data = {k: str(v) for k, v in (obj.get("data") or {}).items()}
    return data


def _key_ref(store: Store, namespace: str, ref: dict[str, Any], res: Resource) -> str | None:
    kind = "secret" if res.plural == SECRETS.plural else "configmap"
    name, key = str(ref.get("name") or ""), str(ref.get("key") or "")
    optional = bool(ref.get("optional"))
    data = _source_data(store, res, namespace, name)
    if data is None:
        if optional:
            return None
        raise ContainerConfigError(f'{kind} "{name}" not found')
    if key not in data:
        if optional:
            return None
        label = "Secret" if kind == "secret" else "ConfigMap"
        raise ContainerConfigError(f"couldn't find key {key} in {label} {namespace}/{name}")
    return data[key]


def resolve_env(
    store: Store,
    namespace: str,
    container: dict[str, Any],
    *,
    fields: dict[str, str] | None = None,
) -> dict[str, str]:
    """The environment a container's spec asks for, with every reference resolved.

    ``envFrom`` comes first and ``env`` overrides it, as in the kubelet; ``$(VAR)`` references
    to earlier variables are expanded.

    Args:
        store: the object store.
        namespace: the pod's namespace.
        container: the container spec.
        fields: values for ``fieldRef`` paths (``metadata.name``, ``status.podIP``...).

    Returns:
        Variable name to value.

    Raises:
        ContainerConfigError: a non-optional Secret, ConfigMap or key is missing.
    """
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        prefix = str(source.get("prefix") or "")
        for field, res, kind in (
            ("secretRef", SECRETS, "secret"),
            ("configMapRef", CONFIGMAPS, "configmap"),
        ):
            ref = source.get(field)
            if not isinstance(ref, dict):
                continue
            data = _source_data(store, res, namespace, str(ref.get("name") or ""))
            if data is None:
                if ref.get("optional"):
                    continue
                raise ContainerConfigError(f'{kind} "{ref.get("name")}" not found')
            for key, value in data.items():
                env[prefix + key] = value
    for var in container.get("env") or []:
        name = str(var.get("name") or "")
        if not name:
            continue
        if "value" in var:
            value = str(var.get("value") or "")
            env[name] = _VAR_REF.sub(lambda m: env.get(m.group(1), m.group(0)), value)
            continue
        source = var.get("valueFrom") or {}
        resolved: str | None = None
        if isinstance(source.get("secretKeyRef"), dict):
            resolved = _key_ref(store, namespace, source["secretKeyRef"], SECRETS)
        elif isinstance(source.get("configMapKeyRef"), dict):
            resolved = _key_ref(store, namespace, source["configMapKeyRef"], CONFIGMAPS)
        elif isinstance(source.get("fieldRef"), dict):
            resolved = (fields or {}).get(str(source["fieldRef"].get("fieldPath") or ""))
        if resolved is not None:
            env[name] = resolved
    return env
