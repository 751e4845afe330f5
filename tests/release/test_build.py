"""The build step of one service, run for real against the sandbox image registry CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from errors import BuildError, InvalidInputError
from sandbox.registry import ImageRegistry
from tasks.release.build import run_build
from tasks.release.catalogue import BuildCommands, ServiceSpec

ROOT = Path(__file__).resolve().parents[2]
PUSH = ["{python}", "-m", "sandbox.registry", "push", "{image}"]
INSPECT = ["{python}", "-m", "sandbox.registry", "inspect", "{image}"]
OK = ["{python}", "-m", "sandbox.registry", "--help"]
FAIL = ["{python}", "-m", "sandbox.registry", "inspect", "veza/never-pushed:0"]


def spec(**build) -> ServiceSpec:
    commands = {"push": PUSH, "inspect": INSPECT, "push_backoff_s": 0.01, **build}
    return ServiceSpec(
        name="veza-web", image_repository="veza/web", port=80, build=BuildCommands(**commands)
    )


@pytest.fixture()
def registry(tmp_path) -> tuple[ImageRegistry, dict[str, str]]:
    path = tmp_path / "registry" / "registry.json"
    env = {"VEZA_SANDBOX_REGISTRY": str(path), "PYTHONPATH": str(ROOT)}
    return ImageRegistry(path), env


def test_good_build_runs_every_step_and_pushes_the_image(registry):
    reg, env = registry
    result = run_build(spec(test=OK, lint=OK, scan=OK), "2.0.0", env, cwd=ROOT)
    assert result.image == "veza/web:2.0.0"
    assert [(s.step, s.status) for s in result.steps] == [
        ("test", "ok"),
        ("lint", "ok"),
        ("scan", "ok"),
        ("build", "skipped"),
        ("push", "ok"),
        ("inspect", "ok"),
    ]
    assert reg.lookup("veza/web:2.0.0") is not None
    push = next(s for s in result.steps if s.step == "push")
    assert push.argv[-1] == "veza/web:2.0.0" and push.attempts == 1


def test_a_failing_step_stops_the_build_before_the_push(registry):
    reg, env = registry
    with pytest.raises(BuildError) as raised:
        run_build(spec(test=OK, scan=FAIL), "2.0.1", env, cwd=ROOT)
    text = str(raised.value)
    assert "veza-web" in text and "'scan'" in text and "manifest unknown" in text
    assert reg.lookup("veza/web:2.0.1") is None


def test_push_is_retried_with_backoff_until_it_succeeds(registry, tmp_path):
    reg, env = registry
    # The registry directory is blocked by a plain file: pushes fail until it is removed.
    blocker = tmp_path / "registry"
    blocker.write_text("not a directory")
    waits: list[float] = []

    def unblock_after_second_failure(delay: float) -> None:
        waits.append(delay)
        if len(waits) == 2:
            blocker.unlink()

    build = spec(push_attempts=4, push_backoff_s=0.5)
    result = run_build(build, "2.0.2", env, cwd=ROOT, sleep=unblock_after_second_failure)
    push = next(s for s in result.steps if s.step == "push")
    assert push.attempts == 3
    assert waits == [0.5, 1.0]
    assert reg.lookup("veza/web:2.0.2") is not None


def test_push_failures_are_bounded_and_never_retry_other_steps(registry, tmp_path):
    _, env = registry
    (tmp_path / "registry").write_text("blocked")
    waits: list[float] = []
    with pytest.raises(BuildError, match=r"'push'.*3 attempt"):
        run_build(spec(push_attempts=3), "2.0.3", env, cwd=ROOT, sleep=waits.append)
    assert len(waits) == 2
    waits.clear()
    with pytest.raises(BuildError, match="'test'"):
        run_build(spec(test=FAIL, push_attempts=3), "2.0.3", env, cwd=ROOT, sleep=waits.append)
    assert waits == []


def test_inspect_fails_when_the_image_is_not_in_the_registry(registry):
    reg, env = registry
    with pytest.raises(BuildError, match="not in the registry"):
        run_build(spec(push=None), "2.0.4", env, cwd=ROOT)
    assert reg.lookup("veza/web:2.0.4") is None


def test_missing_program_is_a_build_error(registry):
    _, env = registry
    with pytest.raises(BuildError, match="program not found"):
        run_build(spec(lint=["veza-no-such-linter", "{service}"]), "2.0.5", env, cwd=ROOT)


@pytest.mark.parametrize("version", ["", "-1", "1.0;rm", "a" * 129, "v1 2", "../x"])
def test_bad_versions_are_refused_before_anything_runs(registry, version):
    reg, env = registry
    with pytest.raises(InvalidInputError) as raised:
        run_build(spec(), version, env, cwd=ROOT)
    assert raised.value.field == "version"
    assert reg.images() == {}


def test_the_commands_get_only_the_given_environment(registry, monkeypatch):
    reg, env = registry
    # Our own environment names a working registry; the explicit env given to the build
    # does not, so the push must fail: nothing but the basics is inherited.
    monkeypatch.setenv("VEZA_SANDBOX_REGISTRY", env["VEZA_SANDBOX_REGISTRY"])
    with pytest.raises(BuildError, match="'push'"):
        run_build(spec(push_attempts=1), "2.0.6", {"PYTHONPATH": str(ROOT)}, cwd=ROOT)
    assert reg.lookup("veza/web:2.0.6") is None
