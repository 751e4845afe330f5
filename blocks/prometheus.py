"""Prefect block for a Prometheus server; hands out an httpx client and runs instant queries."""

from __future__ import annotations

from typing import Any

import httpx
from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from blocks.schema_cache import CachedSchema
from blocks.tls import verified_context
from errors import PermanentSystemError
from errors.http import raise_for_status, translate_http_errors

SYSTEM = "prometheus"


class _BearerAuth(httpx.Auth):
    def __init__(self, token: str) -> None:
        self._token = token

    def auth_flow(self, request: httpx.Request) -> Any:
        request.headers["Authorization"] = f"Bearer {self._token}"
        yield request


def _clip(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class PrometheusServer(CachedSchema, Block):
    """A Prometheus HTTP API, optionally behind a bearer token or basic auth."""

    _block_type_name = "Veza Prometheus Server"
    _block_type_slug = "veza-prometheus-server"
    _description = "A Prometheus server whose HTTP API judges releases."

    url: str = Field(description="Base URL, e.g. http://prometheus:9090.")
    bearer_token: SecretStr | None = Field(default=None, description="Bearer token, if any.")
    username: str | None = Field(default=None, description="Basic auth user, if any.")
    password: SecretStr | None = Field(default=None, description="Basic auth password.")
    timeout_s: float = Field(default=10.0, gt=0, description="Timeout of each request (s).")

    def get_client(self) -> httpx.Client:
        """Build an HTTP client for the API (base URL and authentication set).

        Returns:
            An ``httpx.Client``; close it when done.
        """
        auth: httpx.Auth | None = None
        if self.bearer_token is not None:
            auth = _BearerAuth(self.bearer_token.get_secret_value())
        elif self.username is not None:
            secret = self.password.get_secret_value() if self.password is not None else ""
            auth = httpx.BasicAuth(self.username, secret)
        return httpx.Client(base_url=self.url.rstrip("/"), auth=auth, timeout=self.timeout_s,
                            verify=verified_context())

    def api_get(self, path: str, params: dict[str, str] | None = None) -> Any:
        """GET an API path and return the ``data`` member of a successful answer.

        Args:
            path: e.g. ``/api/v1/rules``.
            params: query parameters.

        Returns:
            The decoded ``data`` field.

        Raises:
            UnreachableError: connection refused, DNS failure or timeout.
            TransientSystemError: HTTP 5xx or 429.
            AuthenticationError: HTTP 401.
            AccessDeniedError: HTTP 403.
            PermanentSystemError: a refused query (HTTP 400/422) or an unexpected answer.
        """
        with self.get_client() as http:
            response = self._request(http, path, params)
        try:
            body = response.json()
        except ValueError:
            raise PermanentSystemError(SYSTEM, f"GET {path}: answer is not JSON") from None
        if not isinstance(body, dict) or body.get("status") != "success":
            error = body.get("error", "") if isinstance(body, dict) else ""
            raise PermanentSystemError(SYSTEM, f"GET {path}: {_clip(str(error)) or 'failed'}")
        return body.get("data")

    def _request(
        self, http: httpx.Client, path: str, params: dict[str, str] | None
    ) -> httpx.Response:
        with translate_http_errors(system=SYSTEM, action=f"GET {path}", hint=self._hint()):
            response = http.get(path, params=params)
        status = response.status_code
        raise_for_status(status, system=SYSTEM,
                         message=f"GET {path}: HTTP {status} {_error_text(response)}".rstrip(),
                         auth_hint="check the credentials of the block",
                         client_hint="check the PromQL expression")
        return response

    def _hint(self) -> str:
        return f"check that Prometheus is up at {self.url}"

    def query(self, promql: str) -> list[dict[str, Any]]:
        """Run an instant query.

        Args:
            promql: the PromQL expression.

        Returns:
            The result vector: items with ``metric`` (labels) and ``value`` ``[ts, "str"]``;
            a scalar answer is returned as one item with empty labels.

        Raises:
            UnreachableError: Prometheus could not be reached.
            TransientSystemError: Prometheus answered 5xx.
            PermanentSystemError: the query was refused.
        """
        data = self.api_get("/api/v1/query", {"query": promql})
        if not isinstance(data, dict):
            raise PermanentSystemError(SYSTEM, "query: answer has no data")
        result = data.get("result")
        if data.get("resultType") in ("scalar", "string") and isinstance(result, list):
            return [{"metric": {}, "value": result}]
        if not isinstance(result, list):
            raise PermanentSystemError(SYSTEM, "query: answer has no result list")
        return [item for item in result if isinstance(item, dict)]

    def is_ready(self) -> bool:
        """Ask ``/-/ready``.

        Returns:
            True when Prometheus answers 200.

        Raises:
            UnreachableError: Prometheus could not be reached.
            TransientSystemError: Prometheus answered 5xx (e.g. 503 while starting).
        """
        with self.get_client() as http:
            return self._request(http, "/-/ready", None).status_code == 200


def _error_text(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    return _clip(str(body.get("error", ""))) if isinstance(body, dict) else ""
