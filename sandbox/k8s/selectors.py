"""Label selectors (equality and set-based) and field selectors, parsed and matched."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from sandbox.k8s.errors import BadRequest

Matcher = Callable[[dict[str, Any]], bool]

_SET_RE = re.compile(r"^\s*(!?)\s*([A-Za-z0-9_./-]+)\s*(?:(notin|in)\s*\(([^)]*)\))?\s*$")
_EQ_RE = re.compile(r"^\s*([A-Za-z0-9_./-]+)\s*(==|=|!=)\s*([A-Za-z0-9_.-]*)\s*$")


def _split_terms(text: str) -> list[str]:
    """Split on commas that are not inside parentheses."""
    terms: list[str] = []
    depth = 0
    current = ""
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            terms.append(current)
            current = ""
        else:
            current += char
    if current.strip():
        terms.append(current)
    return [t for t in terms if t.strip()]


def _label_term(term: str) -> Callable[[dict[str, str]], bool]:
    eq = _EQ_RE.match(term)
    if eq:
        key, op, value = eq.groups()
        if op == "!=":
            return lambda labels: labels.get(key) != value
        return lambda labels: labels.get(key) == value
    match = _SET_RE.match(term)
    if not match:
        raise BadRequest(f"unable to parse requirement: invalid label selector term {term!r}")
    negate, key, op, values_text = match.groups()
    if op is None:
        if negate:
            return lambda labels: key not in labels
        return lambda labels: key in labels
    if negate:
        raise BadRequest(f"unable to parse requirement: unexpected '!' in {term!r}")
    values = {v.strip() for v in values_text.split(",") if v.strip()}
    if op == "in":
        return lambda labels: labels.get(key) in values
    return lambda labels: labels.get(key) not in values


def parse_label_selector(text: str | None) -> Callable[[dict[str, str]], bool]:
    """Parse a label selector string (``a=b,c!=d,e in (x,y),f notin (z),g,!h``).

    Args:
        text: the selector; None or empty matches everything.

    Returns:
        A predicate on a labels dict.

    Raises:
        BadRequest: when the selector cannot be parsed.
    """
    if not text or not text.strip():
        return lambda labels: True
    terms = [_label_term(t) for t in _split_terms(text)]
    return lambda labels: all(term(labels) for term in terms)


def _field_value(obj: dict[str, Any], path: str) -> str | None:
    node: Any = obj
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    if node is None:
        return None
    if isinstance(node, bool):
        return "true" if node else "false"
    return str(node)


def parse_field_selector(text: str | None) -> Matcher:
    """Parse a field selector (``metadata.name=x,metadata.namespace!=y,status.phase=Running``).

    Any dotted field path is accepted; a missing field compares as the empty string.

    Args:
        text: the selector; None or empty matches everything.

    Returns:
        A predicate on an object.

    Raises:
        BadRequest: when a term has no ``=``, ``==`` or ``!=``.
    """
    if not text or not text.strip():
        return lambda obj: True
    checks: list[tuple[str, bool, str]] = []
    for term in _split_terms(text):
        match = re.match(r"^\s*([A-Za-z0-9_.]+)\s*(==|=|!=)\s*(.*?)\s*$", term)
        if not match:
            raise BadRequest(f"invalid field selector term {term!r}: expected field=value")
        path, op, value = match.groups()
        checks.append((path, op != "!=", value))

    def matches(obj: dict[str, Any]) -> bool:
        for path, equal, value in checks:
            actual = _field_value(obj, path) or ""
            if (actual == value) != equal:
                return False
        return True

    return matches


def selector_from_dict(selector: dict[str, Any] | None) -> Callable[[dict[str, str]], bool]:
    """Build a predicate from a ``LabelSelector`` object (matchLabels + matchExpressions).

    Args:
        selector: the selector object; None or empty matches nothing, like the real API.

    Returns:
        A predicate on a labels dict.
    """
    if not selector:
        return lambda labels: False
    match_labels: dict[str, str] = dict(selector.get("matchLabels") or {})
    exprs: list[dict[str, Any]] = list(selector.get("matchExpressions") or [])

    def matches(labels: dict[str, str]) -> bool:
        if any(labels.get(k) != v for k, v in match_labels.items()):
            return False
        for expr in exprs:
            key = str(expr.get("key") or "")
            op, values = expr.get("operator"), expr.get("values") or []
            if op == "In" and labels.get(key) not in values:
                return False
            if op == "NotIn" and labels.get(key) in values:
                return False
            if op == "Exists" and key not in labels:
                return False
            if op == "DoesNotExist" and key in labels:
                return False
        return True

    return matches


def selector_to_string(selector: dict[str, Any] | None) -> str:
    """Render a ``LabelSelector`` object as a selector string (for Scale status and tables).

    Args:
        selector: the selector object.

    Returns:
        e.g. ``app=web,color in (blue)``.
    """
    if not selector:
        return ""
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        op = expr.get("operator")
        values = ",".join(expr.get("values") or [])
        if op == "In":
            parts.append(f"{expr['key']} in ({values})")
        elif op == "NotIn":
            parts.append(f"{expr['key']} notin ({values})")
        elif op == "Exists":
            parts.append(str(expr["key"]))
        elif op == "DoesNotExist":
            parts.append(f"!{expr['key']}")
    return ",".join(parts)
