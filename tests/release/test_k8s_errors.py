"""The Kubernetes error boundary, fed real errors of the API emulator and of the transport."""

from __future__ import annotations

import socket

import httpx
import pytest
from kubernetes import client

from errors import (
    AuthenticationError,
    ConflictError,
    NotFoundError,
    PermanentSystemError,
    TransientSystemError,
    UnreachableError,
    is_transient,
)
from errors.kubernetes import translate_api_error, translate_api_errors

SECRET_VALUE = "s3cr3t-value-that-must-not-leak"


def core_for(host: str, token: str) -> client.CoreV1Api:
    configuration = client.Configuration(host=host)
    configuration.api_key = {"authorization": token}
    configuration.api_key_prefix = {"authorization": "Bearer"}
    configuration.retries = False
    return client.CoreV1Api(client.ApiClient(configuration))


def secret(name: str) -> client.V1Secret:
    return client.V1Secret(
        metadata=client.V1ObjectMeta(name=name), string_data={"jwt_secret": SECRET_VALUE}
    )


def test_not_found_and_conflict(k8s_api_client, k8s_namespace):
    core = client.CoreV1Api(k8s_api_client)
    with pytest.raises(NotFoundError) as raised, translate_api_errors("read Secret nope"):
        core.read_namespaced_secret("nope", k8s_namespace)
    assert "read Secret nope" in str(raised.value) and "404" in str(raised.value)
    assert not is_transient(raised.value)
    core.create_namespaced_secret(k8s_namespace, secret("dup"))
    with pytest.raises(ConflictError) as raised, translate_api_errors("create Secret dup"):
        core.create_namespaced_secret(k8s_namespace, secret("dup"))
    assert SECRET_VALUE not in str(raised.value)
    assert raised.value.__cause__ is None and raised.value.__suppress_context__


def test_invalid_object_names_fields_not_values(k8s_api_client, k8s_namespace):
    core = client.CoreV1Api(k8s_api_client)
    with pytest.raises(PermanentSystemError) as raised, translate_api_errors("create Secret"):
        core.create_namespaced_secret(k8s_namespace, secret("Not_A_Valid_Name"))
    assert SECRET_VALUE not in str(raised.value)
    assert "HTTP 4" in str(raised.value)


def test_bad_token_is_an_authentication_error(k8s_server, k8s_namespace):
    core = core_for(k8s_server.url, "wrong-token")
    with pytest.raises(AuthenticationError) as raised, translate_api_errors("list Secrets"):
        core.list_namespaced_secret(k8s_namespace)
    assert "wrong-token" not in str(raised.value)


def test_server_errors_are_transient(k8s_server, k8s_api_client, k8s_namespace):
    headers = {"Authorization": f"Bearer {k8s_server.token}"}
    fault = {"verb": "get", "resource": "configmaps", "error_rate": 1.0, "latency_ms": 0}
    httpx.post(f"{k8s_server.url}/sandbox/faults", json=fault, headers=headers).raise_for_status()
    try:
        core = client.CoreV1Api(k8s_api_client)
        with pytest.raises(TransientSystemError) as raised, translate_api_errors("read cm"):
            core.read_namespaced_config_map("anything", k8s_namespace)
        assert is_transient(raised.value) and "HTTP 5" in str(raised.value)
    finally:
        httpx.delete(f"{k8s_server.url}/sandbox/faults", headers=headers).raise_for_status()


def test_unreachable_api_server():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    core = core_for(f"http://127.0.0.1:{port}", "token")
    with pytest.raises(UnreachableError) as raised, translate_api_errors("list Secrets"):
        core.list_namespaced_secret("default", _request_timeout=5)
    assert is_transient(raised.value)


def test_long_bodies_are_clipped():
    exc = client.ApiException(status=409, reason="Conflict")
    exc.body = '{"kind":"Status","reason":"AlreadyExists","message":"' + "x" * 5000 + '"}'
    error = translate_api_error(exc, "create")
    assert isinstance(error, ConflictError)
    assert len(str(error)) < 400


def test_library_errors_never_escape_the_release_helpers(k8s_server, k8s_api_client, k8s_namespace):
    from datetime import UTC, datetime

    from tasks.release.history import ReleaseRecord, record_release, release_history
    from tasks.release.locking import acquire_release_lock, lock_holder

    headers = {"Authorization": f"Bearer {k8s_server.token}"}
    fault = {"verb": "*", "resource": "*", "error_rate": 1.0, "latency_ms": 0}
    record = ReleaseRecord(
        id="20261127T100000Z-x",
        environment="staging",
        version="1.0.0",
        started_at=datetime.now(UTC),
    )
    coordination = client.CoordinationV1Api(k8s_api_client)
    core = client.CoreV1Api(k8s_api_client)
    httpx.post(f"{k8s_server.url}/sandbox/faults", json=fault, headers=headers).raise_for_status()
    try:
        calls = (
            lambda: record_release(core, k8s_namespace, record),
            lambda: release_history(core, k8s_namespace),
            lambda: acquire_release_lock(coordination, k8s_namespace, "release/x", 60),
            lambda: lock_holder(coordination, k8s_namespace),
        )
        for call in calls:
            with pytest.raises(TransientSystemError) as raised:
                call()
            assert "kubernetes" in str(raised.value) and is_transient(raised.value)
    finally:
        httpx.delete(f"{k8s_server.url}/sandbox/faults", headers=headers).raise_for_status()
