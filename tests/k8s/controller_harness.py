"""A store with the controllers running, for controller tests that need no HTTP server."""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sandbox.k8s.controllers import ControllerManager
from sandbox.k8s.resources import NAMESPACES
from sandbox.k8s.store import Store
from sandbox.registry import Behaviour, ImageRegistry

_PREFIXES = itertools.count(200)


@dataclass
class Cluster:
    """A store, its controllers, the registry, and a namespace per test."""

    store: Store
    manager: ControllerManager
    registry: ImageRegistry
    file_sd: Path

    def namespace(self) -> str:
        name = f"t-{uuid.uuid4().hex[:8]}"
        self.store.create(NAMESPACES, None, {"metadata": {"name": name}})
        return name

    def push(self, image: str, **behaviour: Any) -> str:
        self.registry.push(image, Behaviour(**behaviour))
        return image


def wait_for(predicate: Callable[[], Any], *, timeout: float = 60.0, what: str) -> Any:
    """Poll until ``predicate`` returns a truthy value (a deadline, not a sleep)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def probe(path: str, port: int = 8080) -> dict[str, Any]:
    # A generous timeout: a loaded CI machine must not turn slow answers into restarts.
    return {
        "httpGet": {"path": path, "port": port},
        "periodSeconds": 1,
        "failureThreshold": 2,
        "timeoutSeconds": 5,
    }


def deployment(
    name: str,
    image: str,
    *,
    replicas: int = 2,
    labels: dict[str, str] | None = None,
    strategy: dict[str, Any] | None = None,
    port: int = 8080,
    **spec: Any,
) -> dict[str, Any]:
    labels = labels or {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": dict(labels)},
            "strategy": strategy
            or {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": dict(labels)},
                "spec": {
                    "containers": [
                        {
                            "name": name,
                            "image": image,
                            "ports": [{"containerPort": port, "name": "http"}],
                            "readinessProbe": probe("/ready", port),
                            "livenessProbe": probe("/health", port),
                        }
                    ]
                },
            },
            **spec,
        },
    }


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One store and controller manager per test module, on its own loopback range."""
    root = tmp_path_factory.mktemp("k8s-controllers")
    store = Store()
    registry_path = root / "registry.json"
    file_sd = root / "prometheus" / "targets.json"
    manager = ControllerManager(
        store,
        registry_path=registry_path,
        file_sd_path=file_sd,
        ip_prefix=f"127.{next(_PREFIXES)}.{uuid.uuid4().int % 100 * 2}",
        workdir=root / "work",
    )
    manager.start()
    try:
        yield Cluster(store, manager, ImageRegistry(registry_path), file_sd)
    finally:
        manager.stop()
