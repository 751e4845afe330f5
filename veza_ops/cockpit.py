"""`veza-ops status ENV [--watch]` and `veza-ops history ENV [-n N] [--json]` (read only).

``status``: per service the colour its Service selects (or the canary's weight), the image,
ready pods and a switch left pending; the release Lease's holder and expiry; the last release.
``history``: the newest release records, as kept in the cluster. Both read the cluster through
the Kubernetes block the catalogue names (from the Prefect API PREFECT_API_URL points at) and
change nothing.

Exit codes: 0 printed (``--watch``: stopped by Ctrl-C); 2 a usage, catalogue, block or
Kubernetes error (one line on stderr).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from tasks.release.history import ReleaseRecord
    from tasks.release.status import EnvironmentStatus

EXIT_OK = 0
EXIT_ERROR = 2
CLEAR = "\x1b[H\x1b[2J"


def _ago(at: datetime | None, now: datetime) -> str:
    if at is None:
        return "-"
    seconds = int((now - at).total_seconds())
    future, seconds = seconds < 0, abs(seconds)
    span = (f"{seconds} s" if seconds < 120 else f"{seconds // 60} min" if seconds < 7200
            else f"{seconds // 3600} h" if seconds < 172800 else f"{seconds // 86400} d")
    return f"in {span}" if future else f"{span} ago"


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def render_status(status: EnvironmentStatus) -> str:
    """The human-readable status of an environment.

    Args:
        status: what was read.

    Returns:
        Text: a heading, one row per service, the lock and the last release.
    """
    now = status.read_at
    canary = status.strategy == "canary"
    lines = [f"{status.environment} (namespace {status.namespace}, {status.strategy}) "
             f"at {now:%Y-%m-%d %H:%M:%S} UTC"]
    rows = [["SERVICE", "CANARY" if canary else "LIVE", "IMAGE", "READY", "PENDING SWITCH"]]
    for s in status.services:
        where = (f"{s.canary_weight} %" + (f" ({s.canary_image})" if s.canary_image else "")
                 if canary else (s.colour or "-"))
        rows.append([s.service, where, s.image or "-", f"{s.ready}/{s.replicas}",
                     s.pending_release or "-"])
    lines += _table(rows)
    lines += [f"  ! {s.service}: {s.problem}" for s in status.services if s.problem]
    lock = status.lock
    if lock.holder is None:
        lines.append("lock: free")
    else:
        state = "EXPIRED " if lock.expired else ""
        lines.append(f"lock: held by {lock.holder}"
                     + (f" (run {lock.run_id})" if lock.run_id else "")
                     + (f", phase {lock.phase}" if lock.phase else "")
                     + f"; {state}expires {_ago(lock.expires_at, now)}"
                     + (f" ({lock.expires_at:%H:%M:%S} UTC)" if lock.expires_at else ""))
    last = status.last_release
    if last is None:
        lines.append("last release: none recorded")
    else:
        lines.append(f"last {last.kind}: {last.version} {last.outcome} "
                     f"({last.id}, started {_ago(last.started_at, now)}, by "
                     f"{last.triggered_by})" + (f": {last.reason}" if last.reason else ""))
    return "\n".join(lines) + "\n"


def render_history(records: list[ReleaseRecord], *, now: datetime) -> str:
    """The newest records as a table, newest first.

    Args:
        records: the records to show, newest first.
        now: for ages.

    Returns:
        Text.
    """
    if not records:
        return "no release recorded\n"
    rows = [["ID", "KIND", "VERSION", "OUTCOME", "STARTED", "DURATION", "BY", "COMMIT",
             "REASON"]]
    for r in records:
        duration = f"{r.duration_s:.0f} s" if r.duration_s is not None else "-"
        reason = (r.reason or "-").replace("\n", " ")
        rows.append([r.id, r.kind, r.version, r.outcome, _ago(r.started_at, now), duration,
                     r.triggered_by, (r.commit_sha or "-")[:12],
                     reason if len(reason) <= 80 else reason[:77] + "..."])
    return "\n".join(_table(rows)) + "\n"


def _environment(args: argparse.Namespace) -> tuple[Any, Any]:
    """The catalogue and the environment the arguments name (errors name the option)."""
    from tasks.release.catalogue import DEFAULT_CATALOGUE, load_catalogue

    catalogue = load_catalogue(args.catalogue or DEFAULT_CATALOGUE)
    return catalogue, catalogue.environment(args.environment)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("environment", help="an environment of the catalogue, e.g. production")
    p.add_argument("--catalogue", default=None,
                   help="the service catalogue YAML (default: the project's own)")


def add_cockpit_commands(subparsers: Any) -> None:
    """Register ``veza-ops status`` and ``veza-ops history``.

    Args:
        subparsers: the object returned by ``add_subparsers``.
    """
    status = subparsers.add_parser(
        "status", help="where an environment stands: colours or canary weights, images, "
        "ready pods, pending switch, lock, last release", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(status)
    status.add_argument("--watch", "-w", action="store_true",
                        help="refresh until Ctrl-C (like `kubectl argo rollouts get --watch`)")
    status.add_argument("--interval", type=float, default=2.0,
                        help="seconds between refreshes with --watch (default 2)")
    status.add_argument("--json", action="store_true", help="print one JSON document")
    history = subparsers.add_parser(
        "history", help="the newest release and rollback records of an environment",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(history)
    history.add_argument("-n", type=int, default=10, dest="count",
                         help="how many records, newest first (default 10)")
    history.add_argument("--json", action="store_true", help="print a JSON list instead")


def run_status_command(args: argparse.Namespace, *, out: TextIO | None = None,
                       stop: threading.Event | None = None) -> int:
    """Execute ``veza-ops status`` from parsed arguments.

    Args:
        args: parsed arguments.
        out: where the status goes (default stdout).
        stop: ends ``--watch`` when set (default: Ctrl-C).

    Returns:
        The exit code.
    """
    from errors import VezaOpsError
    from tasks.release.clusters import kubernetes_client
    from tasks.release.status import read_status

    out = out or sys.stdout
    stop = stop or threading.Event()
    try:
        if args.interval <= 0:
            raise VezaOpsError("--interval: must be positive", hint="pass e.g. 2")
        catalogue, env = _environment(args)
        with kubernetes_client(env) as api:
            while True:
                status = read_status(api, env, catalogue.select(), now=datetime.now(UTC))
                text = (status.model_dump_json(indent=2) + "\n" if args.json
                        else render_status(status))
                out.write((CLEAR if args.watch and out.isatty() else "") + text)
                out.flush()
                if not args.watch or stop.wait(args.interval):
                    return EXIT_OK
    except VezaOpsError as exc:
        print(f"veza-ops status: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_OK


def run_history_command(args: argparse.Namespace, *, out: TextIO | None = None) -> int:
    """Execute ``veza-ops history`` from parsed arguments.

    Args:
        args: parsed arguments.
        out: where the history goes (default stdout).

    Returns:
        The exit code.
    """
    from errors import VezaOpsError
    from tasks.release.history import environment_history

    out = out or sys.stdout
    try:
        if args.count < 1:
            raise VezaOpsError("-n: must be at least 1", hint="pass e.g. 10")
        _, env = _environment(args)
        records = list(reversed(environment_history(env)))[:args.count]
    except VezaOpsError as exc:
        print(f"veza-ops history: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if args.json:
        json.dump([r.model_dump(mode="json") for r in records], out, indent=2)
        out.write("\n")
    else:
        out.write(render_history(records, now=datetime.now(UTC)))
    return EXIT_OK
