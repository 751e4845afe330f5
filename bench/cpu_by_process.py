"""Where a command's CPU goes, by kind of process, across the whole machine.

``/usr/bin/time`` counts only the processes its command reaps: the suite's daemons (a
sandbox's emulators, servers started in their own session) escape it, and it says nothing of
which process spent what. This samples ``/proc`` once a second while the command runs: every
process's CPU time, grouped by a kind read off its command line (the Prefect servers, the
Kubernetes emulators, pods, moto, PostgreSQL, the test workers...), and how busy the machine
was. A process seen for the first time counts whole, so a short one started and gone within
one second is missed (its kind shows as ``?`` when only its zombie was seen).

    python -m bench.cpu_by_process -- .venv/bin/pytest -q -n 5 --dist loadgroup

prints the command's exit status, the mean busy share of the machine's cores and the CPU-s
of each kind, biggest first. Compare two versions of the code only in runs taken one after
the other: the machine's speed drifts.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

HZ = os.sysconf("SC_CLK_TCK")

# (substring of the command line, kind): the first match wins.
KINDS: tuple[tuple[str, str], ...] = (
    ("sandbox.loadgen", "load generators"), ("sandbox.workload", "pods"),
    ("forkserver", "pod fork servers"), ("sandbox.vault", "Vault emulators"),
    ("sandbox.k8s", "Kubernetes emulators"), ("moto_server", "moto"),
    ("prometheus", "Prometheus"), ("server start", "Prefect servers"),
    ("uvicorn", "Prefect servers"), ("prefect.engine", "flow runs under a Prefect worker"),
    ("_workspace_supervisor", "flow runs under a Prefect worker"),
    ("prefect worker", "Prefect workers"), ("pytest-xdist", "test workers"),
    ("execnet", "test workers"), ("-u -c", "test workers"), ("bin/pytest", "pytest"),
    ("chrom", "Chromium"), ("nginx", "nginx"), ("pgbackrest", "pgBackRest"),
    ("-m veza_ops", "veza-ops CLI"), ("bench.", "benchmarks"),
    ("flows.release import release", "crash-test releases"),
)


def kind_of(cmdline: str) -> str:
    """The kind of a process, from its command line (``?`` when it has none).

    Args:
        cmdline: ``/proc/PID/cmdline`` with NULs turned into spaces.

    Returns:
        A name from :data:`KINDS`, ``PostgreSQL``, or the program's name.
    """
    for needle, kind in KINDS:
        if needle in cmdline:
            return kind
    if cmdline.startswith("postgres") or "/postgres " in cmdline:
        return "PostgreSQL"
    return Path(cmdline.split(maxsplit=1)[0]).name if cmdline.strip() else "?"


def _processes() -> dict[int, tuple[int, str]]:
    """PID -> (CPU ticks so far, command line) of every process readable now."""
    found: dict[int, tuple[int, str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            raw = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        found[int(entry)] = (int(fields[11]) + int(fields[12]),
                             raw.replace(b"\0", b" ").decode(errors="replace"))
    return found


def _busy_ticks() -> tuple[int, int]:
    """(busy, total) ticks of all cores since boot (iowait counts as idle)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(values) - values[3] - values[4], sum(values)


def sample(command: list[str], interval_s: float = 1.0) -> tuple[int, float, Counter[str]]:
    """Run ``command`` and sample every process's CPU until it ends.

    Args:
        command: the command and its arguments.
        interval_s: seconds between two samples.

    Returns:
        (exit status, mean busy share of the cores, CPU-s by kind).
    """
    seen = _processes()
    busy0, total0 = _busy_ticks()
    by_kind: Counter[str] = Counter()
    proc = subprocess.Popen(command)
    while True:
        done = proc.poll() is not None
        now = _processes()
        for pid, (ticks, cmdline) in now.items():
            before = seen.get(pid)
            spent = ticks - before[0] if before else ticks
            if spent > 0:  # (a PID reused by a later process reads negative: skipped)
                by_kind[kind_of(cmdline)] += spent
        seen.update(now)
        if done:
            break
        time.sleep(interval_s)
    busy1, total1 = _busy_ticks()
    share = (busy1 - busy0) / max(1, total1 - total0)
    return int(proc.returncode or 0), share, Counter({k: v / HZ for k, v in by_kind.items()})


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m bench.cpu_by_process -- COMMAND...``.

    Args:
        argv: arguments (defaults to ``sys.argv[1:]``).

    Returns:
        The command's exit status.
    """
    parser = argparse.ArgumentParser(prog="python -m bench.cpu_by_process")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give a command after --")
    started = time.monotonic()
    status, share, by_kind = sample(command)
    print(f"exit {status}; {time.monotonic() - started:.0f} s; cores busy {share:.0%}; "
          f"{sum(by_kind.values()):.0f} CPU-s sampled", file=sys.stderr)
    for kind, seconds in by_kind.most_common():
        if seconds >= 0.5:
            print(f"{seconds:8.1f}  {kind}", file=sys.stderr)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
