"""The suite's own scheduling: areas interleaved in the xdist queue (tests/fixtures/scheduling)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.scheduling import area, interleave, slow_tests, slow_tests_of


def test_each_area_is_spread_over_the_whole_queue_in_its_own_order() -> None:
    release = [(f"tests/release/test_r.py::test_{i}", 1) for i in range(6)]
    recovery = [(f"tests/recovery/test_b.py::test_{i}", 1) for i in range(3)]
    order = interleave(recovery + release)  # collection order: one area after the other

    assert order == [
        "tests/recovery/test_b.py::test_0", "tests/release/test_r.py::test_0",
        "tests/release/test_r.py::test_1", "tests/recovery/test_b.py::test_1",
        "tests/release/test_r.py::test_2", "tests/release/test_r.py::test_3",
        "tests/recovery/test_b.py::test_2", "tests/release/test_r.py::test_4",
        "tests/release/test_r.py::test_5",
    ]


def test_a_module_kept_together_counts_as_its_tests() -> None:
    # A 4-test module kept together is half of its area: the area's next unit starts halfway.
    units = [("tests/k8s/test_group.py", 4), ("tests/k8s/test_a.py::t", 1),
             ("tests/k8s/test_b.py::t", 1), ("tests/k8s/test_c.py::t", 1),
             ("tests/k8s/test_d.py::t", 1)]
    units += [(f"tests/sandbox/test_s.py::t{i}", 1) for i in range(4)]
    order = interleave(units)

    assert order[0] == "tests/k8s/test_group.py"
    assert [s for s in order if area(s) == "k8s"] == [s for s, _ in units[:5]]
    assert order.index("tests/sandbox/test_s.py::t1") < order.index("tests/k8s/test_a.py::t")


def test_area_of_a_test_outside_any_area_is_empty() -> None:
    assert area("tests/test_scheduling.py::test_x") == ""
    assert area("tests/release/test_r.py") == "release"


def test_an_areas_known_long_tests_go_first_and_the_rest_keep_their_order() -> None:
    units = [(f"tests/release/test_r.py::test_{i}", 1) for i in range(4)]
    order = interleave(units, {"tests/release/test_r.py::test_2": 30.0,
                               "tests/release/test_r.py::test_3": 40.0})

    assert order == ["tests/release/test_r.py::test_3", "tests/release/test_r.py::test_2",
                     "tests/release/test_r.py::test_0", "tests/release/test_r.py::test_1"]


def test_slow_tests_are_read_from_a_junit_report_with_their_node_ids(tmp_path: Path) -> None:
    report = tmp_path / "junit.xml"
    report.write_text(
        '<testsuites><testsuite name="pytest">'
        '<testcase classname="tests.release.test_r" name="test_long[timeout]" time="44.9"/>'
        '<testcase classname="tests.release.test_r.TestGroup" name="test_in_class" time="7"/>'
        '<testcase classname="tests.k8s.test_k" name="test_short" time="0.4"/>'
        "</testsuite></testsuites>")

    assert slow_tests_of(report) == {
        "tests/release/test_r.py::test_long[timeout]": 44.9,
        "tests/release/test_r.py::TestGroup::test_in_class": 7.0,
    }


def test_every_listed_slow_test_still_exists(request: pytest.FixtureRequest) -> None:
    """A renamed test would silently lose its place at the front: regenerate the list.

    Checked for the modules this run collected (a run of one folder checks that folder's).
    """
    root = Path(__file__).resolve().parents[1]
    collected = {item.nodeid for item in request.session.items}
    modules = {node.split("::", 1)[0] for node in collected}
    listed = slow_tests()
    assert all((root / node.split("::", 1)[0]).is_file() for node in listed), \
        "a listed module is gone: run python -m tests.fixtures.scheduling JUNIT_XML"
    missing = [node for node in listed
               if node.split("::", 1)[0] in modules and node not in collected]
    assert not missing, "run python -m tests.fixtures.scheduling JUNIT_XML"
