"""Prefect block for a Slack incoming webhook."""

from __future__ import annotations

from typing import Any

import httpx
from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from blocks.schema_cache import CachedSchema
from errors.http import raise_for_status, translate_http_errors

SYSTEM = "slack"


class SlackWebhook(CachedSchema, Block):
    """A Slack incoming webhook; the URL is a secret (it is the credential)."""

    _block_type_name = "Veza Slack Webhook"
    _block_type_slug = "veza-slack-webhook"
    _description = "A Slack incoming webhook used to announce release outcomes."

    url: SecretStr = Field(description="The webhook URL (https://hooks.slack.com/services/...).")
    timeout_s: float = Field(default=5.0, gt=0, description="Timeout of the POST, in seconds.")

    def post(self, payload: dict[str, Any]) -> None:
        """POST a message payload (``text`` and optional ``blocks``).

        Args:
            payload: the Slack message JSON.

        Raises:
            UnreachableError: the webhook could not be reached or timed out.
            TransientSystemError: Slack answered 429 or 5xx.
            PermanentSystemError: Slack refused the message (4xx).
        """
        # The URL is the credential: go through the transport directly, because the httpx
        # client logs every request URL at INFO level.
        request = httpx.Request(
            "POST",
            self.url.get_secret_value(),
            json=payload,
            extensions={"timeout": httpx.Timeout(self.timeout_s).as_dict()},
        )
        with (translate_http_errors(system=SYSTEM, action="webhook"),
              httpx.HTTPTransport() as transport):
            response = transport.handle_request(request)
            response.read()
        raise_for_status(response.status_code, system=SYSTEM,
                         message=f"webhook answered HTTP {response.status_code}",
                         auth_hint="check the webhook URL of the SlackWebhook block",
                         client_hint="check the webhook URL of the SlackWebhook block")
