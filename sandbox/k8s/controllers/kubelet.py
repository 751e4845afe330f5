"""The sandbox kubelet: one worker thread per pod, each container a real local process."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from sandbox.k8s.controllers.base import Controller, Key
from sandbox.k8s.controllers.events import EventRecorder
from sandbox.k8s.controllers.ips import IpPool
from sandbox.k8s.controllers.pod_worker import PodContext, PodWorker
from sandbox.k8s.controllers.processes import CommandFor, workload_command
from sandbox.k8s.errors import NotFound
from sandbox.k8s.resources import PODS, Resource
from sandbox.k8s.store import Store
from sandbox.registry import ImageRegistry

logger = logging.getLogger(__name__)
NODE_NAME = "sandbox"


class Kubelet(Controller):
    """Starts a :class:`PodWorker` for every pod in the store and stops it when the pod goes."""

    name = "kubelet"
    resync_seconds = 1.0

    def __init__(
        self,
        store: Store,
        *,
        ips: IpPool,
        registry_path: Path,
        workdir: Path,
        events: EventRecorder,
        command_for: CommandFor | None = None,
    ) -> None:
        super().__init__(store)
        self.ips = ips
        registry = ImageRegistry(registry_path)
        self.ctx = PodContext(
            store=store, events=events, lookup=registry.lookup,
            command_for=command_for or workload_command,
            registry_path=registry_path, workdir=workdir,
        )  # fmt: skip
        self._workers: dict[Key, PodWorker] = {}
        self._lock = threading.Lock()
        self._reapers: list[threading.Thread] = []

    def keys_for(self, event: str, res: Resource, obj: dict[str, Any]) -> Iterable[Key]:  # noqa: D102
        if res.plural != PODS.plural:
            return ()
        meta = obj.get("metadata") or {}
        return ((str(meta.get("namespace")), str(meta.get("name"))),)

    def all_keys(self) -> Iterable[Key]:  # noqa: D102
        pods, _ = self.store.list(PODS, copy=False)
        keys = {(p["metadata"]["namespace"], p["metadata"]["name"]) for p in pods}
        with self._lock:
            keys.update(self._workers)
        return keys

    def reconcile(self, key: Key) -> None:  # noqa: D102
        try:
            pod: dict[str, Any] | None = self.store.get(PODS, key[0], key[1])
        except NotFound:
            pod = None
        with self._lock:
            worker = self._workers.get(key)
        if worker is not None and (
            pod is None
            or str(pod["metadata"].get("uid") or "") != worker.uid
            or pod["metadata"].get("deletionTimestamp")
        ):
            self._retire(key, worker)
            worker = None
        if pod is None or worker is not None or pod["metadata"].get("deletionTimestamp"):
            return
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            return
        if not (pod.get("spec") or {}).get("nodeName"):
            pod = self.store.mutate(PODS, key[0], key[1], _bind(str(pod["metadata"].get("uid"))))
        ip = self.ips.allocate()
        worker = PodWorker(self.ctx, pod, ip=ip)
        with self._lock:
            self._workers[key] = worker
        worker.start()

    def _retire(self, key: Key, worker: PodWorker) -> None:
        with self._lock:
            if self._workers.get(key) is worker:
                del self._workers[key]
        worker.stop()

        def reap() -> None:
            worker.join()
            self.ips.release(worker.ip)

        reaper = threading.Thread(target=reap, name=f"reap {worker.name}", daemon=True)
        reaper.start()
        with self._lock:
            self._reapers = [r for r in self._reapers if r.is_alive()] + [reaper]

    def pids(self) -> dict[Key, list[int]]:
        """Process ids of every running container, by pod.

        Returns:
            ``(namespace, name)`` to pids.
        """
        with self._lock:
            return {key: worker.pids() for key, worker in self._workers.items()}

    def stop(self) -> None:
        """Stop the loop, then every pod (SIGTERM, SIGKILL after the capped grace period)."""
        super().stop()
        with self._lock:
            workers = list(self._workers.items())
        for key, worker in workers:
            self._retire(key, worker)
        with self._lock:
            reapers = list(self._reapers)
        for reaper in reapers:
            reaper.join(timeout=15)


def _bind(uid: str) -> Callable[[dict[str, Any]], None]:
    """Schedule a pod on the one sandbox node, as the scheduler's binding would."""

    def apply(pod: dict[str, Any]) -> None:
        if str(pod["metadata"].get("uid") or "") == uid:
            pod.setdefault("spec", {})["nodeName"] = NODE_NAME

    return apply
