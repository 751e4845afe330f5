"""Start the Kubernetes API emulator as a background process and wait until it answers."""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

from errors import InvalidInputError
from sandbox.procs import SandboxError, pid_alive, spawn, stop_pid, wait_until

_PROJECT_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class K8sServer:
    """A running emulator process.

    ``url`` is plain HTTP; the same port also speaks TLS (``https_url``, certificate
    ``ca_cert``), which is what the kubeconfig uses because kubectl sends tokens only over TLS.
    """

    url: str
    token: str
    kubeconfig: Path
    pid: int
    https_url: str = ""
    ca_cert: Path | None = None

    def stop(self, *, timeout: float = 15.0) -> None:
        """Stop the emulator and its pods (SIGTERM to its process group, then SIGKILL).

        Args:
            timeout: seconds to wait after SIGTERM.
        """
        stop_pid(self.pid, timeout=timeout, group=True)


def _token_from(kubeconfig: Path) -> str:
    config = yaml.safe_load(kubeconfig.read_text())
    return str(config["users"][0]["user"]["token"])


def _answers(url: str, token: str) -> bool:
    request = urllib.request.Request(f"{url}/version",  # noqa: S310
                                     headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=2) as response:  # noqa: S310
            return bool(response.status == 200)
    except OSError:
        return False


def start_k8s(
    dir: Path,
    *,
    registry_path: Path,
    file_sd_path: Path,
    ip_prefix: str,
    timeout: float = 30.0,
    controllers: bool = True,
    exit_with_parent: bool = False,
) -> K8sServer:
    """Start ``python -m sandbox.k8s`` in its own session and wait until ``/version`` answers.

    Args:
        dir: the sandbox directory (kubeconfig at ``dir/kubeconfig``, log at ``dir/k8s.log``).
        registry_path: the sandbox image registry file.
        file_sd_path: where the emulator writes Prometheus file_sd targets.
        ip_prefix: loopback prefix of pod IPs, e.g. ``127.37.0``.
        timeout: seconds to wait for readiness.
        controllers: run the controllers (False serves the API alone).
        exit_with_parent: the emulator stops by itself when this process dies (tests).

    Returns:
        The running server.

    Raises:
        InvalidInputError: when ``ip_prefix`` is not a loopback ``127.A.B`` prefix.
        SandboxError: when it exits or does not answer in time (the log path is named).
    """
    octets = ip_prefix.split(".")
    if len(octets) != 3 or octets[0] != "127" or not all(
            o.isdigit() and int(o) <= 254 for o in octets):
        raise InvalidInputError("ip_prefix", f"{ip_prefix!r} is not a loopback prefix",
                                fix="pass three octets like '127.37.0' (pods get 127.37.0.N, "
                                    "Services 127.37.1.N)")
    dir = Path(dir).resolve()
    dir.mkdir(parents=True, exist_ok=True)
    state_path = dir / "k8s.json"
    state_path.unlink(missing_ok=True)
    argv = [sys.executable, "-m", "sandbox.k8s", "--dir", str(dir),
            "--registry", str(Path(registry_path).resolve()),
            "--file-sd", str(Path(file_sd_path).resolve()), "--ip-prefix", ip_prefix]
    if not controllers:
        argv.append("--no-controllers")
    if exit_with_parent:
        argv.append("--exit-with-parent")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(_PROJECT_ROOT), env.get("PYTHONPATH", "")) if p)
    env["VEZA_SANDBOX_REGISTRY"] = str(Path(registry_path).resolve())
    log_path = dir / "k8s.log"
    proc = spawn(argv, log_path=log_path, env=env, cwd=dir)

    def ready() -> dict[str, object] | None:
        if proc.poll() is not None:
            raise SandboxError(f"kubernetes emulator exited with {proc.returncode}; "
                               f"see {log_path}")
        if not state_path.exists():
            return None
        state: dict[str, object] = json.loads(state_path.read_text())
        return state if state.get("pid") == proc.pid else None

    try:
        state = wait_until(ready, timeout=timeout, what=f"the kubernetes emulator ({log_path})")
        assert isinstance(state, dict)
        url = str(state["url"])
        kubeconfig = dir / "kubeconfig"
        token = _token_from(kubeconfig)
        wait_until(lambda: _answers(url, token), timeout=timeout,
                   what=f"{url}/version to answer ({log_path})")
    except BaseException:
        if pid_alive(proc.pid):
            stop_pid(proc.pid, timeout=5)
        raise
    return K8sServer(url=url, token=token, kubeconfig=kubeconfig, pid=proc.pid,
                     https_url=str(state.get("https_url", "")), ca_cert=dir / "k8s-tls.crt")
