"""Kubernetes Events recorded by the controllers and the kubelet, aggregated like the real ones."""

from __future__ import annotations

import logging
import secrets
import threading
from datetime import UTC, datetime
from typing import Any

from sandbox.k8s.errors import ApiError, NotFound
from sandbox.k8s.resources import EVENTS
from sandbox.k8s.store import Store

logger = logging.getLogger(__name__)
MAX_REMEMBERED = 5000


def now_iso() -> str:
    """The current time as Kubernetes writes timestamps (RFC 3339, seconds, ``Z``).

    Returns:
        E.g. ``2026-11-27T09:33:21Z``.
    """
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class EventRecorder:
    """Creates core/v1 Events; a repeat of the same reason and message bumps ``count``."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._seen: dict[tuple[str, str, str, str], str] = {}
        self._lock = threading.Lock()

    def record(
        self,
        obj: dict[str, Any],
        *,
        reason: str,
        message: str,
        component: str,
        warning: bool = False,
        field_path: str | None = None,
    ) -> None:
        """Record an Event about ``obj``; failures are logged, never raised.

        Args:
            obj: the involved object (needs apiVersion, kind, metadata).
            reason: short CamelCase reason (``Pulled``, ``BackOff``...).
            message: human sentence.
            component: reporting component (``kubelet``, ``deployment-controller``...).
            warning: type Warning instead of Normal.
            field_path: e.g. ``spec.containers{web}``.
        """
        meta = obj.get("metadata") or {}
        namespace = str(meta.get("namespace") or "default")
        uid = str(meta.get("uid") or "")
        key = (namespace, uid, reason, message)
        stamp = now_iso()
        with self._lock:
            existing = self._seen.get(key)
        try:
            if existing is not None:
                try:
                    self.store.mutate(EVENTS, namespace, existing, _bump(stamp))
                    return
                except NotFound:
                    pass
            name = f"{meta.get('name', 'object')}.{secrets.token_hex(8)}"
            involved: dict[str, Any] = {
                "apiVersion": obj.get("apiVersion"),
                "kind": obj.get("kind"),
                "name": meta.get("name"),
                "namespace": namespace,
                "uid": uid,
                "resourceVersion": meta.get("resourceVersion"),
            }
            if field_path:
                involved["fieldPath"] = field_path
            self.store.create(
                EVENTS,
                namespace,
                {
                    "apiVersion": "v1",
                    "kind": "Event",
                    "metadata": {"name": name, "namespace": namespace},
                    "involvedObject": involved,
                    "reason": reason,
                    "message": message,
                    "type": "Warning" if warning else "Normal",
                    "source": {"component": component},
                    "reportingComponent": component,
                    "count": 1,
                    "firstTimestamp": stamp,
                    "lastTimestamp": stamp,
                },
            )
            with self._lock:
                if len(self._seen) >= MAX_REMEMBERED:
                    self._seen.clear()
                self._seen[key] = name
        except ApiError as exc:
            logger.debug("event %s on %s not recorded: %s", reason, meta.get("name"), exc)


def _bump(stamp: str) -> Any:
    def apply(event: dict[str, Any]) -> None:
        event["count"] = int(event.get("count") or 1) + 1
        event["lastTimestamp"] = stamp

    return apply
