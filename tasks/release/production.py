"""Blue-green production: bring every new colour up, switch and verify atomically, commit."""

from __future__ import annotations

import time
from collections.abc import Callable

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.transactions import transaction

from errors import ReleaseError
from tasks.release.catalogue import Catalogue, ServiceSpec
from tasks.release.clusters import Cluster
from tasks.release.colours import Prepared, bring_up_colour_task, scale_down_task
from tasks.release.futures import settle
from tasks.release.logs import get_logger
from tasks.release.preflight import preflight_context, run_preflight_task
from tasks.release.report import ReleaseReport
from tasks.release.secrets import sync_secrets_task
from tasks.release.switching import (
    SwitchRecord,
    commit_switches_task,
    switch_back_task,
    switch_traffic,
)
from tasks.release.verifying import raise_on_abort, verify_task


def release_to_production(catalogue: Catalogue, c: Cluster, specs: list[ServiceSpec], *,
                          staging: Cluster | None, version: str,
                          report: ReleaseReport) -> None:
    """Preflight, secrets, new colours, atomic switch and verification, commit, old colour down.

    Args:
        catalogue: the catalogue.
        c: the blue-green environment.
        specs: the services, in switch order.
        staging: the environment that must already run the version, if any.
        version: the version.
        report: the run's report.

    Raises:
        PreflightError: the checklist failed (nothing changed).
        VerificationError: a new colour failed its analysis (every switch was undone).
        ReleaseError: the switch-back was incomplete.
    """
    report.checklist(c.env.name, run_preflight_task(preflight_context(
        catalogue, c, version=version, services=[s.name for s in specs],
        holder=report.holder, staging=staging)))
    secrets = {s.name: sync_secrets_task(c.core_v1, c.vault, c.env.namespace, s, c.env.name)
               for s in specs}
    report.record.secrets = secrets
    with report.timed("prepare"):
        prepared = bring_up_all(c, specs, version=version, secrets=secrets, report=report)
    with report.timed("switch_and_verify"):
        switch_and_verify(c, specs, prepared, report=report)
    commit_switches_task(c.core_v1, c.env, [s.service_name for s in specs])
    report.committed(prepared.values())
    keep_old_colour_task(c.env.keep_old_colour_s)
    scale_down_task(c.apps_v1, c.env.namespace,
                    [s.deployment_name(prepared[s.name].live_colour) for s in specs])


def bring_up_all(c: Cluster, specs: list[ServiceSpec], *, version: str,
                 secrets: dict[str, str], report: ReleaseReport) -> dict[str, Prepared]:
    """Bring every service's new colour up at once; on a failure scale the others down.

    Args:
        c: the blue-green environment.
        specs: the services.
        version: the version.
        secrets: service to its new Secret.
        report: the run's report.

    Returns:
        Service to its prepared colour.

    Raises:
        BaseException: the first failure, once every colour settled.
    """
    outcomes = settle([bring_up_colour_task.submit(
        c.apps_v1, c.core_v1, env=c.env, spec=s, image=s.image(version),
        secret_name=secrets[s.name], release_id=report.id) for s in specs])
    prepared = {p.service: p for p in outcomes if isinstance(p, Prepared)}
    report.prepared(prepared.values())
    failed = [exc for exc in outcomes if isinstance(exc, BaseException)]
    if failed:
        scale_down_task(c.apps_v1, c.env.namespace, [p.deployment for p in prepared.values()])
        raise failed[0]
    return prepared


def switch_and_verify(c: Cluster, specs: list[ServiceSpec], prepared: dict[str, Prepared], *,
                      report: ReleaseReport) -> None:
    """Switch and verify each service in order inside one transaction; undo all on a failure.

    A failure rolls the transaction back: its hooks put each switched Service back on its old
    colour, then a switch-back catches any the hooks missed and times the restoration from
    the failing verdict. The new colours are scaled down.

    Args:
        c: the blue-green environment.
        specs: the services, in switch order.
        prepared: their new colours.
        report: the run's report.

    Raises:
        VerificationError: a new colour failed its analysis.
        ReleaseError: some Service could not be switched back.
    """
    switches: list[SwitchRecord] = []
    decided_at: float | None = None
    try:
        with transaction():
            for s in specs:
                p = prepared[s.name]
                switches.append(switch_traffic(c.kubernetes, env=c.env, spec=s,
                                               colour=p.new_colour, release_id=report.id))
                report.switched_to(s.name)
                result = verify_task(c.prometheus, env=c.env, spec=s, colour=p.new_colour,
                                     settings=s.analysis)
                if result.verdict.decision == "abort":
                    decided_at = result.decided_at
                raise_on_abort(result)
                report.verified(s.name, p.new_colour, result.verdict.reason)
    except BaseException as exc:
        restore = switch_back_task(c.core_v1, switches, colour_label=c.env.colour_label,
                                   decided_at=decided_at)
        report.rolled_back(switches, restore)
        get_logger(__name__).error("release rolled back: %s",
                                   getattr(exc, "message", type(exc).__name__))
        scale_down_task(c.apps_v1, c.env.namespace, [p.deployment for p in prepared.values()])
        if restore.errors:
            raise ReleaseError(f"rollback incomplete: {restore.errors}",
                               hint="run the rollback flow") from exc
        raise


def keep_old_colour(
    seconds: float,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleeper: Callable[[float], object] = time.sleep,
) -> None:
    """Wait out the instant-rollback window while the old colour still runs at full scale.

    Args:
        seconds: the window (the environment's ``keep_old_colour_s``).
        clock: monotonic clock (injected in tests).
        sleeper: waits (injected in tests).
    """
    get_logger(__name__).info("keeping the old colour for %.0f s (instant rollback)", seconds)
    deadline = clock() + seconds
    while (left := deadline - clock()) > 0:
        sleeper(min(left, 5.0))


keep_old_colour_task = task(name="keep-old-colour", cache_policy=NO_CACHE)(keep_old_colour)
