"""Run a chain of processes connected by pipes, stream through it, check every exit status."""

from __future__ import annotations

import collections
import contextlib
import fcntl
import os
import signal
import subprocess
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from errors import PipelineError

STDERR_TAIL = 2048
SPLICE_CHUNK = 1 << 20
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
        count_output: relay its stdout through a counting thread (zero-copy ``splice``).
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


def _drain(stream: IO[bytes], tail: collections.deque[bytes]) -> None:
    for chunk in iter(lambda: stream.read1(4096), b""):  # type: ignore[attr-defined]
        tail.append(chunk)
    stream.close()


@dataclass
class _Relay:
    src: IO[bytes]
    dst_fd: int
    count: int = 0
    thread: threading.Thread | None = None

    def run(self) -> None:
        src_fd = self.src.fileno()
        try:
            while True:
                moved = os.splice(src_fd, self.dst_fd, SPLICE_CHUNK)
                if moved == 0:
                    break
                self.count += moved
        except OSError:
            pass  # downstream died; its exit status tells the story
        finally:
            os.close(self.dst_fd)
            self.src.close()


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
    _relays: dict[int, _Relay] = field(default_factory=dict)

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
            assert proc.stderr is not None
            drain = threading.Thread(target=_drain, args=(proc.stderr, tail), daemon=True)
            drain.start()
            self._threads.append(drain)
            if proc.stdout is not None:
                _widen(proc.stdout.fileno())
            if last:
                break
            assert proc.stdout is not None
            if stage.count_output:
                read_fd, write_fd = os.pipe()
                _widen(read_fd)
                assert proc.stdout is not None
                relay = _Relay(proc.stdout, write_fd)
                relay.thread = threading.Thread(target=relay.run, daemon=True)
                relay.thread.start()
                self._relays[i] = relay
                upstream = read_fd
            else:
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
        """Bytes relayed out of stage ``name`` (needs ``count_output``)."""
        index = next(i for i, s in enumerate(self.stages) if s.name == name)
        return self._relays[index].count

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
        for thread in self._threads + [r.thread for r in self._relays.values() if r.thread]:
            thread.join(timeout=10)

    def wait(self, timeout: float | None = None) -> list[StageResult]:
        """Wait for every stage and collect how each ended.

        Args:
            timeout: seconds to wait for each process.

        Returns:
            One result per stage, in order.
        """
        for proc in self.procs:
            proc.wait(timeout=timeout)
        for thread in self._threads + [r.thread for r in self._relays.values() if r.thread]:
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
