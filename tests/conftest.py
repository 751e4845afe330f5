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
