"""The dora-report flow: each environment's DORA metrics over 7 and 30 days, as an artifact."""

from __future__ import annotations

from datetime import UTC, datetime

from prefect import flow

from tasks.release.catalogue import DEFAULT_CATALOGUE, load_catalogue
from tasks.release.dora import (
    DEFAULT_WINDOWS,
    DoraReport,
    check_windows,
    compute_windows,
    publish_dora_report_task,
)
from tasks.release.history import environment_history_task


@flow(name="dora-report", log_prints=False)
def dora_report(
    environments: list[str] | None = None,
    windows_days: list[int] | None = None,
    catalogue_path: str = str(DEFAULT_CATALOGUE),
) -> list[DoraReport]:
    """Compute deployment frequency, lead time, MTTR, change failure and success rates.

    Read from the release records each environment keeps in its cluster, against the
    deployment guide's targets; published as the ``dora-report`` markdown artifact.

    Args:
        environments: environments of the catalogue (default: all of them).
        windows_days: the windows, in days (default: 7 and 30).
        catalogue_path: the service catalogue YAML (default: the project's own).

    Returns:
        One report per environment and window.
    """
    windows = check_windows(windows_days or list(DEFAULT_WINDOWS))
    catalogue = load_catalogue(catalogue_path)
    envs = [catalogue.environment(name) for name in (environments or catalogue.environments)]
    now = datetime.now(UTC)
    reports: list[DoraReport] = []
    for env in envs:
        history = environment_history_task(env)
        reports += compute_windows(history, environment=env.name, now=now, windows=windows,
                                   keep=env.history_size)
    publish_dora_report_task(reports)
    return reports
