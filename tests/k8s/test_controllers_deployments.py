"""Deployment and ReplicaSet controllers with real pod processes: rollouts, revisions, failures."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

from sandbox.k8s.controllers.deployments import HASH_LABEL, REVISION, REVISION_HISTORY
from sandbox.k8s.controllers.replicasets import pod_ready
from sandbox.k8s.resources import DEPLOYMENTS, PODS, REPLICASETS
from sandbox.k8s.resources import EVENTS as EVENTS_RES
from tests.k8s.controller_harness import Cluster, cluster, deployment, wait_for

__all__ = ["cluster"]


def _status(c: Cluster, ns: str, name: str) -> dict[str, Any]:
    return c.store.get(DEPLOYMENTS, ns, name).get("status") or {}


def _condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((x for x in status.get("conditions") or [] if x["type"] == kind), {})


def _rolled_out(c: Cluster, ns: str, name: str) -> bool:
    d = c.store.get(DEPLOYMENTS, ns, name)
    s = d.get("status") or {}
    want = d["spec"]["replicas"]
    return (
        s.get("observedGeneration", 0) >= d["metadata"]["generation"]
        and s.get("updatedReplicas", 0) == want
        and s.get("replicas", 0) == want
        and s.get("availableReplicas", 0) == want
        and _condition(s, "Progressing").get("reason") == "NewReplicaSetAvailable"
    )


def _set_image(c: Cluster, ns: str, name: str, image: str) -> None:
    def apply(d: dict[str, Any]) -> None:
        d["spec"]["template"]["spec"]["containers"][0]["image"] = image

    c.store.mutate(DEPLOYMENTS, ns, name, apply)


def _replicasets(c: Cluster, ns: str) -> list[dict[str, Any]]:
    return c.store.list(REPLICASETS, ns)[0]


def test_deployment_rolls_out_to_ready_pods_that_answer_http(cluster: Cluster):
    ns = cluster.namespace()
    image = cluster.push("veza/backend-api:1.0.0")
    cluster.store.create(DEPLOYMENTS, ns, deployment("api", image))
    wait_for(lambda: _rolled_out(cluster, ns, "api"), what="rollout of api")

    status = _status(cluster, ns, "api")
    assert status["readyReplicas"] == 2 and "unavailableReplicas" not in status
    assert _condition(status, "Available")["reason"] == "MinimumReplicasAvailable"
    [rs] = _replicasets(cluster, ns)
    hash_ = rs["metadata"]["labels"][HASH_LABEL]
    assert rs["metadata"]["name"] == f"api-{hash_}"
    assert rs["spec"]["selector"]["matchLabels"] == {"app": "api", HASH_LABEL: hash_}
    assert rs["metadata"]["annotations"][REVISION] == "1"
    assert cluster.store.get(DEPLOYMENTS, ns, "api")["metadata"]["annotations"][REVISION] == "1"
    assert rs["status"]["readyReplicas"] == 2 and rs["status"]["observedGeneration"] == 1
    pods = cluster.store.list(PODS, ns)[0]
    assert len(pods) == 2
    for pod in pods:
        assert pod["metadata"]["name"].startswith(f"api-{hash_}-")
        assert len(pod["metadata"]["name"]) == len(f"api-{hash_}-") + 5
        assert pod["metadata"]["ownerReferences"][0]["uid"] == rs["metadata"]["uid"]
        assert pod["status"]["phase"] == "Running" and pod_ready(pod)
        ip = pod["status"]["podIP"]
        with urllib.request.urlopen(f"http://{ip}:8080/api/v1/tracks", timeout=5) as resp:
            body = json.loads(resp.read())
        assert body["pod"] == pod["metadata"]["name"]
        assert body["image"] == image


def _observe_rollout(cluster: Cluster, ns: str) -> list[tuple[int, int]]:
    """Record (desired replicas over all ReplicaSets, ready pods) after every change in ``ns``.

    maxSurge bounds what the controller asks for (the ReplicaSets' desired replicas), as in the
    real controller; a deleted pod may outlive its scale-down for a moment (Terminating on a
    real cluster), so the pod count itself is not what maxSurge bounds.
    """
    seen: list[tuple[int, int]] = []

    def observe(event: str, res: Any, obj: dict[str, Any]) -> None:
        if obj["metadata"].get("namespace") == ns and res in (PODS, REPLICASETS):
            desired = sum(rs["spec"].get("replicas", 0) for rs in _replicasets(cluster, ns))
            ready = sum(1 for p in cluster.store.list(PODS, ns)[0] if pod_ready(p))
            seen.append((desired, ready))

    cluster.store.subscribe(observe)
    return seen


def test_rolling_update_honours_max_surge_and_max_unavailable(cluster: Cluster):
    ns = cluster.namespace()
    v1, v2 = cluster.push("veza/web:1"), cluster.push("veza/web:2")
    cluster.store.create(DEPLOYMENTS, ns, deployment("web", v1, replicas=3, port=8090))
    wait_for(lambda: _rolled_out(cluster, ns, "web"), what="first rollout")

    seen = _observe_rollout(cluster, ns)
    _set_image(cluster, ns, "web", v2)
    wait_for(lambda: _rolled_out(cluster, ns, "web"), what="rolling update")

    assert seen, "the rollout changed no pod"
    assert max(total for total, _ in seen) == 4  # replicas 3 + maxSurge 1, never more
    assert min(ready for _, ready in seen) >= 3  # maxUnavailable 0: never below 3 ready
    images = {p["spec"]["containers"][0]["image"] for p in cluster.store.list(PODS, ns)[0]}
    assert images == {v2}
    rss = {rs["metadata"]["annotations"][REVISION]: rs for rs in _replicasets(cluster, ns)}
    assert rss["1"]["spec"]["replicas"] == 0 and rss["2"]["spec"]["replicas"] == 3
    events = [
        e["message"]
        for e in cluster.store.list(EVENTS_RES, ns)[0]
        if e["reason"] == "ScalingReplicaSet"
    ]
    assert any("Scaled up replica set" in m for m in events)
    assert any("Scaled down replica set" in m for m in events)


def test_bad_image_reaches_progress_deadline_exceeded(cluster: Cluster):
    ns = cluster.namespace()
    good = cluster.push("veza/chat-server:1")
    cluster.store.create(
        DEPLOYMENTS, ns, deployment("chat", good, replicas=1, progressDeadlineSeconds=2, port=8081)
    )
    wait_for(lambda: _rolled_out(cluster, ns, "chat"), what="first rollout")
    _set_image(cluster, ns, "chat", "veza/chat-server:does-not-exist")

    def timed_out() -> bool:
        cond = _condition(_status(cluster, ns, "chat"), "Progressing")
        return cond.get("reason") == "ProgressDeadlineExceeded"

    wait_for(timed_out, what="ProgressDeadlineExceeded")
    cond = _condition(_status(cluster, ns, "chat"), "Progressing")
    assert cond["status"] == "False"
    assert "has timed out progressing" in cond["message"]
    # The old pod keeps serving: the deployment stays available.
    assert _condition(_status(cluster, ns, "chat"), "Available")["status"] == "True"
    bad = [
        p
        for p in cluster.store.list(PODS, ns)[0]
        if p["spec"]["containers"][0]["image"].endswith("does-not-exist")
    ]
    assert len(bad) == 1
    waiting = bad[0]["status"]["containerStatuses"][0]["state"]["waiting"]
    assert waiting["reason"] in ("ErrImagePull", "ImagePullBackOff")
    assert bad[0]["status"]["phase"] == "Pending"
    wait_for(
        lambda: (
            cluster.store.get(PODS, ns, bad[0]["metadata"]["name"])["status"]["containerStatuses"][
                0
            ]["state"]
            .get("waiting", {})
            .get("reason")
            == "ImagePullBackOff"
        ),
        what="ImagePullBackOff",
    )


def test_crashing_pod_goes_to_crash_loop_back_off_with_restarts(cluster: Cluster):
    ns = cluster.namespace()
    image = cluster.push("veza/stream-server:crash", crash_on_start=True)
    cluster.store.create(DEPLOYMENTS, ns, deployment("stream", image, replicas=1, port=8082))

    def restarted_twice() -> dict[str, Any] | None:
        pods = cluster.store.list(PODS, ns)[0]
        statuses = [s for p in pods for s in (p.get("status") or {}).get("containerStatuses") or []]
        return next(
            (
                s
                for s in statuses
                if s["restartCount"] >= 2
                and s["state"].get("waiting", {}).get("reason") == "CrashLoopBackOff"
            ),
            None,
        )

    status = wait_for(restarted_twice, what="two restarts in CrashLoopBackOff")
    assert status["lastState"]["terminated"]["exitCode"] == 1
    assert status["lastState"]["terminated"]["reason"] == "Error"
    assert "back-off" in status["state"]["waiting"]["message"]
    assert status["ready"] is False
    d = _status(cluster, ns, "stream")
    assert d.get("availableReplicas", 0) == 0 and d["unavailableReplicas"] == 1
    assert _condition(d, "Available")["status"] == "False"


def test_revision_history_limit_prunes_old_replica_sets(cluster: Cluster):
    ns = cluster.namespace()
    images = [cluster.push(f"veza/backend-api:h{i}") for i in range(4)]
    cluster.store.create(
        DEPLOYMENTS, ns, deployment("hist", images[0], replicas=1, revisionHistoryLimit=1)
    )
    wait_for(lambda: _rolled_out(cluster, ns, "hist"), what="first rollout")
    for image in images[1:]:
        _set_image(cluster, ns, "hist", image)
        wait_for(lambda: _rolled_out(cluster, ns, "hist"), what=f"rollout of {image}")

    def pruned() -> list[str] | None:
        revisions = sorted(
            rs["metadata"]["annotations"][REVISION] for rs in _replicasets(cluster, ns)
        )
        return revisions if revisions == ["3", "4"] else None

    wait_for(pruned, what="only the newest old ReplicaSet kept")


def test_template_revert_reuses_the_old_replica_set_with_a_new_revision(cluster: Cluster):
    ns = cluster.namespace()
    v1, v2 = cluster.push("veza/backend-api:r1"), cluster.push("veza/backend-api:r2")
    cluster.store.create(DEPLOYMENTS, ns, deployment("undo", v1, replicas=1))
    wait_for(lambda: _rolled_out(cluster, ns, "undo"), what="v1 rollout")
    [first] = _replicasets(cluster, ns)
    _set_image(cluster, ns, "undo", v2)
    wait_for(lambda: _rolled_out(cluster, ns, "undo"), what="v2 rollout")
    _set_image(cluster, ns, "undo", v1)  # what `kubectl rollout undo` does to the template
    wait_for(lambda: _rolled_out(cluster, ns, "undo"), what="revert rollout")

    rss = _replicasets(cluster, ns)
    assert len(rss) == 2  # no third ReplicaSet: the first one came back
    again = cluster.store.get(REPLICASETS, ns, first["metadata"]["name"])
    assert again["metadata"]["uid"] == first["metadata"]["uid"]
    assert again["metadata"]["annotations"][REVISION] == "3"
    assert again["metadata"]["annotations"][REVISION_HISTORY] == "1"
    assert again["spec"]["replicas"] == 1
    d = cluster.store.get(DEPLOYMENTS, ns, "undo")
    assert d["metadata"]["annotations"][REVISION] == "3"


def test_recreate_strategy_stops_old_pods_before_starting_new_ones(cluster: Cluster):
    ns = cluster.namespace()
    v1, v2 = cluster.push("veza/web:rc1"), cluster.push("veza/web:rc2")
    cluster.store.create(
        DEPLOYMENTS, ns, deployment("rec", v1, replicas=2, port=8091, strategy={"type": "Recreate"})
    )
    wait_for(lambda: _rolled_out(cluster, ns, "rec"), what="first rollout")
    mixed: list[set[str]] = []

    def observe(event: str, res: Any, obj: dict[str, Any]) -> None:
        if res == PODS and obj["metadata"].get("namespace") == ns:
            mixed.append(
                {p["spec"]["containers"][0]["image"] for p in cluster.store.list(PODS, ns)[0]}
            )

    cluster.store.subscribe(observe)
    _set_image(cluster, ns, "rec", v2)
    wait_for(lambda: _rolled_out(cluster, ns, "rec"), what="recreate rollout")
    assert {v1, v2} not in mixed  # never both versions at once
    assert set() in mixed  # every old pod was gone before a new one appeared


def test_paused_deployment_does_not_roll_out(cluster: Cluster):
    ns = cluster.namespace()
    v1, v2 = cluster.push("veza/web:p1"), cluster.push("veza/web:p2")
    cluster.store.create(DEPLOYMENTS, ns, deployment("paused", v1, replicas=1, port=8092))
    wait_for(lambda: _rolled_out(cluster, ns, "paused"), what="first rollout")

    def pause_and_set(d: dict[str, Any]) -> None:
        d["spec"]["paused"] = True
        d["spec"]["template"]["spec"]["containers"][0]["image"] = v2

    cluster.store.mutate(DEPLOYMENTS, ns, "paused", pause_and_set)
    wait_for(
        lambda: (
            _condition(_status(cluster, ns, "paused"), "Progressing").get("reason")
            == "DeploymentPaused"
        ),
        what="DeploymentPaused",
    )
    assert len(_replicasets(cluster, ns)) == 1

    def resume(d: dict[str, Any]) -> None:
        d["spec"]["paused"] = False

    cluster.store.mutate(DEPLOYMENTS, ns, "paused", resume)
    wait_for(lambda: _rolled_out(cluster, ns, "paused"), what="rollout after resume")
    assert {p["spec"]["containers"][0]["image"] for p in cluster.store.list(PODS, ns)[0]} == {v2}


def test_rolling_update_with_zero_surge_scales_down_first(cluster: Cluster):
    ns = cluster.namespace()
    v1, v2 = cluster.push("veza/web:s1"), cluster.push("veza/web:s2")
    strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": "34%"}}
    cluster.store.create(
        DEPLOYMENTS, ns, deployment("nosurge", v1, replicas=3, port=8093, strategy=strategy)
    )
    wait_for(lambda: _rolled_out(cluster, ns, "nosurge"), what="first rollout")
    seen = _observe_rollout(cluster, ns)
    _set_image(cluster, ns, "nosurge", v2)
    wait_for(lambda: _rolled_out(cluster, ns, "nosurge"), what="rolling update")
    assert max(desired for desired, _ in seen) == 3  # maxSurge 0: never above replicas
    assert min(ready for _, ready in seen) == 2  # 34% of 3 rounds down to 1 unavailable
