"""`veza-ops demo`: the whole of veza-ops on the local sandbox, driven through the Prefect API."""

from __future__ import annotations

import argparse
import contextlib
import json
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DIR = PROJECT_ROOT / ".sandbox" / "demo"
STATE_FILE = "demo.json"
WORKER = "prefect-worker"
GOOD_VERSION = "1.1.0"
BAD_VERSION = "1.2.0"
BAD_SERVICE = "veza/backend-api"
PRODUCTION_NS = "veza-production"
BUCKET = "veza-backups"
DATABASE = "veza"
SEED_SQL = """
CREATE TABLE artists (id serial PRIMARY KEY, name text NOT NULL UNIQUE, country text);
CREATE TABLE tracks (id bigserial PRIMARY KEY, artist_id int NOT NULL REFERENCES artists(id),
                     title text NOT NULL, duration_s int NOT NULL);
CREATE TABLE users (id bigserial PRIMARY KEY, email text NOT NULL UNIQUE, created_at timestamptz);
INSERT INTO artists (name, country)
    SELECT 'artist ' || g, (ARRAY['FR','DE','US'])[1 + g % 3] FROM generate_series(1, 50) g;
INSERT INTO tracks (artist_id, title, duration_s)
    SELECT 1 + g % 50, 'track ' || g, 60 + g % 300 FROM generate_series(1, 500) g;
INSERT INTO users (email, created_at)
    SELECT 'listener' || g || '@veza.invalid', now() - g * interval '1 hour'
    FROM generate_series(1, 200) g;
"""


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

    @property
    def as_expected(self) -> bool:
        """Whether the run ended the way the demo meant it to."""
        return self.exit_code == self.expected_exit


@dataclass
class Stack:
    """Everything the demo started, so that it can be stopped again (also after a crash)."""

    dir: Path
    processes: dict[str, dict[str, Any]] = field(default_factory=dict)
    stoppers: list[tuple[str, Callable[[], None]]] = field(default_factory=list)

    def record(self, name: str, pid: int, **extra: Any) -> None:
        """Note a started process in ``DIR/demo.json`` (for the next run's stale cleanup)."""
        self.processes[name] = {"pid": pid, "ticks": _start_ticks(pid), **extra}
        (self.dir / STATE_FILE).write_text(json.dumps(self.processes, indent=2))

    def on_stop(self, name: str, stop: Callable[[], None]) -> None:
        """Register how to stop a part (stopped in reverse order)."""
        self.stoppers.append((name, stop))

    def stop(self) -> None:
        """Stop every part, last started first; never raises."""
        from sandbox.stack import down

        for _name, stop in reversed(self.stoppers):
            with contextlib.suppress(Exception):
                stop()
        self.stoppers.clear()
        with contextlib.suppress(Exception):
            down(self.dir / "sandbox")
        (self.dir / STATE_FILE).unlink(missing_ok=True)


def _start_ticks(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return int(stat.read().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` (a worker's flow-run processes run in their own sessions)."""
    found: list[int] = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
    return found


def _stop_flow_runs(worker_pid: int) -> None:
    """Stop the flow-run processes a worker started (each leads its own session)."""
    from sandbox.procs import stop_pid

    for child in _children(worker_pid):
        stop_pid(child, timeout=20)


def clean_stale(dir: Path) -> None:
    """Stop what a previous demo in ``dir`` left running and drop its Prefect database.

    Only processes recorded in ``DIR/demo.json`` whose pid and start time still match are
    stopped, so a recycled pid is never signalled.

    Args:
        dir: the demo directory.
    """
    from sandbox.procs import stop_pid
    from sandbox.stack import down

    state_path = dir / STATE_FILE
    if state_path.exists():
        with contextlib.suppress(ValueError):
            for name, entry in json.loads(state_path.read_text()).items():
                pid = int(entry.get("pid") or 0)
                if pid > 0 and _start_ticks(pid) == entry.get("ticks"):
                    if name == WORKER:
                        _stop_flow_runs(pid)
                    stop_pid(pid, timeout=20)
                if entry.get("root"):
                    shutil.rmtree(entry["root"], ignore_errors=True)
        state_path.unlink(missing_ok=True)
    down(dir / "sandbox")
    shutil.rmtree(dir / "prefect", ignore_errors=True)
    for log in ("prefect-worker.log", "prefect-cli.log", "moto.log"):
        (dir / log).unlink(missing_ok=True)


def _seed_database(pg: Any) -> None:
    import psycopg

    with psycopg.connect(pg.conninfo(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{DATABASE}"')
    with psycopg.connect(pg.conninfo(DATABASE)) as conn:
        conn.execute(SEED_SQL)


def _create_bucket(s3: Any) -> None:
    import boto3

    boto3.client(
        "s3", endpoint_url=s3.endpoint_url, aws_access_key_id=s3.access_key,
        aws_secret_access_key=s3.secret_key, region_name=s3.region,
    ).create_bucket(Bucket=BUCKET)


def push_demo_images(sandbox: Any) -> None:
    """Push 1.1.0 (healthy) and 1.2.0 (backend API too slow: p99 900 ms) to the sandbox registry.

    Args:
        sandbox: the running :class:`sandbox.stack.Sandbox`.
    """
    from sandbox.registry import Behaviour
    from sandbox.seeding import SERVICES

    for service in SERVICES:
        sandbox.registry.push(service.image(GOOD_VERSION), Behaviour())
        bad = service.image(BAD_VERSION).startswith(BAD_SERVICE + ":")
        sandbox.registry.push(service.image(BAD_VERSION),
                              Behaviour(latency_ms=900) if bad else Behaviour())


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


def _prefect(argv: list[str], env: dict[str, str], log: Path) -> None:
    exe = str(Path(sys.executable).with_name("prefect"))
    with open(log, "ab") as out:
        done = subprocess.run([exe, "--no-prompt", *argv], cwd=PROJECT_ROOT, env=env,
                              stdout=out, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"`prefect {' '.join(argv)}` failed ({done.returncode}); see {log}")


@contextlib.contextmanager
def prefect_settings(server: Any) -> Iterator[None]:
    """Point this process's Prefect client at ``server`` for the duration of the block."""
    from prefect.settings import (
        PREFECT_API_AUTH_STRING,
        PREFECT_API_URL,
        PREFECT_UI_URL,
        temporary_settings,
    )

    updates: dict[Any, Any] = {PREFECT_API_URL: server.api_url, PREFECT_UI_URL: server.ui_url}
    if server.auth_string:
        updates[PREFECT_API_AUTH_STRING] = server.auth_string
    with temporary_settings(updates=updates):
        yield


def build_stack(dir: Path, out: TextIO) -> tuple[Stack, Any, Any]:
    """Start the sandbox, PostgreSQL, S3, Prefect and a worker; deploy; register blocks.

    Args:
        dir: the demo directory.
        out: where progress goes.

    Returns:
        The stack, the sandbox and the Prefect server.
    """
    from sandbox.gpg import generate_key
    from sandbox.postgres import start_postgres
    from sandbox.prefect_server import start_prefect_server
    from sandbox.s3 import start_s3
    from sandbox.stack import up
    from veza_ops.automations import ensure_zombie_automation
    from veza_ops.blocks_setup import (
        register_recovery_blocks,
        register_release_blocks,
        sandbox_recovery_blocks,
    )

    stack = Stack(dir)
    try:
        print("- sandbox: Kubernetes emulator, Prometheus, Vault emulator (seeded)", file=out)
        sandbox = up(dir / "sandbox", seed=True)
        print("- PostgreSQL 15 with a seeded `veza` database", file=out)
        pg = start_postgres()
        stack.record("postgres", pg.pid, root=str(pg.root))
        stack.on_stop("postgres", pg.stop)
        _seed_database(pg)
        print("- S3 (moto) with the bucket `veza-backups`, gpg test key", file=out)
        s3 = start_s3(dir)
        stack.record("s3", s3.pid)
        stack.on_stop("s3", s3.stop)
        _create_bucket(s3)
        key = generate_key("veza-backup", passphrase=secrets.token_urlsafe(12))
        print("- Prefect server (UI included)", file=out)
        server = start_prefect_server(dir / "prefect", ui=True)
        stack.record("prefect-server", server.pid)
        stack.on_stop("prefect-server", server.stop)
        env = server.client_env()
        print("- work pool `veza-ops`, `prefect deploy --all`", file=out)
        _prefect(["work-pool", "create", "veza-ops", "--type", "process", "--overwrite"], env,
                 dir / "prefect-cli.log")
        _prefect(["deploy", "--all"], env, dir / "prefect-cli.log")
        with prefect_settings(server):
            ensure_zombie_automation()
            register_release_blocks(sandbox)
            register_recovery_blocks(**sandbox_recovery_blocks(
                pg=pg, dbname=DATABASE, s3=s3, bucket=BUCKET, key=key))
        push_demo_images(sandbox)
        print("- process worker on `veza-ops`", file=out)
        worker_env = {**sandbox.env(), "PYTHONPATH": str(PROJECT_ROOT),
                      "PREFECT_WORKER_QUERY_SECONDS": "2"}
        pid = server.start_worker(cwd=PROJECT_ROOT, log_dir=dir, extra_env=worker_env)
        stack.record(WORKER, pid)
        stack.on_stop(WORKER, lambda: _stop_flow_runs(pid))
    except BaseException:
        stack.stop()
        raise
    return stack, sandbox, server


def demo_steps() -> list[Step]:
    """The runs the demo triggers, in order (the prune dry run publishes the backup catalogue).

    Returns:
        The steps.
    """
    by = {"skip_build": True, "triggered_by": "veza-ops demo"}
    return [
        Step("good release", "release/production", {"version": GOOD_VERSION, **by}, 0),
        Step("bad release", "release/production", {"version": BAD_VERSION, **by}, 1),
        Step("backup", "backup/nightly-full", {}, 0),
        Step("restore test", "restore-test/monthly", {}, 0),
        Step("backup catalogue", "prune-backups/daily", {"dry_run": True}, 0),
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
        print("\n" + summary_table(steps), file=out)
        ok = all(s.as_expected for s in steps)
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
