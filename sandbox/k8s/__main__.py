"""Run the emulator: ``python -m sandbox.k8s --dir DIR --registry R --file-sd F --ip-prefix P``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from sandbox.k8s.customresources import builtin_manifests
from sandbox.k8s.kubeconfig import write_kubeconfig
from sandbox.k8s.resources import CRDS
from sandbox.k8s.server import ApiHTTPServer
from sandbox.k8s.store import Store
from sandbox.k8s.tls import make_certificate, server_context

log = logging.getLogger("sandbox.k8s")
STATE_FILE = "k8s.json"


def _controllers(store: Store, args: argparse.Namespace) -> Any:
    """Start K2's controllers when they exist (the API also runs alone without them)."""
    try:
        from sandbox.k8s.controllers import ControllerManager
    except ImportError:
        log.warning("controllers unavailable: serving the API without them")
        return None
    manager = ControllerManager(
        store,
        registry_path=Path(args.registry),
        file_sd_path=Path(args.file_sd),
        ip_prefix=args.ip_prefix,
        workdir=Path(args.dir),
    )
    manager.start()
    return manager


def _write_state(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(state))
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    """Serve the API until SIGTERM/SIGINT; write DIR/kubeconfig and DIR/k8s.json when ready.

    Args:
        argv: arguments (defaults to ``sys.argv[1:]``).

    Returns:
        Exit status.
    """
    parser = argparse.ArgumentParser(prog="python -m sandbox.k8s")
    parser.add_argument("--dir", required=True, help="sandbox directory")
    parser.add_argument("--registry", required=True, help="image registry JSON file")
    parser.add_argument("--file-sd", required=True, help="Prometheus file_sd targets file")
    parser.add_argument("--ip-prefix", required=True, help="loopback prefix, e.g. 127.37.0")
    parser.add_argument("--port", type=int, default=0, help="listen port (default: free port)")
    parser.add_argument("--no-controllers", action="store_true", help="serve the API only")
    parser.add_argument("--exit-with-parent", action="store_true",
                        help="stop when the starting process dies (test fixtures)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    workdir = Path(args.dir)
    workdir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("VEZA_SANDBOX_REGISTRY", str(Path(args.registry).resolve()))
    store = Store()
    for crd in builtin_manifests():  # Istio's CRDs, as on a cluster with Istio installed
        store.create(CRDS, None, crd)
    token = secrets.token_urlsafe(32)
    cert, key = make_certificate(workdir)
    server = ApiHTTPServer(("127.0.0.1", args.port), store=store, token=token,
                           tls=server_context(cert, key), logs_dir=workdir.resolve())
    manager = None if args.no_controllers else _controllers(store, args)
    stopped = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        if stopped.is_set():
            return
        stopped.set()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    if args.exit_with_parent:
        parent = os.getppid()

        def _watch_parent() -> None:
            while not stopped.wait(1.0):
                if os.getppid() != parent:
                    log.warning("parent process %d is gone: stopping", parent)
                    _stop(signal.SIGTERM, None)

        threading.Thread(target=_watch_parent, daemon=True, name="parent-watch").start()
    write_kubeconfig(workdir / "kubeconfig", url=server.https_url, token=token, ca_cert=cert)
    _write_state(workdir / STATE_FILE, {"url": server.url, "https_url": server.https_url,
                                        "pid": os.getpid()})
    log.info("kubernetes API emulator serving on %s", server.url)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.stopping.set()
        store.close()
        if manager is not None:
            try:
                manager.stop()
            except Exception:
                log.exception("controllers failed to stop cleanly")
        server.server_close()
        log.info("kubernetes API emulator stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
