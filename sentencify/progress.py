"""A dependency-free progress bar for long commands (redrawn on a terminal, a line per 10% otherwise)."""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, total: int | None, label: str, unit: str = "records", stream=None) -> None:
        self.total = total
        self.label = label
        self.unit = unit
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.done = 0
        self.started = time.monotonic()
        self._last_draw = 0.0
        self._last_decile = -1

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if self.tty and now - self._last_draw >= 0.1:
            self._last_draw = now
            self.stream.write("\r" + self._line())
            self.stream.flush()
        elif not self.tty and self.total:
            decile = self.done * 10 // self.total
            if decile > self._last_decile:
                self._last_decile = decile
                self.stream.write(self._line() + "\n")

    def _line(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = self.done / elapsed
        if self.total:
            frac = min(1.0, self.done / self.total)
            bar = "#" * int(frac * 30)
            return f"{self.label} [{bar:<30}] {frac:4.0%} {self.done}/{self.total} {self.unit} {rate:,.0f}/s"
        return f"{self.label} {self.done} {self.unit} {rate:,.0f}/s"

    def close(self) -> None:
        elapsed = time.monotonic() - self.started
        if self.tty:
            self.stream.write("\r" + self._line() + "\n")
        self.stream.write(f"{self.label}: {self.done} {self.unit} in {elapsed:.1f}s\n")
        self.stream.flush()
