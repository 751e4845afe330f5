"""Canary releases: the catalogue's steps, the lockstep analysis, and the sequence on the sandbox.

The sandbox's Service proxies honour the VirtualService weights (tests/k8s/test_istio_weights.py),
so the load generator's traffic really reaches the canaries and Prometheus judges them.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kubernetes import client as k8s

from errors import InvalidInputError, VerificationError
from tasks.release.canary_analysis import Step, analyse_step, plan_lines, plan_steps
from tasks.release.canary_mesh import ISTIO, canary_weight, destination_rule, routes
from tasks.release.catalogue import parse_catalogue
from tests.release import helpers as h

pytestmark = pytest.mark.timeout(420)
TRIVIAL_E2E = ["{python}", "-c", "pass"]
TWO = ["veza-backend-api", "veza-web"]


def catalogue_data(**production: Any) -> dict[str, Any]:
    return {
        "environments": {"production": {
            "namespace": "prod", "strategy": "canary", "kubernetes_block": "k",
            "prometheus_block": "p", "vault_block": "v", **production}},
        "services": {
            "veza-backend-api": {"image_repository": "veza/backend-api", "port": 8080,
                                 "analysis": {"interval_s": 1.0, "intervals": 2,
                                              "failure_limit": 0, "max_no_data": 2}},
            "veza-web": {"image_repository": "veza/web", "port": 80,
                         "analysis": {"interval_s": 2.0, "intervals": 2,
                                      "failure_limit": 0, "max_no_data": 2}},
        },
    }


# --- pure: catalogue, steps, mesh objects ---------------------------------------------------

def test_canary_strategy_with_default_steps():
    env = parse_catalogue(catalogue_data()).environment("production")
    assert env.strategy == "canary" and env.canary_weights == [5, 25, 50, 100]
    assert env.approval_gates == []
    assert plan_steps(env.canary_weights) == [Step(1, 5, False), Step(2, 25, False),
                                            Step(3, 50, False), Step(4, 100, True)]
    assert [s.stable_weight for s in plan_steps([10, 100])] == [90, 0]


@pytest.mark.parametrize(("steps", "problem"), [
    ([], "at least one step"),
    ([5, 50], "last step must be 100"),
    ([5, 5, 100], "increase strictly"),
    ([50, 25, 100], "increase strictly"),
    ([0, 100], "percentage in 1..100"),
    ([5, 101], "percentage in 1..100"),
])
def test_bad_canary_steps_refused_naming_the_field(steps, problem):
    with pytest.raises(InvalidInputError) as refused:
        parse_catalogue(catalogue_data(canary_steps=steps))
    assert "environments.production.canary_steps" in str(refused.value)
    assert problem in str(refused.value)


def test_unknown_strategy_refused_naming_the_field():
    with pytest.raises(InvalidInputError, match=r"environments\.production\.strategy"):
        parse_catalogue(catalogue_data(strategy="flagger"))


def test_approval_gates_from_the_catalogue():
    steps = [5, {"weight": 50, "approve": True}, 100]
    env = parse_catalogue(catalogue_data(canary_steps=steps)).environment("production")
    assert env.canary_weights == [5, 50, 100] and env.approval_gates == [50]
    assert [s.approve for s in plan_steps(env.canary_weights, env.approval_gates)] == [
        False, True, False]
    assert any("step 2: wait for an operator's approval, then " in line
               for line in plan_lines(env, parse_catalogue(catalogue_data()).select(), "2.0.0"))
    for approval, gates in (("every-step", [5, 50, 100]), ("before-production", [5, 50])):
        env = parse_catalogue(catalogue_data(canary_steps=steps, approval=approval)
                              ).environment("production")
        assert env.approval_gates == gates


@pytest.mark.parametrize(("fields", "path"), [
    ({"canary_steps": [5, {"weight": 50, "aprove": True}, 100]},
     "environments.production.canary_steps.1.aprove"),
    ({"canary_steps": [5, {"approve": True}, 100]},
     "environments.production.canary_steps.1.weight"),
    ({"approval": "sometimes"}, "environments.production.approval"),
    ({"approval_timeout_s": 0}, "environments.production.approval_timeout_s"),
])
def test_bad_approval_settings_refused_naming_the_field(fields, path):
    with pytest.raises(InvalidInputError) as refused:
        parse_catalogue(catalogue_data(**fields))
    assert path in str(refused.value)


class Pause:
    """Stands in for pause_flow_run: answers a decision, or times out."""

    def __init__(self, answer: dict[str, Any] | None) -> None:
        self.answer = answer
        self.calls: list[dict[str, Any]] = []
        self.resumed = 0

    def __call__(self, **kwargs: Any) -> Any:
        from prefect.exceptions import FlowPauseTimeout

        self.calls.append(kwargs)
        if self.answer is None:
            raise FlowPauseTimeout("Flow run was paused and never resumed.")
        return kwargs["wait_for_input"](**self.answer)

    def resume(self) -> None:
        self.resumed += 1


def test_a_gate_approves_rejects_or_times_out():
    from errors import ApprovalError
    from tasks.release.canary_gates import CanaryDecision, await_approval

    env = parse_catalogue(catalogue_data(approval_timeout_s=30, approval_poll_s=2)
                          ).environment("production")
    step = Step(2, 50, False, True)
    ok = Pause({"approve": True, "approved_by": "alice", "reason": "dashboards fine"})
    assert await_approval(step, env, pause=ok, resume_after_timeout=ok.resume) == (
        "approved by alice: dashboards fine")
    assert ok.calls == [{"wait_for_input": CanaryDecision, "timeout": 30, "poll_interval": 2,
                         "key": "canary-step-2"}]
    no = Pause({"approve": False, "approved_by": "bob", "reason": "p99 creeping"})
    with pytest.raises(ApprovalError, match="canary step 2 at 50 % rejected by bob: p99 creep"):
        await_approval(step, env, pause=no, resume_after_timeout=no.resume)
    late = Pause(None)
    with pytest.raises(ApprovalError, match="no decision on canary step 2 at 50 % within 30 s"):
        await_approval(step, env, pause=late, resume_after_timeout=late.resume)
    assert late.resumed == 1  # the run is Running again before the rollback's tasks


def test_routes_and_weights_read_back():
    assert canary_weight(None) == 0
    assert canary_weight({"spec": {"http": routes("api", 25)}}) == 25
    assert [r["weight"] for r in routes("api", 0)[0]["route"]] == [100, 0]
    assert [r["destination"]["subset"] for r in routes("api", 5)[0]["route"]] == [
        "stable", "canary"]
    with pytest.raises(ValueError, match="percentage"):
        routes("api", 120)
    catalogue = parse_catalogue(catalogue_data())
    env, spec = catalogue.environment("production"), catalogue.services["veza-web"]
    rule = destination_rule(env, spec, "green")
    assert rule["spec"]["subsets"] == [{"name": "stable", "labels": {"color": "green"}},
                                       {"name": "canary", "labels": {"color": "canary"}}]
    lines = plan_lines(env, catalogue.select(), "2.0.0")
    assert any("step 4: veza-backend-api, veza-web at 100 % canary" in line for line in lines)


class Clock:
    """A clock that advances only when the analysis waits."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class Prometheus:
    """Answers per app: the canary of ``bad`` answers 50 % success; others are healthy."""

    def __init__(self, bad: str | None = None) -> None:
        self.bad = bad
        self.queries: list[str] = []

    def query(self, promql: str) -> list[dict[str, Any]]:
        self.queries.append(promql)
        assert 'color="canary"' in promql  # only the canary track is judged
        if promql.startswith("sum(rate"):
            value = 0.5 if self.bad and f'app="{self.bad}"' in promql else 1.0
        else:
            value = 0.02
        return [{"metric": {}, "value": [0, str(value)]}]


def step_of(prometheus: Prometheus, clock: Clock, **kwargs: Any) -> Any:
    catalogue = parse_catalogue(catalogue_data())
    return analyse_step(prometheus, env=catalogue.environment("production"),
                        specs=catalogue.select(), step=Step(1, 5, False), clock=clock,
                        sleeper=clock.sleep, wall_clock=clock, **kwargs)


def test_every_canary_promotes_each_on_its_own_interval():
    clock = Clock()
    prometheus = Prometheus()
    result = step_of(prometheus, clock)
    assert result.aborted == []
    assert {n: r.verdict.decision for n, r in result.results.items()} == {
        "veza-backend-api": "promote", "veza-web": "promote"}
    assert {n: len(r.measurements) for n, r in result.results.items()} == {
        "veza-backend-api": 2, "veza-web": 2}
    assert clock.now == 4.0  # web's 2 x 2 s; the backend was done at 2 s


def test_one_failing_canary_ends_the_step_at_once():
    clock = Clock()
    result = step_of(Prometheus(bad="veza-backend-api"), clock)
    assert [r.service for r in result.aborted] == ["veza-backend-api"]
    assert "success rate 0.500 < 0.99" in result.aborted[0].verdict.reason
    assert clock.now == 1.0 and result.decided_at == 1.0  # its first interval, no later


def test_a_canary_without_ready_pods_fails_its_interval():
    clock = Clock()
    result = step_of(Prometheus(), clock, endpoints={"veza-web": lambda: 0})
    assert [r.service for r in result.aborted] == ["veza-web"]
    assert "no ready endpoint for veza-web (canary)" in result.aborted[0].verdict.reason


# --- on the sandbox ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def blocks(prefect_harness, sandbox_stack) -> str:
    return h.register_blocks(sandbox_stack)


@pytest.fixture
def sandbox_namespaces(sandbox_seed) -> tuple[str, str]:
    """A fresh production namespace (no staging: ``""``) whose Services get 20 req/s each.

    The first step sends a canary 5 % of its Service's traffic: 1 request a second here.
    """
    return sandbox_seed(rate=20.0, staging=False)


def canary_catalogue(path: Path, staging: str, production: str, blocks: str,
                     **production_fields: Any) -> str:
    """The tests' catalogue with production on the canary strategy (no staging: ``""``).

    Smoke tests only ask /health: a canary answering errors on its API reaches the analysis.
    """
    h.write_catalogue(path, staging_ns=staging or "unused", production_ns=production,
                      blocks=blocks, e2e_command=TRIVIAL_E2E, interval_s=1.0, intervals=2,
                      staging=bool(staging))
    data = yaml.safe_load(path.read_text())
    data["environments"]["production"].update(strategy="canary", **production_fields)
    for service in data["services"].values():
        service["smoke_paths"] = ["/health"]
        # At 5 % a canary sees ~0.5 of the load generator's 10 req/s, fewer on a busy machine:
        # a 10 s window and 15 tolerated silent intervals keep the first step from ending on
        # silence (which never promotes), while a failing canary still fails on its first data.
        service["analysis"].update(window_s=10, max_no_data=15)
    path.write_text(yaml.safe_dump(data))
    return str(path)


def weights(custom: k8s.CustomObjectsApi, namespace: str) -> dict[str, int]:
    found = {s: custom.get_namespaced_custom_object(*ISTIO, namespace, "virtualservices", s)
             for s in TWO}
    return {s: canary_weight(vs if isinstance(vs, dict) else None) for s, vs in found.items()}


def narrowed(core: k8s.CoreV1Api, namespace: str) -> dict[str, dict[str, str]]:
    """Each Service's selector, asserting no canary left its stable colour recorded on it."""
    out = {}
    for s in TWO:
        svc = core.read_namespaced_service(s, namespace)
        assert "veza-ops.veza.io/canary-stable-colour" not in (svc.metadata.annotations or {})
        out[s] = dict(svc.spec.selector)
    return out


def canary_replicas(apps: k8s.AppsV1Api, namespace: str) -> dict[str, int]:
    return {s: int(apps.read_namespaced_deployment(f"{s}-canary", namespace).spec.replicas or 0)
            for s in TWO}


def run_release(catalogue: str, version: str) -> Any:
    from flows.release import release

    return release(version=version, environment="production", catalogue_path=catalogue,
                   services=TWO, skip_build=True)


def test_good_canary_of_two_services_reaches_100_and_promotes(sandbox_stack, sandbox_namespaces,
                                                              blocks, tmp_path):
    from tasks.release.history import last_release

    staging, production = sandbox_namespaces
    apps, core = h.apis(sandbox_stack)
    custom = k8s.CustomObjectsApi(apps.api_client)
    h.push_all(sandbox_stack, "4.1.0")
    catalogue = canary_catalogue(tmp_path / "catalogue.yaml", staging, production, blocks)

    summary = run_release(catalogue, "4.1.0")

    assert summary.outcome == "succeeded", summary.reason
    # The stable track (the Service's own colour) runs the new version; nothing else moved.
    assert h.selectors(core, production) == {s: "blue" for s in h.ORDER}
    blue = h.images(apps, production, "blue")
    assert {s: blue[s][0] for s in TWO} == {"veza-backend-api": "veza/backend-api:4.1.0",
                                            "veza-web": "veza/web:4.1.0"}
    assert blue["veza-chat-server"][0] == "veza/chat-server:1.0.0"
    assert weights(custom, production) == {s: 0 for s in TWO}
    assert canary_replicas(apps, production) == {s: 0 for s in TWO}
    assert narrowed(core, production) == {s: {"app": s, "color": "blue"} for s in TWO}
    url = core.read_namespaced_service("veza-backend-api", production).metadata.annotations[
        "sandbox.veza.io/url"]
    assert httpx.get(url + "/api/v1/tracks", timeout=5).json()["image"] == (
        "veza/backend-api:4.1.0")
    record = last_release(core, production)
    assert record is not None and record.outcome == "succeeded"
    steps = {c.name: c for c in record.checks if c.name.startswith("canary step")}
    assert list(steps) == ["canary step 1 at 5 %", "canary step 2 at 25 %",
                           "canary step 3 at 50 %", "canary step 4 at 100 %"]
    # Every step judged both canaries on measured traffic (silence never promotes).
    assert all(c.passed and c.detail.count("promote") == 2 for c in steps.values())
    assert record.colours == {s: "blue" for s in TWO}
    assert record.previous_images["veza-web"] == "veza/web:1.0.0"


def test_bad_canary_rolled_back_at_the_first_step_for_every_service(
        sandbox_stack, sandbox_namespaces, blocks, tmp_path):
    from tasks.release.history import last_release

    staging, production = sandbox_namespaces
    apps, core = h.apis(sandbox_stack)
    custom = k8s.CustomObjectsApi(apps.api_client)
    h.push_all(sandbox_stack, "4.2.0", error_rate=1.0)
    catalogue = canary_catalogue(tmp_path / "catalogue.yaml", staging, production, blocks)

    with pytest.raises(VerificationError, match=r"canary of veza-[-a-z]+ at 5 % failed: "
                                                r"success rate"):
        run_release(catalogue, "4.2.0")

    assert weights(custom, production) == {s: 0 for s in TWO}
    assert canary_replicas(apps, production) == {s: 0 for s in TWO}
    assert narrowed(core, production) == {s: {"app": s, "color": "blue"} for s in TWO}
    blue = h.images(apps, production, "blue")
    assert {s: blue[s] for s in TWO} == {"veza-backend-api": ("veza/backend-api:1.0.0", 1),
                                         "veza-web": ("veza/web:1.0.0", 1)}
    assert h.selectors(core, production) == {s: "blue" for s in h.ORDER}
    record = last_release(core, production)
    assert record is not None and record.outcome == "rolled-back"
    assert not [c for c in record.checks if c.name.startswith("canary step")]
    rollback = next(c for c in record.checks if c.name == "rollback")
    assert rollback.passed and "2 service(s) back" in rollback.detail
    assert "restoration_s" in record.timings and "detection_s" in record.timings


def test_a_custom_metric_from_the_catalogue_rolls_every_service_back(
        sandbox_stack, sandbox_namespaces, blocks, tmp_path):
    """A healthy canary by the guide's two metrics, over the catalogue's own bound: the
    ``canary-rps`` metric (a max on the canary's request rate) alone rolls it back."""
    from tasks.release.history import last_release

    _, production = sandbox_namespaces
    apps, core = h.apis(sandbox_stack)
    custom = k8s.CustomObjectsApi(apps.api_client)
    h.push_all(sandbox_stack, "4.6.0")
    path = tmp_path / "catalogue.yaml"
    canary_catalogue(path, "", production, blocks)
    data = yaml.safe_load(path.read_text())
    data["services"]["veza-web"]["analysis"] = {**data["services"]["veza-web"]["analysis"],
                                                "metrics": [{
        "name": "canary-rps", "max": 0.01,
        "query": "sum(rate(http_requests_total{{selector}}[{window}]))"}]}
    path.write_text(yaml.safe_dump(data))

    with pytest.raises(VerificationError) as failed:
        run_release(str(path), "4.6.0")

    assert failed.value.message.startswith("canary of veza-web at 5 % failed: canary-rps ")
    assert "success rate" not in failed.value.message and "p99" not in failed.value.message
    assert weights(custom, production) == {s: 0 for s in TWO}
    assert canary_replicas(apps, production) == {s: 0 for s in TWO}
    assert {s: h.images(apps, production, "blue")[s][0] for s in TWO} == {
        "veza-backend-api": "veza/backend-api:1.0.0", "veza-web": "veza/web:1.0.0"}
    record = last_release(core, production)
    assert record is not None and record.outcome == "rolled-back"
    assert "canary-rps" in (record.reason or "")


def test_the_analysis_table_has_a_row_per_service_step_and_metric():
    from tasks.release.canary_table import artifact_key, step_rows

    data = catalogue_data()
    data["services"]["veza-web"]["analysis"]["metrics"] = [
        {"name": "errors-5xx", "max": 0.5,
         "query": 'max(rate(http_requests_total{{selector},status=~"5.."}[{window}]))'}]
    catalogue = parse_catalogue(data)
    clock = Clock()
    result = analyse_step(Prometheus(bad="veza-web"), env=catalogue.environment("production"),
                          specs=catalogue.select(), step=Step(1, 5, False), clock=clock,
                          sleeper=clock.sleep, wall_clock=clock)
    rows = step_rows(result, catalogue.select())
    assert [(r["service"], r["step"], r["weight %"], r["metric"], r["value"], r["threshold"],
             r["verdict"], r["analysis"]) for r in rows] == [
        ("veza-backend-api", 1, 5, "success-rate", 1.0, ">= 0.99", "pass", "promote"),
        ("veza-backend-api", 1, 5, "p99-latency", 20.0, "<= 500 ms", "pass", "promote"),
        ("veza-web", 1, 5, "success-rate", 0.5, ">= 0.99", "fail", "abort"),
        ("veza-web", 1, 5, "p99-latency", 20.0, "<= 500 ms", "pass", "abort"),
        ("veza-web", 1, 5, "errors-5xx", 0.02, "<= 0.5", "pass", "abort")]
    assert all(r["measured"] == "1 of 1" for r in rows[2:])
    assert "success rate 0.500 < 0.99" in rows[2]["reason"]
    assert artifact_key("Prod_EU") == "canary-analysis-prod-eu"


class OnlyFailures:
    """A canary answering nothing but 5xx: no non-5xx series exists at all."""

    def __init__(self, total: float | None) -> None:
        self.total = total

    def query(self, promql: str) -> list[dict[str, Any]]:
        if 'status!~"5.."' in promql:
            return []  # the numerator has no series: the quotient is empty
        value = self.total if promql.startswith("sum(increase") else 0.02
        return [] if value is None else [{"metric": {}, "value": [0, str(value)]}]


def test_only_failures_measure_as_zero_success_never_as_silence():
    from tasks.release.measuring import measure

    m = measure(OnlyFailures(total=3.0), "prod", "veza-web", "canary", 5)
    assert m.has_data and m.success_rate == 0.0
    silent = measure(OnlyFailures(total=None), "prod", "veza-web", "canary", 5)
    assert not silent.has_data and silent.error == "no data"


def test_a_selector_left_wide_by_a_dead_run_is_put_back(sandbox_stack, sandbox_seed, blocks,
                                                        tmp_path):
    """The Service selects both tracks during a canary; a failed narrowing leaves its record."""
    from tasks.release.canary import reconcile_canaries
    from tasks.release.canary_mesh import set_weight
    from tasks.release.canary_service import (
        STABLE_ANNOTATION,
        narrow_selectors,
        serving_colour,
        widen_selector,
    )
    from tasks.release.catalogue import load_catalogue
    from tasks.release.clusters import connect

    _, production = sandbox_seed(staging=False, traffic=False)
    apps, core = h.apis(sandbox_stack)
    custom = k8s.CustomObjectsApi(apps.api_client)
    catalogue = load_catalogue(canary_catalogue(tmp_path / "c.yaml", "", production, blocks))
    env, spec = catalogue.environment("production"), catalogue.services["veza-web"]
    # What a run killed at its 25 % step leaves: a weight up, the Service selecting by app.
    set_weight(custom, env, spec, 25, "dead-run")
    widen_selector(core, env, spec, "blue")
    svc = core.read_namespaced_service("veza-web", production)
    assert svc.spec.selector == {"app": "veza-web"}
    assert svc.metadata.annotations[STABLE_ANNOTATION] == "blue"
    assert serving_colour(svc) == "blue"  # status and preflight still see the stable colour
    # Narrowing that keeps failing is named and leaves the record for the next run.
    h.api_faults(apps, "POST", {"verb": "patch", "resource": "services", "error_rate": 1.0,
                                "status": 503})
    try:
        left = narrow_selectors(core, env, [spec], {"veza-web": "blue"}, deadline_s=0.5)
    finally:
        h.api_faults(apps, "DELETE")
    assert list(left) == ["veza-web"]
    assert core.read_namespaced_service("veza-web", production).spec.selector == {
        "app": "veza-web"}

    done, problems = reconcile_canaries(connect(env), [spec])

    assert problems == []
    assert any("set to 0 %" in line for line in done)
    assert any("put back on color=blue" in line for line in done)
    assert canary_weight(custom.get_namespaced_custom_object(
        *ISTIO, production, "virtualservices", "veza-web")) == 0
    svc = core.read_namespaced_service("veza-web", production)
    assert svc.spec.selector == {"app": "veza-web", "color": "blue"}
    assert STABLE_ANNOTATION not in (svc.metadata.annotations or {})


# --- approval gates on the real Prefect server ------------------------------------------------

def paused_run(tag: str) -> Any:
    """The flow run tagged ``tag`` once it is Paused (None before)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[tag])))
    return next((r for r in runs if r.state is not None and r.state.is_paused()), None)


def resume(run_id: Any, decision: dict[str, Any]) -> bool:
    """Resume a paused run with a decision, as the UI's form does; False until it takes it."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.responses import SetStateStatus

    with get_client(sync_client=True) as client:
        answer = client.resume_flow_run(run_id, run_input=decision)
    return answer.status == SetStateStatus.ACCEPT


def release_tagged(catalogue: str, version: str, tag: str) -> tuple[Any, list[Any]]:
    from prefect import tags

    def run() -> Any:
        with tags(tag):
            return run_release(catalogue, version)

    return h.in_thread(run)


def test_an_approved_gate_lets_the_next_step_run(sandbox_stack, sandbox_namespaces, blocks,
                                                 tmp_path):
    from sandbox.procs import wait_until
    from tasks.release.history import last_release

    _, production = sandbox_namespaces
    apps, core = h.apis(sandbox_stack)
    custom = k8s.CustomObjectsApi(apps.api_client)
    h.push_all(sandbox_stack, "4.3.0")
    catalogue = canary_catalogue(tmp_path / "c.yaml", "", production, blocks,
                                 canary_steps=[100], approval="before-production",
                                 approval_poll_s=1)
    tag = f"canary-gate-{uuid.uuid4().hex[:8]}"
    thread, out = release_tagged(catalogue, "4.3.0", tag)

    run = wait_until(lambda: paused_run(tag), timeout=240, what="the release paused at its gate")
    # Canaries up and smoke-tested, no traffic on them before the operator says so.
    assert canary_replicas(apps, production) == {s: 1 for s in TWO}
    assert weights(custom, production) == {s: 0 for s in TWO}
    wait_until(lambda: resume(run.id, {"approve": True, "approved_by": "alice",
                                       "reason": "go"}), timeout=30, what="the run resumed")
    thread.join(timeout=300)

    assert out and not isinstance(out[0], BaseException), out
    assert out[0].outcome == "succeeded", out[0].reason
    assert {s: h.images(apps, production, "blue")[s][0].split(":")[1] for s in TWO} == {
        s: "4.3.0" for s in TWO}
    record = last_release(core, production)
    assert record is not None
    checks = [c.name for c in record.checks]
    gate = checks.index("approval of canary step 1 at 100 %")
    assert checks[gate + 1] == "canary step 1 at 100 %"  # the step ran after the approval
    assert record.checks[gate].detail == "approved by alice: go"
    assert "table: artifact canary-analysis-production" in record.checks[gate + 1].detail
    assert [(r["service"], r["weight %"], r["metric"], r["verdict"], r["analysis"])
            for r in table_of(run.id)] == [
        (s, 100, metric, "pass", "promote") for s in TWO
        for metric in ("success-rate", "p99-latency")]


def table_of(run_id: Any) -> list[dict[str, Any]]:
    """The newest canary analysis table a flow run published."""
    import json

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        ArtifactFilterKey,
    )
    from prefect.client.schemas.sorting import ArtifactSort

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=["canary-analysis-production"]),
            flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])),
            sort=ArtifactSort.CREATED_DESC, limit=1)
    assert found, "no canary-analysis table"
    data = found[0].data
    return list(json.loads(data) if isinstance(data, str) else data)


def test_a_rejected_gate_rolls_every_service_back(sandbox_stack, sandbox_namespaces, blocks,
                                                  tmp_path):
    from errors import ApprovalError
    from sandbox.procs import wait_until
    from tasks.release.history import last_release
    from veza_ops.cli import main

    _, production = sandbox_namespaces
    apps, core = h.apis(sandbox_stack)
    custom = k8s.CustomObjectsApi(apps.api_client)
    h.push_all(sandbox_stack, "4.4.0")
    catalogue = canary_catalogue(tmp_path / "c.yaml", "", production, blocks,
                                 canary_steps=[50, {"weight": 100, "approve": True}],
                                 approval_poll_s=1)
    tag = f"canary-gate-{uuid.uuid4().hex[:8]}"
    thread, out = release_tagged(catalogue, "4.4.0", tag)

    run = wait_until(lambda: paused_run(tag), timeout=240, what="the release paused at its gate")
    assert weights(custom, production) == {s: 50 for s in TWO}  # step 1 passed, then the gate
    # From a terminal this time: the same decision through `veza-ops reject`.
    wait_until(lambda: main(["reject", str(run.id), "--by", "bob", "--reason", "latency"]) == 0,
               timeout=30, what="the run took the rejection")
    thread.join(timeout=300)

    assert out and isinstance(out[0], ApprovalError), out
    assert "canary step 2 at 100 % rejected by bob: latency" in str(out[0])
    assert weights(custom, production) == {s: 0 for s in TWO}
    assert canary_replicas(apps, production) == {s: 0 for s in TWO}
    assert narrowed(core, production) == {s: {"app": s, "color": "blue"} for s in TWO}
    assert {s: h.images(apps, production, "blue")[s][0] for s in TWO} == {
        "veza-backend-api": "veza/backend-api:1.0.0", "veza-web": "veza/web:1.0.0"}
    record = last_release(core, production)
    assert record is not None and record.outcome == "rolled-back"
    assert "rejected by bob" in (record.reason or "")


def test_a_gate_nobody_answers_times_out_and_rolls_every_service_back(
        sandbox_stack, sandbox_namespaces, blocks, tmp_path):
    """The real pause on the real server: no decision within approval_timeout_s, the run is
    put back to Running, rolls every service back to 0 % and ends Failed, never left Paused."""
    from prefect.client.orchestration import get_client

    from errors import ApprovalError
    from sandbox.procs import wait_until
    from tasks.release.history import last_release

    _, production = sandbox_namespaces
    apps, core = h.apis(sandbox_stack)
    custom = k8s.CustomObjectsApi(apps.api_client)
    h.push_all(sandbox_stack, "4.5.0")
    catalogue = canary_catalogue(tmp_path / "c.yaml", "", production, blocks,
                                 canary_steps=[50, {"weight": 100, "approve": True}],
                                 approval_timeout_s=3, approval_poll_s=1)
    tag = f"canary-gate-{uuid.uuid4().hex[:8]}"
    thread, out = release_tagged(catalogue, "4.5.0", tag)

    run = wait_until(lambda: paused_run(tag), timeout=240, what="the release paused at its gate")
    thread.join(timeout=300)  # nobody answers

    assert out and isinstance(out[0], ApprovalError), out
    assert "no decision on canary step 2 at 100 % within 3 s" in str(out[0])
    assert weights(custom, production) == {s: 0 for s in TWO}
    assert canary_replicas(apps, production) == {s: 0 for s in TWO}
    assert narrowed(core, production) == {s: {"app": s, "color": "blue"} for s in TWO}
    record = last_release(core, production)
    assert record is not None and record.outcome == "rolled-back"
    assert "no decision" in (record.reason or "")
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(run.id).state
    assert state is not None and state.is_failed(), state


def test_approve_refuses_a_bad_id_and_an_unknown_run(prefect_harness, capsys):
    from veza_ops.cli import main

    assert main(["approve", "not-a-uuid", "--by", "x"]) == 2
    assert "run_id 'not-a-uuid' is not a flow run id" in capsys.readouterr().err
    missing = str(uuid.uuid4())
    assert main(["abort", missing]) == 2
    assert f"no flow run {missing}" in capsys.readouterr().err


def test_rollback_of_a_canary_environment(sandbox_stack, sandbox_seed, blocks, tmp_path):
    """Every weight to 0 %, the Service narrowed, the stable rolled back in place (no colour)."""
    from datetime import UTC, datetime

    from flows.rollback import rollback
    from tasks.release.canary_mesh import set_weight
    from tasks.release.canary_service import widen_selector
    from tasks.release.catalogue import load_catalogue
    from tasks.release.history import ReleaseRecord, last_release, record_release
    from tasks.release.staging import deploy_to_staging

    _, production = sandbox_seed(staging=False, traffic=False)
    apps, core = h.apis(sandbox_stack)
    custom = k8s.CustomObjectsApi(apps.api_client)
    h.push_all(sandbox_stack, "4.5.0")
    path = canary_catalogue(tmp_path / "c.yaml", "", production, blocks)
    catalogue = load_catalogue(path)
    env, web = catalogue.environment("production"), catalogue.services["veza-web"]
    # What a committed canary release of veza-web 4.5.0 left: the stable on 4.5.0, its record.
    deploy_to_staging(apps, namespace=production, name="veza-web-blue", container=web.container,
                      image="veza/web:4.5.0", timeout_s=60)
    now = datetime.now(UTC)
    record_release(core, production, ReleaseRecord(
        id=ReleaseRecord.new_id(now, "canary"), environment="production", version="4.5.0",
        images={"veza-web": "veza/web:4.5.0"}, previous_images={"veza-web": "veza/web:1.0.0"},
        colours={"veza-web": "blue"}, started_at=now, finished_at=now, outcome="succeeded"))
    # ... and a later canary killed at 25 %: a weight up, the Service selecting both tracks.
    set_weight(custom, env, web, 25, "dead-run")
    widen_selector(core, env, web, "blue")

    summary = rollback(environment="production", services=["veza-web"], catalogue_path=path)

    assert summary.outcome == "succeeded", summary.reason
    assert canary_weight(custom.get_namespaced_custom_object(
        *ISTIO, production, "virtualservices", "veza-web")) == 0
    svc = core.read_namespaced_service("veza-web", production)
    assert svc.spec.selector == {"app": "veza-web", "color": "blue"}  # the stable subset's
    assert h.images(apps, production, "blue")["veza-web"] == ("veza/web:1.0.0", 1)
    green = [d.metadata.name for d in apps.list_namespaced_deployment(production).items
             if d.metadata.name == "veza-web-green" and d.spec.replicas]
    assert green == []  # rolled back in place: no colour switch under the DestinationRule
    record = last_release(core, production)
    assert record is not None and record.kind == "rollback"
    assert next(c for c in record.checks if c.name == "restore veza-web").detail == "rolled"
    assert any("set to 0 %" in line for line in summary.reconciled)


# --- three services, the third failing at 50 % ----------------------------------------------

THREE = ["veza-backend-api", "veza-chat-server", "veza-stream-server"]


def flow_run_tagged(tag: str) -> Any:
    """The one flow run tagged ``tag``."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[tag])))
    assert len(runs) == 1, runs
    return runs[0]


def test_a_canary_failing_at_50_on_the_third_service_rolls_back_all(
        sandbox_stack, sandbox_namespaces, blocks, tmp_path):
    """Steps 25, 50, 100 for three services; the third's canary turns bad only once its
    weight reads 50 % (its image follows the registry: the push lands on the running pod).
    Step 1 passes for all three; step 2 aborts on the third; every service goes back."""
    from prefect import tags

    from sandbox.procs import wait_until
    from sandbox.registry import Behaviour
    from tasks.release.history import last_release

    _, production = sandbox_namespaces
    apps, core = h.apis(sandbox_stack)
    custom = k8s.CustomObjectsApi(apps.api_client)
    h.push_all(sandbox_stack, "4.7.0", follow=True)
    path = tmp_path / "c.yaml"
    canary_catalogue(path, "", production, blocks, canary_steps=[25, 50, 100])
    data = yaml.safe_load(path.read_text())
    # Four intervals for the third: at 50 % it cannot promote on the healthy answers it gave
    # before the bad push was scraped (its errors fail it as soon as they are rated).
    data["services"]["veza-stream-server"]["analysis"]["intervals"] = 4
    path.write_text(yaml.safe_dump(data))

    def weight_of(service: str) -> int:
        """Its canary weight (0 while its VirtualService does not exist yet)."""
        try:
            return canary_weight(custom.get_namespaced_custom_object(
                *ISTIO, production, "virtualservices", service))
        except k8s.ApiException as exc:
            if exc.status == 404:
                return 0
            raise

    def turn_bad_at_50() -> None:
        wait_until(lambda: weight_of("veza-stream-server") == 50, timeout=300, interval=0.05,
                   what="the third service at 50 %")
        sandbox_stack.registry.push("veza/stream-server:4.7.0",
                                    Behaviour(error_rate=1.0, follow=True))

    watcher, pushed = h.in_thread(turn_bad_at_50)
    tag = f"canary-three-{uuid.uuid4().hex[:8]}"
    try:
        with tags(tag), pytest.raises(VerificationError) as failed:
            from flows.release import release

            release(version="4.7.0", environment="production", catalogue_path=str(path),
                    services=THREE, skip_build=True)
    finally:
        watcher.join(timeout=310)
    assert pushed == [None], pushed  # the bad push happened at 50 %, not before

    assert failed.value.message.startswith(
        "canary of veza-stream-server at 50 % failed: success rate"), failed.value.message
    assert {s: weight_of(s) for s in THREE} == {s: 0 for s in THREE}
    assert {s: int(apps.read_namespaced_deployment(f"{s}-canary", production).spec.replicas
                   or 0) for s in THREE} == {s: 0 for s in THREE}
    for s in THREE:
        svc = core.read_namespaced_service(s, production)
        assert dict(svc.spec.selector) == {"app": s, "color": "blue"}
        assert "veza-ops.veza.io/canary-stable-colour" not in (svc.metadata.annotations or {})
    assert {s: h.images(apps, production, "blue")[s][0].split(":")[1] for s in THREE} == {
        s: "1.0.0" for s in THREE}
    record = last_release(core, production)
    assert record is not None and record.outcome == "rolled-back"
    assert "canary of veza-stream-server at 50 % failed" in (record.reason or "")
    steps = [c for c in record.checks if c.name.startswith("canary step")]
    assert [(c.name, c.passed, c.detail.count("promote")) for c in steps] == [
        ("canary step 1 at 25 %", True, 3)]
    rollback = next(c for c in record.checks if c.name == "rollback")
    assert rollback.passed and "3 service(s) back" in rollback.detail
    table = table_of(flow_run_tagged(tag).id)
    assert {(r["step"], r["weight %"]) for r in table} == {(1, 25), (2, 50)}
    assert {(r["service"], r["analysis"]) for r in table if r["step"] == 1} == {
        (s, "promote") for s in THREE}
    at_50 = {(r["service"], r["metric"]): r for r in table if r["step"] == 2}
    assert at_50[("veza-stream-server", "success-rate")]["verdict"] == "fail"
    assert at_50[("veza-stream-server", "success-rate")]["analysis"] == "abort"
    assert {r["analysis"] for (s, _), r in at_50.items() if s != "veza-stream-server"} <= {
        "promote", "stopped"}
