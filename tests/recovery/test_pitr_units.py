"""PITR plain functions: config, private config, info parsing, error translation, guards."""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prefect_aws import AwsCredentials
from pydantic import SecretStr, ValidationError

from blocks.pgbackrest import (
    DatabaseHost,
    PgBackRestRepository,
    postgresql_settings,
    render_config,
    render_postgresql_conf,
)
from errors import (
    AuthenticationError,
    IntegrityError,
    InvalidInputError,
    NotFoundError,
    PermanentSystemError,
    RestoreRefusedError,
    TransientSystemError,
    UnreachableError,
)
from errors.pgbackrest import MAX_PGBACKREST_DETAIL, translate, translate_status
from tasks.recovery.pitr.archive import ArchivedSegment, assess_archive, render_check
from tasks.recovery.pitr.cluster import check_port_free, recovery_facts
from tasks.recovery.pitr.expiry import expire_report, render_expire_report, retention_text
from tasks.recovery.pitr.info import parse_info, pitr_window
from tasks.recovery.pitr.markers import Marker
from tasks.recovery.pitr.recovery import check_target_in_window, verify_markers
from tasks.recovery.pitr.report import backup_report
from tasks.recovery.pitr.restore import check_restore_target, format_target
from tasks.recovery.pitr.runner import build_argv, private_config

PASSPHRASE = "a-long-cipher-passphrase-0123"
SECRET_KEY = "s3-secret-key-abcdef"


def repo(**overrides: object) -> PgBackRestRepository:
    fields: dict[str, object] = {
        "bucket": "veza-pitr",
        "credentials": AwsCredentials(aws_access_key_id="AKIAEXAMPLE",
                                      aws_secret_access_key=SecretStr(SECRET_KEY)),
        "cipher_passphrase": SecretStr(PASSPHRASE),
    }
    fields.update(overrides)
    return PgBackRestRepository(**fields)  # type: ignore[arg-type]


def test_config_holds_the_repository_the_cluster_and_the_retention() -> None:
    text = render_config(repo(region="eu-west-1"), DatabaseHost())
    lines = set(text.splitlines())
    assert {"[global]", "repo1-type=s3", "repo1-s3-bucket=veza-pitr",
            "repo1-s3-endpoint=s3.eu-west-1.amazonaws.com", "repo1-s3-key=AKIAEXAMPLE",
            f"repo1-s3-key-secret={SECRET_KEY}", "repo1-cipher-type=aes-256-cbc",
            f"repo1-cipher-pass={PASSPHRASE}", "repo1-retention-full-type=time",
            "repo1-retention-full=30", "[veza]", "pg1-path=/var/lib/postgresql/15/main",
            "pg1-port=5432"} <= lines
    counted = render_config(repo(pitr_window_days=None, retention_full_count=4, verify_tls=False,
                                 credentials=AwsCredentials()), DatabaseHost())
    assert {"repo1-retention-full-type=count", "repo1-retention-full=4",
            "repo1-storage-verify-tls=n", "repo1-s3-key-type=auto"} <= set(counted.splitlines())


def test_bad_repository_fields_are_refused() -> None:
    with pytest.raises(ValidationError, match="exactly one"):
        repo(retention_full_count=3)
    with pytest.raises(ValidationError, match="one line"):
        repo(bucket="b\nrepo1-path=/x")
    with pytest.raises(ValidationError, match="at least 16"):
        repo(cipher_passphrase=SecretStr("short"))
    with pytest.raises(ValidationError, match="host name only"):
        repo(endpoint="https://minio:9000")
    with pytest.raises(InvalidInputError, match="profile"):
        render_config(repo(credentials=AwsCredentials(profile_name="ops")), DatabaseHost())


def test_postgresql_commands_name_the_installed_config_and_no_secret() -> None:
    settings = postgresql_settings(repo(), DatabaseHost())
    assert settings["archive_command"] == (
        "pgbackrest --config=/etc/pgbackrest/pgbackrest.conf --stanza=veza archive-push %p")
    restored = postgresql_settings(repo(), DatabaseHost(), data_directory="/srv/pitr/x")
    assert "--pg1-path=/srv/pitr/x archive-get %f" in restored["restore_command"]
    conf = render_postgresql_conf(repo(), DatabaseHost())
    assert "archive_mode = 'on'" in conf and "'\"%p\"'" not in conf
    assert PASSPHRASE not in conf and SECRET_KEY not in conf


def test_the_private_config_is_0600_in_a_0700_dir_then_gone_and_argv_has_no_secret() -> None:
    host = DatabaseHost()
    with private_config(repo(), host) as directory:
        path = directory / "pgbackrest.conf"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
        assert PASSPHRASE in path.read_text()
        argv = build_argv(host, directory, "veza", "backup", ["--type=full"])
    assert not directory.exists()
    assert not any(PASSPHRASE in a or SECRET_KEY in a for a in argv)
    assert argv[-1] == "backup" and f"--config={path}" in argv


INFO = [{
    "name": "veza", "cipher": "aes-256-cbc", "status": {"code": 0, "message": "ok"},
    "repo": [{"key": 1, "status": {"code": 0, "message": "ok"}}],
    "archive": [{"id": "15-1", "min": "000000010000000000000001",
                 "max": "000000010000000000000009"}],
    "backup": [
        {"label": "20261201-100000F_20261201-110000I", "type": "incr",
         "prior": "20261201-100000F", "timestamp": {"start": 1796128800, "stop": 1796128810},
         "archive": {"start": "000000010000000000000007", "stop": "000000010000000000000007"},
         "info": {"size": 100, "delta": 10, "repository": {"size": 50, "delta": 5}}},
        {"label": "20261201-100000F", "type": "full", "prior": None,
         "timestamp": {"start": 1796125200, "stop": 1796125230},
         "archive": {"start": "000000010000000000000003", "stop": "000000010000000000000003"},
         "info": {"size": 100, "delta": 100, "repository": {"size": 40, "delta": 40}}},
    ],
}]


def test_info_is_parsed_oldest_first_with_the_pitr_window() -> None:
    info = parse_info(json.dumps(INFO), "veza")
    assert [b.type for b in info.backups] == ["full", "incr"]
    assert info.backups[1].prior == "20261201-100000F" and info.backups[0].repo_size_bytes == 40
    assert info.newest_wal == "000000010000000000000009" and info.ok
    window = pitr_window(info)
    assert window is not None and window.start == datetime.fromtimestamp(1796125200, UTC)
    assert window.end == info.backups[1].stopped_at and not window.end_is_exact
    later = datetime.fromtimestamp(1796129000, UTC)
    exact = pitr_window(info, later)
    assert exact is not None and exact.end == later and exact.end_is_exact
    assert pitr_window(parse_info(json.dumps([{"name": "veza", "backup": []}]), "veza")) is None
    assert "| 20261201-100000F | full |" in backup_report(info.backups[1], info)
    with pytest.raises(PermanentSystemError, match="no JSON"):
        parse_info("not json", "veza")


def test_pgbackrest_errors_are_classified_redacted_and_clipped() -> None:
    secrets = [PASSPHRASE, SECRET_KEY]
    cases = [
        (49, "unable to connect to 'localhost:1'", UnreachableError),
        (50, "unable to acquire lock on file", TransientSystemError),
        (55, "unable to open missing file '/r/archive/veza/archive.info' for read",
         NotFoundError),
        (95, "cipher header invalid", AuthenticationError),
        (29, "unable to load info file '/r/backup/veza/backup.info' or ...: key/value found "
             "outside of section at line 1: \x7f\x80", AuthenticationError),
        (32, "bad option", PermanentSystemError),
    ]
    for code, message, kind in cases:
        err = translate("backup", code, f"WARN: x\nERROR: [{code:03d}]: {message}\n",
                        secrets=secrets, stanza="veza")
        assert type(err) is kind, (code, err)
        assert str(err).isprintable()
    leaked = translate("check", 56, f"ERROR: [056]: pass {PASSPHRASE} key {SECRET_KEY} "
                       + "x" * 2000, secrets=secrets, stanza="veza")
    assert PASSPHRASE not in str(leaked) and SECRET_KEY not in str(leaked)
    assert "***" in str(leaked) and len(leaked.message) < MAX_PGBACKREST_DETAIL + 80
    status = translate_status("info", "[FormatError] unable to load info file '/r/x.info'",
                              secrets=secrets, stanza="veza")
    assert isinstance(status, AuthenticationError) and "cipher_passphrase" in str(status)
    assert isinstance(translate_status("info", "missing stanza path", secrets=secrets,
                                       stanza="veza"), NotFoundError)


def test_a_restore_goes_only_into_a_new_or_empty_directory(tmp_path: Path) -> None:
    host = DatabaseHost(data_directory=str(tmp_path / "live"))
    check_restore_target(tmp_path / "new", host)
    (tmp_path / "empty").mkdir()
    check_restore_target(tmp_path / "empty", host)
    (tmp_path / "live").mkdir()
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "postmaster.pid").write_text("1\n")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "PG_VERSION").write_text("15\n")
    for target, why in [(tmp_path / "live", "live data directory"),
                        (tmp_path / "busy", "postmaster.pid"),
                        (tmp_path / "full", "not empty"), (Path("rel"), "absolute")]:
        with pytest.raises(RestoreRefusedError, match=why):
            check_restore_target(target, host)
    assert format_target(datetime(2026, 12, 1, 10, 0, 0, 5, tzinfo=UTC)) == (
        "2026-12-01 10:00:00.000005+00")
    with pytest.raises(InvalidInputError, match="time zone"):
        format_target(datetime(2026, 12, 1))  # naive: the point of the test


def test_expire_report_names_what_went_and_refuses_a_lost_newest_full() -> None:
    before = parse_info(json.dumps(INFO), "veza")
    incr_only = [{**INFO[0], "backup": [INFO[0]["backup"][1]],  # type: ignore[dict-item]
                  "archive": [{"id": "15-1", "min": "000000010000000000000003",
                               "max": "000000010000000000000009"}]}]
    after = parse_info(json.dumps(incr_only), "veza")
    now = datetime(2026, 12, 2, tzinfo=UTC)
    report = expire_report(before, after, retention="r", ran_at=now)
    assert [b.label for b in report.expired] == ["20261201-100000F_20261201-110000I"]
    assert report.wal_expired and report.oldest_wal_after == "000000010000000000000003"
    text = render_expire_report(report)
    assert "| 20261201-100000F_20261201-110000I | incr |" in text and "| expired |" in text
    assert "`000000010000000000000001` up to" in text
    nothing = expire_report(before, before, retention="r", ran_at=now)
    assert nothing.expired == [] and not nothing.wal_expired
    # the newest full gone: never accepted, whatever pgBackRest did
    fulls_gone = [{**INFO[0], "backup": [INFO[0]["backup"][0]]}]  # type: ignore[dict-item]
    with pytest.raises(IntegrityError, match="newest full backup 20261201-100000F"):
        expire_report(before, parse_info(json.dumps(fulls_gone), "veza"), retention="r",
                      ran_at=now)
    assert "30 days" in retention_text(repo())
    assert "newest 2 full" in retention_text(repo(pitr_window_days=None, retention_full_count=2))


def _segments(names: list[str], at: datetime) -> list[ArchivedSegment]:
    return [ArchivedSegment(name=n, key=f"r/archive/veza/15-1/{n[:16]}/{n}-{'0' * 40}.zst",
                            archived_at=at) for n in names]


def test_archive_check_finds_gaps_across_logs_and_timelines_and_judges_the_rpo() -> None:
    info = parse_info(json.dumps(INFO), "veza")  # oldest backup starts at ...0003
    now = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
    fresh = now
    names = [f"0000000100000000000000{n:02X}" for n in range(3, 0x100)]
    names += ["000000010000000100000000", "000000020000000100000001"]  # log wrap, timeline 2
    good = assess_archive(info, _segments(names, fresh), now=now, max_rpo_seconds=60)
    assert good.passed and good.missing_count == 0 and good.rpo_seconds == 0
    assert good.newest == "000000020000000100000001" and good.oldest_needed.endswith("03")
    # a hole at the end of log 0 and one on timeline 2
    holed = [n for n in names if n not in ("0000000100000000000000FF",)]
    holed += ["000000020000000100000003"]
    bad = assess_archive(info, _segments(holed, fresh), now=now, max_rpo_seconds=60)
    assert bad.missing == ["0000000100000000000000FF", "000000020000000100000002"]
    assert not bad.passed and "2 WAL segment(s) missing" in bad.problems[0]
    assert "2 segment(s) MISSING" in render_check(bad)
    # 64 MiB segments: 64 per log, so ...0000003F is followed by log 1
    big = ["000000010000000000000003", "00000001000000000000003F", "000000010000000100000000"]
    wide = assess_archive(info, _segments(big, fresh), now=now, max_rpo_seconds=60,
                          segment_size_mb=64)
    assert wide.missing_count == 0x3F - 4
    stale = assess_archive(info, _segments(names, datetime(2026, 12, 2, 11, 0, tzinfo=UTC)),
                           now=now, max_rpo_seconds=900)
    assert stale.rpo_seconds == 3600 and "3600 s old (threshold 900 s)" in stale.problems[0]
    empty = assess_archive(parse_info(json.dumps([{"name": "veza", "backup": []}]), "veza"),
                           [], now=now, max_rpo_seconds=60)
    assert len(empty.problems) == 2 and "no backup" in empty.problems[0]
    with pytest.raises(InvalidInputError, match="wal_segment_size_mb"):
        assess_archive(info, [], now=now, max_rpo_seconds=60, segment_size_mb=24)


def test_restore_guards_and_what_the_recovery_log_says(tmp_path: Path) -> None:
    info = parse_info(json.dumps(INFO), "veza")  # the full stopped at 1796125230
    stop = datetime.fromtimestamp(1796125230, UTC)
    with pytest.raises(InvalidInputError, match=r"target_time.*future"):
        check_target_in_window(info, stop, stop - timedelta(seconds=1))
    with pytest.raises(InvalidInputError, match="before the end of the oldest backup"):
        check_target_in_window(info, stop, stop + timedelta(days=1))
    check_target_in_window(info, stop + timedelta(seconds=1), stop + timedelta(days=1))
    host = DatabaseHost(port=5432, socket_dir=str(tmp_path))
    with pytest.raises(RestoreRefusedError, match="live cluster"):
        check_port_free(5432, host)
    (tmp_path / ".s.PGSQL.6543").touch()
    with pytest.raises(RestoreRefusedError, match="is taken"):
        check_port_free(6543, host)
    log = tmp_path / "server.log"
    log.write_text("LOG:  redo starts at 0/2000028\nLOG:  recovery stopping before commit\n"
                   "LOG:  redo done at 1/00000100 system usage: ...\n"
                   "LOG:  last completed transaction was at log time 2026-12-02 02:00:00.5+00\n")
    facts = recovery_facts(log)
    assert facts.recovered_to == datetime(2026, 12, 2, 2, 0, 0, 500000, tzinfo=UTC)
    assert facts.wal_replayed_bytes == (1 << 32) + 0x100 - 0x2000028


def test_markers_before_the_target_must_be_restored_and_none_after() -> None:
    target = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)

    def marker(seconds: float, name: str) -> Marker:
        return Marker(id=name, written_at=target + timedelta(seconds=seconds), written_by="t")

    old, close, after = marker(-60, "old"), marker(-1, "close"), marker(30, "after")
    assert verify_markers([old, close, after], [old], target, after) == (2, [])
    _, lost = verify_markers([old], [], target, after)
    assert "1 marker(s) written before the target are missing" in lost[0]
    _, past = verify_markers([old], [old, after], target, after)
    assert "recovery went past it" in past[0]
    _, none = verify_markers([], [], target, after)
    assert "no marker written before the target" in none[0]


def test_a_failed_pitr_restore_is_a_reported_problem_and_the_scratch_is_removed(
    tmp_path: Path,
) -> None:
    from blocks.postgres import PostgresDatabase
    from tasks.recovery.pitr.recovery import run_pitr_restore_test

    host = DatabaseHost(executable="no-such-pgbackrest", data_directory=str(tmp_path / "live"))
    db = PostgresDatabase(host="127.0.0.1", user="u", password=SecretStr("p"), dbname="veza")
    target = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
    after = Marker(id="a", written_at=target + timedelta(seconds=30), written_by="t")
    report = run_pitr_restore_test(
        repo(), host, db, target, source_markers=[], after=after, scratch_root=tmp_path,
        timeout_s=30, rto_objective_s=3600, since=target - timedelta(hours=1))
    assert not report.passed and "the restore failed" in report.problems[0]
    assert "no-such-pgbackrest" in report.problems[0] and report.rto_seconds is None
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(IntegrityError, match="the restore failed"):
        report.raise_unless_passed()
