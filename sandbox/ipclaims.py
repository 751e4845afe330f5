"""Machine-wide claims on loopback ranges, so two sandboxes never hand out the same pod IPs.

A sandbox takes a prefix ``127.A.B`` (B even: pods use ``127.A.B.N``, Services
``127.A.(B+1).N``) by creating ``$TMPDIR/veza-sandbox-ips/127.A.B`` exclusively; the file names
the sandbox directory. A claim whose sandbox has no ``state.json`` any more is stale and reused.
"""

from __future__ import annotations

import contextlib
import os
import random
import tempfile
from pathlib import Path

from sandbox.procs import SandboxError

CLAIMS_DIR = Path(tempfile.gettempdir()) / "veza-sandbox-ips"


def _stale(claim: Path) -> bool:
    try:
        owner = Path(claim.read_text().strip())
    except OSError:
        return False
    return not (owner / "state.json").exists()


def claim_prefix(owner: Path, *, attempts: int = 500) -> str:
    """Claim a free loopback prefix for the sandbox in ``owner``.

    Args:
        owner: the sandbox directory (recorded in the claim).
        attempts: random prefixes to try.

    Returns:
        The prefix, e.g. ``127.83.14``.

    Raises:
        SandboxError: when no prefix could be claimed.
    """
    CLAIMS_DIR.mkdir(parents=True, exist_ok=True)
    rng = random.SystemRandom()
    for _ in range(attempts):
        prefix = f"127.{rng.randint(16, 250)}.{rng.randrange(0, 254, 2)}"
        claim = CLAIMS_DIR / prefix
        if claim.exists() and _stale(claim):
            with contextlib.suppress(OSError):
                claim.unlink()
        try:
            fd = os.open(claim, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            continue
        with os.fdopen(fd, "w") as out:
            out.write(str(Path(owner).resolve()))
        return prefix
    raise SandboxError(f"no free loopback range left in {CLAIMS_DIR}: remove stale claims there")


def release_prefix(prefix: str, owner: Path) -> None:
    """Give a prefix back (only when ``owner`` holds it).

    Args:
        prefix: the claimed prefix.
        owner: the sandbox directory.
    """
    claim = CLAIMS_DIR / prefix
    with contextlib.suppress(OSError):
        if Path(claim.read_text().strip()) == Path(owner).resolve():
            claim.unlink()
