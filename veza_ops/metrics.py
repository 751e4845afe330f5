"""`veza-ops metrics serve`: the DORA metrics of every environment as a Prometheus exporter.

The numbers are the ``dora-report`` flow's (``tasks/release/dora.py``), read from the release
records each environment keeps in its cluster through the Kubernetes blocks the catalogue
names (loaded from the Prefect API PREFECT_API_URL points at). They are recomputed at most
every ``--refresh`` seconds, whatever the scrape interval. A metric without data (no lead
time before CI gives commit timestamps, no MTTR without an incident) is left out rather than
exported as 0. ``veza_dora_up{environment}`` is 0 when an environment's records could not be
read (the reason goes to stderr, once per change).

Exit codes: 0 stopped by SIGINT/SIGTERM; 2 a usage or catalogue error.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prometheus_client.core import Metric as PromMetric
    from prometheus_client.registry import CollectorRegistry

    from tasks.release.dora import DoraReport

EXIT_OK = 0
EXIT_ERROR = 2
DEFAULT_PORT = 9464
# dora metric key -> (Prometheus name, help)
FAMILIES = {
    "deployment_frequency": ("veza_dora_deployment_frequency_per_day",
                             "Succeeded releases per day over the window."),
    "lead_time": ("veza_dora_lead_time_seconds",
                  "Median seconds from commit to release succeeded over the window."),
    "mttr": ("veza_dora_mttr_seconds",
             "Mean seconds from a failure to the next success, incidents closed in the window."),
    "change_failure_rate": ("veza_dora_change_failure_ratio",
                            "Releases that failed in service or were rolled back / attempts."),
    "deployment_success_rate": ("veza_dora_deployment_success_ratio",
                                "Succeeded releases / attempts over the window."),
}

Reader = Callable[[], "tuple[list[DoraReport], dict[str, str]]"]


def families(reports: Sequence[DoraReport], errors: dict[str, str],
             environments: Sequence[str]) -> list[PromMetric]:
    """The Prometheus metric families for a set of reports.

    Args:
        reports: every environment's reports (several windows each).
        errors: environment -> why its records could not be read.
        environments: every environment exported (for ``veza_dora_up``).

    Returns:
        The families, ready for a collector.
    """
    from prometheus_client.core import GaugeMetricFamily

    labels = ["environment", "window"]
    by_key = {key: GaugeMetricFamily(name, text, labels=labels)
              for key, (name, text) in FAMILIES.items()}
    met = GaugeMetricFamily("veza_dora_target_met",
                            "1 when the metric meets the deployment guide's target, else 0.",
                            labels=[*labels, "metric"])
    counts = GaugeMetricFamily("veza_dora_releases",
                               "Releases over the window by kind of result.",
                               labels=[*labels, "result"])
    opened = GaugeMetricFamily("veza_dora_open_incident_since_timestamp_seconds",
                               "Start of the incident still open (no success since a failure).",
                               labels=["environment"])
    up = GaugeMetricFamily("veza_dora_up", "1 when the environment's records were read.",
                           labels=["environment"])
    for r in reports:
        window = f"{r.window_days}d"
        for m in r.metrics:
            if m.value is not None:
                by_key[m.key].add_metric([r.environment, window], m.value)
            if m.met is not None:
                met.add_metric([r.environment, window, m.key], float(m.met))
        for result, value in (("attempted", r.attempts), ("succeeded", r.succeeded),
                              ("failed_change", r.failed_changes)):
            counts.add_metric([r.environment, window, result], value)
    for env in dict.fromkeys(r.environment for r in reports):
        since = next((r.open_incident_since for r in reports
                      if r.environment == env and r.open_incident_since), None)
        if since is not None:
            opened.add_metric([env], since.timestamp())
    for env in environments:
        up.add_metric([env], 0.0 if env in errors else 1.0)
    return [*by_key.values(), met, counts, opened, up]


@dataclass(eq=False)  # registries key collectors by identity
class DoraCollector:
    """A Prometheus collector recomputing the reports at most every ``refresh_s`` seconds."""

    read: Reader
    environments: Sequence[str]
    refresh_s: float = 30.0
    _cached: tuple[float, list[PromMetric]] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def collect(self) -> Iterator[PromMetric]:
        """Yield the metric families (recomputed when older than ``refresh_s``).

        Yields:
            Each family.
        """
        with self._lock:
            now = time.monotonic()
            if self._cached is None or now - self._cached[0] >= self.refresh_s:
                reports, errors = self.read()
                self._cached = (now, families(reports, errors, self.environments))
            yield from self._cached[1]


def catalogue_reader(catalogue_path: str, environments: Sequence[str], *,
                     windows: Sequence[int]) -> Reader:
    """A function reading every environment's records and computing its reports.

    Args:
        catalogue_path: the service catalogue YAML.
        environments: the environments to read.
        windows: the windows in days.

    Returns:
        The reader: ``(reports, environment -> error)``; an unreadable environment is left
        out of the reports and named in the errors (its message, which never holds secrets).
    """
    from errors import VezaOpsError
    from tasks.release.catalogue import load_catalogue
    from tasks.release.dora import compute_windows
    from tasks.release.history import environment_history

    catalogue = load_catalogue(catalogue_path)
    envs = [catalogue.environment(name) for name in environments]
    last_errors: dict[str, str] = {}

    def read() -> tuple[list[DoraReport], dict[str, str]]:
        now = datetime.now(UTC)
        reports: list[DoraReport] = []
        errors: dict[str, str] = {}
        for env in envs:
            try:
                history = environment_history(env)
            except VezaOpsError as exc:
                errors[env.name] = str(exc)
                continue
            except Exception as exc:  # e.g. the Prefect API unreachable: up 0, never a 500
                errors[env.name] = f"records unreadable ({type(exc).__name__})"
                continue
            reports += compute_windows(history, environment=env.name, now=now,
                                       windows=windows, keep=env.history_size)
        for name, message in errors.items():
            if last_errors.get(name) != message:
                print(f"veza-ops metrics: {name}: {message}", file=sys.stderr, flush=True)
        last_errors.clear()
        last_errors.update(errors)
        return reports, errors

    return read


def registry_for(collector: DoraCollector) -> CollectorRegistry:
    """A registry holding only the collector (none of the process's default metrics).

    Args:
        collector: the DORA collector.

    Returns:
        The registry.
    """
    from prometheus_client.registry import CollectorRegistry

    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


def add_metrics_command(subparsers: Any) -> None:
    """Register ``veza-ops metrics serve`` on an argparse subparsers object.

    Args:
        subparsers: the object returned by ``add_subparsers``.
    """
    p = subparsers.add_parser("metrics", help="DORA metrics as a Prometheus exporter")
    sub = p.add_subparsers(dest="metrics_command", required=True)
    serve = sub.add_parser("serve", help="serve /metrics until interrupted",
                           description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    serve.add_argument("--catalogue", default=None,
                       help="the service catalogue YAML (default: the project's own)")
    serve.add_argument("--environment", "-e", action="append", default=[], metavar="ENV",
                       help="an environment to export (repeat; default: all of the catalogue)")
    serve.add_argument("--address", default="127.0.0.1",
                       help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT,
                       help=f"port to listen on (default {DEFAULT_PORT}; 0: any free port)")
    serve.add_argument("--window", type=int, action="append", default=[], metavar="DAYS",
                       help="a window in days (repeat; default: 7 and 30)")
    serve.add_argument("--refresh", type=float, default=30.0,
                       help="seconds between two readings of the records (default 30)")


def serve(args: argparse.Namespace, *, ready: Callable[[str], None] | None = None,
          stop: threading.Event | None = None) -> int:
    """Serve the metrics until ``stop`` is set (or SIGINT/SIGTERM in the main thread).

    Args:
        args: parsed arguments of ``metrics serve``.
        ready: called with the ``/metrics`` URL once listening (default: printed).
        stop: set it to stop serving.

    Returns:
        The exit code.
    """
    from prometheus_client import start_http_server

    from errors import VezaOpsError
    from tasks.release.catalogue import DEFAULT_CATALOGUE, load_catalogue
    from tasks.release.dora import DEFAULT_WINDOWS, check_windows

    catalogue = args.catalogue or str(DEFAULT_CATALOGUE)
    try:
        windows = check_windows(args.window or list(DEFAULT_WINDOWS))
        if args.refresh < 0:
            raise VezaOpsError("--refresh: must not be negative", hint="pass e.g. 30")
        names = args.environment or list(load_catalogue(catalogue).environments)
        read = catalogue_reader(catalogue, names, windows=windows)
    except VezaOpsError as exc:
        print(f"veza-ops metrics serve: {exc}", file=sys.stderr)
        return EXIT_ERROR
    collector = DoraCollector(read, names, refresh_s=args.refresh)
    server, thread = start_http_server(args.port, args.address, registry_for(collector))
    url = f"http://{args.address}:{server.server_port}/metrics"
    (ready or (lambda u: print(f"serving DORA metrics on {u}", flush=True)))(url)
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
    try:
        stop.wait()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    return EXIT_OK


def run_metrics_command(args: argparse.Namespace) -> int:
    """Execute ``veza-ops metrics`` from parsed arguments.

    Args:
        args: parsed arguments.

    Returns:
        The process exit code.
    """
    return serve(args)
