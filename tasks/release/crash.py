"""After a release run crashed or was cancelled: put uncommitted switches back, free the lock."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from tasks.release.catalogue import DEFAULT_CATALOGUE, load_catalogue
from tasks.release.clusters import Cluster, connect
from tasks.release.history import record_release, release_history
from tasks.release.locking import release_lock_of_run
from tasks.release.logs import get_logger
from tasks.release.reconcile import reconcile_environment


def _clean_one(c: Cluster, run_id: str, outcome: str, specs: list[Any]) -> list[str]:
    done: list[str] = []
    if c.env.strategy == "blue-green":
        fixed, problems = reconcile_environment(c.apps_v1, c.core_v1, c.env, specs)
        done += fixed + problems
    for record in release_history(c.core_v1, c.env.namespace):
        if record.flow_run_id != run_id:
            continue
        if record.outcome == "running":
            record.outcome = "crashed" if outcome == "crashed" else "cancelled"
            record.finished_at = datetime.now(UTC)
            record.reason = f"flow run {outcome}; cleaned up by its {outcome} hook"
        elif record.outcome == "cancelled" and outcome == "crashed":
            # The run saw a termination signal and took it for a cancel; Prefect knows it was
            # not one (a SIGTERM no runner sent: a node going away): the record says so too.
            record.outcome = "crashed"
            record.reason = (f"{record.reason or 'terminated'}; the run ended Crashed "
                             "(a termination signal not sent by Prefect)")
        else:
            continue
        record_release(c.core_v1, c.env.namespace, record, keep=c.env.history_size)
        done.append(f"record {record.id}: {record.outcome}")
    if release_lock_of_run(c.coordination_v1, c.env.namespace, run_id):
        done.append(f"lock of {c.env.namespace} released")
    return done


def clean_up_after_run(run_id: str, parameters: Mapping[str, Any], *,
                       outcome: str = "crashed") -> list[str]:
    """Best effort after a release run ended abnormally; never raises.

    Reconciles the blue-green environment (uncommitted switches go back), marks the run's
    ``running`` record (and, after a crash, corrects a ``cancelled`` one: the run cannot tell
    a runner's cancel from any other SIGTERM, Prefect can), and gives back the locks the run
    held (Lease annotated with its id).

    Args:
        run_id: the release's flow run id.
        parameters: the run's parameters (``environment``, ``catalogue_path``, ``services``).
        outcome: ``crashed`` or ``cancelled``.

    Returns:
        One line per thing done or failed.
    """
    log = get_logger(__name__)
    lines: list[str] = []
    try:
        catalogue = load_catalogue(parameters.get("catalogue_path") or DEFAULT_CATALOGUE)
        env = catalogue.environment(str(parameters.get("environment") or "production"))
        specs = catalogue.select(parameters.get("services"))
        envs = [env] + ([catalogue.environment(env.staging_environment)]
                        if env.staging_environment else [])
    except Exception as exc:  # a hook never raises: the run's state is already decided
        log.error("%s hook: could not read the run's catalogue: %s", outcome, exc)
        return [f"catalogue unreadable: {type(exc).__name__}"]
    for e in envs:
        try:
            lines += _clean_one(connect(e), run_id, outcome, specs)
        except Exception as exc:  # a hook never raises; the next release reconciles
            log.error("%s hook: clean-up of %s failed: %s", outcome, e.namespace,
                      type(exc).__name__)
            lines.append(f"{e.namespace}: clean-up failed ({type(exc).__name__})")
    for line in lines:
        log.warning("%s hook: %s", outcome, line)
    return lines
