"""Prometheus analysis: PromQL text, the pure verdict, and the deadline-paced loop."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from errors import PreflightError, UnreachableError, VerificationError
from tasks.release.measuring import (
    Measurement,
    check_window,
    p99_query,
    parse_duration,
    success_rate_query,
)
from tasks.release.verifying import analyse, evaluate, raise_on_abort


@dataclass
class Settings:
    success_rate_min: float = 0.99
    p99_max_ms: float = 500.0
    interval_s: float = 2.0
    intervals: int = 3
    failure_limit: int = 0
    max_no_data: int = 1
    window_s: float | None = None


OK = Measurement(1.0, 20.0)
ERRORS = Measurement(0.8, 20.0)
SLOW = Measurement(1.0, 900.0)
SILENT = Measurement(None, None, error="no data")


def test_queries_select_the_colour():
    rate = success_rate_query("prod", "veza-web", "green", 5)
    assert 'namespace="prod",app="veza-web",color="green",status!~"5.."' in rate
    assert "[5s]" in rate and rate.count("http_requests_total") == 2
    p99 = p99_query("prod", "veza-web", "green", 5, colour_label="colour")
    assert p99.startswith("histogram_quantile(0.99, sum by (le) (rate(")
    assert 'colour="green"' in p99


def test_healthy_intervals_promote():
    verdict = evaluate([OK, OK, OK], Settings())
    assert verdict.decision == "promote" and verdict.successes == 3


def test_continue_until_enough_intervals():
    assert evaluate([OK, OK], Settings()).decision == "continue"


def test_error_rate_aborts_naming_the_metric():
    verdict = evaluate([OK, ERRORS], Settings())
    assert verdict.decision == "abort"
    assert "success rate 0.800 < 0.99" in verdict.reason


def test_latency_aborts_naming_the_metric():
    verdict = evaluate([SLOW], Settings())
    assert verdict.decision == "abort" and "p99 latency 900 ms > 500 ms" in verdict.reason


def test_failure_limit_tolerates_that_many_failures():
    settings = Settings(failure_limit=1)
    assert evaluate([ERRORS, OK, OK, OK], settings).decision == "promote"
    assert evaluate([ERRORS, OK, ERRORS], settings).decision == "abort"


def test_short_silence_tolerated_but_never_promotes():
    settings = Settings(max_no_data=1)
    assert evaluate([OK, SILENT], settings).decision == "continue"
    assert evaluate([OK, SILENT, OK], settings).decision == "continue"
    assert evaluate([OK, SILENT, OK, OK], settings).decision == "promote"


def test_long_silence_is_a_failure():
    verdict = evaluate([OK, SILENT, SILENT], Settings(max_no_data=1))
    assert verdict.decision == "abort"
    assert "no data for 2 consecutive" in verdict.reason


def test_only_silence_never_promotes():
    settings = Settings(max_no_data=0, failure_limit=5)
    verdicts = [evaluate([SILENT] * n, settings).decision for n in range(1, 10)]
    assert "promote" not in verdicts
    assert verdicts[-1] == "abort"


class FakeClock:
    """A clock that advances only when the analysis waits."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.waits: list[float] = []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.waits.append(seconds)
        self.now += seconds


class ScriptedPrometheus:
    """Answers instant queries from a script of (success rate, p99 seconds) or an error."""

    def __init__(self, script) -> None:
        self.script = list(script)
        self.queries: list[str] = []
        self.current: Any = None

    def query(self, promql):
        self.queries.append(promql)
        if promql.startswith("sum(rate"):
            self.current = self.script.pop(0)
        if isinstance(self.current, Exception):
            raise self.current
        rate, p99 = self.current
        value = rate if promql.startswith("sum(rate") else p99
        return [] if value is None else [{"metric": {}, "value": [0, str(value)]}]


def test_analyse_paces_by_deadline_and_promotes():
    clock = FakeClock()
    prom = ScriptedPrometheus([(1.0, 0.02)] * 3)
    result = analyse(prom, service="veza-web", namespace="p", colour="green",
                     settings=Settings(), clock=clock, sleeper=clock.sleep)
    assert result.verdict.decision == "promote"
    assert clock.waits == [2.0, 2.0, 2.0]
    assert len(result.measurements) == 3 and result.measurements[0].p99_ms == pytest.approx(20.0)
    raise_on_abort(result)


def test_analyse_aborts_on_errors_and_raise_names_service_and_metric():
    clock = FakeClock()
    prom = ScriptedPrometheus([(1.0, 0.02), (0.8, 0.02)])
    result = analyse(prom, service="veza-web", namespace="p", colour="green",
                     settings=Settings(), clock=clock, sleeper=clock.sleep)
    with pytest.raises(VerificationError, match=r"veza-web.*success rate"):
        raise_on_abort(result)


def test_prometheus_errors_and_nan_are_no_data():
    clock = FakeClock()
    down = UnreachableError("prometheus", "connection refused")
    prom = ScriptedPrometheus([(1.0, 0.02), down, ("NaN", "NaN")])
    result = analyse(prom, service="veza-web", namespace="p", colour="green",
                     settings=Settings(max_no_data=1), clock=clock, sleeper=clock.sleep)
    assert result.verdict.decision == "abort"
    assert "prometheus error" in (result.measurements[1].error or "")
    assert "no data" in result.verdict.reason


def test_window_s_is_honoured_and_defaults_to_the_interval():
    clock = FakeClock()
    prom = ScriptedPrometheus([(1.0, 0.02)] * 3)
    analyse(prom, service="veza-web", namespace="p", colour="green",
            settings=Settings(window_s=30), clock=clock, sleeper=clock.sleep)
    assert prom.queries and all("[30s]" in q for q in prom.queries)
    prom = ScriptedPrometheus([(1.0, 0.02)] * 3)
    analyse(prom, service="veza-web", namespace="p", colour="green",
            settings=Settings(interval_s=7.5), clock=clock, sleeper=clock.sleep)
    assert all("[8s]" in q for q in prom.queries)


def test_no_ready_endpoint_fails_the_interval_at_once():
    clock = FakeClock()
    prom = ScriptedPrometheus([(1.0, 0.02)] * 3)  # stale but healthy-looking metrics
    result = analyse(prom, service="veza-web", namespace="p", colour="green",
                     settings=Settings(max_no_data=5), endpoints=lambda: 0,
                     clock=clock, sleeper=clock.sleep)
    assert result.verdict.decision == "abort" and len(result.measurements) == 1
    assert "no ready endpoint for veza-web (green) at measurement 1" in result.verdict.reason


def test_an_endpoint_read_error_leaves_the_interval_to_the_metrics():
    def broken() -> int:
        raise UnreachableError("kubernetes", "connection refused")

    clock = FakeClock()
    prom = ScriptedPrometheus([(1.0, 0.02)] * 3)
    result = analyse(prom, service="veza-web", namespace="p", colour="green",
                     settings=Settings(), endpoints=broken, clock=clock, sleeper=clock.sleep)
    assert result.verdict.decision == "promote"


@pytest.mark.parametrize(("text", "seconds"), [
    ("15s", 15), ("1m30s", 90), ("500ms", 0.5), ("1h", 3600), ("2.5s", 2.5)])
def test_prometheus_durations(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "15", "s", "15x", "1m junk"])
def test_bad_durations_are_refused(text):
    with pytest.raises(ValueError, match="not a Prometheus duration"):
        parse_duration(text)


def test_a_window_shorter_than_two_scrapes_is_refused_with_the_fix():
    with pytest.raises(PreflightError) as caught:
        check_window("veza-api", Settings(interval_s=5), scrape_s=15)
    assert "veza-api: verification window 5 s" in caught.value.message
    assert "scrape interval (15 s)" in caught.value.message
    assert "analysis.window_s >= 30" in (caught.value.hint or "")
    assert check_window("veza-api", Settings(interval_s=5, window_s=30), scrape_s=15) == 30


class NewSeries:
    """Right after the switch: the 200 series have one sample (no rate yet), while the
    503s of the pod's readiness probe during start-up have many."""

    def query(self, promql: str) -> list[dict[str, Any]]:
        if promql.startswith("count(") and 'status!~"5.."' in promql:
            return [{"metric": {}, "value": [0, "3"]}]  # the series exist
        if 'status!~"5.."' in promql:
            return []  # too new to rate
        value = 4.0 if promql.startswith("sum(increase") else 0.02
        return [{"metric": {}, "value": [0, str(value)]}]


def test_non_5xx_series_too_new_to_rate_are_no_data_not_a_zero_success_rate():
    from tasks.release.measuring import measure

    m = measure(NewSeries(), "prod", "veza-web", "green", 5)
    assert not m.has_data and m.success_rate is None and m.error == "no data"


# --- the catalogue's own metrics (analysis.metrics) -----------------------------------------

def errors_metric(max_: float = 0.5) -> Any:
    from tasks.release.analysis_config import MetricSpec

    return MetricSpec(name="errors-5xx", max=max_,
                      query='max(rate(http_requests_total{{selector},status=~"5.."}[{window}]))')


@dataclass
class WithMetrics(Settings):
    metrics: tuple[Any, ...] = ()


def test_a_custom_metric_out_of_bounds_fails_the_interval_naming_it():
    settings = WithMetrics(metrics=(errors_metric(),))
    ok = Measurement(1.0, 20.0, values=(("errors-5xx", 0.1),))
    bad = Measurement(1.0, 20.0, values=(("errors-5xx", 0.8),))
    assert evaluate([ok, ok, ok], settings).decision == "promote"
    verdict = evaluate([ok, bad], settings)
    assert verdict.decision == "abort" and "errors-5xx 0.8 > 0.5 at measurement 2" in (
        verdict.reason)
    both = evaluate([Measurement(0.8, 20.0, values=(("errors-5xx", 0.8),))], settings)
    assert "success rate 0.800 < 0.99 and errors-5xx 0.8 > 0.5" in both.reason


def test_a_silent_custom_metric_is_no_data_and_never_promotes():
    settings = WithMetrics(metrics=(errors_metric(),), max_no_data=1)
    silent = Measurement(1.0, 20.0, values=(("errors-5xx", None),))
    unmeasured = Measurement(1.0, 20.0)  # taken without the metric: not a pass either
    assert evaluate([silent], settings).decision == "continue"
    verdict = evaluate([silent, unmeasured], settings)
    assert verdict.decision == "abort" and "no data for 2 consecutive" in verdict.reason


class ByQuery:
    """Answers the built-in queries healthily and the custom one with ``custom``."""

    def __init__(self, custom: float | None) -> None:
        self.custom = custom
        self.queries: list[str] = []

    def query(self, promql: str) -> list[dict[str, Any]]:
        self.queries.append(promql)
        value = (self.custom if promql.startswith("max(") else
                 1.0 if promql.startswith("sum(rate") else 0.02)
        return [] if value is None else [{"metric": {}, "value": [0, str(value)]}]


def test_measure_renders_and_reads_every_custom_metric():
    from tasks.release.measuring import measure

    m = measure(ByQuery(0.25), "prod", "veza-web", "green", 7, colour_label="colour",
                metrics=[errors_metric()])
    assert m.has_data and m.value("errors-5xx") == 0.25 and m.success_rate == 1.0
    prom = ByQuery(None)
    silent = measure(prom, "prod", "veza-web", "green", 7, metrics=[errors_metric()])
    assert not silent.has_data and silent.error == "no data (errors-5xx)"
    assert prom.queries[-1] == ('max(rate(http_requests_total{namespace="prod",app="veza-web",'
                                'color="green",status=~"5.."}[7s]))')


def test_blue_green_verification_judges_the_custom_metrics():
    clock = FakeClock()
    result = analyse(ByQuery(0.9), service="veza-web", namespace="p", colour="green",
                     settings=WithMetrics(metrics=(errors_metric(),)), clock=clock,
                     sleeper=clock.sleep)
    with pytest.raises(VerificationError, match=r"veza-web \(green\).*errors-5xx 0.9 > 0.5"):
        raise_on_abort(result)


class FiveHundredsBeingBorn:
    """A new colour's first 500s: their series have one sample (no rate yet), so the quotient
    over the rated series reads 1.0 while a quarter of the series are errors."""

    def __init__(self, rated: int) -> None:
        self.rated = rated

    def query(self, promql: str) -> list[dict[str, Any]]:
        if promql.startswith("count(rate("):
            value = float(self.rated)
        elif promql.startswith("count("):
            value = 4.0  # every series of the colour, rated or not
        else:
            value = 1.0 if promql.startswith("sum(rate") else 0.02
        return [{"metric": {}, "value": [0, str(value)]}]


def test_a_quotient_missing_series_too_new_to_rate_is_no_data_not_healthy():
    from tasks.release.measuring import measure

    born = measure(FiveHundredsBeingBorn(rated=3), "prod", "veza-web", "green", 5)
    assert not born.has_data and born.success_rate is None
    assert born.error == "no data (some series too new to rate)"
    rated = measure(FiveHundredsBeingBorn(rated=4), "prod", "veza-web", "green", 5)
    assert rated.has_data and rated.success_rate == 1.0


class FewRequests:
    """A canary's handful of requests in the window, every one answered well."""

    def __init__(self, requests: float) -> None:
        self.requests = requests

    def query(self, promql: str) -> list[dict[str, Any]]:
        value = (self.requests if promql.startswith("sum(increase") else
                 1.0 if promql.startswith("sum(rate") else 2.0 if promql.startswith("count(")
                 else 0.02)
        return [{"metric": {}, "value": [0, str(value)]}]


def test_fewer_requests_than_min_requests_are_no_data_not_healthy():
    from tasks.release.analysis_config import AnalysisSpec
    from tasks.release.measuring import measure

    few = measure(FewRequests(3.0), "prod", "veza-web", "canary", 5, min_requests=10)
    assert not few.has_data and few.error == "no data (3 requests < min_requests 10)"
    assert measure(FewRequests(12.0), "prod", "veza-web", "canary", 5, min_requests=10).has_data
    assert measure(FewRequests(3.0), "prod", "veza-web", "canary", 5).has_data  # 0: any
    clock = FakeClock()
    settings = AnalysisSpec(interval_s=2, intervals=2, max_no_data=1, min_requests=10)
    result = analyse(FewRequests(3.0), service="veza-web", namespace="p", colour="canary",
                     settings=settings, clock=clock, sleeper=clock.sleep)
    assert result.verdict.decision == "abort" and "no data for 2 consecutive" in (
        result.verdict.reason)  # never a promotion on a handful of requests
