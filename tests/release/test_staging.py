"""Staging rollout: the set-image patch and the choice of the revision to undo to (pure parts)."""

from __future__ import annotations

from typing import Any

import pytest

from errors import RolloutError
from tasks.release.staging import image_patch, previous_revision_template


def rs(name, revision, image, uid="dep-uid") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "annotations": {"deployment.kubernetes.io/revision":
                                                   str(revision)},
                     "ownerReferences": [{"kind": "Deployment", "name": "web", "uid": uid}]},
        "spec": {"template": {"metadata": {"labels": {"app": "web",
                                                      "pod-template-hash": name[-5:]}},
                              "spec": {"containers": [{"name": "web", "image": image}]}}},
    }


DEPLOYMENT = {"metadata": {"name": "web", "uid": "dep-uid",
                           "annotations": {"deployment.kubernetes.io/revision": "3"}}}


def test_undo_picks_the_second_highest_revision_of_this_deployment():
    sets = [rs("web-aaaaa", 1, "web:1"), rs("web-bbbbb", 3, "web:3"),
            rs("web-ccccc", 2, "web:2"), rs("other-ddddd", 9, "x:9", uid="other")]
    revision, template = previous_revision_template(DEPLOYMENT, sets)
    assert revision == 2
    assert template["spec"]["containers"][0]["image"] == "web:2"
    assert template["metadata"]["labels"] == {"app": "web"}


def test_undo_without_previous_revision_fails_clearly():
    with pytest.raises(RolloutError, match="no previous revision"):
        previous_revision_template(DEPLOYMENT, [rs("web-bbbbb", 3, "web:3")])


def test_image_patch_is_a_strategic_merge_on_the_container_name():
    dep: dict[str, Any] = {"spec": {"template": {"spec": {"containers": [
        {"name": "web", "image": "web:1", "envFrom": [{"secretRef": {"name": "web-secrets"}}]},
    ]}}}}
    assert image_patch(dep, container="web", image="web:2") == {
        "spec": {"template": {"spec": {"containers": [{"name": "web", "image": "web:2"}]}}}}
    patch = image_patch(dep, container="web", image="web:2", secret_prefix="web-secrets",
                        secret_name="web-secrets-abc")
    entry = patch["spec"]["template"]["spec"]["containers"][0]
    assert entry["envFrom"] == [{"secretRef": {"name": "web-secrets-abc"}}]
    assert dep["spec"]["template"]["spec"]["containers"][0]["envFrom"][0]["secretRef"][
        "name"] == "web-secrets"
