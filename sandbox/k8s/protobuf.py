"""Just enough of the Kubernetes protobuf encoding to read what kubectl's typed clients POST.

``kubectl create namespace|secret|configmap`` send protobuf bodies; those three kinds are
decoded here (metadata name, generateName, namespace, labels, annotations and their data).
Anything else is refused with 415 so the caller sees a clear message.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

from sandbox.k8s.errors import BadRequest, UnsupportedMediaType

MAGIC = b"k8s\x00"


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise BadRequest("truncated protobuf body")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(data: bytes) -> Iterator[tuple[int, int | bytes]]:
    """Yield (field number, value) for every field of one message."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
            yield number, value
        elif wire == 2:
            length, pos = _varint(data, pos)
            yield number, data[pos:pos + length]
            pos += length
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        else:
            raise BadRequest(f"unsupported protobuf wire type {wire}")


def _bytes(value: int | bytes) -> bytes:
    if not isinstance(value, bytes):
        raise BadRequest("malformed protobuf body: expected a length-delimited field")
    return value


def _map_entry(value: int | bytes) -> tuple[str, bytes]:
    key, val = "", b""
    for number, item in _fields(_bytes(value)):
        if number == 1:
            key = _bytes(item).decode()
        elif number == 2:
            val = _bytes(item)
    return key, val


def _metadata(data: bytes) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    names = {1: "name", 2: "generateName", 3: "namespace"}
    for number, value in _fields(data):
        if number in names:
            meta[names[number]] = _bytes(value).decode()
        elif number in (11, 12):
            key, val = _map_entry(value)
            meta.setdefault("labels" if number == 11 else "annotations", {})[key] = val.decode()
    return meta


def _secret(fields: list[tuple[int, int | bytes]], obj: dict[str, Any]) -> None:
    for number, value in fields:
        if number == 2:
            key, val = _map_entry(value)
            obj.setdefault("data", {})[key] = base64.b64encode(val).decode()
        elif number == 3 and _bytes(value):
            obj["type"] = _bytes(value).decode()
        elif number == 4:
            key, val = _map_entry(value)
            obj.setdefault("stringData", {})[key] = val.decode()
        elif number == 5:
            obj["immutable"] = bool(value)


def _configmap(fields: list[tuple[int, int | bytes]], obj: dict[str, Any]) -> None:
    for number, value in fields:
        if number == 2:
            key, val = _map_entry(value)
            obj.setdefault("data", {})[key] = val.decode()
        elif number == 3:
            key, val = _map_entry(value)
            obj.setdefault("binaryData", {})[key] = base64.b64encode(val).decode()
        elif number == 4:
            obj["immutable"] = bool(value)


def decode(body: bytes, content_type: str) -> dict[str, Any]:
    """Decode a protobuf-encoded Namespace, Secret or ConfigMap into its JSON form.

    Args:
        body: the request body (the k8s magic prefix + runtime.Unknown envelope).
        content_type: the request's Content-Type, for the error message.

    Returns:
        The object as a dict.

    Raises:
        UnsupportedMediaType: for any other kind (send JSON instead).
        BadRequest: when the body is not a Kubernetes protobuf envelope.
    """
    if not body.startswith(MAGIC):
        raise BadRequest("protobuf body without the k8s envelope")
    api_version = kind = ""
    raw = b""
    for number, value in _fields(body[len(MAGIC):]):
        if number == 1:
            for sub, item in _fields(_bytes(value)):
                if sub == 1:
                    api_version = _bytes(item).decode()
                elif sub == 2:
                    kind = _bytes(item).decode()
        elif number == 2:
            raw = _bytes(value)
    if kind not in ("Namespace", "Secret", "ConfigMap"):
        raise UnsupportedMediaType(
            content_type, f"; the sandbox decodes protobuf only for Namespace, Secret and "
            f"ConfigMap, not {kind or 'this kind'}: create it from a manifest instead "
            f"(kubectl create -f FILE --validate=false)")
    fields = list(_fields(raw))
    obj: dict[str, Any] = {"apiVersion": api_version or "v1", "kind": kind, "metadata": {}}
    for number, value in fields:
        if number == 1:
            obj["metadata"] = _metadata(_bytes(value))
    if kind == "Secret":
        _secret(fields, obj)
    elif kind == "ConfigMap":
        _configmap(fields, obj)
    return obj
