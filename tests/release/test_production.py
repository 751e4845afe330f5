"""Production's keep-old-colour window: the post-promotion watch, judged without a cluster.

The sequences on the sandbox (a regression rolled back after the commit, a rollback preempting
the window) are in test_keep_window.py.
"""

from __future__ import annotations

from typing import Any

from tasks.release.catalogue import parse_catalogue
from tasks.release.colours import Prepared
from tasks.release.watch import watch_after_commit

ANALYSIS = {"interval_s": 2.0, "intervals": 3, "failure_limit": 0, "max_no_data": 1}
CATALOGUE = parse_catalogue({
    "environments": {"production": {
        "namespace": "prod", "strategy": "blue-green", "kubernetes_block": "k",
        "prometheus_block": "p", "vault_block": "v"}},
    "services": {
        "veza-backend-api": {"image_repository": "veza/backend-api", "port": 8080,
                             "analysis": ANALYSIS},
        "veza-web": {"image_repository": "veza/web", "port": 80, "analysis": ANALYSIS},
    },
})
ENV = CATALOGUE.environment("production")
SPECS = CATALOGUE.select(None)
PREPARED = {s.name: Prepared(service=s.name, live_colour="blue", new_colour="green",
                             deployment=s.deployment_name("green"), image=s.image("2.0.0"),
                             previous_image=s.image("1.0.0"), secret_name=None, replicas=1,
                             action="cloned", smoke=[])
            for s in SPECS}


class Clock:
    """A clock that advances only when the watch waits."""

    def __init__(self) -> None:
        self.now = 0.0
        self.waits: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds


class Prometheus:
    """Healthy answers, except for one app from a given time on (success rate 0.5)."""

    def __init__(self, clock: Clock, *, bad_app: str | None = None, bad_from: float = 0.0):
        self.clock, self.bad_app, self.bad_from = clock, bad_app, bad_from
        self.queries: list[str] = []

    def query(self, promql: str) -> list[dict[str, Any]]:
        self.queries.append(promql)
        bad = self.bad_app is not None and f'app="{self.bad_app}"' in promql and (
            self.clock.now >= self.bad_from)
        if promql.startswith("sum(rate"):
            value = 0.5 if bad else 1.0
        else:
            value = 0.02
        return [{"metric": {}, "value": [0, str(value)]}]


def run(clock: Clock, prometheus: Prometheus, window_s: float, preempted=lambda: None):
    return watch_after_commit(prometheus, env=ENV, specs=SPECS, prepared=PREPARED,
                              window_s=window_s, preempted=preempted, clock=clock,
                              sleeper=clock.sleep, wall_clock=clock)


def test_a_quiet_window_measures_every_service_each_interval_and_ends_on_time():
    clock = Clock()
    outcome = run(clock, Prometheus(clock), 10.0)
    assert outcome.kind == "quiet"
    assert clock.now == 10.0  # the whole window, no more
    assert max(clock.waits) <= 1.0  # never one long blind sleep: preemption is seen quickly
    assert {name: len(series) for name, series in outcome.measurements.items()} == {
        "veza-backend-api": 4, "veza-web": 4}  # at 2, 4, 6, 8 s


def test_a_regression_after_the_commit_is_named_with_its_service():
    clock = Clock()
    outcome = run(clock, Prometheus(clock, bad_app="veza-web", bad_from=5.0), 60.0)
    assert outcome.kind == "regressed"
    assert outcome.detail.startswith("veza-web (green): success rate 0.500 < 0.99")
    assert clock.now == 6.0  # the first interval after it went bad


def test_a_preemption_request_stops_the_watch_within_a_second():
    clock = Clock()
    outcome = run(clock, Prometheus(clock), 600.0,
                  preempted=lambda: "rollback/x" if clock.now >= 3.5 else None)
    assert outcome.kind == "preempted" and outcome.detail == "rollback/x"
    assert clock.now <= 4.5


def test_no_window_no_watch():
    clock = Clock()
    prometheus = Prometheus(clock)
    assert run(clock, prometheus, 0.0).kind == "quiet"
    assert clock.waits == [] and prometheus.queries == []
