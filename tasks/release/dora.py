"""DORA metrics of an environment from its release records (pure), and their markdown report.

Definitions (per environment, over a window ending now; a record belongs to the window by
when it finished):

- **attempts**: releases that reached an outcome (``succeeded``, ``failed``, ``rolled-back``,
  ``rollback-incomplete``, ``crashed``). ``cancelled`` runs (an operator's decision) and dry
  runs are not attempts.
- **deployment frequency**: succeeded releases per day.
- **lead time**: median of commit timestamp -> release succeeded, over the succeeded releases
  that carry their commit's timestamp (``commit_timestamp``, given by CI).
- **change failure rate**: changes that failed in service (``rolled-back``,
  ``rollback-incomplete``, ``crashed``, or ``succeeded`` and later undone by a ``rollback``
  run) / attempts. A ``failed`` release stopped before its version took traffic: it counts
  against the success rate, not here.
- **deployment success rate**: succeeded / attempts.
- **MTTR**: mean of failure -> next success. An incident opens when a release fails (any
  failed outcome, at its end) or a rollback run starts, and closes when the next run of the
  environment (release or rollback) succeeds; failures in between belong to the same incident.
  It counts in the window where it closed; one still open is reported apart.

Targets are the deployment guide's success metrics (multiple deployments per day, lead time
< 1 h, MTTR < 5 min, change failure rate < 5 %, deployment success rate > 95 %).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from errors import InvalidInputError
from tasks.release.history import ReleaseRecord

FAILED_OUTCOMES = frozenset({"failed", "rolled-back", "rollback-incomplete", "crashed"})
IN_SERVICE_FAILURES = frozenset({"rolled-back", "rollback-incomplete", "crashed"})
ATTEMPT_OUTCOMES = FAILED_OUTCOMES | {"succeeded"}
DEFAULT_WINDOWS = (7, 30)


@dataclass(frozen=True)
class Target:
    """A guide's objective for one metric."""

    key: str
    title: str
    unit: str
    text: str
    met: Callable[[float], bool]


TARGETS: tuple[Target, ...] = (
    Target("deployment_frequency", "deployment frequency", "per_day",
           "multiple per day (>= 2/day)", lambda v: v >= 2.0),
    Target("lead_time", "lead time (commit -> succeeded)", "seconds", "< 1 h",
           lambda v: v < 3600.0),
    Target("mttr", "MTTR (failure -> next success)", "seconds", "< 5 min",
           lambda v: v < 300.0),
    Target("change_failure_rate", "change failure rate", "ratio", "< 5 %",
           lambda v: v < 0.05),
    Target("deployment_success_rate", "deployment success rate", "ratio", "> 95 %",
           lambda v: v > 0.95),
)


class Metric(BaseModel):
    """One metric over one window, against its target."""

    key: str
    title: str
    unit: str
    value: float | None
    samples: int
    target: str
    met: bool | None  # None: no data


class DoraReport(BaseModel):
    """An environment's DORA metrics over one window."""

    environment: str
    window_days: int
    since: datetime
    until: datetime
    attempts: int
    succeeded: int
    failed_changes: int
    incidents_closed: int
    open_incident_since: datetime | None = None
    records_from: datetime | None = None
    complete: bool = True
    metrics: list[Metric]

    def metric(self, key: str) -> Metric:
        """The metric named ``key`` (one of :data:`TARGETS`' keys).

        Args:
            key: e.g. ``lead_time``.

        Returns:
            The metric.
        """
        return next(m for m in self.metrics if m.key == key)


@dataclass(frozen=True)
class Incident:
    """A failure and the success that ended it (``restored_at`` None: still open)."""

    opened_at: datetime
    restored_at: datetime | None

    @property
    def duration_s(self) -> float | None:
        """Seconds from failure to restoration, when restored."""
        if self.restored_at is None:
            return None
        return max(0.0, (self.restored_at - self.opened_at).total_seconds())


def _end(record: ReleaseRecord) -> datetime:
    return record.finished_at or record.started_at


def _ordered(records: Sequence[ReleaseRecord]) -> list[ReleaseRecord]:
    return sorted(records, key=lambda r: (r.started_at, r.id))


def rolled_back_later(records: Sequence[ReleaseRecord]) -> set[str]:
    """Ids of succeeded releases that a later rollback run undid (pure).

    A rollback run (whatever its outcome but ``cancelled``) undoes the newest succeeded
    release before it that no earlier rollback undid.

    Args:
        records: an environment's records.

    Returns:
        The release ids.
    """
    undone: set[str] = set()
    last_success: ReleaseRecord | None = None
    for r in _ordered(records):
        if r.kind == "release" and r.outcome == "succeeded":
            last_success = r
        elif r.kind == "rollback" and r.outcome not in {"cancelled", "running", "dry-run"}:
            if last_success is not None:
                undone.add(last_success.id)
            last_success = None
    return undone


def incidents(records: Sequence[ReleaseRecord]) -> list[Incident]:
    """The environment's incidents, oldest first (pure; see the module's definition).

    Args:
        records: an environment's records.

    Returns:
        The incidents; the last one may be open.
    """
    found: list[Incident] = []
    opened: datetime | None = None
    for r in _ordered(records):
        if opened is None and r.kind == "rollback" and r.outcome not in {"cancelled", "dry-run"}:
            opened = r.started_at
        if r.outcome == "succeeded" and opened is not None:
            found.append(Incident(opened, _end(r)))
            opened = None
        elif r.kind == "release" and r.outcome in FAILED_OUTCOMES and opened is None:
            opened = _end(r)
    if opened is not None:
        found.append(Incident(opened, None))
    return found


def lead_time_s(record: ReleaseRecord) -> float | None:
    """Seconds from the release's commit to its success (None without a commit timestamp).

    Args:
        record: a succeeded release.

    Returns:
        The lead time (0 when clocks disagree and the commit looks newer).
    """
    if record.commit_timestamp is None or record.finished_at is None:
        return None
    return max(0.0, (record.finished_at - record.commit_timestamp).total_seconds())


def _metric(target: Target, value: float | None, samples: int) -> Metric:
    return Metric(key=target.key, title=target.title, unit=target.unit, value=value,
                  samples=samples, target=target.text,
                  met=None if value is None else target.met(value))


def compute(records: Sequence[ReleaseRecord], *, environment: str, days: int, now: datetime,
            keep: int | None = None) -> DoraReport:
    """An environment's DORA metrics over the ``days`` before ``now`` (pure).

    Args:
        records: the environment's records (any order; running and dry runs are ignored).
        environment: its name.
        days: the window's length.
        now: the window's end (timezone-aware).
        keep: how many records the history keeps (``history_size``): when it holds that many
            and the oldest is inside the window, the window is marked incomplete.

    Returns:
        The report.

    Raises:
        ValueError: ``days`` is not positive.
    """
    if days <= 0:
        raise ValueError(f"a window is a positive number of days, got {days}")
    since = now - timedelta(days=days)

    def inside(at: datetime) -> bool:
        return since < at <= now

    releases = [r for r in records if r.kind == "release" and r.outcome in ATTEMPT_OUTCOMES
                and inside(_end(r))]
    succeeded = [r for r in releases if r.outcome == "succeeded"]
    undone = rolled_back_later(records)
    failed_changes = [r for r in releases
                      if r.outcome in IN_SERVICE_FAILURES or r.id in undone]
    leads = [t for t in map(lead_time_s, succeeded) if t is not None]
    found = incidents(records)
    closed = [i.duration_s for i in found
              if i.restored_at is not None and inside(i.restored_at) and i.duration_s is not None]
    still_open = next((i.opened_at for i in found if i.restored_at is None), None)
    attempts = len(releases)
    values: dict[str, tuple[float | None, int]] = {
        "deployment_frequency": (len(succeeded) / days, len(succeeded)),
        "lead_time": (statistics.median(leads) if leads else None, len(leads)),
        "mttr": (statistics.fmean(closed) if closed else None, len(closed)),
        "change_failure_rate": (len(failed_changes) / attempts if attempts else None, attempts),
        "deployment_success_rate": (len(succeeded) / attempts if attempts else None, attempts),
    }
    oldest = min((r.started_at for r in records), default=None)
    complete = keep is None or len(records) < keep or oldest is None or oldest <= since
    return DoraReport(
        environment=environment, window_days=days, since=since, until=now, attempts=attempts,
        succeeded=len(succeeded), failed_changes=len(failed_changes),
        incidents_closed=len(closed), open_incident_since=still_open, records_from=oldest,
        complete=complete, metrics=[_metric(t, *values[t.key]) for t in TARGETS])


def compute_windows(records: Sequence[ReleaseRecord], *, environment: str, now: datetime,
                    windows: Sequence[int] = DEFAULT_WINDOWS,
                    keep: int | None = None) -> list[DoraReport]:
    """One report per window (pure).

    Args:
        records: the environment's records.
        environment: its name.
        now: the windows' end.
        windows: their lengths in days.
        keep: the history's size (see :func:`compute`).

    Returns:
        The reports, in the order of ``windows``.
    """
    return [compute(records, environment=environment, days=d, now=now, keep=keep)
            for d in windows]


def check_windows(windows: Sequence[int]) -> list[int]:
    """Check the windows of a report: whole days, 1 to 366, at least one.

    Args:
        windows: their lengths in days.

    Returns:
        Them, as a list.

    Raises:
        InvalidInputError: naming ``windows_days``.
    """
    if not windows or any(not 1 <= d <= 366 for d in windows):
        raise InvalidInputError("windows_days", f"{list(windows)} is not a list of windows",
                                fix="give whole days between 1 and 366, e.g. [7, 30]")
    return list(windows)


def format_value(metric: Metric) -> str:
    """A metric's value for people: ``3.4/day``, ``42 min``, ``2.5 %``, ``no data``.

    Args:
        metric: the metric.

    Returns:
        The text.
    """
    v = metric.value
    if v is None:
        return "no data"
    if metric.unit == "per_day":
        return f"{v:.1f}/day"
    if metric.unit == "ratio":
        return f"{100 * v:.1f} %"
    if v < 120:
        return f"{v:.0f} s"
    return f"{v / 60:.0f} min" if v < 7200 else f"{v / 3600:.1f} h"


def _cell(metric: Metric) -> str:
    mark = {True: "met", False: "**missed**", None: "-"}[metric.met]
    return f"{format_value(metric)} ({mark}, n={metric.samples})"


def to_markdown(reports: Sequence[DoraReport]) -> str:
    """The report of every environment and window, as markdown (one table per environment).

    Args:
        reports: the reports (several windows per environment).

    Returns:
        The markdown text.
    """
    lines = ["# DORA metrics", ""]
    if reports:
        lines.append(f"As of {reports[0].until.isoformat(timespec='seconds')}; targets from the "
                     "deployment guide's success metrics.")
    for environment in dict.fromkeys(r.environment for r in reports):
        mine = [r for r in reports if r.environment == environment]
        lines += ["", f"## {environment}", "",
                  "| metric | " + " | ".join(f"last {r.window_days} d" for r in mine)
                  + " | target |",
                  "|---|" + "---|" * len(mine) + "---|"]
        for target in TARGETS:
            cells = [_cell(r.metric(target.key)) for r in mine]
            lines.append(f"| {target.title} | " + " | ".join(cells) + f" | {target.text} |")
        lines.append("")
        for r in mine:
            lines.append(f"- last {r.window_days} d: {r.attempts} attempt(s), {r.succeeded} "
                         f"succeeded, {r.failed_changes} failed change(s), "
                         f"{r.incidents_closed} incident(s) restored")
            if not r.complete and r.records_from is not None:
                lines.append(f"  - incomplete: the history keeps only the newest records, from "
                             f"{r.records_from.isoformat(timespec='seconds')}")
        opened = mine[-1].open_incident_since if mine else None
        if opened is not None:
            lines.append(f"- **open incident** since {opened.isoformat(timespec='seconds')}: "
                         "no success since the last failure")
    return "\n".join(lines) + "\n"


@task(name="publish-dora-report", cache_policy=NO_CACHE)
def publish_dora_report_task(reports: Sequence[DoraReport]) -> None:
    """Publish the reports as the ``dora-report`` markdown artifact.

    Args:
        reports: every environment's reports.
    """
    envs = ", ".join(dict.fromkeys(r.environment for r in reports)) or "no environment"
    create_markdown_artifact(key="dora-report", markdown=to_markdown(reports),
                             description=f"DORA metrics of {envs}")
