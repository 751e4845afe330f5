"""Test-suite wiring: the shared Prefect server, the fixtures of each area, xdist scheduling."""

from __future__ import annotations

from typing import Any

import pytest

from tests.fixtures.trust_store import remove_small_trust_store, use_small_trust_store

# Before the fixtures import Prefect (its settings are read at import): see trust_store.
use_small_trust_store()

from tests.fixtures.k8s import *  # noqa: E402, F403
from tests.fixtures.pitr import *  # noqa: E402, F403
from tests.fixtures.prefect import *  # noqa: E402, F403
from tests.fixtures.prefect import start_shared_server, stop_shared_server  # noqa: E402
from tests.fixtures.recovery import *  # noqa: E402, F403
from tests.fixtures.sandbox import *  # noqa: E402, F403
from tests.fixtures.scheduling import make_scheduler, write_groups  # noqa: E402


def pytest_configure(config: pytest.Config) -> None:
    """Under xdist, the controller starts the Prefect server every worker shares."""
    start_shared_server(config)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Stop the shared Prefect server (controller only; a no-op elsewhere), drop the store."""
    stop_shared_server()
    remove_small_trust_store()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On an xdist worker, tell the controller which modules must stay on one worker."""
    write_groups(config, items)


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadgroup``: costly modules kept together, the areas interleaved."""
    if config.getvalue("dist") != "loadgroup":
        return None
    return make_scheduler(config, log)
