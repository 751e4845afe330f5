"""The suite-time tool: a child's CPU is found and filed under its kind."""

from __future__ import annotations

import sys
from pathlib import Path

from bench.cpu_by_process import kind_of, main, sample

BURN = "import time\nend = time.process_time() + 0.5\nwhile time.process_time() < end: pass"


def test_kinds_are_read_off_command_lines() -> None:
    assert kind_of("/venv/bin/python -m sandbox.k8s --dir /tmp/x") == "Kubernetes emulators"
    assert kind_of("postgres: veza prefect 127.0.0.1(4155) idle") == "PostgreSQL"
    assert kind_of("/usr/bin/prometheus --config.file=/tmp/p.yml") == "Prometheus"
    assert kind_of("") == "?"


def test_a_child_burning_cpu_is_counted_under_its_kind() -> None:
    status, share, by_kind = sample([sys.executable, "-c", BURN], interval_s=0.1)
    assert status == 0 and 0.0 < share <= 1.0
    assert by_kind[Path(sys.executable).name] >= 0.3, by_kind  # half a second burnt


def test_only_the_leading_double_dash_is_taken_off_the_command() -> None:
    keeps_its_own = "import sys; sys.exit(0 if sys.argv[1:] == ['--', 'x'] else 3)"
    assert main(["--", sys.executable, "-c", keeps_its_own, "--", "x"]) == 0
