"""The resource types the emulator serves, and how to find one from a URL or a kind."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Resource:
    """One served resource type (e.g. ``apps/v1 deployments``)."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()
    singular: str = field(default="")

    @property
    def api_version(self) -> str:
        """``apiVersion`` of objects of this type (``v1`` or ``group/version``)."""
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> str:
        """A unique string key, ``group/plural``."""
        return f"{self.group}/{self.plural}"

    @property
    def has_status(self) -> bool:
        """Whether the type has a ``status`` subresource (status ignored on main updates)."""
        return "status" in self.subresources


PODS = Resource("", "v1", "pods", "Pod", True, ("po",), ("status", "log"), "pod")
SERVICES = Resource("", "v1", "services", "Service", True, ("svc",), ("status",), "service")
ENDPOINTS = Resource("", "v1", "endpoints", "Endpoints", True, ("ep",), (), "endpoints")
SECRETS = Resource("", "v1", "secrets", "Secret", True, (), (), "secret")
CONFIGMAPS = Resource("", "v1", "configmaps", "ConfigMap", True, ("cm",), (), "configmap")
EVENTS = Resource("", "v1", "events", "Event", True, ("ev",), (), "event")
NAMESPACES = Resource("", "v1", "namespaces", "Namespace", False, ("ns",), ("status",),
                      "namespace")
DEPLOYMENTS = Resource("apps", "v1", "deployments", "Deployment", True, ("deploy",),
                       ("status", "scale"), "deployment")
REPLICASETS = Resource("apps", "v1", "replicasets", "ReplicaSet", True, ("rs",),
                       ("status", "scale"), "replicaset")
LEASES = Resource("coordination.k8s.io", "v1", "leases", "Lease", True, (), (), "lease")
# One read-mostly node, "sandbox", so that "kubectl get nodes" answers like a cluster.
NODES = Resource("", "v1", "nodes", "Node", False, ("no",), ("status",), "node")

ALL: tuple[Resource, ...] = (
    PODS, SERVICES, ENDPOINTS, SECRETS, CONFIGMAPS, EVENTS, NAMESPACES, NODES,
    DEPLOYMENTS, REPLICASETS, LEASES,
)

GROUP_VERSIONS: tuple[tuple[str, str], ...] = (
    ("", "v1"), ("apps", "v1"), ("coordination.k8s.io", "v1"),
)

# Resources kubectl lists under "kubectl get all".
IN_CATEGORY_ALL = frozenset({"pods", "services", "deployments", "replicasets"})


def find(group: str, version: str, plural: str) -> Resource | None:
    """Find the resource served at ``group/version/plural``.

    Args:
        group: API group ("" for core).
        version: API version.
        plural: the resource's plural name.

    Returns:
        The resource, or None when not served.
    """
    for res in ALL:
        if res.group == group and res.version == version and res.plural == plural:
            return res
    return None


def by_group_version(group: str, version: str) -> list[Resource]:
    """Every resource served under one group/version.

    Args:
        group: API group ("" for core).
        version: API version.

    Returns:
        The resources, possibly empty.
    """
    return [r for r in ALL if r.group == group and r.version == version]
