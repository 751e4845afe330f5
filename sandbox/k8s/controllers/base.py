"""A minimal controller loop: a de-duplicating work queue woken by store events and a resync."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

from sandbox.k8s.errors import ApiError, NotFound
from sandbox.k8s.resources import Resource
from sandbox.k8s.store import Store

logger = logging.getLogger(__name__)

Key = tuple[str, str]
"""``(namespace, name)`` of the object a controller reconciles."""


class Controller:
    """Base class: subclasses implement :meth:`keys_for`, :meth:`all_keys` and :meth:`reconcile`."""

    name = "controller"
    resync_seconds = 0.2

    def __init__(self, store: Store) -> None:
        self.store = store
        self._queue: dict[Key, None] = {}
        self._cond = threading.Condition()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._failures: dict[Key, str] = {}

    def keys_for(self, event: str, res: Resource, obj: dict[str, Any]) -> Iterable[Key]:
        """Keys to reconcile after a store change.

        Args:
            event: ADDED, MODIFIED or DELETED.
            res: the resource that changed.
            obj: the object after the change (before it, for DELETED).

        Returns:
            Keys to enqueue.
        """
        return ()

    def all_keys(self) -> Iterable[Key]:
        """Every key, enqueued on each resync tick.

        Returns:
            Keys to enqueue.
        """
        return ()

    def reconcile(self, key: Key) -> None:
        """Bring one object's world in line with its spec.

        Args:
            key: the object.
        """

    def on_event(self, event: str, res: Resource, obj: dict[str, Any]) -> None:
        """Store subscription callback: enqueue, never block.

        Args:
            event: ADDED, MODIFIED or DELETED.
            res: the resource.
            obj: the object.
        """
        try:
            keys = list(self.keys_for(event, res, obj))
        except Exception:
            logger.exception("%s: mapping a %s event failed", self.name, res.plural)
            return
        if keys:
            self.enqueue(*keys)

    def enqueue(self, *keys: Key) -> None:
        """Queue keys for reconciliation.

        Args:
            keys: the keys.
        """
        with self._cond:
            for key in keys:
                self._queue[key] = None
            self._cond.notify()

    def start(self) -> None:
        """Start the loop thread."""
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the loop and wait for it."""
        self._stopping.set()
        with self._cond:
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _report(self, key: Key, exc: Exception) -> None:
        """Log a failed reconcile once per distinct error, not on every resync."""
        text = f"{type(exc).__name__}: {exc}"
        if self._failures.get(key) == text:
            return
        self._failures[key] = text
        if isinstance(exc, ApiError | ValueError):
            logger.warning("%s: reconcile %s/%s: %s", self.name, *key, text)
        else:
            logger.error("%s: reconcile %s/%s failed", self.name, *key, exc_info=exc)

    def _run(self) -> None:
        next_resync = 0.0
        while not self._stopping.is_set():
            now = time.monotonic()
            if now >= next_resync:
                next_resync = now + self.resync_seconds
                try:
                    self.enqueue(*self.all_keys())
                except Exception:
                    logger.exception("%s: resync listing failed", self.name)
            with self._cond:
                if not self._queue:
                    self._cond.wait(timeout=max(0.0, next_resync - time.monotonic()))
                keys = list(self._queue)
                self._queue.clear()
            for key in keys:
                if self._stopping.is_set():
                    return
                try:
                    self.reconcile(key)
                    self._failures.pop(key, None)
                except NotFound:
                    pass  # the object went away under us: the next event says what to do
                except Exception as exc:
                    self._report(key, exc)
