"""Resource verbs (get, list, watch, create, update, patch, delete) on top of the store."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sandbox.k8s import protobuf
from sandbox.k8s import resources as r
from sandbox.k8s.errors import ApiError, BadRequest, MethodNotAllowed, UnsupportedMediaType
from sandbox.k8s.patching import (
    APPLY_PATCH,
    JSON_PATCH,
    MERGE_PATCH,
    STRATEGIC_PATCH,
    apply_patch,
    json_merge,
    strategic_merge,
)
from sandbox.k8s.routing import Route
from sandbox.k8s.selectors import selector_to_string
from sandbox.k8s.store import Store
from sandbox.k8s.tables import table, wants_table
from sandbox.k8s.validation import check_unknown_fields

Obj = dict[str, Any]


@dataclass
class Request:
    """What the HTTP layer hands to the handlers."""

    method: str
    path: str
    query: dict[str, str]
    headers: Mapping[str, str]
    body: bytes = b""
    stop: threading.Event = field(default_factory=threading.Event)

    def json(self) -> Any:
        """Decode the body as JSON.

        Returns:
            The decoded value (None for an empty body).

        Raises:
            UnsupportedMediaType: for CBOR, and protobuf of kinds other than Namespace,
                Secret and ConfigMap (what ``kubectl create ns|secret|configmap`` sends).
            BadRequest: when the body is not JSON.
        """
        if not self.body.strip():
            return None
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        if content_type.startswith("application/vnd.kubernetes.protobuf"):
            return protobuf.decode(self.body, content_type)
        if content_type.startswith("application/cbor"):
            raise UnsupportedMediaType(content_type)
        try:
            return json.loads(self.body)
        except ValueError as exc:
            raise BadRequest(f"the request body is not valid JSON: {exc}") from None


@dataclass
class Response:
    """A JSON answer, or a stream of watch events."""

    code: int
    body: Any = None
    stream: Iterator[Obj] | None = None


def verb_of(req: Request, route: Route) -> str:
    """The Kubernetes verb of a request (for fault injection).

    Args:
        req: the request.
        route: its route.

    Returns:
        get, list, watch, create, update, patch or delete.
    """
    if req.method == "GET":
        if _is_true(req.query.get("watch")):
            return "watch"
        return "get" if route.name else "list"
    return {"POST": "create", "PUT": "update", "PATCH": "patch",
            "DELETE": "delete"}.get(req.method, req.method.lower())


def _is_true(value: str | None) -> bool:
    return value in ("true", "1", "True")


def _body_object(req: Request) -> Obj:
    body = req.json()
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    return body


def _scale(obj: Obj) -> Obj:
    meta = obj["metadata"]
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion",
                                          "creationTimestamp") if k in meta},
        "spec": {"replicas": (obj.get("spec") or {}).get("replicas", 0)},
        "status": {"replicas": (obj.get("status") or {}).get("replicas", 0),
                   "selector": selector_to_string((obj.get("spec") or {}).get("selector"))},
    }


def _with_replicas(current: Obj, scale: Obj) -> Obj:
    replicas = (scale.get("spec") or {}).get("replicas")
    if not isinstance(replicas, int) or replicas < 0:
        raise ApiError(422, "Invalid", f"Scale.autoscaling \"{current['metadata']['name']}\" "
                       f"is invalid: spec.replicas: Invalid value: {replicas!r}: must be "
                       "greater than or equal to 0")
    current.setdefault("spec", {})["replicas"] = replicas
    rv = (scale.get("metadata") or {}).get("resourceVersion")
    if rv:
        current["metadata"]["resourceVersion"] = rv
    return current


def _scale_verb(store: Store, req: Request, route: Route, *, dry_run: bool) -> Response:
    assert route.name is not None
    if req.method == "GET":
        return Response(200, _scale(store.get(route.res, route.namespace, route.name)))
    if req.method == "PUT":
        body = _body_object(req)
        result = store.patch(route.res, route.namespace, route.name,
                             lambda cur: _with_replicas(cur, body), dry_run=dry_run)
        return Response(200, _scale(result))
    if req.method == "PATCH":
        patch = req.json()
        content_type = req.headers.get("Content-Type", "")
        result = store.patch(
            route.res, route.namespace, route.name,
            lambda cur: _with_replicas(cur, apply_patch(content_type, _scale(cur), patch)),
            dry_run=dry_run)
        return Response(200, _scale(result))
    raise MethodNotAllowed(f"{req.method} is not supported on {route.res.plural}/scale")


def _apply(store: Store, req: Request, route: Route, *, dry_run: bool) -> Response:
    """Server-side apply, approximated: create when missing, else a strategic merge."""
    try:
        body = yaml.safe_load(req.body.decode() or "null")
    except yaml.YAMLError as exc:
        raise BadRequest(f"the apply patch is not valid YAML/JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest("the apply patch must be an object")
    assert route.name is not None
    body.setdefault("metadata", {})["name"] = route.name
    try:
        store.get(route.res, route.namespace, route.name)
    except ApiError as exc:
        if exc.code != 404:
            raise
        return Response(201, store.create(route.res, route.namespace, body, dry_run=dry_run))
    merge = json_merge if route.res.custom else strategic_merge
    return Response(200, store.patch(route.res, route.namespace, route.name,
                                     lambda cur: merge(cur, body),
                                     subresource=route.subresource, dry_run=dry_run))


def _list_or_table(req: Request, res: r.Resource, items: list[Obj], rv: str) -> Response:
    if wants_table(req.headers.get("Accept")):
        return Response(200, table(res, items, rv))
    return Response(200, {"kind": f"{res.kind}List", "apiVersion": res.api_version,
                          "metadata": {"resourceVersion": rv}, "items": items})


def _watch(store: Store, req: Request, route: Route) -> Response:
    timeout = req.query.get("timeoutSeconds")
    try:
        seconds = float(timeout) if timeout else None
    except ValueError:
        raise BadRequest(f"timeoutSeconds: {timeout!r} is not a number") from None
    field_selector = req.query.get("fieldSelector")
    if route.name:
        name_term = f"metadata.name={route.name}"
        field_selector = f"{field_selector},{name_term}" if field_selector else name_term
    events = store.watch(
        route.res, route.namespace,
        resource_version=req.query.get("resourceVersion"),
        label_selector=req.query.get("labelSelector"),
        field_selector=field_selector,
        timeout=seconds,
        stop=req.stop,
        bookmark_interval=5.0 if _is_true(req.query.get("allowWatchBookmarks")) else None,
    )

    as_table = wants_table(req.headers.get("Accept"))

    def stream() -> Iterator[Obj]:
        try:
            for kind, obj in events:
                if as_table and kind != "BOOKMARK":
                    rv = obj["metadata"].get("resourceVersion", "")
                    yield {"type": kind, "object": table(route.res, [obj], rv)}
                else:
                    yield {"type": kind, "object": obj}
        except ApiError as exc:
            yield {"type": "ERROR", "object": exc.status()}

    return Response(200, stream=stream())


def _delete_policy(req: Request) -> str:
    policy = req.query.get("propagationPolicy")
    body = req.json() if req.body.strip() else None
    if isinstance(body, dict):
        policy = body.get("propagationPolicy") or policy
        if body.get("orphanDependents") is True:
            policy = "Orphan"
    if req.query.get("orphanDependents") == "true":
        policy = "Orphan"
    return policy or "Background"


def _logs(store: Store, req: Request, route: Route, logs_dir: Path | None) -> Response:
    """``pods/{name}/log``: the container's output as the kubelet recorded it."""
    assert route.name is not None
    pod = store.get(route.res, route.namespace, route.name)
    containers = [c.get("name", "") for c in (pod.get("spec") or {}).get("containers") or []]
    container = req.query.get("container") or (containers[0] if containers else "")
    if container not in containers:
        raise BadRequest(f"container {container} is not valid for pod {route.name}")
    path = None if logs_dir is None else \
        logs_dir / "pods" / str(route.namespace) / f"{route.name}_{container}.log"
    text = path.read_text(errors="replace") if path is not None and path.exists() else ""
    tail = req.query.get("tailLines")
    if tail and tail.isdigit():
        lines = text.splitlines(keepends=True)
        text = "".join(lines[-int(tail):]) if int(tail) else ""
    return Response(200, text)


def handle(store: Store, req: Request, route: Route, *, logs_dir: Path | None = None) -> Response:
    """Serve one resource request.

    Args:
        store: the object store.
        req: the request.
        route: where it points.
        logs_dir: the kubelet's work directory (pod logs under ``pods/{ns}/{pod}_{c}.log``).

    Returns:
        The response (JSON body or watch stream).

    Raises:
        ApiError: any API error, rendered as a Status by the caller.
    """
    res, ns, name = route.res, route.namespace, route.name
    dry_run = req.query.get("dryRun") == "All"
    if req.method == "DELETE" and req.body.strip():
        options = req.json()
        dry_run = dry_run or (isinstance(options, dict) and "All" in (options.get("dryRun") or []))
    if route.subresource == "log" and req.method == "GET":
        return _logs(store, req, route, logs_dir)
    if route.subresource == "scale":
        return _scale_verb(store, req, route, dry_run=dry_run)
    if req.method == "GET":
        if name and not _is_true(req.query.get("watch")):
            obj = store.get(res, ns, name)
            if wants_table(req.headers.get("Accept")):
                return Response(200, table(res, [obj], obj["metadata"]["resourceVersion"]))
            return Response(200, obj)
        if _is_true(req.query.get("watch")):
            return _watch(store, req, route)
        items, rv = store.list(res, ns, label_selector=req.query.get("labelSelector"),
                               field_selector=req.query.get("fieldSelector"))
        return _list_or_table(req, res, items, rv)
    if req.method == "POST" and not name:
        if res.namespaced and not ns:
            raise MethodNotAllowed(f"create {res.plural} needs a namespace in the path")
        body = _body_object(req)
        if req.query.get("fieldValidation") == "Strict":
            check_unknown_fields(res, body)
        if res.has_status:
            body.pop("status", None)  # the API ignores status on create
        return Response(201, store.create(res, ns, body, dry_run=dry_run))
    if req.method == "PUT" and name:
        body = _body_object(req)
        if req.query.get("fieldValidation") == "Strict":
            check_unknown_fields(res, body)
        meta = body.setdefault("metadata", {})
        if meta.get("name") not in (None, "", name):
            raise BadRequest(f"the name of the object ({meta['name']}) does not match the "
                             f"name on the URL ({name})")
        meta["name"] = name
        return Response(200, store.update(res, ns, body, subresource=route.subresource,
                                          dry_run=dry_run))
    if req.method == "PATCH" and name:
        content_type = req.headers.get("Content-Type", "")
        media = content_type.split(";")[0].strip().lower()
        if media == APPLY_PATCH:
            return _apply(store, req, route, dry_run=dry_run)
        if res.custom and media == STRATEGIC_PATCH:
            # Custom resources have no patch strategies: the real API refuses the format.
            raise ApiError(415, "UnsupportedMediaType", "the body of the request was in an "
                           f"unknown format - accepted media types include: {JSON_PATCH}, "
                           f"{MERGE_PATCH}, {APPLY_PATCH}")
        patch = req.json()
        return Response(200, store.patch(res, ns, name,
                                         lambda cur: apply_patch(content_type, cur, patch),
                                         subresource=route.subresource, dry_run=dry_run))
    if req.method == "DELETE" and name and route.subresource is None:
        return Response(200, store.delete(res, ns, name, propagation=_delete_policy(req),
                                          dry_run=dry_run))
    if req.method == "DELETE" and not name:
        items, rv = store.list(res, ns, label_selector=req.query.get("labelSelector"),
                               field_selector=req.query.get("fieldSelector"))
        policy = _delete_policy(req)
        deleted = []
        for item in items:
            meta = item["metadata"]
            try:
                deleted.append(store.delete(res, meta.get("namespace"), meta["name"],
                                            propagation=policy, dry_run=dry_run))
            except ApiError as exc:
                if exc.code != 404:
                    raise
        return Response(200, {"kind": f"{res.kind}List", "apiVersion": res.api_version,
                              "metadata": {"resourceVersion": store.resource_version},
                              "items": deleted})
    raise MethodNotAllowed(f"the server does not allow this method on the requested resource "
                           f"({req.method} {req.path})")
