"""Services, Endpoints and the Prometheus file_sd writer, with real pods and real proxies."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from functools import partial
from typing import Any

import pytest

from sandbox.k8s.controllers.services import URL_ANNOTATION
from sandbox.k8s.resources import DEPLOYMENTS, ENDPOINTS, PODS, SERVICES
from tests.k8s.controller_harness import Cluster, cluster, deployment, wait_for

__all__ = ["cluster"]


def _get(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def _two_ready(c: Cluster, ns: str, name: str) -> bool:
    status = c.store.get(DEPLOYMENTS, ns, name).get("status") or {}
    return int(status.get("readyReplicas") or 0) == 2


def _service(name: str, selector: dict[str, str], port: int, target: int | str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"selector": selector, "ports": [{"port": port, "targetPort": target}]},
    }


def test_service_proxy_round_robins_and_follows_a_selector_patch(cluster: Cluster):
    ns = cluster.namespace()
    blue = cluster.push("veza/backend-api:blue")
    green = cluster.push("veza/backend-api:green")
    for color, image in (("blue", blue), ("green", green)):
        labels = {"app": "api", "color": color}
        cluster.store.create(DEPLOYMENTS, ns, deployment(f"api-{color}", image, labels=labels))
    cluster.store.create(
        SERVICES, ns, _service("api", {"app": "api", "color": "blue"}, 9000, "http")
    )
    for name in ("api-blue", "api-green"):
        wait_for(partial(_two_ready, cluster, ns, name), what=f"{name} ready")
    url = wait_for(
        lambda: (cluster.store.get(SERVICES, ns, "api")["metadata"].get("annotations") or {}).get(
            URL_ANNOTATION
        ),
        what="service URL annotation",
    )
    svc = cluster.store.get(SERVICES, ns, "api")
    assert url == f"http://{svc['spec']['clusterIP']}:9000"
    assert svc["spec"]["clusterIP"] != cluster.store.list(PODS, ns)[0][0]["status"]["podIP"]

    served = [_get(f"{url}/api/v1/tracks") for _ in range(6)]
    assert {code for code, _ in served} == {200}
    assert {body["image"] for _, body in served} == {blue}
    assert len({body["pod"] for _, body in served}) == 2  # round-robin over both blue pods

    def to_green(s: dict[str, Any]) -> None:
        s["spec"]["selector"]["color"] = "green"

    cluster.store.mutate(SERVICES, ns, "api", to_green)
    # The very next request goes to green: the proxy reads the selector on every request.
    served = [_get(f"{url}/api/v1/tracks") for _ in range(4)]
    assert {body["image"] for _, body in served} == {green}

    def endpoints_green() -> bool:
        ep = cluster.store.get(ENDPOINTS, ns, "api")
        names = {a["targetRef"]["name"] for s in ep.get("subsets") or [] for a in s["addresses"]}
        return len(names) == 2 and all(n.startswith("api-green-") for n in names)

    wait_for(endpoints_green, what="endpoints follow the selector")
    ep = cluster.store.get(ENDPOINTS, ns, "api")
    assert ep["subsets"][0]["ports"] == [{"port": 8080, "protocol": "TCP"}]


def test_service_without_ready_endpoints_answers_503_and_lists_not_ready(cluster: Cluster):
    ns = cluster.namespace()
    image = cluster.push("veza/chat-server:never-ready", never_ready=True)
    labels = {"app": "chat"}
    cluster.store.create(
        DEPLOYMENTS, ns, deployment("chat", image, replicas=1, labels=labels, port=8081)
    )
    cluster.store.create(SERVICES, ns, _service("chat", labels, 8081, 8081))

    def not_ready_listed() -> bool:
        try:
            ep = cluster.store.get(ENDPOINTS, ns, "chat")
        except Exception:
            return False
        subsets = ep.get("subsets") or []
        return bool(subsets) and bool(subsets[0].get("notReadyAddresses"))

    wait_for(not_ready_listed, what="a notReadyAddress")
    ep = cluster.store.get(ENDPOINTS, ns, "chat")
    assert "addresses" not in ep["subsets"][0]
    url = wait_for(
        lambda: (cluster.store.get(SERVICES, ns, "chat")["metadata"].get("annotations") or {}).get(
            URL_ANNOTATION
        ),
        what="service URL",
    )
    code, body = _get(f"{url}/api/v1/rooms")
    assert code == 503
    assert "no ready endpoints" in body["error"]


def test_deleting_a_service_stops_its_proxy_and_endpoints(cluster: Cluster):
    ns = cluster.namespace()
    cluster.store.create(SERVICES, ns, _service("gone", {"app": "nothing"}, 9100, 9100))
    url = wait_for(
        lambda: (cluster.store.get(SERVICES, ns, "gone")["metadata"].get("annotations") or {}).get(
            URL_ANNOTATION
        ),
        what="service URL",
    )
    assert _get(f"{url}/")[0] == 503
    wait_for(lambda: _exists(cluster, ns, "gone"), what="endpoints object")
    cluster.store.delete(SERVICES, ns, "gone")
    wait_for(lambda: not _exists(cluster, ns, "gone"), what="endpoints deleted")
    wait_for(lambda: (ns, "gone") not in cluster.manager.services.proxies(), what="proxy stopped")
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{url}/", timeout=2)


def _exists(c: Cluster, ns: str, name: str) -> bool:
    try:
        c.store.get(ENDPOINTS, ns, name)
    except Exception:
        return False
    return True


def test_file_sd_lists_running_pods_with_their_labels(cluster: Cluster):
    ns = cluster.namespace()
    image = cluster.push("veza/stream-server:sd")
    labels = {"app": "stream", "color": "blue"}
    cluster.store.create(DEPLOYMENTS, ns, deployment("stream", image, labels=labels, port=8082))

    def entries() -> list[dict[str, Any]] | None:
        if not cluster.file_sd.exists():
            return None
        mine = [
            e for e in json.loads(cluster.file_sd.read_text()) if e["labels"]["namespace"] == ns
        ]
        return mine if len(mine) == 2 else None

    found = wait_for(entries, what="two targets in file_sd")
    pods = {p["metadata"]["name"]: p for p in cluster.store.list(PODS, ns)[0]}
    for entry in found:
        pod = pods[entry["labels"]["pod"]]
        assert entry["targets"] == [f"{pod['status']['podIP']}:8082"]
        assert entry["labels"]["app"] == "stream" and entry["labels"]["color"] == "blue"
        assert (
            entry["labels"]["pod_template_hash"] == pod["metadata"]["labels"]["pod-template-hash"]
        )
    assert not list(cluster.file_sd.parent.glob(".*.tmp"))  # written by rename, no leftovers

    cluster.store.delete(DEPLOYMENTS, ns, "stream")
    wait_for(
        lambda: (
            not [
                e for e in json.loads(cluster.file_sd.read_text()) if e["labels"]["namespace"] == ns
            ]
        ),
        what="targets removed",
    )
