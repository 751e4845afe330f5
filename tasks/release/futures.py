"""Waiting on tasks submitted together: every one settles before the first failure is raised."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from prefect.futures import PrefectFuture

T = TypeVar("T")


def settle(futures: Sequence[PrefectFuture[T]]) -> list[T | BaseException]:
    """Wait for every future and return its result, or the exception its task raised.

    A signal that ends the run (Prefect's ``TerminationSignal`` on a cancel,
    ``KeyboardInterrupt``, ``SystemExit``: anything not an ``Exception``) is never kept as an
    outcome: it is raised at once, without waiting for the other futures.

    Args:
        futures: futures of submitted tasks.

    Returns:
        One result or exception per future, in order.

    Raises:
        BaseException: a termination signal, at once.
    """
    outcomes: list[T | BaseException] = []
    for future in futures:
        try:
            outcomes.append(future.result())
        except Exception as exc:  # a task's failure; signals go through
            outcomes.append(exc)
    return outcomes


def results(futures: Sequence[PrefectFuture[T]]) -> list[T]:
    """Wait for every future; raise the first failure once all have settled.

    Args:
        futures: futures of submitted tasks.

    Returns:
        Their results, in order.

    Raises:
        BaseException: the first exception raised by one of the tasks.
    """
    outcomes = settle(futures)
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
    return outcomes  # type: ignore[return-value]
