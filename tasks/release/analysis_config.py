"""The analysis settings of a catalogue service: thresholds, pacing, metric templates (pure).

A metric is Flagger's MetricTemplate idea in a few lines of YAML: a name, a PromQL template and
a ``min`` or a ``max``. The template's placeholders are single-brace identifiers
(:data:`PLACEHOLDERS`); every other brace is PromQL's own (label matchers, regex counts), so
``http_requests_total{{selector},status=~"5.."}`` reads as PromQL does. The guide's two
metrics (success rate >= ``success_rate_min``, p99 <= ``p99_max_ms``) are built in and always
judged; ``metrics`` adds more.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

PLACEHOLDERS = {
    "namespace": "the environment's namespace",
    "app": "the service's app label value",
    "track": "the colour or track under analysis (blue, green, canary)",
    "colour": "same as {track}",
    "window": "the rate window, with its unit (e.g. 30s)",
    "selector": 'namespace="...",<app_label>="...",<colour_label>="..." of the analysed track',
}
TEMPLATE_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
METRIC_NAME = r"^[a-z][a-z0-9-]{0,62}$"

SUCCESS_RATE = "success-rate"
P99_LATENCY = "p99-latency"
BUILTIN_NAMES = frozenset({SUCCESS_RATE, P99_LATENCY})
SUCCESS_RATE_TEMPLATE = (
    'sum(rate(http_requests_total{{selector},status!~"5.."}[{window}]))'
    " / sum(rate(http_requests_total{{selector}}[{window}]))"
)
"""The guide's request-success-rate: the non-5xx share (empty when there was no traffic)."""
P99_TEMPLATE = ("histogram_quantile(0.99, sum by (le) "
                "(rate(http_request_duration_seconds_bucket{{selector}}[{window}])))")
"""The guide's request-duration p99, in seconds (the threshold, ``p99_max_ms``, is in ms)."""

_PAIRS = {")": "(", "]": "[", "}": "{"}
_ALLOWED = ", ".join("{" + name + "}" for name in PLACEHOLDERS)


def check_template(template: str) -> str:
    """Refuse a PromQL template with an unknown placeholder or unbalanced brackets (pure).

    Args:
        template: the query, placeholders included.

    Returns:
        The template, unchanged.

    Raises:
        ValueError: naming the problem, its position and the fix.
    """
    if not template.strip():
        raise ValueError("an empty query; write a PromQL expression, e.g. "
                         + SUCCESS_RATE_TEMPLATE)
    for found in TEMPLATE_PLACEHOLDER.finditer(template):
        if found.group(1) not in PLACEHOLDERS:
            raise ValueError(f"unknown placeholder {found.group(0)} at character {found.start()}; "
                             f"use one of {_ALLOWED}")
    stack: list[tuple[str, int]] = []
    for index, char in enumerate(TEMPLATE_PLACEHOLDER.sub(lambda m: "x" * len(m.group(0)),
                                                          template)):
        if char in "([{":
            stack.append((char, index))
        elif char in _PAIRS:
            if not stack or stack[-1][0] != _PAIRS[char]:
                still = f" while {stack[-1][0]!r} from character {stack[-1][1]} is open" \
                    if stack else ""
                raise ValueError(f"unbalanced {char!r} at character {index}{still}; close "
                                 "every (, [ and { in the order it was opened")
            stack.pop()
    if stack:
        char, index = stack[-1]
        raise ValueError(f"unclosed {char!r} opened at character {index}; close every (, [ "
                         "and { in the order it was opened")
    return template


def selector(namespace: str, app: str, track: str, *, colour_label: str = "color",
             app_label: str = "app") -> str:
    """The label matchers of one track of one service (pure).

    Args:
        namespace: the namespace label value.
        app: the app label value.
        track: the colour label value.
        colour_label: the colour label's name.
        app_label: the app label's name.

    Returns:
        ``namespace="...",<app_label>="...",<colour_label>="..."``.
    """
    return f'namespace="{namespace}",{app_label}="{app}",{colour_label}="{track}"'


def render(template: str, *, namespace: str, app: str, track: str, window_s: int,
           colour_label: str = "color", app_label: str = "app") -> str:
    """The PromQL of a template for one track of one service (pure).

    Args:
        template: a template that passed :func:`check_template`.
        namespace: the namespace label value.
        app: the app label value.
        track: the colour or track label value.
        window_s: the rate window in seconds (rendered as ``<n>s``).
        colour_label: the colour label's name.
        app_label: the app label's name.

    Returns:
        The query.
    """
    values = {"namespace": namespace, "app": app, "track": track, "colour": track,
              "window": f"{window_s}s",
              "selector": selector(namespace, app, track, colour_label=colour_label,
                                   app_label=app_label)}
    return TEMPLATE_PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), template)


class MetricSpec(BaseModel):
    """One metric of an analysis: a PromQL template judged against a minimum or a maximum.

    Attributes:
        name: named in verdicts and in the analysis table.
        query: the PromQL template (:data:`PLACEHOLDERS`); its first sample is the value, an
            empty result or NaN is no data (silence never promotes).
        min: the value must be at least this.
        max: the value must be at most this.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=METRIC_NAME)
    query: str
    min: float | None = None
    max: float | None = None

    @field_validator("query")
    @classmethod
    def _query(cls, value: str) -> str:
        return check_template(value)

    @model_validator(mode="after")
    def _one_bound(self) -> MetricSpec:
        if (self.min is None) == (self.max is None):
            raise ValueError(f"metric {self.name!r} sets "
                             + ("both min and max" if self.min is not None else
                                "neither min nor max")
                             + "; set exactly one (min: healthy at or above, max: at or below)")
        return self

    def threshold(self) -> str:
        """The bound as text, e.g. ``<= 0.5`` or ``>= 0.99``."""
        return f"<= {self.max:g}" if self.max is not None else f">= {self.min:g}"

    def breach(self, value: float) -> str | None:
        """Why ``value`` fails this metric, or None when it passes.

        Args:
            value: a measured value.

        Returns:
            e.g. ``errors-5xx 0.8 > 0.5``.
        """
        if self.max is not None and value > self.max:
            return f"{self.name} {value:.4g} > {self.max:g}"
        if self.min is not None and value < self.min:
            return f"{self.name} {value:.4g} < {self.min:g}"
        return None


class AnalysisSpec(BaseModel):
    """Prometheus verification: the guide's thresholds (Flagger's values), pacing, metrics."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    success_rate_min: float = Field(default=0.99, gt=0, le=1)
    p99_max_ms: float = Field(default=500.0, gt=0)
    interval_s: float = Field(default=60.0, gt=0)
    intervals: int = Field(default=5, ge=1)
    failure_limit: int = Field(default=1, ge=0)
    max_no_data: int = Field(default=2, ge=0)
    window_s: float | None = Field(default=None, gt=0, description="PromQL range (s).")
    min_requests: int = Field(
        default=0, ge=0,
        description="Requests the window must hold for an interval to count; fewer is no data "
        "(0: any). A canary's share at 5 % can be a handful, all answered well by chance.")
    metrics: list[MetricSpec] = Field(
        default_factory=list,
        description="More metrics judged each interval beside the built-in success-rate and "
        "p99-latency: {name, query (PromQL template), min | max}.")

    @field_validator("metrics", mode="before")
    @classmethod
    def _names(cls, value: Any) -> Any:
        if not isinstance(value, list):
            return value
        seen: dict[str, int] = {}
        for index, entry in enumerate(value):
            name = entry.get("name") if isinstance(entry, dict) else None
            if not isinstance(name, str):
                continue
            if name in BUILTIN_NAMES:
                raise ValueError(
                    f"metrics.{index}.name {name!r} is a built-in metric (its threshold is "
                    + ("success_rate_min" if name == SUCCESS_RATE else "p99_max_ms")
                    + "); give yours another name")
            if name in seen:
                raise ValueError(f"metrics.{index}.name {name!r} is already the name of "
                                 f"metrics.{seen[name]}; give each metric its own name")
            seen[name] = index
        return value
