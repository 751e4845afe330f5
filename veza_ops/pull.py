"""The deployments' pull step: run every flow from the veza-ops project folder of the worker."""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "VEZA_OPS_HOME"
MARKER = "prefect.yaml"


def project_directory() -> Path:
    """The folder flow runs work in: ``$VEZA_OPS_HOME``, else this installation's checkout.

    ``prefect deploy`` would otherwise record the deploying machine's folder in every
    deployment. The worker's environment says where the project is instead: the image of the
    Kubernetes work pool sets ``VEZA_OPS_HOME=/opt/veza-ops``; a process worker started from a
    checkout (editable install, ``make setup``) needs nothing.

    Returns:
        The absolute folder holding ``prefect.yaml``, ``flows/`` and ``deployments/``.

    Raises:
        RuntimeError: ``VEZA_OPS_HOME`` does not name a project folder, or it is unset and this
            installation is not a checkout (a wheel in site-packages).
    """
    configured = os.environ.get(HOME_ENV)
    if configured:
        folder = Path(configured).expanduser().resolve()
        if not (folder / MARKER).is_file():
            raise RuntimeError(
                f"{HOME_ENV}={configured} holds no {MARKER}: set {HOME_ENV} to the veza-ops "
                "project folder (the image uses /opt/veza-ops)")
        return folder
    checkout = Path(__file__).resolve().parents[1]
    if not (checkout / MARKER).is_file():
        raise RuntimeError(
            f"{HOME_ENV} is not set and veza-ops is not run from a checkout ({checkout} holds "
            f"no {MARKER}): set {HOME_ENV} in the worker's environment to the project folder")
    return checkout


def set_project_directory() -> dict[str, str]:
    """Prefect pull step (``prefect.yaml``): change to :func:`project_directory`.

    Returns:
        ``{"directory": path}``, the step output Prefect takes as the flow's working directory.
    """
    folder = project_directory()
    os.chdir(folder)
    return {"directory": str(folder)}
