"""The Endpoints controller: ready and not-ready pod addresses for every Service with a selector."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sandbox.k8s.controllers.base import Controller, Key
from sandbox.k8s.controllers.probes import resolve_port
from sandbox.k8s.controllers.replicasets import pod_ready
from sandbox.k8s.errors import AlreadyExists, NotFound
from sandbox.k8s.resources import ENDPOINTS, PODS, SERVICES, Resource
from sandbox.k8s.store import Store

Obj = dict[str, Any]


def selected_pods(store: Store, service: Obj, *,
                  subset_labels: dict[str, str] | None = None) -> list[Obj]:
    """Pods with an IP, not finished, whose labels match the Service's selector.

    Args:
        store: the object store.
        service: the Service.
        subset_labels: labels that override (or add to) the selector's, as an Istio
            DestinationRule subset does.

    Returns:
        The pods, sorted by IP. A Service without selector (or subset labels) selects none.
    """
    selector: dict[str, str] = {**((service.get("spec") or {}).get("selector") or {}),
                                **(subset_labels or {})}
    if not selector:
        return []
    pods, _ = store.list(PODS, service["metadata"]["namespace"], copy=False)
    chosen = [
        p for p in pods
        if all((p["metadata"].get("labels") or {}).get(k) == v for k, v in selector.items())
        and (p.get("status") or {}).get("podIP")
        and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
        and not p["metadata"].get("deletionTimestamp")
    ]  # fmt: skip
    return sorted(chosen, key=lambda p: tuple(int(x) for x in p["status"]["podIP"].split(".")))


def pod_port(pod: Obj, target: int | str | None, default: int) -> int:
    """Resolve a Service targetPort (number or container port name) on one pod.

    Args:
        pod: the Pod.
        target: the targetPort.
        default: used when a name is not declared by the pod.

    Returns:
        The port number.
    """
    named = {
        str(p["name"]): int(p["containerPort"])
        for c in (pod.get("spec") or {}).get("containers") or []
        for p in c.get("ports") or []
        if p.get("name") and p.get("containerPort")
    }
    return resolve_port(target, named, default)


def ready_targets(store: Store, namespace: str, name: str, port: int, *,
                  subset_labels: dict[str, str] | None = None) -> list[tuple[str, int]]:
    """Where a Service port's traffic may go right now: ``(podIP, targetPort)`` of ready pods.

    Read fresh from the store, so a selector patch moves traffic on the next request. A Service
    without selector uses the ready addresses of its (hand-written) Endpoints.

    Args:
        store: the object store.
        namespace: the Service's namespace.
        name: the Service's name.
        port: the Service port.
        subset_labels: pod labels overriding the selector's (an Istio subset); with them a
            Service without selector selects the pods carrying those labels.

    Returns:
        Ready targets (empty when there is none or the Service is gone).
    """
    try:
        service = store.get(SERVICES, namespace, name, copy=False)
    except NotFound:
        return []
    entry = next(
        (p for p in service["spec"].get("ports") or [] if int(p.get("port", 0)) == port), None
    )
    if entry is None:
        return []
    target = entry.get("targetPort", port)
    if not (service["spec"].get("selector") or {}) and not subset_labels:
        return _manual_targets(store, namespace, name, entry)
    return [
        (p["status"]["podIP"], pod_port(p, target, port))
        for p in selected_pods(store, service, subset_labels=subset_labels)
        if pod_ready(p)
    ]


def _manual_targets(store: Store, namespace: str, name: str, entry: Obj) -> list[tuple[str, int]]:
    try:
        endpoints = store.get(ENDPOINTS, namespace, name)
    except NotFound:
        return []
    out: list[tuple[str, int]] = []
    for subset in endpoints.get("subsets") or []:
        ports = subset.get("ports") or []
        match = next(
            (p for p in ports if p.get("name") == entry.get("name")), ports[0] if ports else None
        )
        if match is None:
            continue
        out.extend(
            (a["ip"], int(match["port"])) for a in subset.get("addresses") or [] if a.get("ip")
        )
    return out


def endpoint_subsets(service: Obj, pods: list[Obj]) -> list[Obj]:
    """The ``subsets`` of a Service's Endpoints, pods grouped by their resolved ports.

    Args:
        service: the Service.
        pods: the selected pods.

    Returns:
        The subsets (empty when no pod is selected).
    """
    groups: dict[tuple[tuple[str, int, str], ...], Obj] = {}
    for pod in pods:
        ports = tuple(
            (
                str(p.get("name") or ""),
                pod_port(pod, p.get("targetPort", p.get("port")), int(p.get("port", 0))),
                str(p.get("protocol") or "TCP"),
            )
            for p in service["spec"].get("ports") or []
        )
        subset = groups.setdefault(ports, {"addresses": [], "notReadyAddresses": []})
        address = {
            "ip": pod["status"]["podIP"],
            "nodeName": (pod.get("spec") or {}).get("nodeName") or "sandbox",
            "targetRef": {
                "kind": "Pod", "namespace": pod["metadata"]["namespace"],
                "name": pod["metadata"]["name"], "uid": pod["metadata"].get("uid"),
            },
        }  # fmt: skip
        subset["addresses" if pod_ready(pod) else "notReadyAddresses"].append(address)
    subsets = []
    for ports, subset in groups.items():
        out = {k: v for k, v in subset.items() if v}
        out["ports"] = [
            {**({"name": n} if n else {}), "port": port, "protocol": proto}
            for n, port, proto in ports
        ]
        subsets.append(out)
    return subsets


class EndpointsController(Controller):
    """Keeps an Endpoints object beside every Service that has a selector."""

    name = "endpoints-controller"
    resync_seconds = 2.0

    def keys_for(self, event: str, res: Resource, obj: Obj) -> Iterable[Key]:  # noqa: D102
        meta = obj.get("metadata") or {}
        namespace = str(meta.get("namespace") or "")
        if res == SERVICES:
            return ((namespace, str(meta.get("name"))),)
        if res == PODS:
            try:
                services, _ = self.store.list(SERVICES, namespace, copy=False)
            except NotFound:
                return ()
            return [(namespace, s["metadata"]["name"]) for s in services]
        return ()

    def all_keys(self) -> Iterable[Key]:  # noqa: D102
        services, _ = self.store.list(SERVICES, copy=False)
        return [(s["metadata"]["namespace"], s["metadata"]["name"]) for s in services]

    def reconcile(self, key: Key) -> None:  # noqa: D102
        try:
            service = self.store.get(SERVICES, *key)
        except NotFound:
            try:
                self.store.delete(ENDPOINTS, *key)
            except NotFound:
                pass
            return
        if not (service["spec"].get("selector") or {}):
            return
        subsets = endpoint_subsets(service, selected_pods(self.store, service))
        labels = dict(service["metadata"].get("labels") or {})
        try:
            current = self.store.get(ENDPOINTS, *key)
        except NotFound:
            meta: Obj = {"name": key[1], "namespace": key[0]}
            if labels:
                meta["labels"] = labels
            body: Obj = {"apiVersion": "v1", "kind": "Endpoints", "metadata": meta}
            if subsets:
                body["subsets"] = subsets
            try:
                self.store.create(ENDPOINTS, key[0], body)
            except AlreadyExists:
                self.enqueue(key)
            return
        if (current.get("subsets") or []) == subsets:
            return

        def apply(obj: Obj) -> None:
            if subsets:
                obj["subsets"] = subsets
            else:
                obj.pop("subsets", None)

        self.store.mutate(ENDPOINTS, *key, apply)
