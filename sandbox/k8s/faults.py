"""Fault injection rules for tests: per-verb, per-resource error rate and added latency."""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass
from typing import Any

from sandbox.k8s.errors import ApiError, BadRequest

VERBS = frozenset({"get", "list", "watch", "create", "update", "patch", "delete", "*"})


@dataclass(frozen=True)
class Fault:
    """One rule: requests matching ``verb``/``resource`` fail or slow down."""

    verb: str
    resource: str
    error_rate: float
    latency_ms: int
    status: int = 500

    @classmethod
    def from_json(cls, body: Any) -> Fault:
        """Parse and check a rule posted to ``/sandbox/faults``.

        Args:
            body: the decoded JSON body.

        Returns:
            The rule.

        Raises:
            BadRequest: naming the bad field and what to send instead.
        """
        if not isinstance(body, dict):
            raise BadRequest("fault: body must be a JSON object with verb, resource, "
                             "error_rate and latency_ms")
        verb = str(body.get("verb", "*"))
        if verb not in VERBS:
            raise BadRequest(f"fault.verb: {verb!r} is not one of {sorted(VERBS)}")
        rate = body.get("error_rate", 0.0)
        if not isinstance(rate, int | float) or not 0.0 <= float(rate) <= 1.0:
            raise BadRequest("fault.error_rate: must be a number between 0.0 and 1.0")
        latency = body.get("latency_ms", 0)
        if not isinstance(latency, int) or latency < 0:
            raise BadRequest("fault.latency_ms: must be a non-negative integer")
        status = body.get("status", 500)
        if status not in (429, 500, 502, 503, 504):
            raise BadRequest("fault.status: must be one of 429, 500, 502, 503, 504")
        return cls(verb, str(body.get("resource", "*")), float(rate), latency, int(status))

    def applies(self, verb: str, resource: str) -> bool:
        """Whether this rule matches a request.

        Args:
            verb: the request's verb.
            resource: the resource plural.

        Returns:
            True when both match (``*`` matches anything).
        """
        return self.verb in ("*", verb) and self.resource in ("*", resource)


_REASONS = {429: "TooManyRequests", 500: "InternalError", 502: "InternalError",
            503: "ServiceUnavailable", 504: "Timeout"}


class Faults:
    """The active rules, shared by every request thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[Fault] = []

    def add(self, fault: Fault) -> None:
        """Activate a rule.

        Args:
            fault: the rule.
        """
        with self._lock:
            self._rules.append(fault)

    def clear(self) -> None:
        """Remove every rule."""
        with self._lock:
            self._rules.clear()

    def rules(self) -> list[dict[str, Any]]:
        """The active rules as JSON.

        Returns:
            One dict per rule.
        """
        with self._lock:
            return [vars(f).copy() for f in self._rules]

    def check(self, verb: str, resource: str) -> tuple[float, ApiError | None]:
        """Decide the injected latency and error for one request.

        Args:
            verb: the request's verb.
            resource: the resource plural.

        Returns:
            (seconds of latency to add, the error to answer or None).
        """
        with self._lock:
            matching = [f for f in self._rules if f.applies(verb, resource)]
        latency = sum(f.latency_ms for f in matching) / 1000.0
        for fault in matching:
            if fault.error_rate > 0 and random.random() < fault.error_rate:
                return latency, ApiError(fault.status, _REASONS[fault.status],
                                         f"sandbox fault injected on {verb} {resource}")
        return latency, None
