"""Launcher of the real Prometheus (Debian package) that scrapes the sandbox's pods.

Everything lives in ``DIR/prometheus/``: ``prometheus.yml`` (scrape and evaluation every
second, one ``file_sd`` job ``veza-pods`` reading ``targets.json``, which the Kubernetes
emulator rewrites), the TSDB in ``data/`` and the log. The Veza alert rules are
``sandbox/launchers/prometheus_rules.yml``. :meth:`PrometheusServer.stop` and
:meth:`PrometheusServer.start` let fault tests take Prometheus away and bring it back.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml

from sandbox.procs import SandboxError, free_port, pid_alive, spawn, stop_pid, wait_until

PROMETHEUS_BIN = os.environ.get("VEZA_PROMETHEUS_BIN", "/usr/bin/prometheus")
RULES_FILE = Path(__file__).resolve().parent / "prometheus_rules.yml"
JOB = "veza-pods"


def targets_path(dir: Path) -> Path:
    """Where the file_sd target list of sandbox ``dir`` lives.

    Args:
        dir: the sandbox directory.

    Returns:
        ``DIR/prometheus/targets.json``.
    """
    return Path(dir) / "prometheus" / "targets.json"


def render_config(*, targets: Path, rules: Path = RULES_FILE) -> str:
    """Build the Prometheus configuration.

    Args:
        targets: the file_sd JSON file.
        rules: the alert rules file.

    Returns:
        YAML text.
    """
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules)],
        "scrape_configs": [
            {
                "job_name": JOB,
                "metrics_path": "/metrics",
                "file_sd_configs": [{"files": [str(targets)], "refresh_interval": "1s"}],
            }
        ],
    }
    return yaml.safe_dump(config, sort_keys=False)


@dataclass
class PrometheusServer:
    """One Prometheus process of a sandbox; ``pid`` is None while it is stopped."""

    home: Path
    port: int
    pid: int | None = None

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:9090``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def config_path(self) -> Path:
        """The configuration file."""
        return self.home / "prometheus.yml"

    def running(self) -> bool:
        """Tell whether the process is alive.

        Returns:
            True when it runs.
        """
        return self.pid is not None and pid_alive(self.pid)

    def ready(self) -> bool:
        """Tell whether Prometheus answers ``/-/ready`` with 200.

        Returns:
            True when ready.
        """
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    def start(self, *, timeout: float = 60.0) -> None:
        """Start Prometheus (no-op when it already runs) and wait until it is ready.

        Args:
            timeout: seconds to wait for ``/-/ready``.

        Raises:
            SandboxError: when it exits or is not ready in time (the log tail is included).
        """
        if self.running():
            return
        if shutil.which(PROMETHEUS_BIN) is None:
            raise SandboxError(
                f"prometheus binary {PROMETHEUS_BIN} not found: install the Debian package "
                "`prometheus` or set VEZA_PROMETHEUS_BIN"
            )
        log = self.home / "prometheus.log"
        proc = spawn(
            [
                PROMETHEUS_BIN,
                f"--config.file={self.config_path}",
                f"--storage.tsdb.path={self.home / 'data'}",
                "--storage.tsdb.retention.time=1d",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle",
                "--log.level=warn",
            ],
            log_path=log,
            cwd=self.home,
        )
        self.pid = proc.pid

        def _ready_or_dead() -> bool:
            if proc.poll() is not None:
                tail = log.read_text(errors="replace")[-2000:]
                raise SandboxError(f"prometheus exited with status {proc.returncode}: {tail}")
            return self.ready()

        wait_until(_ready_or_dead, timeout=timeout, what=f"prometheus ready at {self.url}")

    def stop(self) -> None:
        """Stop Prometheus (idempotent); its data stays on disk for the next start."""
        if self.pid is not None:
            stop_pid(self.pid)
        self.pid = None

    def restart(self) -> None:
        """Stop then start again."""
        self.stop()
        self.start()

    def reload(self) -> None:
        """Ask a running Prometheus to re-read its configuration and rules.

        Raises:
            SandboxError: when the reload is refused.
        """
        answer = httpx.post(f"{self.url}/-/reload", timeout=10.0)
        if answer.status_code != 200:
            raise SandboxError(f"prometheus reload failed: {answer.status_code} {answer.text}")


def configure_prometheus(dir: Path, *, port: int | None = None) -> PrometheusServer:
    """Write ``DIR/prometheus/prometheus.yml`` (and an empty target list when none exists).

    Args:
        dir: the sandbox directory.
        port: listen port (a free one when None).

    Returns:
        The (not yet started) server.
    """
    home = Path(dir) / "prometheus"
    (home / "data").mkdir(parents=True, exist_ok=True)
    targets = targets_path(dir)
    if not targets.exists():
        targets.write_text(json.dumps([]))
    server = PrometheusServer(home=home, port=port or free_port())
    server.config_path.write_text(render_config(targets=targets))
    return server


def start_prometheus(dir: Path, *, port: int | None = None) -> PrometheusServer:
    """Configure and start Prometheus for sandbox ``dir``.

    Args:
        dir: the sandbox directory.
        port: listen port (a free one when None).

    Returns:
        The running, ready server.
    """
    server = configure_prometheus(dir, port=port)
    server.start()
    return server
