"""The demo's Prometheus scrapes the DORA exporter: the scrape job added to the sandbox's config."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from sandbox.launchers.prometheus import JOB, render_config
from veza_ops.demo_stack import DORA_JOB, dora_scrape_config


def test_the_dora_job_is_added_once_and_the_pods_job_kept(tmp_path: Path) -> None:
    base = render_config(targets=tmp_path / "targets.json")
    once = dora_scrape_config(base, "127.0.0.1:9464")
    twice = dora_scrape_config(once, "127.0.0.1:9465")  # a restarted demo: a new port
    jobs = {j["job_name"]: j for j in yaml.safe_load(twice)["scrape_configs"]}
    assert list(jobs) == [JOB, DORA_JOB]
    assert jobs[JOB] == yaml.safe_load(base)["scrape_configs"][0]
    dora = jobs[DORA_JOB]
    assert dora["static_configs"] == [{"targets": ["127.0.0.1:9465"],
                                       "labels": {"exporter": "veza-ops"}}]
    assert dora["metrics_path"] == "/metrics"
    assert yaml.safe_load(twice)["rule_files"] == yaml.safe_load(base)["rule_files"]


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian prometheus) absent")
def test_prometheus_accepts_the_configuration(tmp_path: Path) -> None:
    (tmp_path / "targets.json").write_text("[]")
    config = tmp_path / "prometheus.yml"
    config.write_text(dora_scrape_config(render_config(targets=tmp_path / "targets.json"),
                                         "127.0.0.1:9464"))
    checked = subprocess.run(["promtool", "check", "config", str(config)],
                             capture_output=True, text=True, timeout=60, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    bad = tmp_path / "bad.yml"  # the check would see a broken job (it is not a rubber stamp)
    document = yaml.safe_load(config.read_text())
    document["scrape_configs"][-1]["scrape_timeout"] = "30s"  # longer than its interval
    bad.write_text(yaml.safe_dump(document))
    assert subprocess.run(["promtool", "check", "config", str(bad)], capture_output=True,
                          timeout=60, check=False).returncode != 0
