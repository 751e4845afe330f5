"""The report of a run (release or rollback): checks, timings, outcome; recorded once, announced."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import UTC, datetime
from typing import Literal

from prefect.artifacts import create_markdown_artifact

from errors import VezaOpsError
from tasks.notify import Outcome, current_run_url, notify_task
from tasks.release.clusters import Cluster
from tasks.release.colours import Prepared
from tasks.release.e2e import E2EResult
from tasks.release.history import CheckRecord, ReleaseRecord, record_release_task
from tasks.release.logs import get_logger
from tasks.release.outcomes import (
    ReleaseSummary,
    ServiceOutcome,
    left_sentence,
    record_outcome,
    run_outcome,
)
from tasks.release.preflight import Checklist
from tasks.release.redaction import redact
from tasks.release.switching import RestoreReport, SwitchRecord, rollback_timings
from tasks.release.undo import UndoReport


@dataclass
class ReleaseReport:
    """The record kept in the cluster and the summary returned, filled in step by step.

    Attributes:
        record: the history record (written with outcome ``running`` once the run starts
            changing an environment, updated as it goes, and when the run ends).
        summary: what the flow returns.
        started: monotonic time of the start (timings are measured from it).
        changed: the run may have changed something: its record is written.
        switched: services whose traffic was switched (a failure is then a rollback).
        attempted: services whose switch was attempted (applied or maybe applied).
        left: Services a switch-back left on their new colour, with the colour.
        is_committed: the new colours were committed; from here on failures are warnings.
    """

    record: ReleaseRecord
    summary: ReleaseSummary
    started: float
    changed: bool = False
    switched: int = 0
    attempted: list[str] = dataclass_field(default_factory=list)
    left: dict[str, str] = dataclass_field(default_factory=dict)
    is_committed: bool = False
    cluster: Cluster | None = None

    @classmethod
    def start(cls, *, kind: Literal["release", "rollback"], environment: str, version: str,
              triggered_by: str, run_id: str, images: dict[str, str] | None = None,
              dry_run: bool = False,
              commit: tuple[str | None, datetime | None] = (None, None)) -> ReleaseReport:
        """Open the report of a run.

        Args:
            kind: ``release`` or ``rollback``.
            environment: the environment.
            version: the version released (``?`` for a rollback until its target is known).
            triggered_by: who or what started the run.
            run_id: the flow run id (its first 8 characters end the report's id).
            images: service to image released.
            dry_run: nothing will be changed.
            commit: the released commit's hash and timestamp, when CI gave them.

        Returns:
            The report.
        """
        now = datetime.now(UTC)
        record = ReleaseRecord(id=ReleaseRecord.new_id(now, run_id[:8]), kind=kind,
                               environment=environment, version=version,
                               triggered_by=triggered_by, flow_run_id=run_id, started_at=now,
                               images=images or {}, commit_sha=commit[0],
                               commit_timestamp=commit[1])
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

    def changing(self) -> None:
        """From here on the run changes its environments: record it now (outcome ``running``).

        A run killed from here on leaves a record that a rollback recognises as crashed.
        """
        self.changed = True
        self.progress()

    def progress(self) -> None:
        """Write the record as it is now (best effort: a failure is logged, the run goes on)."""
        c = self.cluster
        if c is None or not self.changed:
            return
        try:
            record_release_task(c.core_v1, c.env.namespace, self.record,
                                keep=c.env.history_size)
        except VezaOpsError as exc:
            get_logger(__name__).error("could not record the %s's progress: %s",
                                       self.record.kind, exc.message)

    def lock_takeovers(self, takeovers: list[str]) -> None:
        """Record each lock taken at once from a run that was over.

        Args:
            takeovers: one sentence per lock.
        """
        for line in takeovers:
            self.check("lock taken from a finished run", True, line)

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

    def staging_undone(self, environment: str, undo: UndoReport) -> None:
        """Record what the staging undo did: one check per service of the release.

        Args:
            environment: the rolling environment.
            undo: the undo's report.
        """
        for name, passed, detail in undo.checks(environment):
            self.check(name, passed, detail)

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
        self.progress()

    def switching(self, service: str) -> None:
        """Record that a service's switch is attempted (it may apply even when it fails).

        Args:
            service: the service.
        """
        if service not in self.attempted:
            self.attempted.append(service)

    def switched_to(self, service: str) -> None:
        """Record that a service's traffic was switched to its new colour.

        Args:
            service: the service.
        """
        self.switching(service)
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
        back = [s for s in restore.restored if s in self.attempted]
        detail = (f"{len(back)} service(s) back on their old colour "
                  f"in {self.record.timings.get('restoration_s', 0.0):.2f} s")
        if restore.left:
            detail = f"ROLLBACK INCOMPLETE: {self.left_sentence(restore.left)}; {detail}"
        self.check("rollback", not restore.left, detail)
        self.left = dict(restore.left)
        for r in switches:
            if r.service_name not in restore.left:
                self.summary.services[r.service].colour = r.from_colour
        for name, colour in restore.left.items():
            self.warn(f"Service {name} left on {colour}: its Deployment kept running")

    left_sentence = staticmethod(left_sentence)

    def warn(self, message: str) -> None:
        """Record a warning (listed in the record's checks, the summary and the report).

        Args:
            message: one line.
        """
        message = redact(message)
        get_logger(__name__).error("warning: %s", message)
        self.summary.warnings.append(message)
        self.check("warning", False, message)

    def committed(self, prepared: Iterable[Prepared]) -> None:
        """Record the new colours as live.

        Args:
            prepared: the colours now serving.
        """
        self.is_committed = True
        for p in prepared:
            self.record.colours[p.service] = p.new_colour
            self.summary.services[p.service].colour = p.new_colour
        self.progress()

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
        self.cluster = c
        outcome = "succeeded"
        try:
            yield self
        except BaseException as exc:
            reason = redact(exc.message if isinstance(exc, VezaOpsError) else type(exc).__name__)
            outcome = run_outcome(committed=self.is_committed, incomplete=bool(self.left),
                                  switched=bool(self.switched or self.attempted),
                                  cancelled=not isinstance(exc, Exception))
            if self.is_committed:
                self.warn(f"after the commit: {reason}")
            else:
                rec.reason = reason
            raise
        finally:
            if self.left:
                rec.reason = (f"ROLLBACK INCOMPLETE: {self.left_sentence(self.left)}; "
                              f"{rec.reason or ''}").rstrip("; ")
            elif outcome == "succeeded" and self.summary.warnings:
                rec.reason = "with warnings: " + "; ".join(self.summary.warnings)
            rec.outcome = record_outcome(outcome)
            rec.finished_at = datetime.now(UTC)
            rec.timings["total"] = time.monotonic() - self.started
            self.summary.outcome, self.summary.reason = outcome, rec.reason
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
            banner = "" if self.summary.outcome == rec.outcome else (
                f"**{self.summary.outcome.upper()}**: {rec.reason}\n\n")
            create_markdown_artifact(key=f"{rec.kind}-report",
                                     markdown=redact(banner + rec.to_markdown()),
                                     description=f"{rec.version} to {rec.environment}")
        except Exception as exc:  # an artifact never fails a run
            log.warning("could not create the report artifact: %s", type(exc).__name__)
        notify_task(c.slack, Outcome(
            kind=rec.kind, outcome=self.summary.outcome, environment=rec.environment,
            version=rec.version, services=sorted(rec.images), duration_s=rec.timings["total"],
            reason=rec.reason, triggered_by=rec.triggered_by, run_url=current_run_url()))
