"""Rollout arithmetic of the Deployment controller, against the real controller's numbers."""

from __future__ import annotations

import pytest

from sandbox.k8s.controllers.deployments import pod_template_hash, template_without_hash
from sandbox.k8s.controllers.ips import IpPool, IpPoolExhausted, pools_for
from sandbox.k8s.controllers.rolling import (
    RsCounts,
    new_rs_replicas,
    old_rs_scale_down,
    resolve_fenceposts,
    scaled_value,
)


@pytest.mark.parametrize(
    ("surge", "unavailable", "replicas", "expected"),
    [
        ("25%", "25%", 10, (3, 2)),  # surge rounds up, unavailable rounds down
        ("25%", "25%", 1, (1, 0)),
        (None, None, 4, (1, 1)),  # defaults are 25% / 25%
        (1, 0, 2, (1, 0)),
        (0, 0, 3, (0, 1)),  # both zero: unavailable becomes 1
        ("0%", "0%", 3, (0, 1)),
        ("50%", "50%", 3, (2, 1)),
        ("100%", 0, 5, (5, 0)),
        ("2", "1", 5, (2, 1)),
    ],
)
def test_resolve_fenceposts(surge, unavailable, replicas, expected):
    assert resolve_fenceposts(surge, unavailable, replicas) == expected


def test_scaled_value_rejects_garbage_with_a_hint():
    with pytest.raises(ValueError, match="25%"):
        scaled_value("lots", 3, round_up=True, default="25%")


@pytest.mark.parametrize(
    ("replicas", "surge", "current", "new", "expected"),
    [
        (2, 1, 2, 0, 1),  # maxSurge 1: one new pod beside the two old ones
        (2, 1, 3, 1, 1),  # at the surge limit: no further scale-up
        (2, 1, 2, 1, 2),  # an old pod went away: new may grow to 2
        (10, 3, 10, 0, 3),
        (3, 0, 2, 0, 1),  # maxSurge 0 after one old pod was removed
        (2, 5, 2, 0, 2),  # never beyond replicas for the new RS
    ],
)
def test_new_rs_replicas(replicas, surge, current, new, expected):
    got = new_rs_replicas(
        replicas=replicas, max_surge=surge, current_pods=current, new_rs_replicas=new
    )
    assert got == expected


def test_old_rs_not_scaled_down_while_new_pods_are_unavailable():
    # maxUnavailable 0: the new pod is not available yet, so every old pod stays.
    downs = old_rs_scale_down(
        replicas=2,
        max_unavailable=0,
        new_spec_replicas=1,
        new_available=0,
        old=[RsCounts("old", 2, 2)],
    )
    assert downs == {}


def test_old_rs_scaled_down_by_what_new_pods_made_available():
    downs = old_rs_scale_down(
        replicas=2,
        max_unavailable=0,
        new_spec_replicas=1,
        new_available=1,
        old=[RsCounts("old", 2, 2)],
    )
    assert downs == {"old": 1}


def test_unhealthy_old_replicas_are_cleaned_up_first_and_oldest_first():
    # The oldest RS has 2 unavailable pods; they go first, without touching availability.
    downs = old_rs_scale_down(
        replicas=4,
        max_unavailable=1,
        new_spec_replicas=2,
        new_available=0,
        old=[RsCounts("oldest", 2, 0), RsCounts("older", 3, 3)],
    )
    assert downs["oldest"] == 0
    # available = 3, min available = 3: no healthy pod may go.
    assert "older" not in downs


def test_max_unavailable_lets_healthy_old_pods_go():
    downs = old_rs_scale_down(
        replicas=4,
        max_unavailable=2,
        new_spec_replicas=0,
        new_available=0,
        old=[RsCounts("old", 4, 4)],
    )
    assert downs == {"old": 2}


def test_pod_template_hash_is_stable_and_ignores_its_own_label():
    template = {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "a"}]}}
    labelled = {
        "metadata": {"labels": {"app": "web", "pod-template-hash": "x"}},
        "spec": {"containers": [{"name": "a"}]},
    }
    first = pod_template_hash(template)
    assert first == pod_template_hash(template_without_hash(labelled))
    assert first != pod_template_hash(template, collision_count=1)
    assert set(first) <= set("bcdfghjklmnpqrstvwxz2456789")
    other = {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "b"}]}}
    assert pod_template_hash(other) != first


def test_ip_pools_split_pods_and_services_and_recycle_round_robin():
    pods, services = pools_for("127.44.6")
    assert pods.allocate() == "127.44.6.2"
    assert services.allocate() == "127.44.7.2"
    second = pods.allocate()
    pods.release("127.44.6.2")
    assert pods.allocate() not in ("127.44.6.2", second)  # freed addresses rest a while
    small = IpPool("127.9.9")
    for _ in range(253):
        small.allocate()
    with pytest.raises(IpPoolExhausted):
        small.allocate()
    with pytest.raises(ValueError, match=r"127\.A\.B"):
        IpPool("10.0.0")
