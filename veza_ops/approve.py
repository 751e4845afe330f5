"""``veza-ops approve|reject RUN_ID``: decide on a release paused at a canary approval gate.

``abort`` is another name for ``reject``.

The same as the Prefect UI's Resume form on a paused run: it resumes the run with the gate's
typed input (approve or not, who, why). A rejection puts every service back to 0 % canary.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any, TextIO
from uuid import UUID


def add_approve_commands(subparsers: Any) -> None:
    """Register ``veza-ops approve`` and ``veza-ops reject``.

    Args:
        subparsers: the object returned by ``add_subparsers``.
    """
    # "%%": argparse %-formats help texts (a bare "% c" broke `veza-ops --help`).
    for name, what in (("approve", "let a release paused at a canary gate go on"),
                       ("reject", "stop a release paused at a canary gate: every service "
                                  "back to 0 %% canary")):
        cmd = subparsers.add_parser(name, help=what, description=__doc__,
                                    aliases=["abort"] if name == "reject" else [],
                                    formatter_class=argparse.RawDescriptionHelpFormatter)
        cmd.add_argument("run_id", help="the paused release's flow run id (its UI link ends "
                         "with it)")
        cmd.add_argument("--by", default=None,
                         help="who decides, recorded in the release (default: your login)")
        cmd.add_argument("--reason", default="", help="why, recorded in the release")


def decision(args: argparse.Namespace) -> dict[str, Any]:
    """The gate's input from parsed arguments (pure).

    Args:
        args: parsed ``approve``/``reject`` arguments.

    Returns:
        The run input (fields of ``tasks.release.canary_gates.CanaryDecision``).
    """
    by = args.by or getpass.getuser()
    return {"approve": args.command == "approve", "approved_by": by, "reason": args.reason}


def run_approve_command(args: argparse.Namespace, *, err: TextIO | None = None) -> int:
    """Execute ``veza-ops approve|reject`` from parsed arguments.

    Args:
        args: parsed arguments.
        err: where errors go (default stderr).

    Returns:
        0 once the run took the decision; 2 when the id is malformed, the run is not paused
        at a gate (or not yet waiting for its input), or the API refused.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.responses import SetStateStatus
    from prefect.exceptions import ObjectNotFound

    err = err or sys.stderr
    try:
        run_id = UUID(args.run_id)
    except ValueError:
        print(f"veza-ops {args.command}: run_id {args.run_id!r} is not a flow run id (a UUID)",
              file=err)
        return 2
    with get_client(sync_client=True) as client:
        try:
            run = client.read_flow_run(run_id)
        except ObjectNotFound:
            print(f"veza-ops {args.command}: no flow run {run_id}", file=err)
            return 2
        if run.state is None or not run.state.is_paused():
            state = run.state.name if run.state else "no state"
            print(f"veza-ops {args.command}: run {run_id} is not paused ({state})", file=err)
            return 2
        answer = client.resume_flow_run(run_id, run_input=decision(args))
    if answer.status != SetStateStatus.ACCEPT:
        reason = getattr(answer.details, "reason", "") or answer.status.value
        print(f"veza-ops {args.command}: run {run_id} did not take it: {reason}", file=err)
        return 2
    return 0
