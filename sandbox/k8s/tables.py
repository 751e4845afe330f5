"""Server-side ``Table`` output for ``kubectl get``, with the columns real kubectl shows."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sandbox.k8s import resources as r
from sandbox.k8s.customresources import column_value
from sandbox.k8s.selectors import selector_to_string

Obj = dict[str, Any]
Column = tuple[str, str, int, Callable[[Obj], Any]]  # name, type, priority, cell


def _age(obj: Obj) -> str:
    stamp = (obj.get("metadata") or {}).get("creationTimestamp")
    if not stamp:
        return "<unknown>"
    created = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    return human_duration((datetime.now(UTC) - created).total_seconds())


def human_duration(seconds: float) -> str:
    """Format an age the way kubectl does (``45s``, ``3m20s``, ``2h5m``, ``4d``).

    Args:
        seconds: the duration.

    Returns:
        The short form.
    """
    total = max(0, int(seconds))
    if total < 120:
        return f"{total}s"
    minutes, hours = total // 60, total // 3600
    if minutes < 10:
        return f"{minutes}m{total % 60}s" if total % 60 else f"{minutes}m"
    if hours < 3:
        return f"{minutes}m"
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    return f"{hours // 24}d"


def _spec(obj: Obj) -> Obj:
    return obj.get("spec") or {}


def _status(obj: Obj) -> Obj:
    return obj.get("status") or {}


def _containers(obj: Obj) -> list[Obj]:
    template = _spec(obj).get("template") or {}
    return list((template.get("spec") or {}).get("containers") or [])


def _pod_ready(obj: Obj) -> str:
    statuses = _status(obj).get("containerStatuses") or []
    total = len(_spec(obj).get("containers") or [])
    return f"{sum(1 for s in statuses if s.get('ready'))}/{total}"


def _pod_status(obj: Obj) -> str:
    if (obj.get("metadata") or {}).get("deletionTimestamp"):
        return "Terminating"
    status = _status(obj)
    reason = status.get("reason") or status.get("phase") or "Pending"
    for cs in status.get("containerStatuses") or []:
        state = cs.get("state") or {}
        if state.get("waiting", {}).get("reason"):
            return str(state["waiting"]["reason"])
        if state.get("terminated", {}).get("reason"):
            return str(state["terminated"]["reason"])
    return str(reason)


def _restarts(obj: Obj) -> int:
    return sum(int(s.get("restartCount", 0)) for s in _status(obj).get("containerStatuses") or [])


def _service_ports(obj: Obj) -> str:
    ports = []
    for port in _spec(obj).get("ports") or []:
        text = f"{port.get('port')}"
        if port.get("nodePort"):
            text += f":{port['nodePort']}"
        ports.append(f"{text}/{port.get('protocol', 'TCP')}")
    return ",".join(ports) or "<none>"


def _endpoints(obj: Obj) -> str:
    found = [f"{a.get('ip')}:{p.get('port')}"
             for subset in obj.get("subsets") or []
             for a in subset.get("addresses") or []
             for p in subset.get("ports") or [{}]]
    if not found:
        return "<none>"
    return ",".join(found[:3]) + (f" + {len(found) - 3} more..." if len(found) > 3 else "")


def _created(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("creationTimestamp") or "")


def _role_ref(obj: Obj) -> str:
    ref = obj.get("roleRef") or {}
    return f"{ref.get('kind', '')}/{ref.get('name', '')}"


def _subjects(obj: Obj, kind: str) -> str:
    found = [s for s in obj.get("subjects") or [] if s.get("kind") == kind]
    if kind == "ServiceAccount":
        return ", ".join(f"{s.get('namespace', '')}/{s.get('name', '')}" for s in found)
    return ", ".join(str(s.get("name", "")) for s in found)


_NAME: Column = ("Name", "string", 0, lambda o: o["metadata"]["name"])
_AGE: Column = ("Age", "string", 0, _age)
_WORKLOAD_WIDE: list[Column] = [
    ("Containers", "string", 1, lambda o: ",".join(c.get("name", "") for c in _containers(o))),
    ("Images", "string", 1, lambda o: ",".join(c.get("image", "") for c in _containers(o))),
    ("Selector", "string", 1, lambda o: selector_to_string(_spec(o).get("selector"))),
]
COLUMNS: dict[str, list[Column]] = {
    "deployments": [
        _NAME,
        ("Ready", "string", 0,
         lambda o: f"{_status(o).get('readyReplicas', 0)}/{_spec(o).get('replicas', 0)}"),
        ("Up-to-date", "integer", 0, lambda o: _status(o).get("updatedReplicas", 0)),
        ("Available", "integer", 0, lambda o: _status(o).get("availableReplicas", 0)),
        _AGE, *_WORKLOAD_WIDE,
    ],
    "replicasets": [
        _NAME,
        ("Desired", "integer", 0, lambda o: _spec(o).get("replicas", 0)),
        ("Current", "integer", 0, lambda o: _status(o).get("replicas", 0)),
        ("Ready", "integer", 0, lambda o: _status(o).get("readyReplicas", 0)),
        _AGE, *_WORKLOAD_WIDE,
    ],
    "pods": [
        _NAME,
        ("Ready", "string", 0, _pod_ready),
        ("Status", "string", 0, _pod_status),
        ("Restarts", "string", 0, lambda o: str(_restarts(o))),
        _AGE,
        ("IP", "string", 1, lambda o: _status(o).get("podIP") or "<none>"),
        ("Node", "string", 1, lambda o: _spec(o).get("nodeName") or "<none>"),
    ],
    "services": [
        _NAME,
        ("Type", "string", 0, lambda o: _spec(o).get("type", "ClusterIP")),
        ("Cluster-IP", "string", 0, lambda o: _spec(o).get("clusterIP") or "<none>"),
        ("External-IP", "string", 0, lambda o: "<none>"),
        ("Port(s)", "string", 0, _service_ports),
        _AGE,
        ("Selector", "string", 1,
         lambda o: ",".join(f"{k}={v}" for k, v in sorted((_spec(o).get("selector") or {})
                                                           .items())) or "<none>"),
    ],
    "endpoints": [_NAME, ("Endpoints", "string", 0, _endpoints), _AGE],
    "secrets": [
        _NAME, ("Type", "string", 0, lambda o: o.get("type", "Opaque")),
        ("Data", "integer", 0, lambda o: len(o.get("data") or {})), _AGE,
    ],
    "configmaps": [_NAME, ("Data", "integer", 0,
                           lambda o: len(o.get("data") or {}) + len(o.get("binaryData") or {})),
                   _AGE],
    "namespaces": [_NAME, ("Status", "string", 0, lambda o: _status(o).get("phase", "Active")),
                   _AGE],
    "events": [
        ("Last Seen", "string", 0, _age),
        ("Type", "string", 0, lambda o: o.get("type", "")),
        ("Reason", "string", 0, lambda o: o.get("reason", "")),
        ("Object", "string", 0, lambda o: "{}/{}".format(
            str((o.get("involvedObject") or {}).get("kind", "")).lower(),
            (o.get("involvedObject") or {}).get("name", ""))),
        ("Message", "string", 0, lambda o: o.get("message", "")),
    ],
    "nodes": [
        _NAME,
        ("Status", "string", 0, lambda o: "Ready" if any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in _status(o).get("conditions") or []) else "NotReady"),
        ("Roles", "string", 0, lambda o: ",".join(sorted(
            k.split("/", 1)[1] for k in (o["metadata"].get("labels") or {})
            if k.startswith("node-role.kubernetes.io/"))) or "<none>"),
        _AGE,
        ("Version", "string", 0,
         lambda o: (_status(o).get("nodeInfo") or {}).get("kubeletVersion", "")),
    ],
    "serviceaccounts": [_NAME, ("Secrets", "integer", 0, lambda o: len(o.get("secrets") or [])),
                        _AGE],
    "roles": [_NAME, ("Created At", "date", 0, _created)],
    "clusterroles": [_NAME, ("Created At", "date", 0, _created)],
    "rolebindings": [_NAME, ("Role", "string", 0, _role_ref), _AGE,
                     ("Users", "string", 1, lambda o: _subjects(o, "User")),
                     ("Groups", "string", 1, lambda o: _subjects(o, "Group")),
                     ("ServiceAccounts", "string", 1, lambda o: _subjects(o, "ServiceAccount"))],
    "customresourcedefinitions": [_NAME, ("Created At", "date", 0, _created)],
    "leases": [_NAME, ("Holder", "string", 0,
                       lambda o: _spec(o).get("holderIdentity", "")), _AGE],
}


def _printer_cell(kind: str, path: str) -> Callable[[Obj], Any]:
    def cell(obj: Obj) -> Any:
        value = column_value(obj, path)
        if value is None:
            return "<none>" if kind == "string" else None
        if kind == "date":
            return _age({"metadata": {"creationTimestamp": value}})
        return json.dumps(value) if isinstance(value, list | dict) else value

    return cell


def _columns(res: r.Resource) -> list[Column]:
    if not res.custom:
        return COLUMNS.get(res.plural, [_NAME, _AGE])
    if not res.columns:
        return [_NAME, _AGE]
    return [_NAME, *[(name.title() if name.islower() else name,
                      "string" if kind == "date" else kind, priority, _printer_cell(kind, path))
                     for name, kind, path, priority in res.columns]]


COLUMNS["clusterrolebindings"] = COLUMNS["rolebindings"]


def table(res: r.Resource, items: list[Obj], resource_version: str) -> dict[str, Any]:
    """Render objects as a ``meta.k8s.io/v1 Table``.

    Args:
        res: the resource type.
        items: the objects (each becomes a row carrying the object itself).
        resource_version: the list's resourceVersion.

    Returns:
        The Table.
    """
    columns = _columns(res)
    definitions = [
        {"name": name, "type": kind, "format": "name" if name == "Name" else "",
         "description": name, "priority": priority}
        for name, kind, priority, _ in columns
    ]
    rows = [{"cells": [cell(obj) for *_, cell in columns], "object": obj} for obj in items]
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1",
            "metadata": {"resourceVersion": resource_version},
            "columnDefinitions": definitions, "rows": rows}


def wants_table(accept: str | None) -> bool:
    """Tell whether the Accept header asks for a Table (``as=Table``).

    Args:
        accept: the Accept header.

    Returns:
        True when the first acceptable media type is a Table.
    """
    return bool(accept) and "as=Table" in (accept or "").split(",")[0]
