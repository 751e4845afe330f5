"""The pre-rollout acceptance command of a canary environment (Flagger's pre-rollout webhook).

``acceptance_command`` (an argv list, never a shell; placeholders ``{version}``, ``{python}``)
runs once every canary is up and smoke-tested, before any traffic is shifted. It reaches each
canary directly: ``VEZA_CANARY_<SERVICE>_URL`` is one ready canary pod's ``http://IP:PORT``
(the Services do not select the canaries yet), beside ``VEZA_CANARY_ENVIRONMENT`` and
``VEZA_CANARY_VERSION``. A non-zero exit (or a timeout) fails the release before step 1: the
caller scales every canary down, and no weight ever moved. Its output's tail is logged and
recorded redacted, like the E2E command's.
"""

from __future__ import annotations

import sys

from kubernetes import client as k8s
from prefect import task
from prefect.cache_policies import NO_CACHE

from errors import E2EError
from tasks.release.build import build_env
from tasks.release.canary import canary_labels
from tasks.release.catalogue import EnvironmentSpec, ServiceSpec, substitute
from tasks.release.e2e import E2ECheck, run_command
from tasks.release.smoke import ready_pods


def env_var_for(service: str) -> str:
    """The variable carrying a service's canary URL to the acceptance command (pure).

    Args:
        service: e.g. ``veza-web``.

    Returns:
        e.g. ``VEZA_CANARY_VEZA_WEB_URL``.
    """
    return "VEZA_CANARY_" + "".join(c if c.isalnum() else "_" for c in service).upper() + "_URL"


def canary_urls(core_v1: k8s.CoreV1Api, env: EnvironmentSpec,
                specs: list[ServiceSpec]) -> dict[str, str]:
    """One ready canary pod's URL per service (empty when a canary has no ready pod).

    Args:
        core_v1: core API.
        env: the canary environment.
        specs: the services.

    Returns:
        Service name to ``http://IP:PORT``.
    """
    urls: dict[str, str] = {}
    for spec in specs:
        pods = ready_pods(core_v1, env.namespace, canary_labels(env, spec))
        ip = next((p.status.pod_ip for p in pods if p.status and p.status.pod_ip), None)
        urls[spec.name] = f"http://{ip}:{spec.port}" if ip else ""
    return urls


def run_acceptance(core_v1: k8s.CoreV1Api, *, env: EnvironmentSpec, specs: list[ServiceSpec],
                   version: str) -> E2ECheck | None:
    """Run the environment's acceptance command against the canaries (None: none configured).

    Args:
        core_v1: core API.
        env: the canary environment.
        specs: the services of the release.
        version: the version under test.

    Returns:
        The check (its detail holds the redacted tail of the output on failure), or None.
    """
    if not env.acceptance_command:
        return None
    command_env = build_env(None)
    command_env.update({env_var_for(s): url for s, url in canary_urls(core_v1, env, specs).items()})
    command_env.update(VEZA_CANARY_ENVIRONMENT=env.name, VEZA_CANARY_VERSION=version)
    argv = substitute(env.acceptance_command, {"version": version, "python": sys.executable})
    return run_command(argv, service="*", env=command_env, timeout_s=env.acceptance_timeout_s)


run_acceptance_task = task(name="canary-acceptance", cache_policy=NO_CACHE)(run_acceptance)


def refused(env: EnvironmentSpec, check: E2ECheck) -> E2EError:
    """The error of a failed acceptance command (pure).

    Args:
        env: the canary environment.
        check: the failed check.

    Returns:
        The error to raise once the canaries are scaled down.
    """
    return E2EError(f"pre-rollout acceptance of {env.name} failed ({check.name}): {check.detail}",
                    hint="no traffic was shifted and every canary was scaled down; fix the "
                    "version or the acceptance command")
