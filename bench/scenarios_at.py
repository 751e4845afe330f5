"""Run today's versions of the tests a past commit had: the suite's time "with the same assertions".

The suite grows with every feature, so its time alone does not say whether an old aim (#8:
the suite of its day under 4.5 minutes) still holds. This collects today's tests, keeps those
whose function name a test module of REV defined (parametrized cases included), adds any
``--also`` node ids (tests renamed since), and runs pytest on them:

    python -m bench.scenarios_at 84a766d --also tests/x.py::test_renamed \
        -- -q -n 5 --dist loadgroup

It prints how many of REV's test names it found and which it did not (renamed or merged since),
then pytest's own summary. Time it with ``bench.cpu_by_process`` for the machine's CPU.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_DEF = re.compile(r"^\s*(?:async\s+)?def\s+(test_\w+)", re.MULTILINE)


def names_defined_at(rev: str) -> set[str]:
    """Names of the test functions defined by the ``tests/`` modules of a commit.

    Args:
        rev: any git revision of this repository.

    Returns:
        Function names starting with ``test_``.
    """
    files = subprocess.run(["git", "-C", str(ROOT), "ls-tree", "-r", "--name-only", rev, "tests"],
                           capture_output=True, text=True, check=True).stdout.split()
    names: set[str] = set()
    for path in files:
        if Path(path).name.startswith("test_") and path.endswith(".py"):
            text = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:{path}"],
                                  capture_output=True, text=True, check=True).stdout
            names.update(_DEF.findall(text))
    return names


def function_of(node_id: str) -> str:
    """The test function a node id runs (``path::Class::test_x[case]`` -> ``test_x``)."""
    return re.sub(r"\[.*$", "", node_id.rsplit("::", maxsplit=1)[-1])


def select(node_ids: list[str], names: set[str]) -> list[str]:
    """The node ids whose function (parameters left off) is one of ``names``.

    Args:
        node_ids: pytest node ids (``path::Class::test_x[case]``).
        names: test function names.

    Returns:
        The matching ids, in their order.
    """
    return [i for i in node_ids if function_of(i) in names]


def main(argv: list[str] | None = None) -> int:
    """Command line (see the module).

    Args:
        argv: arguments (defaults to ``sys.argv[1:]``).

    Returns:
        pytest's exit status.
    """
    parser = argparse.ArgumentParser(prog="python -m bench.scenarios_at")
    parser.add_argument("rev", help="the commit whose tests to run (today's versions of them)")
    parser.add_argument("--also", action="append", default=[],
                        help="a node id to add (a test renamed since REV); repeatable")
    parser.add_argument("pytest_args", nargs=argparse.REMAINDER, help="-- then pytest options")
    args = parser.parse_args(argv)
    extra = args.pytest_args[1:] if args.pytest_args[:1] == ["--"] else args.pytest_args
    try:
        names = names_defined_at(args.rev)
    except subprocess.CalledProcessError as error:
        print(f"{args.rev!r} is not a revision of this repository: {error.stderr.strip()}",
              file=sys.stderr)
        return 2
    collected = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q"],
                               cwd=ROOT, capture_output=True, text=True, check=False)
    node_ids = [line for line in collected.stdout.splitlines() if "::" in line]
    chosen = select(node_ids, names)
    if collected.returncode != 0 or not chosen:  # pytest given no ids would run everything
        print(f"nothing to run: collection exited {collected.returncode}, {len(chosen)} of "
              f"{len(node_ids)} collected ids match {args.rev}'s {len(names)} test names\n"
              f"{collected.stdout[-2000:]}{collected.stderr[-2000:]}", file=sys.stderr)
        return 2
    found = {function_of(i) for i in chosen}
    print(f"{args.rev}: {len(found)} of its {len(names)} test names found, {len(chosen)} node "
          f"ids, {len(args.also)} added; not found: {sorted(names - found)}", file=sys.stderr)
    return subprocess.run([sys.executable, "-m", "pytest", *extra, *chosen, *args.also],
                          cwd=ROOT, check=False).returncode


if __name__ == "__main__":
    raise SystemExit(main())
