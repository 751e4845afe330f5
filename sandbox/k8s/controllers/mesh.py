"""Istio traffic splitting for the Service proxies: VirtualService weights over subsets."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from sandbox.k8s.controllers.endpoints import pod_port, ready_targets, selected_pods
from sandbox.k8s.controllers.replicasets import pod_ready
from sandbox.k8s.errors import NotFound
from sandbox.k8s.resources import PODS, SERVICES, Resource
from sandbox.k8s.store import Store

Obj = dict[str, Any]
ISTIO_NETWORKING = "networking.istio.io"


@dataclass(frozen=True)
class Backends:
    """Where one request may go: endpoints, the pool they form, and why none (for the 503)."""

    targets: list[tuple[str, int]]
    pool: str = ""  # round-robin is per pool: one per (host, subset) chosen by weight
    empty: str = field(default="")


def _istio(store: Store, plural: str) -> Resource | None:
    return next((res for res in store.resources.by_plural(plural)
                 if res.group == ISTIO_NETWORKING), None)


def service_of(host: str, namespace: str) -> str | None:
    """The name of the Service in ``namespace`` an Istio host names.

    Args:
        host: ``name``, ``name.ns``, ``name.ns.svc`` or ``name.ns.svc.cluster.local``.
        namespace: the namespace the host is resolved in.

    Returns:
        The Service name, or None when the host names something in another namespace or
        outside the cluster.
    """
    parts = host.split(".")
    if len(parts) == 1:
        return parts[0]
    if parts[1] != namespace or parts[2:] not in ([], ["svc"], ["svc", "cluster", "local"]):
        return None
    return parts[0]


def _virtual_service(store: Store, namespace: str, name: str) -> Obj | None:
    """The oldest VirtualService of the namespace routing mesh traffic for the Service."""
    res = _istio(store, "virtualservices")
    if res is None:
        return None
    found, _ = store.list(res, namespace, copy=False)
    found.sort(key=lambda o: (o["metadata"].get("creationTimestamp", ""), o["metadata"]["name"]))
    for vs in found:
        spec = vs.get("spec") or {}
        gateways = spec.get("gateways") or ["mesh"]
        hosts = [service_of(str(h), namespace) for h in spec.get("hosts") or []]
        if name in hosts and "mesh" in gateways and (spec.get("http") or []):
            return vs
    return None


def _subset_labels(store: Store, namespace: str, service: str,
                   subset: str) -> dict[str, str] | None:
    """The labels of a DestinationRule subset for ``service``; None when it is not defined."""
    res = _istio(store, "destinationrules")
    if res is None:
        return None
    rules, _ = store.list(res, namespace, copy=False)
    for rule in rules:
        spec = rule.get("spec") or {}
        if service_of(str(spec.get("host") or ""), namespace) != service:
            continue
        for entry in spec.get("subsets") or []:
            if isinstance(entry, dict) and entry.get("name") == subset:
                return {str(k): str(v) for k, v in (entry.get("labels") or {}).items()}
    return None


def pick(routes: list[Obj], draw: float) -> Obj | None:
    """Choose a route by weight (Envoy's weighted clusters).

    A single route without a weight takes everything; otherwise a missing weight is 0, and a
    route of weight 0 is never chosen.

    Args:
        routes: the ``http[].route[]`` entries.
        draw: a uniform random number in [0, 1).

    Returns:
        The chosen route, or None when every weight is 0.
    """
    if len(routes) == 1 and routes[0].get("weight") is None:
        return routes[0]
    weights = [max(0, int(r.get("weight") or 0)) for r in routes]
    total = sum(weights)
    if total <= 0:
        return None
    point = draw * total
    for route, weight in zip(routes, weights, strict=True):
        if point < weight:
            return route
        point -= weight
    return next(r for r, w in zip(routes, weights, strict=True) if w > 0)  # rounding at the end


def backends(store: Store, namespace: str, name: str, port: int, *,
             rng: random.Random | None = None) -> Backends:
    """Where the next request to a Service port goes, read fresh from the store.

    Without a VirtualService naming the Service: its ready endpoints, as kube-proxy would.
    With one (in the Service's namespace, bound to the ``mesh`` gateway): a destination of its
    first ``http`` route is drawn by weight, and the request goes to the destination Service's
    ready endpoints that carry the DestinationRule subset's labels (as Istio: a subset filters
    the Service's endpoints, it never adds pods the Service does not select). A subset that
    is not defined or has no ready endpoint leaves no target (the proxy answers 503, as Envoy
    does).

    Args:
        store: the object store.
        namespace: the Service's namespace.
        name: the Service's name.
        port: the Service port the request came to.
        rng: the random source (default: the module's).

    Returns:
        The backends.
    """
    vs = _virtual_service(store, namespace, name)
    if vs is None:
        return Backends(ready_targets(store, namespace, name, port),
                        empty=f"no ready endpoints for service {namespace}/{name}:{port}")
    routes = [r for r in ((vs.get("spec") or {}).get("http") or [{}])[0].get("route") or []
              if isinstance(r, dict)]
    chosen = pick(routes, (rng or random).random())
    vs_name = vs["metadata"]["name"]
    if chosen is None:
        return Backends([], empty=f"no route: every weight of virtualservice {vs_name} is 0")
    destination = chosen.get("destination") or {}
    host = str(destination.get("host") or "")
    target = service_of(host, namespace)
    subset = str(destination.get("subset") or "")
    pool = f"{host}|{subset}"
    if target is None:
        return Backends([], pool, f"no healthy upstream: host {host!r} is not a Service of "
                        f"namespace {namespace}")
    labels: dict[str, str] = {}
    if subset:
        found = _subset_labels(store, namespace, target, subset)
        if found is None:
            return Backends([], pool, f"no healthy upstream: subset {subset!r} of {host!r} is "
                            "not defined by a DestinationRule")
        labels = found
    target_port = _port_of(store, namespace, target, port, destination)
    found_targets = subset_targets(store, namespace, target, target_port, labels)
    return Backends(found_targets, pool,
                    f"no healthy upstream: no ready endpoint in {host}"
                    + (f" subset {subset}" if subset else ""))


def _carries(obj: Obj, labels: dict[str, str]) -> bool:
    found = (obj.get("metadata") or {}).get("labels") or {}
    return all(found.get(k) == v for k, v in labels.items())


def subset_targets(store: Store, namespace: str, name: str, port: int,
                   labels: dict[str, str]) -> list[tuple[str, int]]:
    """A Service port's ready endpoints whose pods carry ``labels`` (an Istio subset).

    Istio builds a subset from the Service's own endpoints filtered by the subset's labels,
    so a subset naming pods outside the Service's selector is empty. A Service without
    selector keeps the addresses of its hand-written Endpoints that belong to such pods.

    Args:
        store: the object store.
        namespace: the Service's namespace.
        name: the Service's name.
        port: the Service port.
        labels: the subset's labels (empty: every endpoint).

    Returns:
        ``(podIP, targetPort)`` of the ready endpoints in the subset.
    """
    if not labels:
        return ready_targets(store, namespace, name, port)
    try:
        service = store.get(SERVICES, namespace, name, copy=False)
    except NotFound:
        return []
    entry = next((p for p in service["spec"].get("ports") or []
                  if int(p.get("port", 0)) == port), None)
    if entry is None:
        return []
    if not (service["spec"].get("selector") or {}):
        pods, _ = store.list(PODS, namespace, copy=False)
        ips = {(p.get("status") or {}).get("podIP") for p in pods if _carries(p, labels)}
        return [t for t in ready_targets(store, namespace, name, port) if t[0] in ips]
    target = entry.get("targetPort", port)
    return [(p["status"]["podIP"], pod_port(p, target, port))
            for p in selected_pods(store, service) if pod_ready(p) and _carries(p, labels)]


def _port_of(store: Store, namespace: str, target: str, port: int, destination: Obj) -> int:
    """The port of the destination Service: the route's, else the same, else its first."""
    number = (destination.get("port") or {}).get("number")
    if number:
        return int(number)
    try:
        spec = store.get(SERVICES, namespace, target, copy=False).get("spec") or {}
        ports = [int(p.get("port", 0)) for p in spec.get("ports") or []]
    except NotFound:
        return port
    return port if port in ports or not ports else ports[0]
