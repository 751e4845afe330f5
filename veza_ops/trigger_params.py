"""`veza-ops trigger`'s parameters: ``--param`` text typed by the schema, the CI commit added."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


class ParamError(ValueError):
    """A ``--param`` that cannot be read; the message is the one-line reason."""


def parse_params(pairs: list[str]) -> dict[str, str]:
    """Split ``key=value`` pairs; the values stay text until the schema types them.

    Args:
        pairs: the ``--param`` arguments.

    Returns:
        Parameter name to its text.

    Raises:
        ParamError: when a pair has no ``=`` or an empty key.
    """
    params: dict[str, str] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ParamError(f"--param {pair!r}: expected key=value (value may be JSON)")
        params[key.strip()] = raw
    return params


def _json_types(prop: dict[str, Any]) -> set[str]:
    """The JSON types a property's schema allows (empty when it says nothing).

    ``anyOf``/``oneOf``/``allOf`` options are included; a ``$ref`` is an object.
    """
    types: set[str] = set()
    declared = prop.get("type")
    types.update([declared] if isinstance(declared, str) else declared or [])
    if "$ref" in prop:
        types.add("object")
    for key in ("anyOf", "oneOf", "allOf"):
        for option in prop.get(key) or []:
            if isinstance(option, dict):
                types |= _json_types(option)
    return types


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    return {float: "number", str: "string", list: "array", dict: "object"}.get(
        type(value), "object")


def typed_params(raw: dict[str, str], schema: dict[str, Any]) -> dict[str, Any]:
    """Type each ``--param`` value by the deployment's schema.

    A value is read as JSON when that gives a type the parameter accepts (``skip_build=true``,
    ``services=["veza-web"]``); otherwise, when the parameter takes a string, it stays the
    text given: ``version=1.10`` is the string ``"1.10"``, not the number 1.1.

    Args:
        raw: parameter name to its text.
        schema: the deployment's ``parameter_openapi_schema`` (may be empty).

    Returns:
        Parameter name to value.
    """
    props = (schema or {}).get("properties") or {}
    params: dict[str, Any] = {}
    for key, text in raw.items():
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            params[key] = text
            continue
        allowed = _json_types(props.get(key) or {})
        kind = _json_type(value)
        fits = not allowed or kind in allowed or (kind == "integer" and "number" in allowed)
        params[key] = value if fits or "string" not in allowed else text
    return params


def ci_commit(environ: Mapping[str, str], *, cwd: str | None = None) -> dict[str, str]:
    """The commit CI builds: ``GITHUB_SHA`` (else git's ``HEAD``) and its commit timestamp.

    Args:
        environ: the environment variables.
        cwd: the checkout (default: the current directory).

    Returns:
        ``commit_sha`` and ``commit_timestamp`` (ISO 8601 with offset), each only when known:
        no git, or not in a checkout that has the commit, leaves it out.
    """
    found: dict[str, str] = {}
    sha = environ.get("GITHUB_SHA", "").strip() or _git(["rev-parse", "HEAD"], cwd)
    if not sha:
        return found
    found["commit_sha"] = sha
    stamp = _git(["show", "-s", "--format=%cI", sha], cwd)
    if stamp:
        found["commit_timestamp"] = stamp
    return found


def _git(argv: list[str], cwd: str | None) -> str:
    import subprocess

    try:
        done = subprocess.run(["git", *argv], cwd=cwd, capture_output=True, text=True,
                              timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def fill_commit(params: dict[str, Any], schema: dict[str, Any],
                commit: Mapping[str, str]) -> dict[str, Any]:
    """Add the CI commit to the parameters the deployment takes and that were not given.

    Args:
        params: the parameters given.
        schema: the deployment's parameter schema.
        commit: from :func:`ci_commit`.

    Returns:
        The parameters, completed.
    """
    props = (schema or {}).get("properties") or {}
    extra = {k: v for k, v in commit.items() if k in props and k not in params}
    return {**params, **extra}
