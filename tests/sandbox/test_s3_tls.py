"""The TLS front (nginx) for moto: boto3 over HTTPS, verified against the generated CA."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from typing import Any

import boto3
import botocore.exceptions
import pytest
from botocore.config import Config

from sandbox.launchers.s3 import S3Server
from sandbox.launchers.s3_faults import S3FaultProxy
from sandbox.launchers.s3_tls import S3TlsFront, nginx_path, start_s3_tls
from sandbox.procs import pid_alive

MIB = 1024 * 1024

pytestmark = pytest.mark.skipif(
    nginx_path() is None, reason="nginx is not installed (apt-get install nginx-light)")


@pytest.fixture()
def tls_front(s3_server: S3Server) -> Iterator[S3TlsFront]:
    front = start_s3_tls(s3_server.endpoint_url)
    yield front
    front.stop()
    assert not pid_alive(front.pid)
    assert not front.root.exists()


def tls_client(server: S3Server, front: S3TlsFront) -> Any:
    return boto3.client(
        "s3", endpoint_url=front.url, verify=str(front.ca_file),
        aws_access_key_id=server.access_key, aws_secret_access_key=server.secret_key,
        region_name=server.region,
        config=Config(retries={"total_max_attempts": 1, "mode": "standard"}),
    )


def test_multipart_upload_and_get_over_tls(s3_server: S3Server, s3_client: Any, s3_bucket: str,
                                           tls_front: S3TlsFront) -> None:
    assert tls_front.url.startswith("https://127.0.0.1:")
    s3 = tls_client(s3_server, tls_front)
    parts = [os.urandom(5 * MIB), os.urandom(5 * MIB), os.urandom(MIB // 2)]
    upload_id = s3.create_multipart_upload(Bucket=s3_bucket, Key="tls/obj")["UploadId"]
    done = [
        {"PartNumber": n, "ETag": s3.upload_part(Bucket=s3_bucket, Key="tls/obj", PartNumber=n,
                                                 UploadId=upload_id, Body=body)["ETag"]}
        for n, body in enumerate(parts, start=1)
    ]
    s3.complete_multipart_upload(Bucket=s3_bucket, Key="tls/obj", UploadId=upload_id,
                                 MultipartUpload={"Parts": done})
    expected = hashlib.sha256(b"".join(parts)).hexdigest()
    received = hashlib.sha256()
    for chunk in s3.get_object(Bucket=s3_bucket, Key="tls/obj")["Body"].iter_chunks(MIB):
        received.update(chunk)
    assert received.hexdigest() == expected
    # the object went through nginx to the very moto the plain client sees
    plain = s3_client.get_object(Bucket=s3_bucket, Key="tls/obj")["Body"].read()
    assert hashlib.sha256(plain).hexdigest() == expected
    assert "POST /" in (tls_front.root / "access.log").read_text()


def test_an_unknown_ca_is_refused(s3_server: S3Server, s3_bucket: str,
                                  tls_front: S3TlsFront) -> None:
    s3 = boto3.client(
        "s3", endpoint_url=tls_front.url, aws_access_key_id=s3_server.access_key,
        aws_secret_access_key=s3_server.secret_key, region_name=s3_server.region,
        config=Config(retries={"total_max_attempts": 1}),
    )
    with pytest.raises(botocore.exceptions.SSLError):
        s3.head_bucket(Bucket=s3_bucket)


def test_tls_front_before_the_fault_proxy(s3_server: S3Server, s3_bucket: str) -> None:
    with S3FaultProxy(s3_server.endpoint_url) as proxy:
        front = start_s3_tls(proxy.url)
        try:
            s3 = tls_client(s3_server, front)
            proxy.add_fault(operation="PutObject", error_rate=1.0, count=1)
            with pytest.raises(botocore.exceptions.ClientError) as failed:
                s3.put_object(Bucket=s3_bucket, Key="via-proxy", Body=b"payload")
            assert failed.value.response["Error"]["Code"] == "InternalError"
            s3.put_object(Bucket=s3_bucket, Key="via-proxy", Body=b"payload")
            got = s3.get_object(Bucket=s3_bucket, Key="via-proxy")["Body"].read()
            assert got == b"payload"
            assert proxy.counters("PutObject")["requests"] == 2
        finally:
            front.stop()
