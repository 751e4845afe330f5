"""The controllers of the Kubernetes emulator, started together by :class:`ControllerManager`.

What they emulate, and where they differ from a real cluster:

- Deployment and ReplicaSet controllers follow kube-controller-manager's arithmetic (pod-template
  hash, revisions, maxSurge/maxUnavailable rounding, conditions and their reasons, progress
  deadline, revisionHistoryLimit). Not emulated: adoption of orphaned ReplicaSets, proportional
  scaling of several active ReplicaSets (a scale during a rollout goes to the new ReplicaSet).
- The kubelet runs every container as ``python -m sandbox.workload`` on the pod's own loopback IP,
  forked from a fork server that has it imported (``forking.py``: no interpreter start per pod);
  ``command``/``args``, volumes and resources are ignored. Back-offs (CrashLoopBackOff,
  ImagePullBackOff) start at 1 s and cap at 10 s (real: 10 s to 5 min). Probe timers start once the
  container's port accepts connections (at most 10 s after start). Only httpGet probes are
  executed. A running pod's image is not changed in place. Grace periods are capped at 3 s.
- Services get a clusterIP in ``127.A.(B+1).0/24`` and a real HTTP reverse proxy per port
  (HTTP only, no TCP/UDP passthrough), choosing a ready pod per request, round-robin; an Istio
  VirtualService naming the Service splits requests by weight over DestinationRule subsets
  (``mesh.py``: first http route only, no match conditions, retries or policies).
"""

from __future__ import annotations

import atexit
import logging
from pathlib import Path
from typing import Any

from sandbox.k8s.controllers.base import Controller
from sandbox.k8s.controllers.deployments import DeploymentController
from sandbox.k8s.controllers.endpoints import EndpointsController
from sandbox.k8s.controllers.events import EventRecorder
from sandbox.k8s.controllers.file_sd import FileSdWriter
from sandbox.k8s.controllers.ips import pools_for
from sandbox.k8s.controllers.kubelet import Kubelet
from sandbox.k8s.controllers.processes import CommandFor
from sandbox.k8s.controllers.replicasets import ReplicaSetController
from sandbox.k8s.controllers.services import ServiceController
from sandbox.k8s.resources import Resource
from sandbox.k8s.store import Store

__all__ = ["ControllerManager"]

logger = logging.getLogger(__name__)


class ControllerManager:
    """Runs every controller on one store.

    Deployments, ReplicaSets, the kubelet, Services, Endpoints and the Prometheus file_sd writer.
    """

    def __init__(
        self,
        store: Store,
        *,
        registry_path: Path,
        file_sd_path: Path,
        ip_prefix: str,
        workdir: Path,
        command_for: CommandFor | None = None,
    ) -> None:
        """Build the controllers (nothing runs until :meth:`start`).

        Args:
            store: the object store.
            registry_path: the sandbox image registry file.
            file_sd_path: where the Prometheus file_sd targets are written.
            ip_prefix: ``127.A.B``: pods get ``127.A.B.N``, Services ``127.A.(B+1).N``.
            workdir: directory for pod logs and working directories.
            command_for: builds a container's argv (default: the sandbox workload).

        Raises:
            ValueError: when ``ip_prefix`` is not a loopback ``127.A.B`` with B < 255.
        """
        pod_ips, service_ips = pools_for(ip_prefix)
        events = EventRecorder(store)
        self.store = store
        self.kubelet = Kubelet(
            store, ips=pod_ips, registry_path=Path(registry_path).resolve(),
            workdir=Path(workdir).resolve(), events=events, command_for=command_for,
        )  # fmt: skip
        self.services = ServiceController(store, ips=service_ips)
        self.controllers: list[Controller] = [
            DeploymentController(store, events=events),
            ReplicaSetController(store, events=events),
            self.kubelet,
            EndpointsController(store),
            self.services,
            FileSdWriter(store, path=Path(file_sd_path)),
        ]
        self._started = False

    def _dispatch(self, event: str, res: Resource, obj: dict[str, Any]) -> None:
        for controller in self.controllers:
            controller.on_event(event, res, obj)

    def start(self) -> None:
        """Subscribe to the store and start every controller loop."""
        if self._started:
            return
        self._started = True
        self.store.subscribe(self._dispatch)
        for controller in self.controllers:
            controller.start()
        atexit.register(self.stop)

    def stop(self) -> None:
        """Stop every loop, every pod process (SIGTERM, then SIGKILL) and every proxy."""
        if not self._started:
            return
        self._started = False
        for controller in reversed(self.controllers):
            try:
                controller.stop()
            except Exception:
                logger.exception("stopping %s failed", controller.name)
        atexit.unregister(self.stop)
