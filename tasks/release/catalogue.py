"""The service catalogue: environments and services of a release, validated from YAML."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from errors import InvalidInputError
from tasks.release.analysis_config import AnalysisSpec
from tasks.release.canary_config import (
    ACCEPTANCE_COMMAND,
    ACCEPTANCE_PLACEHOLDERS,
    ACCEPTANCE_TIMEOUT,
    APPROVAL_POLL,
    APPROVAL_TIMEOUT,
    CANARY_TRAFFIC,
    DEFAULT_STEPS,
    Approval,
    StepEntry,
    Traffic,
    check_canary_steps,
    gated,
)

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
ARGV_PLACEHOLDERS = frozenset({"image", "version", "service", "python"})
DEFAULT_CATALOGUE = Path(__file__).resolve().parents[2] / "deployments" / "catalogue.yaml"

Argv = list[str]


def _check_placeholders(argv: Argv | None, allowed: frozenset[str]) -> Argv | None:
    if argv is None:
        return None
    if not argv or not argv[0].strip():
        raise ValueError("an argv list needs at least the program name")
    for item in argv:
        for name in PLACEHOLDER.findall(item):
            if name not in allowed:
                raise ValueError(
                    f"unknown placeholder {{{name}}} in {item!r}; allowed: "
                    + ", ".join(f"{{{a}}}" for a in sorted(allowed))
                )
    return argv


def substitute(argv: Argv, values: dict[str, str]) -> Argv:
    """Replace ``{name}`` placeholders in each argv item (no shell, no re-splitting).

    Args:
        argv: the command as a list of arguments.
        values: placeholder name to value.

    Returns:
        A new list with the placeholders replaced.
    """
    return [PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), item) for item in argv]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BuildCommands(_Model):
    """Build steps of a service, each an argv list (or None to skip the step)."""

    test: Argv | None = None
    lint: Argv | None = None
    scan: Argv | None = None
    build: Argv | None = None
    push: Argv | None = None
    inspect: Argv | None = None
    cwd: str | None = Field(default=None, description="Directory the commands run in.")
    timeout_s: float = Field(default=1800.0, gt=0)
    push_attempts: int = Field(default=3, ge=1, le=10)
    push_backoff_s: float = Field(default=2.0, ge=0)

    @field_validator("test", "lint", "scan", "build", "push", "inspect")
    @classmethod
    def _placeholders(cls, value: Argv | None) -> Argv | None:
        return _check_placeholders(value, ARGV_PLACEHOLDERS)


class ServiceSpec(_Model):
    """One Veza service: its Kubernetes objects, image, probes, secrets, build and checks."""

    name: str = Field(pattern=DNS_LABEL)
    deployment_base: str = Field(default="", description="Deployments are {base}-{colour}.")
    service_name: str = ""
    container: str = ""
    image_repository: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)
    health_path: str = "/health"
    ready_path: str = "/ready"
    smoke_paths: list[str] = Field(default_factory=lambda: ["/health"])
    vault_path: str = "veza/{environment}/{service}"
    build: BuildCommands = Field(default_factory=BuildCommands)
    e2e_command: Argv | None = None
    analysis: AnalysisSpec = Field(default_factory=AnalysisSpec)

    @model_validator(mode="before")
    @classmethod
    def _defaults_from_name(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("name"), str):
            data = dict(data)
            for key in ("deployment_base", "service_name", "container"):
                if not data.get(key):
                    data[key] = data["name"]
        return data

    @field_validator("health_path", "ready_path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("an HTTP path starts with /")
        return value

    @field_validator("smoke_paths")
    @classmethod
    def _paths(cls, value: list[str]) -> list[str]:
        if any(not p.startswith("/") for p in value):
            raise ValueError("every smoke path starts with /")
        return value

    @field_validator("vault_path")
    @classmethod
    def _vault_path(cls, value: str) -> str:
        for name in PLACEHOLDER.findall(value):
            if name not in ("environment", "service"):
                raise ValueError(
                    f"unknown placeholder {{{name}}}; use {{environment}}, {{service}}"
                )
        return value.strip("/")

    @field_validator("e2e_command")
    @classmethod
    def _e2e(cls, value: Argv | None) -> Argv | None:
        return _check_placeholders(value, ARGV_PLACEHOLDERS)

    def image(self, version: str) -> str:
        """Full image reference of a version, ``{image_repository}:{version}``.

        Args:
            version: the image tag.

        Returns:
            The image reference.
        """
        return f"{self.image_repository}:{version}"

    def deployment_name(self, colour: str) -> str:
        """Name of the Deployment of a colour, ``{deployment_base}-{colour}``.

        Args:
            colour: e.g. ``blue``.

        Returns:
            The Deployment name.
        """
        return f"{self.deployment_base}-{colour}"

    def vault_path_for(self, environment: str) -> str:
        """The Vault KV path of this service's secrets in an environment.

        Args:
            environment: e.g. ``staging``.

        Returns:
            The path below the KV mount.
        """
        return self.vault_path.replace("{environment}", environment).replace("{service}", self.name)


class EnvironmentSpec(_Model):
    """One environment: its namespace, the blocks that reach its systems, and its settings."""

    name: str = Field(pattern=DNS_LABEL)
    namespace: str = Field(pattern=DNS_LABEL)
    strategy: Literal["rolling", "blue-green", "canary"] = "rolling"
    canary_steps: list[StepEntry] = Field(
        default_factory=lambda: list(DEFAULT_STEPS),
        description="Canary weights (%) in order, each analysed; the last one is 100; "
        "{weight: W, approve: true} waits for an operator before that step.")
    approval: Approval = "none"
    approval_timeout_s: int = APPROVAL_TIMEOUT
    approval_poll_s: int = APPROVAL_POLL
    canary_traffic: Traffic = CANARY_TRAFFIC
    acceptance_command: Argv | None = ACCEPTANCE_COMMAND
    acceptance_timeout_s: float = ACCEPTANCE_TIMEOUT
    kubernetes_block: str = Field(min_length=1)
    prometheus_block: str = Field(min_length=1)
    vault_block: str = Field(min_length=1)
    slack_block: str | None = None
    colour_label: str = "color"
    app_label: str = "app"
    colours: tuple[str, str] = ("blue", "green")
    keep_old_colour_s: float = Field(default=600.0, ge=0)
    switch_back_deadline_s: float = Field(
        default=60.0, gt=0, description="How long a failed release retries each switch-back.")
    rollout_timeout_s: float = Field(default=300.0, gt=0)
    undo_deadline_s: float = Field(
        default=60.0, gt=0, description="How long a failed staging release retries its undo.")
    lock_ttl_s: int = Field(default=900, ge=5)
    lock_wait_s: float = Field(default=0.0, ge=0)
    preempt_wait_s: float = Field(
        default=120.0, gt=0,
        description="How long a rollback waits for a release in its keep window to stop.")
    required_alerts: list[str] = Field(default_factory=list)
    history_size: int = Field(default=50, ge=1, le=500)
    secrets_keep_releases: int = Field(
        default=5, ge=1, le=500,
        description="Secrets of this many last committed releases survive the collection.")
    staging_environment: str | None = Field(
        default=None, description="Environment that must already run the version healthily."
    )

    @field_validator("canary_steps")
    @classmethod
    def _steps(cls, value: list[Any]) -> list[Any]:
        return check_canary_steps(value)

    @field_validator("acceptance_command")
    @classmethod
    def _acceptance(cls, value: Argv | None) -> Argv | None:
        return _check_placeholders(value, ACCEPTANCE_PLACEHOLDERS)

    @property
    def canary_weights(self) -> list[int]:
        """The canary's weights (%), in order."""
        return [s.weight for s in self.canary_steps]

    @property
    def approval_gates(self) -> list[int]:
        """The weights before which the flow waits for an operator's approval."""
        return gated(self.canary_steps, self.approval)

    @field_validator("colours")
    @classmethod
    def _colours(cls, value: tuple[str, str]) -> tuple[str, str]:
        if value[0] == value[1]:
            raise ValueError("the two colours must differ")
        return value


class Catalogue(_Model):
    """Every environment and service of a release, and the order services are switched in."""

    environments: dict[str, EnvironmentSpec]
    services: dict[str, ServiceSpec]
    switch_order: list[str] = Field(default_factory=list)
    e2e_command: Argv | None = None

    @model_validator(mode="before")
    @classmethod
    def _names_from_keys(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        # Top-level keys starting with "x-" hold YAML anchors shared by entries.
        data = {k: v for k, v in data.items() if not str(k).startswith("x-")}
        for section in ("environments", "services"):
            entries = data.get(section)
            if isinstance(entries, dict):
                data[section] = {
                    key: ({"name": key, **value} if isinstance(value, dict) else value)
                    for key, value in entries.items()
                }
        return data

    @model_validator(mode="after")
    def _order(self) -> Catalogue:
        for key, env in self.environments.items():
            if env.name != key:
                raise ValueError(f"environment {key!r} is named {env.name!r}")
            if env.staging_environment and env.staging_environment not in self.environments:
                raise ValueError(f"environment {key!r}: unknown staging_environment")
        for key, svc in self.services.items():
            if svc.name != key:
                raise ValueError(f"service {key!r} is named {svc.name!r}")
        if not self.switch_order:
            object.__setattr__(self, "switch_order", list(self.services))
        unknown = [s for s in self.switch_order if s not in self.services]
        missing = [s for s in self.services if s not in self.switch_order]
        if unknown or missing or len(set(self.switch_order)) != len(self.switch_order):
            raise ValueError(
                f"switch_order must list every service once (unknown: {unknown}, "
                f"missing: {missing})"
            )
        _check_placeholders(self.e2e_command, ARGV_PLACEHOLDERS)
        return self

    def environment(self, name: str) -> EnvironmentSpec:
        """Look an environment up.

        Args:
            name: environment name.

        Returns:
            Its spec.

        Raises:
            InvalidInputError: no such environment.
        """
        if name not in self.environments:
            raise InvalidInputError(
                "environment",
                f"{name!r} is not in the catalogue",
                fix=f"use one of {sorted(self.environments)}",
            )
        return self.environments[name]

    def select(self, names: list[str] | None = None) -> list[ServiceSpec]:
        """The services to release, in switch order.

        Args:
            names: service names (None or empty: every service).

        Returns:
            The specs in ``switch_order``.

        Raises:
            InvalidInputError: a name is not in the catalogue.
        """
        wanted = list(names or self.services)
        unknown = [n for n in wanted if n not in self.services]
        if unknown:
            raise InvalidInputError(
                "services",
                f"unknown service(s) {unknown}",
                fix=f"use names from the catalogue: {self.switch_order}",
            )
        return [self.services[n] for n in self.switch_order if n in wanted]


def _field_path(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "catalogue"


def parse_catalogue(data: Any, *, source: str = "catalogue") -> Catalogue:
    """Validate already-parsed catalogue data.

    Args:
        data: the YAML document as Python objects.
        source: where it came from, named in errors.

    Returns:
        The catalogue.

    Raises:
        InvalidInputError: naming the first bad field (dotted path) and the problem.
    """
    if not isinstance(data, dict):
        raise InvalidInputError(source, "is not a mapping", fix="see deployments/catalogue.yaml")
    try:
        return Catalogue.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        more = exc.error_count() - 1
        problem = first["msg"] + (f" (and {more} more problem(s))" if more else "")
        raise InvalidInputError(
            f"{source}: {_field_path(tuple(first['loc']))}",
            problem,
            fix="correct that field; the schema is documented in deployments/catalogue.yaml",
        ) from None


def load_catalogue(path: str | Path = DEFAULT_CATALOGUE) -> Catalogue:
    """Read and validate a catalogue YAML file.

    Args:
        path: the YAML file.

    Returns:
        The catalogue.

    Raises:
        InvalidInputError: the file is missing, is not YAML, or a field is wrong.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise InvalidInputError(
            "catalogue", f"cannot read {path} ({exc.strerror})", fix="give an existing file"
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise InvalidInputError(
            str(path), f"is not valid YAML{where}", fix="fix the YAML syntax"
        ) from None
    return parse_catalogue(data, source=str(path))
