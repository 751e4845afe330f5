"""The alert flow: tell the operators on Slack that a recovery run failed, crashed or is missing.

Prefect automations run its deployment (``alert/slack``); see ``veza-ops automations install``.
"""

from __future__ import annotations

from prefect import flow

from blocks.loading import load_block
from blocks.slack import SlackWebhook
from tasks.alerting import build_alert_message, flow_run_link, make_alert, post_alert

DEFAULT_SLACK_BLOCK = "veza-slack"


@flow(name="alert", flow_run_name="alert-{flow_name}-{state}", log_prints=False,
      timeout_seconds=600)
def alert(
    flow_name: str,
    state: str,
    *,
    deployment: str = "",
    flow_run_name: str = "",
    flow_run_id: str = "",
    reason: str = "",
    slack_block: str = DEFAULT_SLACK_BLOCK,
) -> str:
    """Post one alert through the SlackWebhook block ``slack_block``.

    The automations fill the parameters from the failed run's event (flow, deployment,
    state, run name and id, state message); the webhook URL stays inside the block. The run
    fails when Slack cannot be told (after retries), so an undelivered alert is visible.

    Args:
        flow_name: the flow of the run the alert is about.
        state: ``Failed``, ``Crashed``, or ``Missed`` (no Completed run in time).
        deployment: ``flow/deployment`` of that run (empty for a run outside deployments).
        flow_run_name: the run's name.
        flow_run_id: the run's id (the message links to its UI page).
        reason: the run's state message, or why the alert fired.
        slack_block: name of the SlackWebhook block to post through.

    Returns:
        The message's text.
    """
    from prefect.settings import get_current_settings

    slack = load_block(SlackWebhook, slack_block, field="slack_block")
    facts = make_alert(flow_name=flow_name, state=state, deployment=deployment,
                       flow_run_name=flow_run_name, flow_run_id=flow_run_id, reason=reason)
    link = flow_run_link(facts.flow_run_id, get_current_settings().ui_url)
    message = build_alert_message(facts, link=link)
    post_alert(slack, message)
    return str(message["text"])
