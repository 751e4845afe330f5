"""bench.scenarios_at: today's versions of the tests a commit had."""

from __future__ import annotations

import pytest

from bench.scenarios_at import main, names_defined_at, select


def test_parametrized_cases_and_class_methods_match_by_function_name() -> None:
    ids = ["tests/a.py::test_x[one]", "tests/a.py::test_x[two words]",
           "tests/b.py::TestK::test_y", "tests/b.py::test_xy", "tests/c.py::test_z"]
    assert select(ids, {"test_x", "test_y"}) == ids[:3]


def test_names_are_read_from_the_commit_s_test_modules_only() -> None:
    names = names_defined_at("HEAD")
    assert "test_kinds_are_read_off_command_lines" in names  # tests/test_cpu_by_process.py
    assert "test_help_prints_and_exits_0" in names  # tests/platform/test_cli_help.py
    assert "run_release" not in names and "_commands" not in names  # helpers, not tests


def test_an_unknown_revision_is_refused_before_anything_runs(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["no-such-rev-0123", "--", "-q"]) == 2
    assert "'no-such-rev-0123' is not a revision" in capsys.readouterr().err
