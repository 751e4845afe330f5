"""Run a chain of processes connected by pipes, stream through it, check every exit status."""

from __future__ import annotations

import collections
import contextlib
import fcntl
import os
import select
import signal
import subprocess
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from errors import PipelineError

STDERR_TAIL = 2048
PIPE_SIZE = 1 << 20  # bytes a pipe between two stages holds (Linux default: 64 KiB)


def _widen(fd: int) -> None:
    """Let the pipe behind ``fd`` hold :data:`PIPE_SIZE` bytes, when the system allows.

    With the default 64 KiB, every stage blocks and wakes every 64 KiB: on a busy machine
    that is a context switch per 64 KiB per stage. A refusal (above
    ``/proc/sys/fs/pipe-max-size`` for an unprivileged user, or too much pipe memory) keeps
    the default: it only costs speed.
    """
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)


@dataclass
class Stage:
    """One process of a pipeline.

    Attributes:
        name: short name used in errors (``pg_dump``).
        argv: the command, never a shell string; must not contain secrets.
        env: its environment (no secret: e.g. ``PGPASSFILE`` names a 0600 file holding it).
        pass_fds: extra file descriptors it inherits (e.g. a passphrase pipe).
        count_output: count the bytes it writes (see :meth:`Pipeline.counted`).
    """

    name: str
    argv: Sequence[str]
    env: dict[str, str] | None = None
    pass_fds: tuple[int, ...] = ()
    count_output: bool = False


@dataclass
class StageResult:
    """How a stage ended."""

    name: str
    returncode: int | None
    stderr_tail: str

    @property
    def ok(self) -> bool:
        """True when it exited 0."""
        return self.returncode == 0

    def describe(self) -> str:
        """Human summary, e.g. ``pg_dump killed by SIGKILL``."""
        rc = self.returncode
        if rc is None:
            return f"{self.name} still running"
        if rc < 0:
            with contextlib.suppress(ValueError):
                return f"{self.name} killed by {signal.Signals(-rc).name}"
        return f"{self.name} exited with {rc}"


def _drain(stream: IO[bytes], tail: collections.deque[bytes], total: list[int]) -> None:
    for chunk in iter(lambda: stream.read1(4096), b""):  # type: ignore[attr-defined]
        tail.append(chunk)
        total[0] += len(chunk)
    stream.close()


def _written(pid: int) -> int | None:
    """Bytes process ``pid`` has written so far (``wchar`` of ``/proc/<pid>/io``), or None.

    Readable for our own children, also once they exited and before they are reaped.
    """
    try:
        with open(f"/proc/{pid}/io", encoding="ascii") as io:
            for line in io:
                if line.startswith("wchar:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def _wait_exited(proc: subprocess.Popen[bytes], timeout: float | None) -> None:
    """Wait until ``proc`` exited, without reaping it (its ``/proc`` entry stays readable).

    Raises:
        subprocess.TimeoutExpired: it still runs after ``timeout`` seconds.
    """
    if proc.returncode is not None:
        return  # already reaped
    try:
        pidfd = os.pidfd_open(proc.pid)
    except OSError:  # kernel before 5.3: no timeout, the count is still taken
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
        return
    try:
        ready, _, _ = select.select([pidfd], [], [], timeout)
        if not ready:
            raise subprocess.TimeoutExpired(proc.args, timeout or 0.0)
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
    finally:
        os.close(pidfd)


@dataclass
class Pipeline:
    """A started chain ``stage0 | stage1 | ...``; use as a context manager.

    ``stdin``: ``subprocess.DEVNULL`` or ``subprocess.PIPE`` (then write to :attr:`stdin`).
    ``stdout``: ``subprocess.PIPE`` (then read :attr:`stdout`) or an open binary file.
    Leaving the context kills whatever still runs and waits for every process.
    """

    stages: list[Stage]
    stdin: Any = subprocess.DEVNULL
    stdout: Any = subprocess.PIPE
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _tails: list[collections.deque[bytes]] = field(default_factory=list)
    _threads: list[threading.Thread] = field(default_factory=list)
    _stderr_bytes: list[list[int]] = field(default_factory=list)
    _counts: dict[int, int] = field(default_factory=dict)  # last count of a counted stage
    _final: set[int] = field(default_factory=set)  # counted stages whose count is final

    def __enter__(self) -> Pipeline:
        try:
            self._start()
        except BaseException:
            self.kill()
            self._reap()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()
        self._reap()

    def _start(self) -> None:
        upstream: Any = self.stdin
        for i, stage in enumerate(self.stages):
            last = i == len(self.stages) - 1
            proc = subprocess.Popen(
                list(stage.argv),
                stdin=upstream,
                stdout=self.stdout if last else subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=stage.env,
                pass_fds=stage.pass_fds,
            )
            self.procs.append(proc)
            if i > 0 and upstream is not None and not isinstance(upstream, int):
                upstream.close()  # the child holds its own copy
            elif isinstance(upstream, int) and upstream > 2 and i > 0:
                os.close(upstream)
            tail: collections.deque[bytes] = collections.deque(maxlen=STDERR_TAIL // 64)
            self._tails.append(tail)
            total = [0]
            self._stderr_bytes.append(total)
            if stage.count_output:
                self._counts[i] = 0
            assert proc.stderr is not None
            drain = threading.Thread(target=_drain, args=(proc.stderr, tail, total), daemon=True)
            drain.start()
            self._threads.append(drain)
            if proc.stdout is not None:
                _widen(proc.stdout.fileno())
            if last:
                break
            upstream = proc.stdout

    @property
    def input(self) -> IO[bytes]:
        """The first stage's stdin (when started with ``stdin=PIPE``)."""
        assert self.procs[0].stdin is not None
        return self.procs[0].stdin

    @property
    def output(self) -> IO[bytes]:
        """The last stage's stdout (when started with ``stdout=PIPE``)."""
        assert self.procs[-1].stdout is not None
        return self.procs[-1].stdout

    def pid(self, name: str) -> int:
        """Pid of the stage called ``name``."""
        return next(p.pid for s, p in zip(self.stages, self.procs, strict=False) if s.name == name)

    def counted(self, name: str) -> int:
        """Bytes stage ``name`` wrote to its stdout so far (needs ``count_output``).

        Read from the kernel's account of the process (``wchar`` in ``/proc/<pid>/io``) minus
        what it wrote to stderr, so nothing sits in the data path: no copy, no thread between
        the stage and the next (a Python relay thread needed the GIL for every chunk and
        slowed the whole pipeline). Only the process's own writes count (not its children's),
        and files it writes would count too: count only stages that write their stdout
        alone, themselves (pg_dump and pg_dumpall do). Exact once
        :meth:`wait` returned; while it runs, it lacks the write in progress (the kernel
        counts a write when it returns) and may include stderr not yet read.
        """
        index = next(i for i, s in enumerate(self.stages) if s.name == name)
        if index not in self._counts:
            raise KeyError(f"stage {name} is not counted: set count_output")
        if index not in self._final:
            self._update_count(index)
        return self._counts[index]

    def _update_count(self, index: int, *, final: bool = False) -> None:
        written = _written(self.procs[index].pid)
        if written is not None:
            count = written - self._stderr_bytes[index][0]
            self._counts[index] = count if final else max(self._counts[index], count)

    def kill(self) -> None:
        """SIGKILL every stage that still runs."""
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()

    def _reap(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(Exception):
                proc.wait(timeout=30)
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    with contextlib.suppress(Exception):
                        stream.close()
        for thread in self._threads:
            thread.join(timeout=10)

    def wait(self, timeout: float | None = None) -> list[StageResult]:
        """Wait for every stage and collect how each ended.

        Args:
            timeout: seconds to wait for each process.

        Returns:
            One result per stage, in order.
        """
        for index, proc in enumerate(self.procs):
            if index in self._counts and index not in self._final:
                _wait_exited(proc, timeout)  # not reaped yet: its /proc entry is still there
                self._threads[index].join(timeout=10)  # stderr drained to its end
                self._update_count(index, final=True)
                self._final.add(index)
            proc.wait(timeout=timeout)
        for thread in self._threads:
            thread.join(timeout=10)
        return [
            StageResult(s.name, p.returncode, b"".join(t).decode(errors="replace")[-STDERR_TAIL:])
            for s, p, t in zip(self.stages, self.procs, self._tails, strict=True)
        ]

    def check(self, timeout: float | None = None) -> list[StageResult]:
        """Wait and raise unless every stage exited 0.

        Args:
            timeout: seconds to wait for each process.

        Returns:
            The stage results (all successful).

        Raises:
            PipelineError: naming the failed stages, their status and stderr tail.
        """
        results = self.wait(timeout)
        failed = [r for r in results if not r.ok]
        if failed:
            first = failed[0]
            detail = first.stderr_tail.strip().splitlines()[-3:]
            raise PipelineError(
                "pipeline failed: "
                + "; ".join(r.describe() for r in results)
                + (f" ({first.name} said: {' / '.join(detail)})" if detail else ""),
                hint=f"see why {first.name} stopped; nothing was kept from this attempt",
            )
        return results
