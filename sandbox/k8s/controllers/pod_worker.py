"""One pod's life on the sandbox kubelet: pull, configure, start, probe, restart, report status.

Deviations from the real kubelet, chosen for a fast and stable sandbox: CrashLoopBackOff and
ImagePullBackOff back off 1 s doubling to a 10 s cap (real: 10 s to 5 min); probe timers start
once the container's port accepts connections (at most ``STARTUP_GRACE`` seconds after the
process starts), because an interpreter start-up on a loaded machine is slower than a container's.
"""

from __future__ import annotations

import copy
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandbox.k8s.controllers.envs import ContainerConfigError, resolve_env
from sandbox.k8s.controllers.events import EventRecorder, now_iso
from sandbox.k8s.controllers.probes import Prober
from sandbox.k8s.controllers.processes import CommandFor, ContainerProcess, container_env
from sandbox.k8s.errors import NotFound
from sandbox.k8s.resources import PODS
from sandbox.k8s.store import Store
from sandbox.procs import port_open
from sandbox.registry import Behaviour

logger = logging.getLogger(__name__)

TICK_SECONDS = 0.25
BACKOFF_START = 1.0
BACKOFF_CAP = 10.0
BACKOFF_RESET_AFTER = 10.0
PULL_BACKOFF_SHOWN_AFTER = 0.5
DEFAULT_PORT = 8080
STARTUP_GRACE = 10.0


@dataclass
class PodContext:
    """What a worker needs from the kubelet."""

    store: Store
    events: EventRecorder
    lookup: Callable[[str], Behaviour | None]
    command_for: CommandFor
    registry_path: Path
    workdir: Path


@dataclass
class ContainerRuntime:
    """The kubelet's state of one container."""

    spec: dict[str, Any]
    process: ContainerProcess | None = None
    restart_count: int = 0
    ever_started: bool = False
    waiting: tuple[str, str] | None = ("ContainerCreating", "")
    last_terminated: dict[str, Any] | None = None
    terminated: dict[str, Any] | None = None
    backoff: float = BACKOFF_START
    next_start_at: float = 0.0
    pull_failed_at: float | None = None
    readiness: Prober | None = None
    liveness: Prober | None = None
    ready: bool = False
    started_iso: str = ""
    container_id: str = ""
    pulled: bool = False
    probes_armed: bool = False
    ports: dict[str, int] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The container name."""
        return str(self.spec.get("name") or "")

    @property
    def image(self) -> str:
        """The image reference."""
        return str(self.spec.get("image") or "")

    @property
    def port(self) -> int:
        """The first declared containerPort (8080 when none is declared)."""
        for declared in self.spec.get("ports") or []:
            if declared.get("containerPort"):
                return int(declared["containerPort"])
        return DEFAULT_PORT


class PodWorker:
    """Runs the containers of one pod in a thread until told to stop."""

    def __init__(self, ctx: PodContext, pod: dict[str, Any], *, ip: str) -> None:
        meta = pod["metadata"]
        self.ctx = ctx
        self.namespace = str(meta["namespace"])
        self.name = str(meta["name"])
        self.uid = str(meta.get("uid") or "")
        self.ip = ip
        self.pod = pod
        spec = pod.get("spec") or {}
        self.restart_policy = str(spec.get("restartPolicy") or "Always")
        self.grace = float(spec.get("terminationGracePeriodSeconds") or 30)
        self.containers = [ContainerRuntime(spec=c) for c in spec.get("containers") or []]
        for rt in self.containers:
            rt.ports = {
                str(p["name"]): int(p["containerPort"])
                for p in rt.spec.get("ports") or []
                if p.get("name") and p.get("containerPort")
            }
        self.start_iso = now_iso()
        self._conditions: dict[str, tuple[str, str]] = {}
        self._last_status: dict[str, Any] | None = None
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"pod {self.name}", daemon=True)

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        """Start the worker thread."""
        self.thread.start()

    def stop(self) -> None:
        """Ask the worker to stop; it kills its processes on the way out."""
        self._stop.set()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the worker (and its processes) to end.

        Args:
            timeout: seconds.
        """
        self.thread.join(timeout)

    def pids(self) -> list[int]:
        """Process ids of the running containers.

        Returns:
            The pids.
        """
        return [rt.process.pid for rt in self.containers if rt.process is not None]

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                for rt in self.containers:
                    self._step(rt, now)
                if not self._publish():
                    break
                self._stop.wait(TICK_SECONDS)
        except Exception:
            logger.exception("pod worker %s/%s crashed", self.namespace, self.name)
        finally:
            for rt in self.containers:
                if rt.process is not None:
                    rt.process.stop(self.grace)
                    rt.process = None

    # -- one container -----------------------------------------------------------------------
    def _event(
        self, rt: ContainerRuntime, reason: str, message: str, *, warning: bool = False
    ) -> None:
        self.ctx.events.record(
            self.pod, reason=reason, message=message, component="kubelet", warning=warning,
            field_path=f"spec.containers{{{rt.name}}}",
        )  # fmt: skip

    def _step(self, rt: ContainerRuntime, now: float) -> None:
        if rt.terminated is not None:
            return
        if rt.process is None:
            if (
                rt.pull_failed_at is not None
                and now - rt.pull_failed_at > PULL_BACKOFF_SHOWN_AFTER
                and rt.waiting
                and rt.waiting[0] == "ErrImagePull"
            ):
                rt.waiting = ("ImagePullBackOff", f'Back-off pulling image "{rt.image}"')
                self._event(rt, "BackOff", rt.waiting[1])
            if now >= rt.next_start_at:
                self._try_start(rt, now)
            return
        code = rt.process.exit_code()
        if code is not None:
            self._on_exit(rt, code, now)
            return
        if not rt.probes_armed:
            if (
                not port_open(rt.port, self.ip)
                and now - rt.process.started_monotonic < STARTUP_GRACE
            ):
                return
            rt.probes_armed = True
            rt.readiness = self._prober(rt, "readinessProbe", initial=False)
            rt.liveness = self._prober(rt, "livenessProbe", initial=True)
        if rt.liveness is not None and rt.liveness.due(now):
            rt.liveness.run()
            if rt.liveness.failing:
                detail = rt.liveness.last_detail
                self._event(rt, "Unhealthy", f"Liveness probe failed: {detail}", warning=True)
            if not rt.liveness.result:
                self._event(
                    rt, "Killing",
                    f"Container {rt.name} failed liveness probe, will be restarted",
                )  # fmt: skip
                self._on_exit(rt, rt.process.stop(self.grace), now)
                return
        if rt.readiness is None:
            rt.ready = True
        elif rt.readiness.due(now):
            rt.readiness.run()
            if rt.readiness.failing:
                detail = rt.readiness.last_detail
                self._event(rt, "Unhealthy", f"Readiness probe failed: {detail}", warning=True)
            rt.ready = rt.readiness.result

    def _try_start(self, rt: ContainerRuntime, now: float) -> None:
        behaviour = self.ctx.lookup(rt.image)
        if behaviour is None:
            if not rt.pulled:
                self._event(rt, "Pulling", f'Pulling image "{rt.image}"')
            message = (
                f'Failed to pull image "{rt.image}": rpc error: code = NotFound desc = '
                f"failed to pull and unpack image: {rt.image}: not found"
            )
            self._event(rt, "Failed", message, warning=True)
            self._event(rt, "Failed", "Error: ErrImagePull", warning=True)
            rt.waiting = ("ErrImagePull", message)
            rt.pull_failed_at = now
            rt.next_start_at = now + rt.backoff
            rt.backoff = min(rt.backoff * 2, BACKOFF_CAP)
            return
        if not rt.pulled:
            self._event(rt, "Pulling", f'Pulling image "{rt.image}"')
            self._event(rt, "Pulled", f'Successfully pulled image "{rt.image}"')
            rt.pulled = True
            rt.pull_failed_at = None
            rt.backoff = BACKOFF_START
        fields = {
            "metadata.name": self.name, "metadata.namespace": self.namespace,
            "metadata.uid": self.uid, "status.podIP": self.ip, "status.hostIP": "127.0.0.1",
            "spec.nodeName": "sandbox",
        }  # fmt: skip
        try:
            env = resolve_env(self.ctx.store, self.namespace, rt.spec, fields=fields)
        except ContainerConfigError as exc:
            if rt.waiting != ("CreateContainerConfigError", str(exc)):
                self._event(rt, "Failed", f"Error: {exc}", warning=True)
            rt.waiting = ("CreateContainerConfigError", str(exc))
            rt.next_start_at = now + BACKOFF_START
            return
        env = {"POD_NAME": self.name, "POD_NAMESPACE": self.namespace, **env}
        argv = self.ctx.command_for(rt.image, behaviour, self.ip, rt.port)
        log_path = self.ctx.workdir / "pods" / self.namespace / f"{self.name}_{rt.name}.log"
        if rt.ever_started:
            rt.restart_count += 1
            self._event(rt, "Pulled", f'Container image "{rt.image}" already present on machine')
        try:
            rt.process = ContainerProcess(
                argv,
                env=container_env(env, registry_path=self.ctx.registry_path),
                log_path=log_path,
                cwd=self.ctx.workdir / "pods" / self.namespace,
            )
        except OSError as exc:
            rt.waiting = ("RunContainerError", str(exc))
            rt.next_start_at = now + rt.backoff
            return
        rt.ever_started = True
        rt.waiting = None
        rt.ready = False
        rt.started_iso = now_iso()
        rt.container_id = f"sandbox://{secrets.token_hex(32)}"
        self._event(rt, "Created", f"Created container {rt.name}")
        self._event(rt, "Started", f"Started container {rt.name}")
        rt.probes_armed = False

    def _prober(self, rt: ContainerRuntime, key: str, *, initial: bool) -> Prober | None:
        spec = rt.spec.get(key)
        if not isinstance(spec, dict):
            return None
        return Prober(
            spec=spec, host=self.ip, ports=rt.ports, default_port=rt.port,
            started_at=time.monotonic(), initial=initial,
        )  # fmt: skip

    def _on_exit(self, rt: ContainerRuntime, code: int, now: float) -> None:
        ran = now - rt.process.started_monotonic if rt.process else 0.0
        rt.process = None
        rt.ready = False
        for prober in (rt.readiness, rt.liveness):
            if prober is not None:
                prober.close()
        rt.readiness = rt.liveness = None
        finished = {
            "exitCode": code,
            "reason": "Completed" if code == 0 else "Error",
            "startedAt": rt.started_iso,
            "finishedAt": now_iso(),
            "containerID": rt.container_id,
        }
        restart = self.restart_policy == "Always" or (
            self.restart_policy == "OnFailure" and code != 0
        )
        if not restart:
            rt.terminated = finished
            rt.waiting = None
            return
        rt.last_terminated = finished
        if ran >= BACKOFF_RESET_AFTER:
            rt.backoff = BACKOFF_START
        delay = rt.backoff
        rt.backoff = min(rt.backoff * 2, BACKOFF_CAP)
        rt.next_start_at = now + delay
        rt.waiting = (
            "CrashLoopBackOff",
            f"back-off {delay:g}s restarting failed container={rt.name} "
            f"pod={self.name}_{self.namespace}({self.uid})",
        )
        self._event(
            rt, "BackOff", f"Back-off restarting failed container {rt.name} in pod {self.name}",
            warning=True,
        )  # fmt: skip

    # -- status ------------------------------------------------------------------------------
    def _condition(
        self, kind: str, ok: bool, reason: str = "", message: str = ""
    ) -> dict[str, Any]:
        status = "True" if ok else "False"
        previous = self._conditions.get(kind)
        if previous is None or previous[0] != status:
            self._conditions[kind] = (status, now_iso())
        cond: dict[str, Any] = {
            "type": kind, "status": status, "lastProbeTime": None,
            "lastTransitionTime": self._conditions[kind][1],
        }  # fmt: skip
        if not ok and reason:
            cond["reason"], cond["message"] = reason, message
        return cond

    def _container_status(self, rt: ContainerRuntime) -> dict[str, Any]:
        state: dict[str, Any]
        if rt.terminated is not None:
            state = {"terminated": rt.terminated}
        elif rt.process is not None:
            state = {"running": {"startedAt": rt.started_iso}}
        else:
            reason, message = rt.waiting or ("ContainerCreating", "")
            state = {"waiting": {"reason": reason, **({"message": message} if message else {})}}
        status: dict[str, Any] = {
            "name": rt.name,
            "image": rt.image,
            "imageID": f"sandbox-registry/{rt.image}" if rt.pulled else "",
            "ready": bool(rt.ready and rt.process is not None),
            "started": rt.process is not None,
            "restartCount": rt.restart_count,
            "state": state,
            "lastState": {"terminated": rt.last_terminated} if rt.last_terminated else {},
        }
        if rt.container_id:
            status["containerID"] = rt.container_id
        return status

    def _phase(self) -> str:
        if self.containers and all(rt.terminated is not None for rt in self.containers):
            codes = [int((rt.terminated or {}).get("exitCode", 1)) for rt in self.containers]
            return "Succeeded" if all(c == 0 for c in codes) else "Failed"
        if any(rt.ever_started for rt in self.containers):
            return "Running"
        return "Pending"

    def _publish(self) -> bool:
        statuses = [self._container_status(rt) for rt in self.containers]
        ready = bool(statuses) and all(s["ready"] for s in statuses)
        unready = [s["name"] for s in statuses if not s["ready"]]
        message = f"containers with unready status: [{' '.join(unready)}]"
        status: dict[str, Any] = {
            "phase": self._phase(),
            "conditions": [
                self._condition("PodReadyToStartContainers", True),
                self._condition("Initialized", True),
                self._condition("Ready", ready, "ContainersNotReady", message),
                self._condition("ContainersReady", ready, "ContainersNotReady", message),
                self._condition("PodScheduled", True),
            ],
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": self.ip,
            "podIPs": [{"ip": self.ip}],
            "startTime": self.start_iso,
            "qosClass": "BestEffort",
            "containerStatuses": statuses,
        }
        if status == self._last_status:
            return True
        uid = self.uid

        def apply(pod: dict[str, Any]) -> None:
            if str(pod.get("metadata", {}).get("uid") or "") == uid:
                pod["status"] = copy.deepcopy(status)

        try:
            self.ctx.store.mutate(PODS, self.namespace, self.name, apply, subresource="status")
        except NotFound:
            return False
        self._last_status = status
        return True
