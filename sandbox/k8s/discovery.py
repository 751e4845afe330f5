"""Discovery documents: /version, /api, /apis and each group-version's resource list."""

from __future__ import annotations

import re
from typing import Any

from sandbox.k8s import resources as r

_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
_NS_VERBS = ["create", "delete", "get", "list", "patch", "update", "watch"]
_SUB_VERBS = ["get", "patch", "update"]


def version() -> dict[str, Any]:
    """The ``/version`` document.

    Returns:
        A version.Info like a 1.32 API server's.
    """
    return {
        "major": "1",
        "minor": "32",
        "gitVersion": "v1.32.0-veza-sandbox",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.23.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    }


AGGREGATED_V2 = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"


def wants_aggregated(accept: str | None) -> bool:
    """Whether a ``/api`` or ``/apis`` request asks for aggregated discovery (v2) first.

    Args:
        accept: the Accept header.

    Returns:
        True when its first media type is ``apidiscovery.k8s.io/v2`` APIGroupDiscoveryList.
    """
    first = (accept or "").split(",")[0].replace(" ", "")
    return "g=apidiscovery.k8s.io" in first and ";v=v2;" in f"{first};" and \
        "as=APIGroupDiscoveryList" in first


def _kind_ref(res: r.Resource, sub: str | None = None) -> dict[str, str]:
    if sub == "scale":
        return {"group": "autoscaling", "version": "v1", "kind": "Scale"}
    return {"group": res.group, "version": res.version, "kind": res.kind}


def _discovered(res: r.Resource) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "resource": res.plural, "responseKind": _kind_ref(res),
        "scope": "Namespaced" if res.namespaced else "Cluster",
        "singularResource": res.singular,
        "verbs": _VERBS if res.namespaced or res.custom else _NS_VERBS,
    }
    if res.short_names:
        entry["shortNames"] = list(res.short_names)
    if _categories(res):
        entry["categories"] = _categories(res)
    if res.subresources:
        entry["subresources"] = [
            {"subresource": sub, "responseKind": _kind_ref(res, sub),
             "verbs": ["get"] if sub == "log" else _SUB_VERBS}
            for sub in res.subresources]
    return entry


def aggregated(registry: r.Registry, *, core: bool) -> dict[str, Any]:
    """The aggregated discovery document (``apidiscovery.k8s.io/v2``) of ``/api`` or ``/apis``.

    One request gives kubectl every group, version and resource (custom ones included), each
    group's versions in preference order.

    Args:
        registry: what the store serves.
        core: True for ``/api`` (the core group), False for ``/apis`` (every named group).

    Returns:
        An APIGroupDiscoveryList.
    """
    names = [""] if core else sorted({g for g, _ in registry.group_versions() if g})
    items = []
    for name in names:
        versions = sorted({v for g, v in registry.group_versions() if g == name},
                          key=version_priority)
        items.append({
            "metadata": {"name": name, "creationTimestamp": None} if name else
            {"creationTimestamp": None},
            "versions": [{"version": v, "freshness": "Current",
                          "resources": [_discovered(res)
                                        for res in registry.by_group_version(name, v)]}
                         for v in versions],
        })
    return {"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2",
            "metadata": {}, "items": items}


def core_versions(server_address: str) -> dict[str, Any]:
    """The ``/api`` document in its legacy APIVersions form (see :func:`aggregated`).

    Args:
        server_address: ``host:port`` of this server.

    Returns:
        APIVersions.
    """
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0",
                                        "serverAddress": server_address}],
    }


def version_priority(version: str) -> tuple[int, int, int]:
    """Kubernetes' version order: GA before beta before alpha, higher numbers first.

    Args:
        version: e.g. ``v1``, ``v1beta1``, ``v1alpha3``.

    Returns:
        A sort key (smaller sorts first).
    """
    match = re.fullmatch(r"v(\d+)(?:(alpha|beta)(\d+))?", version)
    if match is None:
        return (3, 0, 0)
    major, level, minor = match.groups()
    rank = {None: 0, "beta": 1, "alpha": 2}[level]
    return (rank, -int(major), -int(minor or 0))


def _group(registry: r.Registry, name: str) -> dict[str, Any]:
    versions = [{"groupVersion": f"{g}/{v}", "version": v}
                for g, v in sorted(registry.group_versions(),
                                   key=lambda gv: version_priority(gv[1])) if g == name]
    return {"name": name, "versions": versions, "preferredVersion": versions[0]}


def group_list(registry: r.Registry) -> dict[str, Any]:
    """The ``/apis`` document.

    Args:
        registry: what the store serves (custom resources included).

    Returns:
        APIGroupList with every non-core group served.
    """
    names = sorted({g for g, _ in registry.group_versions() if g})
    return {"kind": "APIGroupList", "apiVersion": "v1",
            "groups": [_group(registry, n) for n in names]}


def group(registry: r.Registry, name: str) -> dict[str, Any] | None:
    """The ``/apis/{group}`` document.

    Args:
        registry: what the store serves.
        name: the group.

    Returns:
        APIGroup, or None when the group is not served.
    """
    if name not in {g for g, _ in registry.group_versions() if g}:
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group(registry, name)}


def _categories(res: r.Resource) -> list[str]:
    return list(res.categories) or (["all"] if not res.custom and res.plural in
                                    r.IN_CATEGORY_ALL else [])


def _api_resource(res: r.Resource) -> list[dict[str, Any]]:
    main: dict[str, Any] = {
        "name": res.plural,
        "singularName": res.singular,
        "namespaced": res.namespaced,
        "kind": res.kind,
        "verbs": _VERBS if res.namespaced or res.custom else _NS_VERBS,
    }
    if res.short_names:
        main["shortNames"] = list(res.short_names)
    if _categories(res):
        main["categories"] = _categories(res)
    entries = [main]
    for sub in res.subresources:
        entry: dict[str, Any] = {"name": f"{res.plural}/{sub}", "singularName": "",
                                 "namespaced": res.namespaced, "kind": res.kind,
                                 "verbs": ["get"] if sub == "log" else _SUB_VERBS}
        if sub == "scale":
            entry.update({"group": "autoscaling", "version": "v1", "kind": "Scale"})
        entries.append(entry)
    return entries


def resource_list(registry: r.Registry, group_name: str,
                  version_name: str) -> dict[str, Any] | None:
    """The ``/api/v1`` or ``/apis/{group}/{version}`` document.

    Args:
        registry: what the store serves.
        group_name: the group ("" for core).
        version_name: the version.

    Returns:
        APIResourceList, or None when the group-version is not served.
    """
    served = registry.by_group_version(group_name, version_name)
    if not served:
        return None
    group_version = f"{group_name}/{version_name}" if group_name else version_name
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": [entry for res in served for entry in _api_resource(res)],
    }


def _gv_path(group_name: str, version_name: str) -> str:
    return f"apis/{group_name}/{version_name}" if group_name else f"api/{version_name}"


def openapi_v3_root(registry: r.Registry) -> dict[str, Any]:
    """The ``/openapi/v3`` index: one document per served group-version.

    Args:
        registry: what the store serves.

    Returns:
        The index kubectl reads to find each group-version's document.
    """
    return {"paths": {
        _gv_path(g, v): {"serverRelativeURL": f"/openapi/v3/{_gv_path(g, v)}?hash=sandbox1"}
        for g, v in registry.group_versions()
    }}


def openapi_v3(registry: r.Registry, path: str) -> dict[str, Any] | None:
    """A minimal OpenAPI v3 document for one group-version: PATCH operations only.

    It carries just what kubectl checks before ``create -f``/``apply -f``: that the server
    accepts the ``fieldValidation`` query parameter (so kubectl skips client-side schema
    validation, which needs full schemas the emulator does not publish).

    Args:
        registry: what the store serves.
        path: ``api/v1`` or ``apis/{group}/{version}``.

    Returns:
        The document, or None when the group-version is not served.
    """
    for group_name, version_name in registry.group_versions():
        if _gv_path(group_name, version_name) != path:
            continue
        paths: dict[str, Any] = {}
        for res in registry.by_group_version(group_name, version_name):
            where = f"/{path}/namespaces/{{namespace}}/{res.plural}/{{name}}" if res.namespaced \
                else f"/{path}/{res.plural}/{{name}}"
            paths[where] = {"patch": {
                "x-kubernetes-group-version-kind": {
                    "group": group_name, "version": version_name, "kind": res.kind},
                "parameters": [{"name": "fieldValidation", "in": "query",
                                "schema": {"type": "string", "uniqueItems": True}}],
                "responses": {"200": {"description": "OK"}},
            }}
        return {"openapi": "3.0.0",
                "info": {"title": "Kubernetes (veza sandbox)", "version": "v1.32.0"},
                "paths": paths, "components": {"schemas": {}}}
    return None
