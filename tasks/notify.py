"""Slack notification of a release outcome; a failed notification is logged and swallowed."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from blocks.slack import SlackWebhook
from tasks.logs import get_logger

EMOJI = {"succeeded": ":white_check_mark:", "rolled-back": ":rewind:", "failed": ":x:",
         "rollback-incomplete": ":rotating_light:"}


class Outcome(BaseModel):
    """What to announce about a release or rollback."""

    kind: str = "release"
    outcome: str
    environment: str
    version: str
    services: list[str] = []
    duration_s: float | None = None
    reason: str | None = None
    triggered_by: str | None = None
    run_url: str | None = None


def current_run_url() -> str | None:
    """The Prefect UI link of the current flow run, when running inside one.

    Returns:
        The URL, or None outside a flow run (or without a UI URL).
    """
    try:
        from prefect import runtime

        url = runtime.flow_run.ui_url
    except Exception:
        return None
    return str(url) if url else None


def build_message(outcome: Outcome) -> dict[str, Any]:
    """The Slack message (``text`` fallback plus Block Kit ``blocks``).

    Args:
        outcome: what happened.

    Returns:
        The JSON payload.
    """
    mark = EMOJI.get(outcome.outcome, ":information_source:")
    title = (
        f"{mark} {outcome.kind.capitalize()} {outcome.version} to {outcome.environment}: "
        f"*{outcome.outcome}*"
    )
    fields = [
        f"*Environment*\n{outcome.environment}",
        f"*Version*\n{outcome.version}",
        f"*Outcome*\n{outcome.outcome}",
        "*Duration*\n" + (f"{outcome.duration_s:.0f} s" if outcome.duration_s is not None else "-"),
    ]
    if outcome.services:
        fields.append("*Services*\n" + ", ".join(outcome.services))
    if outcome.triggered_by:
        fields.append(f"*Triggered by*\n{outcome.triggered_by}")
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": title}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": f} for f in fields]},
    ]
    if outcome.reason:
        blocks.append(
            {"type": "section", "text": {"type": "mrkdwn", "text": f"*Reason*\n{outcome.reason}"}}
        )
    run_url = outcome.run_url or current_run_url()
    if run_url:
        blocks.append(
            {
                "type": "context",
                "elements": [{"type": "mrkdwn", "text": f"<{run_url}|Prefect run>"}],
            }
        )
    text = title.replace("*", "")
    if outcome.reason:
        text += f" ({outcome.reason})"
    return {"text": text, "blocks": blocks}


def notify(slack: SlackWebhook | None, outcome: Outcome) -> bool:
    """Announce an outcome on Slack; never raises and never blocks beyond the block's timeout.

    Args:
        slack: the webhook block, or None (nothing to do).
        outcome: what happened.

    Returns:
        True when Slack accepted the message.
    """
    logger = get_logger(__name__)
    if slack is None:
        logger.info("notify: no Slack webhook configured; skipped")
        return False
    try:
        slack.post(build_message(outcome))
    except Exception as exc:
        # The URL is the credential: log only the error class and our own message.
        message = getattr(exc, "message", None) or type(exc).__name__
        logger.warning("notify: Slack notification failed: %s", message)
        return False
    logger.info("notify: Slack notified (%s %s)", outcome.environment, outcome.outcome)
    return True


notify_task = task(name="notify-slack", cache_policy=NO_CACHE)(notify)
