"""The suite's own scheduling: areas interleaved in the xdist queue (tests/fixtures/scheduling)."""

from __future__ import annotations

from tests.fixtures.scheduling import area, interleave


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
