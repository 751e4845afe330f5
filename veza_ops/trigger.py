"""`veza-ops trigger`: run a deployment through the Prefect API, follow it, exit by outcome.

Exit codes: 0 Completed; 1 Failed, Crashed or Cancelled; 2 timeout, usage or API error.
Credentials come from the Prefect settings (PREFECT_API_URL, and PREFECT_API_AUTH_STRING or
PREFECT_API_KEY when set); they are never printed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TextIO

from veza_ops.trigger_params import ParamError, ci_commit, fill_commit, parse_params, typed_params

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_ERROR = 2


class TriggerError(Exception):
    """A usage or API problem; the message is the one-line reason printed to the user."""


@dataclass
class TriggerOutcome:
    """What happened to the triggered run."""

    exit_code: int
    flow_run_id: str | None
    state: str | None
    link: str | None
    reason: str


def check_params(params: dict[str, Any], defaults: dict[str, Any], schema: dict[str, Any]) -> None:
    """Validate parameters against a deployment's schema before any run is created.

    Args:
        params: the overrides given on the command line.
        defaults: the deployment's default parameters.
        schema: the deployment's ``parameter_openapi_schema``.

    Raises:
        TriggerError: naming the parameter and what is wrong.
    """
    from prefect.utilities.schema_tools.validation import ValidationError, validate

    known = set((schema or {}).get("properties", {}))
    unknown = sorted(set(params) - known) if known else []
    if unknown:
        raise TriggerError(
            f"unknown parameter(s) {', '.join(unknown)}; this deployment takes: "
            f"{', '.join(sorted(known))}"
        )
    if not schema:
        return
    merged = {**defaults, **params}
    try:
        validate(merged, schema, raise_on_error=True)
    except ValidationError as exc:
        raise TriggerError(f"parameters rejected before creating a run: {exc}") from exc


def _ui_link(api_url: str, flow_run_id: str) -> str:
    from prefect.settings import PREFECT_UI_URL

    ui = PREFECT_UI_URL.value() or api_url.rstrip("/").removesuffix("/api")
    return f"{ui.rstrip('/')}/runs/flow-run/{flow_run_id}"


def _explain_http(exc: Exception) -> str:
    import httpx

    response = getattr(exc, "response", None)
    if isinstance(response, httpx.Response):
        if response.status_code == 401:
            return (
                "the Prefect API refused the request (401 Unauthorized): set "
                "PREFECT_API_AUTH_STRING (basic auth) or PREFECT_API_KEY for this server"
            )
        if response.status_code == 403:
            return "the Prefect API denied the request (403): the credentials lack permission"
        return f"the Prefect API answered {response.status_code} to {response.request.url.path}"
    if isinstance(exc, httpx.TransportError):
        return f"cannot reach the Prefect API ({type(exc).__name__}): check PREFECT_API_URL"
    return f"{type(exc).__name__}: {exc}"


def _transient(exc: Exception) -> bool:
    """A failure to read the run that a later poll may not see (network, 5xx, 429)."""
    import httpx
    from prefect.exceptions import PrefectHTTPStatusError

    if isinstance(exc, httpx.TransportError):
        return True
    if isinstance(exc, httpx.HTTPStatusError | PrefectHTTPStatusError):
        return exc.response.status_code >= 500 or exc.response.status_code == 429
    return False


def follow(read_state: Any, *, run_id: str, link: str, timeout: float, poll_interval: float,
           out: TextIO) -> TriggerOutcome:
    """Follow a run's state until it is final or ``timeout`` passes.

    A failed read that may be transient (the network, a 5xx or 429 from the API or a proxy) is
    retried, backing off up to 15 s, until the deadline: the run goes on meanwhile, and exiting
    2 would tell CI it failed. Other API errors end the wait at once.

    Args:
        read_state: returns the run's current state (a Prefect ``State`` or None).
        run_id: the run's id.
        link: its UI link.
        timeout: seconds to follow it.
        poll_interval: seconds between reads.
        out: where progress lines go.

    Returns:
        The outcome.

    Raises:
        Exception: the first error that is not transient.
    """
    deadline = time.monotonic() + timeout
    last: str | None = None
    failures = 0
    while True:
        try:
            state = read_state()
        except Exception as exc:
            if not _transient(exc):
                raise
            failures += 1
            if failures == 1:
                print(f"lost the Prefect API ({_explain_http(exc)}); the run goes on, retrying "
                      "until the timeout", file=out)
            state = None
        else:
            if failures:
                print(f"Prefect API reachable again after {failures} failed read(s)", file=out)
            failures = 0
        if state is not None and state.name != last:
            last = state.name
            print(f"state: {state.name}", file=out)
        if state is not None and state.is_final():
            if state.is_completed():
                return TriggerOutcome(EXIT_OK, run_id, state.name, link, "completed")
            reason = (state.message or state.name or "failed").splitlines()[0][:300]
            return TriggerOutcome(EXIT_FAILED, run_id, state.name, link, reason)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            unreachable = " (the Prefect API unreachable at the end)" if failures else ""
            return TriggerOutcome(EXIT_ERROR, run_id, last, link,
                                  f"timed out after {timeout:.0f}s{unreachable}; the run "
                                  f"goes on: {link}")
        pause = poll_interval * 2 ** min(failures, 5) if failures else poll_interval
        time.sleep(min(pause, 15.0, remaining))


def trigger(
    deployment: str,
    params: dict[str, Any],
    *,
    text_params: dict[str, str] | None = None,
    commit: Mapping[str, str] | None = None,
    idempotency_key: str | None = None,
    wait: bool = False,
    timeout: float = 3600.0,
    poll_interval: float = 2.0,
    out: TextIO = sys.stdout,
) -> TriggerOutcome:
    """Create a run of ``deployment`` (``flow-name/deployment-name``) and optionally follow it.

    Args:
        deployment: ``FLOW/DEPLOYMENT``.
        params: parameter overrides, validated against the deployment's schema first.
        text_params: overrides as given on a command line, typed by the schema
            (:func:`typed_params`).
        commit: the CI commit (:func:`ci_commit`), added as ``commit_sha`` and
            ``commit_timestamp`` when the deployment takes them and they were not given.
        idempotency_key: the same key never creates a second run of this deployment.
        wait: follow the run until it ends (or ``timeout``).
        timeout: seconds to wait when ``wait``.
        poll_interval: seconds between state reads.
        out: where progress lines go.

    Returns:
        The outcome, with the exit code to use.
    """
    import httpx
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError
    from prefect.settings import PREFECT_API_URL

    if "/" not in deployment:
        raise TriggerError(
            f"deployment {deployment!r}: expected FLOW/DEPLOYMENT, e.g. release/production"
        )
    api_url = PREFECT_API_URL.value()
    if not api_url:
        raise TriggerError("PREFECT_API_URL is not set: point it at the Prefect server's /api")
    try:
        with get_client(sync_client=True) as client:
            try:
                dep = client.read_deployment_by_name(deployment)
            except ObjectNotFound as exc:
                raise TriggerError(
                    f"deployment {deployment!r} not found on {api_url}: run `prefect deploy --all` "
                    "or check the name with `prefect deployment ls`"
                ) from exc
            schema = dict(dep.parameter_openapi_schema or {})
            params = {**params, **typed_params(text_params or {}, schema)}
            params = fill_commit(params, schema, commit or {})
            check_params(params, dict(dep.parameters or {}), schema)
            run = client.create_flow_run_from_deployment(
                dep.id, parameters=params, idempotency_key=idempotency_key
            )
            run_id = str(run.id)
            link = _ui_link(api_url, run_id)
            print(f"flow run {run.name} ({run_id}): {link}", file=out)
            if not wait:
                return TriggerOutcome(EXIT_OK, run_id, run.state_name, link, "created")
            try:
                return follow(lambda: client.read_flow_run(run.id).state, run_id=run_id,
                              link=link, timeout=timeout, poll_interval=poll_interval, out=out)
            except ObjectNotFound as exc:
                raise TriggerError(f"flow run {run_id} no longer exists on {api_url} (deleted "
                                   "while it was followed)") from exc
    except TriggerError:
        raise
    except (httpx.HTTPError, PrefectHTTPStatusError) as exc:
        raise TriggerError(_explain_http(exc)) from exc


def add_trigger_command(subparsers: Any) -> None:
    """Register ``veza-ops trigger`` on an argparse subparsers object.

    Args:
        subparsers: the object returned by ``add_subparsers``.
    """
    p = subparsers.add_parser(
        "trigger",
        help="run a deployment through the Prefect API (CI entry point)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("deployment", help="FLOW/DEPLOYMENT, e.g. release/production")
    p.add_argument(
        "--param", "-p", action="append", default=[], metavar="KEY=VALUE",
        help="a flow parameter (repeat): the value is JSON when that fits the parameter's type "
        "(skip_build=true, services='[\"veza-web\"]'), else text (version=1.10 stays the "
        "string \"1.10\" for a string parameter); checked against the deployment's schema "
        "before any run is created. commit_sha and commit_timestamp, when the deployment "
        "takes them, default to GITHUB_SHA (else git HEAD) and its commit time")
    p.add_argument("--idempotency-key", help="e.g. the commit SHA: never creates a second run")
    p.add_argument("--wait", action="store_true", help="follow the run until it ends")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait (with --wait)")


def run_trigger_command(args: argparse.Namespace) -> int:
    """Execute ``veza-ops trigger`` from parsed arguments.

    Args:
        args: parsed arguments.

    Returns:
        The process exit code.
    """
    try:
        outcome = trigger(
            args.deployment,
            {},
            text_params=parse_params(args.param),
            commit=ci_commit(os.environ),
            idempotency_key=args.idempotency_key,
            wait=args.wait,
            timeout=args.timeout,
        )
    except (TriggerError, ParamError) as exc:
        print(f"veza-ops trigger: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if outcome.exit_code != EXIT_OK:
        print(f"veza-ops trigger: {outcome.state or 'error'}: {outcome.reason}", file=sys.stderr)
    else:
        print(f"veza-ops trigger: {outcome.state}: {outcome.link}")
    return outcome.exit_code
