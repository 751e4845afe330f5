"""The change history behind watches: a bounded event log that watchers follow."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from sandbox.k8s import resources as r
from sandbox.k8s.errors import BadRequest, Gone
from sandbox.k8s.objects import clone
from sandbox.k8s.selectors import parse_field_selector, parse_label_selector

Obj = dict[str, Any]


@dataclass(frozen=True)
class Event:
    """One change: the resourceVersion it produced, the object after and before."""

    rv: int
    res: r.Resource
    type: str
    obj: Obj
    old: Obj | None


def served_as(res: r.Resource, obj: Obj) -> Obj:
    """Label a custom object with the version it is read at (versions share one storage).

    Args:
        res: the resource the object is read as.
        obj: a copy of the stored object, changed in place.

    Returns:
        ``obj``.
    """
    if res.custom:
        obj["apiVersion"] = res.api_version
    return obj


def watch_matcher(res: r.Resource, namespace: str | None, label_selector: str | None,
                  field_selector: str | None) -> Callable[[Obj | None], bool]:
    """The filter of one watch: namespace, label selector and field selector.

    Args:
        res: the resource type.
        namespace: restrict to this namespace (None: all).
        label_selector: label selector string.
        field_selector: field selector string.

    Returns:
        A predicate on an object (False for None).
    """
    labels_match = parse_label_selector(label_selector)
    fields_match = parse_field_selector(field_selector)

    def matches(obj: Obj | None) -> bool:
        if obj is None:
            return False
        if namespace and res.namespaced and obj["metadata"].get("namespace") != namespace:
            return False
        return labels_match(obj["metadata"].get("labels") or {}) and fields_match(obj)

    return matches


class EventLog:
    """The last ``history`` changes; older resourceVersions answer 410 Gone."""

    def __init__(self, cond: threading.Condition, history: int) -> None:
        self._cond = cond
        self._events: deque[Event] = deque(maxlen=history)
        self.compacted_rv = 0
        self.closed = False

    def record(self, event: Event) -> None:
        """Append a change and wake the watchers (store lock held).

        Args:
            event: the change.
        """
        if len(self._events) == self._events.maxlen and self._events:
            self.compacted_rv = self._events[0].rv
        self._events.append(event)
        self._cond.notify_all()

    def check(self, rv: int) -> None:
        """Raise Gone when changes after ``rv`` are no longer all kept.

        Args:
            rv: the resourceVersion a watcher starts after.

        Raises:
            Gone: when it is older than the kept history.
        """
        if rv < self.compacted_rv:
            raise Gone(f"too old resource version: {rv} ({self.compacted_rv})")

    def start_after(self, resource_version: str | None) -> int | None:
        """Where a watch asking for ``resource_version`` starts (store lock held).

        Args:
            resource_version: the watch's resourceVersion parameter.

        Returns:
            The resourceVersion to follow after, or None to send the current state first.

        Raises:
            BadRequest: when it is not a number.
            Gone: when it is older than the kept history.
        """
        if resource_version in (None, "", "0"):
            return None
        try:
            pos = int(str(resource_version))
        except ValueError:
            raise BadRequest(f"invalid resourceVersion {resource_version!r}") from None
        self.check(pos)
        return pos

    def close(self) -> None:
        """End every watch (store lock taken here)."""
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def _wait(self, pos: int, deadline: float, stop: threading.Event | None,
              bookmark_due: float | None) -> list[Event] | None:
        """Wait for changes after ``pos``; None ends the watch, [] means a bookmark is due."""
        with self._cond:
            while (not self._events or self._events[-1].rv <= pos) and not self.closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (stop is not None and stop.is_set()):
                    return None
                if bookmark_due is not None and time.monotonic() >= bookmark_due:
                    return []
                self._cond.wait(min(remaining, 0.5))
            if self.closed:
                return None
            self.check(pos)
            fresh = [e for e in reversed(self._events) if e.rv > pos]
        fresh.reverse()
        return fresh

    def follow(
        self,
        res: r.Resource,
        *,
        after: int,
        matches: Callable[[Obj | None], bool],
        deadline: float,
        stop: threading.Event | None,
        bookmark_interval: float | None,
    ) -> Iterator[tuple[str, Obj]]:
        """Yield the changes of ``res`` after ``after`` that concern the watcher.

        An object that stops matching is reported DELETED, one that starts matching ADDED.

        Args:
            res: the resource type.
            after: the resourceVersion to start after.
            matches: the watcher's filter (namespace and selectors).
            deadline: monotonic time at which the stream ends.
            stop: ends the stream when set.
            bookmark_interval: idle seconds after which a BOOKMARK is sent (None: never).

        Yields:
            (event type, object copy).

        Raises:
            Gone: when the watcher fell behind the kept history.
        """
        pos, last_sent = after, time.monotonic()
        while True:
            due = last_sent + bookmark_interval if bookmark_interval else None
            fresh = self._wait(pos, deadline, stop, due)
            if fresh is None:
                return
            if not fresh:
                last_sent = time.monotonic()
                yield "BOOKMARK", {"kind": res.kind, "apiVersion": res.api_version,
                                   "metadata": {"resourceVersion": str(pos)}}
                continue
            for event in fresh:
                pos = event.rv
                if event.res.key != res.key:  # (every version of a custom resource)
                    continue
                now, before = matches(event.obj), matches(event.old)
                kind = event.type
                if kind == "MODIFIED" and now != before:
                    kind = "ADDED" if now else "DELETED"
                if now or before:
                    last_sent = time.monotonic()
                    yield kind, served_as(res, clone(event.obj))
            if stop is not None and stop.is_set():
                return
