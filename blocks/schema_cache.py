"""A block class's JSON schema, generated once and handed out as copies.

Prefect 3.9 regenerates a block's pydantic JSON schema on every ``save()``, once per field
(``Block._field_has_secrets`` calls ``model_json_schema()`` for each field it serializes): for
the 12-field :class:`~blocks.s3.S3BackupStore` that is ~15 generations, ~140 ms of CPU per
save, and a quarter of the test workers' CPU went there. A class's schema cannot change once
the class is defined, so every block here mixes in :class:`CachedSchema`.
"""

from __future__ import annotations

import copy
import inspect
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
        bound = _SIGNATURE.bind(*args, **kwargs)  # positional or keyword: one entry
        bound.apply_defaults()
        key = (cls, *bound.arguments.items())
        schema = _SCHEMAS.get(key)
        if schema is None:
            schema = super().model_json_schema(*args, **kwargs)  # type: ignore[misc]
            _SCHEMAS[key] = schema
        return copy.deepcopy(schema)
