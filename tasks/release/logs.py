"""The logger of the release tasks: the shared helper of :mod:`tasks.logs` (kept importable)."""

from __future__ import annotations

from tasks.logs import get_logger as get_logger  # noqa: PLC0414 (re-exported for its callers)

__all__ = ["get_logger"]
