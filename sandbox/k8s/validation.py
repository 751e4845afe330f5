"""Object validation (names, Deployment selectors, containers) and API defaulting."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from sandbox.k8s import resources as r
from sandbox.k8s.customresources import apply_crd_defaults, crd_causes
from sandbox.k8s.errors import BadRequest, Invalid, invalid_cause
from sandbox.k8s.selectors import selector_from_dict

_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' "
    "or '.', and must start and end with an alphanumeric character (e.g. 'example.com', "
    "regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*"
    "[a-z0-9])?)*')"
)
_LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
    "and must start and end with an alphanumeric character (e.g. 'my-name', or '123-abc', "
    "regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)
# Resources whose names must be DNS-1123 labels (the rest: subdomains).
_LABEL_NAMED = frozenset({"namespaces", "services"})


def _name_causes(res: r.Resource, name: str) -> list[dict[str, str]]:
    if not name:
        return [invalid_cause("metadata.name", "Required value: name or generateName is "
                              "required", "FieldValueRequired")]
    if res.plural in _LABEL_NAMED:
        if len(name) > 63 or not _LABEL_RE.match(name):
            return [invalid_cause("metadata.name", f'Invalid value: "{name}": {_LABEL_MSG}')]
    elif len(name) > 253 or not _SUBDOMAIN_RE.match(name):
        return [invalid_cause("metadata.name", f'Invalid value: "{name}": {_SUBDOMAIN_MSG}')]
    return []


def _container_causes(spec: dict[str, Any], prefix: str) -> list[dict[str, str]]:
    causes: list[dict[str, str]] = []
    containers = spec.get("containers")
    if not isinstance(containers, list) or not containers:
        return [invalid_cause(f"{prefix}.containers", "Required value", "FieldValueRequired")]
    for i, container in enumerate(containers):
        where = f"{prefix}.containers[{i}]"
        if not isinstance(container, dict):
            causes.append(invalid_cause(where, "Invalid value: must be an object"))
            continue
        if not container.get("name"):
            causes.append(invalid_cause(f"{where}.name", "Required value", "FieldValueRequired"))
        elif not _LABEL_RE.match(str(container["name"])):
            causes.append(invalid_cause(
                f"{where}.name", f'Invalid value: "{container["name"]}": {_LABEL_MSG}'))
        if not container.get("image"):
            causes.append(invalid_cause(f"{where}.image", "Required value",
                                        "FieldValueRequired"))
    return causes


def _workload_causes(obj: dict[str, Any]) -> list[dict[str, str]]:
    spec = obj.get("spec") or {}
    causes: list[dict[str, str]] = []
    selector = spec.get("selector")
    labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    if not selector or not (selector.get("matchLabels") or selector.get("matchExpressions")):
        causes.append(invalid_cause("spec.selector", "Required value", "FieldValueRequired"))
    elif not selector_from_dict(selector)(labels):
        causes.append(invalid_cause(
            "spec.template.metadata.labels",
            f"Invalid value: {labels!r}: `selector` does not match template `labels`"))
    replicas = spec.get("replicas")
    if replicas is not None and (not isinstance(replicas, int) or replicas < 0):
        causes.append(invalid_cause(
            "spec.replicas", f"Invalid value: {replicas!r}: must be greater than or equal to 0"))
    template_spec = (spec.get("template") or {}).get("spec") or {}
    causes += _container_causes(template_spec, "spec.template.spec")
    return causes


def _secret_causes(obj: dict[str, Any]) -> list[dict[str, str]]:
    causes: list[dict[str, str]] = []
    for key, value in (obj.get("data") or {}).items():
        try:
            base64.b64decode(str(value), validate=True)
        except (binascii.Error, ValueError):
            causes.append(invalid_cause(f"data[{key}]", "Invalid value: illegal base64 data"))
    return causes


_ROLE_KINDS = {"rolebindings": ("Role", "ClusterRole"), "clusterrolebindings": ("ClusterRole",)}


def _binding_causes(res: r.Resource, obj: dict[str, Any]) -> list[dict[str, str]]:
    ref = obj.get("roleRef")
    if not isinstance(ref, dict) or not ref.get("name"):
        return [invalid_cause("roleRef.name", "Required value", "FieldValueRequired")]
    causes: list[dict[str, str]] = []
    if ref.get("kind") not in _ROLE_KINDS[res.plural]:
        causes.append(invalid_cause("roleRef.kind", f"Unsupported value: {ref.get('kind')!r}: "
                                    f"supported values: {', '.join(_ROLE_KINDS[res.plural])}",
                                    "FieldValueNotSupported"))
    if ref.get("apiGroup") != r.ROLES.group:
        causes.append(invalid_cause("roleRef.apiGroup", f"Unsupported value: "
                                    f"{ref.get('apiGroup')!r}: supported values: "
                                    f'"{r.ROLES.group}"', "FieldValueNotSupported"))
    for i, subject in enumerate(obj.get("subjects") or []):
        if not isinstance(subject, dict) or not subject.get("kind") or not subject.get("name"):
            causes.append(invalid_cause(f"subjects[{i}]", "Required value: kind and name",
                                        "FieldValueRequired"))
    return causes


def validate(res: r.Resource, obj: dict[str, Any]) -> None:
    """Check an object the way the real API server would before storing it.

    Args:
        res: the resource type.
        obj: the object, after defaulting.

    Raises:
        Invalid: listing every bad field in ``details.causes``.
    """
    name = str((obj.get("metadata") or {}).get("name") or "")
    causes = _name_causes(res, name)
    if res in (r.DEPLOYMENTS, r.REPLICASETS):
        causes += _workload_causes(obj)
    elif res == r.PODS:
        causes += _container_causes(obj.get("spec") or {}, "spec")
    elif res == r.SECRETS:
        causes += _secret_causes(obj)
    elif res == r.CRDS:
        causes += crd_causes(obj)
    elif res in (r.ROLE_BINDINGS, r.CLUSTER_ROLE_BINDINGS):
        causes += _binding_causes(res, obj)
    if causes:
        raise Invalid(res.kind, name, causes, group=res.group)


def check_immutable_secret(old: dict[str, Any], new: dict[str, Any]) -> None:
    """Refuse data changes to a Secret (or ConfigMap) marked ``immutable: true``.

    Args:
        old: the stored object.
        new: the proposed object.

    Raises:
        Invalid: when the object is immutable and its data changed.
    """
    if not old.get("immutable"):
        return
    causes: list[dict[str, str]] = []
    for field in ("data", "stringData", "binaryData"):
        if (old.get(field) or {}) != (new.get(field) or {}):
            causes.append(invalid_cause(
                field, "Forbidden: field is immutable when `immutable` is set",
                "FieldValueForbidden"))
    if not new.get("immutable"):
        causes.append(invalid_cause(
            "immutable", "Forbidden: field is immutable when `immutable` is set",
            "FieldValueForbidden"))
    if causes:
        kind = str(old.get("kind") or "Secret")
        raise Invalid(kind, str(old["metadata"]["name"]), causes)


def _default_container(container: dict[str, Any]) -> None:
    container.setdefault("imagePullPolicy", "IfNotPresent")
    container.setdefault("terminationMessagePath", "/dev/termination-log")
    container.setdefault("terminationMessagePolicy", "File")
    container.setdefault("resources", {})
    for port in container.get("ports") or []:
        if isinstance(port, dict):
            port.setdefault("protocol", "TCP")
    for probe_name in ("readinessProbe", "livenessProbe", "startupProbe"):
        probe = container.get(probe_name)
        if isinstance(probe, dict):
            probe.setdefault("timeoutSeconds", 1)
            probe.setdefault("periodSeconds", 10)
            probe.setdefault("successThreshold", 1)
            probe.setdefault("failureThreshold", 3)
            http = probe.get("httpGet")
            if isinstance(http, dict):
                http.setdefault("scheme", "HTTP")


def _default_pod_spec(spec: dict[str, Any]) -> None:
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("securityContext", {})
    for container in spec.get("containers") or []:
        if isinstance(container, dict):
            _default_container(container)


def _default_workload(obj: dict[str, Any], *, deployment: bool) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    template = spec.setdefault("template", {})
    template.setdefault("metadata", {})
    _default_pod_spec(template.setdefault("spec", {}))
    if not deployment:
        return
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    strategy = spec.setdefault("strategy", {})
    strategy.setdefault("type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        rolling = strategy.setdefault("rollingUpdate", {})
        rolling.setdefault("maxSurge", "25%")
        rolling.setdefault("maxUnavailable", "25%")


def _default_service(obj: dict[str, Any]) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    for port in spec.get("ports") or []:
        if isinstance(port, dict):
            port.setdefault("protocol", "TCP")
            if "port" in port:
                port.setdefault("targetPort", port["port"])


def apply_defaults(res: r.Resource, obj: dict[str, Any]) -> None:
    """Fill in the fields the real API server defaults (in place).

    Args:
        res: the resource type.
        obj: the object to default.
    """
    if res == r.DEPLOYMENTS:
        _default_workload(obj, deployment=True)
    elif res == r.REPLICASETS:
        _default_workload(obj, deployment=False)
    elif res == r.PODS:
        _default_pod_spec(obj.setdefault("spec", {}))
    elif res == r.SERVICES:
        _default_service(obj)
    elif res == r.SECRETS:
        obj.setdefault("type", "Opaque")
    elif res == r.CRDS:
        apply_crd_defaults(obj)


def check_update(res: r.Resource, old: dict[str, Any], new: dict[str, Any]) -> None:
    """Apply the update rules of the real API: allocated values kept, immutable fields refused.

    A Service updated without ``spec.clusterIP`` keeps its allocated address; a Deployment's
    or ReplicaSet's ``spec.selector`` cannot change.

    Args:
        res: the resource type.
        old: the stored object.
        new: the proposed object (changed in place for carried-over values).

    Raises:
        Invalid: when an immutable field changed.
    """
    if res in (r.ROLE_BINDINGS, r.CLUSTER_ROLE_BINDINGS):
        if old.get("roleRef") != new.get("roleRef"):
            raise Invalid(res.kind, str(old["metadata"]["name"]), [invalid_cause(
                "roleRef", "Invalid value: cannot change roleRef")], group=res.group)
        return
    if res.custom or res in (r.ROLES, r.CLUSTER_ROLES, r.SERVICE_ACCOUNTS):
        return
    old_spec, new_spec = old.get("spec") or {}, new.setdefault("spec", {})
    if res == r.CRDS:
        for field in ("group", "scope"):
            if old_spec.get(field) != new_spec.get(field):
                raise Invalid(res.kind, str(old["metadata"]["name"]), [invalid_cause(
                    f"spec.{field}", f"Invalid value: {new_spec.get(field)!r}: field is "
                    "immutable")], group=res.group)
    elif res == r.SERVICES:
        for field in ("clusterIP", "clusterIPs"):
            if not new_spec.get(field) and old_spec.get(field):
                new_spec[field] = old_spec[field]
    elif res in (r.DEPLOYMENTS, r.REPLICASETS) and old_spec.get("selector") != \
            new_spec.get("selector"):
        name = str(old["metadata"]["name"])
        raise Invalid(res.kind, name, [invalid_cause(
            "spec.selector", f"Invalid value: {new_spec.get('selector')!r}: field is immutable")],
            group=res.group)


_COMMON_FIELDS = frozenset({"apiVersion", "kind", "metadata"})
_TOP_FIELDS: dict[str, frozenset[str]] = {
    "secrets": frozenset({"data", "stringData", "type", "immutable"}),
    "configmaps": frozenset({"data", "binaryData", "immutable"}),
    "endpoints": frozenset({"subsets"}),
    "serviceaccounts": frozenset({"secrets", "imagePullSecrets", "automountServiceAccountToken"}),
    "roles": frozenset({"rules"}),
    "clusterroles": frozenset({"rules", "aggregationRule"}),
    "rolebindings": frozenset({"subjects", "roleRef"}),
    "clusterrolebindings": frozenset({"subjects", "roleRef"}),
    "events": frozenset({
        "involvedObject", "reason", "message", "source", "firstTimestamp", "lastTimestamp",
        "count", "type", "eventTime", "series", "action", "related", "reportingComponent",
        "reportingInstance"}),
}
_META_FIELDS = frozenset({
    "name", "generateName", "namespace", "selfLink", "uid", "resourceVersion", "generation",
    "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "labels",
    "annotations", "ownerReferences", "finalizers", "managedFields"})


def check_unknown_fields(res: r.Resource, obj: dict[str, Any]) -> None:
    """Refuse unknown top-level and metadata fields (``fieldValidation=Strict``).

    Only the first level of the object and of ``metadata`` is checked.

    Args:
        res: the resource type.
        obj: the object as sent.

    Raises:
        BadRequest: naming the unknown field, like the real API's strict decoding error.
    """
    allowed = _COMMON_FIELDS | _TOP_FIELDS.get(res.plural, frozenset({"spec", "status"}))
    # A custom resource's fields are whatever its schema says; the emulator keeps them all.
    unknown = [] if res.custom else [f'unknown field "{k}"' for k in obj if k not in allowed]
    unknown += [f'unknown field "metadata.{k}"' for k in (obj.get("metadata") or {})
                if k not in _META_FIELDS]
    if unknown:
        raise BadRequest(f"strict decoding error: {', '.join(unknown)}")
