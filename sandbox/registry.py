"""The sandbox image registry: maps an image reference to the behaviour of its stand-in process.

The registry is one JSON file (``DIR/registry.json``, path also in ``VEZA_SANDBOX_REGISTRY``).
A build's push step records an image with ``python -m sandbox.registry push IMAGE [...]``;
``inspect IMAGE`` exits 1 when the image is unknown, like ``docker manifest inspect``.
The kubelet of the Kubernetes emulator reads it when it starts a container: an unknown image
gives ``ErrImagePull``.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

REGISTRY_ENV = "VEZA_SANDBOX_REGISTRY"


@dataclass(frozen=True)
class Behaviour:
    """How the stand-in workload behaves when run from an image.

    Attributes:
        error_rate: fraction (0..1) of API requests answered with HTTP 500.
        latency_ms: delay added to every API request.
        never_ready: ``/ready`` always answers 503.
        crash_on_start: the process exits with status 1 right after starting.
        follow: the running process follows its image's registry entry: a later push of the
            same reference changes the behaviour of pods already running (from their next
            request: the file is checked on every API request). Tests use it to
            turn a canary bad at a chosen step; off, a pod keeps what it started with.
    """

    error_rate: float = 0.0
    latency_ms: int = 0
    never_ready: bool = False
    crash_on_start: bool = False
    follow: bool = False

    def to_json(self) -> str:
        """Serialise for a command line or an environment variable.

        Returns:
            Compact JSON.
        """
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Behaviour:
        """Parse what :meth:`to_json` produced.

        Args:
            text: JSON object.

        Returns:
            The behaviour.
        """
        return cls(**json.loads(text))


class ImageRegistry:
    """A file-backed registry of image references, safe for concurrent pushes."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, dict[str, object]]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_suffix(".lock")
        with open(lock_path, "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            data: dict[str, dict[str, object]] = {}
            if self.path.exists():
                data = json.loads(self.path.read_text() or "{}")
            before = json.dumps(data, sort_keys=True)
            yield data
            if json.dumps(data, sort_keys=True) != before:
                tmp = self.path.with_suffix(".tmp")
                tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
                os.replace(tmp, self.path)

    def push(self, image: str, behaviour: Behaviour | None = None) -> None:
        """Record ``image`` with its behaviour (healthy by default).

        Args:
            image: full image reference, ``repo:tag``.
            behaviour: how containers from it behave.
        """
        with self._locked() as data:
            data[image] = asdict(behaviour or Behaviour())

    def lookup(self, image: str) -> Behaviour | None:
        """Return the behaviour of ``image``, or None when it was never pushed.

        Args:
            image: full image reference.

        Returns:
            The behaviour or None.
        """
        with self._locked() as data:
            entry = data.get(image)
        return None if entry is None else Behaviour(**entry)  # type: ignore[arg-type]

    def images(self) -> dict[str, Behaviour]:
        """Every image known to the registry.

        Returns:
            Image reference to behaviour.
        """
        with self._locked() as data:
            return {k: Behaviour(**v) for k, v in data.items()}  # type: ignore[arg-type]


def _registry_from(args: argparse.Namespace) -> ImageRegistry:
    path = args.registry or os.environ.get(REGISTRY_ENV)
    if not path:
        raise SystemExit(f"registry: pass --registry PATH or set {REGISTRY_ENV}")
    return ImageRegistry(Path(path))


def main(argv: list[str] | None = None) -> int:
    """Command line: ``push IMAGE [behaviour flags]`` and ``inspect IMAGE``.

    Behaviour flags: ``--error-rate R --latency-ms MS --never-ready --crash --follow``.

    Args:
        argv: arguments (defaults to ``sys.argv[1:]``).

    Returns:
        Exit status: 0 on success, 1 when ``inspect`` finds no such image.
    """
    parser = argparse.ArgumentParser(prog="python -m sandbox.registry")
    parser.add_argument("--registry", help=f"registry file (default ${REGISTRY_ENV})")
    sub = parser.add_subparsers(dest="cmd", required=True)
    push = sub.add_parser("push", help="record an image")
    push.add_argument("image")
    push.add_argument("--error-rate", type=float, default=0.0)
    push.add_argument("--latency-ms", type=int, default=0)
    push.add_argument("--never-ready", action="store_true")
    push.add_argument("--crash", action="store_true")
    push.add_argument("--follow", action="store_true",
                      help="running pods of the image follow later pushes")
    inspect = sub.add_parser("inspect", help="exit 1 when the image is unknown")
    inspect.add_argument("image")
    args = parser.parse_args(argv)
    registry = _registry_from(args)
    if args.cmd == "push":
        registry.push(
            args.image,
            Behaviour(
                error_rate=args.error_rate,
                latency_ms=args.latency_ms,
                never_ready=args.never_ready,
                crash_on_start=args.crash,
                follow=args.follow,
            ),
        )
        print(f"pushed {args.image}")
        return 0
    found = registry.lookup(args.image)
    if found is None:
        print(f"manifest unknown: {args.image}", file=sys.stderr)
        return 1
    print(found.to_json())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
