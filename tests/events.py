"""Read veza-ops events back through the Prefect API (tests of the events the flows emit)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def read_events(resource_id: str, *, where: Callable[[Any], bool] = lambda e: True,
                until: Callable[[list[Any]], bool], timeout: float = 60.0) -> list[Any]:
    """The newest 50 ``veza-ops.*`` events of a resource that pass ``where``, once ``until`` holds.

    Events travel from the flow's events worker to the server, which persists them in
    batches: this waits (on the condition, with a deadline) rather than reading once.

    Args:
        resource_id: the primary resource, e.g. ``veza-ops.environment.production``.
        where: keeps the events of this test (e.g. by payload ``release_id``).
        until: true once every expected event is there.
        timeout: seconds before the wait fails.

    Returns:
        The events, oldest first.
    """
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter
    from prefect.events.worker import EventsWorker

    from sandbox.procs import wait_until

    EventsWorker.drain_all(timeout=30)
    found: list[Any] = []

    def read() -> bool:
        with get_client(sync_client=True) as client:
            page = client.read_events(EventFilter(
                event=EventNameFilter(prefix=["veza-ops."]),
                resource=EventResourceFilter(id=[resource_id])), limit=50)
        found[:] = sorted((e for e in page.events if where(e)), key=lambda e: e.occurred)
        return until(found)

    wait_until(read, timeout=timeout, what=f"the events of {resource_id}")
    return found


def related(event: Any, role: str) -> list[str]:
    """The names of an event's related resources with a role (``version``, ``service``...)."""
    return [r.get("prefect.resource.name") or r.id for r in event.related if r.role == role]


def read_task_runs(flow_run_id: Any, *, until: Callable[[list[Any]], bool],
                   timeout: float = 60.0) -> list[Any]:
    """The task runs of a flow run, once ``until`` holds for them.

    The server records task runs from the events their engines emit, in batches (the
    sandbox's server: at most 1 s late, see ``sandbox/launchers/prefect_server.py``): this
    waits on the condition, with a deadline, rather than reading once.

    Args:
        flow_run_id: the flow run.
        until: true once the task runs read are the ones expected (e.g. all in a final state).
        timeout: seconds before the wait fails.

    Returns:
        The task runs read last.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.events.worker import EventsWorker

    from sandbox.procs import wait_until

    EventsWorker.drain_all(timeout=30)
    found: list[Any] = []

    def read() -> bool:
        with get_client(sync_client=True) as client:
            found[:] = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
        return until(found)

    wait_until(read, timeout=timeout, what=f"the task runs of flow run {flow_run_id}")
    return found
