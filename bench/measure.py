"""Run a command and measure it: wall time, peak RSS of its process tree, largest single RSS."""

from __future__ import annotations

import os
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Measured:
    """What one measured run cost."""

    wall_s: float
    tree_peak_rss: int  # bytes: the largest sum of RSS over the whole process tree, sampled
    max_rss: int  # bytes: the largest single process (getrusage of the waited-for tree)
    returncode: int
    stdout: str
    stderr: str
    peaks: dict[str, int] = field(default_factory=dict)  # sampled peak RSS per command name
    cpu_s: float = 0.0  # user + system CPU of the whole waited-for tree (getrusage), seconds
    cpu_by_name: dict[str, float] = field(default_factory=dict)  # sampled, per command name


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        # the command name is in parentheses and may contain spaces: split after the last ")"
        fields = stat[stat.rfind(")") + 2 :].split()
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    return children


def _name_and_rss(pid: int) -> tuple[str, int]:
    name, rss = "?", 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Name:"):
                name = line.split(maxsplit=1)[1] if len(line.split()) > 1 else "?"
            elif line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
    except OSError:
        pass
    return name, rss


def cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` (all its threads) so far, 0 when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rfind(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def tree_cpu_seconds(root: int) -> float:
    """CPU of ``root`` and its live descendants, plus the reaped children each one waited for.

    For a server (the postmaster, moto) the difference of two readings is what it spent in
    between, on behalf of whoever asked.
    """
    children = _children_map()
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        total += sum(int(f) for f in fields[11:15]) / _TICKS
        todo.extend(children.get(pid, []))
    return total


_TICKS = os.sysconf("SC_CLK_TCK")


def tree_rss(
    root: int, cpu: dict[int, tuple[str, float]] | None = None
) -> tuple[int, dict[str, int]]:
    """RSS of ``root`` and all its descendants, now.

    Args:
        root: a pid.
        cpu: if given, updated with each process's name and CPU seconds so far (a process
            that exits between two samples loses at most one interval of CPU).

    Returns:
        (the sum in bytes, the largest RSS per command name).
    """
    children = _children_map()
    total, todo = 0, [root]
    by_name: dict[str, int] = {}
    while todo:
        pid = todo.pop()
        name, rss = _name_and_rss(pid)
        total += rss
        by_name[name] = max(by_name.get(name, 0), rss)
        if cpu is not None and name != "?":
            cpu[pid] = (name, max(cpu.get(pid, (name, 0.0))[1], cpu_seconds(pid)))
        todo.extend(children.get(pid, []))
    return total, by_name


class _Sampler(threading.Thread):
    def __init__(self, pid: int, interval: float) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval, self.peak = pid, interval, 0
        self.peaks: dict[str, int] = {}
        self.cpu: dict[int, tuple[str, float]] = {}  # pid -> (name, CPU seconds last seen)
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            total, by_name = tree_rss(self.pid, self.cpu)
            self.peak = max(self.peak, total)
            for name, rss in by_name.items():
                self.peaks[name] = max(self.peaks.get(name, 0), rss)
            self.done.wait(self.interval)

    def cpu_by_name(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, seconds in self.cpu.values():
            out[name] = out.get(name, 0.0) + seconds
        return out


def measure(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    interval: float = 0.1,
    timeout: float | None = None,
) -> Measured:
    """Run ``argv`` to completion, sampling the RSS of its process tree.

    Args:
        argv: the command (no shell unless argv is a shell).
        env: its environment.
        cwd: its working directory.
        interval: seconds between RSS samples.
        timeout: seconds before it is killed.

    Returns:
        The measurements; the caller checks ``returncode``.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.monotonic()
        proc = subprocess.Popen(
            list(argv),
            env=dict(env) if env is not None else None,
            cwd=cwd,
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        sampler = _Sampler(proc.pid, interval)
        sampler.start()
        killer = threading.Timer(timeout, os.killpg, (proc.pid, 9)) if timeout else None
        if killer:
            killer.start()
        try:
            _pid, status, usage = os.wait4(proc.pid, 0)
        finally:
            if killer:
                killer.cancel()
        wall = time.monotonic() - start
        sampler.done.set()
        sampler.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    return Measured(
        wall_s=wall,
        tree_peak_rss=sampler.peak,
        max_rss=usage.ru_maxrss * 1024,
        returncode=proc.returncode,
        stdout=stdout,
        stderr=stderr,
        peaks=dict(sampler.peaks),
        cpu_s=usage.ru_utime + usage.ru_stime,
        cpu_by_name={k: round(v, 2) for k, v in sampler.cpu_by_name().items()},
    )
