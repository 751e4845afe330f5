"""Write a kubeconfig (context ``sandbox``) pointing kubectl and the clients at the emulator."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import yaml

CONTEXT = "sandbox"


def write_kubeconfig(path: Path, *, url: str, token: str, ca_cert: Path | None = None,
                     namespace: str = "default") -> Path:
    """Write a kubeconfig with one cluster, user and context named ``sandbox`` (mode 0600).

    Args:
        path: where to write it.
        url: the API server URL (``https://`` : kubectl sends tokens only over TLS).
        token: the bearer token.
        ca_cert: PEM certificate the server presents (embedded as certificate-authority-data).
        namespace: the context's default namespace.

    Returns:
        ``path``.
    """
    cluster: dict[str, str] = {"server": url}
    if ca_cert is not None:
        cluster["certificate-authority-data"] = base64.b64encode(ca_cert.read_bytes()).decode()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": CONTEXT, "cluster": cluster}],
        "users": [{"name": CONTEXT, "user": {"token": token}}],
        "contexts": [{"name": CONTEXT, "context": {"cluster": CONTEXT, "user": CONTEXT,
                                                   "namespace": namespace}}],
        "current-context": CONTEXT,
        "preferences": {},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        yaml.safe_dump(config, handle, sort_keys=False)
    os.replace(tmp, path)
    return path
