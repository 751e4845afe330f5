"""Typed parameters and results of the release and rollback flows (rendered as UI forms)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from tasks.release.analysis_config import AnalysisSpec
from tasks.release.build import VERSION_RE
from tasks.release.catalogue import ServiceSpec
from tasks.release.outcomes import ReleaseSummary, ServiceOutcome

# The shipped catalogue's environments and services (deployments/catalogue.yaml; a test keeps
# them equal). They are choices in the parameter schema only, so the UI renders a select and the
# API (the deployments enforce their schema) and `veza-ops trigger` refuse anything else before a
# run is created. The flows still check every value against the catalogue they are given, with an
# error naming the field and the fix: a direct call with another catalogue keeps working.
ENVIRONMENTS = ("staging", "production")
SERVICES = ("veza-backend-api", "veza-chat-server", "veza-stream-server", "veza-web")

Version = Annotated[str, Field(json_schema_extra={"pattern": VERSION_RE.pattern,
                                                  "examples": ["1.4.2"]})]
"""A version: the same pattern :func:`tasks.release.build.check_version` enforces."""
Environment = Annotated[str, Field(json_schema_extra={"enum": list(ENVIRONMENTS)})]
"""An environment of the catalogue."""
ServiceName = Annotated[str, Field(json_schema_extra={"enum": list(SERVICES)})]
"""A service of the catalogue."""


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


__all__ = ["ENVIRONMENTS", "SERVICES", "AnalysisOverrides", "Environment", "ReleaseSummary",
           "ServiceName", "ServiceOutcome", "Version"]
