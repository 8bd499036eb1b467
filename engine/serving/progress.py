"""A one-line progress bar for the CLI (no tqdm): files done, files per second and audio hours per second."""

from __future__ import annotations

import threading
import time
from typing import TextIO

BAR_WIDTH = 24
REDRAW_SECONDS = 0.1
"""Least time between two redraws (the last one is always drawn)."""


class Progress:
    """Draws ``[#####-----] 12/200 files, 3.1 files/s, 0.0012 h audio/s, 4 failed`` on one line of ``stream``.

    Disabled (draws nothing) unless ``enabled``; the CLI enables it when stderr is a terminal. Lines written
    with :meth:`write` appear above the bar. Drawn from one thread; :meth:`partial` (the audio done so far of
    inputs in progress: long files report as their chunks finish) may be called from any thread.
    """

    def __init__(self, total: int, stream: TextIO, *, enabled: bool) -> None:
        self.total = total
        self.stream = stream
        self.enabled = enabled
        self.done = 0
        self.failed = 0
        self.audio_seconds = 0.0
        self._started = time.monotonic()
        self._drawn_at = 0.0
        self._width = 0
        self._lock = threading.Lock()
        self._partial: dict[int, tuple[float, float]] = {}

    def partial(self, key: int, done: float, total: float) -> None:
        """Input ``key`` has ``done`` of its ``total`` seconds of audio transcribed (any thread)."""
        with self._lock:
            self._partial[key] = (done, total)

    def finish(self, key: int) -> None:
        """Input ``key`` is no longer in progress (any thread)."""
        with self._lock:
            self._partial.pop(key, None)

    def advance(self, *, audio_seconds: float = 0.0, failed: bool = False) -> None:
        """Count one more file (transcribed, skipped or failed) and redraw."""
        self.done += 1
        self.failed += int(failed)
        self.audio_seconds += audio_seconds
        self.draw(force=self.done >= self.total)

    def line(self) -> str:
        """The bar's text. With one input, the bar fills with its audio (a long file's chunks)."""
        elapsed = max(time.monotonic() - self._started, 1e-9)
        with self._lock:
            in_progress = list(self._partial.values())
        audio = self.audio_seconds + sum(done for done, _ in in_progress)
        if self.total == 1 and in_progress and self.done == 0:
            done, whole = in_progress[0]
            filled = int(BAR_WIDTH * done / whole) if whole > 0 else 0
        else:
            filled = BAR_WIDTH * self.done // self.total if self.total else BAR_WIDTH
        text = (f"[{'#' * filled}{'-' * (BAR_WIDTH - filled)}] {self.done}/{self.total} files, "
                f"{self.done / elapsed:.1f} files/s, {audio / 3600 / elapsed:.4f} h audio/s")
        if in_progress:
            done = sum(d for d, _ in in_progress)
            whole = sum(t for _, t in in_progress)
            text += f", {done / 60:.1f}/{whole / 60:.1f} min of audio in progress"
        return text + (f", {self.failed} failed" if self.failed else "")

    def draw(self, *, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._drawn_at < REDRAW_SECONDS:
            return
        self._drawn_at = now
        text = self.line()
        self.stream.write("\r" + text.ljust(self._width))
        self.stream.flush()
        self._width = len(text)

    def write(self, message: str) -> None:
        """Print a line above the bar (or just the line when the bar is off)."""
        if self.enabled and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self._width = 0
        self.stream.write(message + "\n")
        self.stream.flush()
        self.draw(force=True)

    def close(self) -> None:
        """End the bar's line."""
        if self.enabled and self._width:
            self.stream.write("\n")
            self.stream.flush()
            self._width = 0
