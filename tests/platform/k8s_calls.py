"""The Kubernetes API calls product code makes, derived from its source (for the RBAC test).

Every attribute named like a method of a ``kubernetes.client`` API class that the code
constructs (``CoreV1Api``, ``AppsV1Api``...) is a call. The method's own generated serializer
says its HTTP method and path, which give the RBAC resource and verb exactly as the API server
authorizes them (GET on a name: ``get``, GET on a collection: ``list``, POST: ``create``, PUT:
``update``, PATCH: ``patch``, DELETE: ``delete`` or ``deletecollection``). Custom objects
(Istio) take their group and plural as arguments: those are followed back to the string
constants passed by the calling functions of the same module.
"""

from __future__ import annotations

import ast
import inspect
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from kubernetes import client

Permission = tuple[str, str, str]  # (apiGroup, resource, verb)
SERIALIZE = re.compile(r"method='(?P<method>[A-Z]+)',\s*resource_path='(?P<path>[^']+)'")
CUSTOM = "CustomObjectsApi"


@dataclass(frozen=True)
class Call:
    """One API method named in the code."""

    path: Path
    line: int
    method: str
    api: str


@cache
def _api_names() -> frozenset[str]:
    """Names of the client's API classes (``CoreV1Api``...), none of them imported yet: the
    client loads each on first use, and loading them all cost seconds."""
    return frozenset(name for name in dir(client) if name.endswith("Api"))


def _api_class(name: str) -> type:
    api = getattr(client, name)
    assert isinstance(api, type), name
    return api


def _python_files(roots: list[Path]) -> list[tuple[Path, ast.Module]]:
    return [(path, ast.parse(path.read_text(), str(path)))
            for root in roots for path in sorted(root.rglob("*.py"))]


def _constructed(trees: list[tuple[Path, ast.Module]]) -> set[str]:
    """Names of the client API classes the code refers to (``k8s.CoreV1Api(...)``...)."""
    found: set[str] = set()
    for _, tree in trees:
        for node in ast.walk(tree):
            name = (node.attr if isinstance(node, ast.Attribute)
                    else node.id if isinstance(node, ast.Name) else None)
            if name in _api_names():
                found.add(name)
    return found


def api_calls(roots: list[Path]) -> list[Call]:
    """Every attribute that names a method of an API class the code constructs.

    Raises:
        AssertionError: a method name belongs to several of those classes (ambiguous).
    """
    trees = _python_files(roots)  # parsed once for both passes
    owners: dict[str, list[str]] = {}
    for api in sorted(_constructed(trees)):
        cls = _api_class(api)
        for method, _ in inspect.getmembers(cls, inspect.isfunction):
            if hasattr(cls, f"_{method}_serialize"):  # an API endpoint
                owners.setdefault(method, []).append(api)
    calls: list[Call] = []
    for path, tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in owners:
                found = owners[node.attr]
                assert len(found) == 1, f"{path}:{node.lineno}: {node.attr} is in {found}"
                calls.append(Call(path, node.lineno, node.attr, found[0]))
    return calls


@cache
def http_of(api: str, method: str) -> tuple[str, str]:
    """The HTTP method and path template of one API method, from its generated serializer."""
    source = inspect.getsource(getattr(_api_class(api), f"_{method}_serialize"))
    match = SERIALIZE.search(source)
    assert match, f"no method/resource_path in {api}._{method}_serialize"
    return match["method"], match["path"]


def verb_of(http_method: str, path: str) -> str:
    """The RBAC verb the API server authorizes a request as."""
    named = "{name}" in path
    return {"GET": "get" if named else "list", "POST": "create", "PUT": "update",
            "PATCH": "patch", "DELETE": "delete" if named else "deletecollection"}[http_method]


def resource_of(path: str) -> tuple[str, str]:
    """(apiGroup, resource[/subresource]) of a namespaced path template."""
    parts = path.strip("/").split("/")
    group = "" if parts[0] == "api" else parts[1]
    rest = parts[parts.index("namespaces") + 2:] if "namespaces" in parts else parts[-2:]
    resource = rest[0]
    if len(rest) > 2:  # {name}/status, {name}/scale...
        resource = f"{resource}/{rest[2]}"
    return group, resource


def permissions(roots: list[Path]) -> dict[Permission, list[str]]:
    """Every (apiGroup, resource, verb) the code needs, with where each comes from.

    Derived once per set of folders in a process (two tests of the product's own ask).
    """
    return _permissions(tuple(roots))


@cache
def _permissions(roots: tuple[Path, ...]) -> dict[Permission, list[str]]:
    needed: dict[Permission, list[str]] = {}
    for call in api_calls(list(roots)):
        http, path = http_of(call.api, call.method)
        where = f"{call.path.name}:{call.line} {call.method}"
        if call.api == CUSTOM:
            for group, plural in custom_targets(call):
                needed.setdefault((group, plural, verb_of(http, path)), []).append(where)
        else:
            group, resource = resource_of(path)
            needed.setdefault((group, resource, verb_of(http, path)), []).append(where)
    return needed


# ------------------------------------------------------------------ custom objects (Istio)
def _module(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), str(path))


def _enclosing_functions(tree: ast.Module) -> dict[int, ast.FunctionDef]:
    """For every node id inside a function, its innermost function."""
    owner: dict[int, ast.FunctionDef] = {}
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef):
            for node in ast.walk(fn):
                owner[id(node)] = fn  # inner functions overwrite: walk order is outer first
    return owner


def _constant(tree: ast.Module, name: str) -> object:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"no module constant {name}")


def _values(tree: ast.Module, owner: dict[int, ast.FunctionDef], node: ast.expr,
            fn: ast.FunctionDef | None) -> list[str]:
    """String values an argument can take: a literal, a module constant or a parameter."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    assert isinstance(node, ast.Name), f"line {node.lineno}: cannot follow {ast.dump(node)}"
    params = [a.arg for a in fn.args.args] if fn else []
    if node.id in params:
        return _callers_values(tree, owner, fn.name, params.index(node.id))  # type: ignore[union-attr]
    value = _constant(tree, node.id)
    assert isinstance(value, str), f"{node.id} is not a string constant"
    return [value]


def _callers_values(tree: ast.Module, owner: dict[int, ast.FunctionDef], name: str,
                    index: int) -> list[str]:
    """Values of parameter ``index`` of function ``name`` over its calls (and partials)."""
    found: list[str] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        args: list[ast.expr] | None = None
        if isinstance(node.func, ast.Name) and node.func.id == name:
            args = node.args
        elif isinstance(node.func, ast.Name) and node.func.id == "partial" and node.args \
                and isinstance(node.args[0], ast.Name) and node.args[0].id == name:
            args = node.args[1:]
        if args is not None and len(args) > index:
            found += _values(tree, owner, args[index], owner.get(id(node)))
    assert found, f"no call of {name} passes its argument {index}"
    return found


def custom_targets(call: Call) -> list[tuple[str, str]]:
    """(group, plural) pairs a ``*_namespaced_custom_object`` call reaches."""
    tree = _module(call.path)
    owner = _enclosing_functions(tree)
    pairs: set[tuple[str, str]] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and node.func.attr == call.method and node.lineno == call.line:
            args = list(node.args)
            if args and isinstance(args[0], ast.Starred):  # *ISTIO: (group, version)
                assert isinstance(args[0].value, ast.Name)
                group_version = _constant(tree, args[0].value.id)
                assert isinstance(group_version, tuple)
                groups, plural_arg = [str(group_version[0])], args[2]
            else:
                groups = _values(tree, owner, args[0], owner.get(id(node)))
                plural_arg = args[3]
            for plural in _values(tree, owner, plural_arg, owner.get(id(node))):
                pairs.update((g, plural) for g in groups)
    assert pairs, f"{call.path.name}:{call.line}: no group/plural found"
    return sorted(pairs)
