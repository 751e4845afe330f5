"""Rollback: choosing the target from the history (pure), restoring a service on the sandbox."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from errors import InvalidInputError
from tasks.release.catalogue import EnvironmentSpec, ServiceSpec, parse_catalogue
from tasks.release.history import ReleaseRecord
from tasks.release.rollback import choose_target, restore_service
from tests.release import helpers as h

CATALOGUE = parse_catalogue({
    "environments": {"production": {"namespace": "p", "kubernetes_block": "k",
                                    "prometheus_block": "p", "vault_block": "v"}},
    "services": {name: {"image_repository": repo, "port": port}
                 for name, (repo, port, _) in h.SERVICES.items()},
})


def release(i: int, outcome: str = "succeeded", **fields) -> ReleaseRecord:
    return ReleaseRecord(id=f"2026010{i}T000000Z", environment="production",
                         version=f"1.{i}.0", started_at=datetime.now(UTC), outcome=outcome,
                         images={"veza-web": f"veza/web:1.{i}.0"},
                         previous_images={"veza-web": f"veza/web:1.{i - 1}.0"},
                         secrets={"veza-web": f"veza-web-secrets-{i}"}, **fields)


def test_default_target_is_what_ran_before_the_last_release():
    target = choose_target([release(1), release(2), release(3, "rolled-back")], CATALOGUE,
                           None, None)
    assert target.label == "before 1.2.0"
    assert [s.name for s in target.specs] == ["veza-web"]
    assert target.images == {"veza-web": "veza/web:1.1.0"}
    assert target.secrets == {"veza-web": "veza-web-secrets-1"}
    assert target.previous_images == {"veza-web": "veza/web:1.2.0"}


def test_named_target_and_refusals():
    history = [release(1), release(2)]
    named = choose_target(history, CATALOGUE, None, release(1).id)
    assert named.label == "1.1.0" and named.images == {"veza-web": "veza/web:1.1.0"}
    with pytest.raises(InvalidInputError, match="target_release"):
        choose_target(history, CATALOGUE, None, "nope")
    with pytest.raises(InvalidInputError, match="services"):
        choose_target(history, CATALOGUE, ["veza-chat-server"], None)
    with pytest.raises(InvalidInputError, match="environment"):
        choose_target([release(1, "failed")], CATALOGUE, None, None)


@pytest.mark.timeout(300)
def test_redeploy_missing_colour_then_switch_back(sandbox_stack, sandbox_seed):
    """Two replicas: the redeployed colour must copy the live colour's scale."""
    from tasks.release.switching import switch_back, switch_selector

    _, production = sandbox_seed(replicas=2, staging=False)
    apps, core = h.apis(sandbox_stack)
    h.push_all(sandbox_stack, "1.1.0")
    env = EnvironmentSpec(name="production", namespace=production, strategy="blue-green",
                          kubernetes_block="k", prometheus_block="p", vault_block="v",
                          rollout_timeout_s=120)
    spec = ServiceSpec(name="veza-chat-server", image_repository="veza/chat-server", port=8081)
    outcome = restore_service(apps, core, env=env, spec=spec, image="veza/chat-server:1.1.0",
                              secret_name=None, release_id="r-test")
    assert (outcome.action, outcome.colour) == ("redeployed", "green")
    green = apps.read_namespaced_deployment("veza-chat-server-green", production)
    assert green.spec.replicas == 2
    assert green.spec.template.spec.containers[0].image == "veza/chat-server:1.1.0"
    assert h.selected(core, production, "veza-chat-server") == "green"
    blue = apps.read_namespaced_deployment("veza-chat-server-blue", production)
    assert blue.spec.replicas == 0  # the abandoned colour is scaled down
    # Already there: nothing to do.
    again = restore_service(apps, core, env=env, spec=spec, image="veza/chat-server:1.1.0",
                            secret_name=None, release_id="r-test")
    assert again.action == "already"

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
