"""Prefect block for a Slack incoming webhook."""

from __future__ import annotations

from typing import Any

import httpx
from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from veza_ops.errors import PermanentSystemError, TransientSystemError, UnreachableError

SYSTEM = "slack"


class SlackWebhook(Block):
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
        try:
            with httpx.HTTPTransport() as transport:
                response = transport.handle_request(request)
                response.read()
        except httpx.TimeoutException:
            raise UnreachableError(SYSTEM, "the webhook timed out") from None
        except httpx.HTTPError as exc:
            raise UnreachableError(
                SYSTEM, f"cannot reach the webhook ({type(exc).__name__})"
            ) from None
        if response.status_code == 429 or response.status_code >= 500:
            raise TransientSystemError(SYSTEM, f"webhook answered HTTP {response.status_code}")
        if response.status_code >= 400:
            raise PermanentSystemError(
                SYSTEM,
                f"webhook answered HTTP {response.status_code}",
                hint="check the webhook URL of the SlackWebhook block",
            )
