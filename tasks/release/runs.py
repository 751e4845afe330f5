"""Flow runs as the Prefect API sees them: is a lock holder's or a record's run still alive?"""

from __future__ import annotations

from uuid import UUID

from tasks.release.logs import get_logger

UNKNOWN = "UNKNOWN"


def flow_run_state(run_id: str) -> str | None:
    """The Prefect state type of a flow run (``CRASHED``, ``RUNNING``...).

    Args:
        run_id: the flow run id.

    Returns:
        The state type; None when the API does not know the run (404); ``UNKNOWN`` when it
        cannot be told (not a run id, API unreachable): the run is then assumed alive.
    """
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    try:
        uid = UUID(run_id)
    except ValueError:
        return UNKNOWN
    try:
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(uid)
    except ObjectNotFound:
        return None
    except Exception as exc:  # an unreachable API proves nothing: the run is assumed alive
        get_logger(__name__).warning("could not read flow run %s: %s", run_id,
                                     type(exc).__name__)
        return UNKNOWN
    return run.state.type.value if run.state is not None else UNKNOWN
