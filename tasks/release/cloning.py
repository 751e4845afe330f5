"""The other colour's Deployment built from the live one (pure, like Flagger's clone)."""

from __future__ import annotations

import copy
from typing import Any

from errors import InvalidInputError

RELEASE_ANNOTATION = "veza-ops.veza.io/release"
DROPPED_METADATA = ("resourceVersion", "uid", "creationTimestamp", "managedFields",
                    "generation", "selfLink", "ownerReferences", "deletionTimestamp")


def _retarget_secrets(container: dict[str, Any], secret_prefix: str, secret_name: str) -> None:
    for item in container.get("envFrom") or []:
        ref = item.get("secretRef")
        if ref and str(ref.get("name", "")).startswith(secret_prefix):
            ref["name"] = secret_name
    for item in container.get("env") or []:
        ref = (item.get("valueFrom") or {}).get("secretKeyRef")
        if ref and str(ref.get("name", "")).startswith(secret_prefix):
            ref["name"] = secret_name


def clone_for_colour(
    live: dict[str, Any],
    *,
    name: str,
    colour: str,
    container: str,
    image: str,
    secret_prefix: str,
    secret_name: str | None,
    colour_label: str = "color",
    release_id: str = "",
) -> dict[str, Any]:
    """Build the other colour's Deployment from the live one (pure, like Flagger's clone).

    Args:
        live: the live Deployment as an API dict (camelCase).
        name: name of the new Deployment.
        colour: its colour.
        container: name of the container whose image changes.
        image: the new image.
        secret_prefix: secret references starting with this are retargeted.
        secret_name: the new immutable Secret (None keeps the live references).
        colour_label: colour label key.
        release_id: recorded as an annotation.

    Returns:
        A Deployment body ready for create/replace.

    Raises:
        InvalidInputError: the live Deployment has no container named ``container``.
    """
    body = copy.deepcopy(live)
    body.pop("status", None)
    meta = body.setdefault("metadata", {})
    for key in DROPPED_METADATA:
        meta.pop(key, None)
    meta["name"] = name
    meta["labels"] = {**(meta.get("labels") or {}), colour_label: colour}
    annotations = {
        k: v for k, v in (meta.get("annotations") or {}).items()
        if not k.startswith("deployment.kubernetes.io/")
        and k != "kubectl.kubernetes.io/last-applied-configuration"
    }
    if release_id:
        annotations[RELEASE_ANNOTATION] = release_id
    meta["annotations"] = annotations
    spec = body.setdefault("spec", {})
    selector = spec.setdefault("selector", {})
    selector["matchLabels"] = {**(selector.get("matchLabels") or {}), colour_label: colour}
    template = spec.setdefault("template", {})
    tmeta = template.setdefault("metadata", {})
    labels = {k: v for k, v in (tmeta.get("labels") or {}).items() if k != "pod-template-hash"}
    tmeta["labels"] = {**labels, colour_label: colour}
    containers = template.setdefault("spec", {}).get("containers") or []
    target = [c for c in containers if c.get("name") == container]
    if not target:
        raise InvalidInputError(
            "container", f"deployment {live.get('metadata', {}).get('name')} has no container "
            f"{container!r}", fix="set the catalogue's container to the Deployment's container",
        )
    target[0]["image"] = image
    if secret_name:
        for c in containers:
            _retarget_secrets(c, secret_prefix, secret_name)
    return body
