"""A PostgreSQL started on a restored data directory: guards, settings, recovery, stop.

After :func:`tasks.recovery.pitr.restore.restore_to_time` wrote the files, PostgreSQL replays
WAL up to the target and promotes (``recovery_target_action=promote``). Here: the port guard
(never a port a running cluster holds), the settings appended to ``postgresql.auto.conf``
(its own port and socket directory, ``archive_mode=off`` so the restored cluster never pushes
a new timeline into the production repository), ``pg_ctl start`` as the cluster's OS user,
waiting for ``pg_controldata`` to say ``in production``, and what the server log says about
the recovery (the last replayed commit's time, the WAL replayed).
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from blocks.pgbackrest import DatabaseHost
from errors import InvalidInputError, PermanentSystemError, RestoreRefusedError
from tasks.recovery.pitr.runner import CHILD_PATH, os_user_ids

SYSTEM = "PostgreSQL (restored cluster)"
_LAST_COMMIT = re.compile(r"last completed transaction was at log time (\S+ \S+)")
_REDO_START = re.compile(r"redo starts at ([0-9A-F]+)/([0-9A-F]+)")
_REDO_DONE = re.compile(r"redo done at ([0-9A-F]+)/([0-9A-F]+)")
_STATE = re.compile(r"^Database cluster state:\s*(.+)$", re.M)


def _listening(address: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        try:
            return sock.connect_ex((address, port)) == 0
        except OSError:
            return False


def check_port_free(port: int, host: DatabaseHost, socket_dir: Path | None = None) -> None:
    """Refuse a port the live cluster or anything else already uses, before anything is written.

    Args:
        port: the port the restored cluster would listen on.
        host: the host (its live cluster's port is refused by name).
        socket_dir: the socket directory the restored cluster would use (default the host's).

    Raises:
        InvalidInputError: out of range.
        RestoreRefusedError: the live cluster's port, a TCP listener on loopback, or a
            PostgreSQL socket file for that port.
    """
    if not 1024 <= port <= 65535:
        raise InvalidInputError("port", f"{port} is out of range", fix="choose 1024-65535")
    if port == host.port:
        raise RestoreRefusedError(
            f"port {port} is the live cluster's (host.port): a PITR restore never goes over "
            "a running cluster; choose a free port")
    sock = (socket_dir or Path(host.socket_dir)) / f".s.PGSQL.{port}"
    if sock.exists() or any(_listening(a, port) for a in ("127.0.0.1", "::1")):
        raise RestoreRefusedError(
            f"port {port} is taken (a server listens on it, or {sock} exists): a running "
            "cluster may hold it; choose a free port")


def _write(path: Path, text: str, host: DatabaseHost, *, append: bool = False) -> None:
    """Write a file the cluster's OS user owns (the worker may be root)."""
    with open(path, "a" if append else "w", encoding="utf-8") as out:
        out.write(text)
    ids = os_user_ids(host)
    if ids:
        os.chown(path, *ids)


def _append_settings(data: Path, settings: dict[str, str], host: DatabaseHost) -> None:
    """Append ``name = 'value'`` lines to postgresql.auto.conf (later lines win)."""
    lines = "".join(f"{k} = '{v.replace(chr(39), chr(39) * 2)}'\n" for k, v in settings.items())
    _write(data / "postgresql.auto.conf", "# veza-ops: restored cluster (PITR)\n" + lines, host,
           append=True)


def configure(
    host: DatabaseHost, data: Path, port: int, socket_dir: Path, *, private_dir: Path | None
) -> None:
    """Give the restored cluster its port and socket directory, with archiving off.

    Args:
        host: the host (the OS user owning what is written).
        data: the restored data directory.
        port: its port.
        socket_dir: its Unix socket directory.
        private_dir: for a scratch cluster (restore test): a 0700 directory where an
            ``hba`` file allowing only local trust is written; no TCP listener. None for a
            kept cluster (its own pg_hba.conf applies).
    """
    settings = {"port": str(port), "unix_socket_directories": str(socket_dir),
                "archive_mode": "off"}
    if private_dir is not None:
        hba, ident = private_dir / "pg_hba.conf", private_dir / "pg_ident.conf"
        _write(hba, "local all all trust\n", host)
        _write(ident, "", host)
        settings.update(listen_addresses="", hba_file=str(hba), ident_file=str(ident))
    if not (data / "postgresql.conf").exists():  # Debian keeps it in /etc/postgresql
        _write(data / "postgresql.conf", "# veza-ops: restored without a config file\n", host)
    if private_dir is None and not (data / "pg_hba.conf").exists():
        _write(data / "pg_hba.conf", "local all all peer\n", host)
    _append_settings(data, settings, host)


def _run(
    host: DatabaseHost, argv: list[str], *, timeout_s: float
) -> subprocess.CompletedProcess[str]:
    ids = os_user_ids(host)
    return subprocess.run(
        argv, capture_output=True, text=True, errors="replace", check=False,
        env={"PATH": CHILD_PATH, "LANG": "C.UTF-8", "TZ": "UTC"}, stdin=subprocess.DEVNULL,
        timeout=timeout_s, user=ids[0] if ids else None, group=ids[1] if ids else None,
        extra_groups=[] if ids else None, cwd="/",
    )


def _log_tail(log: Path, lines: int = 8) -> str:
    with contextlib.suppress(OSError):
        text = log.read_text(errors="replace").splitlines()
        wanted = [x for x in text if "FATAL" in x or "PANIC" in x] or text
        return " | ".join(x.strip() for x in wanted[-lines:])
    return "(no log)"


def cluster_state(host: DatabaseHost, data: Path) -> str:
    """``Database cluster state`` of ``pg_controldata`` (``in production`` once promoted).

    Args:
        host: the host (its ``pg_bin_dir``, OS user).
        data: the data directory.

    Returns:
        The state text.
    """
    proc = _run(host, [f"{host.pg_bin_dir}/pg_controldata", "-D", str(data)], timeout_s=60)
    match = _STATE.search(proc.stdout)
    return match.group(1).strip() if match else f"unknown ({proc.stderr.strip()[:200]})"


def start(host: DatabaseHost, data: Path, log: Path, *, timeout_s: float) -> None:
    """``pg_ctl start`` on the restored directory, as the cluster's OS user.

    Args:
        host: the host.
        data: the data directory (configured by :func:`configure`).
        log: the server log file (created; must be writable by the OS user).
        timeout_s: how long ``pg_ctl`` waits for the server to accept connections.

    Raises:
        PermanentSystemError: the server did not start (the log's FATAL lines quoted).
    """
    proc = _run(host, [f"{host.pg_bin_dir}/pg_ctl", "start", "-D", str(data), "-l", str(log),
                       "-w", "-t", str(int(timeout_s))], timeout_s=timeout_s + 30)
    if proc.returncode != 0:
        raise PermanentSystemError(
            SYSTEM, f"pg_ctl start on {data} failed: {_log_tail(log)}",
            hint="a target past the newest archived WAL ends recovery early; see the log")


def wait_promoted(host: DatabaseHost, data: Path, log: Path, *, timeout_s: float) -> None:
    """Wait until recovery reached the target and the cluster promoted.

    Args:
        host: the host.
        data: the data directory.
        log: the server log (quoted when the server stopped).
        timeout_s: deadline.

    Raises:
        PermanentSystemError: the server stopped (e.g. "recovery ended before configured
            recovery target was reached") or the deadline passed.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        state = cluster_state(host, data)
        if state == "in production" and (data / "postmaster.pid").exists():
            return
        if not (data / "postmaster.pid").exists():
            raise PermanentSystemError(
                SYSTEM, f"the restored cluster on {data} stopped during recovery: "
                f"{_log_tail(log)}")
        if time.monotonic() > deadline:
            raise PermanentSystemError(
                SYSTEM, f"recovery on {data} did not finish in {timeout_s:.0f} s (state: "
                f"{state})", hint="raise the timeout; the log shows the replay's progress")
        time.sleep(0.5)


def stop(host: DatabaseHost, data: Path) -> None:
    """``pg_ctl stop -m fast`` (nothing when it is not running).

    Args:
        host: the host.
        data: the data directory.
    """
    if (data / "postmaster.pid").exists():
        _run(host, [f"{host.pg_bin_dir}/pg_ctl", "stop", "-D", str(data), "-m", "fast", "-w",
                    "-t", "60"], timeout_s=90)


@dataclass(frozen=True)
class RecoveryFacts:
    """What the server log says about the finished recovery."""

    recovered_to: datetime | None
    wal_replayed_bytes: int | None


def _lsn(match: re.Match[str]) -> int:
    return (int(match.group(1), 16) << 32) + int(match.group(2), 16)


def recovery_facts(log: Path) -> RecoveryFacts:
    """The last replayed commit's time and the WAL replayed, from the server log.

    Args:
        log: the server log of the restored cluster.

    Returns:
        The facts (None where the log does not say: no transaction replayed).
    """
    text = log.read_text(errors="replace") if log.exists() else ""
    commits = _LAST_COMMIT.findall(text)
    recovered = None
    if commits:
        with contextlib.suppress(ValueError):
            recovered = datetime.fromisoformat(commits[-1])
    starts, dones = list(_REDO_START.finditer(text)), list(_REDO_DONE.finditer(text))
    replayed = _lsn(dones[-1]) - _lsn(starts[-1]) if starts and dones else None
    return RecoveryFacts(recovered_to=recovered, wal_replayed_bytes=replayed)
