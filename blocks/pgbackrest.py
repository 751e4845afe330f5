"""pgBackRest repository block (S3, client-side encryption, retention) and the host's config.

pgBackRest is the engine of point-in-time recovery: PostgreSQL's ``archive_command`` pushes
every WAL segment into the repository, backups are physical (full, differential,
incremental). veza-ops orchestrates it; it does not reimplement any of it.

Two pieces of configuration meet on a database host:

- :class:`PgBackRestRepository` (a block): where the repository is and how to open it:
  bucket, path, endpoint, TLS, credentials (prefect-aws ``AwsCredentials``, like
  ``S3BackupStore``), the cipher passphrase, the stanza and the retention.
- :class:`DatabaseHost` (a plain model, a flow parameter): where PostgreSQL and pgBackRest
  live on the host (data directory, port, socket, config file, log/lock/spool paths).

:func:`render_config` turns both into the text of pgBackRest's configuration file, and
:func:`postgresql_settings` into the ``archive_command``/``restore_command`` lines of
``postgresql.conf``: the operator installs both once (docs/recovery.md). The file holds the
S3 secret key and the cipher passphrase: mode 0600, owned by the PostgreSQL OS user.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from botocore.config import Config
from prefect.blocks.core import Block
from prefect_aws import AwsCredentials
from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator

from blocks.s3_client import s3_client
from blocks.schema_cache import CachedSchema, cache_schema_of
from errors import InvalidInputError

cache_schema_of(AwsCredentials)  # nested here: its schema once per class, not per field

_STANZA = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# paths reaching archive_command (a shell command run by PostgreSQL): no quoting needed
_SAFE_PATH = re.compile(r"^/[A-Za-z0-9_./+-]*$")
_HOST = re.compile(r"^[A-Za-z0-9.-]+$")


def _one_line(value: str, field: str) -> str:
    """Refuse values that would break (or inject into) a line of the config file."""
    if any(ch in value for ch in "\r\n\0"):
        raise ValueError(f"{field} must be one line (no newline or NUL)")
    return value


class PgBackRestRepository(CachedSchema, Block):
    """A pgBackRest repository in an S3 (or S3-compatible) bucket, encrypted client-side."""

    _block_type_name = "Veza pgBackRest Repository"
    _block_type_slug = "veza-pgbackrest-repository"
    _description = "A pgBackRest S3 repository (WAL archive + physical backups) for PITR."

    bucket: str = Field(description="Bucket name (repo1-s3-bucket).")
    path: str = Field(
        default="/pgbackrest", description="Repository path inside the bucket (repo1-path)."
    )
    region: str = Field(default="us-east-1", description="Bucket region (repo1-s3-region).")
    endpoint: str | None = Field(
        default=None,
        description="S3 endpoint host name, no scheme (default s3.REGION.amazonaws.com). "
        "pgBackRest 2.45 matches certificates by DNS name only: use a name, not an IP, "
        "unless verify_tls is off.",
    )
    port: int = Field(default=443, ge=1, le=65535, description="HTTPS port (repo1-storage-port).")
    verify_tls: bool = Field(default=True, description="Verify the endpoint's certificate.")
    ca_file: str | None = Field(
        default=None,
        description="CA bundle path on the database host (repo1-storage-ca-file); must be "
        "readable by the PostgreSQL OS user.",
    )
    uri_style: Literal["host", "path"] = Field(
        default="host", description="host (AWS) or path (MinIO, most S3-compatible stores)."
    )
    credentials: AwsCredentials = Field(
        default_factory=AwsCredentials,
        description="prefect-aws AwsCredentials block; without a key pair the host's "
        "instance role is used (repo1-s3-key-type=auto).",
    )
    cipher_passphrase: SecretStr = Field(
        description="Passphrase of the repository's aes-256-cbc encryption. Losing it loses "
        "every backup; it cannot be changed after stanza-create."
    )
    stanza: str = Field(default="veza", description="pgBackRest stanza (one per cluster).")
    pitr_window_days: int | None = Field(
        default=30, ge=1, le=3650,
        description="Keep fulls (and their WAL) so that any moment of the last N days can "
        "be restored (repo1-retention-full-type=time). Exclusive with retention_full_count.",
    )
    retention_full_count: int | None = Field(
        default=None, ge=1, le=9999,
        description="Keep the newest N full backups instead (repo1-retention-full-type=count).",
    )
    compress_type: Literal["zst", "lz4", "gz", "bz2", "none"] = Field(
        default="zst", description="Compression of backup files and WAL."
    )
    process_max: int = Field(default=2, ge=1, le=64, description="Parallel processes.")
    timeout_s: float = Field(
        default=60.0, gt=0, le=3600,
        description="S3 I/O timeout (io-timeout) and the bucket check's timeout.",
    )

    @field_validator("bucket", "region", "path")
    @classmethod
    def _plain(cls, value: str, info: Any) -> str:
        return _one_line(value, info.field_name)

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not _SAFE_PATH.match(value):
            raise ValueError("path must be absolute, letters, digits, _ . / + - only")
        return value

    @field_validator("endpoint")
    @classmethod
    def _host_only(cls, value: str | None) -> str | None:
        if value is not None and not _HOST.match(value):
            raise ValueError("endpoint is a host name only (no scheme, port or path)")
        return value

    @field_validator("ca_file")
    @classmethod
    def _ca_path(cls, value: str | None) -> str | None:
        if value is not None and not _SAFE_PATH.match(value):
            raise ValueError("ca_file must be an absolute path")
        return value

    @field_validator("stanza")
    @classmethod
    def _stanza(cls, value: str) -> str:
        if not _STANZA.match(value):
            raise ValueError("stanza: letters, digits, _ . - (up to 64), starting alphanumeric")
        return value

    @model_validator(mode="after")
    def _checks(self) -> PgBackRestRepository:
        if (self.pitr_window_days is None) == (self.retention_full_count is None):
            raise ValueError("set exactly one of pitr_window_days and retention_full_count")
        _one_line(self.cipher_passphrase.get_secret_value(), "cipher_passphrase")
        if len(self.cipher_passphrase.get_secret_value()) < 16:
            raise ValueError("cipher_passphrase: at least 16 characters")
        return self

    @property
    def endpoint_host(self) -> str:
        """The endpoint host name (AWS's regional one by default)."""
        return self.endpoint or f"s3.{self.region}.amazonaws.com"

    def secrets(self) -> list[str]:
        """Every secret value of the block (for redaction of a child's output).

        Returns:
            The passphrase, the secret key and the session token, when set.
        """
        creds = self.credentials
        found = [self.cipher_passphrase.get_secret_value()]
        if creds.aws_secret_access_key is not None:
            found.append(creds.aws_secret_access_key.get_secret_value())
        if creds.aws_session_token:
            found.append(str(creds.aws_session_token))
        return [s for s in found if s]

    def get_s3_client(self) -> Any:
        """A boto3 S3 client on the same endpoint and TLS settings as pgBackRest.

        Used to check the bucket before pgBackRest runs: pgBackRest itself would retry an
        unreachable endpoint for its whole ``io-timeout`` per request and then say little.

        Returns:
            A ``botocore`` S3 client.
        """
        verify: bool | str = self.ca_file if (self.verify_tls and self.ca_file) else self.verify_tls
        return s3_client(
            self.credentials,
            region_name=self.region,
            endpoint_url=f"https://{self.endpoint_host}:{self.port}",
            verify=verify,
            config=Config(
                retries={"total_max_attempts": 2, "mode": "standard"},
                connect_timeout=min(self.timeout_s, 10.0),
                read_timeout=self.timeout_s,
                s3={"addressing_style": "path" if self.uri_style == "path" else "virtual"},
            ),
        )


class DatabaseHost(BaseModel):
    """Where PostgreSQL and pgBackRest live on the database host (defaults: Debian's)."""

    data_directory: str = Field(
        default="/var/lib/postgresql/15/main", description="The cluster's data directory."
    )
    port: int = Field(default=5432, ge=1, le=65535, description="PostgreSQL's port.")
    socket_dir: str = Field(default="/var/run/postgresql", description="Unix socket directory.")
    user: str = Field(default="postgres", description="Database superuser pgBackRest logs in as.")
    os_user: str | None = Field(
        default=None,
        description="Run pgBackRest as this OS user (the cluster's owner) when the worker "
        "runs as root; None: as the worker's own user.",
    )
    config_path: str = Field(
        default="/etc/pgbackrest/pgbackrest.conf",
        description="The installed config file (archive_command and restore_command read it).",
    )
    log_path: str = Field(default="/var/log/pgbackrest", description="pgBackRest log-path.")
    lock_path: str = Field(
        default="/tmp/pgbackrest",  # noqa: S108 - pgBackRest's own default, shared on purpose
        description="pgBackRest lock-path: shared by every run so backups and expire exclude "
        "each other.",
    )
    spool_path: str = Field(default="/var/spool/pgbackrest", description="pgBackRest spool-path.")
    executable: str = Field(default="pgbackrest", description="The pgbackrest program.")
    pg_bin_dir: str = Field(
        default="/usr/lib/postgresql/15/bin",
        description="PostgreSQL's programs (pg_ctl, pg_controldata) for restored clusters.",
    )

    @field_validator(
        "data_directory", "socket_dir", "config_path", "log_path", "lock_path", "spool_path",
        "pg_bin_dir",
    )
    @classmethod
    def _safe(cls, value: str, info: Any) -> str:
        if not _SAFE_PATH.match(value):
            raise ValueError(f"{info.field_name}: an absolute path of letters, digits, _ . / + -")
        return value

    @field_validator("user", "executable")
    @classmethod
    def _word(cls, value: str, info: Any) -> str:
        if not re.match(r"^[A-Za-z0-9_./+-]+$", value):
            raise ValueError(f"{info.field_name}: letters, digits, _ . / + - only")
        return value


def _credential_lines(repo: PgBackRestRepository) -> list[str]:
    creds = repo.credentials
    if creds.aws_access_key_id and creds.aws_secret_access_key is not None:
        lines = [
            f"repo1-s3-key={_one_line(creds.aws_access_key_id, 'aws_access_key_id')}",
            "repo1-s3-key-secret="
            + _one_line(creds.aws_secret_access_key.get_secret_value(), "aws_secret_access_key"),
        ]
        if creds.aws_session_token:
            lines.append(f"repo1-s3-token={_one_line(str(creds.aws_session_token), 'token')}")
        return lines
    if creds.profile_name or creds.assume_role_arn:
        raise InvalidInputError(
            "credentials",
            "pgBackRest cannot use an AWS profile or assume a role",
            fix="give the AwsCredentials block a key pair, or none at all to use the "
            "host's instance role",
        )
    return ["repo1-s3-key-type=auto"]


def render_config(repo: PgBackRestRepository, host: DatabaseHost) -> str:
    """Render pgBackRest's configuration file for a database host.

    The result holds the S3 secret key and the cipher passphrase in clear: install it with
    mode 0600, owned by the PostgreSQL OS user (``archive_command`` runs as that user), and
    never log it. The same text (in a private 0600 file) drives every veza-ops run.

    Args:
        repo: the repository block.
        host: the host's paths and PostgreSQL connection.

    Returns:
        The file's text (``[global]`` repository settings, ``[stanza]`` cluster settings).

    Raises:
        InvalidInputError: credentials pgBackRest cannot use (a profile, an assumed role).
    """
    if repo.pitr_window_days is not None:
        retention = ["repo1-retention-full-type=time",
                     f"repo1-retention-full={repo.pitr_window_days}"]
    else:
        retention = ["repo1-retention-full-type=count",
                     f"repo1-retention-full={repo.retention_full_count}"]
    tls = [] if repo.verify_tls else ["repo1-storage-verify-tls=n"]
    if repo.verify_tls and repo.ca_file:
        tls.append(f"repo1-storage-ca-file={repo.ca_file}")
    lines = [
        "# pgBackRest configuration rendered by veza-ops (blocks/pgbackrest.py).",
        "# Holds secrets: mode 0600, owned by the PostgreSQL OS user.",
        "[global]",
        "repo1-type=s3",
        f"repo1-path={repo.path}",
        f"repo1-s3-bucket={repo.bucket}",
        f"repo1-s3-endpoint={repo.endpoint_host}",
        f"repo1-storage-port={repo.port}",
        f"repo1-s3-region={repo.region}",
        f"repo1-s3-uri-style={repo.uri_style}",
        *tls,
        *_credential_lines(repo),
        "repo1-cipher-type=aes-256-cbc",
        f"repo1-cipher-pass={repo.cipher_passphrase.get_secret_value()}",
        *retention,
        f"compress-type={repo.compress_type}",
        # Small files bundled into a few objects (empty ones only in the manifest), not one
        # object per file: the suite's two PITR modules sent ~5,000 PUTs without it, ~150 with.
        "repo1-bundle=y",
        f"process-max={repo.process_max}",
        f"io-timeout={int(repo.timeout_s)}",
        "start-fast=y",
        f"log-path={host.log_path}",
        f"lock-path={host.lock_path}",
        f"spool-path={host.spool_path}",
        "",
        f"[{repo.stanza}]",
        f"pg1-path={host.data_directory}",
        f"pg1-port={host.port}",
        f"pg1-socket-path={host.socket_dir}",
        f"pg1-user={host.user}",
        "",
    ]
    return "\n".join(lines)


def postgresql_settings(
    repo: PgBackRestRepository, host: DatabaseHost, *, data_directory: str | None = None
) -> dict[str, str]:
    """The ``postgresql.conf`` settings that archive WAL into the repository.

    ``restore_command`` is also what a restored cluster (PITR) replays WAL with. Both name
    the installed config file, never a secret: the command lines are visible to every user
    of the host (``ps``) and in ``pg_settings``.

    Args:
        repo: the repository block (its stanza).
        host: the host (the installed config file, the program).
        data_directory: the data directory of a cluster restored elsewhere than
            ``host.data_directory``: pgBackRest's ``archive-get`` refuses to run when
            PostgreSQL's working directory differs from ``pg1-path``, so its
            ``restore_command`` names it (``--pg1-path``).

    Returns:
        ``archive_mode``, ``archive_command``, ``restore_command`` and ``wal_level``.
    """
    base = f"{host.executable} --config={host.config_path} --stanza={repo.stanza}"
    get = base
    if data_directory is not None and data_directory != host.data_directory:
        if not _SAFE_PATH.match(data_directory):
            raise InvalidInputError(
                "data_directory", "an absolute path of letters, digits, _ . / + - only",
                fix="choose a plain path for the restored cluster",
            )
        get = f"{base} --pg1-path={data_directory}"
    return {
        "wal_level": "replica",
        "archive_mode": "on",
        "archive_command": f"{base} archive-push %p",
        "restore_command": f'{get} archive-get %f "%p"',
    }


def render_postgresql_conf(repo: PgBackRestRepository, host: DatabaseHost) -> str:
    """The lines to add to ``postgresql.conf`` (a restart is needed for ``archive_mode``).

    Args:
        repo: the repository block.
        host: the host.

    Returns:
        ``name = 'value'`` lines, quotes doubled.
    """
    settings = postgresql_settings(repo, host)
    settings["archive_timeout"] = "60"
    return "".join(
        f"{name} = '{value.replace(chr(39), chr(39) * 2)}'\n" for name, value in settings.items()
    )
