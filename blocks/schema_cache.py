"""A block class's JSON schema, generated once and handed out as copies.

Prefect 3.9 regenerates a block's pydantic JSON schema on every ``save()``, once per field
(``Block._field_has_secrets`` calls ``model_json_schema()`` for each field it serializes): for
the 12-field :class:`~blocks.s3.S3BackupStore` that is ~15 generations, ~140 ms of CPU per
save, and a quarter of the test workers' CPU went there. A class's schema cannot change once
the class is defined, so every block here mixes in :class:`CachedSchema`.

A nested block is serialized the same way: an ``S3BackupStore`` or ``PgBackRestRepository``
save asked prefect-aws's ``AwsCredentials`` (not ours to subclass: a subclass is another block
schema) for its schema 26 times: a save with its secrets took 160 ms of CPU, 25 ms with the
memo (measured). :func:`cache_schema_of` gives such a class the same memo; the modules that
nest it call it (importing prefect-aws here would load its ECS worker into every release
process: half a second).
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable
from typing import Any

from prefect.blocks.core import Block

_SIGNATURE = inspect.signature(Block.model_json_schema)
_SCHEMAS: dict[tuple[Any, ...], dict[str, Any]] = {}


class CachedSchema:
    """Mixin, listed before ``Block``: ``model_json_schema`` computed once per class.

    Each call returns a deep copy: the schema goes into a ``BlockSchema`` sent to the server,
    and a caller that edited it must not change what the next caller gets.
    """

    @classmethod
    def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Block.model_json_schema, memoized by class and arguments (see the module)."""
        return _memoized(cls, super().model_json_schema, args, kwargs)  # type: ignore[misc]


def _memoized(cls: type, generate: Callable[..., dict[str, Any]], args: tuple[Any, ...],
              kwargs: dict[str, Any]) -> dict[str, Any]:
    bound = _SIGNATURE.bind(*args, **kwargs)  # positional or keyword: one entry
    bound.apply_defaults()
    key = (cls, *bound.arguments.items())
    schema = _SCHEMAS.get(key)
    if schema is None:
        schema = generate(*args, **kwargs)
        _SCHEMAS[key] = schema
    return copy.deepcopy(schema)


def cache_schema_of(block_class: type[Block]) -> None:
    """Give a block class defined elsewhere the memo of :class:`CachedSchema` (idempotent).

    Args:
        block_class: a class nested in our blocks whose module we do not own; its subclasses
            are memoized under their own class.
    """
    if getattr(block_class, "_veza_schema_cached", False):
        return
    generate = block_class.model_json_schema.__func__  # type: ignore[attr-defined]

    def model_json_schema(cls: type, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return _memoized(cls, lambda *a, **k: generate(cls, *a, **k), args, kwargs)

    block_class.model_json_schema = classmethod(model_json_schema)  # type: ignore[method-assign, assignment]
    block_class._veza_schema_cached = True  # type: ignore[attr-defined]

