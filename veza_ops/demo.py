"""`veza-ops demo`: the whole of veza-ops on the local sandbox, driven through the Prefect API."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from veza_ops.demo_pitr import print_backups
from veza_ops.demo_stack import (
    BAD_VERSION,
    DEFAULT_DIR,
    GOOD_VERSION,
    PRODUCTION_NS,
    build_stack,
    clean_stale,
    prefect_settings,
)


@dataclass
class Step:
    """One triggered run of the demo and what was expected of it."""

    label: str
    deployment: str
    params: dict[str, Any]
    expected_exit: int
    exit_code: int | None = None
    state: str | None = None
    link: str | None = None
    duration_s: float = 0.0
    note: str = ""
    run_id: str | None = None
    show_report: bool = False

    @property
    def as_expected(self) -> bool:
        """Whether the run ended the way the demo meant it to."""
        return self.exit_code == self.expected_exit


def production_selectors(sandbox: Any) -> dict[str, str]:
    """Service name -> colour its Service selects in ``veza-production``.

    Args:
        sandbox: the running sandbox.

    Returns:
        The selectors.
    """
    from kubernetes import client, config

    from sandbox.seeding import SERVICES

    api = config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(sandbox.kubeconfig), context="sandbox")
    core = client.CoreV1Api(api)
    out: dict[str, str] = {}
    for service in SERVICES:
        spec = core.read_namespaced_service(service.name, PRODUCTION_NS).spec
        selector = (spec.selector if spec else None) or {}
        out[service.name] = str(selector.get("color"))
    return out


def demo_steps() -> list[Step]:
    """The runs the demo triggers, in order (the prune dry run publishes the backup catalogue).

    The PITR deployments were pointed at the demo's WAL-archiving cluster when it was set up
    (:func:`veza_ops.demo_pitr.point_pitr_deployments`): their runs need no parameter.

    Returns:
        The steps.
    """
    by = {"skip_build": True, "triggered_by": "veza-ops demo"}
    return [
        Step("good release", "release/production", {"version": GOOD_VERSION, **by}, 0),
        Step("bad release", "release/production", {"version": BAD_VERSION, **by}, 1),
        Step("backup", "backup/nightly-full", {}, 0),
        Step("restore test", "restore-test/monthly", {}, 0, show_report=True),
        Step("PITR full backup", "pitr-backup/pitr-weekly-full", {}, 0),
        Step("PITR check (RPO)", "pitr-check/every-5-min", {}, 0, show_report=True),
        Step("backup catalogue", "prune-backups/daily", {"dry_run": True}, 0, show_report=True),
    ]


def run_steps(steps: list[Step], sandbox: Any, server: Any, out: TextIO) -> None:
    """Trigger each step through the API (like CI does) and follow it to its end.

    Args:
        steps: the runs to trigger.
        sandbox: the running sandbox (to read the production Services).
        server: the Prefect server.
        out: where progress goes.
    """
    from veza_ops.trigger import EXIT_ERROR, TriggerError, trigger

    live: dict[str, str] = {}
    for step in steps:
        print(f"\n== {step.label}: {step.deployment} {step.params}", file=out)
        started = time.monotonic()
        try:
            with prefect_settings(server):
                outcome = trigger(step.deployment, step.params, wait=True, timeout=900, out=out)
            step.exit_code, step.state, step.link = outcome.exit_code, outcome.state, outcome.link
            step.run_id = outcome.flow_run_id
            step.note = outcome.reason
        except TriggerError as error:
            step.exit_code, step.note = EXIT_ERROR, str(error)
        step.duration_s = time.monotonic() - started
        if step.deployment.startswith("release/"):
            selectors = production_selectors(sandbox)
            print(f"production Services select: {selectors}", file=out)
            if step.expected_exit == 0:
                live = selectors
            elif step.as_expected:
                back = bool(live) and selectors == live
                step.note = ("rolled back: Services select the old colour again" if back
                             else f"NOT rolled back: {selectors}")
                if not back:
                    step.exit_code = EXIT_ERROR


def print_reports(steps: list[Step], server: Any, out: TextIO) -> None:
    """Print the markdown artifacts of the runs that publish one, as the Prefect UI shows them.

    These are the restore-test report and the backup catalogue.

    Args:
        steps: the finished steps.
        server: the Prefect server.
        out: where the reports go.
    """
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    for step in steps:
        if not (step.show_report and step.run_id):
            continue
        with prefect_settings(server), get_client(sync_client=True) as client:
            runs = FlowRunFilter(id=FlowRunFilterId(any_=[UUID(step.run_id)]))
            artifacts = client.read_artifacts(flow_run_filter=runs)
        for artifact in artifacts:
            if artifact.type == "markdown" and isinstance(artifact.data, str):
                print(f"\n-- {step.label}: artifact {artifact.key} --\n{artifact.data}", file=out)


def summary_table(steps: list[Step]) -> str:
    """The summary table (run, outcome, duration, link).

    Args:
        steps: the finished steps.

    Returns:
        The table as text.
    """
    rows = [("run", "outcome", "expected", "duration", "link")]
    for s in steps:
        rows.append((f"{s.label} ({s.deployment})", s.state or f"exit {s.exit_code}",
                     "yes" if s.as_expected else "NO", f"{s.duration_s:.0f} s", s.link or "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    notes = [f"  {s.label}: {s.note}" for s in steps if s.note]
    return "\n".join([*lines, "", *notes])


def run_demo(dir: Path = DEFAULT_DIR, *, exit_after: bool = False,
             out: TextIO = sys.stdout) -> int:
    """Set up everything, trigger the demo runs, print the summary; stay up until Ctrl-C.

    Args:
        dir: the demo directory (stale state of a previous demo there is cleaned first).
        exit_after: tear everything down after the summary instead of waiting for Ctrl-C.
        out: where progress goes.

    Returns:
        0 when every run ended as expected, else 1.
    """
    dir = Path(dir).resolve()
    dir.mkdir(parents=True, exist_ok=True)
    clean_stale(dir)
    print(f"veza-ops demo in {dir}", file=out)
    stack, sandbox, server = build_stack(dir, out)
    try:
        steps = demo_steps()
        run_steps(steps, sandbox, server, out)
        print_reports(steps, server, out)
        with prefect_settings(server):
            rpo_ok = print_backups(out)
        print("\n" + summary_table(steps), file=out)
        ok = all(s.as_expected for s in steps) and rpo_ok
        print(f"\nPrefect UI: {server.ui_url}   (worker log: {dir / 'prefect-worker.log'})",
              file=out)
        print(f"sandbox env: . {dir / 'sandbox' / 'env'}", file=out)
        if not exit_after:
            print("everything stays up; press Ctrl-C to stop it all", file=out)
            _wait_for_interrupt()
        return 0 if ok else 1
    finally:
        print("stopping the demo stack", file=out)
        stack.stop()


def _wait_for_interrupt() -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with contextlib.suppress(KeyboardInterrupt):
        stop.wait()


def add_demo_command(subparsers: Any) -> None:
    """Register ``veza-ops demo`` on an argparse subparsers object.

    Args:
        subparsers: the object returned by ``add_subparsers``.
    """
    p = subparsers.add_parser("demo", help="run the whole of veza-ops on the local sandbox")
    p.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="demo directory")
    p.add_argument("--exit", action="store_true", help="tear down after the summary")


def run_demo_command(args: argparse.Namespace) -> int:
    """Execute ``veza-ops demo`` from parsed arguments.

    Args:
        args: parsed arguments.

    Returns:
        The process exit code.
    """
    return run_demo(args.dir, exit_after=args.exit)
