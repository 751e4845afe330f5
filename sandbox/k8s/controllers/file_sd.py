"""The Prometheus file_sd writer: one target per Running pod, written by atomic rename."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sandbox.k8s.controllers.base import Controller, Key
from sandbox.k8s.resources import PODS, Resource
from sandbox.k8s.store import Store

_INVALID = re.compile(r"[^a-zA-Z0-9_]")
_ALL: Key = ("", "file_sd")


def label_name(key: str) -> str:
    """A label key as a Prometheus label name (``pod-template-hash`` -> ``pod_template_hash``).

    Args:
        key: the label key.

    Returns:
        A valid Prometheus label name.
    """
    name = _INVALID.sub("_", key)
    return f"_{name}" if name[:1].isdigit() else name


def pod_target(pod: dict[str, Any]) -> dict[str, Any] | None:
    """The file_sd entry of one pod, or None when it is not Running with an IP and a port.

    Args:
        pod: the Pod object.

    Returns:
        ``{"targets": ["IP:PORT"], "labels": {...}}`` or None.
    """
    status = pod.get("status") or {}
    ip = status.get("podIP")
    if status.get("phase") != "Running" or not ip:
        return None
    port = None
    for container in (pod.get("spec") or {}).get("containers") or []:
        for declared in container.get("ports") or []:
            if declared.get("containerPort"):
                port = int(declared["containerPort"])
                break
        if port:
            break
    if port is None:
        return None
    meta = pod.get("metadata") or {}
    labels = {label_name(k): str(v) for k, v in (meta.get("labels") or {}).items()}
    labels["namespace"] = str(meta.get("namespace", ""))
    labels["pod"] = str(meta.get("name", ""))
    return {"targets": [f"{ip}:{port}"], "labels": labels}


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename.

    Args:
        path: destination.
        text: content.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class FileSdWriter(Controller):
    """Rewrites the file_sd targets file whenever a pod changes (and on a slow resync)."""

    name = "file-sd"
    resync_seconds = 2.0

    def __init__(self, store: Store, *, path: Path) -> None:
        super().__init__(store)
        self.path = path
        self._last: str | None = None

    def keys_for(self, event: str, res: Resource, obj: dict[str, Any]) -> Iterable[Key]:  # noqa: D102
        return (_ALL,) if res.plural == PODS.plural else ()

    def all_keys(self) -> Iterable[Key]:  # noqa: D102
        return (_ALL,)

    def reconcile(self, key: Key) -> None:  # noqa: D102
        pods, _ = self.store.list(PODS, copy=False)
        entries = [t for t in map(pod_target, pods) if t is not None]
        entries.sort(key=lambda e: (e["labels"]["namespace"], e["labels"]["pod"]))
        text = json.dumps(entries, indent=2, sort_keys=True) + "\n"
        if text != self._last or not self.path.exists():
            write_atomically(self.path, text)
            self._last = text
