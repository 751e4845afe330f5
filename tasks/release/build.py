"""Build one service: test, lint, scan, build, push (retried), then confirm the image exists."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from errors import BuildError, InvalidInputError
from tasks.release.catalogue import ServiceSpec, substitute
from tasks.release.logs import get_logger
from tasks.release.redaction import redact, remember

VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
COMMIT_RE = re.compile(r"^[0-9a-fA-F]{7,40}$")
STEPS = ("test", "lint", "scan", "build", "push", "inspect")
BASE_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "USER", "PYTHONPATH", "VIRTUAL_ENV")
TAIL_LINES = 20


class StepResult(BaseModel):
    """Outcome of one build step."""

    step: str
    argv: list[str] = Field(default_factory=list)
    status: str = "ok"  # ok | failed | skipped
    returncode: int | None = None
    attempts: int = 0
    duration_s: float = 0.0
    output_tail: str = ""


class BuildResult(BaseModel):
    """Outcome of the build of one service."""

    service: str
    version: str
    image: str
    steps: list[StepResult]
    duration_s: float


def check_version(version: str) -> str:
    """Check that a version can be an image tag.

    Args:
        version: the tag.

    Returns:
        The version unchanged.

    Raises:
        InvalidInputError: it is not a valid tag.
    """
    if not VERSION_RE.match(version):
        raise InvalidInputError(
            "version",
            f"{version!r} is not a valid image tag",
            fix="use letters, digits, '.', '_' or '-', at most 128 characters, e.g. 1.4.2",
        )
    return version


def check_commit(sha: str | None, timestamp: datetime | None) -> tuple[str | None,
                                                                      datetime | None]:
    """Check the commit a release is built from (both optional: CI gives them).

    Args:
        sha: the commit's hash (7 to 40 hexadecimal digits).
        timestamp: when it was committed, with its UTC offset (the lead time's start).

    Returns:
        The hash in lower case, and the timestamp.

    Raises:
        InvalidInputError: naming ``commit_sha`` or ``commit_timestamp``.
    """
    if sha is not None and not COMMIT_RE.match(sha):
        raise InvalidInputError("commit_sha", f"{sha!r} is not a commit hash",
                                fix="give 7 to 40 hexadecimal digits, e.g. $GITHUB_SHA")
    if timestamp is not None and timestamp.utcoffset() is None:
        raise InvalidInputError(
            "commit_timestamp", f"{timestamp.isoformat()} has no UTC offset",
            fix="give it with its offset, e.g. `git show -s --format=%cI HEAD`")
    return (sha.lower() if sha else None), timestamp


def build_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of build commands: a few basics from ours, plus ``extra``.

    Args:
        extra: variables to set (registry credentials, sandbox paths...).

    Returns:
        The complete environment passed to the commands.
    """
    env = {k: os.environ[k] for k in BASE_ENV if k in os.environ}
    env.update(extra or {})
    return env


def passthrough_env(names: list[str] | None) -> dict[str, str]:
    """Our environment variables named by a release, for its build commands.

    Their values are remembered as the run's secrets: any text leaving the run (build and
    E2E output, the record, the report, Slack) shows ``[redacted NAME]`` instead.

    Args:
        names: variable names (missing ones are skipped).

    Returns:
        Name to value.
    """
    values = {n: os.environ[n] for n in names or [] if n in os.environ}
    remember(values)
    return values


def _tail(text: str, hide: Mapping[str, str]) -> str:
    return redact("\n".join(text.splitlines()[-TAIL_LINES:]), hide)


def _run(argv: list[str], *, env: dict[str, str], cwd: str | None, timeout: float,
         hide: Mapping[str, str]) -> StepResult:
    started = time.monotonic()
    try:
        proc = subprocess.run(
            argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
        )
    except FileNotFoundError:
        return StepResult(
            step="",
            argv=argv,
            status="failed",
            returncode=127,
            output_tail=f"program not found: {argv[0]}",
        )
    except subprocess.TimeoutExpired:
        return StepResult(
            step="",
            argv=argv,
            status="failed",
            returncode=None,
            duration_s=time.monotonic() - started,
            output_tail=f"timed out after {timeout:.0f} s",
        )
    output = _tail((proc.stdout or "") + (proc.stderr or ""), hide)
    return StepResult(
        step="",
        argv=argv,
        status="ok" if proc.returncode == 0 else "failed",
        returncode=proc.returncode,
        duration_s=time.monotonic() - started,
        output_tail=output,
    )


def run_build(
    spec: ServiceSpec,
    version: str,
    env: Mapping[str, str] | None = None,
    *,
    cwd: str | Path | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> BuildResult:
    """Run the build steps of one service; push is retried with backoff, then inspected.

    The values of ``env`` (passed-through variables) and every secret the run knows are
    redacted from the output before it is kept, logged or put in an error.

    Args:
        spec: the service.
        version: the image tag to build.
        env: extra environment variables for the commands.
        cwd: directory to run in (overrides the catalogue's ``build.cwd``).
        sleep: how to wait between push attempts.

    Returns:
        The result of every step.

    Raises:
        InvalidInputError: the version is not a valid tag.
        BuildError: a step failed (names the service, the step and the output's tail).
    """
    check_version(version)
    logger = get_logger()
    commands = spec.build
    image = spec.image(version)
    values = {"image": image, "version": version, "service": spec.name, "python": sys.executable}
    full_env = build_env(env)
    workdir = str(cwd) if cwd is not None else commands.cwd
    started = time.monotonic()
    results: list[StepResult] = []
    for step in STEPS:
        template = getattr(commands, step)
        if template is None:
            results.append(StepResult(step=step, status="skipped"))
            continue
        argv = substitute(template, values)
        attempts = commands.push_attempts if step == "push" else 1
        for attempt in range(1, attempts + 1):
            logger.info("build %s: %s (attempt %d/%d)", spec.name, step, attempt, attempts)
            result = _run(argv, env=full_env, cwd=workdir, timeout=commands.timeout_s,
                          hide=env or {})
            result = result.model_copy(update={"step": step, "attempts": attempt})
            if result.status == "ok" or attempt == attempts:
                break
            delay = commands.push_backoff_s * 2 ** (attempt - 1)
            logger.warning(
                "build %s: push failed (exit %s), retrying in %.1f s",
                spec.name,
                result.returncode,
                delay,
            )
            sleep(delay)
        results.append(result)
        if result.output_tail:
            logger.info("build %s: %s output (tail):\n%s", spec.name, step, result.output_tail)
        if result.status != "ok":
            what = "the image is not in the registry" if step == "inspect" else "failed"
            raise BuildError(
                f"build of {spec.name} {version}: step {step!r} {what} "
                f"(exit {result.returncode}, {result.attempts} attempt(s)): "
                f"{result.output_tail[-400:]}",
                hint=f"fix the {step} step of {spec.name}; nothing was changed in the cluster",
            )
    return BuildResult(
        service=spec.name,
        version=version,
        image=image,
        steps=results,
        duration_s=time.monotonic() - started,
    )


run_build_task = task(name="build-service", task_run_name="build-{spec.name}",
                      cache_policy=NO_CACHE)(run_build)
