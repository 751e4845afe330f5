"""The report of a run (release or rollback): checks, timings, outcome; recorded once, announced."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel, Field

from errors import VezaOpsError
from tasks.notify import Outcome, current_run_url, notify_task
from tasks.release.clusters import Cluster
from tasks.release.colours import Prepared
from tasks.release.e2e import E2EResult
from tasks.release.history import CheckRecord, ReleaseRecord, record_release_task
from tasks.release.logs import get_logger
from tasks.release.preflight import Checklist
from tasks.release.switching import RestoreReport, SwitchRecord, rollback_timings


class ServiceOutcome(BaseModel):
    """What happened to one service in a release."""

    service: str
    image: str
    previous_image: str | None = None
    colour: str | None = None
    previous_colour: str | None = None
    secret: str | None = None
    switched: bool = False
    verified: bool = False


class ReleaseSummary(BaseModel):
    """The value a release or rollback run returns."""

    release_id: str
    environment: str
    version: str
    outcome: str
    dry_run: bool = False
    plan: list[str] = Field(default_factory=list)
    services: dict[str, ServiceOutcome] = Field(default_factory=dict)
    reason: str | None = None
    timings: dict[str, float] = Field(default_factory=dict)
    reconciled: list[str] = Field(default_factory=list)


@dataclass
class ReleaseReport:
    """The record kept in the cluster and the summary returned, filled in step by step.

    Attributes:
        record: the history record (written once, when the run ends).
        summary: what the flow returns.
        started: monotonic time of the start (timings are measured from it).
        changed: the run may have changed something: its record is written.
        switched: services whose traffic was switched (a failure is then a rollback).
    """

    record: ReleaseRecord
    summary: ReleaseSummary
    started: float
    changed: bool = False
    switched: int = 0

    @classmethod
    def start(cls, *, kind: Literal["release", "rollback"], environment: str, version: str,
              triggered_by: str, run_id: str, images: dict[str, str] | None = None,
              dry_run: bool = False) -> ReleaseReport:
        """Open the report of a run.

        Args:
            kind: ``release`` or ``rollback``.
            environment: the environment.
            version: the version released (``?`` for a rollback until its target is known).
            triggered_by: who or what started the run.
            run_id: the flow run id (its first 8 characters end the report's id).
            images: service to image released.
            dry_run: nothing will be changed.

        Returns:
            The report.
        """
        now = datetime.now(UTC)
        record = ReleaseRecord(id=ReleaseRecord.new_id(now, run_id[:8]), kind=kind,
                               environment=environment, version=version,
                               triggered_by=triggered_by, flow_run_id=run_id, started_at=now,
                               images=images or {})
        summary = ReleaseSummary(release_id=record.id, environment=environment,
                                 version=version, outcome="running", dry_run=dry_run)
        return cls(record, summary, time.monotonic())

    @property
    def id(self) -> str:
        """The run's id (key of its record)."""
        return self.record.id

    @property
    def holder(self) -> str:
        """The run's name on the release lock, e.g. ``release/20261127T100000Z-1a2b3c4d``."""
        return f"{self.record.kind}/{self.record.id}"

    @contextmanager
    def timed(self, step: str) -> Iterator[None]:
        """Time a step; its duration is recorded when it succeeds.

        Args:
            step: the step's name in ``timings``.

        Yields:
            Nothing.
        """
        started = time.monotonic()
        yield
        self.record.timings[step] = time.monotonic() - started

    def check(self, name: str, passed: bool, detail: str = "") -> None:
        """Record one check.

        Args:
            name: what was checked.
            passed: its result.
            detail: one line.
        """
        self.record.checks.append(CheckRecord(name=name, passed=passed, detail=detail))

    def checklist(self, environment: str, checklist: Checklist) -> None:
        """Record a passed pre-deployment checklist.

        Args:
            environment: the environment checked.
            checklist: its items.
        """
        for item in checklist.items:
            self.check(f"preflight {environment}: {item.name}", item.passed, item.detail)

    def e2e(self, environment: str, result: E2EResult) -> None:
        """Record the E2E stage.

        Args:
            environment: where it ran.
            result: its checks.
        """
        passed = sum(c.passed for c in result.checks)
        self.check(f"e2e {environment}", result.passed, f"{passed}/{len(result.checks)} passed")

    def staged(self, secrets: dict[str, str]) -> None:
        """Record a release that ends in the rolling environment (no colours).

        Args:
            secrets: service to its new Secret.
        """
        self.record.secrets = secrets
        self.record.colours = {name: "-" for name in secrets}

    def reconciled(self, done: list[str], problems: list[str]) -> None:
        """Record reconcile's corrections (each one changed the environment).

        Args:
            done: corrections made.
            problems: problems left for a human.
        """
        self.summary.reconciled = done + problems
        self.changed = self.changed or bool(done)

    def prepared(self, prepared: Iterable[Prepared]) -> None:
        """Record the colours brought up (their previous state is the rollback target).

        Args:
            prepared: the colours ready for traffic.
        """
        for p in prepared:
            self.record.previous_images[p.service] = p.previous_image or "-"
            self.record.previous_colours[p.service] = p.live_colour
            self.summary.services[p.service] = ServiceOutcome(
                service=p.service, image=p.image, previous_image=p.previous_image,
                colour=p.live_colour, previous_colour=p.live_colour, secret=p.secret_name)
            self.check(f"smoke {p.service} {p.new_colour}", True,
                       f"{len(p.smoke)} request(s) answered")

    def switched_to(self, service: str) -> None:
        """Record that a service's traffic was switched to its new colour.

        Args:
            service: the service.
        """
        self.switched += 1
        self.summary.services[service].switched = True

    def verified(self, service: str, colour: str, reason: str) -> None:
        """Record a promoted verification.

        Args:
            service: the service.
            colour: its new colour.
            reason: the verdict's sentence.
        """
        self.summary.services[service].verified = True
        self.check(f"verify {service} {colour}", True, reason)

    def rolled_back(self, switches: list[SwitchRecord], restore: RestoreReport) -> None:
        """Record the switch-back after a failed switch or verification, and its timings.

        Args:
            switches: the switches done.
            restore: the switch-back's report.
        """
        self.record.timings.update(rollback_timings(switches, restore))
        self.check("rollback", not restore.errors,
                   f"{len(switches)} service(s) back on their old colour "
                   f"in {self.record.timings.get('restoration_s', 0.0):.2f} s")
        for r in switches:
            self.summary.services[r.service].colour = r.from_colour

    def committed(self, prepared: Iterable[Prepared]) -> None:
        """Record the new colours as live.

        Args:
            prepared: the colours now serving.
        """
        for p in prepared:
            self.record.colours[p.service] = p.new_colour
            self.summary.services[p.service].colour = p.new_colour

    def rolling_back_to(self, version: str, images: dict[str, str],
                        previous_images: dict[str, str]) -> None:
        """Record what a rollback returns to; from here on it is recorded.

        Args:
            version: label of the target (a version, or ``before <version>``).
            images: service to the image restored.
            previous_images: service to the image it replaces.
        """
        self.record.version = self.summary.version = version
        self.record.images, self.record.previous_images = images, previous_images
        self.changed = True

    def restored(self, service: str, image: str, colour: str, action: str) -> None:
        """Record one service of a rollback.

        Args:
            service: the service.
            image: the image it runs now.
            colour: the colour serving it.
            action: what was done (``already``, ``switched``, ``scaled``, ``redeployed``).
        """
        self.record.colours[service] = colour
        self.check(f"restore {service}", True, action)
        self.summary.services[service] = ServiceOutcome(
            service=service, image=image, colour=colour, switched=action != "already",
            verified=True)

    def dry_run(self, plan: list[str]) -> ReleaseSummary:
        """Publish the plan of a dry run.

        Args:
            plan: its lines.

        Returns:
            The summary (outcome ``dry-run``).
        """
        for line in plan:
            get_logger(__name__).info("plan: %s", line)
        self.summary.plan, self.summary.outcome = plan, "dry-run"
        rec = self.record
        create_markdown_artifact(
            key="release-plan", description=f"dry run of {rec.version} to {rec.environment}",
            markdown=f"# Plan: {rec.version} to {rec.environment}\n\n"
            + "\n".join(f"- {line}" for line in plan) + "\n")
        return self.summary

    @contextmanager
    def running(self, c: Cluster) -> Iterator[ReleaseReport]:
        """Run the steps; then record the outcome (once), publish the report, announce it.

        Args:
            c: the environment the run is for (history, Slack).

        Yields:
            This report.
        """
        rec = self.record
        try:
            yield self
            rec.outcome = "succeeded"
        except BaseException as exc:
            rec.outcome = "rolled-back" if self.switched else "failed"
            rec.reason = exc.message if isinstance(exc, VezaOpsError) else type(exc).__name__
            raise
        finally:
            rec.finished_at = datetime.now(UTC)
            rec.timings["total"] = time.monotonic() - self.started
            self.summary.outcome, self.summary.reason = rec.outcome, rec.reason
            self.summary.timings = rec.timings
            self._publish(c)

    def _publish(self, c: Cluster) -> None:
        rec, log = self.record, get_logger(__name__)
        log.info("%s %s of %s to %s: %s in %.1f s", rec.kind, rec.id, rec.version,
                 rec.environment, rec.outcome, rec.timings["total"])
        if self.changed:
            try:
                record_release_task(c.core_v1, c.env.namespace, rec, keep=c.env.history_size)
            except VezaOpsError as exc:
                log.error("could not record the %s: %s", rec.kind, exc.message)
        try:
            create_markdown_artifact(key=f"{rec.kind}-report", markdown=rec.to_markdown(),
                                     description=f"{rec.version} to {rec.environment}")
        except Exception as exc:  # an artifact never fails a run
            log.warning("could not create the report artifact: %s", type(exc).__name__)
        notify_task(c.slack, Outcome(
            kind=rec.kind, outcome=rec.outcome, environment=rec.environment,
            version=rec.version, services=sorted(rec.images), duration_s=rec.timings["total"],
            reason=rec.reason, triggered_by=rec.triggered_by, run_url=current_run_url()))
