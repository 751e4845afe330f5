"""The Services controller: clusterIP allocation and one HTTP proxy per port, Istio-aware."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from functools import partial
from typing import Any

from sandbox.k8s.controllers.base import Controller, Key
from sandbox.k8s.controllers.ips import IpPool
from sandbox.k8s.controllers.mesh import backends
from sandbox.k8s.controllers.proxy import ServiceProxy
from sandbox.k8s.errors import NotFound
from sandbox.k8s.resources import SERVICES, Resource
from sandbox.k8s.store import Store

logger = logging.getLogger(__name__)

URL_ANNOTATION = "sandbox.veza.io/url"
Obj = dict[str, Any]


class ServiceController(Controller):
    """Gives each Service a loopback clusterIP and proxies its ports to ready pods."""

    name = "service-controller"
    resync_seconds = 2.0

    def __init__(self, store: Store, *, ips: IpPool) -> None:
        super().__init__(store)
        self.ips = ips
        self._proxies: dict[Key, dict[int, ServiceProxy]] = {}
        self._ips: dict[Key, str] = {}
        self._lock = threading.Lock()

    def keys_for(self, event: str, res: Resource, obj: Obj) -> Iterable[Key]:  # noqa: D102
        if res != SERVICES:
            return ()
        meta = obj.get("metadata") or {}
        return ((str(meta.get("namespace")), str(meta.get("name"))),)

    def all_keys(self) -> Iterable[Key]:  # noqa: D102
        services, _ = self.store.list(SERVICES, copy=False)
        keys = {(s["metadata"]["namespace"], s["metadata"]["name"]) for s in services}
        with self._lock:
            keys.update(self._proxies)
        return keys

    def reconcile(self, key: Key) -> None:  # noqa: D102
        try:
            service = self.store.get(SERVICES, *key)
        except NotFound:
            self._forget(key)
            return
        spec = service.get("spec") or {}
        if spec.get("type") == "ExternalName" or spec.get("clusterIP") == "None":
            self._forget(key)
            return
        ip = self._ensure_ip(key, service)
        if ip is None:
            return
        wanted = [int(p["port"]) for p in spec.get("ports") or [] if p.get("port")]
        with self._lock:
            running = self._proxies.setdefault(key, {})
            stale = [port for port in running if port not in wanted or running[port].host != ip]
            doomed = [running.pop(port) for port in stale]
        for proxy in doomed:
            proxy.stop()
        for port in wanted:
            with self._lock:
                if port in self._proxies.get(key, {}):
                    continue
            try:
                proxy = ServiceProxy(
                    host=ip, port=port, name=f"{key[0]}/{key[1]}:{port}",
                    targets=partial(backends, self.store, key[0], key[1], port),
                )  # fmt: skip
            except OSError as exc:
                logger.warning("service %s/%s: cannot listen on %s:%s: %s", *key, ip, port, exc)
                continue
            with self._lock:
                self._proxies.setdefault(key, {})[port] = proxy
        self._annotate(key, service, ip, wanted)

    def _ensure_ip(self, key: Key, service: Obj) -> str | None:
        current = str(service["spec"].get("clusterIP") or "")
        if current:
            if not self.ips.contains(current):
                logger.warning(
                    "service %s/%s: clusterIP %s is outside the sandbox range %s",
                    *key,
                    current,
                    self.ips.base,
                )
                return None
            with self._lock:
                known = self._ips.get(key)
            if known != current:
                self.ips.reserve(current)
                with self._lock:
                    self._ips[key] = current
            return current
        ip = self.ips.allocate()
        uid = service["metadata"]["uid"]

        def apply(obj: Obj) -> None:
            if obj["metadata"]["uid"] == uid and not obj["spec"].get("clusterIP"):
                obj["spec"]["clusterIP"] = ip
                obj["spec"]["clusterIPs"] = [ip]
                obj["spec"].setdefault("ipFamilies", ["IPv4"])
                obj["spec"].setdefault("ipFamilyPolicy", "SingleStack")

        stored = self.store.mutate(SERVICES, *key, apply)
        if stored["spec"].get("clusterIP") != ip:
            self.ips.release(ip)
            return str(stored["spec"].get("clusterIP") or "") or None
        with self._lock:
            self._ips[key] = ip
        return ip

    def _annotate(self, key: Key, service: Obj, ip: str, ports: list[int]) -> None:
        url = f"http://{ip}:{ports[0]}" if ports else None
        annotations = service["metadata"].get("annotations") or {}
        if annotations.get(URL_ANNOTATION) == url:
            return

        def apply(obj: Obj) -> None:
            notes = obj["metadata"].setdefault("annotations", {})
            if url is None:
                notes.pop(URL_ANNOTATION, None)
            else:
                notes[URL_ANNOTATION] = url

        self.store.mutate(SERVICES, *key, apply)

    def _forget(self, key: Key) -> None:
        with self._lock:
            proxies = self._proxies.pop(key, {})
            ip = self._ips.pop(key, None)
        for proxy in proxies.values():
            proxy.stop()
        if ip:
            self.ips.release(ip)

    def proxies(self) -> dict[Key, list[str]]:
        """The listening proxies, as URLs by Service.

        Returns:
            ``(namespace, name)`` to ``http://IP:PORT`` URLs.
        """
        with self._lock:
            return {
                k: [f"http://{p.host}:{p.port}" for p in v.values()]
                for k, v in self._proxies.items()
            }

    def stop(self) -> None:
        """Stop the loop and every proxy."""
        super().stop()
        with self._lock:
            keys = list(self._proxies)
        for key in keys:
            self._forget(key)
