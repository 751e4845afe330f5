"""The ``veza-ops`` command: a small dispatcher over subcommand groups.

The ``sandbox`` and ``demo`` commands need the local sandbox, which is its own distribution
(``veza-ops-sandbox``, in ``sandbox/``): it is imported lazily, and when it is missing those
commands say how to install it instead of ``veza-ops`` failing as a whole.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Callable, Sequence
from typing import Any

from veza_ops.approve import add_approve_commands, run_approve_command
from veza_ops.automations import add_automations_command, run_automations_command
from veza_ops.backups import add_backups_command, run_backups_command
from veza_ops.blocks_setup import add_blocks_command, run_blocks_command
from veza_ops.cockpit import add_cockpit_commands, run_history_command, run_status_command
from veza_ops.demo import add_demo_command, run_demo_command
from veza_ops.metrics import add_metrics_command, run_metrics_command
from veza_ops.trigger import add_trigger_command, run_trigger_command

# The sandbox package and the modules of the `veza-ops[sandbox]` extra it needs.
SANDBOX_MODULES = ("sandbox", "moto", "prometheus_client", "cryptography", "setproctitle")
SANDBOX_FIX = (
    "install it from the project checkout with `pip install -e ./sandbox` (it brings the "
    "`veza-ops[sandbox]` extra), or run `make setup`"
)


def missing_sandbox_module() -> str | None:
    """The first module the sandbox needs that cannot be imported here.

    Returns:
        Its name, or None when the sandbox and its dependencies are installed.
    """
    for module in SANDBOX_MODULES:
        if importlib.util.find_spec(module) is None:
            return module
    return None


def sandbox_missing_message(command: str, module: str) -> str:
    """The error printed when a command needs the sandbox and it is not installed.

    Args:
        command: the ``veza-ops`` subcommand.
        module: the module that is missing.

    Returns:
        The message, naming the fix.
    """
    what = "the sandbox (distribution `veza-ops-sandbox`)"
    if module != "sandbox":
        what += f": its dependency `{module}` is missing"
    return f"veza-ops {command}: needs {what}; {SANDBOX_FIX}"


def _add_sandbox_commands(subparsers: Any) -> None:
    if missing_sandbox_module() is None:
        from sandbox.cli import add_sandbox_commands

        add_sandbox_commands(subparsers)
        return
    stub = subparsers.add_parser(
        "sandbox", help="local sandbox (not installed: `pip install -e ./sandbox`)"
    )
    stub.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)


def _run_sandbox(args: argparse.Namespace) -> int:
    from sandbox.cli import run

    return run(args)


def version() -> str:
    """The installed distribution's version (the package's own when not installed).

    Returns:
        e.g. ``0.1.0``.
    """
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("veza-ops")
    except PackageNotFoundError:
        from veza_ops import __version__

        return __version__


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``veza-ops`` with every subcommand group.

    Returns:
        The parser.
    """
    parser = argparse.ArgumentParser(
        prog="veza-ops", description="Release and disaster-recovery operations of Veza."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    subparsers = parser.add_subparsers(dest="command", required=True)
    _add_sandbox_commands(subparsers)
    add_trigger_command(subparsers)
    add_demo_command(subparsers)
    add_blocks_command(subparsers)
    add_backups_command(subparsers)
    add_automations_command(subparsers)
    add_metrics_command(subparsers)
    add_cockpit_commands(subparsers)
    add_approve_commands(subparsers)
    return parser


RUNNERS: dict[str, Callable[[argparse.Namespace], int]] = {
    "sandbox": _run_sandbox,
    "trigger": run_trigger_command,
    "demo": run_demo_command,
    "blocks": run_blocks_command,
    "backups": run_backups_command,
    "automations": run_automations_command,
    "metrics": run_metrics_command,
    "status": run_status_command,
    "history": run_history_command,
    "approve": run_approve_command,
    "reject": run_approve_command,
    "abort": run_approve_command,
}
NEEDS_SANDBOX = frozenset({"sandbox", "demo"})


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``veza-ops``.

    Args:
        argv: arguments (defaults to ``sys.argv[1:]``).

    Returns:
        Exit status (2 when the command needs the sandbox and it is not installed).
    """
    args = build_parser().parse_args(argv)
    missing = missing_sandbox_module() if args.command in NEEDS_SANDBOX else None
    if missing is not None:
        print(sandbox_missing_message(args.command, missing), file=sys.stderr)
        return 2
    try:
        return RUNNERS[args.command](args)
    except ModuleNotFoundError as error:
        module = (error.name or "").split(".")[0]
        if module not in SANDBOX_MODULES:
            raise
        print(sandbox_missing_message(args.command, module), file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
