"""The canary benchmark's span: a bad canary taking traffic until every weight is back at 0."""

from __future__ import annotations

from bench.canary_bench import traffic_span


def test_the_span_runs_from_the_first_weight_up_to_every_weight_back_at_0():
    samples = [(0.0, {}), (1.0, {"api": 0, "web": 0}), (2.0, {"api": 5, "web": 5}),
               (3.0, {"api": 5, "web": 0}), (4.0, {"api": 0, "web": 0}),
               (5.0, {"api": 0, "web": 0})]
    assert traffic_span(samples) == (2.0, 4.0)  # one weight still up at 3.0 is not the end


def test_no_span_when_the_canary_never_took_traffic_or_never_came_back():
    assert traffic_span([(0.0, {"api": 0}), (1.0, {"api": 0})]) is None
    assert traffic_span([(0.0, {"api": 0}), (1.0, {"api": 5}), (2.0, {"api": 25})]) is None
