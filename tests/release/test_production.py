"""Production: the keep-old-colour window (the sequence itself runs in test_release_flow)."""

from __future__ import annotations

from tasks.release.production import keep_old_colour


def test_keep_old_colour_waits_out_the_window_in_bounded_steps():
    now = [100.0]
    waits: list[float] = []

    def sleeper(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    keep_old_colour(12.0, clock=lambda: now[0], sleeper=sleeper)
    assert now[0] == 112.0  # the whole window, no more
    assert waits == [5.0, 5.0, 2.0]  # never one long blind sleep
    waits.clear()
    keep_old_colour(0.0, clock=lambda: now[0], sleeper=sleeper)
    assert waits == []
