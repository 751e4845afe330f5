"""The fault-injecting S3 proxy in front of a real moto_server, driven with boto3."""

from __future__ import annotations

import hashlib
import os
import sys
import tracemalloc
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions
import httpx
import pytest
from botocore.config import Config

from sandbox.launchers.s3 import S3Server
from sandbox.launchers.s3_faults import CONTROL_PATH, S3FaultProxy, classify
from sandbox.procs import free_port, spawn, stop_pid, wait_until

MIB = 1024 * 1024


@pytest.fixture()
def proxy(s3_server: S3Server) -> Iterator[S3FaultProxy]:
    with S3FaultProxy(s3_server.endpoint_url) as running:
        yield running


def client_for(server: S3Server, endpoint: str, **config: Any) -> Any:
    return boto3.client(
        "s3", endpoint_url=endpoint, aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key, region_name=server.region,
        # botocore's retries["max_attempts"] counts retries (1 = one retry); total_max_attempts
        # counts the first attempt too: 1 = no retry, so one injected fault is one error.
        config=Config(retries={"total_max_attempts": 1, "mode": "standard"}, **config),
    )


@pytest.fixture()
def s3(s3_server: S3Server, proxy: S3FaultProxy) -> Any:
    """A boto3 client through the proxy, without retries: one fault, one error."""
    return client_for(s3_server, proxy.url)


def part_bodies() -> list[bytes]:
    return [os.urandom(5 * MIB), os.urandom(5 * MIB), os.urandom(MIB)]


def test_classify_names_the_operations() -> None:
    cases = {
        ("POST", "/b/k", "uploads"): "CreateMultipartUpload",
        ("PUT", "/b/k", "partNumber=2&uploadId=u"): "UploadPart",
        ("POST", "/b/k", "uploadId=u"): "CompleteMultipartUpload",
        ("DELETE", "/b/k", "uploadId=u"): "AbortMultipartUpload",
        ("PUT", "/b/k", ""): "PutObject",
        ("GET", "/b/k", ""): "GetObject",
        ("HEAD", "/b/k", ""): "HeadObject",
        ("GET", "/b", "list-type=2&prefix=x"): "ListObjectsV2",
        ("GET", "/b/", ""): "ListObjects",
        ("POST", "/b", "delete"): "DeleteObjects",
        ("DELETE", "/b/k", ""): "DeleteObject",
        ("HEAD", "/b", ""): "HeadBucket",
        ("PUT", "/b", ""): "CreateBucket",
        ("GET", "/", ""): "ListBuckets",
    }
    for (method, path, query), expected in cases.items():
        assert classify(method, path, query) == expected, (method, path, query)
    assert classify("PUT", "/b/k", "", {"x-amz-copy-source": "/b/j"}) == "CopyObject"


def test_without_rules_the_proxy_is_transparent(s3: Any, s3_bucket: str,
                                                proxy: S3FaultProxy) -> None:
    parts = part_bodies()
    upload = s3.create_multipart_upload(Bucket=s3_bucket, Key="plain", Metadata={"k": "v"})
    done = [
        {"PartNumber": n, "ETag": s3.upload_part(Bucket=s3_bucket, Key="plain", PartNumber=n,
                                                 UploadId=upload["UploadId"], Body=body)["ETag"]}
        for n, body in enumerate(parts, start=1)
    ]
    s3.complete_multipart_upload(Bucket=s3_bucket, Key="plain", UploadId=upload["UploadId"],
                                 MultipartUpload={"Parts": done})
    head = s3.head_object(Bucket=s3_bucket, Key="plain")
    assert head["ContentLength"] == 11 * MIB
    assert head["Metadata"] == {"k": "v"}
    assert s3.get_object(Bucket=s3_bucket, Key="plain")["Body"].read() == b"".join(parts)
    assert proxy.counters("UploadPart") == {"requests": 3, "faults": 0, "delayed": 0,
                                            "stalls": 0, "resets": 0, "errors": 0}
    assert proxy.counters("CompleteMultipartUpload")["requests"] == 1


def test_a_500_on_part_2_fails_that_part_once(s3: Any, s3_bucket: str,
                                             proxy: S3FaultProxy) -> None:
    rule = httpx.post(proxy.url + CONTROL_PATH, json={
        "operation": "UploadPart", "part_numbers": [2], "error_rate": 1.0, "count": 1}).json()
    assert (rule["status"], rule["code"], rule["count"]) == (500, "InternalError", 1)
    parts = part_bodies()
    upload_id = s3.create_multipart_upload(Bucket=s3_bucket, Key="k")["UploadId"]

    def put(number: int) -> dict[str, Any]:
        etag = s3.upload_part(Bucket=s3_bucket, Key="k", PartNumber=number, UploadId=upload_id,
                              Body=parts[number - 1])["ETag"]
        return {"PartNumber": number, "ETag": etag}

    first = put(1)
    with pytest.raises(botocore.exceptions.ClientError) as failed:
        put(2)
    assert failed.value.response["Error"]["Code"] == "InternalError"
    assert failed.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    done = [first, put(2), put(3)]  # the rule is spent: the retry goes through
    s3.complete_multipart_upload(Bucket=s3_bucket, Key="k", UploadId=upload_id,
                                 MultipartUpload={"Parts": done})
    assert s3.get_object(Bucket=s3_bucket, Key="k")["Body"].read() == b"".join(parts)
    state = httpx.get(proxy.url + CONTROL_PATH).json()
    assert state["rules"] == []
    assert state["counters"]["UploadPart"]["requests"] == 4
    assert state["counters"]["UploadPart"]["errors"] == 1


def test_slow_down_on_a_put(s3: Any, s3_bucket: str, proxy: S3FaultProxy) -> None:
    proxy.add_fault(operation="PutObject", error_rate=1.0, code="SlowDown", count=1)
    with pytest.raises(botocore.exceptions.ClientError) as failed:
        s3.put_object(Bucket=s3_bucket, Key="small", Body=b"x" * 1000)
    assert failed.value.response["Error"]["Code"] == "SlowDown"
    assert failed.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    s3.put_object(Bucket=s3_bucket, Key="small", Body=b"x" * 1000)


def test_a_reset_is_a_connection_error(s3: Any, s3_bucket: str, proxy: S3FaultProxy) -> None:
    upload_id = s3.create_multipart_upload(Bucket=s3_bucket, Key="r")["UploadId"]
    proxy.add_fault(operation="UploadPart", reset_rate=1.0, count=1)
    with pytest.raises(botocore.exceptions.ConnectionClosedError):
        s3.upload_part(Bucket=s3_bucket, Key="r", PartNumber=1, UploadId=upload_id,
                       Body=os.urandom(5 * MIB))
    proxy.add_fault(operation="GetObject", reset_rate=1.0, count=1)
    with pytest.raises(botocore.exceptions.ConnectionClosedError):
        s3.get_object(Bucket=s3_bucket, Key="missing")
    assert proxy.counters("UploadPart")["resets"] == 1
    assert proxy.counters("GetObject")["resets"] == 1
    s3.upload_part(Bucket=s3_bucket, Key="r", PartNumber=1, UploadId=upload_id, Body=b"last")
    s3.abort_multipart_upload(Bucket=s3_bucket, Key="r", UploadId=upload_id)


def test_latency_and_stall_are_added(s3: Any, s3_bucket: str, proxy: S3FaultProxy) -> None:
    proxy.add_fault(operation="HeadBucket", latency_ms=150, count=2)
    proxy.add_fault(operation="ListObjectsV2", stall_s=0.2, count=1)
    s3.head_bucket(Bucket=s3_bucket)
    assert s3.list_objects_v2(Bucket=s3_bucket)["KeyCount"] == 0
    assert proxy.counters("HeadBucket") == {"requests": 1, "delayed": 1, "faults": 1,
                                            "stalls": 0, "resets": 0, "errors": 0}
    assert proxy.counters("ListObjectsV2")["stalls"] == 1
    assert [r["count"] for r in proxy.table.snapshot()["rules"]] == [1]


def test_a_stall_longer_than_the_read_timeout_times_out(s3_server: S3Server, s3_bucket: str,
                                                        proxy: S3FaultProxy) -> None:
    impatient = client_for(s3_server, proxy.url, read_timeout=1, connect_timeout=5)
    proxy.add_fault(operation="HeadBucket", stall_s=30, count=1)
    with pytest.raises(botocore.exceptions.ReadTimeoutError):
        impatient.head_bucket(Bucket=s3_bucket)
    impatient.head_bucket(Bucket=s3_bucket)


def test_get_object_streams_20_mib(s3_server: S3Server, s3_client: Any, s3_bucket: str,
                                   s3: Any, proxy: S3FaultProxy) -> None:
    digest = hashlib.sha256()
    with open("/dev/urandom", "rb") as source:
        blob = source.read(20 * MIB)
    digest.update(blob)
    s3_client.put_object(Bucket=s3_bucket, Key="big", Body=blob)  # straight to moto
    del blob
    received, size = hashlib.sha256(), 0
    tracemalloc.start()
    try:
        body = s3.get_object(Bucket=s3_bucket, Key="big")["Body"]
        for chunk in body.iter_chunks(chunk_size=256 * 1024):
            received.update(chunk)
            size += len(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert size == 20 * MIB
    assert received.hexdigest() == digest.hexdigest()
    assert proxy.table.snapshot()["max_chunk_bytes"] <= 64 * 1024
    assert peak < 8 * MIB  # proxy and client in this process never held the object


def test_control_path_rejects_bad_rules(proxy: S3FaultProxy) -> None:
    for bad in ({"operation": "Nope"}, {"error_rate": 2}, {"part_numbers": [1]},
                {"count": 0}, {"status": 200}, {"colour": "red"}, [1]):
        answer = httpx.post(proxy.url + CONTROL_PATH, json=bad)
        assert answer.status_code == 400, bad
        assert "fault" in answer.json()["error"]
    httpx.post(proxy.url + CONTROL_PATH, json={"operation": "*", "latency_ms": 1})
    assert len(httpx.get(proxy.url + CONTROL_PATH).json()["rules"]) == 1
    assert httpx.delete(proxy.url + CONTROL_PATH).json()["rules"] == []


def test_runs_as_a_module(s3_server: S3Server, s3_bucket: str, tmp_path: Path) -> None:
    port = free_port()
    proc = spawn([sys.executable, "-m", "sandbox.launchers.s3_faults",
                  "--upstream", s3_server.endpoint_url, "--port", str(port)],
                 log_path=tmp_path / "proxy.log", cwd=Path(__file__).parents[2])
    url = f"http://127.0.0.1:{port}"
    try:
        def ready() -> bool:
            assert proc.poll() is None, (tmp_path / "proxy.log").read_text()
            try:
                return httpx.get(url + CONTROL_PATH, timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, timeout=60, what="the proxy module")
        httpx.post(url + CONTROL_PATH, json={"operation": "HeadObject", "error_rate": 1,
                                             "status": 404, "count": 1}).raise_for_status()
        s3 = client_for(s3_server, url)
        key = f"k-{uuid.uuid4().hex}"
        s3.put_object(Bucket=s3_bucket, Key=key, Body=b"hello")
        with pytest.raises(botocore.exceptions.ClientError) as failed:
            s3.head_object(Bucket=s3_bucket, Key=key)
        assert failed.value.response["Error"]["Code"] == "404"
        assert s3.head_object(Bucket=s3_bucket, Key=key)["ContentLength"] == 5
        counters = httpx.get(url + CONTROL_PATH).json()["counters"]
        assert counters["HeadObject"] == {"requests": 2, "errors": 1, "faults": 1,
                                          "delayed": 0, "stalls": 0, "resets": 0}
    finally:
        stop_pid(proc.pid)
        proc.wait(timeout=30)


def test_the_s3_server_is_the_moto_of_this_interpreter(s3_server: S3Server):
    """The locked moto (this venv's), not one another Python installed earlier on PATH."""
    argv = Path(f"/proc/{s3_server.pid}/cmdline").read_bytes().split(b"\0")
    own = str(Path(sys.executable).with_name("moto_server")).encode()
    assert own in argv, argv
