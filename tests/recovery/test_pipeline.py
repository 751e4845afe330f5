"""Process chains: streaming, byte counting, every exit status checked; the tools are installed."""

from __future__ import annotations

import subprocess

import pytest

from errors import PipelineError
from tasks.recovery.pipeline import Pipeline, Stage


def test_pipeline_streams_counts_and_checks_every_status():
    with Pipeline([
        Stage("src", ["head", "-c", "3000000", "/dev/zero"], count_output=True),
        Stage("zstd", ["zstd", "-q", "-c"]),
        Stage("unzstd", ["zstd", "-d", "-q", "-c"]),
    ]) as pipe:
        out = pipe.output.read()
        results = pipe.check()
        assert pipe.counted("src") == 3_000_000
    assert len(out) == 3_000_000 and all(r.ok for r in results)


def test_pipeline_names_a_failed_middle_stage_even_when_the_last_succeeds():
    with pytest.raises(PipelineError, match="mid exited with 3") as err:
        with Pipeline([
            Stage("src", ["head", "-c", "1000", "/dev/zero"]),
            Stage("mid", ["sh", "-c", "head -c 10; echo broken >&2; exit 3"]),
            Stage("sink", ["cat"]),
        ]) as pipe:
            pipe.output.read()
            pipe.check()
    assert "broken" in str(err.value)


def test_zstd_and_gpg_are_installed():
    for tool in ("zstd", "gpg", "pg_dump", "pg_restore"):
        assert subprocess.run([tool, "--version"], capture_output=True).returncode == 0
