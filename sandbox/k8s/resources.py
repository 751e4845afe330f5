"""The resource types the emulator serves, and the registry that finds one from a URL."""

from __future__ import annotations

import threading
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
    custom: bool = False  # served for a CustomResourceDefinition
    categories: tuple[str, ...] = ()
    columns: tuple[tuple[str, str, str, int], ...] = ()  # printer columns: name, type, path, prio
    crd: str = ""  # the name of the CustomResourceDefinition that registered it

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
SERVICE_ACCOUNTS = Resource("", "v1", "serviceaccounts", "ServiceAccount", True, ("sa",), (),
                            "serviceaccount")
CRDS = Resource("apiextensions.k8s.io", "v1", "customresourcedefinitions",
                "CustomResourceDefinition", False, ("crd", "crds"), ("status",),
                "customresourcedefinition")
_RBAC = "rbac.authorization.k8s.io"
ROLES = Resource(_RBAC, "v1", "roles", "Role", True, (), (), "role")
ROLE_BINDINGS = Resource(_RBAC, "v1", "rolebindings", "RoleBinding", True, (), (), "rolebinding")
CLUSTER_ROLES = Resource(_RBAC, "v1", "clusterroles", "ClusterRole", False, (), (), "clusterrole")
CLUSTER_ROLE_BINDINGS = Resource(_RBAC, "v1", "clusterrolebindings", "ClusterRoleBinding", False,
                                 (), (), "clusterrolebinding")
# One read-mostly node, "sandbox", so that "kubectl get nodes" answers like a cluster.
NODES = Resource("", "v1", "nodes", "Node", False, ("no",), ("status",), "node")

ALL: tuple[Resource, ...] = (
    PODS, SERVICES, ENDPOINTS, SECRETS, CONFIGMAPS, EVENTS, NAMESPACES, NODES, SERVICE_ACCOUNTS,
    DEPLOYMENTS, REPLICASETS, LEASES, CRDS,
    ROLES, ROLE_BINDINGS, CLUSTER_ROLES, CLUSTER_ROLE_BINDINGS,
)
"""The built-in resources (custom resources are added to a store's :class:`Registry`)."""

GROUP_VERSIONS: tuple[tuple[str, str], ...] = (
    ("", "v1"), ("apps", "v1"), ("coordination.k8s.io", "v1"), ("apiextensions.k8s.io", "v1"),
    (_RBAC, "v1"),
)

# Resources kubectl lists under "kubectl get all".
IN_CATEGORY_ALL = frozenset({"pods", "services", "deployments", "replicasets"})


class Registry:
    """The resources one store serves: the built-ins plus those its CRDs registered."""

    def __init__(self, builtin: tuple[Resource, ...] = ALL) -> None:
        self._lock = threading.Lock()
        self._resources: list[Resource] = list(builtin)
        self._group_versions: list[tuple[str, str]] = list(GROUP_VERSIONS)

    def all(self) -> list[Resource]:
        """Every served resource.

        Returns:
            Built-ins first, then custom resources in registration order.
        """
        with self._lock:
            return list(self._resources)

    def group_versions(self) -> list[tuple[str, str]]:
        """Every served ``(group, version)``, core first.

        Returns:
            The group-versions, built-ins first.
        """
        with self._lock:
            return list(self._group_versions)

    def find(self, group: str, version: str, plural: str) -> Resource | None:
        """Find the resource served at ``group/version/plural``.

        Args:
            group: API group ("" for core).
            version: API version.
            plural: the resource's plural name.

        Returns:
            The resource, or None when not served.
        """
        with self._lock:
            for res in self._resources:
                if res.group == group and res.version == version and res.plural == plural:
                    return res
        return None

    def by_group_version(self, group: str, version: str) -> list[Resource]:
        """Every resource served under one group/version.

        Args:
            group: API group ("" for core).
            version: API version.

        Returns:
            The resources, possibly empty.
        """
        with self._lock:
            return [r for r in self._resources if r.group == group and r.version == version]

    def by_plural(self, plural: str) -> list[Resource]:
        """Every resource (any group or version) with this plural name.

        Args:
            plural: the plural name.

        Returns:
            The resources, possibly empty.
        """
        with self._lock:
            return [r for r in self._resources if r.plural == plural]

    def add(self, res: Resource) -> None:
        """Serve one more resource (a CRD version); replaces one at the same URL.

        Args:
            res: the resource.
        """
        with self._lock:
            self._resources = [r for r in self._resources
                               if (r.group, r.version, r.plural) != (res.group, res.version,
                                                                      res.plural)]
            self._resources.append(res)
            if (res.group, res.version) not in self._group_versions:
                self._group_versions.append((res.group, res.version))

    def remove(self, res: Resource) -> None:
        """Stop serving a resource; its group-version goes when nothing else is served there.

        Args:
            res: the resource.
        """
        url = (res.group, res.version, res.plural)
        with self._lock:
            self._resources = [r for r in self._resources if (r.group, r.version, r.plural) != url]
            gv = (res.group, res.version)
            if gv not in GROUP_VERSIONS and not any(
                    (r.group, r.version) == gv for r in self._resources):
                self._group_versions.remove(gv)
