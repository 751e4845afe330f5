"""Operator alerts on Slack: a failed, crashed or missing run of a recovery flow.

The ``alert`` flow runs these; Prefect automations (``veza-ops automations install``) run the
``alert/slack`` deployment with the failed run's facts rendered into its parameters. The
webhook URL never leaves the SlackWebhook block: parameters, logs and the message carry
names only.
"""

from __future__ import annotations

import logging
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from blocks.slack import SlackWebhook
from errors import retry_on_transient

MAX_REASON = 500  # characters of the run's state message kept in the alert
MARKS = {"Failed": ":x:", "Crashed": ":boom:", "Missed": ":alarm_clock:",
         "Recovered": ":white_check_mark:"}  # Recovered: a pitr-check incident resolved


class Alert(BaseModel):
    """What went wrong, as the automation knew it (names only, no secret)."""

    flow_name: str
    state: str
    deployment: str = ""
    flow_run_name: str = ""
    flow_run_id: str = ""
    reason: str = ""


def _logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    try:
        from prefect.logging import get_run_logger

        return get_run_logger()
    except Exception:
        return logging.getLogger(__name__)


def make_alert(
    *, flow_name: str, state: str, deployment: str = "", flow_run_name: str = "",
    flow_run_id: str = "", reason: str = "",
) -> Alert:
    """Normalise the automation's rendered parameters into an :class:`Alert`.

    Templates render a missing object (a run without a deployment) as an empty string and a
    missing state message as ``None``; both become empty. The reason is cut to
    ``MAX_REASON`` characters (a traceback-sized message would drown the alert).

    Args:
        flow_name: the flow of the failed run (``backup``, ``prune-backups``...).
        state: the run's state name (``Failed``, ``Crashed``) or ``Missed``.
        deployment: ``flow/deployment``, empty for a run started outside a deployment.
        flow_run_name: the run's name.
        flow_run_id: the run's id (the UI link is built from it).
        reason: the state message, or why the alert fired.

    Returns:
        The alert.
    """

    def clean(text: str) -> str:
        text = (text or "").strip()
        return "" if text in ("None", "/") else text

    reason = clean(reason)
    if len(reason) > MAX_REASON:
        reason = reason[: MAX_REASON - 1] + "…"
    return Alert(
        flow_name=clean(flow_name) or "unknown flow", state=clean(state) or "unknown state",
        deployment=clean(deployment), flow_run_name=clean(flow_run_name),
        flow_run_id=clean(flow_run_id), reason=reason,
    )


def flow_run_link(flow_run_id: str, ui_url: str | None) -> str | None:
    """The Prefect UI page of a flow run.

    Args:
        flow_run_id: the run's id (empty: no link).
        ui_url: the UI's base URL (``PREFECT_UI_URL``), or None.

    Returns:
        ``<ui_url>/runs/flow-run/<id>``, or None.
    """
    if not flow_run_id or not ui_url:
        return None
    return f"{ui_url.rstrip('/')}/runs/flow-run/{flow_run_id}"


def build_alert_message(alert: Alert, *, link: str | None = None) -> dict[str, Any]:
    """The Slack message of an alert: a ``text`` fallback plus Block Kit ``blocks``.

    Args:
        alert: what went wrong.
        link: the failed run's UI page, if known.

    Returns:
        The JSON payload.
    """
    mark = MARKS.get(alert.state, ":warning:")
    what = alert.deployment or f"flow {alert.flow_name}"
    if alert.state == "Missed":
        title = f"{mark} *{what}*: no Completed run in time"
    else:
        run = f" run `{alert.flow_run_name}`" if alert.flow_run_name else " run"
        title = f"{mark} *{what}*{run}: *{alert.state}*"
    fields = [f"*Flow*\n{alert.flow_name}", f"*Deployment*\n{alert.deployment or '-'}",
              f"*State*\n{alert.state}", f"*Run*\n{alert.flow_run_name or '-'}"]
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": title}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": f} for f in fields]},
    ]
    if alert.reason:
        blocks.append({"type": "section",
                       "text": {"type": "mrkdwn", "text": f"*Reason*\n{alert.reason}"}})
    if link:
        blocks.append({"type": "context",
                       "elements": [{"type": "mrkdwn", "text": f"<{link}|Prefect run>"}]})
    text = title.replace("*", "").replace("`", "")
    if alert.reason:
        text += f" ({alert.reason})"
    return {"text": text, "blocks": blocks}


@task(name="post-alert", retries=3, retry_delay_seconds=10,
      retry_condition_fn=retry_on_transient, cache_policy=NO_CACHE)
def post_alert(slack: SlackWebhook, message: dict[str, Any]) -> None:
    """Prefect task: post the alert; unlike release notices, a failure fails the run.

    An alert nobody receives must show as a Failed ``alert`` run (retried first when Slack
    or the network is at fault). The ``alert`` flow is not itself watched by the alert
    automation, so a failing webhook cannot loop.

    Args:
        slack: the webhook block.
        message: the payload from :func:`build_alert_message`.

    Raises:
        UnreachableError: Slack could not be reached (retried).
        TransientSystemError: Slack answered 429 or 5xx (retried).
        PermanentSystemError: Slack refused the message (check the block's URL).
    """
    slack.post(message)
    _logger().info("alert posted to Slack: %s", message["text"])
