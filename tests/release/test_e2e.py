"""E2E against a seeded sandbox staging: the built-in HTTP suite and a catalogue command."""

from __future__ import annotations

import socket

import pytest
from kubernetes import client, config

from errors import E2EError, InvalidInputError
from tasks.release.catalogue import parse_catalogue
from tasks.release.e2e import E2EResult, env_var_for, run_e2e, service_urls

SERVICES = {
    "veza-backend-api": {
        "image_repository": "veza/backend-api",
        "port": 8080,
        "smoke_paths": ["/api/v1/tracks", "/api/v1/users/me"],
    },
    "veza-chat-server": {
        "image_repository": "veza/chat-server",
        "port": 8081,
        "smoke_paths": ["/api/v1/rooms"],
    },
    "veza-stream-server": {
        "image_repository": "veza/stream-server",
        "port": 8082,
        "smoke_paths": ["/api/v1/streams"],
    },
    "veza-web": {"image_repository": "veza/web", "port": 80, "smoke_paths": ["/", "/index.html"]},
}


def catalogue(staging_ns: str, **extra):
    blocks = {"kubernetes_block": "k", "prometheus_block": "p", "vault_block": "v"}
    return parse_catalogue(
        {
            "environments": {"staging": {"namespace": staging_ns, **blocks}},
            "services": SERVICES,
            **extra,
        }
    )


def dead_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_e2e_against_staging(sandbox_stack, sandbox_shared_namespaces):
    staging_ns, _ = sandbox_shared_namespaces
    core = client.CoreV1Api(
        config.new_client_from_config(config_file=str(sandbox_stack.kubeconfig))
    )
    cat = catalogue(staging_ns)
    urls = service_urls(core, staging_ns, cat.select())
    assert set(urls) == set(SERVICES) and all(u.startswith("http://") for u in urls.values())

    # Built-in suite: every smoke path of every service, twice, all 2xx JSON/HTML.
    result = run_e2e(cat, "staging", urls, rounds=2)
    assert result.mode == "builtin" and result.passed
    assert len(result.checks) == 2 * 6
    assert {c.service for c in result.checks} == set(SERVICES)
    result.raise_for_failure()

    # A service that does not answer fails the stage, naming it.
    broken = run_e2e(cat, "staging", {**urls, "veza-web": dead_url()}, rounds=1)
    assert not broken.passed
    assert {c.service for c in broken.failures()} == {"veza-web"}
    with pytest.raises(E2EError, match="veza-web"):
        broken.raise_for_failure()

    # The catalogue's command gets the staging URLs in its environment.
    web_var = env_var_for("veza-web")
    assert web_var == "VEZA_E2E_VEZA_WEB_URL"
    command = run_e2e(catalogue(staging_ns, e2e_command=["printenv", web_var]), "staging", urls)
    assert command.mode == "command" and command.passed
    missing = run_e2e(
        catalogue(staging_ns, e2e_command=["printenv", "VEZA_E2E_NOT_A_SERVICE_URL"]),
        "staging",
        urls,
    )
    assert not missing.passed and "exit 1" in missing.checks[0].detail


def test_e2e_refuses_missing_urls_and_empty_results():
    cat = catalogue("veza-staging")
    with pytest.raises(InvalidInputError, match="veza-web"):
        run_e2e(cat, "staging", {"veza-backend-api": "http://x"}, services=["veza-web"])
    assert not E2EResult(environment="staging", mode="builtin").passed
