"""Typed parameters and results of the release and rollback flows (rendered as UI forms)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from tasks.release.catalogue import AnalysisSpec, ServiceSpec
from tasks.release.outcomes import ReleaseSummary, ServiceOutcome


class AnalysisOverrides(BaseModel):
    """Per-release overrides of the catalogue's analysis settings (unset fields keep theirs)."""

    model_config = ConfigDict(extra="forbid")

    success_rate_min: float | None = Field(default=None, gt=0, le=1,
                                           description="Minimum success rate (0-1).")
    p99_max_ms: float | None = Field(default=None, gt=0, description="Maximum p99 latency (ms).")
    interval_s: float | None = Field(default=None, gt=0, description="Seconds per interval.")
    intervals: int | None = Field(default=None, ge=1, description="Healthy intervals needed.")
    failure_limit: int | None = Field(default=None, ge=0,
                                      description="Failed intervals tolerated.")
    max_no_data: int | None = Field(default=None, ge=0,
                                    description="Consecutive no-data intervals tolerated.")

    def apply(self, spec: ServiceSpec) -> ServiceSpec:
        """Return the service with these overrides applied to its analysis.

        Args:
            spec: the catalogue's service.

        Returns:
            A copy with the overridden analysis.
        """
        changes: dict[str, Any] = self.model_dump(exclude_none=True)
        if not changes:
            return spec
        analysis = AnalysisSpec.model_validate({**spec.analysis.model_dump(), **changes})
        return spec.model_copy(update={"analysis": analysis})


__all__ = ["AnalysisOverrides", "ReleaseSummary", "ServiceOutcome"]
