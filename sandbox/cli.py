"""``veza-ops sandbox up|down|status|push``: the local sandbox from the command line."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

DIR_ENV = "VEZA_SANDBOX_DIR"


def _default_dir() -> Path:
    from sandbox.stack import DEFAULT_DIR

    return Path(os.environ.get(DIR_ENV) or DEFAULT_DIR)


def _print_status(dir: Path) -> bool:
    from sandbox.stack import load, status

    rows = status(dir)
    if not rows:
        print(f"no sandbox in {dir} (start one with `veza-ops sandbox up --dir {dir}`)")
        return False
    print(f"sandbox {dir}")
    for row in rows:
        state = "running" if row["alive"] else "STOPPED"
        url = row["url"] or ""
        print(f"  {row['name']:<11} pid {row['pid'] or '-':<8} {state:<8} {url}")
    sandbox = load(dir)
    print(f"  kubeconfig  {sandbox.kubeconfig} (context sandbox)")
    print(f"  registry    {sandbox.registry.path}")
    print(f"  pod IPs     {sandbox.ip_prefix}.0/24, Service IPs in the next /24")
    for name, value in sandbox.env().items():
        if name.startswith("VEZA_") and name.endswith("_URL"):
            print(f"  {name} = {value}")
    print(f"use it from a shell with:  . {dir / 'env'}")
    return all(row["alive"] for row in rows)


def _up(args: argparse.Namespace) -> int:
    from sandbox.procs import SandboxError
    from sandbox.stack import up

    print(f"starting the sandbox in {args.dir} (Kubernetes emulator, Prometheus, Vault emulator)")
    try:
        up(args.dir, seed=not args.no_seed)
    except SandboxError as error:
        print(f"sandbox up failed: {error}", file=sys.stderr)
        return 1
    return 0 if _print_status(args.dir) else 1


def _down(args: argparse.Namespace) -> int:
    from sandbox.stack import down

    down(args.dir)
    print(f"sandbox in {args.dir} stopped")
    return 0


def _status(args: argparse.Namespace) -> int:
    return 0 if _print_status(args.dir) else 1


def _push(args: argparse.Namespace) -> int:
    from sandbox import registry

    path = args.registry
    if not path and not args.dir_given:
        path = os.environ.get(registry.REGISTRY_ENV)
    path = path or str(args.dir / "registry.json")
    argv = ["--registry", path, "push", args.image, "--error-rate", str(args.error_rate),
            "--latency-ms", str(args.latency_ms)]
    argv += ["--never-ready"] if args.never_ready else []
    argv += ["--crash"] if args.crash else []
    return registry.main(argv)


def add_sandbox_commands(subparsers: Any) -> None:
    """Register ``sandbox up|down|status|push`` on the ``veza-ops`` parser.

    Args:
        subparsers: what ``ArgumentParser.add_subparsers`` returned.
    """
    sandbox = subparsers.add_parser(
        "sandbox", help="local sandbox: Kubernetes and Vault emulators, real Prometheus"
    )
    commands = sandbox.add_subparsers(dest="sandbox_command", required=True)

    def with_dir(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parser.add_argument(
            "--dir", type=lambda text: Path(text).resolve(), default=None,
            help=f"sandbox directory (default ${DIR_ENV} or .sandbox/ in the project)",
        )
        return parser

    up = with_dir(commands.add_parser("up", help="start and seed the sandbox"))
    up.add_argument("--no-seed", action="store_true", help="do not create the Veza services")
    up.set_defaults(func=_up)
    with_dir(commands.add_parser("down", help="stop every sandbox process")).set_defaults(
        func=_down
    )
    with_dir(commands.add_parser("status", help="what runs, pids, URLs")).set_defaults(
        func=_status
    )
    push = with_dir(commands.add_parser("push", help="record an image in the sandbox registry"))
    push.add_argument("image", help="image reference, e.g. veza/backend-api:1.2.0")
    push.add_argument("--registry", help="registry file (default $VEZA_SANDBOX_REGISTRY)")
    push.add_argument("--error-rate", type=float, default=0.0, help="fraction of 500 answers")
    push.add_argument("--latency-ms", type=int, default=0, help="added latency per request")
    push.add_argument("--never-ready", action="store_true", help="/ready always 503")
    push.add_argument("--crash", action="store_true", help="exit 1 at start")
    push.set_defaults(func=_push)


def run(args: argparse.Namespace) -> int:
    """Run the parsed ``sandbox`` command.

    Args:
        args: parsed arguments (with ``func`` and ``dir``).

    Returns:
        Exit status.
    """
    args.dir_given = args.dir is not None
    if args.dir is None:
        args.dir = _default_dir().resolve()
    status: int = args.func(args)
    return status
