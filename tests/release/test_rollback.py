"""Rollback building blocks on the sandbox: redeploying a missing colour, switching back."""

from __future__ import annotations

import pytest

from tasks.rollback import RestoreReport, RestoreTarget, restore_service, switch_back
from tests.release import helpers as h


def test_restoration_time_is_decision_to_last_selector():
    report = RestoreReport(decided_at=100.0, finished_at=100.75)
    assert report.restoration_s == pytest.approx(0.75)
    assert RestoreReport(decided_at=5.0, finished_at=4.0).restoration_s == 0.0


@pytest.mark.timeout(300)
def test_redeploy_missing_colour_then_switch_back(sandbox_stack, sandbox_namespaces):
    _, production = sandbox_namespaces
    apps, core = h.apis(sandbox_stack)
    h.push_all(sandbox_stack, "1.1.0")
    target = RestoreTarget(service="veza-chat-server", service_name="veza-chat-server",
                           deployment_base="veza-chat-server", container="veza-chat-server",
                           image="veza/chat-server:1.1.0", secret_name=None, port=8081)
    outcome = restore_service(apps, core, namespace=production, target=target,
                              timeout_s=120)
    assert (outcome.action, outcome.colour) == ("redeployed", "green")
    green = apps.read_namespaced_deployment("veza-chat-server-green", production)
    assert green.spec.replicas == 2
    assert green.spec.template.spec.containers[0].image == "veza/chat-server:1.1.0"
    assert h.selectors(core, production)["veza-chat-server"] == "green"
    # Already there: nothing to do.
    again = restore_service(apps, core, namespace=production, target=target, timeout_s=120)
    assert again.action == "already"

    from tasks.bluegreen import switch_selector

    record = switch_selector(core, service="veza-chat-server", service_name="veza-chat-server",
                             namespace=production, colour="blue", pending_release="r-test")
    assert record.from_colour == "green"
    svc = core.read_namespaced_service("veza-chat-server", production)
    assert svc.metadata.annotations["veza-ops.veza.io/pending-release"] == "r-test"
    report = switch_back(core, [record])
    assert report.restored == ["veza-chat-server"] and not report.errors
    svc = core.read_namespaced_service("veza-chat-server", production)
    assert svc.spec.selector["color"] == "green"
    assert "veza-ops.veza.io/pending-release" not in (svc.metadata.annotations or {})


def test_keep_old_colour_waits_out_the_window_in_bounded_steps():
    from tasks.production import keep_old_colour

    now = [100.0]
    waits: list[float] = []

    def sleeper(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    keep_old_colour(12.0, clock=lambda: now[0], sleeper=sleeper)
    assert now[0] == 112.0  # the whole window, no more
    assert waits == [5.0, 5.0, 2.0]  # never one long blind sleep
    waits.clear()
    keep_old_colour(0.0, clock=lambda: now[0], sleeper=sleeper)
    assert waits == []
