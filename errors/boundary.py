"""The shape every translator shares: clip a library's text, translate what a block raises."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

from errors import ExternalSystemError

MAX_DETAIL = 160


def clip(text: str, limit: int = MAX_DETAIL) -> str:
    """Fold white space and cut a library's message to ``limit`` characters.

    Args:
        text: the message (a server's error list, a status reason...).
        limit: the longest result, ellipsis included.

    Returns:
        One line of at most ``limit`` characters.
    """
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def translating(catch: tuple[type[BaseException], ...],
                translate: Callable[[BaseException], ExternalSystemError],
                ) -> AbstractContextManager[None]:
    """A context manager (usable as a decorator) raising ``translate(exc)`` for ``catch``.

    The translated error is raised ``from None``: the original may carry request data
    (URLs with credentials, payloads), so it is neither chained nor shown.

    Args:
        catch: the library's exception types to translate; anything else passes through.
        translate: builds the veza-ops error from the library's exception.

    Returns:
        The context manager.
    """

    @contextmanager
    def boundary() -> Iterator[None]:
        try:
            yield
        except catch as exc:
            raise translate(exc) from None

    return boundary()
