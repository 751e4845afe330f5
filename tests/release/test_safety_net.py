"""The release safety net's plain parts: deadline retries, smoke backoff, signals, outcomes."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from kubernetes import client as k8s

from errors import TransientSystemError
from tasks.release.futures import settle
from tasks.release.outcomes import record_outcome, run_outcome
from tasks.release.smoke import smoke_test
from tasks.release.switching import retry_in_body


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.waits: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds


def failing(times: int) -> Any:
    calls = [0]

    def fn() -> str:
        calls[0] += 1
        if calls[0] <= times:
            raise TransientSystemError("kubernetes", "500")
        return "done"

    fn.calls = calls  # type: ignore[attr-defined]
    return fn


def test_retry_in_body_with_a_deadline_keeps_trying_with_a_capped_backoff():
    clock = Clock()
    fn = failing(6)
    assert retry_in_body(fn, backoff_s=0.5, deadline=60.0, clock=clock,
                         sleeper=clock.sleep) == "done"
    assert clock.waits == [0.5, 1.0, 1.5, 2.0, 2.0, 2.0]  # linear, capped at 2 s


def test_retry_in_body_past_its_deadline_raises_after_a_last_try():
    clock = Clock()
    fn = failing(100)
    with pytest.raises(TransientSystemError):
        retry_in_body(fn, backoff_s=1.0, deadline=5.0, clock=clock, sleeper=clock.sleep)
    assert sum(clock.waits) <= 5.0 and fn.calls[0] == len(clock.waits) + 1


def test_retry_in_body_without_a_deadline_makes_its_attempts():
    clock = Clock()
    fn = failing(5)
    with pytest.raises(TransientSystemError):
        retry_in_body(fn, attempts=3, clock=clock, sleeper=clock.sleep)
    assert fn.calls[0] == 3


def pod(ip: str = "10.0.0.1") -> k8s.V1Pod:
    return k8s.V1Pod(metadata=k8s.V1ObjectMeta(name="p"), status=k8s.V1PodStatus(pod_ip=ip))


def test_smoke_retries_a_path_with_a_growing_backoff():
    answers = iter([503, 503, 200])
    waits: list[float] = []
    transport = httpx.MockTransport(lambda request: httpx.Response(next(answers)))
    lines = smoke_test([pod()], port=80, paths=["/ready"], backoff_s=0.5,
                       transport=transport, sleeper=waits.append)
    assert lines == ["GET http://10.0.0.1:80/ready -> 200"]
    assert waits == [0.5, 1.0]


def test_smoke_first_answer_good_never_waits():
    waits: list[float] = []
    transport = httpx.MockTransport(lambda request: httpx.Response(200))
    smoke_test([pod()], port=80, paths=["/a", "/b"], transport=transport, sleeper=waits.append)
    assert waits == []


class Done:
    def __init__(self, value: Any = None, error: BaseException | None = None) -> None:
        self.value, self.error, self.waited = value, error, False

    def result(self) -> Any:
        self.waited = True
        if self.error is not None:
            raise self.error
        return self.value


def test_settle_keeps_task_failures_but_raises_a_termination_signal_at_once():
    from prefect.exceptions import TerminationSignal

    failure = RuntimeError("boom")
    assert settle([Done(1), Done(error=failure)]) == [1, failure]  # type: ignore[list-item]
    for signal in (TerminationSignal(15), KeyboardInterrupt(), SystemExit(1)):
        after = Done(2)
        with pytest.raises(type(signal)):
            settle([Done(error=signal), after])  # type: ignore[list-item]
        assert not after.waited  # raised at once, not after every other future


def test_outcomes_once_committed_never_rolled_back():
    assert run_outcome(committed=True, incomplete=False, switched=True) == "succeeded"
    assert run_outcome(committed=False, incomplete=True, switched=True) == "rollback-incomplete"
    assert run_outcome(committed=False, incomplete=False, switched=True) == "rolled-back"
    assert run_outcome(committed=False, incomplete=False, switched=False) == "failed"
    # a cancel is named as such, once what it switched was put back (or not: incomplete)
    assert run_outcome(committed=False, incomplete=False, switched=True,
                       cancelled=True) == "cancelled"
    assert run_outcome(committed=False, incomplete=True, switched=True,
                       cancelled=True) == "rollback-incomplete"
    assert run_outcome(committed=True, incomplete=False, switched=True,
                       cancelled=True) == "succeeded"
    assert record_outcome("succeeded") == "succeeded"
    assert record_outcome("rollback-incomplete") in ("rollback-incomplete", "failed")
