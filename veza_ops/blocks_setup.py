"""Register the Prefect blocks veza-ops's deployments name (demo, tests, `veza-ops blocks`)."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from blocks.gpg import GpgDecryptionKey, GpgEncryption
    from blocks.pgbackrest import PgBackRestRepository
    from blocks.postgres import PostgresDatabase
    from blocks.s3 import S3BackupStore

SANDBOX_BLOCK_NAME = "veza-sandbox"
PITR_BLOCK_NAME = "veza-pitr"  # the PgBackRestRepository block prefect.yaml's pitr deployments use


@dataclass(frozen=True)
class RecoveryBlockNames:
    """Names of the four recovery blocks; the defaults are the ones prefect.yaml uses."""

    database_block: str = "veza-db"
    store_block: str = "veza-backups"
    encryption_block: str = "veza-backup-encryption"
    decryption_block: str = "veza-backup-decryption"

    def as_params(self) -> dict[str, str]:
        """The names as flow parameters.

        Returns:
            Parameter name to block name.
        """
        return {
            "database_block": self.database_block,
            "store_block": self.store_block,
            "encryption_block": self.encryption_block,
            "decryption_block": self.decryption_block,
        }


def register_recovery_blocks(
    *,
    database: PostgresDatabase,
    store: S3BackupStore,
    encryption: GpgEncryption,
    decryption: GpgDecryptionKey,
    names: RecoveryBlockNames | None = None,
) -> RecoveryBlockNames:
    """Save the backup/restore blocks on the Prefect server PREFECT_API_URL points at.

    Existing blocks of the same names are overwritten, so this is safe to run again. The
    global concurrency limit the backups of ``database`` take (``veza-ops-backup-<dbname>``)
    is created too: without it every backup fails.

    Args:
        database: the database to back up (and the server restores go to).
        store: where backups are kept.
        encryption: public keys backups are encrypted to.
        decryption: the private key restores decrypt with.
        names: block names (default: the names prefect.yaml uses).

    Returns:
        The names the blocks were saved under.
    """
    from veza_ops.automations import ensure_backup_limit

    names = names or RecoveryBlockNames()
    database.save(names.database_block, overwrite=True)
    ensure_backup_limit(database.dbname)
    store.save(names.store_block, overwrite=True)
    encryption.save(names.encryption_block, overwrite=True)
    decryption.save(names.decryption_block, overwrite=True)
    return names


def register_pitr_block(repo: PgBackRestRepository, *, name: str = PITR_BLOCK_NAME) -> str:
    """Save the PgBackRestRepository block (overwriting one of the same name).

    Args:
        repo: the repository (its cipher passphrase is fixed at the stanza's creation: never
            overwrite a block in use with another passphrase).
        name: the block name (default: the one prefect.yaml uses).

    Returns:
        The name.
    """
    repo.save(name, overwrite=True)
    return name


def sandbox_pitr_block(
    *, s3: Any, front: Any, bucket: str, passphrase: str, path: str = "/pgbackrest"
) -> PgBackRestRepository:
    """Build (not save) a PgBackRestRepository on the sandbox's S3 through its TLS front.

    Args:
        s3: a :class:`sandbox.launchers.s3.S3Server`.
        front: a :class:`sandbox.launchers.s3_tls.S3TlsFront` in front of it.
        bucket: the (existing) bucket.
        passphrase: the cipher passphrase (16+ characters).
        path: the repository path in the bucket.

    Returns:
        The block (endpoint ``localhost``: pgBackRest 2.45 matches certificates by name).
    """
    from prefect_aws import AwsCredentials
    from pydantic import SecretStr

    from blocks.pgbackrest import PgBackRestRepository

    return PgBackRestRepository(
        bucket=bucket, path=path, region=s3.region, endpoint="localhost",
        port=int(front.url.rsplit(":", 1)[1]), ca_file=str(front.ca_file), uri_style="path",
        credentials=AwsCredentials(aws_access_key_id=s3.access_key,
                                   aws_secret_access_key=SecretStr(s3.secret_key),
                                   region_name=s3.region),
        cipher_passphrase=SecretStr(passphrase),
    )


def register_release_blocks(sandbox: Any, *, name: str = SANDBOX_BLOCK_NAME) -> str:
    """Save the Kubernetes, Prometheus and Vault blocks of a running sandbox under one name.

    Args:
        sandbox: a :class:`sandbox.stack.Sandbox` (kubeconfig, Prometheus URL, Vault address
            and token).
        name: the common block name (the catalogue's ``*_block`` fields name it).

    Returns:
        The name.
    """
    from pydantic import SecretStr

    from blocks.kubernetes import KubernetesCluster
    from blocks.prometheus import PrometheusServer
    from blocks.vault import VaultServer

    KubernetesCluster(kubeconfig_path=str(sandbox.kubeconfig), context="sandbox").save(
        name, overwrite=True
    )
    PrometheusServer(url=sandbox.prometheus_url).save(name, overwrite=True)
    VaultServer(address=sandbox.vault_addr, token=SecretStr(sandbox.vault_token)).save(
        name, overwrite=True
    )
    return name


def sandbox_recovery_blocks(
    *,
    pg: Any,
    dbname: str,
    s3: Any,
    bucket: str,
    key: Any,
    prefix: str = "postgres",
) -> dict[str, Any]:
    """Build (not save) the recovery blocks for local stand-ins of PostgreSQL, S3 and gpg.

    Args:
        pg: a :class:`sandbox.launchers.postgres.PgServer`.
        dbname: the database to back up.
        s3: a :class:`sandbox.launchers.s3.S3Server`.
        bucket: the (existing) bucket.
        key: a :class:`sandbox.launchers.gpg.TestKey`.
        prefix: key prefix of the backups in the bucket.

    Returns:
        Keyword arguments for :func:`register_recovery_blocks`.
    """
    from prefect_aws import AwsCredentials
    from pydantic import SecretStr

    from blocks.gpg import GpgDecryptionKey, GpgEncryption
    from blocks.postgres import PostgresDatabase
    from blocks.s3 import S3BackupStore

    return {
        "database": PostgresDatabase(
            host=pg.host, port=pg.port, user=pg.user, password=SecretStr(pg.password),
            dbname=dbname, sslmode="disable",
        ),
        "store": S3BackupStore(
            bucket=bucket,
            prefix=prefix,
            region=s3.region,
            endpoint_url=s3.endpoint_url,
            credentials=AwsCredentials(
                aws_access_key_id=s3.access_key,
                aws_secret_access_key=SecretStr(s3.secret_key),
                region_name=s3.region,
            ),
            part_size_mib=5,
        ),
        "encryption": GpgEncryption(recipients=[key.public_armored]),
        "decryption": GpgDecryptionKey(
            private_key=SecretStr(key.private_armored),
            passphrase=SecretStr(key.passphrase) if key.passphrase else None,
        ),
    }


def add_blocks_command(subparsers: Any) -> None:
    """Register ``veza-ops blocks register-sandbox`` on an argparse subparsers object.

    Args:
        subparsers: the object returned by ``add_subparsers``.
    """
    p = subparsers.add_parser("blocks", help="register the Prefect blocks veza-ops uses")
    sub = p.add_subparsers(dest="blocks_command", required=True)
    reg = sub.add_parser(
        "register-sandbox",
        help=f"save the {SANDBOX_BLOCK_NAME!r} Kubernetes/Prometheus/Vault blocks of a running "
        "sandbox on the server PREFECT_API_URL points at",
    )
    reg.add_argument("--dir", type=Path, default=None, help="the sandbox directory")
    reg.add_argument("--name", default=SANDBOX_BLOCK_NAME, help="block name")


def run_blocks_command(args: argparse.Namespace) -> int:
    """Execute ``veza-ops blocks ...`` from parsed arguments.

    Args:
        args: parsed arguments.

    Returns:
        The process exit code.
    """
    from sandbox.procs import SandboxError
    from sandbox.stack import DEFAULT_DIR, load

    directory = args.dir or Path(os.environ.get("VEZA_SANDBOX_DIR") or DEFAULT_DIR)
    try:
        sandbox = load(directory)
    except SandboxError as error:
        print(f"veza-ops blocks: {error}", file=sys.stderr)
        return 2
    name = register_release_blocks(sandbox, name=args.name)
    print(f"saved KubernetesCluster, PrometheusServer and VaultServer blocks named {name!r}")
    return 0
