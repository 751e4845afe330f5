"""Recovery benchmark: the guide's backup script vs the best shell pipe vs our backup/restore flows.

Usage (from the project root)::

    .venv/bin/python -m bench.recovery_bench                 # ~800 MB reference database
    .venv/bin/python -m bench.recovery_bench --rows 20000    # a smoke run

It starts a throwaway PostgreSQL cluster, a moto S3 server and (unless ``--prefect-api-url``
is given) a Prefect server, seeds a reference database of poorly compressible rows, then
times each backup and restore variant in a subprocess of its own, sampling the RSS of that
subprocess's whole process tree. The guide's script runs ``--guide-repeat`` times (default
once: it is several times slower), the other variants ``--repeat`` times (default 3),
interleaved: round r runs them in an order rotated by r, so each variant takes each position
once. The flows' runs are also read back from the Prefect API, to split their wall time into
the pipeline's work and Prefect's overhead. See bench/README.md for the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
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

from bench.measure import Measured, measure, tree_cpu_seconds

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
    """One measured run: a line of the per-run table."""

    phase: str
    variant: str
    rep: int
    wall_s: float
    tree_peak_rss_mib: float
    max_rss_mib: float
    output_mib: float | None = None
    note: str = ""
    peaks_mib: dict[str, float] = field(default_factory=dict)
    load_before: float = 0.0  # 1-minute load average when the run started / ended
    load_after: float = 0.0
    prefect: dict[str, float] = field(default_factory=dict)  # flows only: see prefect_timings
    cpu_s: float = 0.0  # user + system CPU of the process tree
    cpu_by_name: dict[str, float] = field(default_factory=dict)
    server_cpu_s: dict[str, float] = field(default_factory=dict)  # postgres, moto meanwhile


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
    last_server_cpu: dict[str, float] = field(default_factory=dict)

    def measure(self, argv: list[str], env: dict[str, str]) -> Measured:
        """Measure ``argv``, and what PostgreSQL and moto spent meanwhile (in ``last_server_cpu``).

        The servers serve nobody else during a run (their own throwaway instances), so their
        CPU is part of the variant's cost: the dump's COPY, the content survey, the S3 parts.
        """
        servers = {"postgres": self.pg.pid, "moto": self.s3.pid}
        before = {name: tree_cpu_seconds(pid) for name, pid in servers.items()}
        run = measure(argv, env=env, cwd=self.workdir)
        self.last_server_cpu = {
            name: round(tree_cpu_seconds(pid) - before[name], 2) for name, pid in servers.items()
        }
        return run

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

BACKUP_VARIANTS = {
    "a": "(a) guide script",
    "b": "(b) shell pipe",
    "c": "(c) backup flow",
    "c0": "(c0) backup flow, no checksums",
}
RESTORE_VARIANTS = {"a": "(a) guide script", "b": "(b) shell pipe", "c": "(c) restore flow"}


def load_average() -> float:
    """The 1-minute load average, now."""
    return float(Path("/proc/loadavg").read_text().split()[0])


def _record(
    bench: Bench,
    phase: str,
    variant: str,
    rep: int,
    run: Measured,
    size: int | None,
    *,
    load_before: float,
    note: str = "",
    prefect: dict[str, float] | None = None,
) -> Row:
    if run.returncode != 0:
        raise RuntimeError(f"{phase} {variant} failed ({run.returncode}): {run.stderr[-3000:]}")
    row = Row(
        phase=phase,
        variant=variant,
        rep=rep,
        wall_s=round(run.wall_s, 2),
        tree_peak_rss_mib=round(run.tree_peak_rss / MiB, 1),
        max_rss_mib=round(run.max_rss / MiB, 1),
        output_mib=None if size is None else round(size / MiB, 1),
        note=note,
        peaks_mib={k: round(v / MiB, 1) for k, v in sorted(run.peaks.items())},
        load_before=load_before,
        load_after=load_average(),
        prefect=prefect or {},
        cpu_s=round(run.cpu_s, 2),
        cpu_by_name=run.cpu_by_name,
        server_cpu_s=dict(bench.last_server_cpu),
    )
    bench.results.append(row)
    _log(
        f"{phase} {variant} #{rep}: {run.wall_s:.1f} s, tree peak {run.tree_peak_rss / MiB:.0f}"
        f" MiB, CPU {row.cpu_s:.1f} s + servers {sum(row.server_cpu_s.values()):.1f} s,"
        f" load {row.load_before:.1f} -> {row.load_after:.1f}"
    )
    return row


def _object_size(bench: Bench, key: str) -> int:
    return int(bench.client().head_object(Bucket=bench.bucket, Key=key)["ContentLength"])


def _delete_prefix(bench: Bench, prefix: str) -> None:
    """Delete every object under ``prefix`` (moto keeps them in memory: keep only what is used)."""
    client = bench.client()
    listed = client.list_objects_v2(Bucket=bench.bucket, Prefix=prefix).get("Contents", [])
    for obj in listed:
        client.delete_object(Bucket=bench.bucket, Key=obj["Key"])


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
    run = bench.measure(argv, env=bench.shell_env(home))
    shutil.rmtree(scratch, ignore_errors=True)  # the guide keeps these 7 days: not timed
    return run


def _flow(bench: Bench, *args: str) -> tuple[Measured, dict[str, Any]]:
    """Run a flow in a child process; return the measurement and the child's JSON line."""
    argv = [sys.executable, "-m", "bench.recovery_bench", "run-flow", *args]
    run = bench.measure(argv, env=bench.prefect_env)
    lines = run.stdout.strip().splitlines()
    return run, (json.loads(lines[-1]) if run.returncode == 0 and lines else {})


def prefect_timings(bench: Bench, child: dict[str, Any], wall_s: float) -> dict[str, float]:
    """Where a flow process's wall time went, from the child's clock and the Prefect API.

    Returns seconds: ``start+imports`` (interpreter start to the flow module imported),
    ``flow call`` (the call, from creating the run to its return), ``exit`` (the rest of the
    wall time: the result line, then Prefect's exit hooks draining logs and events),
    ``flow_run`` (Running -> final state, as the server recorded it; the flow call minus
    this is the engine's own work before and after), and ``task:<name>`` per task run
    (summed over runs of the same task). The API's timestamps come from the client's
    clock: same machine.
    """
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from sandbox.procs import wait_until

    out: dict[str, float] = {
        "start+imports": child["imported_s"],
        "flow call": round(child["returned_s"] - child["imported_s"], 2),
        "exit": round(wall_s - child["returned_s"], 2),
    }
    run_id = UUID(child["flow_run_id"])
    of_the_run = FlowRunFilter(id=FlowRunFilterId(any_=[run_id]))
    tasks: list[Any] = []
    with (
        temporary_settings(updates={PREFECT_API_URL: bench.prefect_env["PREFECT_API_URL"]}),
        get_client(sync_client=True) as client,
    ):
        run = client.read_flow_run(run_id)

        def recorded() -> bool:  # the server records task runs in batches, up to 1 s late
            tasks[:] = client.read_task_runs(flow_run_filter=of_the_run)
            return bool(tasks) and all(t.state and t.state.is_final() for t in tasks)

        wait_until(recorded, timeout=30, interval=0.2, what="the flow run's task runs")
    if run.start_time and run.end_time:
        out["flow_run"] = round((run.end_time - run.start_time).total_seconds(), 2)
    for task in tasks:
        if task.start_time and task.end_time:
            name = "task:" + task.name.rsplit("-", 1)[0]  # "backup-attempt-0" -> the task
            seconds = (task.end_time - task.start_time).total_seconds()
            out[name] = round(out.get(name, 0.0) + seconds, 2)
    return out


def _flow_backup(bench: Bench, variant: str, rep: int) -> dict[str, Any]:
    what = "backup" if variant == "c" else "backup-nochecks"
    load = load_average()
    run, result = _flow(
        bench, what, bench.blocks["database"], bench.blocks["store"], bench.blocks["encryption"]
    )
    timings = prefect_timings(bench, result, run.wall_s) if result else {}
    if "run_backup_s" in result:
        timings["run_backup"] = result["run_backup_s"]
    note = f"{result['checksummed']}/{result['tables']} tables checksummed" if result else ""
    _record(
        bench, "backup", BACKUP_VARIANTS[variant], rep, run, result.get("size_bytes"),
        load_before=load, prefect=timings, note=note,
    )
    return result


def _rotated(keys: list[str], rep: int) -> list[str]:
    shift = (rep - 1) % len(keys)
    return keys[shift:] + keys[:shift]


def backups(bench: Bench, *, repeat: int, guide_repeat: int,
            variants: tuple[str, ...] = ("b", "c", "c0")) -> dict[str, str]:
    """Time the backup variants, interleaved; return the key (or backup id) restores use.

    One object per variant is kept for the restores (the first run's); the others are
    deleted after their run, outside the timing. ``variants``: which of (b), (c), (c0) run
    (the restores need no (c0) object).
    """
    keys: dict[str, str] = {}
    for rep in range(1, guide_repeat + 1):
        key = f"guide/{rep}/veza_db.dump.gpg"
        load = load_average()
        run = _shell(bench, GUIDE_BACKUP, bench.enc_home, key)
        _record(bench, "backup", BACKUP_VARIANTS["a"], rep, run, _object_size(bench, key),
                load_before=load)
        if "guide" in keys:
            _delete_prefix(bench, key)
        keys.setdefault("guide", key)
    for rep in range(1, repeat + 1):
        for variant in _rotated(list(variants), rep):
            if variant == "b":
                key = f"pipe/{rep}/veza_db.pgc.zst.gpg"
                load = load_average()
                run = _shell(bench, PIPE_BACKUP, bench.enc_home, key)
                _record(bench, "backup", BACKUP_VARIANTS["b"], rep, run,
                        _object_size(bench, key), load_before=load)
                if "pipe" in keys:
                    _delete_prefix(bench, key)
                keys.setdefault("pipe", key)
                continue
            result = _flow_backup(bench, variant, rep)
            if variant == "c" and "flow" not in keys:
                keys["flow"] = result["backup_id"]  # the one with checksums: restore checks them
            else:
                _delete_prefix(bench, result["data_key"].rsplit("/", 1)[0] + "/")
    return keys


def _checked(bench: Bench, run: Measured, target: str, reference: tuple[int, int, int]) -> str:
    ok = run.returncode == 0 and reference_digest(bench.pg, target) == reference
    with psycopg.connect(bench.pg.conninfo(), autocommit=True) as conn:  # not timed
        conn.execute(f'DROP DATABASE IF EXISTS "{target}"')
    return "data matches" if ok else "MISMATCH"


def restores(
    bench: Bench,
    keys: dict[str, str],
    reference: tuple[int, int, int],
    *,
    repeat: int,
    guide_repeat: int,
) -> None:
    """Time the restore variants, interleaved, each into a fresh database; check the data."""
    for rep in range(1, guide_repeat + 1):
        target, load = f"restore_a_{rep}", load_average()
        run = _shell(bench, GUIDE_RESTORE, bench.dec_home, keys["guide"], target)
        note = _checked(bench, run, target, reference)
        _record(bench, "restore", RESTORE_VARIANTS["a"], rep, run, None, load_before=load,
                note=note)
    for rep in range(1, repeat + 1):
        for variant in _rotated(["b", "c"], rep):
            target, load = f"restore_{variant}_{rep}", load_average()
            timings: dict[str, float] = {}
            if variant == "b":
                run = _shell(bench, PIPE_RESTORE, bench.dec_home, keys["pipe"], target)
            else:
                run, result = _flow(
                    bench, "restore", bench.blocks["database"], bench.blocks["store"],
                    bench.blocks["decryption"], keys["flow"], target,
                )
                if result:
                    timings = prefect_timings(bench, result, run.wall_s)
            note = _checked(bench, run, target, reference)
            _record(bench, "restore", RESTORE_VARIANTS[variant], rep, run, None,
                    load_before=load, note=note, prefect=timings)


# --- the flows, run in a child process -----------------------------------------------


def _counts_only() -> None:
    """Bench-only switch: the content survey counts rows but computes no checksum.

    Replaces ``tasks.recovery.content.table_checksums`` in this child process only, so the
    survey still runs on its second connection alongside the dump (row counts, sequences,
    large objects), minus the ``hashtextextended`` of every row: the cost issue #10 bounds.
    The manifest then records ``checksum: null`` (not recorded); these backups are deleted.
    """
    from psycopg import sql

    from tasks.recovery import content
    from tasks.recovery.manifest import TableCount

    def table_counts(
        conn: Any, tables: list[tuple[str, str]], on_table: Any = None
    ) -> list[TableCount]:
        counts = []
        for schema, table in tables:
            query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, table))
            row = conn.execute(query).fetchone()
            count = TableCount(schema_name=schema, table=table, rows=int(row[0]), checksum=None)
            counts.append(count)
            if on_table is not None:
                on_table(count)
        return counts

    content.table_checksums = table_counts


def _process_age() -> float:
    """Seconds since this process started (exec of the interpreter), from /proc."""
    stat = Path("/proc/self/stat").read_text()
    started = int(stat[stat.rfind(")") + 2 :].split()[19]) / os.sysconf("SC_CLK_TCK")
    return round(time.clock_gettime(time.CLOCK_BOOTTIME) - started, 2)


def run_flow(args: list[str]) -> int:
    """Child side: run our backup or restore flow and print a JSON line describing the result.

    Besides the result it reports the process's age when the flow module was imported
    (``imported_s``) and when the flow call returned (``returned_s``): the parent splits
    the wall time into start-up and imports, the flow call, and the exit.
    """
    what = args[0]
    if what in ("backup", "backup-nochecks"):
        from flows.backup import backup_flow

        imported = _process_age()
        if what == "backup-nochecks":
            _counts_only()
        database_block, store_block, encryption_block = args[1:4]
        state: Any = backup_flow(
            database_block=database_block,
            store_block=store_block,
            encryption_block=encryption_block,
            kind="full",
            return_state=True,
        )
        returned = _process_age()
        manifest = state.result()
        manifest = getattr(manifest, "manifest", manifest)
        print(json.dumps({
            "imported_s": imported,
            "returned_s": returned,
            "backup_id": manifest.backup_id,
            "data_key": manifest.data_key,
            "size_bytes": manifest.size_bytes,
            "flow_run_id": str(state.state_details.flow_run_id),
            "tables": len(manifest.tables),
            "checksummed": sum(t.checksum is not None for t in manifest.tables),
            # run_backup's own clock: snapshot to end of the globals upload (manifest excluded)
            "run_backup_s": round(
                (manifest.finished_at - manifest.started_at).total_seconds(), 2
            ),
        }))
        return 0
    if what == "restore":
        from flows.restore import restore_flow

        imported = _process_age()
        database_block, store_block, decryption_block, backup, target = args[1:6]
        state = restore_flow(
            database_block=database_block,
            store_block=store_block,
            decryption_block=decryption_block,
            backup_id=backup,
            target_database=target,
            return_state=True,
        )
        returned = _process_age()
        state.result()  # raises if the run failed
        print(json.dumps({"target": target, "flow_run_id": str(state.state_details.flow_run_id),
                          "imported_s": imported, "returned_s": returned}))
        return 0
    raise SystemExit(f"unknown flow {what!r}")


# --- report --------------------------------------------------------------------------


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def summarize(rows: list[Row]) -> list[dict[str, Any]]:
    """Per phase and variant: runs, wall min/median/max, peak RSS, Prefect timings' medians."""
    out = []
    seen: list[tuple[str, str]] = []
    for r in rows:
        if (r.phase, r.variant) not in seen:
            seen.append((r.phase, r.variant))
    for phase, variant in seen:
        runs = [r for r in rows if r.phase == phase and r.variant == variant]
        walls = [r.wall_s for r in runs]
        names = sorted({k for r in runs for k in r.prefect})
        out.append({
            "phase": phase,
            "variant": variant,
            "runs": len(runs),
            "wall_min_s": min(walls),
            "wall_median_s": round(_median(walls), 2),
            "wall_max_s": max(walls),
            "tree_peak_rss_mib": max(r.tree_peak_rss_mib for r in runs),
            "max_rss_mib": max(r.max_rss_mib for r in runs),
            "python_peak_rss_mib": max(r.peaks_mib.get("python", 0.0) for r in runs),
            "output_mib": runs[0].output_mib,
            "notes": sorted({r.note for r in runs if r.note}),
            "load": [min(r.load_before for r in runs), max(r.load_after for r in runs)],
            "cpu_median_s": round(_median([r.cpu_s for r in runs]), 2),
            "server_cpu_median_s": {
                k: round(_median([r.server_cpu_s.get(k, 0.0) for r in runs]), 2)
                for k in sorted({k for r in runs for k in r.server_cpu_s})
            },
            "cpu_by_name_median_s": {
                k: round(_median([r.cpu_by_name.get(k, 0.0) for r in runs]), 2)
                for k in sorted({k for r in runs for k in r.cpu_by_name})
            },
            "prefect_median_s": {
                k: round(_median([r.prefect[k] for r in runs if k in r.prefect]), 2)
                for k in names
            },
        })
    return out


def ratios(summary: list[dict[str, Any]]) -> dict[str, float]:
    """Ratios of median wall times within the run (``backup c/b`` = flow over pipe...)."""
    med = {(s["phase"], s["variant"].split()[0]): s["wall_median_s"] for s in summary}
    out: dict[str, float] = {}
    for phase, num, den in (
        ("backup", "(c)", "(b)"),
        ("backup", "(c)", "(a)"),
        ("backup", "(c0)", "(b)"),
        ("backup", "(c)", "(c0)"),  # the cost of the content checksums (issue #10: <= 1.3)
        ("restore", "(c)", "(b)"),
        ("restore", "(c)", "(a)"),
    ):
        if (phase, num) in med and (phase, den) in med and med[(phase, den)] > 0:
            out[f"{phase} {num}/{den}"] = round(med[(phase, num)] / med[(phase, den)], 3)
    # The flow's pipeline alone (its run_backup clock), without Prefect's and Python's fixed
    # start, engine and exit costs, against the whole pipe.
    pipeline = {s["variant"].split()[0]: s["prefect_median_s"].get("run_backup")
                for s in summary if s["phase"] == "backup"}
    if pipeline.get("(c)") and med.get(("backup", "(b)")):
        out["backup run_backup(c)/(b)"] = round(pipeline["(c)"] / med[("backup", "(b)")], 3)
    return out


def table(rows: list[Row]) -> str:
    """Every run as a markdown table, in the order they ran."""
    head = (
        "| phase | variant | run | wall (s) | peak RSS, process tree (MiB) "
        "| largest process RSS (MiB) | CPU: tree + servers (s) | output (MiB) | load (1 min) "
        "| note |"
    )
    lines = [head, "|---|---|---:|---:|---:|---:|---:|---:|---|---|"]
    for r in rows:
        out = "" if r.output_mib is None else f"{r.output_mib:.1f}"
        lines.append(
            f"| {r.phase} | {r.variant} | {r.rep} | {r.wall_s:.1f} | {r.tree_peak_rss_mib:.0f} | "
            f"{r.max_rss_mib:.0f} | {r.cpu_s:.1f} + {sum(r.server_cpu_s.values()):.1f} | {out} | "
            f"{r.load_before:.1f}-{r.load_after:.1f} | {r.note} |"
        )
    return "\n".join(lines)


def summary_table(summary: list[dict[str, Any]]) -> str:
    """Min/median/max wall per variant as a markdown table."""
    lines = [
        "| phase | variant | runs | wall min / median / max (s) | peak RSS tree / python (MiB) "
        "| CPU: tree + postgres + moto (s, median) | load (1 min) |",
        "|---|---|---:|---|---|---|---|",
    ]
    for s in summary:
        python = f"{s['python_peak_rss_mib']:.0f}" if s["python_peak_rss_mib"] else "-"
        servers = s["server_cpu_median_s"]
        cpu = (f"{s['cpu_median_s']:.1f} + {servers.get('postgres', 0):.1f}"
               f" + {servers.get('moto', 0):.1f}")
        lines.append(
            f"| {s['phase']} | {s['variant']} | {s['runs']} | {s['wall_min_s']:.1f} / "
            f"{s['wall_median_s']:.1f} / {s['wall_max_s']:.1f} | "
            f"{s['tree_peak_rss_mib']:.0f} / {python} | {cpu} | "
            f"{s['load'][0]:.1f}-{s['load'][1]:.1f} |"
        )
    return "\n".join(lines)


def overhead_lines(summary: list[dict[str, Any]]) -> list[str]:
    """Where a flow process's wall time goes (medians of each part, so sums are approximate)."""
    lines = []
    for s in summary:
        p = s["prefect_median_s"]
        if "flow_run" not in p:
            continue
        tasks = ", ".join(f"{k[5:]} {v:.1f}" for k, v in p.items() if k.startswith("task:"))
        line = (
            f"{s['phase']} {s['variant']}, medians (s): wall {s['wall_median_s']:.1f} ="
            f" start+imports {p.get('start+imports', 0):.1f} + flow call"
            f" {p.get('flow call', 0):.1f} + exit {p.get('exit', 0):.1f};"
            f" the flow call holds the flow run {p['flow_run']:.1f} (tasks: {tasks})"
        )
        if "run_backup" in p:
            line += (
                f"; run_backup (the pipeline itself) {p['run_backup']:.1f}, so Prefect and"
                f" Python add {s['wall_median_s'] - p['run_backup']:.1f}"
            )
        lines.append(line)
    return lines


def _commit() -> str:
    import subprocess

    def git(*args: str) -> str:
        proc = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True,
                              check=False)
        return proc.stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--", "flows", "tasks", "blocks", "errors", "bench")
    return head + (" (with uncommitted changes)" if dirty else "")


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["run-flow"]:
        return run_flow(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=1_500_000, help="rows of the tracks table")
    parser.add_argument("--random-bytes", type=int, default=448, help="random bytes per row")
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs of each variant but the guide's, interleaved (default 3)")
    parser.add_argument("--guide-repeat", type=int, default=1,
                        help="runs of the guide's script (default 1: it is much slower)")
    parser.add_argument("--phases", choices=("both", "backup", "restore"), default="both",
                        help="time the backups, the restores, or both (default); restores "
                             "need the backups' objects, which are then made untimed")
    parser.add_argument("--prefect-api-url", help="use this Prefect API instead of starting one")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    parser.add_argument("--workdir", type=Path, help="scratch directory (default: a temp dir)")
    opts = parser.parse_args(argv)
    if opts.rows < 1 or not 1 <= opts.random_bytes <= 1024:
        parser.error("--rows must be >= 1 and --random-bytes between 1 and 1024")
    if not 1 <= opts.repeat <= 20 or not 0 <= opts.guide_repeat <= 20:
        parser.error("--repeat must be between 1 and 20, --guide-repeat between 0 and 20")
    if opts.guide_repeat == 0 and opts.phases != "backup":
        parser.error("--guide-repeat 0 leaves the guide's restore nothing to restore: "
                     "add --phases backup")
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
    loads = {"start": Path("/proc/loadavg").read_text().split()[:3]}
    try:
        with environment(bench, opts.prefect_api_url):
            make_keys(bench)
            save_blocks(bench)
            seed(bench)
            reference = reference_digest(bench.pg, "veza_ref")
            loads["measured_from"] = Path("/proc/loadavg").read_text().split()[:3]
            if opts.phases == "restore":  # one untimed object per variant to restore
                keys = backups(bench, repeat=1, guide_repeat=1, variants=("b", "c"))
                bench.results.clear()
            else:
                keys = backups(bench, repeat=opts.repeat, guide_repeat=opts.guide_repeat)
            if opts.phases != "backup":
                restores(bench, keys, reference, repeat=opts.repeat,
                         guide_repeat=opts.guide_repeat)
            loads["end"] = Path("/proc/loadavg").read_text().split()[:3]
    finally:
        for home in (bench.enc_home, bench.dec_home):  # gpg started an agent in each
            subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"],
                           capture_output=True, check=False)
        if opts.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    summary = summarize(bench.results)
    report = {
        "rows": opts.rows,
        "random_bytes": opts.random_bytes,
        "repeat": opts.repeat,
        "guide_repeat": opts.guide_repeat,
        "database_mib": round(bench.db_bytes / MiB, 1),
        "cpus": os.cpu_count(),
        "commit": _commit(),
        "load_average_1_5_15": loads,
        "load_1min_range": [
            min(r.load_before for r in bench.results), max(
                max(r.load_before, r.load_after) for r in bench.results),
        ],
        "total_s": round(time.monotonic() - started, 1),
        "results": [asdict(r) for r in bench.results],
        "summary": summary,
        "ratios": ratios(summary),
        "overhead": overhead_lines(summary),
    }
    print(f"reference database: {report['database_mib']} MiB ({opts.rows} rows); "
          f"commit {report['commit']}; load average (1 min) during the runs "
          f"{report['load_1min_range'][0]:.1f}-{report['load_1min_range'][1]:.1f}")
    print(table(bench.results))
    print()
    print(summary_table(summary))
    print()
    for name, value in report["ratios"].items():
        print(f"median wall {name} = {value:.2f}")
    for line in report["overhead"]:
        print(line)
    for s in summary:
        runs = [r for r in bench.results if (r.phase, r.variant) == (s["phase"], s["variant"])]
        peaks: dict[str, float] = {}
        for r in runs:
            for k, v in r.peaks_mib.items():
                peaks[k] = max(peaks.get(k, 0.0), v)
        listed = ", ".join(f"{k} {v:.0f}" for k, v in sorted(peaks.items(), key=lambda kv: -kv[1]))
        print(f"sampled peak RSS (MiB) {s['phase']} {s['variant']}: {listed}")
        cpu = ", ".join(f"{k} {v:.1f}" for k, v in sorted(
            {**s["cpu_by_name_median_s"], **s["server_cpu_median_s"]}.items(),
            key=lambda kv: -kv[1]) if v >= 0.05)
        print(f"CPU (s, medians) {s['phase']} {s['variant']}: {cpu}")
    if opts.json:
        opts.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
