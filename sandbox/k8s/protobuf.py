"""Just enough of the Kubernetes protobuf encoding to read what kubectl's typed clients POST.

``kubectl create namespace|secret|configmap|deployment|service|serviceaccount|role|
clusterrole|rolebinding|clusterrolebinding`` and ``kubectl expose`` send protobuf bodies. Those
kinds are decoded here, for the fields such commands set (metadata name, generateName,
namespace, labels, annotations; data; Deployment replicas, selector, strategy type and pod
template with containers' name, image, command, args, ports and env; Service ports, selector,
type; RBAC rules, subjects and roleRef). Other kinds are refused with 415 and a hint.
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


Schema = dict[int, tuple[str, str, Any]]
# kinds: s string, i int (0 dropped), i0 int (0 kept: pointer fields), b bool, m message,
# rm repeated message, rs repeated string, M map<string,string>, B map<string,bytes>,
# ios IntOrString.
_META: Schema = {1: ("name", "s", None), 2: ("generateName", "s", None),
                 3: ("namespace", "s", None), 11: ("labels", "M", None),
                 12: ("annotations", "M", None)}
_SELECTOR: Schema = {
    1: ("matchLabels", "M", None),
    2: ("matchExpressions", "rm", {1: ("key", "s", None), 2: ("operator", "s", None),
                                   3: ("values", "rs", None)}),
}
_CONTAINER: Schema = {
    1: ("name", "s", None), 2: ("image", "s", None), 3: ("command", "rs", None),
    4: ("args", "rs", None), 5: ("workingDir", "s", None),
    6: ("ports", "rm", {1: ("name", "s", None), 2: ("hostPort", "i", None),
                        3: ("containerPort", "i", None), 4: ("protocol", "s", None)}),
    7: ("env", "rm", {1: ("name", "s", None), 2: ("value", "s", None)}),
    8: ("resources", "m", {}),
}
_POD_SPEC: Schema = {2: ("containers", "rm", _CONTAINER), 3: ("restartPolicy", "s", None),
                     4: ("terminationGracePeriodSeconds", "i0", None),
                     6: ("dnsPolicy", "s", None), 7: ("nodeSelector", "M", None),
                     8: ("serviceAccountName", "s", None)}
_TEMPLATE: Schema = {1: ("metadata", "m", _META), 2: ("spec", "m", _POD_SPEC)}
_RULES: Schema = {2: ("rules", "rm", {
    1: ("verbs", "rs", None), 2: ("apiGroups", "rs", None), 3: ("resources", "rs", None),
    4: ("resourceNames", "rs", None), 5: ("nonResourceURLs", "rs", None)})}
_BINDING: Schema = {
    1: ("metadata", "m", _META),
    2: ("subjects", "rm", {1: ("kind", "s", None), 2: ("apiGroup", "s", None),
                           3: ("name", "s", None), 4: ("namespace", "s", None)}),
    3: ("roleRef", "m", {1: ("apiGroup", "s", None), 2: ("kind", "s", None),
                         3: ("name", "s", None)}),
}
_KINDS: dict[str, Schema] = {
    "ServiceAccount": {1: ("metadata", "m", _META),
                       3: ("imagePullSecrets", "rm", {1: ("name", "s", None)}),
                       4: ("automountServiceAccountToken", "b", None)},
    "Role": {1: ("metadata", "m", _META), **_RULES},
    "ClusterRole": {1: ("metadata", "m", _META), **_RULES},
    "RoleBinding": _BINDING,
    "ClusterRoleBinding": _BINDING,
    "Namespace": {1: ("metadata", "m", _META)},
    "Secret": {1: ("metadata", "m", _META), 2: ("data", "B", None), 3: ("type", "s", None),
               4: ("stringData", "M", None), 5: ("immutable", "b", None)},
    "ConfigMap": {1: ("metadata", "m", _META), 2: ("data", "M", None),
                  3: ("binaryData", "B", None), 4: ("immutable", "b", None)},
    "Deployment": {1: ("metadata", "m", _META), 2: ("spec", "m", {
        1: ("replicas", "i0", None), 2: ("selector", "m", _SELECTOR),
        3: ("template", "m", _TEMPLATE), 4: ("strategy", "m", {1: ("type", "s", None)}),
        5: ("minReadySeconds", "i", None), 6: ("revisionHistoryLimit", "i0", None),
        7: ("paused", "b", None), 9: ("progressDeadlineSeconds", "i0", None)})},
    "Service": {1: ("metadata", "m", _META), 2: ("spec", "m", {
        1: ("ports", "rm", {1: ("name", "s", None), 2: ("protocol", "s", None),
                            3: ("port", "i", None), 4: ("targetPort", "ios", None),
                            5: ("nodePort", "i", None)}),
        2: ("selector", "M", None), 3: ("clusterIP", "s", None), 4: ("type", "s", None),
        7: ("sessionAffinity", "s", None)})},
}


def _map_entry(value: int | bytes) -> tuple[str, bytes]:
    key, val = "", b""
    for number, item in _fields(_bytes(value)):
        if number == 1:
            key = _bytes(item).decode()
        elif number == 2:
            val = _bytes(item)
    return key, val


def _int_or_string(data: bytes) -> int | str:
    kind, number, text = 0, 0, ""
    for field, value in _fields(data):
        if field == 1 and isinstance(value, int):
            kind = value
        elif field == 2 and isinstance(value, int):
            number = value
        elif field == 3:
            text = _bytes(value).decode()
    return text if kind == 1 else number


def _scalar(kind: str, value: int | bytes) -> Any:
    if kind == "s":
        return _bytes(value).decode() or None
    if kind in ("i", "i0"):
        if not isinstance(value, int):
            raise BadRequest("malformed protobuf body: expected a varint")
        number = value - (1 << 64) if value >= 1 << 63 else value
        return None if kind == "i" and number == 0 else number
    if kind == "b":
        return bool(value) or None
    return _int_or_string(_bytes(value))


def _message(data: bytes, schema: Schema) -> dict[str, Any]:
    """Decode one message with ``schema``; unknown fields are skipped."""
    out: dict[str, Any] = {}
    for number, value in _fields(data):
        if number not in schema:
            continue
        name, kind, sub = schema[number]
        if kind == "m":
            out[name] = _message(_bytes(value), sub)
        elif kind == "rm":
            out.setdefault(name, []).append(_message(_bytes(value), sub))
        elif kind == "rs":
            out.setdefault(name, []).append(_bytes(value).decode())
        elif kind in ("M", "B"):
            key, raw = _map_entry(value)
            text = raw.decode() if kind == "M" else base64.b64encode(raw).decode()
            out.setdefault(name, {})[key] = text
        else:
            scalar = _scalar(kind, value)
            if scalar is not None:
                out[name] = scalar
    return out


def decode(body: bytes, content_type: str) -> dict[str, Any]:
    """Decode a protobuf-encoded object (the kinds kubectl's imperative commands create).

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
    schema = _KINDS.get(kind)
    if schema is None:
        raise UnsupportedMediaType(
            content_type, f"; the sandbox decodes protobuf only for {', '.join(_KINDS)}, "
            f"not {kind or 'this kind'}: create it from a manifest instead "
            f"(kubectl create -f FILE)")
    obj = _message(raw, schema)
    obj.setdefault("metadata", {})
    return {"apiVersion": api_version or "v1", "kind": kind, **obj}
