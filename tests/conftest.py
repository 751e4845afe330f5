"""Test-suite wiring: the Prefect harness and the fixtures of each area."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fixtures.k8s import *  # noqa: F403
from tests.fixtures.pitr import *  # noqa: F403
from tests.fixtures.recovery import *  # noqa: F403
from tests.fixtures.sandbox import *  # noqa: F403


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """One temporary Prefect API (SQLite) for the whole session; it costs ~9 s to start."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


# Module-scoped fixtures cheap enough to build once per worker: their modules' tests may spread
# over every worker. Any other module-scoped fixture starts something costly (a Prefect server
# and its worker, a second sandbox, a PostgreSQL cluster): its tests are grouped below.
CHEAP_MODULE_FIXTURES = frozenset({"blocks", "core", "apis"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Keep the tests sharing a costly module-scoped fixture on one xdist worker.

    The suite runs with ``--dist loadgroup``: tests without a group are handed out one by
    one (a long module no longer runs on a single worker), while the tests of a module with a
    costly module fixture carry ``xdist_group(<module>)`` and run together, so that fixture
    starts once.
    """
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        if info is None:
            continue
        costly = [
            name for name, defs in info.name2fixturedefs.items()
            if defs and defs[-1].scope == "module" and name not in CHEAP_MODULE_FIXTURES
        ]
        if costly:
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::", 1)[0]))
