"""The demo's processes: start them all, record them, stop them (also after a crash).

Every process the demo starts is recorded in the sandbox's own record of running processes
(``DIR/sandbox/state.json``, see :func:`sandbox.stack.record_process`), so one
``sandbox.stack.down`` stops the demo's PostgreSQL, S3, Prefect server and worker as well as
the sandbox, by pid and start time. The sandbox is imported lazily (it is its own distribution).
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DIR = PROJECT_ROOT / ".sandbox" / "demo"
WORKER = "prefect-worker"
SANDBOX_SUBDIR = "sandbox"
GOOD_VERSION = "1.1.0"
BAD_VERSION = "1.2.0"
BAD_SERVICE = "veza/backend-api"
PRODUCTION_NS = "veza-production"
DORA_EXPORTER = "dora-exporter"
DORA_JOB = "veza-dora"
DORA_SCRAPE = {"scrape_interval": "15s", "scrape_timeout": "10s"}  # it refreshes every 30 s
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
class Stack:
    """The demo's directory; what runs there is recorded in its sandbox's ``state.json``."""

    dir: Path

    @property
    def sandbox_dir(self) -> Path:
        """The sandbox's directory, whose ``state.json`` records every process of the demo."""
        return self.dir / SANDBOX_SUBDIR

    def record(self, name: str, pid: int, **extra: Any) -> None:
        """Record a started process so that :meth:`stop` (or the next run) stops it.

        Args:
            name: the process's name in the record.
            pid: its pid.
            **extra: passed to :func:`sandbox.stack.record_process`.
        """
        from sandbox.stack import record_process

        record_process(self.sandbox_dir, name, pid, **extra)

    def stop(self) -> None:
        """Stop every recorded process, last started first, then the sandbox; never raises."""
        from sandbox.stack import down

        with contextlib.suppress(Exception):
            down(self.sandbox_dir)


def clean_stale(dir: Path) -> None:
    """Stop what a previous demo in ``dir`` left running and drop its Prefect database.

    Only processes recorded in the sandbox's ``state.json`` whose pid and start time still
    match are stopped, so a recycled pid is never signalled.

    Args:
        dir: the demo directory.
    """
    Stack(dir).stop()
    shutil.rmtree(dir / "prefect", ignore_errors=True)
    for log in ("prefect-worker.log", "prefect-cli.log", "moto.log", f"{DORA_EXPORTER}.log"):
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


def dora_scrape_config(config: str, target: str) -> str:
    """A Prometheus configuration with the DORA exporter as one more scrape job (pure).

    The job ``veza-dora`` scrapes ``target`` every 15 s (the exporter recomputes at most every
    30 s, whatever the scrape interval); every other job is kept as it was, and a previous
    ``veza-dora`` job is replaced, so applying it twice gives the same configuration.

    Args:
        config: the current ``prometheus.yml`` (YAML text).
        target: the exporter's ``host:port``.

    Returns:
        The new YAML text.
    """
    import yaml

    document = yaml.safe_load(config) or {}
    jobs = [j for j in document.get("scrape_configs") or [] if j.get("job_name") != DORA_JOB]
    jobs.append({"job_name": DORA_JOB, **DORA_SCRAPE, "metrics_path": "/metrics",
                 "static_configs": [{"targets": [target], "labels": {"exporter": "veza-ops"}}]})
    document["scrape_configs"] = jobs
    return yaml.safe_dump(document, sort_keys=False)


def start_dora_exporter(stack: Stack, sandbox: Any, server: Any, dir: Path) -> str:
    """Start ``veza-ops metrics serve`` (recorded) and add it to the sandbox Prometheus.

    Args:
        stack: the demo's stack (records the exporter so that stopping the demo stops it).
        sandbox: the running sandbox (its Prometheus gets the scrape job; reloaded).
        server: the Prefect server (the exporter loads the Kubernetes block from it).
        dir: the demo directory (the exporter's log).

    Returns:
        The exporter's ``/metrics`` URL.

    Raises:
        RuntimeError: Prometheus refused the new configuration.
    """
    import httpx

    from sandbox.procs import free_port, spawn, wait_until

    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    env = {**server.client_env(), "PYTHONPATH": str(PROJECT_ROOT)}
    proc = spawn([sys.executable, "-m", "veza_ops", "metrics", "serve", "--port", str(port)],
                 log_path=dir / f"{DORA_EXPORTER}.log", env=env, cwd=PROJECT_ROOT)
    stack.record(DORA_EXPORTER, proc.pid, port=port, url=url)

    def listening() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"the DORA exporter exited ({proc.returncode}); see "
                               f"{dir / f'{DORA_EXPORTER}.log'}")
        try:  # listening is enough: a scrape (which reads the cluster) is Prometheus' job
            httpx.head(url, timeout=10)
            return True
        except httpx.HTTPError:
            return False

    wait_until(listening, timeout=120, what=f"the DORA exporter on {url}")
    config = Path(sandbox.dir) / "prometheus" / "prometheus.yml"
    config.write_text(dora_scrape_config(config.read_text(), f"127.0.0.1:{port}"))
    answer = httpx.post(f"{sandbox.prometheus_url}/-/reload", timeout=30)
    if answer.status_code != 200:
        raise RuntimeError(f"Prometheus refused the DORA scrape job: {answer.text[:200]}")
    return url


def build_stack(dir: Path, out: TextIO) -> tuple[Stack, Any, Any]:
    """Start the sandbox, PostgreSQL, S3, Prefect and a worker; deploy; register blocks.

    Args:
        dir: the demo directory.
        out: where progress goes.

    Returns:
        The stack, the sandbox and the Prefect server.
    """
    from sandbox.launchers.gpg import generate_key
    from sandbox.launchers.postgres import start_postgres
    from sandbox.launchers.prefect_server import start_prefect_server
    from sandbox.launchers.s3 import start_s3
    from sandbox.launchers.s3_tls import start_s3_tls
    from sandbox.procs import free_port
    from sandbox.stack import up
    from veza_ops.automations import install_automations
    from veza_ops.blocks_setup import (
        RecoveryBlockNames,
        register_pitr_block,
        register_recovery_blocks,
        register_release_blocks,
        sandbox_pitr_block,
        sandbox_recovery_blocks,
    )
    from veza_ops.demo_pitr import point_pitr_deployments, prepare_archiving

    stack = Stack(dir)
    try:
        print("- sandbox: Kubernetes emulator, Prometheus, Vault emulator (seeded)", file=out)
        sandbox = up(stack.sandbox_dir, seed=True)
        print("- S3 (moto) with the bucket `veza-backups`, gpg test key", file=out)
        s3 = start_s3(dir)
        stack.record("s3", s3.pid, url=s3.endpoint_url)
        _create_bucket(s3)
        key = generate_key("veza-backup", passphrase=secrets.token_urlsafe(12))
        print("- TLS front (nginx) for pgBackRest's S3 repository", file=out)
        front = start_s3_tls(s3.endpoint_url)
        stack.record("s3-tls", front.pid, remove=[front.root])
        archiving = prepare_archiving(sandbox_pitr_block(
            s3=s3, front=front, bucket=BUCKET, passphrase=secrets.token_urlsafe(24)),
            port=free_port())
        print("- PostgreSQL 15 with a seeded `veza` database, archiving WAL through pgBackRest "
              f"(archive_timeout {archiving.settings['archive_timeout']} s)", file=out)
        try:
            pg = start_postgres(user=archiving.superuser, port=archiving.host.port,
                                root=archiving.root, local_auth="peer",
                                settings=archiving.settings)
        except BaseException:
            shutil.rmtree(archiving.root, ignore_errors=True)
            raise
        stack.record("postgres", pg.pid, remove=[pg.root], port=pg.port)
        _seed_database(pg)
        print("- Prefect server (UI included)", file=out)
        # Generous: on a busy 2-core machine its first start (database, UI) can pass 2 minutes.
        server = start_prefect_server(dir / "prefect", ui=True, timeout=300)
        stack.record("prefect-server", server.pid, url=server.ui_url)
        env = server.client_env()
        print("- work pool `veza-ops`, `prefect deploy --all`", file=out)
        _prefect(["work-pool", "create", "veza-ops", "--type", "process", "--overwrite"], env,
                 dir / "prefect-cli.log")
        _prefect(["deploy", "--all"], env, dir / "prefect-cli.log")
        print("- automations (zombie runs, crash rollback, Slack alerts), backup limit", file=out)
        with prefect_settings(server):
            install_automations(databases=[DATABASE], out=out)
            register_release_blocks(sandbox)
            register_recovery_blocks(**sandbox_recovery_blocks(
                pg=pg, dbname=DATABASE, s3=s3, bucket=BUCKET, key=key))
            register_pitr_block(archiving.repo)
            pointed = point_pitr_deployments(
                archiving.host, check_database_block=RecoveryBlockNames().database_block)
        print(f"- PITR deployments pointed at the demo's cluster (parameter host): "
              f"{', '.join(pointed)}", file=out)
        push_demo_images(sandbox)
        print("- DORA exporter (`veza-ops metrics serve`), scraped by Prometheus as job "
              f"`{DORA_JOB}`", file=out)
        start_dora_exporter(stack, sandbox, server, dir)
        print("- process worker on `veza-ops`", file=out)
        worker_env = {**sandbox.env(), "PYTHONPATH": str(PROJECT_ROOT),
                      "PREFECT_WORKER_QUERY_SECONDS": "2"}
        pid = server.start_worker(cwd=PROJECT_ROOT, log_dir=dir, extra_env=worker_env)
        stack.record(WORKER, pid, stop_children=True)
    except BaseException:
        stack.stop()
        raise
    return stack, sandbox, server
