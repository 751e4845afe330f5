"""Slack notification against a local HTTP receiver: delivered, refused, unreachable, stalled."""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from pydantic import SecretStr

from blocks.slack import SlackWebhook
from tasks.notify import Outcome, build_message, notify

SECRET_PATH = "/services/T000/B000/very-secret-webhook-token"


class Receiver:
    def __init__(self, status: int = 200, stall: bool = False) -> None:
        self.status = status
        self.stall = stall
        self.bodies: list[dict] = []
        self.release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                receiver.bodies.append(json.loads(self.rfile.read(length)))
                if receiver.stall:
                    receiver.release.wait(30)
                self.send_response(receiver.status)
                self.end_headers()
                self.wfile.write(b"ok")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{SECRET_PATH}"


@pytest.fixture()
def receiver(request) -> Iterator[Receiver]:
    status, stall = getattr(request, "param", (200, False))
    rec = Receiver(status, stall)
    rec.thread.start()
    yield rec
    rec.release.set()
    rec.server.shutdown()
    rec.server.server_close()


OUTCOME = Outcome(
    outcome="rolled-back",
    environment="production",
    version="2.1.0",
    services=["veza-backend-api", "veza-web"],
    duration_s=312.4,
    reason="veza-web: success rate 0.80 < 0.99",
    triggered_by="ci",
    run_url="http://prefect.local/runs/flow-run/123",
)


def test_message_has_text_and_blocks_with_the_facts():
    message = build_message(OUTCOME)
    assert "2.1.0" in message["text"] and "rolled-back" in message["text"]
    flat = json.dumps(message["blocks"])
    for fact in ("production", "2.1.0", "312 s", "success rate 0.80", "flow-run/123", "veza-web"):
        assert fact in flat


def test_delivered_to_the_webhook(receiver):
    assert notify(SlackWebhook(url=SecretStr(receiver.url)), OUTCOME) is True
    assert len(receiver.bodies) == 1
    assert receiver.bodies[0]["text"] == build_message(OUTCOME)["text"]
    assert receiver.bodies[0]["blocks"]


@pytest.mark.parametrize("receiver", [(500, False), (404, False)], indirect=True)
def test_a_refusing_webhook_is_logged_without_the_url_and_swallowed(receiver, caplog):
    caplog.set_level(logging.DEBUG)
    assert notify(SlackWebhook(url=SecretStr(receiver.url)), OUTCOME) is False
    assert len(receiver.bodies) == 1
    assert "notification failed" in caplog.text
    assert "very-secret-webhook-token" not in caplog.text


@pytest.mark.parametrize("receiver", [(200, True)], indirect=True)
def test_a_stalled_webhook_times_out_and_is_swallowed(receiver, caplog):
    caplog.set_level(logging.WARNING)
    assert notify(SlackWebhook(url=SecretStr(receiver.url), timeout_s=0.3), OUTCOME) is False
    assert "timed out" in caplog.text
    assert "very-secret-webhook-token" not in caplog.text


def test_an_unreachable_webhook_is_swallowed(caplog):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}{SECRET_PATH}"
    caplog.set_level(logging.WARNING)
    assert notify(SlackWebhook(url=SecretStr(url)), OUTCOME) is False
    assert "cannot reach" in caplog.text
    assert "very-secret-webhook-token" not in caplog.text


def test_no_webhook_is_a_no_op():
    assert notify(None, OUTCOME) is False


def test_task_wrappers_in_a_flow_run(prefect_harness, receiver):
    from prefect import flow
    from prefect.cache_policies import NO_CACHE

    from errors import retry_on_transient
    from tasks.notify import notify_task
    from tasks.release.build import run_build_task
    from tasks.release.history import record_release_task
    from tasks.release.locking import acquire_release_lock_task
    from tasks.release.secrets import sync_secrets_task

    for wrapper in (sync_secrets_task, record_release_task, acquire_release_lock_task):
        assert wrapper.retry_condition_fn is retry_on_transient and wrapper.retries > 0
    for wrapper in (run_build_task, notify_task, sync_secrets_task):
        assert wrapper.cache_policy is NO_CACHE
    assert run_build_task.retries == 0  # push retries inside the function only

    @flow
    def announce() -> bool:
        return notify_task(
            SlackWebhook(url=SecretStr(receiver.url)), OUTCOME.model_copy(update={"run_url": None})
        )

    assert announce() is True
    assert "/flow-runs/flow-run/" in json.dumps(receiver.bodies[0]["blocks"])
