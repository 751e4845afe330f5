"""Redaction: secret values known to a run never reach its logs, record, artifacts or Slack."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping

MIN_LENGTH = 4
MASK = "[redacted]"
KEPT_RUNS = 32


class Redactor:
    """Values to hide, each replaced by ``[redacted NAME]`` (or ``[redacted]``) in any text."""

    def __init__(self, values: Mapping[str, str] | None = None) -> None:
        self._values: dict[str, str] = {}
        self._lock = threading.Lock()
        self.add(values or {})

    def add(self, values: Mapping[str, str], *, named: bool = True) -> None:
        """Remember values to hide.

        Values shorter than ``MIN_LENGTH`` characters are not hidden: they would blank out
        ordinary words and digits of every line, and a value that short protects nothing.

        Args:
            values: name to value (an environment variable's name, a Vault key...).
            named: name the value in the mask (names are not secret; values are).
        """
        with self._lock:
            for name, value in values.items():
                for part in {value, *value.splitlines()}:
                    if len(part.strip()) >= MIN_LENGTH:
                        self._values[part] = f"[redacted {name}]" if named else MASK

    def __call__(self, text: str) -> str:
        """Hide every known value in a text, longest first (a value inside another one).

        Args:
            text: any text (a command's output, an error message, a report).

        Returns:
            The text with each value replaced by its mask.
        """
        with self._lock:
            known = sorted(self._values.items(), key=lambda item: -len(item[0]))
        for value, mask in known:
            if value in text:
                text = text.replace(value, mask)
        return text


_RUNS: OrderedDict[str, Redactor] = OrderedDict()
_RUNS_LOCK = threading.Lock()


def _run_id() -> str:
    try:
        from prefect.runtime import flow_run

        return str(flow_run.id or "local")
    except Exception:  # outside Prefect: one process-wide set
        return "local"


def for_run() -> Redactor:
    """The redactor of the current flow run (its tasks share it; one per run, in memory).

    Returns:
        The redactor.
    """
    key = _run_id()
    with _RUNS_LOCK:
        redactor = _RUNS.get(key)
        if redactor is None:
            redactor = _RUNS[key] = Redactor()
            while len(_RUNS) > KEPT_RUNS:
                _RUNS.popitem(last=False)
        return redactor


def remember(values: Mapping[str, str], *, named: bool = True) -> None:
    """Remember secret values known to the current run (passthrough variables, Vault data).

    Args:
        values: name to value.
        named: name the value in the mask.
    """
    for_run().add(values, named=named)


def redact(text: str, extra: Mapping[str, str] | None = None) -> str:
    """Hide the current run's secret values (and ``extra`` ones) in a text.

    The one helper every text leaving the run goes through: build and E2E output, failure
    reasons and warnings, the report artifact (and so the record and Slack).

    Args:
        text: the text.
        extra: more name-to-value pairs to hide (e.g. a command's own passthrough variables).

    Returns:
        The redacted text.
    """
    text = for_run()(text)
    return Redactor(extra)(text) if extra else text
