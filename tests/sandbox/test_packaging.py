"""Packaging: the sandbox is its own distribution; every imported library is declared and locked."""

from __future__ import annotations

import ast
import functools
import re
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

from veza_ops import cli

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("flows", "tasks", "blocks", "errors", "veza_ops")
LOCAL = {*PRODUCT, "sandbox", "tests", "bench"}


def _pyproject(path: Path) -> dict:
    return tomllib.loads(path.read_text())


def _name(requirement: str) -> str:
    """The normalized distribution name of a requirement string."""
    match = re.match(r"[A-Za-z0-9._-]+", requirement.strip())
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match.group(0)).lower()


@functools.cache
def _distributions_by_module() -> dict[str, list[str]]:
    return packages_distributions()


def _imported_distributions(folder: Path) -> dict[str, set[str]]:
    """Third-party distribution -> modules of ``folder`` importing it (absolute imports only)."""
    by_module = _distributions_by_module()
    found: dict[str, set[str]] = {}
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top in LOCAL:
                    continue
                for dist in by_module.get(top, [top]):
                    found.setdefault(_name(dist), set()).add(str(path.relative_to(ROOT)))
    return found


def _build_output(path: Path) -> bool:
    """Whether ``path`` below sandbox/ was made by a build or an install (git-ignored)."""
    parts = path.relative_to(ROOT / "sandbox").parts
    return any(p.endswith(".egg-info") or p in ("__pycache__", "build") for p in parts)


def _locked() -> set[str]:
    lines = (ROOT / "requirements.lock").read_text().splitlines()
    return {_name(line) for line in lines if re.match(r"[A-Za-z0-9]", line)}


def test_sandbox_distribution_lists_every_package_below_sandbox():
    config = _pyproject(ROOT / "sandbox" / "pyproject.toml")
    assert config["tool"]["setuptools"]["package-dir"] == {"sandbox": "."}
    expected = sorted(
        ".".join(("sandbox", *init.parent.relative_to(ROOT / "sandbox").parts))
        for init in (ROOT / "sandbox").rglob("__init__.py")
        if not _build_output(init)
    )
    assert sorted(config["tool"]["setuptools"]["packages"]) == expected


def test_sandbox_distribution_ships_every_data_file():
    config = _pyproject(ROOT / "sandbox" / "pyproject.toml")
    listed = {path for package, globs in config["tool"]["setuptools"]["package-data"].items()
              for pattern in globs for path in ROOT.joinpath(*package.split(".")).glob(pattern)}
    data = {path for path in (ROOT / "sandbox").rglob("*")
            if path.is_file() and path.suffix not in (".py", ".pyc")
            and path.name != "pyproject.toml"
            and not _build_output(path)}
    assert data <= listed, f"not in sandbox/pyproject.toml package-data: {sorted(data - listed)}"


def test_product_wheel_does_not_ship_the_sandbox():
    find = _pyproject(ROOT / "pyproject.toml")["tool"]["setuptools"]["packages"]["find"]
    assert not any(pattern.startswith("sandbox") for pattern in find["include"])
    assert "sandbox*" in find["exclude"]


def test_imported_libraries_are_declared_and_locked():
    project = _pyproject(ROOT / "pyproject.toml")["project"]
    product = {_name(r) for r in project["dependencies"]}
    sandbox_extra = {_name(r) for r in project["optional-dependencies"]["sandbox"]}
    for folder in PRODUCT:
        undeclared = {d: m for d, m in _imported_distributions(ROOT / folder).items()
                      if d not in product}
        assert not undeclared, f"imported by product code but not a dependency: {undeclared}"
    undeclared = {d: m for d, m in _imported_distributions(ROOT / "sandbox").items()
                  if d not in product | sandbox_extra}
    assert not undeclared, f"imported by the sandbox but not in veza-ops[sandbox]: {undeclared}"
    missing = (product | sandbox_extra) - _locked()
    assert not missing, f"declared but not in requirements.lock (run `make lock`): {missing}"


def test_sandbox_depends_on_the_extra_and_the_cli_checks_its_modules():
    deps = _pyproject(ROOT / "sandbox" / "pyproject.toml")["project"]["dependencies"]
    assert deps == ["veza-ops[sandbox]"]
    extra = _pyproject(ROOT / "pyproject.toml")["project"]["optional-dependencies"]["sandbox"]
    by_module = _distributions_by_module()
    checked = {_name(d) for module in cli.SANDBOX_MODULES for d in by_module.get(module, [])}
    assert {_name(r) for r in extra} <= checked


@pytest.mark.parametrize("command", [["sandbox", "status"], ["demo", "--exit"]])
def test_commands_needing_a_missing_sandbox_name_the_fix(command: list[str], tmp_path: Path):
    # Hide the sandbox, as on a machine where only the product is installed.
    hide = (
        "import sys\n"
        "sys.modules['sandbox'] = None\n"
        "from veza_ops.cli import main\n"
        f"raise SystemExit(main({command!r}))\n"
    )
    done = subprocess.run([sys.executable, "-c", hide], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 2, done.stderr
    assert "pip install -e ./sandbox" in done.stderr and "make setup" in done.stderr


def test_console_script_imports_the_sandbox_from_any_directory(tmp_path: Path):
    exe = Path(sys.executable).with_name("veza-ops")
    if not exe.exists():
        pytest.skip("the veza-ops console script is not installed")
    done = subprocess.run([str(exe), "sandbox", "status", "--dir", str(tmp_path)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, check=False)
    assert "no sandbox in" in done.stdout, done.stdout + done.stderr
