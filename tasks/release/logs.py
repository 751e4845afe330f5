"""The logger of the release tasks: Prefect's run logger inside a run, else the stdlib one."""

from __future__ import annotations

import logging


def get_logger(name: str = __name__) -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    """The Prefect run logger inside a run, else the stdlib logger ``name``.

    Args:
        name: logger name used outside a run (the calling module's ``__name__``).

    Returns:
        A logger.
    """
    try:
        from prefect.logging import get_run_logger

        return get_run_logger()
    except Exception:
        return logging.getLogger(name)
