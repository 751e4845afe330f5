"""Fault injection rules for tests: per verb and resource, errors, latency, hangs, lost answers."""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass
from typing import Any

from sandbox.k8s.errors import ApiError, BadRequest

VERBS = frozenset({"get", "list", "watch", "create", "update", "patch", "delete", "*"})


@dataclass(frozen=True)
class Decision:
    """What to do to one request: wait, then fail before or after carrying it out."""

    latency_s: float = 0.0
    error: ApiError | None = None
    after_apply: bool = False


@dataclass(frozen=True)
class Fault:
    """One rule: requests matching ``verb``/``resource`` fail or slow down.

    With ``after_apply`` the request is carried out and then answered with the error (a
    lost response: the client cannot tell it was applied). The first ``skip`` matching
    requests pass untouched; then only ``times`` of them fail (0: every one).

    ``hang_ms`` holds each request the rule takes (past ``skip``, within ``times``) that long
    before anything else: longer than the client's timeout it is a timeout. A hung request
    that the rule also fails (``error_rate``) is never carried out (unless ``after_apply``);
    one it does not fail is carried out once the hang ends, the client long gone. Unlike
    ``latency_ms`` (every matching request), a hang counts in ``hits`` and ``times``.
    """

    verb: str
    resource: str
    error_rate: float
    latency_ms: int
    status: int = 500
    after_apply: bool = False
    times: int = 0
    skip: int = 0
    hang_ms: int = 0

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
        after_apply = body.get("after_apply", False)
        if not isinstance(after_apply, bool):
            raise BadRequest("fault.after_apply: must be true or false")
        times = body.get("times", 0)
        if not isinstance(times, int) or isinstance(times, bool) or times < 0:
            raise BadRequest("fault.times: must be a non-negative integer (0: every request)")
        skip = body.get("skip", 0)
        if not isinstance(skip, int) or isinstance(skip, bool) or skip < 0:
            raise BadRequest("fault.skip: must be a non-negative integer")
        hang = body.get("hang_ms", 0)
        if not isinstance(hang, int) or isinstance(hang, bool) or hang < 0:
            raise BadRequest("fault.hang_ms: must be a non-negative integer (milliseconds)")
        return cls(verb, str(body.get("resource", "*")), float(rate), latency, int(status),
                   after_apply, times, skip, hang)

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
        self._hits: list[int] = []
        self._seen: list[int] = []

    def add(self, fault: Fault) -> None:
        """Activate a rule.

        Args:
            fault: the rule.
        """
        with self._lock:
            self._rules.append(fault)
            self._hits.append(0)
            self._seen.append(0)

    def clear(self) -> None:
        """Remove every rule."""
        with self._lock:
            self._rules.clear()
            self._hits.clear()
            self._seen.clear()

    def rules(self) -> list[dict[str, Any]]:
        """The active rules as JSON, each with ``hits`` (requests it failed or hung so far).

        Returns:
            One dict per rule.
        """
        with self._lock:
            return [{**vars(f), "hits": n} for f, n in zip(self._rules, self._hits, strict=True)]

    def decide(self, verb: str, resource: str) -> Decision:
        """Decide the injected latency and error for one request.

        Args:
            verb: the request's verb.
            resource: the resource plural.

        Returns:
            The decision.
        """
        with self._lock:
            matching = [(i, f) for i, f in enumerate(self._rules) if f.applies(verb, resource)]
            latency = sum(f.latency_ms for _, f in matching) / 1000.0
            for i, fault in matching:
                self._seen[i] += 1
                if self._seen[i] <= fault.skip or (fault.times and self._hits[i] >= fault.times):
                    continue
                fails = fault.error_rate > 0 and random.random() < fault.error_rate
                if not (fails or fault.hang_ms):
                    continue
                self._hits[i] += 1
                latency += fault.hang_ms / 1000.0
                if fails:
                    error = ApiError(fault.status, _REASONS[fault.status],
                                     f"sandbox fault injected on {verb} {resource}")
                    return Decision(latency, error, fault.after_apply)
        return Decision(latency)

    def check(self, verb: str, resource: str) -> tuple[float, ApiError | None]:
        """Decide the injected latency and error for one request (see :meth:`decide`).

        Args:
            verb: the request's verb.
            resource: the resource plural.

        Returns:
            (seconds of latency to add, the error to answer or None).
        """
        decision = self.decide(verb, resource)
        return decision.latency_s, decision.error
