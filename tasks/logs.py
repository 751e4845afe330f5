"""The logger of every task module: Prefect's run logger inside a run, else the stdlib one.

Lines logged through Prefect's run logger are sent to the Prefect API and shown with the run
in the UI; a stdlib logger's lines only reach the worker's console. Outside a run (plain
functions in tests, the ``veza-ops`` command) there is no run logger, so the module's own
stdlib logger is used instead.
"""

from __future__ import annotations

import logging
from typing import Any

from prefect.exceptions import MissingContextError
from prefect.logging import get_run_logger

AnyLogger = logging.Logger | logging.LoggerAdapter[logging.Logger]


def get_logger(name: str = __name__) -> AnyLogger:
    """The Prefect run logger inside a flow or task run, else the stdlib logger ``name``.

    Decided at each call: a module-level logger would be created before any run exists.
    Threads started by a task (upload workers) carry no run context and get the stdlib
    logger.

    Args:
        name: logger name used outside a run (the calling module's ``__name__``).

    Returns:
        A logger.
    """
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(name)


class ModuleLogger:
    """A module-level ``logger`` that logs through :func:`get_logger` at each call.

    ``logger = ModuleLogger(__name__)`` replaces ``logging.getLogger(__name__)`` in a module
    whose functions run both inside runs (lines reach the UI) and outside them.
    """

    def __init__(self, name: str) -> None:
        """Remember the module's name (the stdlib logger used outside a run).

        Args:
            name: the module's ``__name__``.
        """
        self.name = name

    def _log(self, level: int, msg: str, args: tuple[Any, ...], **kwargs: Any) -> None:
        # stacklevel 3: the record names the caller of info()/warning(), not this module
        get_logger(self.name).log(level, msg, *args, stacklevel=3, **kwargs)

    def debug(self, msg: str, *args: Any, **kwargs: Any) -> None:
        """Log at DEBUG (arguments as :meth:`logging.Logger.debug`)."""
        self._log(logging.DEBUG, msg, args, **kwargs)

    def info(self, msg: str, *args: Any, **kwargs: Any) -> None:
        """Log at INFO (arguments as :meth:`logging.Logger.info`)."""
        self._log(logging.INFO, msg, args, **kwargs)

    def warning(self, msg: str, *args: Any, **kwargs: Any) -> None:
        """Log at WARNING (arguments as :meth:`logging.Logger.warning`)."""
        self._log(logging.WARNING, msg, args, **kwargs)

    def error(self, msg: str, *args: Any, **kwargs: Any) -> None:
        """Log at ERROR (arguments as :meth:`logging.Logger.error`)."""
        self._log(logging.ERROR, msg, args, **kwargs)

    def exception(self, msg: str, *args: Any, **kwargs: Any) -> None:
        """Log at ERROR with the current exception's traceback (call it in ``except``)."""
        kwargs.setdefault("exc_info", True)
        self._log(logging.ERROR, msg, args, **kwargs)
