"""Progress of a backup or restore: one unit on both sides, throttled, never fatal.

A progress artifact and a log line cost an API call and a line in the UI each: reporting
every 16 MiB part of a 200 GiB dump is 12,800 of both. :class:`Throttle` lets an update
through only when the bar moved by ``min_step_pct`` or, having moved at all, when
``min_interval_s`` passed since the last one. :class:`ProgressArtifact` publishes what the
throttle lets through; the first failing API call is logged once as a warning and the
artifact is left alone from then on: a progress bar never fails the operation it shows.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from prefect.artifacts import create_progress_artifact, update_progress_artifact

from blocks.postgres import PostgresDatabase
from tasks.logs import ModuleLogger
from tasks.recovery.postgres import connect

logger = ModuleLogger(__name__)  # run logger inside a run: lines reach the UI

ProgressFn = Callable[[int, int], None]
"""Called with (done, total), both in the same unit (bytes of the same stream)."""

MiB = 1 << 20
LAST_BEFORE_DONE = 99.0  # an estimate never shows 100 %: only the finished operation does


def percent(done: int, total: int) -> float:
    """The percentage ``done`` is of ``total``, kept within 0 and 99 until the end.

    ``total`` may be an estimate (a backup's table sizes) that ``done`` outgrows: the bar
    then waits at 99 % instead of passing 100 % before the operation finished.

    Args:
        done: work done so far.
        total: all the work (estimated or known); 0 or less means unknown (0 %).

    Returns:
        A percentage in [0, 99].
    """
    if total <= 0 or done <= 0:
        return 0.0
    return min(LAST_BEFORE_DONE, 100.0 * done / total)


@dataclass
class Throttle:
    """Let an update through when it moved ``min_step_pct`` or ``min_interval_s`` elapsed.

    It starts at 0 % (the artifact is created there). An update that moved by
    ``min_step_pct`` passes; a smaller move passes only when ``min_interval_s`` passed since
    the last update that did (or the start); no move never passes. So at most
    ``100 / min_step_pct`` updates come from progress and one per ``min_interval_s`` from
    time.

    Attributes:
        min_step_pct: percentage points that always justify an update.
        min_interval_s: seconds after which any move justifies one.
        clock: monotonic clock in seconds (injected by tests).
    """

    min_step_pct: float = 5.0
    min_interval_s: float = 10.0
    clock: Callable[[], float] = time.monotonic
    _last_pct: float = field(default=0.0, init=False)
    _last_at: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        """Start the clock: the first small move waits ``min_interval_s`` like any other."""
        self._last_at = self.clock()

    def due(self, pct: float) -> bool:
        """Tell whether an update to ``pct`` should be published now (and record it if so).

        Args:
            pct: the current percentage.

        Returns:
            True when the caller should publish it.
        """
        now = self.clock()
        moved = pct - self._last_pct
        if moved <= 0:
            return False
        if moved < self.min_step_pct and now - self._last_at < self.min_interval_s:
            return False
        self._last_pct, self._last_at = pct, now
        return True


@dataclass
class ProgressArtifact:
    """A Prefect progress artifact updated through a :class:`Throttle`; API errors are not fatal.

    Attributes:
        key: the artifact key (from ``naming.artifact_key``).
        description: what the bar measures, in words (shown in the UI).
        what: the operation, for log lines (``restore of veza_db``).
        throttle: which updates go out.
        log: where the progress lines go (the run logger inside a run).
    """

    key: str
    description: str
    what: str
    throttle: Throttle = field(default_factory=Throttle)
    log: Any = logger
    _id: UUID | None = field(default=None, init=False)
    _broken: bool = field(default=False, init=False)

    def _call(self, action: str, fn: Callable[[], object]) -> object:
        if self._broken:
            return None
        try:
            return fn()
        except Exception as exc:  # any API failure: the operation goes on without a bar
            self._broken = True
            self.log.warning(
                "%s: could not %s the progress artifact %s (%s); going on without it",
                self.what, action, self.key, type(exc).__name__,
            )
            return None

    def start(self) -> ProgressArtifact:
        """Create the artifact at 0 % (a failure is logged once; nothing raises).

        Returns:
            Itself.
        """
        created = self._call("create", lambda: create_progress_artifact(
            progress=0.0, key=self.key, description=self.description))
        self._id = created if isinstance(created, UUID) else None
        if self._id is None:
            self._broken = True
        return self

    def _publish(self, pct: float) -> None:
        if self._id is not None:
            artifact_id = self._id
            self._call("update", lambda: update_progress_artifact(artifact_id, pct))

    def update(self, done: int, total: int) -> None:
        """Report ``done`` of ``total`` (same unit) if the throttle lets it through.

        Args:
            done: work done (bytes).
            total: all the work (bytes; may be an estimate).
        """
        pct = percent(done, total)
        if not self.throttle.due(pct):
            return
        self.log.info("%s: %.0f %% (%d of %d MiB)", self.what, pct, done // MiB,
                      max(total, done) // MiB)
        self._publish(pct)

    def finish(self) -> None:
        """Set the bar to 100 % (the operation is over)."""
        self.log.info("%s: 100 %%", self.what)
        self._publish(100.0)


def dump_estimate_bytes(db: PostgresDatabase) -> int:
    """What ``pg_dump`` of ``db`` will write, estimated: the size of the data it copies.

    The backup's progress counts the bytes pg_dump wrote (``-Z0``: uncompressed COPY text),
    so the denominator must be table data, not ``pg_database_size`` (indexes, which pg_dump
    writes as one line of DDL each, made the old bar stall far below 100 %). This is the
    heap and TOAST of every ordinary table outside the system schemas plus the large
    objects (``pg_table_size``, indexes excluded). COPY text is not the heap format (no
    tuple headers, numbers as digits, TOAST decompressed), so it is an estimate: the bar
    waits at 99 % when the dump outgrows it and only the finished backup shows 100 %.

    Args:
        db: the database block.

    Returns:
        Bytes (at least 1).
    """
    with connect(db) as conn:
        row = conn.execute(
            """SELECT coalesce(sum(pg_table_size(c.oid)), 0)
                      + pg_table_size('pg_catalog.pg_largeobject')
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE c.relkind = 'r' AND n.nspname <> 'information_schema'
               AND n.nspname NOT LIKE 'pg\\_%'"""
        ).fetchone()
    return max(int(row[0]) if row else 0, 1)
