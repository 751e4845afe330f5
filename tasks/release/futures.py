"""Waiting on tasks submitted together: every one settles before the first failure is raised."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from prefect.futures import PrefectFuture

T = TypeVar("T")


def settle(futures: Sequence[PrefectFuture[T]]) -> list[T | BaseException]:
    """Wait for every future and return its result, or the exception its task raised.

    Args:
        futures: futures of submitted tasks.

    Returns:
        One result or exception per future, in order.
    """
    outcomes: list[T | BaseException] = []
    for future in futures:
        try:
            outcomes.append(future.result())
        except BaseException as exc:
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
