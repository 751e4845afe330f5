"""Redaction (issue 9, item 10): passed-through values and the run's secrets never leave it.

A build echoes a passed-through variable: its logs, its error, the run's report artifact and
the Slack message show ``[redacted NAME]`` instead (real commands, a real Prefect test server,
a local HTTP receiver standing in for Slack).
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import yaml
from pydantic import SecretStr

from errors import BuildError
from tasks.release.build import passthrough_env, run_build
from tasks.release.catalogue import BuildCommands, ServiceSpec
from tasks.release.redaction import Redactor, redact
from tests.release import helpers as h

pytestmark = pytest.mark.timeout(300)
ECHO = "import os, sys; print('token is', os.environ['VEZA_T_TOKEN']); sys.exit({code})"


def echo(code: int) -> list[str]:
    return ["{python}", "-c", ECHO.format(code=code)]


def test_redactor_hides_longest_first_and_ignores_tiny_values():
    redactor = Redactor({"A": "secret-value", "B": "secret-value-longer", "C": "ab"})
    assert redactor("x secret-value-longer y secret-value ab") == (
        "x [redacted B] y [redacted A] ab")
    redactor.add({"D": "line-one\nline-two"}, named=False)
    assert redactor("line-two") == "[redacted]"


def test_a_build_echoing_a_passthrough_value_shows_it_redacted(caplog, monkeypatch):
    token = f"tok-{uuid.uuid4().hex}"
    monkeypatch.setenv("VEZA_T_TOKEN", token)
    caplog.set_level(logging.INFO)
    env = passthrough_env(["VEZA_T_TOKEN"])
    spec = ServiceSpec(name="veza-web", image_repository="veza/web", port=80,
                       build=BuildCommands(test=echo(0), lint=echo(2)))
    with pytest.raises(BuildError) as failure:
        run_build(spec, "1.0.0", env)
    assert token not in str(failure.value) and token not in caplog.text
    assert "token is [redacted VEZA_T_TOKEN]" in str(failure.value)
    assert caplog.text.count("token is [redacted VEZA_T_TOKEN]") == 2  # test and lint tails
    assert redact(f"a {token} b") == "a [redacted VEZA_T_TOKEN] b"  # the run remembers it


class Slack:
    """A local receiver standing in for the Slack webhook."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        bodies = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                bodies.append(json.loads(self.rfile.read(length)))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/services/T/B/x"


@pytest.fixture()
def slack():
    receiver = Slack()
    yield receiver
    receiver.server.shutdown()
    receiver.server.server_close()


def run_texts(flow_run_id: Any) -> tuple[str, str]:
    """The run's logs and its artifacts' markdown, as the Prefect API stores them."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        LogFilter,
        LogFilterFlowRunId,
    )
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()
    with get_client(sync_client=True) as client:
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(
            any_=[flow_run_id])), limit=200)
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    return "\n".join(log.message for log in logs), "\n".join(str(a.data) for a in artifacts)


def test_a_release_whose_build_echoes_a_passthrough_value(sandbox_stack, sandbox_seed,
                                                          prefect_harness, tmp_path,
                                                          monkeypatch, slack):
    from blocks.slack import SlackWebhook
    from flows.release import release

    token = f"tok-{uuid.uuid4().hex}"
    monkeypatch.setenv("VEZA_T_TOKEN", token)
    blocks = h.register_blocks(sandbox_stack, own=True)  # a Slack block joins them
    SlackWebhook(url=SecretStr(slack.url)).save(blocks, overwrite=True)
    staging = sandbox_seed()[0]
    path = tmp_path / "catalogue.yaml"
    h.write_catalogue(path, staging_ns=staging, production_ns="unused", blocks=blocks,
                      build={"test": echo(0), "lint": echo(2)})
    data = yaml.safe_load(path.read_text())
    del data["environments"]["production"]
    data["environments"]["staging"]["slack_block"] = blocks
    path.write_text(yaml.safe_dump(data))
    state = release(version="7.9.0", environment="staging", catalogue_path=str(path),
                    services=["veza-web"], build_env_passthrough=["VEZA_T_TOKEN"],
                    return_state=True)
    assert state.is_failed()
    error = state.result(raise_on_failure=False)
    assert isinstance(error, BuildError) and "[redacted VEZA_T_TOKEN]" in str(error)
    logs, artifacts = run_texts(state.state_details.flow_run_id)
    assert "token is [redacted VEZA_T_TOKEN]" in logs
    assert "[redacted VEZA_T_TOKEN]" in artifacts
    assert slack.bodies and "[redacted VEZA_T_TOKEN]" in json.dumps(slack.bodies)
    for text in (str(error), logs, artifacts, json.dumps(slack.bodies), state.message or ""):
        assert token not in text
