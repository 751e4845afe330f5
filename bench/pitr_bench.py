"""PITR benchmark (#12): RPO under a steady write load, an incremental vs a full logical dump, and
a PITR restore vs the logical restore of the same database.

Usage (from the project root)::

    .venv/bin/python -m bench.pitr_bench                                  # ~800 MB reference
    .venv/bin/python -m bench.pitr_bench --rows 100000 --repeat 1 --rpo-minutes 3   # quick

One PostgreSQL 15 cluster archives WAL through pgBackRest into moto (behind the sandbox's TLS
front), set up like the demo's (:func:`veza_ops.demo_pitr.prepare_archiving`), with
``archive_timeout`` 60 s. The reference database is seeded as ``bench/recovery_bench.py`` does
(``tracks``: md5 text + random bytes, poorly compressible; ``plays``). A thread commits one
small insert every ``--write-interval`` seconds throughout. Measured, in this order:

1. **RPO**: every ``--sample-every`` seconds for ``--rpo-minutes``, the age of the newest WAL
   segment object in the repository (what pitr-check and ``backups info`` call the RPO).
2. **Incremental vs full logical dump**, ``--repeat`` rounds: 1 % of ``tracks`` rows get new
   payloads (ids spread over the table), then, in an order rotated by the round, a pgBackRest
   ``incr`` and the best logical pipe of the recovery bench (``pg_dump -Fc -Z0 | zstd | gpg |
   aws s3 cp``).
3. **Restore**, ``--repeat`` rounds, rotated: PITR (``restore --type=time`` to a time after the
   last change, start, replay, promotion: :func:`restore_and_start`) vs the logical restore of
   the newest dump (``aws s3 cp | gpg -d | zstd -d | pg_restore`` into a new database); both
   are checked against the source's ``tracks`` (rows, payload bytes).

Ratios are of medians in the same run. See bench/README.md for the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from bench.recovery_bench import (
    PIPE_BACKUP,
    PIPE_RESTORE,
    Bench,
    _log,
    _rotated,
    _shell,
    load_average,
    make_keys,
    seed,
)

MiB = 1024 * 1024
ARCHIVE_TIMEOUT_S = 60
GOALS = {"rpo_max_s": 60.0, "incr_over_logical_dump": 0.1}


def _stats(values: list[float]) -> dict[str, float]:
    return {"min": round(min(values), 2), "median": round(statistics.median(values), 2),
            "max": round(max(values), 2), "n": len(values)}


@contextmanager
def archiving_cluster(bench: Bench, archive_timeout_s: int) -> Iterator[tuple[Any, Any]]:
    """moto, its TLS front, a bucket and a PG15 cluster archiving into it; stopped on exit.

    Yields:
        (the repository block, the DatabaseHost).
    """
    from sandbox.launchers.postgres import start_postgres
    from sandbox.launchers.s3 import start_s3
    from sandbox.launchers.s3_tls import start_s3_tls
    from sandbox.procs import free_port
    from veza_ops.blocks_setup import sandbox_pitr_block
    from veza_ops.demo_pitr import prepare_archiving

    with ExitStack() as stack:
        bench.s3 = start_s3(bench.workdir)
        stack.callback(bench.s3.stop)
        front = start_s3_tls(bench.s3.endpoint_url)
        stack.callback(front.stop)
        bench.bucket = f"bench-pitr-{uuid.uuid4().hex[:8]}"
        bench.client().create_bucket(Bucket=bench.bucket)
        repo = sandbox_pitr_block(s3=bench.s3, front=front, bucket=bench.bucket,
                                  passphrase=secrets.token_urlsafe(24))
        setup = prepare_archiving(repo, port=free_port(), archive_timeout_s=archive_timeout_s)
        bench.pg = start_postgres(user=setup.superuser, port=setup.host.port, root=setup.root,
                                  local_auth="peer", settings=setup.settings)
        stack.callback(bench.pg.stop)
        yield setup.repo, setup.host


class WriteLoad(threading.Thread):
    """One small committed insert into ``plays`` every ``interval`` seconds (its own connection)."""

    def __init__(self, conninfo: str, interval: float) -> None:
        super().__init__(daemon=True)
        self.conninfo, self.interval = conninfo, interval
        self.done = threading.Event()
        self.commits = 0

    def run(self) -> None:
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            while not self.done.wait(self.interval):  # pacing of a load generator
                conn.execute("INSERT INTO plays (track_id, at) VALUES (1, now())")
                self.commits += 1


def sample_rpo(repo: Any, host: Any, *, minutes: float, every_s: float) -> list[float]:
    """The age of the newest archived WAL object, sampled."""
    from tasks.recovery.pitr import commands
    from tasks.recovery.pitr.archive import list_segments

    archive_ids = [a.id for a in commands.info(repo, host).archives]
    samples: list[float] = []
    end = time.monotonic() + minutes * 60
    while time.monotonic() < end:
        segments = list_segments(repo, archive_ids)
        newest = max(s.archived_at for s in segments)
        samples.append((datetime.now(UTC) - newest).total_seconds())
        _log(f"RPO sample {len(samples)}: {samples[-1]:.1f} s ({len(segments)} segments)")
        time.sleep(every_s)
    return samples


def change_one_percent(bench: Bench, round_: int) -> int:
    """New random payloads (same length) for 1 % of ``tracks``, spread over the table."""
    with psycopg.connect(bench.pg.conninfo("veza_ref"), autocommit=True) as conn:
        cur = conn.execute("UPDATE tracks SET payload = gen_random_bytes(length(payload)) "
                           "WHERE id %% 100 = %s", (round_ % 100,))
        return cur.rowcount


def tracks_digest(conninfo: str) -> tuple[int, int]:
    """(rows, payload bytes) of ``tracks``: what both restores must bring back."""
    with psycopg.connect(conninfo) as conn:
        row = conn.execute("SELECT count(*), sum(length(payload)) FROM tracks").fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def backups(bench: Bench, repo: Any, host: Any, repeat: int) -> tuple[dict[str, Any], str]:
    """Rounds of 1 % changed then incr and logical dump, rotated; the newest dump's key."""
    from tasks.recovery.pitr import commands

    rows: dict[str, list[dict[str, Any]]] = {"incr": [], "logical dump": []}
    key = ""
    for rep in range(1, repeat + 1):
        changed = change_one_percent(bench, rep)
        _log(f"round {rep}: {changed} rows changed")
        for variant in _rotated(["incr", "logical dump"], rep):
            load = load_average()
            if variant == "incr":
                started = time.monotonic()
                taken = commands.backup(repo, host, "incr", timeout_s=3600)
                wall = time.monotonic() - started
                size = taken.repo_size_bytes
            else:
                key = f"logical/{rep}.dump.zst.gpg"
                run = _shell(bench, PIPE_BACKUP, bench.enc_home, key)
                if run.returncode != 0:
                    raise RuntimeError(f"logical dump failed: {run.stderr[-2000:]}")
                wall = run.wall_s
                size = int(bench.client().head_object(Bucket=bench.bucket,
                                                      Key=key)["ContentLength"])
            rows[variant].append({"round": rep, "wall_s": round(wall, 2),
                                  "stored_mib": round(size / MiB, 1), "load": load})
            _log(f"{variant} #{rep}: {wall:.1f} s, {size / MiB:.1f} MiB stored")
    return rows, key


def _target_after_now(bench: Bench) -> datetime:
    """A recovery target past every change, with the WAL holding it archived."""
    with psycopg.connect(bench.pg.conninfo(), autocommit=True) as conn:
        row = conn.execute("SELECT clock_timestamp(), pg_walfile_name(pg_current_wal_lsn())"
                           ).fetchone()
        assert row is not None
        target = row[0]
        # recovery stops at the first commit past the target: one must be in the archive
        conn.execute("CREATE TABLE IF NOT EXISTS bench_after (at timestamptz)")
        conn.execute("INSERT INTO bench_after VALUES (clock_timestamp())")
        got = conn.execute("SELECT pg_walfile_name(pg_current_wal_lsn())").fetchone()
        assert got is not None
        segment = got[0]
        conn.execute("SELECT pg_switch_wal()")
        end = time.monotonic() + 300
        while True:
            got = conn.execute("SELECT last_archived_wal FROM pg_stat_archiver").fetchone()
            if got and got[0] and str(got[0])[:24] >= segment:
                return target  # type: ignore[no-any-return]
            if time.monotonic() > end:
                raise RuntimeError(f"WAL segment {segment} not archived in 300 s")
            time.sleep(0.5)


def restores(bench: Bench, repo: Any, host: Any, key: str, repeat: int,
             root: Path) -> dict[str, list[dict[str, Any]]]:
    """PITR restore vs logical restore, rotated; each checked against the source."""
    from sandbox.launchers.postgres import server_owner_ids
    from sandbox.procs import free_port
    from tasks.recovery.pitr import cluster
    from tasks.recovery.pitr.recovery import restore_and_start

    reference = tracks_digest(bench.pg.conninfo("veza_ref"))
    target = _target_after_now(bench)
    ids = server_owner_ids()
    rows: dict[str, list[dict[str, Any]]] = {"pitr restore": [], "logical restore": []}
    for rep in range(1, repeat + 1):
        for variant in _rotated(["pitr restore", "logical restore"], rep):
            load = load_average()
            if variant == "pitr restore":
                scratch = Path(tempfile.mkdtemp(prefix="bench-restore-", dir=root))
                (scratch / "sock").mkdir(mode=0o700)
                for path in (scratch, scratch / "sock"):
                    if ids:
                        os.chown(path, *ids)
                port = free_port()
                started = time.monotonic()
                outcome = restore_and_start(repo, host, scratch / "data", port, target,
                                            socket_dir=scratch / "sock", private_dir=scratch,
                                            timeout_s=3600)
                wall = time.monotonic() - started
                try:
                    got = tracks_digest(f"host={scratch / 'sock'} port={port} "
                                        f"user={host.user} dbname=veza_ref")
                finally:
                    cluster.stop(host, scratch / "data")
                    shutil.rmtree(scratch, ignore_errors=True)
                note = f"replayed {(outcome.wal_replayed_bytes or 0) / MiB:.0f} MiB of WAL"
            else:
                db = f"restore_{rep}"
                run = _shell(bench, PIPE_RESTORE, bench.dec_home, key, db)
                if run.returncode != 0:
                    raise RuntimeError(f"logical restore failed: {run.stderr[-2000:]}")
                wall = run.wall_s
                got = tracks_digest(bench.pg.conninfo(db))
                with psycopg.connect(bench.pg.conninfo(), autocommit=True) as conn:
                    conn.execute(f'DROP DATABASE "{db}"')
                note = "the newest dump"
            # the dump was taken after the last change; the PITR target is later still
            check = "data matches" if got == reference else f"MISMATCH {got} != {reference}"
            rows[variant].append({"round": rep, "wall_s": round(wall, 2), "load": load,
                                  "note": f"{note}; {check}"})
            _log(f"{variant} #{rep}: {wall:.1f} s ({check})")
    return rows


def report_lines(report: dict[str, Any]) -> list[str]:
    """The human-readable summary (pure)."""
    rpo = report["rpo_s"]
    lines = [f"reference database: {report['database_mib']} MiB ({report['rows']} rows); "
             f"archive_timeout {report['archive_timeout_s']} s; commit {report['commit']}; "
             f"load average (1 min) {report['load_1min_range'][0]:.1f}-"
             f"{report['load_1min_range'][1]:.1f}",
             f"RPO (age of the newest archived WAL, {rpo['n']} samples over "
             f"{report['rpo_minutes']} min, {report['rpo_commits']} commits meanwhile): "
             f"min {rpo['min']} s, median {rpo['median']} s, max {rpo['max']} s "
             f"(goal <= {GOALS['rpo_max_s']:.0f} s: "
             f"{'met' if rpo['max'] <= GOALS['rpo_max_s'] else 'NOT met'})"]
    for name, runs in {**report["backups"], **report["restores"]}.items():
        s = _stats([r["wall_s"] for r in runs])
        extra = (f", stored {', '.join(str(r['stored_mib']) for r in runs)} MiB"
                 if "stored_mib" in runs[0] else "")
        notes = "; ".join(sorted({r["note"] for r in runs if r.get("note")}))
        lines.append(f"{name}: min {s['min']} s, median {s['median']} s, max {s['max']} s "
                     f"(n={s['n']}{extra}){' - ' + notes if notes else ''}")
    for name, value in report["ratios"].items():
        goal = GOALS.get(name)
        verdict = f" (goal <= {goal}: {'met' if value <= goal else 'NOT met'})" if goal else ""
        lines.append(f"median {name} = {value:.2f}{verdict}")
    return lines


def _commit() -> str:
    import subprocess

    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True, cwd=Path(__file__).resolve().parent.parent, check=False)
    return done.stdout.strip() or "?"


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_500_000, help="rows of tracks (scale)")
    parser.add_argument("--random-bytes", type=int, default=448, help="random bytes per row")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of each comparison")
    parser.add_argument("--rpo-minutes", type=float, default=5.0, help="RPO sampling time")
    parser.add_argument("--sample-every", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--write-interval", type=float, default=0.2,
                        help="seconds between the write load's commits")
    parser.add_argument("--archive-timeout", type=int, default=ARCHIVE_TIMEOUT_S,
                        help="PostgreSQL's archive_timeout (s)")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    opts = parser.parse_args(argv)
    if opts.rows < 100 or not 1 <= opts.repeat <= 20 or opts.rpo_minutes <= 0:
        parser.error("--rows >= 100, --repeat 1-20, --rpo-minutes > 0")
    for tool in ("aws", "gpg", "zstd", "bash", "pgbackrest"):
        if shutil.which(tool) is None:
            parser.error(f"{tool} is not installed")
    workdir = Path(tempfile.mkdtemp(prefix="veza-pitr-bench-"))
    os.chmod(workdir, 0o755)
    bench = Bench(workdir=workdir, rows=opts.rows, random_bytes=opts.random_bytes,
                  enc_home=workdir / "gnupg-enc", dec_home=workdir / "gnupg-dec")
    started, loads = time.monotonic(), [load_average()]
    try:
        with archiving_cluster(bench, opts.archive_timeout) as (repo, host):
            from tasks.recovery.pitr import commands

            make_keys(bench)
            seed(bench)
            commands.stanza_create(repo, host)
            commands.check(repo, host)
            t0 = time.monotonic()
            commands.backup(repo, host, "full", timeout_s=3600)
            full_s = time.monotonic() - t0
            _log(f"pgBackRest full: {full_s:.1f} s")
            load = WriteLoad(bench.pg.conninfo("veza_ref"), opts.write_interval)
            load.start()
            try:
                rpo = sample_rpo(repo, host, minutes=opts.rpo_minutes, every_s=opts.sample_every)
                rpo_commits = load.commits
                loads.append(load_average())
                backup_rows, key = backups(bench, repo, host, opts.repeat)
                loads.append(load_average())
                restore_rows = restores(bench, repo, host, key, opts.repeat,
                                        Path(host.data_directory).parent)
                loads.append(load_average())
            finally:
                load.done.set()
                load.join(timeout=30)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    med = {name: statistics.median(r["wall_s"] for r in runs)
           for name, runs in {**backup_rows, **restore_rows}.items()}
    report = {
        "rows": opts.rows, "database_mib": round(bench.db_bytes / MiB, 1),
        "archive_timeout_s": opts.archive_timeout, "rpo_minutes": opts.rpo_minutes,
        "commit": _commit(), "cpus": os.cpu_count(), "write_commits": load.commits,
        "rpo_commits": rpo_commits,
        "load_1min_range": [min(loads), max(loads)], "total_s": round(time.monotonic() - started),
        "pgbackrest_full_s": round(full_s, 2), "rpo_s": _stats(rpo), "rpo_samples": rpo,
        "backups": backup_rows, "restores": restore_rows,
        "ratios": {"incr_over_logical_dump": round(med["incr"] / med["logical dump"], 3),
                   "pitr_restore_over_logical_restore": round(
                       med["pitr restore"] / med["logical restore"], 3)},
    }
    print("\n".join(report_lines(report)))
    print(f"pgBackRest full (once, before the load): {full_s:.1f} s; total {report['total_s']} s")
    if opts.json:
        opts.json.write_text(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
