"""The in-memory object store: CRUD with API semantics, cascading delete, watches, subscribers."""

from __future__ import annotations

import builtins
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from sandbox.k8s import resources as r
from sandbox.k8s.customresources import name_conflicts, resources_of, sync_registry
from sandbox.k8s.errors import AlreadyExists, BadRequest, Conflict, Invalid, NotFound
from sandbox.k8s.objects import (
    clone,
    generation_body,
    initialise,
    now_timestamp,
    prepare_create,
    proposed,
    random_suffix,
    sandbox_node,
)
from sandbox.k8s.selectors import parse_field_selector, parse_label_selector
from sandbox.k8s.watching import Event, EventLog, served_as, watch_matcher

log = logging.getLogger(__name__)
__all__ = ["Store", "now_timestamp", "random_suffix"]

Obj = dict[str, Any]
Subscriber = Callable[[str, r.Resource, Obj], None]
_BUILTIN_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


class Store:
    """Objects of every served resource, with one global resourceVersion counter.

    ``resources`` is what this store serves: the built-ins, plus the resources of every
    CustomResourceDefinition stored (registered on create, unregistered on delete, which
    deletes their objects too).
    """

    def __init__(self, *, history: int = 10000) -> None:
        self._cond = threading.Condition(threading.RLock())
        self.resources = r.Registry()
        self._objects: dict[str, dict[tuple[str, str], Obj]] = {}
        self._rv = 0
        self._log = EventLog(self._cond, history)
        self._subscribers: list[Subscriber] = []
        for name in _BUILTIN_NAMESPACES:
            self.create(r.NAMESPACES, None, {"metadata": {"name": name}})
        self.create(r.NODES, None, sandbox_node())

    # ----------------------------------------------------------------- helpers
    def _bucket(self, res: r.Resource) -> dict[tuple[str, str], Obj]:
        return self._objects.setdefault(res.key, {})

    @staticmethod
    def _ns(res: r.Resource, namespace: str | None) -> str:
        if not res.namespaced:
            return ""
        if not namespace:
            raise BadRequest(f"{res.plural} is namespaced: a namespace is required")
        return namespace

    def _find(self, res: r.Resource, namespace: str | None, name: str) -> Obj:
        obj = self._bucket(res).get((self._ns(res, namespace), name))
        if obj is None:
            raise NotFound(res.plural, name, group=res.group)
        return obj

    def _record(self, res: r.Resource, kind: str, obj: Obj, old: Obj | None,
                pending: builtins.list[tuple[str, r.Resource, Obj]]) -> None:
        self._log.record(Event(self._rv, res, kind, obj, old))
        pending.append((kind, res, obj))

    def _notify(self, pending: builtins.list[tuple[str, r.Resource, Obj]]) -> None:
        for kind, res, obj in pending:
            for callback in list(self._subscribers):
                try:
                    callback(kind, res, clone(obj))
                except Exception:
                    log.exception("store subscriber failed on %s %s", kind, res.plural)

    # ----------------------------------------------------------------- reads
    def get(self, res: r.Resource, namespace: str | None, name: str, *,
            copy: bool = True) -> Obj:
        """Return a deep copy of one object.

        Args:
            res: the resource type.
            namespace: its namespace (ignored for cluster-scoped types).
            name: its name.
            copy: False returns the stored object itself, for a reader that only reads
                (the Service proxy, on every request): writes store new objects and never
                change a stored one, so it is a consistent snapshot, but it must not be
                changed, and a custom object keeps the version it was stored at.

        Returns:
            The object.

        Raises:
            NotFound: when it does not exist.
        """
        with self._cond:
            found = self._find(res, namespace, name)
            return served_as(res, clone(found)) if copy else found

    def list(
        self,
        res: r.Resource,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        copy: bool = True,
    ) -> tuple[builtins.list[Obj], str]:
        """List objects, optionally in one namespace and filtered by selectors.

        Args:
            res: the resource type.
            namespace: restrict to this namespace (None: all namespaces).
            label_selector: label selector string.
            field_selector: field selector string (e.g. ``metadata.name=x``).
            copy: False lists the stored objects themselves, read-only (see :meth:`get`).

        Returns:
            (items sorted by namespace and name, the list's resourceVersion).
        """
        labels_match = parse_label_selector(label_selector)
        fields_match = parse_field_selector(field_selector)
        with self._cond:
            items = [
                served_as(res, clone(obj)) if copy else obj
                for (ns, _), obj in sorted(self._bucket(res).items())
                if (not namespace or not res.namespaced or ns == namespace)
                and labels_match(obj["metadata"].get("labels") or {})
                and fields_match(obj)
            ]
            return items, str(self._rv)

    @property
    def resource_version(self) -> str:
        """The current global resourceVersion."""
        with self._cond:
            return str(self._rv)

    # ----------------------------------------------------------------- writes
    def create(self, res: r.Resource, namespace: str | None, obj: Obj, *,
               dry_run: bool = False) -> Obj:
        """Create an object, assigning uid, resourceVersion, timestamps and generation 1.

        Args:
            res: the resource type.
            namespace: the namespace of the request (namespaced types).
            obj: the object; ``metadata.generateName`` is honoured.
            dry_run: check and return the object without storing it.

        Returns:
            The stored object.

        Raises:
            AlreadyExists: when the name is taken.
            NotFound: when the namespace does not exist.
            Invalid: when validation fails.
        """
        ns = self._ns(res, namespace)
        obj = prepare_create(res, ns, obj)
        meta = obj["metadata"]
        pending: builtins.list[tuple[str, r.Resource, Obj]] = []
        with self._cond:
            if res.custom and self.resources.find(res.group, res.version, res.plural) is None:
                raise NotFound(res.plural, meta["name"], group=res.group)
            if res.namespaced and ("", ns) not in self._bucket(r.NAMESPACES):
                raise NotFound("namespaces", ns)
            key = (ns, meta["name"])
            if key in self._bucket(res):
                raise AlreadyExists(res.plural, meta["name"], group=res.group)
            if res == r.CRDS and (causes := name_conflicts(obj, self.resources.all())):
                raise Invalid(res.kind, meta["name"], causes, group=res.group)
            initialise(res, obj, resource_version=self._rv + 1)
            if dry_run:
                return clone(obj)
            self._rv += 1
            self._bucket(res)[key] = obj
            self._record(res, "ADDED", obj, None, pending)
            if res == r.CRDS:
                sync_registry(self.resources, None, obj)
            result = clone(obj)
        self._notify(pending)
        if res == r.NAMESPACES:  # the ServiceAccount controller's part
            try:
                self.create(r.SERVICE_ACCOUNTS, meta["name"], {"metadata": {"name": "default"}})
            except AlreadyExists:
                pass
        return result

    def _commit(self, res: r.Resource, current: Obj, new: Obj,
                pending: builtins.list[tuple[str, r.Resource, Obj]], *,
                dry_run: bool = False) -> Obj:
        """Store ``new`` in place of ``current`` (lock held); no-op writes change nothing."""
        meta, old_meta = new.setdefault("metadata", {}), current["metadata"]
        for fixed in ("name", "namespace", "uid", "creationTimestamp"):
            if fixed in old_meta:
                meta[fixed] = old_meta[fixed]
        meta["generation"] = old_meta.get("generation", 1)
        meta["resourceVersion"] = old_meta["resourceVersion"]
        new["apiVersion"], new["kind"] = res.api_version, res.kind
        if new == current:
            return clone(current)
        if generation_body(new) != generation_body(current):
            meta["generation"] = int(old_meta.get("generation", 1)) + 1
        if dry_run:
            return clone(new)
        self._rv += 1
        meta["resourceVersion"] = str(self._rv)
        self._bucket(res)[(meta.get("namespace", ""), meta["name"])] = new
        self._record(res, "MODIFIED", new, current, pending)
        if res == r.CRDS:
            sync_registry(self.resources, current, new)
        return clone(new)

    def update(self, res: r.Resource, namespace: str | None, obj: Obj, *,
               subresource: str | None = None, dry_run: bool = False) -> Obj:
        """Replace an object (PUT), with optimistic concurrency on ``metadata.resourceVersion``.

        Args:
            res: the resource type.
            namespace: its namespace.
            obj: the new object; its ``metadata.name`` names it.
            subresource: ``"status"`` to change only the status (generation untouched).
            dry_run: check and return the result without storing it.

        Returns:
            The stored object.

        Raises:
            Conflict: when the given resourceVersion is stale.
            NotFound: when the object does not exist.
            Invalid: when validation fails.
        """
        name = str((obj.get("metadata") or {}).get("name") or "")
        rv = (obj.get("metadata") or {}).get("resourceVersion")
        pending: builtins.list[tuple[str, r.Resource, Obj]] = []
        with self._cond:
            current = self._find(res, namespace, name)
            if rv not in (None, "") and str(rv) != current["metadata"]["resourceVersion"]:
                raise Conflict(res.plural, name, group=res.group)
            result = self._commit(res, current, proposed(res, current, obj, subresource),
                                  pending, dry_run=dry_run)
        self._notify(pending)
        return result

    def patch(self, res: r.Resource, namespace: str | None, name: str,
              fn: Callable[[Obj], Obj], *, subresource: str | None = None,
              dry_run: bool = False) -> Obj:
        """Apply a patch function atomically with API semantics (validation, status rules).

        Args:
            res: the resource type.
            namespace: its namespace.
            name: its name.
            fn: takes a copy of the current object and returns the patched object.
            subresource: ``"status"`` to change only the status.
            dry_run: check and return the result without storing it.

        Returns:
            The stored object.

        Raises:
            Conflict: when the patch carries a stale ``metadata.resourceVersion``.
        """
        pending: builtins.list[tuple[str, r.Resource, Obj]] = []
        with self._cond:
            current = self._find(res, namespace, name)
            patched = fn(clone(current))
            rv = (patched.get("metadata") or {}).get("resourceVersion")
            if rv not in (None, "") and str(rv) != current["metadata"]["resourceVersion"]:
                raise Conflict(res.plural, name, group=res.group)
            result = self._commit(res, current,
                                  proposed(res, current, patched, subresource), pending,
                                  dry_run=dry_run)
        self._notify(pending)
        return result

    def mutate(self, res: r.Resource, namespace: str | None, name: str,
               fn: Callable[[Obj], None], *, subresource: str | None = None) -> Obj:
        """Atomic read-modify-write for controllers (no validation, no Conflict).

        Args:
            res: the resource type.
            namespace: its namespace.
            name: its name.
            fn: modifies the object in place.
            subresource: ``"status"`` to keep only the status changes.

        Returns:
            The stored object (unchanged, with no new resourceVersion, if ``fn`` changed nothing).

        Raises:
            NotFound: when the object does not exist.
        """
        pending: builtins.list[tuple[str, r.Resource, Obj]] = []
        with self._cond:
            current = self._find(res, namespace, name)
            new = clone(current)
            fn(new)
            if subresource == "status":
                status = new.get("status")
                new = clone(current)
                new["status"] = status
            result = self._commit(res, current, new, pending)
        self._notify(pending)
        return result

    def delete(self, res: r.Resource, namespace: str | None, name: str, *,
               propagation: str = "Background", dry_run: bool = False) -> Obj:
        """Delete an object; its dependents (by ownerReferences uid) go too, unless orphaned.

        Deleting a namespace deletes everything in it.

        Args:
            res: the resource type.
            namespace: its namespace.
            name: its name.
            propagation: ``Background``/``Foreground`` (cascade) or ``Orphan``.
            dry_run: return the object without deleting anything.

        Returns:
            The deleted object.

        Raises:
            NotFound: when it does not exist.
        """
        pending: builtins.list[tuple[str, r.Resource, Obj]] = []
        with self._cond:
            current = self._find(res, namespace, name)
            if dry_run:
                return clone(current)
            result = self._delete_locked(res, current, propagation, pending)
        self._notify(pending)
        return result

    def _delete_locked(self, res: r.Resource, current: Obj, propagation: str,
                       pending: builtins.list[tuple[str, r.Resource, Obj]]) -> Obj:
        meta = current["metadata"]
        self._bucket(res).pop((meta.get("namespace", ""), meta["name"]), None)
        self._rv += 1
        gone = clone(current)
        gone["metadata"]["resourceVersion"] = str(self._rv)
        self._record(res, "DELETED", gone, current, pending)
        if res == r.NAMESPACES:
            for other in self.resources.all():
                if other.namespaced:
                    for (ns, _), obj in list(self._bucket(other).items()):
                        if ns == meta["name"]:
                            self._delete_locked(other, obj, "Background", pending)
        if res == r.CRDS:  # its objects go with it, then its URLs
            for served in {custom.key: custom for custom in resources_of(current)}.values():
                for obj in list(self._bucket(served).values()):
                    self._delete_locked(served, obj, "Background", pending)
            sync_registry(self.resources, current, None)
        uid = meta["uid"]
        for other in self.resources.all():
            for obj in list(self._bucket(other).values()):
                refs = obj["metadata"].get("ownerReferences") or []
                if not any(ref.get("uid") == uid for ref in refs):
                    continue
                if propagation == "Orphan":
                    new = clone(obj)
                    new["metadata"]["ownerReferences"] = [
                        ref for ref in refs if ref.get("uid") != uid]
                    self._commit(other, obj, new, pending)
                else:
                    self._delete_locked(other, obj, propagation, pending)
        return clone(gone)

    # ----------------------------------------------------------------- watch
    def subscribe(self, callback: Subscriber) -> None:
        """Call ``callback(type, resource, object)`` after every change (outside the lock).

        Args:
            callback: receives "ADDED"/"MODIFIED"/"DELETED", the resource and a copy.
        """
        self._subscribers.append(callback)

    def close(self) -> None:
        """Wake and end every watch (server shutdown)."""
        self._log.close()

    def watch(
        self,
        res: r.Resource,
        namespace: str | None,
        *,
        resource_version: str | None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        timeout: float | None = None,
        stop: threading.Event | None = None,
        bookmark_interval: float | None = None,
    ) -> Iterator[tuple[str, Obj]]:
        """Stream changes after ``resource_version`` (or every current object first, as ADDED).

        An object that stops matching the selectors is reported DELETED, one that starts
        matching ADDED, like the real API server.

        Args:
            res: the resource type.
            namespace: restrict to this namespace (None: all).
            resource_version: start after this version; None, "" or "0" sends current state.
            label_selector: label selector string.
            field_selector: field selector string.
            timeout: seconds after which the stream ends.
            stop: ends the stream when set.
            bookmark_interval: when set, yield ("BOOKMARK", obj) after that many idle seconds.

        Yields:
            (event type, object copy).

        Raises:
            Gone: when ``resource_version`` is older than the kept history.
        """
        matches = watch_matcher(res, namespace, label_selector, field_selector)
        deadline = time.monotonic() + (timeout if timeout is not None else 1800.0)
        with self._cond:
            pos = self._log.start_after(resource_version)
            initial = [] if pos is not None else [served_as(res, clone(o)) for _, o in
                                                   sorted(self._bucket(res).items()) if matches(o)]
            pos = self._rv if pos is None else pos
        for obj in initial:
            yield "ADDED", obj
        yield from self._log.follow(res, after=pos, matches=matches, deadline=deadline,
                                    stop=stop, bookmark_interval=bookmark_interval)
