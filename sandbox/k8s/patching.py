"""The three patch formats: strategic merge, JSON merge (RFC 7386) and JSON patch (RFC 6902)."""

from __future__ import annotations

import copy
from typing import Any

from sandbox.k8s.errors import ApiError, BadRequest, UnsupportedMediaType

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"

# List fields merged by a key in strategic merge patch (field name -> merge key).
_MERGE_KEYS: dict[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "imagePullSecrets": "name",
    "conditions": "type",
    "ownerReferences": "uid",
    "hostAliases": "ip",
    "topologySpreadConstraints": "topologyKey",
}
# Primitive lists merged as sets.
_SET_LISTS = frozenset({"finalizers"})


def json_merge(target: Any, patch: Any) -> Any:
    """Apply a JSON merge patch (RFC 7386).

    Args:
        target: the document.
        patch: the merge patch; null deletes a key, objects merge, everything else replaces.

    Returns:
        The patched document (``target`` is not modified).
    """
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = json_merge(result.get(key), value)
    return result


def _merge_key(field: str, items: list[Any]) -> str | None:
    if field == "ports":
        sample = next((i for i in items if isinstance(i, dict)), {})
        return "containerPort" if "containerPort" in sample else "port"
    return _MERGE_KEYS.get(field)


def _merge_list(field: str, current: Any, patch: list[Any]) -> list[Any]:
    base = list(current) if isinstance(current, list) else []
    if field in _SET_LISTS:
        return base + [v for v in patch if v not in base]
    key = _merge_key(field, patch + base)
    if key is None or not all(isinstance(i, dict) for i in patch):
        return [strip_directives(v) for v in patch]
    result = copy.deepcopy(base)
    for item in patch:
        directive = item.get("$patch")
        position = next((i for i, old in enumerate(result)
                         if isinstance(old, dict) and old.get(key) == item.get(key)), None)
        if directive == "replace":
            return [strip_directives(i) for i in patch if i.get("$patch") != "replace"]
        if directive == "delete":
            if position is not None:
                result.pop(position)
            continue
        if position is None:
            result.append(strip_directives(item))
        else:
            result[position] = strategic_merge(result[position], item)
    return result


def strip_directives(value: Any) -> Any:
    """Remove strategic-merge directives (``$patch``, ``$setElementOrder/...``) from a value.

    Args:
        value: any JSON value.

    Returns:
        A copy without directive keys.
    """
    if isinstance(value, dict):
        return {k: strip_directives(v) for k, v in value.items()
                if not k.startswith("$") and v is not None}
    if isinstance(value, list):
        return [strip_directives(v) for v in value]
    return value


def strategic_merge(target: Any, patch: Any) -> Any:
    """Apply a strategic merge patch as the API server does for built-in types.

    Lists of containers, env, volumes... merge by their key (``name``), ports by
    ``containerPort`` (or ``port`` for Services), conditions by ``type``; other lists replace.
    ``$patch: replace|delete`` and ``$deleteFromPrimitiveList/<field>`` are honoured and
    ``$setElementOrder``/``$retainKeys`` are ignored.

    Args:
        target: the current document.
        patch: the patch.

    Returns:
        The patched document (``target`` is not modified).
    """
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    directive = patch.get("$patch")
    if directive == "replace":
        return strip_directives(patch)
    if directive == "delete":
        return None
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            result[field] = [v for v in result.get(field) or [] if v not in value]
            continue
        if key.startswith("$"):
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, list):
            result[key] = _merge_list(key, result.get(key), value)
        elif isinstance(value, dict):
            merged = strategic_merge(result.get(key), value)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        else:
            result[key] = value
    return result


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def _split_pointer(pointer: str) -> list[str]:
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise BadRequest(f"invalid JSON pointer {pointer!r}: must start with '/'")
    return [_unescape(t) for t in pointer[1:].split("/")]


def _container(doc: Any, tokens: list[str], pointer: str) -> Any:
    node = doc
    for token in tokens:
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            raise ApiError(422, "Invalid", f"the server rejected our request due to an error "
                           f"in our request: path {pointer!r} does not exist")
    return node


def _get(doc: Any, pointer: str) -> Any:
    return _container(doc, _split_pointer(pointer), pointer)


def _remove(doc: Any, pointer: str) -> Any:
    tokens = _split_pointer(pointer)
    if not tokens:
        raise BadRequest("cannot remove the whole document")
    parent = _container(doc, tokens[:-1], pointer)
    last = tokens[-1]
    if isinstance(parent, dict) and last in parent:
        return parent.pop(last)
    if isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        return parent.pop(int(last))
    raise ApiError(422, "Invalid", f"unable to remove nonexistent key {pointer!r}")


def _add(doc: Any, pointer: str, value: Any, *, replace: bool = False) -> Any:
    tokens = _split_pointer(pointer)
    if not tokens:
        return copy.deepcopy(value)
    parent = _container(doc, tokens[:-1], pointer)
    last = tokens[-1]
    if isinstance(parent, dict):
        if replace and last not in parent:
            raise ApiError(422, "Invalid", f"replace operation does not apply: doc is missing "
                           f"key: {pointer}")
        parent[last] = copy.deepcopy(value)
    elif isinstance(parent, list):
        if last == "-":
            parent.append(copy.deepcopy(value))
        elif last.isdigit() and int(last) <= len(parent) - (1 if replace else 0):
            if replace:
                parent[int(last)] = copy.deepcopy(value)
            else:
                parent.insert(int(last), copy.deepcopy(value))
        else:
            raise ApiError(422, "Invalid", f"index out of range in {pointer!r}")
    else:
        raise ApiError(422, "Invalid", f"cannot add at {pointer!r}: parent is not a container")
    return doc


def json_patch(document: Any, operations: Any) -> Any:
    """Apply a JSON patch (RFC 6902: add, remove, replace, move, copy, test).

    Args:
        document: the document.
        operations: the list of operations.

    Returns:
        The patched document (``document`` is not modified).

    Raises:
        BadRequest: when the patch is not a list of operations.
        ApiError: 422 when an operation cannot apply (missing path, failed test).
    """
    if not isinstance(operations, list):
        raise BadRequest("json patch must be a list of operations")
    doc = copy.deepcopy(document)
    for op in operations:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise BadRequest(f"invalid json patch operation {op!r}: needs 'op' and 'path'")
        kind, path = op["op"], op["path"]
        if kind == "add":
            doc = _add(doc, path, op.get("value"))
        elif kind == "remove":
            _remove(doc, path)
        elif kind == "replace":
            doc = _add(doc, path, op.get("value"), replace=True)
        elif kind == "move":
            value = _remove(doc, op["from"])
            doc = _add(doc, path, value)
        elif kind == "copy":
            doc = _add(doc, path, _get(doc, op["from"]))
        elif kind == "test":
            if _get(doc, path) != op.get("value"):
                raise ApiError(422, "Invalid", f"testing value {path} failed")
        else:
            raise BadRequest(f"unknown json patch operation {kind!r}")
    return doc


def apply_patch(content_type: str, document: dict[str, Any], patch: Any) -> dict[str, Any]:
    """Apply a patch body according to its Content-Type.

    Args:
        content_type: the request's Content-Type (parameters ignored).
        document: the current object.
        patch: the decoded patch body.

    Returns:
        The patched object.

    Raises:
        UnsupportedMediaType: for any other content type (server-side apply included).
        BadRequest: when the result is not an object.
    """
    media = content_type.split(";", maxsplit=1)[0].strip().lower()
    if media == JSON_PATCH:
        result = json_patch(document, patch)
    elif media == MERGE_PATCH:
        result = json_merge(document, patch)
    elif media == STRATEGIC_PATCH:
        result = strategic_merge(document, patch)
    else:
        raise UnsupportedMediaType(media)
    if not isinstance(result, dict):
        raise BadRequest("the patch did not produce an object")
    return result
