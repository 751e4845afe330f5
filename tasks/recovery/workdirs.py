"""Private temp dirs of restores: free space checked first, a killed run's plaintext cleaned."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from errors import DiskFullError
from tasks.logs import ModuleLogger

logger = ModuleLogger(__name__)  # run logger inside a run: lines reach the UI

PREFIX = "veza-restore-"
MARGIN = 0.10  # pg_restore's file plus what the file system rounds up
SLACK_BYTES = 64 * 1024 * 1024

FreeSpaceFn = Callable[[Path], int]


def free_bytes(directory: Path) -> int:
    """Bytes an unprivileged process may still write under ``directory`` (statvfs)."""
    return shutil.disk_usage(directory).free


def needed_bytes(plain_bytes: int) -> int:
    """The space a plain dump of ``plain_bytes`` needs, with a margin (10 % + 64 MiB)."""
    return int(plain_bytes * (1 + MARGIN)) + SLACK_BYTES


def _size(n: int) -> str:
    return f"{n / 1024**3:.2f} GiB" if n >= 1024**3 else f"{n / 1024**2:.0f} MiB"


def check_free_space(
    directory: Path, plain_bytes: int, *, free_space: FreeSpaceFn = free_bytes
) -> None:
    """Refuse, before any download, a restore whose plain dump would not fit in ``directory``.

    Args:
        directory: where the dump is decrypted (the temp dir).
        plain_bytes: the manifest's uncompressed dump size.
        free_space: how free space is measured (injected by tests).

    Raises:
        DiskFullError: naming the directory, the free and the needed sizes.
    """
    need, free = needed_bytes(plain_bytes), free_space(directory)
    if free < need:
        raise DiskFullError(
            f"not enough disk space in {directory}: {_size(free)} free, {_size(need)} needed "
            f"(dump of {_size(plain_bytes)} + margin); nothing was downloaded",
            hint="free space there, or point TMPDIR at a larger disk; the backup itself is fine",
        )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale(root: Path) -> list[Path]:
    """Remove our temp dirs left by killed runs (their owning process is gone).

    Only directories named ``veza-restore-<pid>-*``, owned by this user, whose pid no longer
    runs, are removed: a concurrent restore's directory is left alone.

    Args:
        root: the temp root (``tempfile.gettempdir()`` by default).

    Returns:
        The directories removed.
    """
    removed: list[Path] = []
    for entry in root.glob(PREFIX + "*"):
        pid_text = entry.name[len(PREFIX):].split("-", 1)[0]
        if entry.is_symlink() or not entry.is_dir() or not pid_text.isdigit():
            continue
        if entry.lstat().st_uid != os.getuid() or _alive(int(pid_text)):
            continue
        shutil.rmtree(entry, ignore_errors=True)
        logger.warning("removed %s, left by a killed restore (it may hold plaintext)", entry)
        removed.append(entry)
    return removed


def make_workdir(root: Path | None = None) -> Path:
    """A fresh 0700 directory ``veza-restore-<pid>-*`` under ``root``.

    Args:
        root: the temp root (default: the system's).

    Returns:
        Its path.
    """
    path = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=root))
    os.chmod(path, 0o700)
    return path
