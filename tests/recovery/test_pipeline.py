"""Process chains: streaming, byte counting, every exit status checked; the tools are installed."""

from __future__ import annotations

import subprocess
import sys

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


def test_count_is_of_stdout_alone_and_grows_while_the_stage_runs():
    # stderr before, between and after the output: none of it counts. The kernel counts a
    # write when it returns, so while the stage runs the count may lack the write in progress.
    chunk = 65536
    script = (
        "import sys; w = sys.stderr.write; f = sys.stderr.flush; out = sys.stdout.buffer\n"
        "w('warning: before\\n'); f()\n"
        f"for _ in range(40): out.write(b'x' * {chunk}); out.flush()\n"
        "w('between\\n'); f()\n"
        f"for _ in range(40): out.write(b'y' * {chunk}); out.flush()\n"
        "w('done\\n')\n"
    )
    with Pipeline([
        Stage("src", [sys.executable, "-c", script], count_output=True),
        Stage("cat", ["cat"]),
    ]) as pipe:
        first = pipe.output.read(1_000_000)
        assert pipe.counted("src") >= len(first) - chunk, "what was read had been written"
        rest = pipe.output.read()
        pipe.check()
        assert pipe.counted("src") == len(first) + len(rest) == 80 * chunk
        with pytest.raises(KeyError, match="count_output"):
            pipe.counted("cat")


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
