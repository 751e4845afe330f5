"""A text buffer another thread writes to: what a terminal following a run shows."""

from __future__ import annotations

import io
import threading


class Screen(io.StringIO):
    """What a watching terminal shows, written by another thread."""

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()

    def write(self, text: str) -> int:
        with self.lock:
            return super().write(text)

    def text(self) -> str:
        with self.lock:
            return self.getvalue()
