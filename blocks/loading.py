"""Load a block by name at a flow's entry, turning "not registered" into BlockNotFoundError."""

from __future__ import annotations

from typing import TypeVar

from prefect.blocks.core import Block

from errors import BlockNotFoundError

B = TypeVar("B", bound=Block)


def load_block(block_type: type[B], name: str, *, field: str) -> B:
    """Load a saved block of ``block_type``.

    Args:
        block_type: the Block class.
        name: the block document name (a flow parameter).
        field: the parameter that named it, for the error message.

    Returns:
        The loaded block.

    Raises:
        BlockNotFoundError: when no such block is registered.
    """
    try:
        loaded = block_type.load(name, validate=True)
    except ValueError as exc:
        if "Unable to find block document" in str(exc) or "Unable to find" in str(exc):
            raise BlockNotFoundError(field, block_type.__name__, name) from None
        raise
    if not isinstance(loaded, block_type):  # pragma: no cover - prefect returns the class asked
        raise BlockNotFoundError(field, block_type.__name__, name)
    return loaded
