"""CustomResourceDefinitions: defaults, validation, status, and the resources they serve."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml

from sandbox.k8s import resources as r
from sandbox.k8s.errors import invalid_cause

Obj = dict[str, Any]
CRD_DIR = Path(__file__).resolve().parent / "crds"
"""The CRD manifests every emulator installs at start (Istio's, like a cluster with Istio)."""

_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def apply_crd_defaults(crd: Obj) -> None:
    """Default a CRD's names and versions as the API server does (in place).

    Args:
        crd: the CustomResourceDefinition.
    """
    spec = crd.setdefault("spec", {})
    names = spec.setdefault("names", {})
    kind = str(names.get("kind") or "")
    if kind:
        names.setdefault("singular", kind.lower())
        names.setdefault("listKind", f"{kind}List")
    spec.setdefault("conversion", {"strategy": "None"})
    for version in spec.get("versions") or []:
        if isinstance(version, dict):
            version.setdefault("served", True)
            version.setdefault("storage", False)


def crd_causes(crd: Obj) -> list[dict[str, str]]:
    """What is wrong with a CRD (empty when it is valid).

    Args:
        crd: the CustomResourceDefinition, defaulted.

    Returns:
        ``details.causes`` entries.
    """
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    group, plural = str(spec.get("group") or ""), str(names.get("plural") or "")
    causes: list[dict[str, str]] = []
    if not group or "." not in group:
        causes.append(invalid_cause("spec.group", f'Invalid value: "{group}": should be a '
                                    "domain with at least one dot"))
    for field in ("plural", "kind"):
        if not names.get(field):
            causes.append(invalid_cause(f"spec.names.{field}", "Required value",
                                        "FieldValueRequired"))
    if plural and not _DNS_LABEL.match(plural):
        causes.append(invalid_cause("spec.names.plural", f'Invalid value: "{plural}": a '
                                    "DNS-1035 label is required"))
    name = str((crd.get("metadata") or {}).get("name") or "")
    if plural and group and name != f"{plural}.{group}":
        causes.append(invalid_cause("metadata.name", f'Invalid value: "{name}": must be '
                                    f"spec.names.plural+\".\"+spec.group"))
    if spec.get("scope") not in ("Namespaced", "Cluster"):
        causes.append(invalid_cause("spec.scope", f"Unsupported value: {spec.get('scope')!r}: "
                                    'supported values: "Cluster", "Namespaced"',
                                    "FieldValueNotSupported"))
    versions = [v for v in spec.get("versions") or [] if isinstance(v, dict)]
    if not versions or any(not v.get("name") for v in versions):
        causes.append(invalid_cause("spec.versions", "Invalid value: must have exactly one "
                                    "version marked as storage version, each named"))
    elif sum(1 for v in versions if v.get("storage")) != 1:
        causes.append(invalid_cause("spec.versions", "Invalid value: must have exactly one "
                                    "version marked as storage version"))
    return causes


def name_conflicts(crd: Obj, served: list[r.Resource]) -> list[dict[str, str]]:
    """Causes when a CRD would serve a built-in's (or another CRD's) group and plural.

    Args:
        crd: the CustomResourceDefinition.
        served: every resource served now.

    Returns:
        ``details.causes`` entries (empty when the names are free).
    """
    mine = {(res.group, res.plural) for res in resources_of(crd)}
    name = (crd.get("metadata") or {}).get("name")
    taken = [res for res in served if (res.group, res.plural) in mine
             and (not res.custom or res.crd != name)]
    return [invalid_cause("spec.names.plural", f'Invalid value: "{res.plural}": already served '
                          f"in group {res.group!r}") for res in taken[:1]]


def crd_status(crd: Obj) -> Obj:
    """The status the API server gives an accepted CRD (Established, NamesAccepted).

    Args:
        crd: the CustomResourceDefinition.

    Returns:
        Its status.
    """
    spec = crd.get("spec") or {}
    stored = [v["name"] for v in spec.get("versions") or [] if v.get("storage")]
    old = crd.get("status") or {}
    stamp = str((crd.get("metadata") or {}).get("creationTimestamp") or "")
    previous = {c.get("type"): c for c in old.get("conditions") or []}
    conditions = []
    for kind, reason, message in (
            ("NamesAccepted", "NoConflicts", "no conflicts found"),
            ("Established", "InitialNamesAccepted", "the initial names have been accepted")):
        when = (previous.get(kind) or {}).get("lastTransitionTime") or stamp
        conditions.append({"type": kind, "status": "True", "reason": reason,
                           "message": message, "lastTransitionTime": when})
    stored_versions = list(old.get("storedVersions") or [])
    stored_versions += [v for v in stored if v not in stored_versions]
    return {"conditions": conditions, "acceptedNames": copy.deepcopy(spec.get("names") or {}),
            "storedVersions": stored_versions}


def _columns(version: Obj) -> tuple[tuple[str, str, str, int], ...]:
    return tuple(
        (str(c.get("name", "")), str(c.get("type", "string")), str(c.get("jsonPath", "")),
         int(c.get("priority", 0)))
        for c in version.get("additionalPrinterColumns") or [] if isinstance(c, dict))


def resources_of(crd: Obj) -> list[r.Resource]:
    """The resources a CRD serves: one per served version.

    Args:
        crd: the CustomResourceDefinition (assumed valid).

    Returns:
        The resources (``custom=True``).
    """
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    out = []
    for version in spec.get("versions") or []:
        if not isinstance(version, dict) or not version.get("served", True):
            continue
        subresources = tuple(s for s in ("status", "scale")
                             if s in (version.get("subresources") or {}))
        out.append(r.Resource(
            group=str(spec.get("group")), version=str(version.get("name")),
            plural=str(names.get("plural")), kind=str(names.get("kind")),
            namespaced=spec.get("scope") == "Namespaced",
            short_names=tuple(names.get("shortNames") or ()), subresources=subresources,
            singular=str(names.get("singular") or str(names.get("kind")).lower()),
            custom=True, categories=tuple(names.get("categories") or ()),
            columns=_columns(version),
            crd=str((crd.get("metadata") or {}).get("name") or "")))
    return out


def sync_registry(registry: r.Registry, old: Obj | None, new: Obj | None) -> None:
    """Serve what a CRD now defines, and stop serving what it no longer does.

    Args:
        registry: the store's registry.
        old: the CRD before the change (None when created).
        new: the CRD after the change (None when deleted).
    """
    wanted = resources_of(new) if new is not None else []
    urls = {(res.group, res.version, res.plural) for res in wanted}
    for res in resources_of(old) if old is not None else []:
        if (res.group, res.version, res.plural) not in urls:
            registry.remove(res)
    for res in wanted:
        registry.add(res)


def builtin_manifests(directory: Path = CRD_DIR) -> list[Obj]:
    """The CRDs shipped with the emulator (``sandbox/k8s/crds/*.yaml``).

    Args:
        directory: where the manifests are.

    Returns:
        Every CustomResourceDefinition document, in file-name order.
    """
    docs: list[Obj] = []
    for path in sorted(directory.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text())
                 if isinstance(d, dict) and d.get("kind") == "CustomResourceDefinition"]
    return docs


def column_value(obj: Obj, json_path: str) -> Any:
    """Evaluate a simple printer-column JSONPath (``.spec.hosts``, ``.a.b[0].c``).

    Args:
        obj: the object.
        json_path: the path.

    Returns:
        The value, or None when absent.
    """
    node: Any = obj
    for token in re.findall(r"[^.\[\]]+|\[\d+\]", json_path.strip().lstrip("{").rstrip("}")):
        if token.startswith("["):
            index = int(token[1:-1])
            node = node[index] if isinstance(node, list) and index < len(node) else None
        else:
            node = node.get(token) if isinstance(node, dict) else None
        if node is None:
            return None
    return node
