"""S3 clients share botocore's loaded data (blocks/s3_client.py), not their credentials."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.loaders import JSONFileLoader
from prefect_aws import AwsCredentials
from pydantic import SecretStr


def test_clients_of_different_blocks_load_the_s3_model_once_and_keep_their_own_keys(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from blocks.s3 import S3BackupStore

    loaded: list[str] = []
    load_file = JSONFileLoader.load_file

    def counting(self: JSONFileLoader, file_path: str) -> Any:
        loaded.append(file_path)
        return load_file(self, file_path)

    stores = [S3BackupStore(bucket=f"veza-{n}", endpoint_url="http://127.0.0.1:9",
                            credentials=AwsCredentials(aws_access_key_id=f"AKIA{n}",
                                                       aws_secret_access_key=SecretStr("s"),
                                                       region_name="us-east-1"))
              for n in range(3)]
    stores[0].get_client()  # the first client of the process may load the files
    monkeypatch.setattr(JSONFileLoader, "load_file", counting)
    clients = [store.get_client() for store in stores]

    assert not [p for p in loaded if "/s3/" in p or "endpoints" in p], loaded
    keys = [c._request_signer._credentials.get_frozen_credentials().access_key for c in clients]
    assert keys == ["AKIA0", "AKIA1", "AKIA2"]
