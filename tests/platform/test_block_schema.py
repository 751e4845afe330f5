"""The blocks' JSON schema is generated once per class (blocks/schema_cache.py)."""

from __future__ import annotations

from typing import Any
from uuid import uuid4

import pytest
from prefect.blocks.core import Block
from pydantic import BaseModel


def test_serializing_a_block_generates_its_schema_once_and_hands_out_copies(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect_aws import AwsCredentials
    from pydantic import SecretStr

    import blocks.schema_cache
    from blocks.s3 import S3BackupStore

    generated: list[type] = []
    pydantic_schema = BaseModel.model_json_schema.__func__  # type: ignore[attr-defined]

    def counting(cls: type, *args: Any, **kwargs: Any) -> dict[str, Any]:
        generated.append(cls)
        schema: dict[str, Any] = pydantic_schema(cls, *args, **kwargs)
        return schema

    monkeypatch.setattr(BaseModel, "model_json_schema", classmethod(counting))
    monkeypatch.setattr(blocks.schema_cache, "_SCHEMAS", {})
    store = S3BackupStore(bucket="veza-backups", credentials=AwsCredentials(
        aws_access_key_id="AKIAEXAMPLE", aws_secret_access_key=SecretStr("s3-secret")))

    def save() -> tuple[int, int]:
        """What save() sends: Prefect 3.9 asks for the schema once per field, of the nested
        credentials block too (with the secrets included, as save() does)."""
        store._to_block_document(name="nightly", block_schema_id=uuid4(), block_type_id=uuid4(),
                                 include_secrets=True)
        return generated.count(S3BackupStore), generated.count(AwsCredentials)

    first = save()
    assert first[0] <= 2 and first[1] <= 2  # once per distinct argument set (by_alias or not)
    assert save() == save() == first
    assert blocks.schema_cache.cache_schema_of(AwsCredentials) is None  # again: no second wrap
    assert save() == first

    edited = S3BackupStore.model_json_schema()
    edited["properties"].clear()
    assert S3BackupStore.model_json_schema()["properties"], "a caller edited the cached schema"
    assert S3BackupStore.model_json_schema() == Block.model_json_schema.__func__(  # type: ignore[attr-defined]
        S3BackupStore), "not Prefect's own schema"
    assert AwsCredentials.model_json_schema() == Block.model_json_schema.__func__(  # type: ignore[attr-defined]
        AwsCredentials), "not Prefect's own schema"
