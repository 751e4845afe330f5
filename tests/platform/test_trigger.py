"""`veza-ops trigger` on the session's Prefect server: typed --param values, the CI commit filled
in, and a network blip while following a run (through a TCP forwarder that drops connections).
"""

from __future__ import annotations

import contextvars
import io
import re
import socket
import subprocess
import threading
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from sandbox.procs import wait_until
from tests.screen import Screen
from veza_ops.trigger_params import ParamError, parse_params, typed_params

ROOT = Path(__file__).resolve().parents[2]


class Blip:
    """A TCP forwarder to the Prefect API that can drop every connection for a while."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/api"
        self.cut = threading.Event()
        self.dropped = 0
        self.open: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            if self.cut.is_set():
                with self.lock:
                    self.dropped += 1
                conn.close()
                continue
            upstream = socket.create_connection(self.target)
            with self.lock:
                self.open += [conn, upstream]
            for a, b in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def drop(self) -> None:
        """Cut every open connection and refuse new ones (closed as soon as accepted)."""
        self.cut.set()
        with self.lock:
            for s in self.open:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self.open.clear()

    def heal(self) -> None:
        self.cut.clear()

    def close(self) -> None:
        self.drop()
        self.listener.close()


@pytest.fixture(scope="module")
def release_deployment(prefect_harness) -> str:
    """The release flow deployed (no work pool: its runs stay scheduled) under a unique name."""
    from flows.release import release

    name = f"trigger-{uuid.uuid4().hex[:8]}"
    release.to_deployment(name=name).apply()
    return f"release/{name}"


def test_param_values_follow_the_schema():
    schema = {"properties": {
        "version": {"type": "string"}, "skip_build": {"type": "boolean"},
        "services": {"anyOf": [{"type": "array", "items": {"type": "string"}},
                               {"type": "null"}]},
        "commit_sha": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        "analysis": {"anyOf": [{"$ref": "#/definitions/A"}, {"type": "null"}]},
        "ratio": {"type": "number"}}}
    raw = parse_params(["version=1.10", "skip_build=true", 'services=["veza-web"]',
                        "commit_sha=1234567", "analysis={\"intervals\": 2}", "ratio=1",
                        "services2=7"])
    assert typed_params(raw, schema) == {
        "version": "1.10", "skip_build": True, "services": ["veza-web"],
        "commit_sha": "1234567", "analysis": {"intervals": 2}, "ratio": 1, "services2": 7}
    assert typed_params({"version": "null"}, schema) == {"version": "null"}
    assert typed_params({"services": "null"}, schema) == {"services": None}
    with pytest.raises(ParamError, match="key=value"):
        parse_params(["version"])


def test_param_has_help_text(capsys):
    from veza_ops.cli import main

    with pytest.raises(SystemExit):
        main(["trigger", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert 'version=1.10 stays the string "1.10"' in text and "GITHUB_SHA" in text


def test_cli_params_are_typed_by_the_deployment_and_the_ci_commit_is_filled_in(
        release_deployment, monkeypatch):
    from prefect.client.orchestration import get_client

    from veza_ops.trigger import trigger
    from veza_ops.trigger_params import ci_commit

    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                          text=True, check=True).stdout.strip()
    stamp = subprocess.run(["git", "show", "-s", "--format=%cI", head], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.strip()
    commit = ci_commit({"GITHUB_SHA": head}, cwd=str(ROOT))
    assert commit == {"commit_sha": head, "commit_timestamp": stamp}
    assert ci_commit({}, cwd="/") == {}  # no checkout, no GITHUB_SHA: nothing
    outcome = trigger(release_deployment, {}, out=io.StringIO(), commit=commit,
                      text_params=parse_params(["version=1.10", "skip_build=true",
                                                'services=["veza-web"]']))
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(outcome.flow_run_id)
    assert run.parameters["version"] == "1.10"
    assert run.parameters["skip_build"] is True and run.parameters["services"] == ["veza-web"]
    assert run.parameters["commit_sha"] == head
    assert run.parameters["commit_timestamp"] == stamp
    # given on the command line, the commit is not overridden
    outcome = trigger(release_deployment, {}, out=io.StringIO(), commit=commit,
                      text_params=parse_params(["version=1.11", "commit_sha=abcdef1"]))
    with get_client(sync_client=True) as client:
        assert client.read_flow_run(outcome.flow_run_id).parameters["commit_sha"] == "abcdef1"


def test_a_network_blip_while_following_does_not_end_the_wait(release_deployment):
    from prefect.client.orchestration import get_client
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_CLIENT_MAX_RETRIES,
        temporary_settings,
    )
    from prefect.states import Completed

    from veza_ops.trigger import trigger

    api = urlsplit(PREFECT_API_URL.value())
    blip = Blip(api.hostname or "127.0.0.1", api.port or 80)
    screen, result = Screen(), {}

    def follow() -> None:
        # no retries in Prefect's client: every dropped connection reaches trigger's loop
        with temporary_settings({PREFECT_API_URL: blip.url, PREFECT_CLIENT_MAX_RETRIES: 0}):
            result["outcome"] = trigger(release_deployment, {"version": "1.12"}, wait=True,
                                        timeout=240, poll_interval=0.1, out=screen)

    follower = threading.Thread(target=contextvars.copy_context().run, args=(follow,))
    follower.start()
    try:
        wait_until(lambda: "state: " in screen.text(), timeout=60, what="the run followed")
        run_id = re.search(r"\(([0-9a-f-]{36})\)", screen.text()).group(1)
        blip.drop()
        wait_until(lambda: blip.dropped >= 3, timeout=60, what="three failed polls")
        with get_client(sync_client=True) as client:  # the run ends while the API is away
            client.set_flow_run_state(run_id, Completed(), force=True)
        blip.heal()
        follower.join(timeout=240)
    finally:
        blip.close()
    outcome = result["outcome"]
    assert (outcome.exit_code, outcome.state) == (0, "Completed")
    assert "lost the Prefect API" in screen.text()
    assert "Prefect API reachable again" in screen.text()


def _runs_of(deployment: str) -> int:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    with get_client(sync_client=True) as client:
        dep = client.read_deployment_by_name(deployment)
        return len(client.read_flow_runs(deployment_filter=DeploymentFilter(
            id=DeploymentFilterId(any_=[dep.id]))))


@pytest.mark.parametrize(("param", "named"), [
    ("version=bad tag!", "bad tag!"), ("environment=moon", "moon"),
    ('services=["veza-nope"]', "veza-nope")])
def test_trigger_refuses_a_bad_value_before_any_run(release_deployment, capsys, param, named):
    from veza_ops.cli import main

    before = _runs_of(release_deployment)
    params = ["--param", param] + ([] if param.startswith("version") else
                                   ["--param", "version=1.4.2"])
    assert main(["trigger", release_deployment, *params]) == 2
    err = capsys.readouterr().err
    assert "rejected before creating a run" in err and named in err, err
    assert _runs_of(release_deployment) == before


def test_the_api_refuses_a_bad_version_too(release_deployment):
    """What the UI's run form goes through: the deployment enforces its parameter schema."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import PrefectHTTPStatusError

    from tasks.release.build import VERSION_RE

    before = _runs_of(release_deployment)
    with get_client(sync_client=True) as client:
        dep = client.read_deployment_by_name(release_deployment)
        assert dep.enforce_parameter_schema
        schema = dep.parameter_openapi_schema["properties"]
        assert schema["version"]["pattern"] == VERSION_RE.pattern
        assert schema["environment"]["enum"] == ["staging", "production"]
        with pytest.raises(PrefectHTTPStatusError) as refused:
            client.create_flow_run_from_deployment(dep.id, parameters={"version": "1.4.2;rm"})
    assert refused.value.response.status_code in (409, 422)
    assert _runs_of(release_deployment) == before
