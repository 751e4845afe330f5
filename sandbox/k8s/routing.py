"""URL routing: turn an API path into (resource, namespace, name, subresource)."""

from __future__ import annotations

from dataclasses import dataclass

from sandbox.k8s import resources as r
from sandbox.k8s.errors import ApiError


@dataclass(frozen=True)
class Route:
    """Where a resource request points."""

    res: r.Resource
    namespace: str | None
    name: str | None
    subresource: str | None


def _not_found(path: str) -> ApiError:
    return ApiError(404, "NotFound", f"the server could not find the requested resource "
                    f"({path})")


def split_group_version(parts: list[str]) -> tuple[str, str, list[str]] | None:
    """Split ``api/v1/...`` or ``apis/{group}/{version}/...`` path segments.

    Args:
        parts: the path split on ``/`` without empty segments.

    Returns:
        (group, version, remaining segments), or None for a non-resource path.
    """
    if len(parts) >= 2 and parts[0] == "api":
        return "", parts[1], parts[2:]
    if len(parts) >= 3 and parts[0] == "apis":
        return parts[1], parts[2], parts[3:]
    return None


def route(registry: r.Registry, path: str, group: str, version: str, rest: list[str]) -> Route:
    """Resolve the segments after the group-version into a :class:`Route`.

    Args:
        registry: what the store serves.
        path: the full path (for error messages).
        group: the API group.
        version: the API version.
        rest: the remaining segments (at least one).

    Returns:
        The route.

    Raises:
        ApiError: 404 when nothing is served there.
    """
    res = registry.find(group, version, rest[2]) if rest[0] == "namespaces" and len(rest) >= 3 \
        else None
    if res is not None:
        if not res.namespaced or len(rest) > 5:
            raise _not_found(path)
        name = rest[3] if len(rest) > 3 else None
        sub = rest[4] if len(rest) > 4 else None
        if sub is not None and sub not in res.subresources:
            raise _not_found(path)
        return Route(res, rest[1], name, sub)
    res = registry.find(group, version, rest[0])
    if res is None or len(rest) > 3:
        raise _not_found(path)
    if res.namespaced:
        if len(rest) > 1:
            raise _not_found(path)
        return Route(res, None, None, None)
    name = rest[1] if len(rest) > 1 else None
    sub = rest[2] if len(rest) > 2 else None
    if sub is not None and sub not in (*res.subresources, "finalize"):
        raise _not_found(path)
    return Route(res, None, name, "status" if sub == "finalize" else sub)
