"""The pull step: flow runs start in the worker's project folder, not the deployer's."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from veza_ops.pull import HOME_ENV, set_project_directory

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def keep_cwd() -> Iterator[None]:
    before = Path.cwd()
    yield
    os.chdir(before)


def test_prefect_yaml_pulls_with_the_step_and_records_no_folder() -> None:
    project = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    assert project["pull"] == [{"veza_ops.pull.set_project_directory": {}}]
    assert all("pull" not in d for d in project["deployments"])  # none overrides it
    assert str(ROOT) not in (ROOT / "prefect.yaml").read_text()


def test_the_step_enters_veza_ops_home(tmp_path: Path, keep_cwd: None,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "prefect.yaml").write_text("name: veza-ops\n")
    monkeypatch.setenv(HOME_ENV, str(tmp_path))
    assert set_project_directory() == {"directory": str(tmp_path.resolve())}
    assert Path.cwd() == tmp_path.resolve()


def test_without_veza_ops_home_the_step_enters_this_checkout(
        tmp_path: Path, keep_cwd: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(HOME_ENV, raising=False)
    os.chdir(tmp_path)  # a process worker's flow runs start in a temporary folder
    assert set_project_directory() == {"directory": str(ROOT)}
    assert (Path.cwd() / "flows" / "release.py").is_file()


def test_a_wrong_veza_ops_home_is_refused_naming_the_variable(
        tmp_path: Path, keep_cwd: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(HOME_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(RuntimeError, match=f"{HOME_ENV}=.*holds no prefect.yaml: set {HOME_ENV}"):
        set_project_directory()
    assert Path.cwd() != tmp_path / "nowhere"
