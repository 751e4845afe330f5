"""Workload containers forked from a process that has the workload already imported.

A container running ``python -m sandbox.workload`` costs an interpreter start and its imports
(~80 ms of CPU, most of a short-lived pod's life) when it is exec'd. The kubelet instead asks a
fork server (the standard library's ``multiprocessing`` "forkserver": one single-threaded
process per kubelet, started on first use, that preloads the workload and ``prometheus_client``)
to fork it. The child then takes the container's working directory, environment and log file,
sets its process title to the command line it stands for (``ps`` and ``/proc/PID/cmdline``
show ``... -m sandbox.workload --host IP ...`` as before), and runs ``sandbox.workload.main``.

Differences from an exec'd container, all inside the sandbox:

- ``/proc/PID/environ`` shows the fork server's start-up environment, not the container's
  (``os.environ`` inside the container is the container's). ``VEZA_SANDBOX_FORK_PODS=0`` in the
  kubelet's environment turns forking off, for a test that reads a pod's environment from /proc.
- The fork server, not the kubelet, is the parent; it reaps the child and hands its exit status
  back, so exit codes (137 after SIGKILL, 1 for ``crash_on_start``) are the same.
- The fork server and its children share the kubelet's process group, as exec'd pods do, so
  stopping the emulator's group stops them too.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import sys
import threading
from collections.abc import Sequence
from multiprocessing.context import ForkServerContext

FORK_ENV = "VEZA_SANDBOX_FORK_PODS"
WORKLOAD_MODULE = "sandbox.workload"
_PRELOAD = [WORKLOAD_MODULE, "prometheus_client", "setproctitle", __name__]

FORK_LOCK = threading.Lock()
"""Held while a forked container is started or its status read (see ``processes.py``)."""


def workload_args(argv: Sequence[str]) -> list[str] | None:
    """The workload's own arguments when ``argv`` runs it with this interpreter and forking is on.

    Args:
        argv: a container's command line.

    Returns:
        The arguments after ``-m sandbox.workload``, or None when the container must be exec'd
        (another program or interpreter, or ``VEZA_SANDBOX_FORK_PODS=0``).
    """
    if os.environ.get(FORK_ENV, "1") == "0":
        return None
    if len(argv) < 3 or argv[0] != sys.executable or list(argv[1:3]) != ["-m", WORKLOAD_MODULE]:
        return None
    return list(argv[3:])


@functools.cache
def fork_context() -> ForkServerContext:
    """The process's fork-server context, with the workload preloaded (the server starts lazily).

    Returns:
        The context whose ``Process`` objects are forked by the fork server.
    """
    context = multiprocessing.get_context("forkserver")
    assert isinstance(context, ForkServerContext)
    context.set_forkserver_preload(_PRELOAD)
    return context


def run_container(
    title: str, args: list[str], env: dict[str, str], log_path: str, cwd: str
) -> None:
    """Child side: become the container, then run the workload until it exits.

    Args:
        title: the command line shown for the process.
        args: the workload's arguments.
        env: the container's full environment (replaces the fork server's).
        log_path: file receiving stdout and stderr (appended).
        cwd: working directory.

    Raises:
        SystemExit: always, with the workload's exit status.
    """
    import setproctitle

    from sandbox.workload import main

    # The title first: setproctitle finds the space it may overwrite by walking the C environment,
    # which clearing os.environ empties (the title is then silently not set).
    setproctitle.setproctitle(title)
    os.chdir(cwd)
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    os.close(null)
    os.environ.clear()
    os.environ.update(env)
    raise SystemExit(main(args))

