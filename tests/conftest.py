"""Test-suite wiring: the shared Prefect server, the fixtures of each area, xdist scheduling."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.k8s import *  # noqa: F403
from tests.fixtures.pitr import *  # noqa: F403
from tests.fixtures.prefect import *  # noqa: F403
from tests.fixtures.prefect import start_shared_server, stop_shared_server
from tests.fixtures.recovery import *  # noqa: F403
from tests.fixtures.sandbox import *  # noqa: F403


def pytest_configure(config: pytest.Config) -> None:
    """Under xdist, the controller starts the Prefect server every worker shares."""
    start_shared_server(config)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Stop the shared Prefect server (controller only; a no-op elsewhere)."""
    stop_shared_server()


# Module-scoped fixtures cheap enough to build once per worker: their modules' tests may spread
# over every worker. Any other module-scoped fixture starts something costly (a Prefect server
# and its worker, a second sandbox, a PostgreSQL cluster): its module's tests stay together.
CHEAP_MODULE_FIXTURES = frozenset({"blocks", "core", "apis"})
GROUPS_FILE = "xdist-module-groups.txt"


def _costly_modules(items: list[pytest.Item]) -> set[str]:
    """Test modules with a costly module-scoped fixture (see CHEAP_MODULE_FIXTURES)."""
    found: set[str] = set()
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        if info is not None and any(
            defs and defs[-1].scope == "module" and name not in CHEAP_MODULE_FIXTURES
            for name, defs in info.name2fixturedefs.items()
        ):
            found.add(item.nodeid.split("::", 1)[0])
    return found


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On an xdist worker, tell the controller which modules must stay on one worker.

    ``--dist loadgroup`` cannot be used as documented here: pytest 9.2 builds node ids from a
    structured id and ignores the ``@group`` suffix xdist 3.8 appends, so groups were silently
    spread over every worker (four Prefect servers for the e2e module). Instead each worker
    writes the costly modules it collected next to its basetemp, and
    :class:`ModuleGroupScheduling` (the controller) reads them when it schedules.
    """
    worker_temp = getattr(config.option, "basetemp", None)
    if not os.environ.get("PYTEST_XDIST_WORKER") or not worker_temp:
        return
    target = Path(worker_temp).parent / GROUPS_FILE
    partial = target.with_name(f"{GROUPS_FILE}.{os.environ['PYTEST_XDIST_WORKER']}")
    partial.write_text("".join(f"{m}\n" for m in sorted(_costly_modules(items))))
    partial.replace(target)  # every worker collects the same tests: the last one wins


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadgroup``: tests one by one, except a costly module's, which go together."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadGroupScheduling

    groups = config._tmp_path_factory.getbasetemp() / GROUPS_FILE  # type: ignore[attr-defined]

    class ModuleGroupScheduling(LoadGroupScheduling):  # type: ignore[misc]
        """Each test is its own unit unless its module is listed in the groups file."""

        _modules: frozenset[str] | None = None

        def _split_scope(self, nodeid: str) -> str:
            if self._modules is None:
                self._modules = frozenset(groups.read_text().split()) if groups.exists() else None
            module = nodeid.split("::", 1)[0]
            return module if self._modules and module in self._modules else nodeid

    return ModuleGroupScheduling(config, log)
