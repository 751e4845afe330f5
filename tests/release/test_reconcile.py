"""Crash safety: the reconcile plan over observed states, and a release killed mid-switch."""

from __future__ import annotations

import pytest

from tasks.release.reconcile import ColourState, ServiceState, plan

READY = ColourState(exists=True, replicas=2, ready=True, image="i:1")
DOWN = ColourState(exists=True, replicas=0, ready=False, image="i:1")
GONE = ColourState(exists=False)


def state(selected, blue, green, pending=None, previous=None, name="svc") -> ServiceState:
    return ServiceState(service=name, service_name=name, selected=selected,
                        pending_release=pending, previous_colour=previous,
                        colours={"blue": blue, "green": green})



@pytest.fixture
def sandbox_namespaces(sandbox_seed) -> tuple[str, str]:
    """Production alone (``("", production)``): these releases are about production, so
    they skip staging and E2E (the catalogue then has no staging environment)."""
    return sandbox_seed(staging=False)

def test_consistent_state_needs_nothing():
    actions, problems = plan([state("blue", READY, GONE), state("green", DOWN, READY)])
    assert actions == [] and problems == []


def test_uncommitted_switch_goes_back_to_the_previous_colour():
    actions, _ = plan([state("green", READY, READY, pending="r1", previous="blue")])
    assert [(a.service, a.to_colour) for a in actions] == [("svc", "blue")]
    assert "never committed" in actions[0].reason


def test_uncommitted_switch_kept_when_previous_not_ready():
    actions, _ = plan([state("green", DOWN, READY, pending="r1", previous="blue")])
    assert actions[0].to_colour == "green"


def test_a_committed_releases_pending_switches_are_kept_never_half_undone():
    """Killed while clearing the marks: the first Service's were cleared, the second's not;
    the record says r1 committed, so the second keeps green too (one version for both)."""
    states = [state("green", READY, READY, name="a"),
              state("green", READY, READY, pending="r1", previous="blue", name="b")]
    actions, problems = plan(states, committed=frozenset({"r1"}))
    assert [(a.service, a.to_colour) for a in actions] == [("b", "green")] and problems == []
    assert "had committed" in actions[0].reason
    # not committed (or another release committed): back to blue, as before
    assert plan(states, committed=frozenset({"r0"}))[0][0].to_colour == "blue"


def test_a_committed_switch_to_a_colour_without_ready_pods_goes_back():
    actions, _ = plan([state("green", READY, DOWN, pending="r1", previous="blue")],
                      committed=frozenset({"r1"}))
    assert actions[0].to_colour == "blue" and "no ready pod" in actions[0].reason


def test_traffic_moves_off_a_colour_with_no_ready_pod():
    actions, problems = plan([state("green", READY, DOWN)])
    assert actions[0].to_colour == "blue" and problems == []


def test_nothing_ready_is_a_problem_for_a_human():
    actions, problems = plan([state("blue", DOWN, GONE)])
    assert actions == [] and problems == ["svc: no colour has a ready pod"]


# --- against the sandbox: SIGKILL of the flow process after the first switch ---------------



@pytest.mark.timeout(420)
def test_killed_release_rerun_reaches_consistent_state(prefect_harness, sandbox_stack,
                                                      sandbox_namespaces, tmp_path):
    from flows.release import release
    from tasks.release.history import release_history
    from tests.release import helpers as h

    staging, production = sandbox_namespaces
    apps, core = h.apis(sandbox_stack)
    blocks = h.register_blocks(sandbox_stack)
    catalogue = h.write_catalogue(tmp_path / "c.yaml", staging_ns=staging,
                                  production_ns=production, blocks=blocks,
                                  e2e_command=["{python}", "-c", "pass"], intervals=2,
                                  keep_old_colour_s=0, lock_ttl_s=5, lock_wait_s=60)
    h.push_all(sandbox_stack, "4.0.0")
    h.release_killed_after_first_switch(sandbox_stack, production=production,
                                        catalogue=catalogue, version="4.0.0", workdir=tmp_path)
    # Killed mid-release: the first service is on green, uncommitted.
    svc = core.read_namespaced_service("veza-backend-api", production)
    assert svc.metadata.annotations.get("veza-ops.veza.io/pending-release")
    (killed,) = [r for r in release_history(core, production) if r.outcome == "running"]
    # What the zombie-run automation does after 90 s without a heartbeat, done at once here.
    from prefect.client.orchestration import get_client
    from prefect.states import Crashed

    with get_client(sync_client=True) as client:
        client.set_flow_run_state(killed.flow_run_id, Crashed(message="test"), force=True)

    summary = release(version="4.0.0", environment="production",
                      catalogue_path=str(catalogue), skip_build=True)
    assert any("never committed" in line for line in summary.reconciled)
    assert summary.outcome == "succeeded"
    # The killed run's record no longer says running: the rerun marked it.
    outcomes = {r.id: r.outcome for r in release_history(core, production)}
    assert outcomes[killed.id] == "crashed"
    assert h.selectors(core, production) == {s: "green" for s in h.ORDER}
    for name in h.ORDER:
        annotations = core.read_namespaced_service(name, production).metadata.annotations or {}
        assert "veza-ops.veza.io/pending-release" not in annotations
    assert all(n == 1 for _, n in h.images(apps, production, "green").values())
