"""The ``veza-ops`` command: a small dispatcher over subcommand groups."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

from sandbox.cli import add_sandbox_commands
from sandbox.cli import run as run_sandbox
from veza_ops.blocks_setup import add_blocks_command, run_blocks_command
from veza_ops.demo import add_demo_command, run_demo_command
from veza_ops.trigger import add_trigger_command, run_trigger_command


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``veza-ops`` with every subcommand group.

    Returns:
        The parser.
    """
    parser = argparse.ArgumentParser(
        prog="veza-ops", description="Release and disaster-recovery operations of Veza."
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_sandbox_commands(subparsers)
    add_trigger_command(subparsers)
    add_demo_command(subparsers)
    add_blocks_command(subparsers)
    return parser


RUNNERS: dict[str, Callable[[argparse.Namespace], int]] = {
    "sandbox": run_sandbox,
    "trigger": run_trigger_command,
    "demo": run_demo_command,
    "blocks": run_blocks_command,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``veza-ops``.

    Args:
        argv: arguments (defaults to ``sys.argv[1:]``).

    Returns:
        Exit status.
    """
    args = build_parser().parse_args(argv)
    return RUNNERS[args.command](args)


if __name__ == "__main__":
    raise SystemExit(main())
