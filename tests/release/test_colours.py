"""Colours: the other colour, the live one, and the clone of the live Deployment (pure)."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client as k8s

from errors import InvalidInputError
from tasks.release.colours import clone_for_colour, live_colour, other_colour


def live_deployment() -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "veza-web-blue", "namespace": "p", "uid": "u1",
                     "resourceVersion": "7", "generation": 3,
                     "labels": {"app": "veza-web", "color": "blue"},
                     "annotations": {"deployment.kubernetes.io/revision": "4", "team": "web"}},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "veza-web", "color": "blue"}},
            "template": {
                "metadata": {"labels": {"app": "veza-web", "color": "blue",
                                        "pod-template-hash": "abc"}},
                "spec": {"containers": [
                    {"name": "veza-web", "image": "veza/web:1.0.0",
                     "envFrom": [{"secretRef": {"name": "veza-web-secrets"}},
                                 {"configMapRef": {"name": "shared"}}],
                     "env": [{"name": "JWT", "valueFrom": {"secretKeyRef": {
                         "name": "veza-web-secrets", "key": "jwt_secret"}}},
                             {"name": "TLS", "valueFrom": {"secretKeyRef": {
                                 "name": "tls-cert", "key": "crt"}}}]},
                    {"name": "sidecar", "image": "envoy:1"},
                ]},
            },
        },
        "status": {"replicas": 3},
    }


def test_clone_changes_name_colour_image_and_secrets_only():
    live = live_deployment()
    body = clone_for_colour(live, name="veza-web-green", colour="green", container="veza-web",
                            image="veza/web:2.0.0", secret_prefix="veza-web-secrets",
                            secret_name="veza-web-secrets-0123456789", release_id="r1")
    assert body["metadata"]["name"] == "veza-web-green"
    assert "uid" not in body["metadata"] and "resourceVersion" not in body["metadata"]
    assert "status" not in body
    assert body["metadata"]["labels"] == {"app": "veza-web", "color": "green"}
    assert body["metadata"]["annotations"] == {"team": "web",
                                               "veza-ops.veza.io/release": "r1"}
    assert body["spec"]["replicas"] == 3
    assert body["spec"]["selector"]["matchLabels"] == {"app": "veza-web", "color": "green"}
    assert body["spec"]["template"]["metadata"]["labels"] == {"app": "veza-web",
                                                              "color": "green"}
    main, sidecar = body["spec"]["template"]["spec"]["containers"]
    assert main["image"] == "veza/web:2.0.0" and sidecar["image"] == "envoy:1"
    assert main["envFrom"][0]["secretRef"]["name"] == "veza-web-secrets-0123456789"
    assert main["envFrom"][1] == {"configMapRef": {"name": "shared"}}
    assert main["env"][0]["valueFrom"]["secretKeyRef"]["name"] == "veza-web-secrets-0123456789"
    assert main["env"][1]["valueFrom"]["secretKeyRef"]["name"] == "tls-cert"
    # the live object is untouched
    assert live["spec"]["template"]["spec"]["containers"][0]["image"] == "veza/web:1.0.0"
    assert live["metadata"]["name"] == "veza-web-blue"


def test_clone_refuses_an_unknown_container():
    with pytest.raises(InvalidInputError, match="container"):
        clone_for_colour(live_deployment(), name="x", colour="green", container="nope",
                         image="i", secret_prefix="p", secret_name=None)


def test_colours():
    assert other_colour("blue") == "green" and other_colour("green") == "blue"
    with pytest.raises(InvalidInputError):
        other_colour("red")
    svc = k8s.V1Service(metadata=k8s.V1ObjectMeta(name="veza-web"),
                        spec=k8s.V1ServiceSpec(selector={"app": "veza-web", "color": "green"}))
    assert live_colour(svc) == "green"
    svc.spec = k8s.V1ServiceSpec(selector={"app": "veza-web"})
    with pytest.raises(InvalidInputError, match=r"selector\.color"):
        live_colour(svc)
