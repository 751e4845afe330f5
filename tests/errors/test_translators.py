"""Every library translator in errors/: each library's error types become veza-ops errors.

For each library the suite can raise (kubernetes, hvac/requests, botocore, psycopg, httpx),
every relevant exception type is raised inside the translator's boundary and must come out as
an :class:`errors.ExternalSystemError` with the right retry decision, no library exception
escaping, nothing chained (the original may carry request data) and no payload in the text.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from contextlib import AbstractContextManager

import botocore.exceptions as boto
import httpx
import hvac.exceptions
import psycopg
import psycopg.errors
import pytest
import requests
import urllib3.exceptions
from kubernetes.client.exceptions import ApiException

from errors import (
    AccessDeniedError,
    AuthenticationError,
    ConflictError,
    ExternalSystemError,
    NotFoundError,
    PermanentSystemError,
    SealedError,
    TransientSystemError,
    UnreachableError,
    is_transient,
)
from errors.http import raise_for_status, translate_http_errors
from errors.kubernetes import translate_api_errors
from errors.postgres import translate_pg_error
from errors.s3 import s3_errors
from errors.vault import translate_vault_errors

SECRET = "s3cr3t-payload-7f1c"  # planted in every library error; must never come out


def _escape_check(boundary: AbstractContextManager[None], exc: BaseException,
                  library: type[BaseException] | tuple[type[BaseException], ...]
                  ) -> ExternalSystemError:
    with pytest.raises(ExternalSystemError) as info:
        with boundary:
            raise exc
    out = info.value
    assert not isinstance(out, library), f"{type(exc).__name__} escaped untranslated"
    assert out.__cause__ is None and out.__suppress_context__, "the original stays chained"
    assert SECRET not in str(out) and SECRET not in (out.hint or "")
    return out


# --- kubernetes ---------------------------------------------------------------------------

def _api(status: int) -> ApiException:
    """An API error whose payload carries a secret: a non-Status body echoing the request."""
    exc = ApiException(status=status, reason="Reason")
    exc.body = f"<html>request body: {{'data': {{'password': '{SECRET}'}}}}</html>"
    return exc


def test_an_invalid_object_names_fields_never_values() -> None:
    exc = ApiException(status=422, reason="Invalid")
    exc.body = ('{"kind":"Status","reason":"Invalid","message":"Secret \\"x\\" is invalid: '
                f'data[password]: Invalid value: \\"{SECRET}\\"",'
                '"details":{"causes":[{"field":"data[password]","message":"Invalid value: '
                f'{SECRET}"}}]}}}}')
    out = _escape_check(translate_api_errors("create Secret x"), exc, ApiException)
    assert "data[password]" in out.message


@pytest.mark.parametrize(("exc", "expected", "transient"), [
    (_api(401), AuthenticationError, False),
    (_api(403), AccessDeniedError, False),
    (_api(404), NotFoundError, False),
    (_api(409), ConflictError, True),
    (_api(400), PermanentSystemError, False),
    (_api(422), PermanentSystemError, False),
    (_api(408), TransientSystemError, True),
    (_api(410), TransientSystemError, True),
    (_api(429), TransientSystemError, True),
    (_api(500), TransientSystemError, True),
    (_api(503), TransientSystemError, True),
    (_api(0), UnreachableError, True),
    (urllib3.exceptions.MaxRetryError(None, f"https://x/{SECRET}"), UnreachableError, True),
    (urllib3.exceptions.NewConnectionError(None, SECRET), UnreachableError, True),
    (urllib3.exceptions.ConnectTimeoutError(SECRET), UnreachableError, True),
    (urllib3.exceptions.ReadTimeoutError(None, f"/{SECRET}", SECRET), TransientSystemError,
     True),
    (urllib3.exceptions.ProtocolError(SECRET), TransientSystemError, True),
    (ConnectionRefusedError(SECRET), UnreachableError, True),
    (ConnectionResetError(SECRET), TransientSystemError, True),
    (TimeoutError(SECRET), TransientSystemError, True),
], ids=lambda v: getattr(v, "status", None) or type(v).__name__)
def test_kubernetes_errors_are_translated(exc: BaseException, expected: type, transient: bool
                                          ) -> None:
    out = _escape_check(translate_api_errors("read Service x in ns"), exc,
                        (ApiException, urllib3.exceptions.HTTPError, OSError))
    assert isinstance(out, expected) and out.system == "kubernetes"
    assert is_transient(out) is transient
    assert "read Service x in ns" in out.message


# --- hvac (Vault) ---------------------------------------------------------------------------

def _vault_error_types() -> list[type[hvac.exceptions.VaultError]]:
    return [c for _, c in inspect.getmembers(hvac.exceptions, inspect.isclass)
            if issubclass(c, hvac.exceptions.VaultError)]


@pytest.mark.parametrize("kind", _vault_error_types(), ids=lambda c: c.__name__)
def test_every_hvac_error_is_translated(kind: type[hvac.exceptions.VaultError]) -> None:
    out = _escape_check(translate_vault_errors("read secret/veza/x"),
                        kind(message=SECRET, errors=["permission denied"]),
                        (hvac.exceptions.VaultError, requests.exceptions.RequestException))
    assert out.system == "vault"
    expected: dict[str, type[ExternalSystemError]] = {
        "Unauthorized": AuthenticationError, "Forbidden": AuthenticationError,
        "VaultDown": SealedError, "VaultNotInitialized": SealedError,
        "InvalidPath": NotFoundError, "InternalServerError": TransientSystemError,
        "BadGateway": TransientSystemError, "RateLimitExceeded": TransientSystemError,
    }
    assert isinstance(out, expected.get(kind.__name__, PermanentSystemError))


@pytest.mark.parametrize(("exc", "expected"), [
    (requests.exceptions.ConnectionError(SECRET), UnreachableError),
    (requests.exceptions.ConnectTimeout(SECRET), UnreachableError),
    (requests.exceptions.ReadTimeout(SECRET), TransientSystemError),
    (requests.exceptions.ChunkedEncodingError(SECRET), TransientSystemError),
    (ConnectionRefusedError(SECRET), UnreachableError),
    (OSError(SECRET), TransientSystemError),
], ids=lambda v: type(v).__name__)
def test_vault_transport_errors_are_translated(exc: BaseException, expected: type) -> None:
    out = _escape_check(translate_vault_errors("log in"), exc,
                        (requests.exceptions.RequestException,))
    assert isinstance(out, expected) and is_transient(out)


def test_a_refused_approle_login_is_an_authentication_error() -> None:
    out = _escape_check(translate_vault_errors("log in with AppRole"),
                        hvac.exceptions.InvalidRequest(SECRET, errors=["invalid secret id"]),
                        hvac.exceptions.VaultError)
    assert isinstance(out, AuthenticationError)


# --- botocore (S3) --------------------------------------------------------------------------

def _client_error(code: str, status: int) -> boto.ClientError:
    return boto.ClientError(
        {"Error": {"Code": code, "Message": SECRET},
         "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject")


@pytest.mark.parametrize(("exc", "expected", "transient"), [
    (_client_error("NoSuchBucket", 404), NotFoundError, False),
    (_client_error("NoSuchKey", 404), NotFoundError, False),
    (_client_error("NoSuchUpload", 404), NotFoundError, False),
    (_client_error("InvalidAccessKeyId", 403), AuthenticationError, False),
    (_client_error("SignatureDoesNotMatch", 403), AuthenticationError, False),
    (_client_error("ExpiredToken", 400), AuthenticationError, False),
    (_client_error("AccessDenied", 403), AccessDeniedError, False),
    (_client_error("SlowDown", 503), TransientSystemError, True),
    (_client_error("InternalError", 500), TransientSystemError, True),
    (_client_error("RequestTimeout", 400), TransientSystemError, True),
    (_client_error("EntityTooSmall", 400), PermanentSystemError, False),
    (boto.NoCredentialsError(), AuthenticationError, False),
    (boto.EndpointConnectionError(endpoint_url=f"http://x/{SECRET}"), UnreachableError, True),
    (boto.ConnectTimeoutError(endpoint_url=f"http://x/{SECRET}"), UnreachableError, True),
    (boto.ReadTimeoutError(endpoint_url=f"http://x/{SECRET}"), TransientSystemError, True),
    (boto.ConnectionClosedError(endpoint_url=f"http://x/{SECRET}"), TransientSystemError,
     True),
    (boto.ParamValidationError(report=SECRET), TransientSystemError, True),
], ids=lambda v: (v.response["Error"]["Code"] if isinstance(v, boto.ClientError)
                 else type(v).__name__))
def test_botocore_errors_are_translated(exc: Exception, expected: type, transient: bool
                                        ) -> None:
    boundary = s3_errors(action="upload", bucket="veza-backups", key="postgres/x.dump.gpg")
    out = _escape_check(boundary, exc, (boto.ClientError, boto.BotoCoreError))
    assert isinstance(out, expected) and out.system == "S3"
    assert is_transient(out) is transient
    assert "upload" in out.message


# --- psycopg (PostgreSQL) -------------------------------------------------------------------

def _pg(sqlstate: str) -> psycopg.Error:
    return psycopg.errors.lookup(sqlstate)(f"detail with {SECRET}")


@pytest.mark.parametrize(("exc", "expected", "transient"), [
    (_pg("28P01"), AuthenticationError, False),
    (_pg("28000"), AuthenticationError, False),
    (_pg("3D000"), NotFoundError, False),
    (psycopg.OperationalError("connection refused"), UnreachableError, True),
    (_pg("08006"), TransientSystemError, True),
    (_pg("53100"), TransientSystemError, True),
    (_pg("57014"), TransientSystemError, True),
    (_pg("40001"), TransientSystemError, True),
    (_pg("40P01"), TransientSystemError, True),
    (_pg("42P01"), PermanentSystemError, False),
    (_pg("42501"), PermanentSystemError, False),
    (psycopg.InterfaceError("bad use"), PermanentSystemError, False),
], ids=lambda v: getattr(v, "sqlstate", None) or type(v).__name__)
def test_psycopg_errors_are_translated(exc: psycopg.Error, expected: type, transient: bool
                                       ) -> None:
    out = translate_pg_error(exc, user="veza", host="db.internal", port=5432, dbname="veza_db")
    assert isinstance(out, expected) and out.system == "PostgreSQL"
    assert is_transient(out) is transient
    assert "db.internal" in out.message


# --- httpx (Prometheus, Slack) --------------------------------------------------------------

_REQ = httpx.Request("POST", f"https://hooks.example/{SECRET}")


@pytest.mark.parametrize("exc", [
    httpx.ConnectError(SECRET, request=_REQ), httpx.ConnectTimeout(SECRET, request=_REQ),
    httpx.ReadTimeout(SECRET, request=_REQ), httpx.WriteTimeout(SECRET, request=_REQ),
    httpx.PoolTimeout(SECRET, request=_REQ), httpx.ReadError(SECRET, request=_REQ),
    httpx.WriteError(SECRET, request=_REQ), httpx.RemoteProtocolError(SECRET, request=_REQ),
    httpx.ProxyError(SECRET, request=_REQ), httpx.UnsupportedProtocol(SECRET, request=_REQ),
    httpx.TooManyRedirects(SECRET, request=_REQ),
], ids=lambda v: type(v).__name__)
def test_httpx_errors_are_translated(exc: httpx.HTTPError) -> None:
    out = _escape_check(translate_http_errors(system="slack", action="webhook"), exc,
                        httpx.HTTPError)
    assert isinstance(out, UnreachableError) and is_transient(out)
    assert ("timed out" in out.message) == isinstance(exc, httpx.TimeoutException)


@pytest.mark.parametrize(("status", "expected"), [
    (401, AuthenticationError), (403, AccessDeniedError), (404, PermanentSystemError),
    (400, PermanentSystemError), (429, TransientSystemError), (500, TransientSystemError),
    (503, TransientSystemError),
])
def test_http_statuses_are_translated(status: int, expected: type) -> None:
    with pytest.raises(ExternalSystemError) as info:
        raise_for_status(status, system="prometheus", message=f"GET /x: HTTP {status}",
                         auth_hint="check the credentials", client_hint="check the query")
    assert type(info.value) is expected


def test_http_statuses_below_400_pass() -> None:
    for status in (200, 204, 302):
        raise_for_status(status, system="prometheus", message="ok", auth_hint="-")


BOUNDARIES: dict[str, Callable[[], AbstractContextManager[None]]] = {
    "kubernetes": lambda: translate_api_errors("x"),
    "vault": lambda: translate_vault_errors("x"),
    "s3": lambda: s3_errors(action="x", bucket="b"),
    "http": lambda: translate_http_errors(system="x", action="x"),
}


@pytest.mark.parametrize("name", sorted(BOUNDARIES))
def test_our_own_errors_pass_through_untouched(name: str) -> None:
    mine = NotFoundError("x", "mine")
    with pytest.raises(NotFoundError) as info, BOUNDARIES[name]():
        raise mine
    assert info.value is mine
