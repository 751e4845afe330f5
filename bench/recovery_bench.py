"""Recovery benchmark: the guide's backup script vs the best shell pipe vs our backup/restore flows.

Usage (from the project root)::

    .venv/bin/python -m bench.recovery_bench                 # ~800 MB reference database
    .venv/bin/python -m bench.recovery_bench --rows 20000    # a smoke run

It starts a throwaway PostgreSQL cluster, a moto S3 server and (unless ``--prefect-api-url``
is given) a Prefect server, seeds a reference database of poorly compressible rows, then
times each backup and restore variant in a subprocess of its own, sampling the RSS of that
subprocess's whole process tree. See bench/README.md for the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import boto3
import psycopg

from bench.measure import Measured, measure

ROOT = Path(__file__).resolve().parent.parent
MiB = 1024 * 1024

# The shell variants. Values come in as positional parameters ("$1"...), never interpolated.
GUIDE_BACKUP = """set -euo pipefail
pg_dump -Fc -f "$1/veza_db.dump"
gpg --batch --trust-model always --encrypt --recipient "$2" "$1/veza_db.dump"
aws --endpoint-url "$3" s3 cp --only-show-errors "$1/veza_db.dump.gpg" "s3://$4/$5"
"""
PIPE_BACKUP = """set -euo pipefail
pg_dump -Fc -Z0 | zstd -T0 -3 -q -c \\
  | gpg --batch --trust-model always --compress-algo none --encrypt --recipient "$2" \\
  | aws --endpoint-url "$3" s3 cp --only-show-errors - "s3://$4/$5"
"""
GUIDE_RESTORE = """set -euo pipefail
createdb "$6"
aws --endpoint-url "$3" s3 cp --only-show-errors "s3://$4/$5" "$1/restore.dump.gpg"
gpg --batch --decrypt --output "$1/restore.dump" "$1/restore.dump.gpg"
pg_restore --no-owner -d "$6" "$1/restore.dump"
"""
PIPE_RESTORE = """set -euo pipefail
createdb "$6"
aws --endpoint-url "$3" s3 cp --only-show-errors "s3://$4/$5" - \\
  | gpg --batch --quiet --decrypt | zstd -d -q -c | pg_restore --no-owner -d "$6"
"""


@dataclass
class Row:
    """One line of the result table."""

    phase: str
    variant: str
    wall_s: float
    tree_peak_rss_mib: float
    max_rss_mib: float
    output_mib: float | None = None
    note: str = ""
    peaks_mib: dict[str, float] = field(default_factory=dict)


@dataclass
class Bench:
    """Everything the variants need: servers, keys, names, environments."""

    workdir: Path
    rows: int
    random_bytes: int
    pg: Any = None
    s3: Any = None
    bucket: str = ""
    fingerprint: str = ""
    enc_home: Path = Path()
    dec_home: Path = Path()
    prefect_env: dict[str, str] = field(default_factory=dict)
    blocks: dict[str, str] = field(default_factory=dict)
    results: list[Row] = field(default_factory=list)
    db_bytes: int = 0

    def shell_env(self, gnupghome: Path) -> dict[str, str]:
        """Environment of a shell variant: libpq, AWS CLI and GNUPGHOME, secrets only here."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "AWS_"))}
        bindir = Path(_pg_bindir())
        env.update(
            PATH=f"{bindir}:{env.get('PATH', '')}",
            PGHOST=self.pg.host,
            PGPORT=str(self.pg.port),
            PGUSER=self.pg.user,
            PGPASSWORD=self.pg.password,
            PGDATABASE="veza_ref",
            AWS_ACCESS_KEY_ID=self.s3.access_key,
            AWS_SECRET_ACCESS_KEY=self.s3.secret_key,
            AWS_DEFAULT_REGION=self.s3.region,
            GNUPGHOME=str(gnupghome),
        )
        return env

    def client(self) -> Any:
        """A boto3 client on the moto server."""
        return boto3.client(
            "s3",
            endpoint_url=self.s3.endpoint_url,
            region_name=self.s3.region,
            aws_access_key_id=self.s3.access_key,
            aws_secret_access_key=self.s3.secret_key,
        )


def _pg_bindir() -> str:
    from sandbox.launchers.postgres import pg_bindir

    return str(pg_bindir())


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- setup ---------------------------------------------------------------------------


def seed(bench: Bench, *, batch: int = 100_000) -> None:
    """Create ``veza_ref``: rows of md5 text plus random bytes (poorly compressible)."""
    with psycopg.connect(bench.pg.conninfo(), autocommit=True) as conn:
        conn.execute("CREATE DATABASE veza_ref")
    with psycopg.connect(bench.pg.conninfo("veza_ref"), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pgcrypto")
        conn.execute(
            "CREATE TABLE tracks "
            "(id bigint PRIMARY KEY, title text NOT NULL, payload bytea NOT NULL)"
        )
        conn.execute(
            "CREATE TABLE plays (id bigserial PRIMARY KEY, track_id bigint, at timestamptz)"
        )
        done = 0
        while done < bench.rows:
            n = min(batch, bench.rows - done)
            conn.execute(
                "INSERT INTO tracks SELECT g, md5(g::text), gen_random_bytes(%s) "
                "FROM generate_series(%s::bigint, %s::bigint) AS g",
                (bench.random_bytes, done + 1, done + n),
            )
            done += n
            _log(f"seeded {done}/{bench.rows} rows")
        conn.execute(
            "INSERT INTO plays (track_id, at) SELECT (g %% %s) + 1, now() - g * interval '1 s' "
            "FROM generate_series(1, %s) AS g",
            (bench.rows, max(bench.rows // 10, 1)),
        )
        conn.execute("VACUUM ANALYZE")
        row = conn.execute("SELECT pg_database_size('veza_ref')").fetchone()
        bench.db_bytes = int(row[0]) if row else 0
    _log(f"reference database: {bench.db_bytes / MiB:.0f} MiB")


def reference_digest(pg: Any, dbname: str) -> tuple[int, int, int]:
    """A cheap fingerprint of the data: (tracks rows, total payload bytes, plays rows)."""
    with psycopg.connect(pg.conninfo(dbname)) as conn:
        row = conn.execute(
            "SELECT count(*), coalesce(sum(length(payload)), 0), "
            "(SELECT count(*) FROM plays) FROM tracks"
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


def make_keys(bench: Bench) -> None:
    """One key pair: public key in the encryption home, private key in the decryption home."""
    from sandbox.launchers.gpg import generate_key

    key = generate_key("veza-bench")
    bench.fingerprint = key.fingerprint
    for home, armored in (
        (bench.enc_home, key.public_armored),
        (bench.dec_home, key.private_armored),
    ):
        home.mkdir(mode=0o700)
        _run(["gpg", "--batch", "--homedir", str(home), "--import"], stdin=armored)
    bench.blocks["_public"] = key.public_armored
    bench.blocks["_private"] = key.private_armored


def _run(argv: list[str], *, stdin: str = "", env: dict[str, str] | None = None) -> str:
    import subprocess

    proc = subprocess.run(argv, input=stdin.encode(), capture_output=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed: {proc.stderr.decode(errors='replace')[-2000:]}")
    return proc.stdout.decode()


def save_blocks(bench: Bench) -> None:
    """Register the database, store, encryption and decryption blocks on the Prefect API."""
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect_aws import AwsCredentials
    from pydantic import SecretStr

    from blocks.gpg import GpgDecryptionKey, GpgEncryption
    from blocks.postgres import PostgresDatabase
    from blocks.s3 import S3BackupStore

    suffix = uuid.uuid4().hex[:8]
    names = {
        "database": f"bench-db-{suffix}",
        "store": f"bench-store-{suffix}",
        "encryption": f"bench-enc-{suffix}",
        "decryption": f"bench-dec-{suffix}",
    }
    with temporary_settings(updates={PREFECT_API_URL: bench.prefect_env["PREFECT_API_URL"]}):
        PostgresDatabase(
            host=bench.pg.host,
            port=bench.pg.port,
            user=bench.pg.user,
            password=bench.pg.password,
            dbname="veza_ref",
            sslmode="disable",
        ).save(names["database"])
        from veza_ops.automations import ensure_backup_limit

        ensure_backup_limit("veza_ref")  # every backup takes its database's limit, strictly
        S3BackupStore(
            bucket=bench.bucket,
            prefix="flow",
            endpoint_url=bench.s3.endpoint_url,
            region=bench.s3.region,
            credentials=AwsCredentials(
                aws_access_key_id=bench.s3.access_key,
                aws_secret_access_key=bench.s3.secret_key,
                region_name=bench.s3.region,
            ),
        ).save(names["store"])
        GpgEncryption(recipients=[bench.blocks["_public"]]).save(names["encryption"])
        GpgDecryptionKey(private_key=SecretStr(bench.blocks["_private"])).save(names["decryption"])
    bench.blocks.update(names)


@contextmanager
def environment(bench: Bench, prefect_api_url: str | None) -> Iterator[Bench]:
    """Start PostgreSQL, moto and (if needed) a Prefect server; stop them afterwards."""
    from sandbox.launchers.postgres import start_postgres
    from sandbox.launchers.s3 import start_s3

    with ExitStack() as stack:
        _log("starting PostgreSQL and moto")
        bench.pg = start_postgres()
        stack.callback(bench.pg.stop)
        bench.s3 = start_s3(bench.workdir)
        stack.callback(bench.s3.stop)
        bench.bucket = f"bench-{uuid.uuid4().hex[:10]}"
        bench.client().create_bucket(Bucket=bench.bucket)
        if prefect_api_url:
            env = dict(os.environ)
            env["PREFECT_API_URL"] = prefect_api_url
        else:
            from sandbox.launchers.prefect_server import start_prefect_server

            _log("starting a Prefect server")
            server = start_prefect_server(bench.workdir / "prefect", ui=False, timeout=600)
            stack.callback(server.stop)
            env = server.client_env()
        env["PYTHONPATH"] = str(ROOT)
        bench.prefect_env = env
        yield bench


# --- variants ------------------------------------------------------------------------


def _record(
    bench: Bench, phase: str, variant: str, run: Measured, size: int | None, note: str = ""
) -> None:
    if run.returncode != 0:
        raise RuntimeError(f"{phase} {variant} failed ({run.returncode}): {run.stderr[-3000:]}")
    bench.results.append(
        Row(
            phase=phase,
            variant=variant,
            wall_s=round(run.wall_s, 2),
            tree_peak_rss_mib=round(run.tree_peak_rss / MiB, 1),
            max_rss_mib=round(run.max_rss / MiB, 1),
            output_mib=None if size is None else round(size / MiB, 1),
            note=note,
            peaks_mib={k: round(v / MiB, 1) for k, v in sorted(run.peaks.items())},
        )
    )
    _log(f"{phase} {variant}: {run.wall_s:.1f} s, tree peak {run.tree_peak_rss / MiB:.0f} MiB")


def _object_size(bench: Bench, key: str) -> int:
    return int(bench.client().head_object(Bucket=bench.bucket, Key=key)["ContentLength"])


def _shell(bench: Bench, script: str, home: Path, key: str, target: str = "") -> Measured:
    scratch = bench.workdir / "scratch"
    scratch.mkdir(exist_ok=True)
    argv = [
        "bash",
        "-c",
        script,
        "bench",
        str(scratch),
        bench.fingerprint,
        bench.s3.endpoint_url,
        bench.bucket,
        key,
        target,
    ]
    run = measure(argv, env=bench.shell_env(home), cwd=bench.workdir)
    shutil.rmtree(scratch, ignore_errors=True)  # the guide keeps these 7 days: not timed
    return run


def _flow(bench: Bench, *args: str) -> Measured:
    argv = [sys.executable, "-m", "bench.recovery_bench", "run-flow", *args]
    return measure(argv, env=bench.prefect_env, cwd=bench.workdir)


def backups(bench: Bench) -> dict[str, str]:
    """Time the three backup variants; return the key (or backup id) each produced."""
    keys = {"guide": "guide/veza_db.dump.gpg", "pipe": "pipe/veza_db.pgc.zst.gpg"}
    run = _shell(bench, GUIDE_BACKUP, bench.enc_home, keys["guide"])
    _record(bench, "backup", "(a) guide script", run, _object_size(bench, keys["guide"]))
    run = _shell(bench, PIPE_BACKUP, bench.enc_home, keys["pipe"])
    _record(bench, "backup", "(b) shell pipe", run, _object_size(bench, keys["pipe"]))
    run = _flow(
        bench, "backup", bench.blocks["database"], bench.blocks["store"], bench.blocks["encryption"]
    )
    result = json.loads(run.stdout.strip().splitlines()[-1]) if run.returncode == 0 else {}
    _record(bench, "backup", "(c) backup flow", run, result.get("size_bytes"))
    keys["flow"] = result.get("backup_id", "")
    return keys


def restores(bench: Bench, keys: dict[str, str], reference: tuple[int, int, int]) -> None:
    """Time the three restore variants, each into a fresh database, and check the data."""
    for variant, script, key in (
        ("(a) guide script", GUIDE_RESTORE, keys["guide"]),
        ("(b) shell pipe", PIPE_RESTORE, keys["pipe"]),
    ):
        target = f"restore_{variant[1]}"
        run = _shell(bench, script, bench.dec_home, key, target)
        ok = run.returncode == 0 and reference_digest(bench.pg, target) == reference
        _record(bench, "restore", variant, run, None, "data matches" if ok else "MISMATCH")
    target = "restore_c"
    run = _flow(
        bench,
        "restore",
        bench.blocks["database"],
        bench.blocks["store"],
        bench.blocks["decryption"],
        keys["flow"],
        target,
    )
    ok = run.returncode == 0 and reference_digest(bench.pg, target) == reference
    _record(bench, "restore", "(c) restore flow", run, None, "data matches" if ok else "MISMATCH")


# --- the flows, run in a child process -----------------------------------------------


def run_flow(args: list[str]) -> int:
    """Child side: run our backup or restore flow and print a JSON line describing the result."""
    what = args[0]
    if what == "backup":
        from flows.backup import backup_flow

        database_block, store_block, encryption_block = args[1:4]
        result: Any = backup_flow(
            database_block=database_block,
            store_block=store_block,
            encryption_block=encryption_block,
            kind="full",
        )
        manifest = getattr(result, "manifest", result)
        print(json.dumps({"backup_id": manifest.backup_id, "size_bytes": manifest.size_bytes}))
        return 0
    if what == "restore":
        from flows.restore import restore_flow

        database_block, store_block, decryption_block, backup, target = args[1:6]
        restore_flow(
            database_block=database_block,
            store_block=store_block,
            decryption_block=decryption_block,
            backup_id=backup,
            target_database=target,
        )
        print(json.dumps({"target": target}))
        return 0
    raise SystemExit(f"unknown flow {what!r}")


# --- report --------------------------------------------------------------------------


def ratios(rows: list[Row]) -> list[str]:
    """Lines comparing (c) with (b) and (a), per phase."""
    lines = []
    for phase in ("backup", "restore"):
        by = {r.variant[:3]: r for r in rows if r.phase == phase}
        if not {"(a)", "(b)", "(c)"} <= set(by):
            continue
        c, b, a = by["(c)"], by["(b)"], by["(a)"]
        lines.append(
            f"{phase}: wall (c)/(b) = {c.wall_s / b.wall_s:.2f},"
            f" (c)/(a) = {c.wall_s / a.wall_s:.2f};"
            f" tree peak RSS (c)/(b) = {c.tree_peak_rss_mib / b.tree_peak_rss_mib:.2f},"
            f" (c)/(a) = {c.tree_peak_rss_mib / a.tree_peak_rss_mib:.2f}"
        )
    return lines


def table(rows: list[Row]) -> str:
    """The results as a markdown table."""
    head = (
        "| phase | variant | wall (s) | peak RSS, process tree (MiB) "
        "| largest process RSS (MiB) | output (MiB) | note |"
    )
    lines = [head, "|---|---|---:|---:|---:|---:|---|"]
    for r in rows:
        out = "" if r.output_mib is None else f"{r.output_mib:.1f}"
        lines.append(
            f"| {r.phase} | {r.variant} | {r.wall_s:.1f} | {r.tree_peak_rss_mib:.0f} | "
            f"{r.max_rss_mib:.0f} | {out} | {r.note} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["run-flow"]:
        return run_flow(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=1_500_000, help="rows of the tracks table")
    parser.add_argument("--random-bytes", type=int, default=448, help="random bytes per row")
    parser.add_argument("--prefect-api-url", help="use this Prefect API instead of starting one")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    parser.add_argument("--workdir", type=Path, help="scratch directory (default: a temp dir)")
    opts = parser.parse_args(argv)
    if opts.rows < 1 or not 1 <= opts.random_bytes <= 1024:
        parser.error("--rows must be >= 1 and --random-bytes between 1 and 1024")
    for tool in ("aws", "gpg", "zstd", "bash"):
        if shutil.which(tool) is None:
            parser.error(f"{tool} is not installed")

    workdir = opts.workdir or Path(tempfile.mkdtemp(prefix="veza-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    os.chmod(workdir, 0o755)  # the postgres system user reads nothing here, but the scratch is ours
    bench = Bench(
        workdir=workdir,
        rows=opts.rows,
        random_bytes=opts.random_bytes,
        enc_home=workdir / "gnupg-enc",
        dec_home=workdir / "gnupg-dec",
    )
    started = time.monotonic()
    try:
        with environment(bench, opts.prefect_api_url):
            make_keys(bench)
            save_blocks(bench)
            seed(bench)
            reference = reference_digest(bench.pg, "veza_ref")
            keys = backups(bench)
            restores(bench, keys, reference)
    finally:
        if opts.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    summary = {
        "rows": opts.rows,
        "random_bytes": opts.random_bytes,
        "database_mib": round(bench.db_bytes / MiB, 1),
        "cpus": os.cpu_count(),
        "total_s": round(time.monotonic() - started, 1),
        "results": [asdict(r) for r in bench.results],
        "ratios": ratios(bench.results),
    }
    print(f"reference database: {summary['database_mib']} MiB ({opts.rows} rows)")
    print(table(bench.results))
    for line in summary["ratios"]:
        print(line)
    for r in bench.results:
        peaks = ", ".join(f"{k} {v:.0f}" for k, v in r.peaks_mib.items())
        print(f"sampled peak RSS (MiB) {r.phase} {r.variant}: {peaks}")
    if opts.json:
        opts.json.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
