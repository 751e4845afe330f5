"""End-to-end tests against staging: the catalogue's command, or the built-in HTTP suite."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Mapping

import httpx
from kubernetes import client
from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from blocks.tls import verified_context
from errors import E2EError, InvalidInputError, retry_on_transient
from errors.kubernetes import translate_api_errors
from tasks.release.build import build_env
from tasks.release.catalogue import Catalogue, ServiceSpec, substitute
from tasks.release.logs import get_logger
from tasks.release.redaction import redact

URL_ANNOTATIONS = ("veza.io/url", "sandbox.veza.io/url")
TAIL_LINES = 30


class E2ECheck(BaseModel):
    """One check: a request of the built-in suite, or one E2E command."""

    service: str
    name: str
    round: int = 1
    passed: bool
    status_code: int | None = None
    detail: str = ""
    duration_s: float = 0.0


class E2EResult(BaseModel):
    """Outcome of the E2E stage."""

    environment: str
    mode: str  # "command" | "builtin" | "mixed"
    checks: list[E2ECheck] = Field(default_factory=list)

    @property
    def passed(self) -> bool:
        """True when every check passed (and there was at least one)."""
        return bool(self.checks) and all(c.passed for c in self.checks)

    def failures(self) -> list[E2ECheck]:
        """The failed checks.

        Returns:
            Failed checks in order.
        """
        return [c for c in self.checks if not c.passed]

    def raise_for_failure(self) -> None:
        """Raise when a check failed.

        Raises:
            E2EError: naming the first failures.
        """
        if self.passed:
            return
        failed = self.failures()
        summary = "; ".join(f"{c.service} {c.name}: {c.detail}" for c in failed[:5])
        raise E2EError(
            f"E2E against {self.environment}: {len(failed)} of {len(self.checks)} check(s) "
            f"failed: {summary or 'no checks ran'}",
            hint="fix the version in staging; production was not touched",
        )


def env_var_for(service: str) -> str:
    """The variable carrying a service's URL to an E2E command.

    Args:
        service: e.g. ``veza-backend-api``.

    Returns:
        e.g. ``VEZA_E2E_VEZA_BACKEND_API_URL``.
    """
    return "VEZA_E2E_" + "".join(c if c.isalnum() else "_" for c in service).upper() + "_URL"


def service_url(service: client.V1Service, spec: ServiceSpec, namespace: str) -> str:
    """Base URL of a Service: its URL annotation, else its in-cluster DNS name and port.

    Args:
        service: the Service object.
        spec: the catalogue's service.
        namespace: its namespace.

    Returns:
        e.g. ``http://veza-web.veza-staging.svc:80``.
    """
    annotations = (service.metadata.annotations or {}) if service.metadata else {}
    for key in URL_ANNOTATIONS:
        if annotations.get(key):
            return str(annotations[key]).rstrip("/")
    return f"http://{spec.service_name}.{namespace}.svc:{spec.port}"


def service_urls(
    core_v1: client.CoreV1Api, namespace: str, specs: list[ServiceSpec]
) -> dict[str, str]:
    """Read each service's base URL from its Service.

    Args:
        core_v1: Kubernetes core API.
        namespace: the namespace.
        specs: services.

    Returns:
        Service name to base URL.
    """
    urls: dict[str, str] = {}
    for spec in specs:
        with translate_api_errors(f"read Service {spec.service_name} in {namespace}"):
            svc = core_v1.read_namespaced_service(spec.service_name, namespace)
        urls[spec.name] = service_url(svc, spec, namespace)
    return urls


service_urls_task = task(
    name="service-urls", cache_policy=NO_CACHE, retries=3, retry_delay_seconds=1,
    retry_condition_fn=retry_on_transient,
)(service_urls)


def check_response(response: httpx.Response) -> str | None:
    """Judge one answer of the built-in suite.

    Args:
        response: the HTTP response.

    Returns:
        None when it is a 2xx JSON or HTML answer, else what is wrong.
    """
    if not 200 <= response.status_code < 300:
        return f"HTTP {response.status_code}"
    ctype = response.headers.get("content-type", "")
    if "json" in ctype:
        try:
            response.json()
        except ValueError:
            return "invalid JSON body"
        return None
    if "html" in ctype or "text/plain" in ctype:
        return None if response.text.strip() else "empty body"
    return f"unexpected content-type {ctype!r}"


def builtin_suite(
    specs: list[ServiceSpec], urls: Mapping[str, str], *, rounds: int = 3, timeout_s: float = 5.0
) -> list[E2ECheck]:
    """GET every smoke path of every service through its Service URL, ``rounds`` times.

    Args:
        specs: services to exercise.
        urls: service name to base URL.
        rounds: how many times to go through every path.
        timeout_s: timeout of each request.

    Returns:
        One check per request.
    """
    checks: list[E2ECheck] = []
    with httpx.Client(timeout=timeout_s, verify=verified_context()) as http:
        for round_no in range(1, rounds + 1):
            for spec in specs:
                for path in spec.smoke_paths:
                    started = time.monotonic()
                    try:
                        response = http.get(urls[spec.name] + path)
                        problem = check_response(response)
                        code: int | None = response.status_code
                    except httpx.HTTPError as exc:
                        problem, code = f"request failed ({type(exc).__name__})", None
                    checks.append(
                        E2ECheck(
                            service=spec.name,
                            name=f"GET {path}",
                            round=round_no,
                            passed=problem is None,
                            status_code=code,
                            detail=problem or "ok",
                            duration_s=time.monotonic() - started,
                        )
                    )
    return checks


def run_command(
    argv: list[str], *, service: str, env: dict[str, str], timeout_s: float
) -> E2ECheck:
    """Run one E2E command (no shell) and turn its exit status into a check.

    Args:
        argv: the command.
        service: what it tests (``*`` for the whole catalogue).
        env: its complete environment.
        timeout_s: timeout.

    Returns:
        The check; its detail holds the output's tail on failure.
    """
    started = time.monotonic()
    try:
        proc = subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except FileNotFoundError:
        return E2ECheck(service=service, name=argv[0], passed=False, detail="program not found")
    except subprocess.TimeoutExpired:
        return E2ECheck(service=service, name=argv[0], passed=False, detail="timed out")
    tail = redact("\n".join(((proc.stdout or "") + (proc.stderr or "")).splitlines()[-TAIL_LINES:]))
    get_logger(__name__).info("e2e %s: exit %d, output (tail):\n%s", service, proc.returncode, tail)
    return E2ECheck(
        service=service,
        name=" ".join(argv[:3]),
        passed=proc.returncode == 0,
        status_code=None,
        detail="ok" if proc.returncode == 0 else f"exit {proc.returncode}: {tail[-300:]}",
        duration_s=time.monotonic() - started,
    )


def run_e2e(
    catalogue: Catalogue,
    environment: str,
    urls: Mapping[str, str],
    *,
    services: list[str] | None = None,
    version: str = "",
    env: Mapping[str, str] | None = None,
    rounds: int = 3,
    timeout_s: float = 600.0,
) -> E2EResult:
    """Run the E2E stage: the catalogue's command if any, else per service its command or the suite.

    Args:
        catalogue: the catalogue.
        environment: where the URLs point (usually ``staging``).
        urls: service name to base URL (see :func:`service_urls`).
        services: services to test (default: those in ``urls``).
        version: the version under test (``{version}`` placeholder).
        env: extra environment for commands.
        rounds: rounds of the built-in suite.
        timeout_s: timeout of each command.

    Returns:
        The result (check it with ``raise_for_failure``).

    Raises:
        InvalidInputError: a service has no URL.
    """
    specs = catalogue.select(services or [s for s in catalogue.switch_order if s in urls])
    missing = [s.name for s in specs if s.name not in urls]
    if missing:
        raise InvalidInputError("urls", f"no URL for {missing}", fix="pass every service's URL")
    command_env = build_env(env)
    command_env.update({env_var_for(s.name): urls[s.name] for s in specs})
    command_env["VEZA_E2E_ENVIRONMENT"] = environment
    values = {"version": version, "python": sys.executable, "image": "", "service": ""}
    if catalogue.e2e_command:
        argv = substitute(catalogue.e2e_command, values)
        check = run_command(argv, service="*", env=command_env, timeout_s=timeout_s)
        return E2EResult(environment=environment, mode="command", checks=[check])
    checks: list[E2ECheck] = []
    builtin = [s for s in specs if not s.e2e_command]
    for spec in specs:
        if spec.e2e_command:
            argv = substitute(
                spec.e2e_command,
                {**values, "service": spec.name, "image": spec.image(version) if version else ""},
            )
            checks.append(
                run_command(argv, service=spec.name, env=command_env, timeout_s=timeout_s)
            )
    checks += builtin_suite(builtin, urls, rounds=rounds)
    mode = "builtin" if len(builtin) == len(specs) else "command" if not builtin else "mixed"
    result = E2EResult(environment=environment, mode=mode, checks=checks)
    get_logger(__name__).info(
        "e2e %s: %d/%d checks passed",
        environment,
        sum(c.passed for c in checks),
        len(checks),
    )
    return result


run_e2e_task = task(name="e2e-staging", cache_policy=NO_CACHE)(run_e2e)
