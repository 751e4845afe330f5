"""One backup of a database at a time: a Prefect global concurrency limit held for the whole run.

The hourly and the nightly deployments each have their own deployment concurrency limit, which
keeps two hourlies (or two nightlies) apart but not an hourly and a nightly. Every backup run of
a database therefore also takes the one slot of the global concurrency limit
``veza-ops-backup-<database>`` for its whole dump and upload (retries included).

Why one limit per database rather than one for all backups: what must not overlap is two
``pg_dump`` runs of the same database (double load on the primary, two snapshots held open,
two uploads of the same thing racing); backups of different databases are independent. The
limit is keyed by the block's ``dbname``, so pointing the deployments at another server of the
same database (disaster recovery) keeps the same limit.

The limit is taken with ``strict=True``: a missing limit fails the run naming the command that
creates it, instead of silently not limiting. Its lease is renewed while the backup runs and
expires ``LEASE_S`` after the flow process dies, so a killed backup never blocks the next one
for long.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Literal

from errors import BackupBusyError, InvalidInputError, NotFoundError, UnreachableError

LIMIT_PREFIX = "veza-ops-backup-"
HOURLY_MAX_WAIT_S = 45 * 60.0
LEASE_S = 300.0
INSTALL_FIX = "veza-ops automations install"
_BANNED = "/%&<>"  # characters Prefect refuses in a concurrency limit's name

if TYPE_CHECKING:
    from prefect.client.schemas.objects import ConcurrencyLeaseHolder


def _logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    try:
        from prefect.logging import get_run_logger

        return get_run_logger()
    except Exception:
        return logging.getLogger(__name__)


def backup_limit_name(database: str) -> str:
    """The global concurrency limit every backup of ``database`` takes.

    Args:
        database: the database name (the PostgresDatabase block's ``dbname``).

    Returns:
        ``veza-ops-backup-<database>``, with characters Prefect refuses in names
        (``/ % & < >``) replaced by ``-``.
    """
    return LIMIT_PREFIX + "".join("-" if c in _BANNED else c for c in database)


def slot_wait_s(
    kind: Literal["full", "hourly"], attempt_timeout_s: float, *, wait_minutes: float | None = None
) -> float:
    """How long a backup waits for its database's slot before it is refused.

    A nightly full waits as long as one backup attempt may legitimately run
    (``attempt_timeout_s``): the daily full must not be lost because an hourly ran long, yet
    a hung holder cannot block it for ever (the holder's own attempt is stopped by then).
    An hourly waits at most 45 minutes: the next hourly is due at the top of the next hour,
    and waiting longer would pile them up behind a long nightly. A refused backup fails its
    run (so the failure alert fires); the next scheduled one tries again.

    Args:
        kind: "full" or "hourly".
        attempt_timeout_s: the timeout of one backup attempt, in seconds.
        wait_minutes: an explicit wait instead of the rule above.

    Returns:
        Seconds to wait.

    Raises:
        InvalidInputError: ``wait_minutes`` not positive and finite.
    """
    if wait_minutes is not None:
        if not (wait_minutes > 0 and math.isfinite(wait_minutes)):
            raise InvalidInputError(
                "wait_minutes", f"must be a positive number of minutes, got {wait_minutes!r}",
                fix="pass e.g. 45, or leave it empty for the default of the backup's kind",
            )
        return wait_minutes * 60.0
    if kind == "hourly":
        return min(HOURLY_MAX_WAIT_S, attempt_timeout_s)
    return attempt_timeout_s


def _holder() -> ConcurrencyLeaseHolder | None:
    from prefect.client.schemas.objects import ConcurrencyLeaseHolder
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    if ctx is None or ctx.flow_run is None:
        return None
    return ConcurrencyLeaseHolder(type="flow_run", id=ctx.flow_run.id)


@contextlib.contextmanager
def backup_slot(database: str, *, wait_s: float) -> Iterator[str]:
    """Hold the backup slot of ``database`` for the duration of the block.

    Waits up to ``wait_s`` for another backup of the same database to finish. A lease
    renewal failure (Prefect API unreachable for a while) is logged as a warning and the
    backup goes on: losing a backup to an API blip is worse than a possible overlap.

    Args:
        database: the database being backed up.
        wait_s: how long to wait for the slot (see :func:`slot_wait_s`).

    Yields:
        The limit's name.

    Raises:
        NotFoundError: the limit does not exist on the Prefect server (names the fix).
        BackupBusyError: another backup of the database held the slot for all of ``wait_s``.
        UnreachableError: the Prefect API failed while asking for the slot.
    """
    from prefect.concurrency._asyncio import (
        AcquireConcurrencySlotTimeoutError,
        ConcurrencySlotAcquisitionError,
    )
    from prefect.concurrency.sync import concurrency

    name = backup_limit_name(database)
    holder = _holder()
    log = _logger()
    log.info("backup of %s: waiting up to %.0f s for the slot %r", database, wait_s, name)
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(concurrency(
                name, occupy=1, timeout_seconds=wait_s, lease_duration=LEASE_S, strict=True,
                holder=holder,
                raise_on_lease_renewal_failure=False,
            ))
        except AcquireConcurrencySlotTimeoutError:
            raise BackupBusyError(
                f"backup of {database} refused: another backup of {database} held the "
                f"concurrency limit {name!r} for all of the {wait_s / 60:.0f} min this run "
                "may wait",
                hint="look for the running backup of this database in the Prefect UI; if it "
                "is hung, cancel it (its slot is freed at once) and run this backup again",
            ) from None
        except ConcurrencySlotAcquisitionError as error:
            if error.__cause__ is None:  # the server answered: no such limit
                raise NotFoundError(
                    "prefect",
                    f"the global concurrency limit {name!r} does not exist, so this backup "
                    "cannot be kept from overlapping another backup of "
                    f"{database}; nothing was backed up",
                    hint=f"create it with `{INSTALL_FIX}` (or `prefect gcl create {name} "
                    "--limit 1`) on this Prefect server",
                ) from None
            raise UnreachableError(
                "prefect", f"could not ask for the concurrency limit {name!r}: {error}",
                hint="check that the Prefect API is reachable from the worker",
            ) from None
        log.info("backup of %s: holding the slot %r", database, name)
        yield name
