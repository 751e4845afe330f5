"""Prefect events of the release, rollback, backup and restore-test runs (started, outcome).

Event names: ``veza-ops.<flow>.started``, then ``.succeeded``, ``.rolled-back``, ``.failed``
or ``.cancelled``, for automations and the UI's event feed.

The primary resource is what the run acts on (``veza-ops.environment.<name>`` or
``veza-ops.database.<name>``); the version, each service and the flow run are related
resources (roles ``version``, ``service``, ``flow-run``). Payloads carry the outcome, a
reason that went through the redaction every report uses, and ids: never a parameter or a
secret. An event that cannot be sent is logged and never fails a run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any

from prefect.events import emit_event

from errors import VezaOpsError
from tasks.logs import get_logger

if TYPE_CHECKING:
    from tasks.release.report import ReleaseReport

PREFIX = "veza-ops"
PHASES = ("started", "succeeded", "rolled-back", "failed", "cancelled")


def event_name(flow: str, outcome: str) -> str:
    """The event of a run's outcome (pure): one of :data:`PHASES` after the flow's name.

    Args:
        flow: ``release``, ``rollback``, ``backup``, ``restore-test``.
        outcome: the run's outcome (a history outcome such as ``rollback-incomplete`` or
            ``crashed`` is a failure).

    Returns:
        e.g. ``veza-ops.release.rolled-back``.
    """
    phase = outcome if outcome in PHASES else "failed"
    return f"{PREFIX}.{flow}.{phase}"


def resources(*, kind: str, name: str, version: str | None = None,
              services: Sequence[str] = (),
              run_id: str | None = None) -> tuple[dict[str, str], list[dict[str, str]]]:
    """The primary resource and the related ones of an event (pure).

    Args:
        kind: what the run acts on: ``environment`` or ``database``.
        name: its name.
        version: the version released (or restored, or backed up).
        services: the services concerned.
        run_id: the flow run's id.

    Returns:
        ``(resource, related)`` as Prefect expects them.
    """
    resource = {"prefect.resource.id": f"{PREFIX}.{kind}.{name}",
                "prefect.resource.name": name}
    related = []
    if version:
        related.append({"prefect.resource.id": f"{PREFIX}.version.{version}",
                        "prefect.resource.role": "version", "prefect.resource.name": version})
    related += [{"prefect.resource.id": f"{PREFIX}.service.{s}",
                 "prefect.resource.role": "service", "prefect.resource.name": s}
                for s in services]
    if run_id:
        related.append({"prefect.resource.id": f"prefect.flow-run.{run_id}",
                        "prefect.resource.role": "flow-run"})
    return resource, related


def emit(flow: str, phase: str, *, kind: str, name: str, version: str | None = None,
         services: Sequence[str] = (), payload: dict[str, Any] | None = None,
         run_id: str | None = None) -> None:
    """Send one event (best effort: a failure is logged).

    Args:
        flow: the flow's name.
        phase: one of :data:`PHASES` (or an outcome mapped onto them).
        kind: ``environment`` or ``database``.
        name: the environment's or database's name.
        version: the version concerned.
        services: the services concerned.
        payload: outcome, reason, ids (nothing secret).
        run_id: the flow run (default: the current one, if any).
    """
    from prefect import runtime

    if run_id is None and runtime.flow_run.id:
        run_id = str(runtime.flow_run.id)
    resource, related = resources(kind=kind, name=name, version=version, services=services,
                                  run_id=run_id)
    try:
        emit_event(event_name(flow, phase), resource=resource, related=related,
                   payload=payload or {})
    except Exception as exc:  # an event never fails a run
        get_logger(__name__).warning("could not emit the %s %s event: %s", flow, phase,
                                     type(exc).__name__)


def ended_abnormally(flow: str, *, run_id: str, parameters: Mapping[str, Any],
                     outcome: str = "crashed") -> None:
    """The end event of a run whose process died or was killed (from its state hook).

    The run's own :func:`run_events` never got to send it (a SIGKILL, a lost node: Prefect's
    runner runs the ``on_crashed`` hook once the process is gone). ``crashed`` is sent as
    ``failed`` (payload ``outcome: crashed``), ``cancelled`` as ``cancelled``; never raises.

    Args:
        flow: the flow's name.
        run_id: the flow run's id.
        parameters: the run's parameters (``environment``, ``version``, ``services``: names
            only, nothing else of them goes into the event).
        outcome: ``crashed`` or ``cancelled``.
    """
    try:
        version = parameters.get("version")
        services = parameters.get("services") or ()
        emit(flow, outcome, kind="environment",
             name=str(parameters.get("environment") or "production"),
             version=str(version) if version else None,
             services=[str(s) for s in services], run_id=run_id,
             payload={"outcome": outcome,
                      "reason": f"the run's process ended without reporting ({outcome})"})
    except Exception as exc:  # a state hook never raises
        get_logger(__name__).warning("could not emit the %s %s event: %s", flow, outcome,
                                     type(exc).__name__)


def failure_reason(exc: BaseException) -> str:
    """What an event says about an exception: our errors' message, else only its type (pure).

    Args:
        exc: the exception.

    Returns:
        One line.
    """
    from tasks.release.redaction import redact

    if isinstance(exc, VezaOpsError):
        return redact(exc.message).splitlines()[0][:500] if exc.message else type(exc).__name__
    return type(exc).__name__


@contextmanager
def run_events(flow: str, *, kind: str, name: str,
               details: Callable[[], dict[str, Any]],
               outcome: Callable[[BaseException | None], str] | None = None) -> Iterator[None]:
    """Emit ``started`` now and the outcome when the block ends (the exception re-raised).

    Args:
        flow: the flow's name.
        kind: ``environment`` or ``database``.
        name: its name.
        details: ``version``, ``services`` and payload fields, read at each event (so the
            end event sees what the run learnt, e.g. a rollback's target).
        outcome: the run's outcome given the exception (None: it returned); default
            ``succeeded``, ``cancelled`` for a cancellation, else ``failed``.

    Yields:
        Nothing.
    """
    started = time.monotonic()

    def send(phase: str, extra: dict[str, Any]) -> None:
        info = dict(details())
        version, services = info.pop("version", None), info.pop("services", ())
        emit(flow, phase, kind=kind, name=name, version=version, services=services,
             payload={**info, **extra})

    send("started", {})
    try:
        yield
    except BaseException as exc:
        result = outcome(exc) if outcome else (
            "failed" if isinstance(exc, Exception) else "cancelled")
        send(result, {"outcome": result, "reason": failure_reason(exc),
                      "duration_s": round(time.monotonic() - started, 3)})
        raise
    result = outcome(None) if outcome else "succeeded"
    send(result, {"outcome": result, "duration_s": round(time.monotonic() - started, 3)})


def release_events(report: ReleaseReport) -> AbstractContextManager[None]:
    """The events of a release or rollback run, from its report (outcome as recorded).

    Enter it before ``report.running(...)``: the outcome is the report's once it ended.

    Args:
        report: the run's report.

    Returns:
        The context manager of :func:`run_events`.
    """
    rec = report.record

    def details() -> dict[str, Any]:
        return {"version": None if rec.version == "?" else rec.version,
                "services": sorted(rec.images), "release_id": rec.id,
                "triggered_by": rec.triggered_by}

    def outcome(exc: BaseException | None) -> str:
        if report.summary.outcome != "running":
            return report.summary.outcome
        return "succeeded" if exc is None else (
            "failed" if isinstance(exc, Exception) else "cancelled")

    return run_events(rec.kind, kind="environment", name=rec.environment, details=details,
                      outcome=outcome)
