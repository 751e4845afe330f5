"""The pre-deployment checklist gate: each item checked and recorded in order, before any change."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client
from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from blocks.prometheus import PrometheusServer
from blocks.vault import VaultServer
from errors import PreflightError, VezaOpsError, retry_on_transient
from errors.kubernetes import translate_api_errors
from errors.vault import translate_vault_errors
from tasks.release.build import check_version
from tasks.release.canary_replicas import check_traffic, mesh_served
from tasks.release.canary_service import serving_colour
from tasks.release.catalogue import Catalogue, EnvironmentSpec, ServiceSpec
from tasks.release.clusters import Cluster
from tasks.release.colours import container_image, other_colour
from tasks.release.locking import lock_holder
from tasks.release.logs import get_logger
from tasks.release.measuring import check_window, scrape_interval_s
from tasks.release.rollout import rollout_status


class ChecklistItem(BaseModel):
    """One item of the checklist."""

    name: str
    passed: bool
    detail: str = ""


class LiveTarget(BaseModel):
    """What a service runs now: the rollback target of the release."""

    colour: str | None
    deployment: str
    image: str | None


class Checklist(BaseModel):
    """The recorded pre-deployment checklist."""

    environment: str
    version: str
    items: list[ChecklistItem] = Field(default_factory=list)
    live: dict[str, LiveTarget] = Field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """True when every item passed."""
        return all(item.passed for item in self.items)

    def failures(self) -> list[ChecklistItem]:
        """The failed items.

        Returns:
            Failed items in order.
        """
        return [item for item in self.items if not item.passed]

    def to_markdown(self) -> str:
        """Render as a markdown task list.

        Returns:
            Markdown text.
        """
        lines = [f"## Pre-deployment checklist: {self.version} to {self.environment}", ""]
        for item in self.items:
            box = "x" if item.passed else " "
            verdict = "" if item.passed else " **FAILED**"
            lines.append(f"- [{box}] {item.name}{verdict}: {item.detail}")
        return "\n".join(lines) + "\n"


@dataclass
class PreflightContext:
    """Everything the checklist looks at (clients built by the flow from its blocks)."""

    catalogue: Catalogue
    environment: str
    version: str
    services: list[str] | None = None
    prometheus: PrometheusServer | None = None
    vault: VaultServer | None = None
    core_v1: client.CoreV1Api | None = None
    apps_v1: client.AppsV1Api | None = None
    coordination_v1: client.CoordinationV1Api | None = None
    staging_core_v1: client.CoreV1Api | None = None
    staging_apps_v1: client.AppsV1Api | None = None
    holder: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def live_target(
    core_v1: client.CoreV1Api,
    apps_v1: client.AppsV1Api,
    env: EnvironmentSpec,
    spec: ServiceSpec,
) -> tuple[LiveTarget, client.V1Deployment]:
    """Find what serves a service now: the colour in its Service selector and that Deployment.

    Args:
        core_v1: Kubernetes core API.
        apps_v1: Kubernetes apps API.
        env: the environment.
        spec: the service.

    Returns:
        The live target and its Deployment.
    """
    ns = env.namespace
    with translate_api_errors(f"read Service {spec.service_name} in {ns}"):
        service = core_v1.read_namespaced_service(spec.service_name, ns)
    colour = serving_colour(service, env.colour_label)
    name = spec.deployment_name(colour) if colour else spec.deployment_base
    with translate_api_errors(f"read Deployment {name} in {ns}"):
        deployment = apps_v1.read_namespaced_deployment(name, ns)
    target = LiveTarget(
        colour=colour, deployment=name, image=container_image(deployment, spec.container)
    )
    return target, deployment


def _check(name: str, checklist: Checklist, fn: Callable[[], str]) -> None:
    try:
        detail = fn()
        checklist.items.append(ChecklistItem(name=name, passed=True, detail=detail))
    except VezaOpsError as exc:
        checklist.items.append(ChecklistItem(name=name, passed=False, detail=str(exc)))
    except Exception as exc:
        checklist.items.append(
            ChecklistItem(name=name, passed=False, detail=f"unexpected {type(exc).__name__}")
        )


def build_checklist(ctx: PreflightContext) -> Checklist:
    """Check every item in order and record each; raises nothing.

    Args:
        ctx: what to look at.

    Returns:
        The checklist (see ``passed`` and ``failures()``).
    """
    checklist = Checklist(environment=ctx.environment, version=ctx.version)
    state: dict[str, Any] = {}

    def parameters() -> str:
        check_version(ctx.version)
        state["env"] = ctx.catalogue.environment(ctx.environment)
        state["specs"] = ctx.catalogue.select(ctx.services)
        return f"version {ctx.version}, services {[s.name for s in state['specs']]}"

    _check("parameters valid", checklist, parameters)
    env: EnvironmentSpec | None = state.get("env")
    specs: list[ServiceSpec] = state.get("specs", [])

    def prometheus() -> str:
        if ctx.prometheus is None:
            raise PreflightError("no Prometheus block given")
        ctx.prometheus.is_ready()
        return f"{ctx.prometheus.url} ready"

    def rules() -> str:
        if ctx.prometheus is None:
            raise PreflightError("no Prometheus block given")
        data = ctx.prometheus.api_get("/api/v1/rules")
        groups = data.get("groups", []) if isinstance(data, dict) else []
        alerts = {
            str(rule.get("name"))
            for group in groups
            for rule in group.get("rules", [])
            if rule.get("type") == "alerting"
        }
        if not groups:
            raise PreflightError("no rule group is loaded", hint="load the Veza alert rules")
        missing = sorted(set(env.required_alerts if env else []) - alerts)
        if missing:
            raise PreflightError(f"alert rules not loaded: {missing}", hint="load them")
        return f"{len(groups)} group(s), {len(alerts)} alert(s)"

    def vault() -> str:
        if ctx.vault is None:
            raise PreflightError("no Vault block given")
        with translate_vault_errors(f"log in to {ctx.vault.address}"):
            hv = ctx.vault.get_client()
        with translate_vault_errors(f"seal status of {ctx.vault.address}"):
            sealed = hv.sys.is_sealed()
        if sealed:
            raise PreflightError(f"{ctx.vault.address} is sealed", hint="unseal Vault")
        with translate_vault_errors(f"token lookup at {ctx.vault.address}"):
            hv.auth.token.lookup_self()
        return f"{ctx.vault.address} unsealed, credentials accepted"

    def windows() -> str:
        if ctx.prometheus is None or env is None:
            raise PreflightError("no Prometheus block or environment")
        scrape_s = scrape_interval_s(ctx.prometheus, env.namespace)
        problems, oks = [], []
        for spec in specs:
            try:
                oks.append(f"{spec.name} {check_window(spec.name, spec.analysis, scrape_s)} s")
            except PreflightError as exc:
                problems.append(f"{exc.message} ({exc.hint})")
        if problems:
            raise PreflightError("; ".join(problems))
        return f"scrape interval {scrape_s:g} s; windows: {', '.join(oks)}"

    _check("prometheus reachable", checklist, prometheus)
    if env is not None and env.strategy != "rolling":  # blue-green and canary are judged
        _check("verification window covers two scrapes", checklist, windows)
    if env is not None and env.strategy == "canary" and ctx.apps_v1 is not None:
        api = ctx.apps_v1.api_client
        _check("canary traffic", checklist, lambda: check_traffic(env, mesh_served(api)))
    _check("alert rules loaded", checklist, rules)
    _check("vault reachable and unsealed", checklist, vault)
    if env is not None and env.staging_environment:
        staging = ctx.catalogue.environment(env.staging_environment)

        def staging_runs() -> str:
            if ctx.staging_core_v1 is None or ctx.staging_apps_v1 is None:
                raise PreflightError("no client for the staging cluster given")
            problems, oks = [], []
            for spec in specs:
                target, deployment = live_target(
                    ctx.staging_core_v1, ctx.staging_apps_v1, staging, spec
                )
                status = rollout_status(deployment)
                if target.image != spec.image(ctx.version):
                    problems.append(f"{spec.name} runs {target.image}")
                elif not status.done:
                    problems.append(f"{spec.name} {ctx.version} not healthy ({status.message})")
                else:
                    oks.append(spec.name)
            if problems:
                raise PreflightError(
                    f"staging does not run {ctx.version} healthily: " + "; ".join(problems),
                    hint="release to staging first",
                )
            return f"{staging.namespace} runs {ctx.version} healthily: {', '.join(oks)}"

        _check(f"{staging.name} runs this version", checklist, staging_runs)

    def rollback_target() -> str:
        if env is None or ctx.core_v1 is None or ctx.apps_v1 is None:
            raise PreflightError("no cluster client or environment")
        for spec in specs:
            target, _ = live_target(ctx.core_v1, ctx.apps_v1, env, spec)
            if env.strategy == "blue-green" and target.colour not in env.colours:
                raise PreflightError(
                    f"Service {spec.service_name} selects no colour ({env.colour_label})",
                    hint=f"set its selector to one of {list(env.colours)}",
                )
            checklist.live[spec.name] = target
        return "; ".join(
            f"{name}: {t.colour or '-'} {t.image}" for name, t in checklist.live.items()
        )

    def no_other_release() -> str:
        if env is None or ctx.coordination_v1 is None:
            raise PreflightError("no cluster client or environment")
        holder = lock_holder(ctx.coordination_v1, env.namespace)
        if holder is not None and holder != ctx.holder:
            raise PreflightError(f"release {holder} is running on {env.namespace}")
        return "lock held by us" if holder else "no release running"

    _check("rollback target known", checklist, rollback_target)
    _check("no other release running", checklist, no_other_release)
    return checklist


def run_preflight(ctx: PreflightContext) -> Checklist:
    """Run the checklist; fail listing every failed item.

    Args:
        ctx: what to look at.

    Returns:
        The checklist, all passed.

    Raises:
        PreflightError: one or more items failed; ``.checklist`` holds the full checklist.
    """
    checklist = build_checklist(ctx)
    for item in checklist.items:
        get_logger(__name__).info(
            "preflight: [%s] %s: %s", "ok" if item.passed else "FAIL", item.name, item.detail
        )
    if not checklist.passed:
        error = PreflightError(
            "pre-deployment checklist failed: "
            + "; ".join(f"{i.name} ({i.detail})" for i in checklist.failures()),
            hint="fix these items; nothing was changed",
        )
        error.checklist = checklist  # type: ignore[attr-defined]
        raise error
    return checklist


run_preflight_task = task(name="preflight", cache_policy=NO_CACHE)(run_preflight)


def preflight_context(catalogue: Catalogue, c: Cluster, *, version: str, services: list[str],
                      holder: str, staging: Cluster | None) -> PreflightContext:
    """What the checklist of one environment looks at.

    Args:
        catalogue: the catalogue.
        c: the environment checked.
        version: the version released.
        services: the services released.
        holder: our lock holder name (our own lock is no other release).
        staging: the staging environment, when ``c`` must already run the version there.

    Returns:
        The context.
    """
    return PreflightContext(
        catalogue=catalogue, environment=c.env.name, version=version, services=services,
        prometheus=c.prometheus, vault=c.vault, core_v1=c.core_v1, apps_v1=c.apps_v1,
        coordination_v1=c.coordination_v1, holder=holder,
        staging_core_v1=staging.core_v1 if staging else None,
        staging_apps_v1=staging.apps_v1 if staging else None,
    )


def plan_release(specs: list[ServiceSpec], version: str, *, rolling: Cluster | None,
                 bluegreen: Cluster | None, build: bool) -> list[str]:
    """What a release would do, one line per step, read from the live targets (a dry run).

    Args:
        specs: the services.
        version: the version.
        rolling: the environment updated in place (staging), if any.
        bluegreen: the blue-green environment (production), if any.
        build: the images would be built.

    Returns:
        The plan's lines.
    """
    lines = [f"build {s.image(version)}" for s in specs] if build else []
    for c in [c for c in (rolling, bluegreen) if c is not None]:
        for spec in specs:
            target, _ = live_target(c.core_v1, c.apps_v1, c.env, spec)
            if c is rolling:
                lines.append(f"{c.env.name}: {target.deployment} {target.image} -> "
                             f"{spec.image(version)}, wait, undo on failure")
                continue
            a = spec.analysis
            lines.append(
                f"{c.env.name}: {spec.name} live {target.colour} ({target.image}); "
                f"clone to {other_colour(target.colour or '')} with {spec.image(version)}, "
                f"smoke, switch, verify (success rate >= {a.success_rate_min:g}, "
                f"p99 <= {a.p99_max_ms:g} ms, {a.intervals} x {a.interval_s:g} s, "
                f"failure limit {a.failure_limit})"
            )
    return lines


plan_release_task = task(
    name="plan-release", cache_policy=NO_CACHE, retries=3, retry_delay_seconds=1,
    retry_condition_fn=retry_on_transient,
)(plan_release)
